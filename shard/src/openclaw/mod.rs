//! Client for the OpenClaw Gateway (WebSocket, protocol v4): the bot's brain.
//!
//! One multiplexed connection per pod ([`GatewayClient`]) carries every conversation: requests
//! are correlated by id, `chat` events are routed to the run that asked for them by run id, and
//! the connection is re-established in the background with exponential backoff and jitter.
//! See `frames` for the wire format and `device` for the signed device identity.

mod client;
pub mod device;
pub mod frames;

pub use client::{
    ChatOptions, ClientConfig, ClientError, GatewayClient, ReplyEvent, ReplyStream, RunState,
    Status, new_run_id,
};

/// The session key of a conversation: `agent:<agent>:<surface>:<conversation>`.
///
/// The gateway picks the agent from the `agent:<id>:` prefix; the rest is ours. A voice
/// channel is one conversation per agent — `agent:jarvis:discord:<guild>:<channel>` — so
/// everyone in the channel shares the agent's context, and switching a guild to another agent
/// starts that agent's own conversation. The `ask` command uses `agent:<agent>:cli:<name>`.
pub fn session_key(agent: &str, surface: &str, conversation: &str) -> String {
    format!("agent:{agent}:{surface}:{conversation}")
}
