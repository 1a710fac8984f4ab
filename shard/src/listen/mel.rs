//! Whisper-style log-mel features for Smart Turn v3, exactly as pipecat computes them
//! (`pipecat/audio/turn/smart_turn/_whisper_features.py`, itself transformers'
//! `WhisperFeatureExtractor(chunk_length=8)`).
//!
//! Input: the last 8 s of the turn at 16 kHz, zero-padded at the front to 128 000 samples.
//! Steps: normalise `(x − mean) / sqrt(var + 1e-7)`; reflect-pad 200 each side; 801 frames of
//! a 400-point periodic-Hann STFT with hop 160; power spectrum; 80 Slaney mel filters (0–8 kHz);
//! `log10(max(x, 1e-10))`; drop the last frame; clamp at `max − 8`; `(x + 4) / 4`.
//! Output: `[80, 800]` row-major f32.
//!
//! Two shortcuts keep it fast without changing a single value: frames that lie wholly inside
//! the constant front padding share one spectrum (computed once), and each mel filter only
//! touches the FFT bins where it is non-zero.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

/// Samples the model looks at (8 s).
pub const WINDOW_SAMPLES: usize = 128_000;
/// Mel bins.
pub const N_MELS: usize = 80;
/// Output frames.
pub const N_FRAMES: usize = 800;
const N_FFT: usize = 400;
const HOP: usize = 160;
const N_BINS: usize = N_FFT / 2 + 1;
const PAD: usize = N_FFT / 2;

/// Precomputed window, filters and FFT plan; reusable across calls.
pub struct WhisperFeatures {
    window: Vec<f64>,
    /// Per mel filter: first bin and weights.
    filters: Vec<(usize, Vec<f64>)>,
    fft: Arc<dyn RealToComplex<f64>>,
    // Scratch buffers.
    padded: Vec<f64>,
    frame: Vec<f64>,
    spectrum: Vec<realfft::num_complex::Complex<f64>>,
    scratch: Vec<realfft::num_complex::Complex<f64>>,
    power: Vec<f64>,
    log_mel: Vec<f64>,
}

fn hz_to_mel(hz: f64) -> f64 {
    let logstep = 27.0 / 6.4f64.ln();
    if hz >= 1000.0 {
        15.0 + (hz / 1000.0).ln() * logstep
    } else {
        3.0 * hz / 200.0
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    let logstep = 6.4f64.ln() / 27.0;
    if mel >= 15.0 {
        1000.0 * (logstep * (mel - 15.0)).exp()
    } else {
        200.0 * mel / 3.0
    }
}

fn linspace(a: f64, b: f64, n: usize) -> impl Iterator<Item = f64> {
    let step = (b - a) / (n - 1) as f64;
    (0..n).map(move |i| if i == n - 1 { b } else { a + i as f64 * step })
}

/// pipecat's `_build_mel_filterbank(201, 80, 0, 8000, 16000)`, as `[mel][bin]`.
fn mel_filterbank() -> Vec<Vec<f64>> {
    let fft_freqs: Vec<f64> = linspace(0.0, 8000.0, N_BINS).collect();
    let filter_freqs: Vec<f64> = linspace(hz_to_mel(0.0), hz_to_mel(8000.0), N_MELS + 2)
        .map(mel_to_hz)
        .collect();
    (0..N_MELS)
        .map(|m| {
            let enorm = 2.0 / (filter_freqs[m + 2] - filter_freqs[m]);
            fft_freqs
                .iter()
                .map(|f| {
                    let down = -(filter_freqs[m] - f) / (filter_freqs[m + 1] - filter_freqs[m]);
                    let up =
                        (filter_freqs[m + 2] - f) / (filter_freqs[m + 2] - filter_freqs[m + 1]);
                    0f64.max(down.min(up)) * enorm
                })
                .collect()
        })
        .collect()
}

impl Default for WhisperFeatures {
    fn default() -> Self {
        Self::new()
    }
}

impl WhisperFeatures {
    /// Plans the FFT and builds the filters.
    pub fn new() -> Self {
        let window = (0..N_FFT)
            .map(|n| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64).cos())
            .collect();
        let filters = mel_filterbank()
            .into_iter()
            .map(|row| {
                let first = row.iter().position(|w| *w != 0.0).unwrap_or(0);
                let last = row.iter().rposition(|w| *w != 0.0).map_or(first, |l| l + 1);
                (first, row[first..last].to_vec())
            })
            .collect();
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(N_FFT);
        let spectrum = fft.make_output_vec();
        let scratch = fft.make_scratch_vec();
        Self {
            window,
            filters,
            fft,
            padded: vec![0.0; WINDOW_SAMPLES + 2 * PAD],
            frame: vec![0.0; N_FFT],
            spectrum,
            scratch,
            power: vec![0.0; N_BINS],
            log_mel: vec![0.0; N_MELS * (N_FRAMES + 1)],
        }
    }

    /// Features of the last 8 s of `audio` (16 kHz mono), written into `out` (`80 * 800`).
    pub fn compute(&mut self, audio: &[f32], out: &mut [f32]) {
        debug_assert_eq!(out.len(), N_MELS * N_FRAMES);
        let tail = &audio[audio.len().saturating_sub(WINDOW_SAMPLES)..];
        let lead = WINDOW_SAMPLES - tail.len();

        // Normalisation statistics over the padded window (the zeros count), in f64, applied
        // in f32 as numpy does.
        let n = WINDOW_SAMPLES as f64;
        let sum: f64 = tail.iter().map(|x| f64::from(*x)).sum();
        let mean = sum / n;
        let var = (tail
            .iter()
            .map(|x| (f64::from(*x) - mean).powi(2))
            .sum::<f64>()
            + lead as f64 * mean * mean)
            / n;
        let (mean32, denom32) = (mean as f32, (var as f32 + 1e-7).sqrt());
        let norm = |x: f32| f64::from((x - mean32) / denom32);
        let pad_value = norm(0.0);

        // Reflect-padded signal.
        let x = &mut self.padded;
        x[PAD..PAD + lead].fill(pad_value);
        for (v, s) in x[PAD + lead..PAD + WINDOW_SAMPLES].iter_mut().zip(tail) {
            *v = norm(*s);
        }
        for i in 1..=PAD {
            x[PAD - i] = x[PAD + i];
            x[PAD + WINDOW_SAMPLES - 1 + i] = x[PAD + WINDOW_SAMPLES - 1 - i];
        }

        // With more than PAD samples of front padding, everything before PAD + lead (the
        // reflected edge included) is the same constant: frames inside it are identical.
        let mut constant_frame: Option<usize> = None;
        let n_frames = N_FRAMES + 1;
        for t in 0..n_frames {
            let start = t * HOP;
            let in_constant = lead > PAD && start + N_FFT <= PAD + lead;
            if in_constant && let Some(first) = constant_frame {
                for m in 0..N_MELS {
                    self.log_mel[m * n_frames + t] = self.log_mel[m * n_frames + first];
                }
                continue;
            }
            for ((f, s), w) in self
                .frame
                .iter_mut()
                .zip(&self.padded[start..start + N_FFT])
                .zip(&self.window)
            {
                *f = s * w;
            }
            // The plan was made for N_FFT and the buffers are sized by it: cannot fail.
            let _ = self.fft.process_with_scratch(
                &mut self.frame,
                &mut self.spectrum,
                &mut self.scratch,
            );
            for (p, c) in self.power.iter_mut().zip(&self.spectrum) {
                *p = c.re * c.re + c.im * c.im;
            }
            for (m, (first, weights)) in self.filters.iter().enumerate() {
                let e: f64 = weights
                    .iter()
                    .zip(&self.power[*first..])
                    .map(|(w, p)| w * p)
                    .sum();
                self.log_mel[m * n_frames + t] = e.max(1e-10).log10();
            }
            if in_constant {
                constant_frame = Some(t);
            }
        }

        // Drop the last frame, clamp to max − 8, scale.
        let mut max = f64::NEG_INFINITY;
        for m in 0..N_MELS {
            for t in 0..N_FRAMES {
                max = max.max(self.log_mel[m * n_frames + t]);
            }
        }
        for m in 0..N_MELS {
            for t in 0..N_FRAMES {
                let v = self.log_mel[m * n_frames + t].max(max - 8.0);
                out[m * N_FRAMES + t] = ((v + 4.0) / 4.0) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filterbank_matches_pipecat_shape() {
        let fb = mel_filterbank();
        assert_eq!((fb.len(), fb[0].len()), (80, 201));
        assert!(fb.iter().all(|r| r.iter().any(|w| *w > 0.0)));
    }

    #[test]
    fn silence_and_short_input_give_finite_features() {
        let mut f = WhisperFeatures::new();
        let mut out = vec![0.0; N_MELS * N_FRAMES];
        for audio in [vec![], vec![0.0; 16_000], vec![0.3; 200_000]] {
            f.compute(&audio, &mut out);
            assert!(out.iter().all(|v| v.is_finite()));
        }
    }
}
