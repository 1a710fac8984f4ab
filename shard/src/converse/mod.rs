//! The conversation side: who the turn is for, what the agent hears with it, and the streamed
//! spoken reply.
//!
//! `names` recognises the agent's name in Whisper's text, `relevance` decides whether to answer
//! (and why; `classifier` asks the agent at medium/high sensitivity), `context` keeps the
//! channel's recent transcript, `engine` runs a turn end to end, `turn` is the record of a
//! turn that every consumer reads, and `room` runs a voice channel: its speakers, the turn
//! queue, playout and barge-in.

pub mod classifier;
pub mod context;
pub mod engine;
pub mod names;
pub mod relevance;
pub mod room;
pub mod turn;
