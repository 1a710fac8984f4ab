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
use voicebot_shard::converse::relevance::Sensitivity;
use voicebot_shard::discord::gateway::{DiscordConfig, run};
use voicebot_shard::discord::plan::ShardPlan;
use voicebot_shard::discord::voice::{Brains, BrainsConfig, Credentials};
use voicebot_shard::metrics::ShardMetrics;
use voicebot_shard::models::WhisperModel;
use voicebot_shard::openclaw::ClientConfig;
use voicebot_shard::secret::Secret;
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
    /// Whisper model.
    #[arg(
        long,
        value_enum,
        default_value = "tiny.en",
        env = "VOICEBOT_WHISPER_MODEL"
    )]
    whisper: WhisperModel,
    /// Listening workers shared by the pod's guilds.
    #[arg(long, default_value_t = 2, env = "VOICEBOT_WORKERS")]
    workers: usize,
    /// The OpenClaw gateway (ws:// or wss://); its token from $OPENCLAW_GATEWAY_TOKEN or
    /// --token-file. Without one the bot listens but does not answer.
    #[arg(long, env = "OPENCLAW_GATEWAY_URL")]
    gateway: Option<String>,
    /// A file holding the gateway token.
    #[arg(long, env = "OPENCLAW_GATEWAY_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    /// Where the gateway device identity is kept when there is no Redis.
    #[arg(long, env = "VOICEBOT_STATE_DIR")]
    state_dir: Option<std::path::PathBuf>,
    /// Fleet state: guild settings, voice membership, gateway sessions, the OpenClaw device
    /// identity, the identify queue (`redis://[:password@]host:port[/db]`). Without it
    /// nothing survives the process.
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

/// The pod's engines, unless `--no-voice`.
async fn brains(args: &RunArgs, scope: &str, state: &FleetState) -> anyhow::Result<Option<Brains>> {
    if args.no_voice {
        return Ok(None);
    }
    let gateway = match &args.gateway {
        Some(url) => Some(ClientConfig::new(
            url,
            crate::ask::load_token(args.token_file.as_deref())?,
        )),
        None => None,
    };
    // With Redis, the fleet's one device identity (one pairing approval for every pod).
    let credentials = match (&args.redis, &args.gateway) {
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
        whisper: args.whisper,
        workers: args.workers,
        gateway,
        state_dir: args.state_dir.clone(),
        credentials,
        scope: scope.to_string(),
    })
    .await
    .context("loading the voice pipeline (models from scripts/setup.sh; --no-voice to skip)")?;
    Ok(Some(brains))
}

fn from_config_file(path: &std::path::Path) -> anyhow::Result<(Vec<String>, Sensitivity)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let config = voicebot_shard::discord::config::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((config.agents, config.default_sensitivity))
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
    let (mut agents, sensitivity) = match &args.config {
        Some(path) => from_config_file(path)?,
        None => (Vec::new(), Sensitivity::Low),
    };
    if !args.agents.is_empty() {
        agents = args.agents.clone();
    }
    if agents.is_empty() {
        agents.push("jarvis".into());
    }
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
        config.state = match &args.redis {
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
        config.brains = brains(args, &config.command, &config.state).await?;
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
