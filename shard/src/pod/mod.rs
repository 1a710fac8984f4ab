//! The pod, assembled in one place: the configuration (the VoiceBot's spec as the operator
//! renders it, with flags laid over it), the fleet state (Redis or memory), the metrics and
//! health server, the OpenClaw client and the engine pool ([`brains::Brains`]), the rooms'
//! observers and the Discord shards. Each part gets only what it uses:
//!
//! ```text
//! settings::resolve(config file + flags) ─► Settings
//! FleetState::connect(redis) ──────────────────────────┬─► discord (guild settings, sessions)
//!   └► credentials::fleet_credentials ─► OpenClaw client │
//! Brains::load(models, voices, client) ─► dyn Rooms ────┼─► discord::voice (opens rooms)
//! broadcast<GuildEvent> ◄── rooms' events ──────────────┘
//!   ├► observe::count_rooms ─► ShardMetrics ─► metrics::serve (/metrics, /healthz, /readyz)
//!   └► observe::record_runs ─► FleetState (the run being spoken) + the turn's log line
//! discord::gateway::run(DiscordConfig) until SIGTERM
//! ```

pub mod brains;
pub mod config_file;
pub mod credentials;
pub mod observe;
pub mod settings;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::discord::commands::CommandPermissions;
use crate::discord::gateway::DiscordConfig;
use crate::discord::plan::ShardPlan;
use crate::metrics::ShardMetrics;
use crate::models::WhisperModel;
use crate::openclaw::ClientConfig;
use crate::secret::Secret;
use crate::state::{FleetState, StateConfig};
use brains::{Brains, BrainsConfig, Credentials};
use settings::Settings;

/// How the pod reaches Discord.
#[derive(Debug, Clone)]
pub struct DiscordAccess {
    /// The bot token.
    pub token: Secret,
    /// The application id.
    pub application_id: u64,
    /// `host:port` of a plain-HTTP REST API instead of discord.com (the simulator).
    pub api_proxy: Option<String>,
    /// `ws://host:port` of a gateway instead of Discord's (the simulator).
    pub gateway_url: Option<String>,
    /// Domains a saved resume URL may point at (empty: Discord's).
    pub gateway_hosts: Vec<String>,
}

/// Everything `voicebot-shard run` is told (the environment the operator sets, and flags).
#[derive(Clone)]
pub struct PodOptions {
    /// Discord's addresses and credentials.
    pub discord: DiscordAccess,
    /// This pod's shards.
    pub plan: ShardPlan,
    /// This pod's name (owner of the identify slots it takes).
    pub pod: String,
    /// The configuration file the operator mounts, and the flags over it.
    pub settings: settings::Overrides,
    /// Address of /metrics, /healthz and /readyz.
    pub metrics_addr: String,
    /// Join and leave voice channels but neither listen nor speak (no models loaded).
    pub no_voice: bool,
    /// Directory with the models.
    pub models_dir: Option<PathBuf>,
    /// The OpenClaw gateway token.
    pub gateway_token: Option<Secret>,
    /// Where the device identity is kept when there is no Redis.
    pub state_dir: Option<PathBuf>,
    /// Prefix of this bot's Redis keys.
    pub redis_prefix: String,
    /// One IDENTIFY per max_concurrency bucket per this interval.
    pub identify_interval: Duration,
}

/// Runs the pod until `shutdown` turns true (SIGTERM): health first (alive, not ready), then
/// the state, the models and the gateway, then the shards — ready once every shard has its
/// READY.
pub async fn run(options: PodOptions, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let settings = Settings::resolve(&options.settings)?;
    let ready = Arc::new(AtomicBool::new(false));
    let metrics = Arc::new(ShardMetrics::new());
    let listener = tokio::net::TcpListener::bind(&options.metrics_addr)
        .await
        .with_context(|| format!("binding {}", options.metrics_addr))?;
    tokio::spawn(crate::metrics::serve(
        listener,
        metrics.clone(),
        ready.clone(),
    ));
    let state = match &settings.redis {
        Some(url) => {
            let state = FleetState::connect(&StateConfig {
                url: Secret::new(url.trim()),
                prefix: options.redis_prefix.clone(),
                seal_key: settings.state_key.clone(),
                ca: settings.redis_ca.clone(),
            })?;
            tracing::info!(redis = %crate::state::redact(url), prefix = %options.redis_prefix, "fleet state in Redis");
            state
        }
        None => {
            tracing::warn!("no --redis: guild settings and sessions will not survive this process");
            FleetState::memory()
        }
    };
    let agents: Vec<String> = settings.agents.iter().map(|a| a.name.clone()).collect();
    let command = options
        .settings
        .command
        .clone()
        .unwrap_or_else(|| agents[0].clone());
    let brains = if options.no_voice {
        None
    } else {
        Some(load_brains(&options, &settings, &command, &state).await?)
    };
    let base = discord_config(&options, &command, &agents);
    let config = DiscordConfig {
        api_proxy: options.discord.api_proxy.clone(),
        gateway_url: options.discord.gateway_url.clone(),
        plan: options.plan,
        pod: options.pod.clone(),
        identify_interval: options.identify_interval,
        default_sensitivity: settings.sensitivity,
        permissions: CommandPermissions::new(settings.commands.clone()),
        state: state.clone(),
        metrics: Some(metrics.clone()),
        ready: Some(ready),
        rooms: brains.map(|b| Arc::new(b) as Arc<dyn crate::discord::voice::Rooms>),
        ..base
    };
    observe(&config, metrics);
    crate::discord::gateway::run(config, shutdown).await
}

/// The Discord side's base configuration: identity, command, agents, trusted gateway hosts.
fn discord_config(options: &PodOptions, command: &str, agents: &[String]) -> DiscordConfig {
    let base = DiscordConfig::new(
        options.discord.token.clone(),
        options.discord.application_id,
        command,
        &agents.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    DiscordConfig {
        gateway_hosts: if options.discord.gateway_hosts.is_empty() {
            base.gateway_hosts.clone()
        } else {
            options.discord.gateway_hosts.clone()
        },
        ..base
    }
}

/// Starts the rooms' observers of `config`: the metrics and the run recorder (subscribed
/// before the shards start, so no event is missed).
pub fn observe(config: &DiscordConfig, metrics: Arc<ShardMetrics>) {
    tokio::spawn(observe::count_rooms(
        config.room_events.subscribe(),
        config.plan.count,
        metrics,
    ));
    tokio::spawn(observe::record_runs(
        config.room_events.subscribe(),
        config.state.clone(),
    ));
}

/// The pod's engines: the models, the voices and the OpenClaw client (with Redis, the
/// fleet's one device identity: one pairing approval for every pod).
async fn load_brains(
    options: &PodOptions,
    settings: &Settings,
    scope: &str,
    state: &FleetState,
) -> anyhow::Result<Brains> {
    let gateway = settings
        .gateway
        .as_ref()
        .map(|url| ClientConfig::new(url, options.gateway_token.clone()));
    let credentials = match (&settings.redis, &settings.gateway) {
        (Some(_), Some(_)) => match credentials::fleet_credentials(state).await {
            Ok(c) => Some(Credentials(c)),
            Err(e) => {
                tracing::warn!(error = %e, "the device identity is not in Redis; using a local one");
                None
            }
        },
        _ => None,
    };
    let brains = Brains::load(BrainsConfig {
        models_dir: options.models_dir.clone(),
        whisper: settings.whisper,
        workers: settings.workers,
        tts_workers: settings.tts_workers,
        gateway,
        gateway_wait: brains::GATEWAY_WAIT,
        state_dir: options.state_dir.clone(),
        credentials,
        scope: scope.to_string(),
        agents: settings.agents.clone(),
        tts: settings.tts.clone(),
        tts_api_key: settings.tts_api_key.clone(),
        room: settings.room,
    })
    .await
    .context("loading the voice pipeline (models from scripts/setup.sh; --no-voice to skip)")?;
    // Before the shards start (and so before /readyz): the first user's turn should cost what
    // later ones do. A failed warm-up is not fatal: that turn is only slower.
    match brains.warm_up().await {
        Ok(w) => tracing::info!(
            voice_sessions = w.voice_sessions,
            tts_ms = w.tts_ms.round() as u64,
            workers = w.workers,
            listen_ms = w.listen_ms.round() as u64,
            "warmed up"
        ),
        Err(e) => tracing::warn!(error = %e, "warm-up failed; the first turn will be slower"),
    }
    Ok(brains)
}

/// The Whisper model when neither the file nor a flag names one.
pub const DEFAULT_WHISPER: WhisperModel = WhisperModel::TinyEn;
