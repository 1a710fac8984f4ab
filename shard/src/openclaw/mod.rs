//! Client for the OpenClaw Gateway (WebSocket, protocol v4): the bot's brain.
//!
//! One multiplexed connection per pod ([`GatewayClient`]) carries every conversation: requests
//! are correlated by id, `chat` events are routed to the run that asked for them by run id, and
//! the connection is re-established in the background with exponential backoff and jitter.
//! See `frames` for the wire format and `device` for the signed device identity.
//!
//! By concern: `client` (the handle, settings, request correlation), `connection` (connect,
//! handshake, frame pump), `reconnect` (the retry loop and its backoff), `run` (chat runs and
//! their reply streams), `device` (the signed device identity), `frames` (the wire format),
//! `error` (what can fail).

mod client;
mod connection;
pub mod device;
mod error;
pub mod frames;
mod reconnect;
mod run;

pub use client::{ChatOptions, ClientConfig, GatewayClient, Status};
pub use error::ClientError;
pub use run::{ReplyEvent, ReplyStream, RunState, new_run_id};

/// The session key of a conversation: `agent:<agent>:<surface>:<conversation>`.
///
/// The gateway picks the agent from the `agent:<id>:` prefix; the rest is ours. A voice
/// channel is one conversation per agent — `agent:jarvis:discord:<guild>:<channel>` — so
/// everyone in the channel shares the agent's context, and switching a guild to another agent
/// starts that agent's own conversation. The `ask` command uses `agent:<agent>:cli:<name>`.
pub fn session_key(agent: &str, surface: &str, conversation: &str) -> String {
    format!("agent:{agent}:{surface}:{conversation}")
}
