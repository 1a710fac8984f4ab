//! Smart Turn v3.2: is the speaker done, or only pausing?
//!
//! Input `input_features` f32 `[1, 80, 800]` (see [`super::mel`]), output a sigmoid
//! probability that the turn is complete.

use std::path::Path;

use ort::value::TensorRef;

use super::mel::{N_FRAMES, N_MELS, WhisperFeatures};
use crate::{Error, Result};

/// The end-of-turn model with its feature extractor and buffers.
pub struct SmartTurn {
    session: ort::session::Session,
    features: WhisperFeatures,
    input: Vec<f32>,
}

/// Timing of one prediction.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurnTiming {
    /// Feature extraction, ms.
    pub features_ms: f64,
    /// Model inference, ms.
    pub inference_ms: f64,
}

impl SmartTurn {
    /// Loads the model with `threads` intra-op threads.
    pub fn new(env: &ort::environment::Environment, model: &Path, threads: usize) -> Result<Self> {
        Ok(Self {
            session: crate::models::onnx_session(env, "Smart Turn model", model, threads)?,
            features: WhisperFeatures::new(),
            input: vec![0.0; N_MELS * N_FRAMES],
        })
    }

    /// Probability that the turn ending with `audio` (16 kHz mono) is complete.
    pub fn predict(&mut self, audio: &[f32]) -> Result<(f32, TurnTiming)> {
        let t0 = std::time::Instant::now();
        self.features.compute(audio, &mut self.input);
        let t1 = std::time::Instant::now();
        let input = TensorRef::from_array_view(([1usize, N_MELS, N_FRAMES], &self.input[..]))
            .map_err(Error::onnx("turn"))?;
        let outputs = self
            .session
            .run(ort::inputs!["input_features" => input])
            .map_err(Error::onnx("turn"))?;
        let (_, prob) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(Error::onnx("turn"))?;
        let prob = prob.first().copied().unwrap_or(0.0);
        let timing = TurnTiming {
            features_ms: (t1 - t0).as_secs_f64() * 1e3,
            inference_ms: t1.elapsed().as_secs_f64() * 1e3,
        };
        Ok((prob, timing))
    }

    /// The features of the last call (for tests against the Python reference).
    pub fn last_features(&self) -> &[f32] {
        &self.input
    }
}
