//! Silero VAD: per-chunk speech probability, and a segmenter that turns probabilities into
//! speech start/end events.
//!
//! The model takes 512 new samples at 16 kHz with the previous chunk's last 64 samples in
//! front (576 in all) plus a recurrent state `[2, 1, 128]`; both carry from chunk to chunk, so
//! each speaker needs its own [`SileroVad`]. The model itself (an ONNX Runtime session, ≈ 10 MB
//! resident) is shared: [`SileroVad::share`] gives a new speaker its own state on the same
//! session, which runs one chunk at a time (≈ 60 µs each) behind a mutex.

use std::path::Path;
use std::sync::{Arc, Mutex};

use ort::value::TensorRef;

use crate::{Error, Result};

/// New samples per model call (32 ms at 16 kHz).
pub const CHUNK: usize = 512;
const CONTEXT: usize = 64;
const STATE: usize = 2 * 128;

/// One speaker's Silero VAD model and its carried state.
pub struct SileroVad {
    session: Arc<Mutex<ort::session::Session>>,
    input: [f32; CONTEXT + CHUNK],
    state: Vec<f32>,
    sr: [i64; 1],
}

impl SileroVad {
    /// Loads the model (one intra-op thread: a chunk is ~60 µs of work).
    pub fn new(env: &ort::environment::Environment, model: &Path) -> Result<Self> {
        Ok(Self {
            session: Arc::new(Mutex::new(crate::models::onnx_session(
                env,
                "Silero VAD model",
                model,
                1,
            )?)),
            input: [0.0; CONTEXT + CHUNK],
            state: vec![0.0; STATE],
            sr: [16_000],
        })
    }

    /// A VAD for another stream, on the same model session (fresh state).
    pub fn share(&self) -> Self {
        Self {
            session: self.session.clone(),
            input: [0.0; CONTEXT + CHUNK],
            state: vec![0.0; STATE],
            sr: [16_000],
        }
    }

    /// Forgets the carried context and state (a new, unrelated stream).
    pub fn reset(&mut self) {
        self.input = [0.0; CONTEXT + CHUNK];
        self.state.iter_mut().for_each(|s| *s = 0.0);
    }

    /// Speech probability of the next 512 samples.
    pub fn process(&mut self, chunk: &[f32; CHUNK]) -> Result<f32> {
        self.input[CONTEXT..].copy_from_slice(chunk);
        let input = TensorRef::from_array_view(([1usize, CONTEXT + CHUNK], &self.input[..]))
            .map_err(Error::onnx("vad"))?;
        let state = TensorRef::from_array_view(([2usize, 1, 128], &self.state[..]))
            .map_err(Error::onnx("vad"))?;
        let sr = TensorRef::from_array_view(((), &self.sr[..])).map_err(Error::onnx("vad"))?;
        let mut session = crate::lock(&self.session);
        let outputs = session
            .run(ort::inputs!["input" => input, "state" => state, "sr" => sr])
            .map_err(Error::onnx("vad"))?;
        let (_, prob) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(Error::onnx("vad"))?;
        let (_, next) = outputs[1]
            .try_extract_tensor::<f32>()
            .map_err(Error::onnx("vad"))?;
        let prob = prob.first().copied().unwrap_or(0.0);
        if next.len() == STATE {
            self.state.copy_from_slice(next);
        }
        drop(outputs);
        drop(session);
        self.input.copy_within(CHUNK.., 0);
        Ok(prob)
    }
}

/// Tuning of the speech segmenter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadConfig {
    /// Probability at or above which a chunk is speech.
    pub threshold: f32,
    /// Speech shorter than this is ignored (coughs, clicks).
    pub min_speech_ms: u32,
    /// Silence that ends a stretch of speech.
    pub silence_ms: u32,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            min_speech_ms: 250,
            silence_ms: 200,
        }
    }
}

/// What the segmenter saw in a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Speech began at this sample.
    Start(u64),
    /// Speech that began at `start` ended at `end` (samples, end exclusive, silence excluded).
    End {
        /// First speech sample.
        start: u64,
        /// One past the last speech sample.
        end: u64,
    },
}

#[derive(Debug, Clone, Copy)]
enum SegState {
    Silence,
    /// In speech since `start`; the last voiced chunk ended at `last_voiced`.
    Speech {
        start: u64,
        last_voiced: u64,
        confirmed: bool,
    },
}

/// Turns per-chunk probabilities into speech segments, with hysteresis (speech continues
/// until the probability drops 0.15 below the threshold) and a minimum speech length.
#[derive(Debug, Clone)]
pub struct Segmenter {
    config: VadConfig,
    state: SegState,
    /// End of the last chunk seen.
    pos: u64,
}

impl Segmenter {
    /// A segmenter in silence.
    pub fn new(config: VadConfig) -> Self {
        Self {
            config,
            state: SegState::Silence,
            pos: 0,
        }
    }

    /// Whether speech is in progress (confirmed or not).
    pub fn in_speech(&self) -> bool {
        matches!(self.state, SegState::Speech { .. })
    }

    /// While confirmed speech is pausing (not yet long enough to end it): where the voice
    /// stopped and how long the pause has lasted, in samples.
    pub fn pause(&self) -> Option<(u64, u64)> {
        match self.state {
            SegState::Speech {
                last_voiced,
                confirmed: true,
                ..
            } if last_voiced < self.pos => Some((last_voiced, self.pos - last_voiced)),
            _ => None,
        }
    }

    /// Feeds the probability of the chunk covering samples `[at, at + CHUNK)`.
    pub fn push(&mut self, at: u64, prob: f32) -> Option<VadEvent> {
        let ms = |samples: u64| samples * 1000 / 16_000;
        let end = at + CHUNK as u64;
        self.pos = end;
        match self.state {
            SegState::Silence => {
                if prob >= self.config.threshold {
                    self.state = SegState::Speech {
                        start: at,
                        last_voiced: end,
                        confirmed: false,
                    };
                }
                None
            }
            SegState::Speech {
                start,
                last_voiced,
                confirmed,
            } => {
                let voiced = prob >= self.config.threshold - 0.15;
                let last_voiced = if voiced { end } else { last_voiced };
                let long_enough = ms(last_voiced - start) >= u64::from(self.config.min_speech_ms);
                if ms(end - last_voiced) >= u64::from(self.config.silence_ms) {
                    self.state = SegState::Silence;
                    return (confirmed || long_enough).then_some(VadEvent::End {
                        start,
                        end: last_voiced,
                    });
                }
                self.state = SegState::Speech {
                    start,
                    last_voiced,
                    confirmed: confirmed || long_enough,
                };
                (long_enough && !confirmed).then_some(VadEvent::Start(start))
            }
        }
    }

    /// Ends any speech in progress at `at` (end of input).
    pub fn finish(&mut self, _at: u64) -> Option<VadEvent> {
        let state = std::mem::replace(&mut self.state, SegState::Silence);
        match state {
            SegState::Speech {
                start,
                last_voiced,
                confirmed,
            } if confirmed
                || (last_voiced - start) * 1000 / 16_000
                    >= u64::from(self.config.min_speech_ms) =>
            {
                Some(VadEvent::End {
                    start,
                    end: last_voiced,
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(probs: &[f32], config: VadConfig) -> Vec<VadEvent> {
        let mut seg = Segmenter::new(config);
        let mut events: Vec<VadEvent> = probs
            .iter()
            .enumerate()
            .filter_map(|(i, p)| seg.push((i * CHUNK) as u64, *p))
            .collect();
        events.extend(seg.finish((probs.len() * CHUNK) as u64));
        events
    }

    #[test]
    fn speech_then_silence_is_one_segment() {
        // 10 chunks silence, 20 speech (640 ms), 20 silence.
        let probs: Vec<f32> = [vec![0.1; 10], vec![0.9; 20], vec![0.05; 20]].concat();
        let events = run(&probs, VadConfig::default());
        assert_eq!(
            events,
            vec![
                VadEvent::Start(10 * CHUNK as u64),
                VadEvent::End {
                    start: 10 * CHUNK as u64,
                    end: 30 * CHUNK as u64
                }
            ]
        );
    }

    #[test]
    fn blips_are_ignored_and_dips_bridged() {
        let blip: Vec<f32> = [vec![0.0; 5], vec![0.9; 3], vec![0.0; 20]].concat();
        assert!(
            run(&blip, VadConfig::default()).is_empty(),
            "96 ms is below the minimum"
        );
        // A short dip (2 chunks = 64 ms) inside speech does not split it.
        let dip: Vec<f32> = [vec![0.9; 15], vec![0.1; 2], vec![0.9; 15], vec![0.0; 20]].concat();
        let events = run(&dip, VadConfig::default());
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, VadEvent::End { .. }))
                .count(),
            1
        );
        // Hysteresis: 0.4 continues speech that started above 0.5.
        let soft: Vec<f32> = [vec![0.9; 10], vec![0.4; 10], vec![0.0; 20]].concat();
        assert_eq!(
            run(&soft, VadConfig::default())[1],
            VadEvent::End {
                start: 0,
                end: 20 * CHUNK as u64
            }
        );
    }

    #[test]
    fn speech_running_to_the_end_is_closed() {
        let probs = vec![0.9; 20];
        let events = run(&probs, VadConfig::default());
        assert_eq!(
            events.last(),
            Some(&VadEvent::End {
                start: 0,
                end: 20 * CHUNK as u64
            })
        );
    }
}
