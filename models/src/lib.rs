//! Model provisioning for the voice bot.
//!
//! The Whisper weights we can reach offline ship as CTranslate2 files inside PyPI wheels
//! (`models/manifest.tsv` pins them); whisper.cpp wants its own ggml file. This crate reads a
//! CTranslate2 `model.bin` ([`ct2`]) and writes the equivalent whisper.cpp model ([`ggml`]).
//! The format facts it relies on are written down in `models/README.md`.

pub mod ct2;
pub mod ggml;
pub mod mel;
pub mod provision;
pub mod vocab;

use std::path::PathBuf;

/// Everything that can go wrong while converting a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The CTranslate2 file is not what we understand.
    #[error("CTranslate2 model: {0}")]
    Format(String),
    /// A tensor whisper.cpp needs is missing or has the wrong shape.
    #[error("model tensor {name}: {reason}")]
    Tensor {
        /// The CTranslate2 variable name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The vocabulary file is unusable.
    #[error("vocabulary: {0}")]
    Vocab(String),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Converts CTranslate2 Whisper weights (one `model.bin`, or its parts in order) and the
/// matching `vocabulary.txt` into a whisper.cpp ggml file at `out`.
///
/// Returns the number of tensors written (167 for tiny.en, 245 for base).
pub fn convert_whisper(
    model_parts: &[PathBuf],
    vocabulary: &std::path::Path,
    out: &std::path::Path,
) -> Result<ConvertSummary> {
    let mut bytes = Vec::new();
    for part in model_parts {
        let mut data = std::fs::read(part).map_err(|source| Error::Io {
            path: part.clone(),
            source,
        })?;
        bytes.append(&mut data);
    }
    let model = ct2::Model::parse(&bytes)?;
    let vocab_text = std::fs::read_to_string(vocabulary).map_err(|source| Error::Io {
        path: vocabulary.to_path_buf(),
        source,
    })?;
    let tokens = vocab::ordinary_tokens(&vocab_text)?;
    let file = ggml::WhisperGgml::from_ct2(&model, tokens)?;
    let tmp = out.with_extension("partial");
    let handle = std::fs::File::create(&tmp).map_err(|source| Error::Io {
        path: tmp.clone(),
        source,
    })?;
    let mut writer = std::io::BufWriter::new(handle);
    file.write(&mut writer).map_err(|source| Error::Io {
        path: tmp.clone(),
        source,
    })?;
    std::io::Write::flush(&mut writer).map_err(|source| Error::Io {
        path: tmp.clone(),
        source,
    })?;
    drop(writer);
    std::fs::rename(&tmp, out).map_err(|source| Error::Io {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(ConvertSummary {
        tensors: file.tensors.len(),
        hparams: file.hparams,
    })
}

/// What a conversion produced.
#[derive(Debug, Clone, Copy)]
pub struct ConvertSummary {
    /// Number of tensors written.
    pub tensors: usize,
    /// The hyper-parameters in the header.
    pub hparams: ggml::Hparams,
}
