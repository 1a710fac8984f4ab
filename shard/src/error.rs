//! The shard's error type.

use std::path::PathBuf;

/// Everything the shard's pipeline can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input file could not be used as audio.
    #[error("{path}: {reason}")]
    Audio {
        /// The file.
        path: PathBuf,
        /// What is wrong, in words a user can act on.
        reason: String,
    },
    /// PCM handed to a stage is unusable (e.g. a sample rate we cannot resample).
    #[error("audio format: {0}")]
    Format(String),
    /// A model file or runtime library is missing or unusable.
    #[error("{what} not usable at {path}: {reason}")]
    Model {
        /// Which model or library.
        what: &'static str,
        /// Where we looked.
        path: PathBuf,
        /// Why it failed and how to fix it.
        reason: String,
    },
    /// ONNX Runtime failed during inference.
    #[error("{stage} inference failed: {source}")]
    Onnx {
        /// The pipeline stage.
        stage: &'static str,
        /// ONNX Runtime's error.
        #[source]
        source: ort::Error,
    },
    /// No engine came free in time: the pod has more speech than it can process.
    #[error("overloaded: {0}")]
    Overloaded(&'static str),
    /// whisper.cpp failed.
    #[error("speech-to-text failed: {0}")]
    Whisper(#[from] whisper_rs::WhisperError),
}

impl Error {
    /// A bounded label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Audio { .. } => "audio_input",
            Self::Format(_) => "audio_format",
            Self::Model { .. } => "model",
            Self::Onnx { .. } => "onnx",
            Self::Overloaded(_) => "overloaded",
            Self::Whisper(_) => "whisper",
        }
    }

    pub(crate) fn onnx(stage: &'static str) -> impl FnOnce(ort::Error) -> Self {
        move |source| Self::Onnx { stage, source }
    }
}

/// Result alias for the shard.
pub type Result<T, E = Error> = std::result::Result<T, E>;
