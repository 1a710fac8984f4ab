//! The speaking half: reply text → sentences → speech.

pub mod espeak;
pub mod playout;
pub mod sentences;
pub mod tts;
