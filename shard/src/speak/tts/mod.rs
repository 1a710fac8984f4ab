//! Text-to-speech backends.

pub mod piper;
