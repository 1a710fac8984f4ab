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
//! songbird ───wss + UDP──► voice.rs  (voice gateway v4, IP discovery, RTP with Opus; users'
//!                                     speech in, the bot's audio recorded)
//! ```

mod dave;
mod gateway;
mod rest;
mod state;
mod voice;

pub use dave::{DaveStats, is_dave_frame};
pub use state::{DoubleOwner, EVERYONE, Guild, SimConfig, SimEvent, User};
pub use voice::{BotAudio, Spoken, TlsIdentity, from_16k};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::broadcast;

/// What can go wrong starting the simulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("simulator: {0}")]
    Io(#[from] std::io::Error),
    /// The voice server's certificate could not be made.
    #[error("simulator: {0}")]
    Tls(String),
}

/// A running simulator; dropping it stops its servers.
pub struct Simulator {
    state: Arc<state::Shared>,
    http: SocketAddr,
    gateway: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Simulator {
    /// Starts the REST, gateway and voice servers on `config.host` (free ports unless
    /// `config.ports` names them).
    pub async fn start(config: SimConfig) -> Result<Self, Error> {
        let http_listener = TcpListener::bind((config.host, config.ports[0])).await?;
        let gateway_listener = TcpListener::bind((config.host, config.ports[1])).await?;
        let (voice, voice_listener) =
            voice::VoiceServer::bind(config.host, config.ports[2]).await?;
        let http = http_listener.local_addr()?;
        let gateway = gateway_listener.local_addr()?;
        let tls = match &config.tls {
            Some(t) => t.clone(),
            None => Arc::new(TlsIdentity::generate().map_err(Error::Tls)?),
        };
        let state = Arc::new(state::Shared::new(config, format!("ws://{gateway}"), voice));
        let tasks = vec![
            tokio::spawn(rest::serve(http_listener, state.clone())),
            tokio::spawn(gateway::serve(gateway_listener, state.clone())),
            tokio::spawn(voice::serve_ws(voice_listener, state.clone(), tls)),
            tokio::spawn(voice::udp_loop(state.clone())),
        ];
        Ok(Self {
            state,
            http,
            gateway,
            tasks,
        })
    }

    /// For twilight-http's `ClientBuilder::proxy(addr, true)`: `HOST:PORT`.
    pub fn http_proxy(&self) -> String {
        self.http.to_string()
    }

    /// The REST base URL (`http://HOST:PORT/api/v10`).
    pub fn api_url(&self) -> String {
        format!("http://{}/api/v10", self.http)
    }

    /// For twilight-gateway's `ConfigBuilder::proxy_url`: `ws://HOST:PORT`.
    pub fn gateway_url(&self) -> String {
        format!("ws://{}", self.gateway)
    }

    /// Adds a guild (sent to the shard that owns it when it identifies).
    pub fn add_guild(&self, guild: Guild) {
        state::lock(&self.state.inner)
            .guilds
            .insert(guild.id, guild);
    }

    /// The voice server goes away for `outage`: voice connections are cut without a close
    /// frame, new ones are refused and voice packets dropped until it is back.
    pub fn voice_outage(&self, outage: Duration) {
        voice::voice_outage(&self.state, outage);
    }

    /// The bot is removed from `guild` (kicked, or the guild deleted): GUILD_DELETE on its
    /// shard.
    pub fn remove_guild(&self, guild: u64) -> Result<(), String> {
        gateway::remove_guild(&self.state, guild)
    }

    /// The next `times` REST requests whose path (under `/api/v10`) starts with `prefix` are
    /// answered 429 with `retry_after` seconds, as Discord rate limits (recorded as
    /// [`SimEvent::RateLimited`]).
    pub fn rate_limit(&self, prefix: &str, times: u32, retry_after: f64) {
        state::lock(&self.state.inner)
            .rate_limits
            .push((prefix.to_string(), times, retry_after));
    }

    /// Everything the bot does, as it happens.
    pub fn events(&self) -> broadcast::Receiver<SimEvent> {
        self.state.events.subscribe()
    }

    /// Everything recorded so far.
    pub fn history(&self) -> Vec<SimEvent> {
        state::lock(&self.state.inner).history.clone()
    }

    /// Waits (up to 30 s) for the first recorded event that matches; the error lists what was
    /// recorded instead.
    pub async fn wait_for(
        &self,
        what: &str,
        pred: impl Fn(&SimEvent) -> bool,
    ) -> Result<SimEvent, String> {
        self.wait_for_since(0, Duration::from_secs(30), what, pred)
            .await
    }

    /// Waits up to `within` for an event that matches among those recorded after the first
    /// `mark` (take `history().len()` before acting); the error lists what came after it.
    pub async fn wait_for_since(
        &self,
        mark: usize,
        within: Duration,
        what: &str,
        pred: impl Fn(&SimEvent) -> bool,
    ) -> Result<SimEvent, String> {
        let start = Instant::now();
        loop {
            let history = self.history();
            let after = history.get(mark..).unwrap_or_default();
            if let Some(e) = after.iter().find(|e| pred(e)) {
                return Ok(e.clone());
            }
            if start.elapsed() > within {
                return Err(format!(
                    "the simulator never saw {what} after event {mark}; it saw: {after:#?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits (30 s) until `guild` offers the bot's slash commands (registered for it or for the
    /// whole application) and has been delivered to a connected shard of the bot: a user can
    /// run them now. Returns the commands as registered.
    pub async fn wait_for_commands(&self, guild: u64) -> Result<serde_json::Value, String> {
        self.wait_for_commands_within(guild, Duration::from_secs(30))
            .await
    }

    /// [`Simulator::wait_for_commands`], waiting up to `within`.
    pub async fn wait_for_commands_within(
        &self,
        guild: u64,
        within: Duration,
    ) -> Result<serde_json::Value, String> {
        let start = std::time::Instant::now();
        loop {
            if let Some(commands) = gateway::commands_offered(&self.state, guild) {
                return Ok(commands);
            }
            if start.elapsed() > within {
                return Err(format!(
                    "guild {guild} never offered the bot's commands within {within:?}; the simulator saw: {:#?}",
                    self.history()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
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

    /// What DAVE did in `guild`'s call: version, epoch, members, the bot's frames decrypted
    /// (`None`: not negotiated, e.g. `SimConfig::dave` off or a bot that does not offer it).
    pub fn dave(&self, guild: u64) -> Option<DaveStats> {
        voice::dave_stats(&self.state, guild)
    }

    /// A client without DAVE joined `guild`'s call: Discord moves it back to transport
    /// encryption only (op 21 with version 0, op 22 once the bot is ready).
    pub fn dave_downgrade(&self, guild: u64) -> Result<(), String> {
        voice::dave_downgrade(&self.state, guild)
    }

    /// `user` sends again the end-to-end encrypted frames they sent under earlier epochs (a
    /// replay; a client stuck on an old key): the bot must refuse them. Returns how many.
    pub async fn dave_replay_stale(&self, guild: u64, user: &User) -> Result<usize, String> {
        voice::replay_stale(&self.state, guild, user).await
    }

    /// The bot's latest end-to-end encrypted frame, sent under an epoch that has since
    /// ended, is heard again by the call's members: `Some(true)` when they refuse it (and
    /// count it in [`DaveStats::bot_frames_refused`]); `None` when there is no such frame.
    pub fn dave_replay_stale_bot_frame(&self, guild: u64) -> Option<bool> {
        voice::dave_replay_stale_bot_frame(&self.state, guild)
    }

    /// Whether `user` — in the call, or who left it — can decrypt the bot's latest
    /// end-to-end encrypted frame (`None`: no such frame or user).
    pub fn dave_can_read(&self, guild: u64, user: u64) -> Option<bool> {
        voice::dave_can_read(&self.state, guild, user)
    }

    /// The connected gateway sessions, `[shard, total]` each (sorted).
    pub fn connected_shards(&self) -> Vec<[u32; 2]> {
        let mut shards: Vec<[u32; 2]> = state::lock(&self.state.inner)
            .sessions
            .values()
            .filter(|s| s.tx.is_some())
            .map(|s| s.shard)
            .collect();
        shards.sort_unstable();
        shards
    }

    /// Every time an IDENTIFY made a guild owned by two connected sessions (empty when no two
    /// shards, pods or shard counts ever overlapped).
    pub fn double_owners(&self) -> Vec<DoubleOwner> {
        state::lock(&self.state.inner).double_owners.clone()
    }

    /// The shard of `total` that owns `guild` (Discord's rule: `(guild >> 22) % total`).
    pub fn shard_of(guild: u64, total: u32) -> u32 {
        gateway::shard_of(guild, total)
    }

    /// The voice server's `host:port` (as sent in VOICE_SERVER_UPDATE).
    pub fn voice_endpoint(&self) -> &str {
        &self.state.voice.endpoint
    }

    /// A simulated user says `pcm` (48 kHz mono) in `guild`'s voice channel, in real time:
    /// a speaking event (their SSRC) on the bot's voice WebSocket, then Opus RTP every 20 ms.
    /// Returns when their first and last packets were sent.
    pub async fn speak(&self, guild: u64, user: &User, pcm: &[f32]) -> Result<Spoken, String> {
        voice::speak(&self.state, guild, user, pcm).await
    }

    /// Waits (up to `timeout`) until the bot's voice connection in `guild` carries audio, by
    /// having `user` send an empty utterance (a speaking event and five silence frames). The
    /// error says why the connection is not ready.
    pub async fn wait_voice_ready(
        &self,
        guild: u64,
        user: &User,
        timeout: Duration,
    ) -> Result<(), String> {
        let start = Instant::now();
        loop {
            match self.speak(guild, user, &[]).await {
                Ok(_) => return Ok(()),
                Err(e) if start.elapsed() > timeout => {
                    return Err(format!("the bot's voice connection never came up: {e}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// When the bot's first sound packet at or after `t` arrived in `guild` (cheap: no copy).
    pub fn bot_packet_after(&self, guild: u64, t: Instant) -> Option<Instant> {
        voice::bot_packet_after(&self.state, guild, t)
    }

    /// Forgets the bot's audio recorded before `before` in every guild (long load runs).
    pub fn forget_bot_audio(&self, before: Instant) {
        voice::forget_bot_audio(&self.state, before);
    }

    /// What the bot has sent in `guild`'s voice channel so far.
    pub fn bot_audio(&self, guild: u64) -> BotAudio {
        voice::bot_audio(&self.state, guild)
    }

    /// Waits until the bot has sent sound after `after` and then been quiet for `quiet`
    /// (its answer is over); gives up after `timeout`. Returns what it sent after `after`:
    /// when its first packet arrived and the audio (48 kHz mono).
    pub async fn wait_bot_answer(
        &self,
        guild: u64,
        after: Instant,
        quiet: Duration,
        timeout: Duration,
    ) -> Option<(Instant, Vec<f32>)> {
        let start = Instant::now();
        loop {
            let audio = self.bot_audio(guild);
            if let Some((first, pcm)) = audio.since(after)
                && audio.last_packet().is_some_and(|l| l.elapsed() >= quiet)
            {
                return Some((first, pcm.to_vec()));
            }
            if start.elapsed() > timeout {
                return audio.since(after).map(|(f, p)| (f, p.to_vec()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Closes the bot's voice WebSocket in `guild` with `code`: 4015 (the voice server
    /// crashed; songbird resumes) or another code such as 4006 (the session is gone; the bot
    /// must join again). Returns whether there was a connection to close.
    pub fn drop_voice_connection(&self, guild: u64, code: u16) -> bool {
        voice::drop_voice(&self.state, guild, code)
    }

    /// Closes every gateway connection abruptly (as a network drop would): the bot should
    /// RESUME.
    pub fn drop_gateway_connections(&self) {
        gateway::drop_all(&self.state);
    }

    /// The voice server of `guild` moves (as when Discord migrates a call): a new
    /// VOICE_SERVER_UPDATE with a new token, then the old voice connection is closed (4014).
    pub fn move_voice_server(&self, guild: u64) -> Result<(), String> {
        gateway::move_voice_server(&self.state, guild)
    }

    /// Closes every gateway connection with a close code, as Discord does: 4000-class codes
    /// the bot may resume after; 4007 and 4009 end the session too (the bot must IDENTIFY);
    /// 4004, 4010-4014 are fatal (the bot must not reconnect).
    pub fn close_gateway_connections(&self, code: u16) {
        gateway::close_all(&self.state, code);
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
