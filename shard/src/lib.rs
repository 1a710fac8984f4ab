//! `voicebot-shard`: one pod of the Discord voice-assistant fleet.
//!
//! The data path is `audio` (any PCM in, 16 kHz mono out) → `listen` (Silero VAD → Smart Turn
//! → Whisper, with a hallucination guard) → later `converse` and `speak`. Stages know nothing of
//! Discord, Redis or Kubernetes; see `ARCHITECTURE.md` for the whole picture.

pub mod audio;
pub mod converse;
pub mod discord;
pub mod error;
pub mod eval;
pub mod listen;
pub mod metrics;
pub mod models;
pub mod openclaw;
pub mod pod;
pub mod secret;
pub mod speak;
pub mod state;
pub mod throttle;

pub use error::{Error, Result};

/// Locks a mutex, recovering the data if a panicking thread poisoned it (the state behind our
/// mutexes stays consistent between statements, so the data is still good).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
