//! `voicebot-shard run`: the pod as the operator starts it. Its shards come from the
//! environment (SHARD_COUNT, SHARDS_PER_POD, POD_NAME), the token from DISCORD_TOKEN, the
//! agents from the ConfigMap file (VOICEBOT_CONFIG); `/healthz` and `/readyz` are served on
//! METRICS_ADDR. SIGTERM or Ctrl-C closes the shards with a resumable code.
//!
//! For the simulator (tests, the demo) DISCORD_API_PROXY (`host:port`, plain HTTP) and
//! DISCORD_GATEWAY_URL (`ws://host:port`) replace Discord's addresses. VOICEBOT_STATE_KEY (from a
//! Secret) seals the secrets the pod keeps in Redis.

use anyhow::Context as _;
use clap::Args;
use voicebot_shard::discord::plan::ShardPlan;
use voicebot_shard::models::WhisperModel;
use voicebot_shard::pod::{self, DiscordAccess, PodOptions, settings::Overrides};
use voicebot_shard::secret::Secret;

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
    /// Domains a gateway resume URL saved in fleet state may point at, comma-separated (each
    /// with its subdomains, wss:// only; DISCORD_GATEWAY_URL is always allowed). Default:
    /// Discord's (discord.gg). Redis is not trusted with the bot token.
    #[arg(long, env = "DISCORD_GATEWAY_HOSTS", value_delimiter = ',')]
    gateway_hosts: Vec<String>,
    /// One IDENTIFY per max_concurrency bucket per this many ms (Discord's rule is 5000).
    #[arg(long, env = "VOICEBOT_IDENTIFY_INTERVAL_MS", default_value_t = 5000)]
    identify_interval_ms: u64,
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
    let options = PodOptions {
        discord: DiscordAccess {
            token: Secret::new(token.trim()),
            application_id,
            api_proxy: std::env::var("DISCORD_API_PROXY").ok(),
            gateway_url: std::env::var("DISCORD_GATEWAY_URL").ok(),
            gateway_hosts: args.gateway_hosts.clone(),
        },
        plan: ShardPlan::from_env()?,
        pod: std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| format!("pid-{}", std::process::id())),
        settings: Overrides {
            config: args.config.clone(),
            command: args.command.clone(),
            agents: args.agents.clone(),
            whisper: args.whisper,
            workers: args.workers,
            gateway: args.gateway.clone(),
            redis: args.redis.clone(),
        },
        metrics_addr: args.metrics_addr.clone(),
        no_voice: args.no_voice,
        models_dir: args.models_dir.clone(),
        gateway_token: crate::ask::load_token(args.token_file.as_deref())?,
        state_dir: args.state_dir.clone(),
        redis_prefix: args.redis_prefix.clone(),
        identify_interval: std::time::Duration::from_millis(args.identify_interval_ms),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = stop.send(true);
        });
        pod::run(options, shutdown).await
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
