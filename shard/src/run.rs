//! `voicebot-shard run`: the pod as the operator starts it. Its shards come from the
//! environment (SHARD_COUNT, SHARDS_PER_POD, POD_NAME), the token from DISCORD_TOKEN, the
//! agents from the ConfigMap file (VOICEBOT_CONFIG); `/healthz` and `/readyz` are served on
//! METRICS_ADDR. SIGTERM or Ctrl-C closes the shards with a resumable code.
//!
//! For the simulator (tests, the demo) DISCORD_API_PROXY (`host:port`, plain HTTP) and
//! DISCORD_GATEWAY_URL (`ws://host:port`) replace Discord's addresses.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context as _;
use clap::Args;
use voicebot_config::{AgentConfig, TtsConfig, env};
use voicebot_shard::converse::relevance::Sensitivity;
use voicebot_shard::converse::room::RoomConfig;
use voicebot_shard::discord::config;
use voicebot_shard::discord::gateway::{DiscordConfig, run};
use voicebot_shard::discord::plan::ShardPlan;
use voicebot_shard::discord::voice::{Brains, BrainsConfig, Credentials};
use voicebot_shard::metrics::ShardMetrics;
use voicebot_shard::models::WhisperModel;
use voicebot_shard::openclaw::ClientConfig;
use voicebot_shard::secret::Secret;
use voicebot_shard::settings;
use voicebot_shard::state::{FleetState, StateConfig};

#[derive(Args)]
pub struct RunArgs {
    /// The slash command's name (default: the first agent).
    #[arg(long, env = "VOICEBOT_COMMAND")]
    command: Option<String>,
    /// Agents, comma-separated (default: from VOICEBOT_CONFIG, else "jarvis").
    #[arg(long, env = "VOICEBOT_AGENTS", value_delimiter = ',')]
    agents: Vec<String>,
    /// The configuration file the operator mounts.
    #[arg(long, env = "VOICEBOT_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9090")]
    metrics_addr: String,
    /// Join and leave voice channels but neither listen nor speak (no models loaded).
    #[arg(long)]
    no_voice: bool,
    /// Directory with the models.
    #[arg(long, env = "VOICEBOT_MODELS_DIR")]
    models_dir: Option<std::path::PathBuf>,
    /// Whisper model (overrides the file's `models.whisper`; default tiny.en).
    #[arg(long, value_enum, env = "VOICEBOT_WHISPER_MODEL")]
    whisper: Option<WhisperModel>,
    /// Listening workers shared by the pod's guilds (overrides `limits.workers`; default 2).
    #[arg(long, env = "VOICEBOT_WORKERS")]
    workers: Option<usize>,
    /// The OpenClaw gateway (ws:// or wss://; overrides the file's `gateway.url`); its token
    /// from $OPENCLAW_GATEWAY_TOKEN or --token-file. Without one the bot listens but does not
    /// answer.
    #[arg(long, env = "OPENCLAW_GATEWAY_URL")]
    gateway: Option<String>,
    /// A file holding the gateway token.
    #[arg(long, env = "OPENCLAW_GATEWAY_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    /// Where the gateway device identity is kept when there is no Redis.
    #[arg(long, env = "VOICEBOT_STATE_DIR")]
    state_dir: Option<std::path::PathBuf>,
    /// Fleet state: guild settings, voice membership, gateway sessions, the OpenClaw device
    /// identity, the identify queue (`redis://[:password@]host:port[/db]`; overrides the
    /// file's `redis.url`; the operator passes `redis.urlSecret` here). Without it nothing
    /// survives the process.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis: Option<String>,
    /// Prefix of this bot's Redis keys (the operator sets `voicebot:<namespace>:<bot>:`).
    #[arg(
        long,
        env = "VOICEBOT_REDIS_PREFIX",
        default_value = "voicebot:local:bot:"
    )]
    redis_prefix: String,
    /// One IDENTIFY per max_concurrency bucket per this many ms (Discord's rule is 5000).
    #[arg(long, env = "VOICEBOT_IDENTIFY_INTERVAL_MS", default_value_t = 5000)]
    identify_interval_ms: u64,
}

/// What the pod runs: the configuration file (the VoiceBot's spec, as the operator renders
/// it), with the flags above laid over it (a flag wins: for debugging a pod by hand).
struct Settings {
    agents: Vec<AgentConfig>,
    sensitivity: Sensitivity,
    whisper: WhisperModel,
    workers: usize,
    gateway: Option<String>,
    redis: Option<String>,
    tts: TtsConfig,
    tts_api_key: Option<Secret>,
    room: RoomConfig,
}

impl Settings {
    fn resolve(args: &RunArgs) -> anyhow::Result<Self> {
        let bot = match &args.config {
            Some(path) => Some(config::load(path).map_err(anyhow::Error::msg)?),
            None => None,
        };
        let named = |name: &str| {
            bot.as_ref()
                .and_then(|b| b.agent(name).cloned())
                .unwrap_or_else(|| AgentConfig {
                    name: name.to_string(),
                    aliases: Vec::new(),
                    persona: None,
                    voice: None,
                })
        };
        let agents = if !args.agents.is_empty() {
            args.agents.iter().map(|n| named(n)).collect()
        } else if let Some(b) = &bot {
            b.agents.clone()
        } else {
            vec![named("jarvis")]
        };
        let env_secret = |var: &str| {
            std::env::var(var)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|v| Secret::new(v.trim()))
        };
        let redis = match (&args.redis, &bot) {
            (Some(url), _) => Some(url.clone()),
            (None, Some(b)) if b.redis.url_secret.is_some() => anyhow::bail!(
                "redis.urlSecret is set but ${} is empty (the operator passes it from the Secret)",
                env::REDIS_URL
            ),
            (None, Some(b)) => b.redis.url.clone(),
            (None, None) => None,
        };
        let tts = bot
            .as_ref()
            .map(|b| b.models.tts.clone())
            .unwrap_or_default();
        let tts_api_key = match &tts.api_key_secret {
            Some(_) => Some(env_secret(env::TTS_API_KEY).with_context(|| {
                format!(
                    "models.tts.apiKeySecret is set but ${} is empty (the operator passes it from the Secret)",
                    env::TTS_API_KEY
                )
            })?),
            None => None,
        };
        Ok(Self {
            agents,
            sensitivity: bot
                .as_ref()
                .map_or(Sensitivity::Low, |b| b.default_sensitivity),
            whisper: args
                .whisper
                .or(bot.as_ref().map(|b| settings::whisper(b.models.whisper)))
                .unwrap_or(WhisperModel::TinyEn),
            workers: args
                .workers
                .or(bot.as_ref().map(|b| b.limits.workers as usize))
                .unwrap_or(2),
            gateway: args
                .gateway
                .clone()
                .or(bot.as_ref().map(|b| b.gateway.url.clone())),
            redis,
            tts,
            tts_api_key,
            room: bot.as_ref().map(settings::room).unwrap_or_default(),
        })
    }
}

/// The pod's engines, unless `--no-voice`.
async fn brains(
    args: &RunArgs,
    settings: &Settings,
    scope: &str,
    state: &FleetState,
) -> anyhow::Result<Option<Brains>> {
    if args.no_voice {
        return Ok(None);
    }
    let gateway = match &settings.gateway {
        Some(url) => Some(ClientConfig::new(
            url,
            crate::ask::load_token(args.token_file.as_deref())?,
        )),
        None => None,
    };
    // With Redis, the fleet's one device identity (one pairing approval for every pod).
    let credentials = match (&settings.redis, &settings.gateway) {
        (Some(_), Some(_)) => match state.credentials().await {
            Ok(c) => Some(Credentials(c)),
            Err(e) => {
                tracing::warn!(error = %e, "the device identity is not in Redis; using a local one");
                None
            }
        },
        _ => None,
    };
    let brains = Brains::load(BrainsConfig {
        models_dir: args.models_dir.clone(),
        whisper: settings.whisper,
        workers: settings.workers,
        gateway,
        state_dir: args.state_dir.clone(),
        credentials,
        scope: scope.to_string(),
        agents: settings.agents.clone(),
        tts: settings.tts.clone(),
        tts_api_key: settings.tts_api_key.clone(),
        room: settings.room,
    })
    .await
    .context("loading the voice pipeline (models from scripts/setup.sh; --no-voice to skip)")?;
    Ok(Some(brains))
}

pub fn run_shard(args: &RunArgs) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let token = std::env::var("DISCORD_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .context(
            "DISCORD_TOKEN is not set (the bot token; the operator passes it from a Secret)",
        )?;
    let application_id = std::env::var("DISCORD_APPLICATION_ID")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|v| *v > 0)
        .context("DISCORD_APPLICATION_ID must be the application's numeric id")?;
    let plan = ShardPlan::from_env()?;
    let settings = Settings::resolve(args)?;
    let agents = settings
        .agents
        .iter()
        .map(|a| a.name.clone())
        .collect::<Vec<_>>();
    let sensitivity = settings.sensitivity;
    let config = DiscordConfig {
        command: args.command.clone().unwrap_or_else(|| agents[0].clone()),
        agents,
        default_sensitivity: sensitivity,
        api_proxy: std::env::var("DISCORD_API_PROXY").ok(),
        gateway_url: std::env::var("DISCORD_GATEWAY_URL").ok(),
        plan,
        pod: std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| format!("pid-{}", std::process::id())),
        identify_interval: std::time::Duration::from_millis(args.identify_interval_ms),
        ..DiscordConfig::new(Secret::new(token.trim()), application_id, "", &[])
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // Health first (alive, not ready), then the models, then the shards: ready once every
        // shard has its READY.
        let mut config = config;
        let ready = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(ShardMetrics::new());
        let listener = tokio::net::TcpListener::bind(&args.metrics_addr)
            .await
            .with_context(|| format!("binding {}", args.metrics_addr))?;
        tokio::spawn(voicebot_shard::metrics::serve(
            listener,
            metrics.clone(),
            ready.clone(),
        ));
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = stop.send(true);
        });
        config.state = match &settings.redis {
            Some(url) => {
                let state = FleetState::connect(&StateConfig {
                    url: Secret::new(url.trim()),
                    prefix: args.redis_prefix.clone(),
                })?;
                tracing::info!(redis = %voicebot_shard::state::redact(url), prefix = %args.redis_prefix, "fleet state in Redis");
                state
            }
            None => {
                tracing::warn!("no --redis: guild settings and sessions will not survive this process");
                FleetState::memory()
            }
        };
        config.brains = brains(args, &settings, &config.command, &config.state).await?;
        config.metrics = Some(metrics);
        config.ready = Some(ready);
        run(config, shutdown).await
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
