//! The speaking half: reply text → sentences → speech.

pub mod sentences;
