//! PCM input: WAV files and Discord frames, normalised to the pipeline's 16 kHz mono f32.

mod resample;
mod wav;

pub use resample::{PIPELINE_RATE, ToPipelineRate, linear, to_pipeline_rate};
pub use wav::{Pcm, decode_wav, read_wav, write_wav};

/// Replaces NaN and infinities with silence and clamps to [-1, 1], so no model ever sees them.
pub fn sanitize(samples: &mut [f32]) {
    for s in samples {
        *s = if s.is_finite() {
            s.clamp(-1.0, 1.0)
        } else {
            0.0
        };
    }
}

/// Root-mean-square level of a signal in dBFS (−∞ for digital silence).
pub fn rms_dbfs(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return f32::NEG_INFINITY;
    }
    let energy: f64 = samples
        .iter()
        .map(|s| f64::from(*s) * f64::from(*s))
        .sum::<f64>()
        / samples.len() as f64;
    (10.0 * energy.log10()) as f32
}
