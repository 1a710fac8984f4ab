//! The conversation side: who the turn is for, and what the agent hears with it.
//!
//! `names` recognises the agent's name in Whisper's text, `relevance` decides whether to answer
//! (and why), `context` keeps the channel's recent transcript.

pub mod context;
pub mod names;
pub mod relevance;
