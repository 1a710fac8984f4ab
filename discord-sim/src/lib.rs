//! A local Discord for tests and the demo: the REST API, the gateway WebSocket and (next) voice,
//! spoken to by the real twilight and songbird clients.
//!
//! Discord itself cannot be reached from the development machines, and no public server speaks
//! its voice protocol, so the project carries its own. It implements what a bot uses, with the
//! real wire formats (JSON over WebSocket, `/api/v10` REST), and records what the bot does
//! (IDENTIFYs with their times, RESUMEs, voice state updates, command registrations,
//! interaction replies) so tests can assert on it.
//!
//! ```text
//! twilight-http ──HTTP──► rest.rs   (gateway/bot, users/@me, applications, commands,
//!                                     interaction callbacks, webhooks)
//! twilight-gateway ─WS──► gateway.rs (hello, identify → READY + GUILD_CREATE, resume,
//!                                     heartbeat, voice state → voice state/server updates,
//!                                     injected INTERACTION_CREATE)
//! ```

mod gateway;
mod rest;
mod state;

pub use state::{Guild, SimConfig, SimEvent, User};

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::broadcast;

/// What can go wrong starting the simulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("simulator: {0}")]
    Io(#[from] std::io::Error),
}

/// A running simulator; dropping it stops its servers.
pub struct Simulator {
    state: Arc<state::Shared>,
    http: SocketAddr,
    gateway: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Simulator {
    /// Starts the REST and gateway servers on free loopback ports.
    pub async fn start(config: SimConfig) -> Result<Self, Error> {
        let http_listener = TcpListener::bind("127.0.0.1:0").await?;
        let gateway_listener = TcpListener::bind("127.0.0.1:0").await?;
        let http = http_listener.local_addr()?;
        let gateway = gateway_listener.local_addr()?;
        let state = Arc::new(state::Shared::new(config, format!("ws://{gateway}")));
        let tasks = vec![
            tokio::spawn(rest::serve(http_listener, state.clone())),
            tokio::spawn(gateway::serve(gateway_listener, state.clone())),
        ];
        Ok(Self {
            state,
            http,
            gateway,
            tasks,
        })
    }

    /// For twilight-http's `ClientBuilder::proxy(addr, true)`: `127.0.0.1:PORT`.
    pub fn http_proxy(&self) -> String {
        self.http.to_string()
    }

    /// The REST base URL (`http://127.0.0.1:PORT/api/v10`).
    pub fn api_url(&self) -> String {
        format!("http://{}/api/v10", self.http)
    }

    /// For twilight-gateway's `ConfigBuilder::proxy_url`: `ws://127.0.0.1:PORT`.
    pub fn gateway_url(&self) -> String {
        format!("ws://{}", self.gateway)
    }

    /// Adds a guild (sent to the shard that owns it when it identifies).
    pub fn add_guild(&self, guild: Guild) {
        state::lock(&self.state.inner)
            .guilds
            .insert(guild.id, guild);
    }

    /// Everything the bot does, as it happens.
    pub fn events(&self) -> broadcast::Receiver<SimEvent> {
        self.state.events.subscribe()
    }

    /// Everything recorded so far.
    pub fn history(&self) -> Vec<SimEvent> {
        state::lock(&self.state.inner).history.clone()
    }

    /// Waits (up to 20 s) for the first recorded event that matches; the error lists what was
    /// recorded instead.
    pub async fn wait_for(
        &self,
        what: &str,
        pred: impl Fn(&SimEvent) -> bool,
    ) -> Result<SimEvent, String> {
        let start = std::time::Instant::now();
        loop {
            if let Some(e) = self.history().into_iter().find(|e| pred(e)) {
                return Ok(e);
            }
            if start.elapsed() > std::time::Duration::from_secs(20) {
                return Err(format!(
                    "the simulator never saw {what}; it saw: {:#?}",
                    self.history()
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// A user runs a slash command: an INTERACTION_CREATE goes to the shard of the guild.
    /// Returns the interaction id; the bot's answer arrives as [`SimEvent::InteractionReply`].
    pub fn run_command(
        &self,
        guild: u64,
        user: &User,
        command: &str,
        options: serde_json::Value,
    ) -> Result<u64, String> {
        gateway::inject_command(&self.state, guild, user, command, options)
    }

    /// A user joins (`Some`) or leaves (`None`) a voice channel: the guild's shard gets a
    /// VOICE_STATE_UPDATE.
    pub fn user_voice(&self, guild: u64, user: &User, channel: Option<u64>) -> Result<(), String> {
        gateway::user_voice(&self.state, guild, user, channel)
    }

    /// Closes every gateway connection abruptly (as a network drop would): the bot should
    /// RESUME.
    pub fn drop_gateway_connections(&self) {
        gateway::drop_all(&self.state);
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        gateway::drop_all(&self.state);
    }
}
