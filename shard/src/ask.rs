//! `voicebot-shard ask`: one question to an agent through the OpenClaw gateway, the reply
//! streamed to stdout as it is written.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use voicebot_shard::openclaw::device::FileStore;
use voicebot_shard::openclaw::{ChatOptions, ClientConfig, GatewayClient, ReplyEvent, session_key};
use voicebot_shard::secret::Secret;

/// Environment variable holding the gateway token.
pub const TOKEN_ENV: &str = "OPENCLAW_GATEWAY_TOKEN";

#[derive(Args)]
pub struct AskArgs {
    /// Gateway WebSocket URL, e.g. ws://127.0.0.1:18789.
    #[arg(long, env = "OPENCLAW_GATEWAY_URL")]
    gateway: String,
    /// Agent id (the gateway's `agents.entries` key), e.g. jarvis.
    #[arg(long)]
    agent: String,
    /// Conversation name: the session key is `agent:<agent>:cli:<session>`.
    #[arg(long, default_value = "ask")]
    session: String,
    /// File holding the gateway token (else $OPENCLAW_GATEWAY_TOKEN; never a flag, so it
    /// stays out of shell history and process listings).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Where the device identity and device token are kept.
    #[arg(long, env = "VOICEBOT_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Connection and handshake timeout, ms.
    #[arg(long, default_value_t = 15_000)]
    connect_timeout_ms: u64,
    /// From sending to the first reply text, ms.
    #[arg(long, default_value_t = 30_000)]
    first_token_timeout_ms: u64,
    /// From sending to the end of the reply, ms.
    #[arg(long, default_value_t = 120_000)]
    reply_timeout_ms: u64,
    /// One JSON object per event instead of plain text.
    #[arg(long)]
    json: bool,
    /// The message (several words are joined with spaces).
    #[arg(required = true, num_args = 1..)]
    text: Vec<String>,
}

fn token(args: &AskArgs) -> anyhow::Result<Option<Secret>> {
    load_token(args.token_file.as_deref())
}

/// The gateway token: from `file` if given, else from the environment.
pub fn load_token(file: Option<&std::path::Path>) -> anyhow::Result<Option<Secret>> {
    if let Some(path) = file {
        let raw = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?;
        let token = raw.trim();
        anyhow::ensure!(
            !token.is_empty(),
            "the token file {} is empty",
            path.display()
        );
        return Ok(Some(Secret::new(token)));
    }
    Ok(std::env::var(TOKEN_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty())
        .map(|t| Secret::new(t.trim())))
}

pub fn default_state_dir() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir)
        .join("voicebot")
}

pub fn run(args: &AskArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(ask(args))
}

async fn ask(args: &AskArgs) -> anyhow::Result<()> {
    let token = token(args)?;
    if token.is_none() {
        tracing::warn!(
            "no gateway token (set {TOKEN_ENV} or --token-file); trying the saved device token"
        );
    }
    let mut config = ClientConfig::new(&args.gateway, token);
    config.connect_timeout = Duration::from_millis(args.connect_timeout_ms);
    config.request_timeout = Duration::from_millis(args.connect_timeout_ms.max(5_000));
    config.first_token_timeout = Duration::from_millis(args.first_token_timeout_ms);
    config.reply_timeout = Duration::from_millis(args.reply_timeout_ms);
    let store = Arc::new(FileStore::new(
        args.state_dir.clone().unwrap_or_else(default_state_dir),
    ));

    let started = Instant::now();
    let client = GatewayClient::start(config, store);
    client
        .wait_connected(Duration::from_millis(args.connect_timeout_ms))
        .await?;
    let connect_ms = started.elapsed().as_secs_f64() * 1e3;

    let key = session_key(&args.agent, "cli", &args.session);
    let sent = Instant::now();
    let mut reply = client
        .chat(&key, &args.text.join(" "), ChatOptions::default())
        .await?;
    let mut first_token_ms = None;
    let mut stdout = std::io::stdout().lock();
    let mut outcome = "final";
    while let Some(event) = reply.next().await {
        let event = event?;
        if first_token_ms.is_none()
            && matches!(event, ReplyEvent::Delta(_) | ReplyEvent::Replace(_))
        {
            first_token_ms = Some(sent.elapsed().as_secs_f64() * 1e3);
        }
        if args.json {
            let line = match &event {
                ReplyEvent::Delta(t) => serde_json::json!({"delta": t}),
                ReplyEvent::Replace(t) => serde_json::json!({"replace": t}),
                ReplyEvent::Final(t) => serde_json::json!({"final": t}),
                ReplyEvent::Aborted(t) => serde_json::json!({"aborted": t}),
            };
            writeln!(stdout, "{line}")?;
        } else {
            match &event {
                ReplyEvent::Delta(t) => write!(stdout, "{t}")?,
                ReplyEvent::Replace(t) => write!(stdout, "\n{t}")?,
                ReplyEvent::Final(t) if first_token_ms.is_none() => write!(stdout, "{t}")?,
                ReplyEvent::Final(_) => {}
                ReplyEvent::Aborted(_) => outcome = "aborted",
            }
        }
        stdout.flush()?;
    }
    if !args.json {
        writeln!(stdout)?;
    }
    let total_ms = sent.elapsed().as_secs_f64() * 1e3;
    let first = first_token_ms.map_or_else(|| "-".to_string(), |ms| format!("{ms:.0} ms"));
    eprintln!(
        "[{outcome}] connect {connect_ms:.0} ms · first token {first} · reply {total_ms:.0} ms · run {}",
        reply.run_id()
    );
    client.close();
    Ok(())
}
