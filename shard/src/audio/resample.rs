//! Any PCM stream → 16 kHz mono f32, the pipeline's only format.
//!
//! The same converter serves WAV files and Discord's 48 kHz stereo 20 ms frames: callers push
//! interleaved samples of any length and receive whatever 16 kHz output is ready. The FFT
//! resampler (rubato) works on fixed chunks of about 20 ms; its fixed delay is trimmed so that
//! output sample `n` lines up with input time `n / 16000` s.

use rubato::{FftFixedInOut, Resampler};

use crate::{Error, Result};

/// Sample rate of everything after the input stage.
pub const PIPELINE_RATE: u32 = 16_000;

/// Streaming converter from interleaved PCM at any rate to 16 kHz mono.
pub struct ToPipelineRate {
    channels: usize,
    resampler: Option<FftFixedInOut<f32>>,
    /// Mono input waiting for a full resampler chunk.
    pending: Vec<f32>,
    out_buf: Vec<Vec<f32>>,
    /// Output samples still to drop (the resampler's delay).
    skip: usize,
    /// Mono input frames consumed, to size the flush.
    frames_in: u64,
    frames_out: u64,
    rate_in: u32,
}

impl ToPipelineRate {
    /// A converter for `channels` interleaved channels at `sample_rate`.
    pub fn new(sample_rate: u32, channels: u16) -> Result<Self> {
        if channels == 0 {
            return Err(Error::Format("zero channels".into()));
        }
        if !(1_000..=384_000).contains(&sample_rate) {
            return Err(Error::Format(format!(
                "cannot resample from {sample_rate} Hz"
            )));
        }
        let resampler = if sample_rate == PIPELINE_RATE {
            None
        } else {
            let chunk = (sample_rate / 50) as usize;
            Some(
                FftFixedInOut::<f32>::new(sample_rate as usize, PIPELINE_RATE as usize, chunk, 1)
                    .map_err(|e| Error::Format(format!("resampler for {sample_rate} Hz: {e}")))?,
            )
        };
        let skip = resampler.as_ref().map_or(0, Resampler::output_delay);
        let out_buf = vec![vec![
            0.0;
            resampler
                .as_ref()
                .map_or(0, Resampler::output_frames_max)
        ]];
        Ok(Self {
            channels: usize::from(channels),
            resampler,
            pending: Vec::new(),
            out_buf,
            skip,
            frames_in: 0,
            frames_out: 0,
            rate_in: sample_rate,
        })
    }

    /// Pushes interleaved samples; appends the 16 kHz mono output that is ready to `out`.
    pub fn push(&mut self, interleaved: &[f32], out: &mut Vec<f32>) {
        let before = self.pending.len();
        if self.channels == 1 {
            self.pending.extend_from_slice(interleaved);
        } else {
            let scale = 1.0 / self.channels as f32;
            self.pending.extend(
                interleaved
                    .chunks_exact(self.channels)
                    .map(|f| f.iter().sum::<f32>() * scale),
            );
        }
        self.frames_in += (self.pending.len() - before) as u64;
        self.drain(out);
    }

    fn drain(&mut self, out: &mut Vec<f32>) {
        let Some(resampler) = self.resampler.as_mut() else {
            self.frames_out += self.pending.len() as u64;
            out.append(&mut self.pending);
            return;
        };
        let need = resampler.input_frames_next();
        let mut used = 0;
        while self.pending.len() - used >= need {
            let input = [&self.pending[used..used + need]];
            match resampler.process_into_buffer(&input, &mut self.out_buf, None) {
                Ok((consumed, produced)) => {
                    used += consumed;
                    let produced = &self.out_buf[0][..produced];
                    let drop = self.skip.min(produced.len());
                    self.skip -= drop;
                    out.extend_from_slice(&produced[drop..]);
                    self.frames_out += (produced.len() - drop) as u64;
                }
                // Cannot happen with buffers sized by the resampler itself; never lose the
                // stream over it: pass the chunk through decimated instead.
                Err(e) => {
                    tracing::warn!(error = %e, "resampler refused a chunk");
                    used += need;
                }
            }
        }
        self.pending.drain(..used);
    }

    /// Flushes the tail: pads with silence so every input sample reaches the output.
    pub fn finish(&mut self, out: &mut Vec<f32>) {
        let expected = self.frames_in * u64::from(PIPELINE_RATE) / u64::from(self.rate_in);
        if let Some(resampler) = self.resampler.as_ref() {
            let need = resampler.input_frames_next();
            // Enough zeros to push the last real sample through the delay line.
            let pad = need * 2 + need - self.pending.len() % need;
            self.pending.extend(std::iter::repeat_n(0.0, pad));
            self.drain(out);
        } else {
            self.drain(out);
        }
        let extra = self.frames_out.saturating_sub(expected) as usize;
        out.truncate(out.len().saturating_sub(extra));
        self.frames_out = expected;
    }
}

/// Converts a whole decoded file to 16 kHz mono.
pub fn to_pipeline_rate(pcm: &super::Pcm) -> Result<Vec<f32>> {
    let mut conv = ToPipelineRate::new(pcm.sample_rate, pcm.channels)?;
    let mut out = Vec::with_capacity(
        pcm.samples.len() * PIPELINE_RATE as usize / pcm.sample_rate as usize + 1024,
    );
    conv.push(&pcm.samples, &mut out);
    conv.finish(&mut out);
    Ok(out)
}

/// `audio` at `from` Hz brought to `to` Hz by linear interpolation, whole: another agent's
/// voice into a room whose playout runs at the first voice's rate (speech only, no music to
/// alias; the streaming, band-limited [`ToPipelineRate`] is for what the listener hears).
pub fn linear(audio: Vec<f32>, from: u32, to: u32) -> Vec<f32> {
    if from == to || from == 0 || to == 0 || audio.is_empty() {
        return audio;
    }
    let n = (audio.len() as u64 * u64::from(to) / u64::from(from)) as usize;
    let step = f64::from(from) / f64::from(to);
    (0..n)
        .map(|k| {
            let x = k as f64 * step;
            let i = x as usize;
            let frac = (x - i as f64) as f32;
            let a = audio[i.min(audio.len() - 1)];
            let b = audio[(i + 1).min(audio.len() - 1)];
            a + (b - a) * frac
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, channels: u16, hz: f32, secs: f32) -> Vec<f32> {
        let n = (rate as f32 * secs) as usize;
        (0..n)
            .flat_map(|i| {
                let v = (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin() * 0.5;
                std::iter::repeat_n(v, usize::from(channels))
            })
            .collect()
    }

    /// Estimated frequency from zero crossings.
    fn freq(samples: &[f32]) -> f32 {
        let crossings = samples
            .windows(2)
            .filter(|w| w[0] <= 0.0 && w[1] > 0.0)
            .count();
        crossings as f32 * PIPELINE_RATE as f32 / samples.len() as f32
    }

    #[test]
    fn every_rate_lands_at_16k_with_the_right_length_and_pitch() {
        for (rate, channels) in [
            (8_000, 1),
            (16_000, 1),
            (22_050, 1),
            (44_100, 2),
            (48_000, 2),
            (32_000, 6),
        ] {
            let input = tone(rate, channels, 440.0, 1.0);
            let mut conv = ToPipelineRate::new(rate, channels).expect("conv");
            let mut out = Vec::new();
            conv.push(&input, &mut out);
            conv.finish(&mut out);
            assert_eq!(out.len(), 16_000, "{rate} Hz x{channels}");
            let f = freq(&out[1000..15_000]);
            assert!((f - 440.0).abs() < 5.0, "{rate} Hz: pitch {f}");
        }
    }

    #[test]
    fn discord_frames_match_one_shot_conversion() {
        let input = tone(48_000, 2, 300.0, 0.5);
        let mut frames = ToPipelineRate::new(48_000, 2).expect("conv");
        let mut streamed = Vec::new();
        for frame in input.chunks(960 * 2) {
            frames.push(frame, &mut streamed);
        }
        frames.finish(&mut streamed);
        let mut whole = ToPipelineRate::new(48_000, 2).expect("conv");
        let mut once = Vec::new();
        whole.push(&input, &mut once);
        whole.finish(&mut once);
        assert_eq!(streamed.len(), once.len());
        assert!(
            streamed
                .iter()
                .zip(&once)
                .all(|(a, b)| (a - b).abs() < 1e-5)
        );
    }

    #[test]
    fn tiny_and_odd_inputs_do_not_panic() {
        let mut conv = ToPipelineRate::new(44_100, 2).expect("conv");
        let mut out = Vec::new();
        conv.push(&[0.1], &mut out); // half a stereo frame
        conv.push(&[], &mut out);
        conv.finish(&mut out);
        assert!(out.len() <= 1);
        assert!(ToPipelineRate::new(0, 1).is_err());
        assert!(ToPipelineRate::new(16_000, 0).is_err());
    }

    #[test]
    fn another_voice_is_brought_to_the_room_rate_keeping_its_duration_and_pitch() {
        // 100 ms of a 200 Hz tone at 24 kHz (an HTTP voice) into a 22.05 kHz room.
        let tone: Vec<f32> = (0..2_400)
            .map(|i| (std::f32::consts::TAU * 200.0 * i as f32 / 24_000.0).sin())
            .collect();
        let out = linear(tone.clone(), 24_000, 22_050);
        assert_eq!(out.len(), 2_205);
        // Same tone: compare with the 200 Hz sine sampled at 22.05 kHz.
        let worst = out
            .iter()
            .enumerate()
            .map(|(i, s)| (s - (std::f32::consts::TAU * 200.0 * i as f32 / 22_050.0).sin()).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 0.01, "{worst}");
        assert_eq!(linear(tone.clone(), 22_050, 22_050), tone);
        assert!(linear(Vec::new(), 24_000, 22_050).is_empty());
    }
}
