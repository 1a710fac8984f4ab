//! Where the model files live, and loading the ONNX Runtime library.
//!
//! `scripts/setup.sh` puts everything under `.cache/models/`. The shard looks there (relative
//! to the working directory, then to the executable's checkout) unless `--models-dir` or
//! `VOICEBOT_MODELS_DIR` says otherwise; the ONNX Runtime library can be overridden with
//! `ORT_DYLIB_PATH`. A missing file is an error that names the path and the fix.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Whisper model sizes we ship.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum WhisperModel {
    /// English-only tiny model (39 M parameters): the default, fastest.
    #[value(name = "tiny.en")]
    #[serde(rename = "tiny.en")]
    TinyEn,
    /// Multilingual base model (74 M parameters): more accurate, about 2x slower.
    #[value(name = "base")]
    #[serde(rename = "base")]
    Base,
}

impl WhisperModel {
    /// File name of the converted ggml model.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::TinyEn => "ggml-tiny.en.bin",
            Self::Base => "ggml-base.bin",
        }
    }

    /// Whether the model is English-only (no language token).
    pub fn english_only(self) -> bool {
        matches!(self, Self::TinyEn)
    }
}

/// Paths of every model file the listening pipeline needs.
#[derive(Debug, Clone)]
pub struct ModelPaths {
    /// The directory they were found in.
    pub dir: PathBuf,
    /// `libonnxruntime.so`.
    pub onnxruntime: PathBuf,
    /// Silero VAD ONNX.
    pub silero_vad: PathBuf,
    /// Smart Turn v3.2 ONNX.
    pub smart_turn: PathBuf,
    /// whisper.cpp ggml model.
    pub whisper: PathBuf,
}

const SETUP_HINT: &str =
    "run scripts/setup.sh (or point --models-dir / VOICEBOT_MODELS_DIR at its .cache/models)";

impl ModelPaths {
    /// Resolves the model directory: `explicit`, else `.cache/models` under the working
    /// directory or any ancestor of the executable.
    pub fn locate(explicit: Option<&Path>, whisper: WhisperModel) -> Result<Self> {
        let dir = match explicit {
            Some(dir) => dir.to_path_buf(),
            None => default_dir().ok_or_else(|| Error::Model {
                what: "model directory",
                path: PathBuf::from(".cache/models"),
                reason: format!("not found; {SETUP_HINT}"),
            })?,
        };
        let onnxruntime = std::env::var_os("ORT_DYLIB_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.join("onnxruntime/libonnxruntime.so"));
        let paths = Self {
            onnxruntime,
            silero_vad: dir.join("silero_vad.onnx"),
            smart_turn: dir.join("smart-turn-v3.2-cpu.onnx"),
            whisper: dir.join(whisper.file_name()),
            dir,
        };
        for (what, path) in [
            ("ONNX Runtime library", &paths.onnxruntime),
            ("Silero VAD model", &paths.silero_vad),
            ("Smart Turn model", &paths.smart_turn),
            ("Whisper model", &paths.whisper),
        ] {
            if !path.is_file() {
                return Err(Error::Model {
                    what,
                    path: path.clone(),
                    reason: format!("file missing; {SETUP_HINT}"),
                });
            }
        }
        Ok(paths)
    }

    /// A Piper voice in the model directory (`piper/<name>.onnx`, with its `.onnx.json`).
    pub fn piper_voice(&self, name: &str) -> Result<PathBuf> {
        let path = self.dir.join("piper").join(format!("{name}.onnx"));
        if path.is_file() && path.with_extension("onnx.json").is_file() {
            Ok(path)
        } else {
            Err(Error::Model {
                what: "Piper voice",
                path,
                reason: format!("file missing; {SETUP_HINT}"),
            })
        }
    }
}

/// The Piper voice setup installs.
pub const DEFAULT_PIPER_VOICE: &str = "en_US-joe-medium";

fn default_dir() -> Option<PathBuf> {
    let rel = Path::new(".cache/models");
    let mut candidates = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        candidates.extend(cwd.ancestors().map(|a| a.join(rel)));
    }
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().skip(1).map(|a| a.join(rel)));
    }
    candidates.into_iter().find(|c| c.is_dir())
}

/// Loads ONNX Runtime from `lib` once per process and returns the shared environment.
///
/// ort would panic on first use if the library were missing; we check the file first and turn
/// every failure into an [`Error::Model`] that names the path.
pub fn onnx_environment(lib: &Path) -> Result<ort::environment::Environment> {
    static ENV: std::sync::OnceLock<std::result::Result<ort::environment::Environment, String>> =
        std::sync::OnceLock::new();
    let err = |reason: String| Error::Model {
        what: "ONNX Runtime library",
        path: lib.to_path_buf(),
        reason,
    };
    if !lib.is_file() {
        return Err(err(format!("file missing; {SETUP_HINT}")));
    }
    ENV.get_or_init(|| {
        ort::init_from(lib)
            .map_err(|e| e.to_string())?
            .with_name("voicebot")
            .build()
            .map_err(|e| e.to_string())
    })
    .clone()
    .map_err(err)
}

/// Builds an ONNX session with the given intra-op thread count.
pub(crate) fn onnx_session(
    env: &ort::environment::Environment,
    what: &'static str,
    path: &Path,
    threads: usize,
) -> Result<ort::session::Session> {
    let err = |e: String| Error::Model {
        what,
        path: path.to_path_buf(),
        reason: e,
    };
    ort::session::Session::builder(env)
        .map_err(|e| err(e.to_string()))?
        .with_optimization_level(ort::session::builder::GraphOptimizationLevel::All)
        .map_err(|e| err(e.to_string()))?
        .with_intra_threads(threads.max(1))
        .map_err(|e| err(e.to_string()))?
        .with_inter_threads(1)
        .map_err(|e| err(e.to_string()))?
        .commit_from_file(path)
        .map_err(|e| err(e.to_string()))
}
