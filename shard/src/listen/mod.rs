//! The listening half of the pipeline: 16 kHz mono audio in, finished utterances out.
//!
//! `vad` (Silero) finds speech, `turn` (Smart Turn v3.2 on `mel` features) decides whether a
//! pause ends the turn, `stt` (Whisper) transcribes it and `guard` drops what Whisper invents
//! from silence. [`Listener`] wires them for one speaker; [`EnginePool`] shares the heavy engines
//! between the speakers of a pod, within bounds.

pub mod guard;
pub mod mel;
mod pipeline;
mod pool;
pub mod stt;
pub mod turn;
pub mod vad;

pub use pipeline::{
    CommitReason, Engines, Listener, ListenerConfig, Models, StagesMs, Utterance, names_hint,
};
pub use pool::{Borrower, EnginePool, Lease, PoolConfig, PoolStats};
