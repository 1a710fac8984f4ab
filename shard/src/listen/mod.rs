//! The listening half of the pipeline: 16 kHz mono audio in, finished utterances out.
//!
//! `vad` (Silero) finds speech, `turn` (Smart Turn v3.2 on `mel` features) decides whether a
//! pause ends the turn, `stt` (Whisper) transcribes it and `guard` drops what Whisper invents
//! from silence. [`Listener`] wires them for one speaker.

pub mod guard;
pub mod mel;
mod pipeline;
pub mod stt;
pub mod turn;
pub mod vad;

pub use pipeline::{CommitReason, Listener, ListenerConfig, Models, StagesMs, Utterance};
