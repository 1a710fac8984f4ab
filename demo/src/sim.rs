//! `voicebot-sim`: the project's Discord (REST, gateway, TLS voice WebSocket, UDP RTP, DAVE)
//! and an OpenClaw gateway with its fake model, as servers for a bot that runs somewhere else:
//! the shard pods of the Kubernetes end-to-end test (`scripts/e2e.sh`).
//!
//! `voicebot-sim cert` writes the voice server's certificate once (the pods' image trusts it);
//! `voicebot-sim serve` binds every server to one address (inside the test's network
//! namespace) and takes orders on a control address (loopback): a simulated user joins a voice
//! channel, has the bot join if it is not there, says a WAV and waits for the answer, which it
//! transcribes with Whisper; `GET /state` tells which shards are connected and whether two
//! sessions ever owned one guild.
//!
//! Everything here is a stand-in for Discord, which cannot run here: the bot under test is the
//! real one, in its real image, in real pods.

#[path = "local_gateway.rs"]
mod local_gateway;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use voicebot_discord_sim::{Guild, SimConfig, SimEvent, Simulator, TlsIdentity, User};
use voicebot_shard::audio;
use voicebot_shard::listen::stt::SttConfig;
use voicebot_shard::listen::{Listener, ListenerConfig, Models};
use voicebot_shard::models::{ModelPaths, WhisperModel};

#[derive(Parser)]
#[command(
    name = "voicebot-sim",
    version,
    about = "The Discord simulator and an OpenClaw gateway as servers, for a bot in pods"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes the voice server's certificate and key for HOST into DIR (kept when they are
    /// already there for that host); prints the certificate's path.
    Cert {
        /// Where cert.pem and key.pem go.
        #[arg(long)]
        dir: PathBuf,
        /// The address the voice server will serve (the certificate's name).
        #[arg(long)]
        host: IpAddr,
    },
    /// Serves Discord and the OpenClaw gateway on HOST until stopped.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The address every server binds (an address of the test's network namespace).
    #[arg(long)]
    host: IpAddr,
    /// Ports of the REST API, the gateway and the voice server (TCP and UDP).
    #[arg(long, value_delimiter = ',', default_value = "3080,3081,3082")]
    ports: Vec<u16>,
    /// The certificate and key `cert` wrote.
    #[arg(long)]
    tls_dir: PathBuf,
    /// The orders' address (`GET /state`, `POST /converse/{guild}`); keep it on loopback.
    #[arg(long, default_value = "127.0.0.1:3099")]
    control: SocketAddr,
    /// Where the OpenClaw gateway is served on HOST (forwarded to the gateway on loopback).
    #[arg(long, default_value_t = 18789)]
    openclaw_port: u16,
    /// The bot token the simulator accepts, in this file.
    #[arg(long)]
    token_file: PathBuf,
    /// The bot's application id.
    #[arg(long, default_value_t = 1_100_000_000_000_000_001)]
    application_id: u64,
    /// Guilds, each with a voice channel and a user (their ids spread over shards).
    #[arg(long, default_value_t = 2)]
    guilds: usize,
    /// The slash command (the VoiceBot's first agent).
    #[arg(long, default_value = "jarvis")]
    command: String,
    /// What the users say (a WAV).
    #[arg(long)]
    input: PathBuf,
    /// Directory with the models (Whisper transcribes the bot's answers).
    #[arg(long, env = "VOICEBOT_MODELS_DIR")]
    models_dir: Option<PathBuf>,
    /// Written once everything listens: the addresses and the OpenClaw gateway's token.
    #[arg(long)]
    ready_file: PathBuf,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,voicebot_discord_sim=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match Args::parse().command {
        Command::Cert { dir, host } => cert(&dir, host).map(|path| println!("{}", path.display())),
        Command::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(serve(args))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("voicebot-sim: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn cert(dir: &Path, host: IpAddr) -> anyhow::Result<PathBuf> {
    let (cert, key, name) = (dir.join("cert.pem"), dir.join("key.pem"), dir.join("host"));
    if std::fs::read_to_string(&name).is_ok_and(|h| h.trim() == host.to_string())
        && load_identity(dir).is_ok()
    {
        return Ok(cert);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let id = TlsIdentity::generate_for(&[host.to_string(), "localhost".to_string()])
        .map_err(anyhow::Error::msg)?;
    std::fs::write(&key, id.key_pem()).with_context(|| format!("writing {}", key.display()))?;
    std::fs::write(&cert, id.cert_pem()).with_context(|| format!("writing {}", cert.display()))?;
    std::fs::write(&name, host.to_string())?;
    Ok(cert)
}

fn load_identity(dir: &Path) -> anyhow::Result<TlsIdentity> {
    let read = |f: &str| {
        let p = dir.join(f);
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    };
    TlsIdentity::from_pem(&read("cert.pem")?, &read("key.pem")?).map_err(anyhow::Error::msg)
}

/// A guild of the scenario: its voice channel and the user who talks there.
struct Place {
    guild: u64,
    channel: u64,
    user: User,
}

struct Ctx {
    sim: Simulator,
    places: Vec<Place>,
    command: String,
    speech: Vec<f32>,
    /// The silence after the last word of `speech` (48 kHz): where the user stops talking.
    trailing: Duration,
    models: std::sync::Mutex<Models>,
    /// One conversation at a time (the simulated users take turns).
    busy: tokio::sync::Mutex<()>,
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let ports: [u16; 3] = args
        .ports
        .clone()
        .try_into()
        .map_err(|_| anyhow::anyhow!("--ports takes three ports: REST, gateway, voice"))?;
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("reading {}", args.token_file.display()))?
        .trim()
        .to_string();
    anyhow::ensure!(!token.is_empty(), "the token file is empty");
    let tls = Arc::new(load_identity(&args.tls_dir)?);
    let pcm = audio::read_wav(&args.input)?;
    let speech = voicebot_discord_sim::from_16k(&audio::to_pipeline_rate(&pcm)?);
    let models_dir = args.models_dir.clone();
    let models = tokio::task::spawn_blocking(move || {
        let paths = ModelPaths::locate(models_dir.as_deref(), WhisperModel::TinyEn)?;
        let stt = SttConfig {
            threads: 2,
            ..SttConfig::default()
        };
        Models::load(paths, WhisperModel::TinyEn, stt, 1)
    })
    .await??;

    // The OpenClaw gateway (the real one, from npm) with the fake model, on loopback; the pods
    // reach it through a forwarder on HOST, so the gateway sees a local client.
    let agents = vec![args.command.clone(), "sage".to_string()];
    let names = agents.clone();
    let gw =
        tokio::task::spawn_blocking(move || local_gateway::Gateway::start_with(&names)).await?;
    warm_gateway(&gw, &agents).await;
    let openclaw = SocketAddr::new(args.host, args.openclaw_port);
    let forward = tokio::net::TcpListener::bind(openclaw)
        .await
        .with_context(|| format!("binding {openclaw}"))?;
    tokio::spawn(forward_to(
        forward,
        SocketAddr::from(([127, 0, 0, 1], gw.port)),
    ));

    let sim = Simulator::start(SimConfig {
        application_id: args.application_id,
        token,
        tls: Some(tls),
        host: args.host,
        ports,
        ..SimConfig::default()
    })
    .await?;
    let places: Vec<Place> = (0..args.guilds.max(1))
        .map(|i| {
            // Snowflakes of 2017; guild i is on shard i of 2 (the shard is (id >> 22) % count).
            let guild = ((238_418_579_100 + i as u64) << 22) | 7_000;
            let user = User::new(
                1_300_000_000_000_000_001 + i as u64,
                &format!("user{i}"),
                false,
            );
            Place {
                guild,
                channel: guild + 10,
                user,
            }
        })
        .collect();
    for p in &places {
        sim.add_guild(Guild::new(p.guild, &p.user, (p.channel, "Lounge"), &[]));
    }
    let ctx = Arc::new(Ctx {
        sim,
        places,
        command: args.command.clone(),
        trailing: trailing_silence(&speech),
        speech,
        models: std::sync::Mutex::new(models),
        busy: tokio::sync::Mutex::new(()),
    });
    let app = Router::new()
        .route("/state", get(state))
        .route("/converse/{place}", post(converse))
        .with_state(ctx.clone());
    let control = tokio::net::TcpListener::bind(args.control)
        .await
        .with_context(|| format!("binding {}", args.control))?;
    let ready = json!({
        "api_proxy": ctx.sim.http_proxy(),
        "gateway_url": ctx.sim.gateway_url(),
        "voice_endpoint": ctx.sim.voice_endpoint(),
        "openclaw_url": format!("ws://{openclaw}"),
        "openclaw_token": gw.token,
        "control": format!("http://{}", args.control),
        "guilds": ctx.places.iter().map(|p| p.guild.to_string()).collect::<Vec<_>>(),
    });
    std::fs::write(&args.ready_file, serde_json::to_vec_pretty(&ready)?)
        .with_context(|| format!("writing {}", args.ready_file.display()))?;
    eprintln!(
        "voicebot-sim: Discord on {} (REST {}, gateway {}, voice {}), OpenClaw on {openclaw}, control on {}",
        args.host,
        ctx.sim.http_proxy(),
        ctx.sim.gateway_url(),
        ctx.sim.voice_endpoint(),
        args.control
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    axum::serve(control, app)
        .with_graceful_shutdown(stop)
        .await?;
    drop(gw);
    Ok(())
}

/// One turn per agent through the gateway, as `voicebot-demo` does with its own: the
/// gateway's first run of an agent takes seconds (Node loading the agent's runtime), a cost of
/// this test peer that the pods' first turns should not carry. A failure only says so.
async fn warm_gateway(gw: &local_gateway::Gateway, agents: &[String]) {
    use voicebot_shard::openclaw::{ChatOptions, GatewayClient, session_key};
    let store = match voicebot_shard::openclaw::device::MemoryStore::new() {
        Ok(store) => Arc::new(store),
        Err(e) => return eprintln!("voicebot-sim: no warm-up ({e})"),
    };
    let client = GatewayClient::start(gw.client_config(), store);
    if let Err(e) = client.wait_connected(Duration::from_secs(90)).await {
        return eprintln!("voicebot-sim: no warm-up, the gateway did not connect ({e})");
    }
    for agent in agents {
        let started = std::time::Instant::now();
        let key = session_key(agent, "voicebot-sim", "warm-up");
        let reply = async {
            client
                .chat(&key, "warm up", ChatOptions::default())
                .await?
                .collect()
                .await
        };
        match reply.await {
            Ok(_) => eprintln!(
                "voicebot-sim: the gateway's first run of {agent}: {} ms",
                started.elapsed().as_millis()
            ),
            Err(e) => eprintln!("voicebot-sim: warming {agent} failed ({e})"),
        }
    }
}

/// Copies each connection to `to` (the OpenClaw gateway on loopback).
async fn forward_to(listener: tokio::net::TcpListener, to: SocketAddr) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// `GET /state`: the connected shards, the guilds and the shard owning each, double owners.
async fn state(State(ctx): State<Arc<Ctx>>) -> Json<Value> {
    let shards = ctx.sim.connected_shards();
    let identifies = ctx
        .sim
        .history()
        .iter()
        .filter(|e| matches!(e, SimEvent::Identify { .. }))
        .count();
    let guilds: Vec<Value> = ctx
        .places
        .iter()
        .map(|p| {
            let owners: Vec<[u32; 2]> = shards
                .iter()
                .filter(|s| Simulator::shard_of(p.guild, s[1]) == s[0])
                .copied()
                .collect();
            json!({"guild": p.guild.to_string(), "owners": owners})
        })
        .collect();
    let doubles: Vec<Value> = ctx
        .sim
        .double_owners()
        .iter()
        .map(|d| json!({"guild": d.guild.to_string(), "connected": d.connected, "identified": d.identified}))
        .collect();
    Json(json!({
        "connected_shards": shards,
        "identifies": identifies,
        "guilds": guilds,
        "double_owners": doubles,
    }))
}

/// `POST /converse/{place}` (0-based): the place's user joins the voice channel, has the bot
/// join unless it is already there (after a restart it rejoins from Redis by itself), says the
/// WAV and waits for the answer; the answer is transcribed.
async fn converse(
    State(ctx): State<Arc<Ctx>>,
    UrlPath(place): UrlPath<usize>,
) -> (StatusCode, Json<Value>) {
    let _one = ctx.busy.lock().await;
    match conversation(&ctx, place).await {
        Ok(v) => (StatusCode::OK, Json(v)),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": format!("{e:#}")})),
        ),
    }
}

async fn conversation(ctx: &Ctx, place: usize) -> anyhow::Result<Value> {
    let p = ctx
        .places
        .get(place)
        .with_context(|| format!("no guild {place} (there are {})", ctx.places.len()))?;
    let sim = &ctx.sim;
    sim.wait_for_commands_within(p.guild, Duration::from_secs(120))
        .await
        .map_err(anyhow::Error::msg)?;
    sim.user_voice(p.guild, &p.user, Some(p.channel))
        .map_err(anyhow::Error::msg)?;
    // Already in the channel (it rejoined by itself)? Else the user runs `/<agent> join`.
    let rejoined = sim
        .wait_voice_ready(p.guild, &p.user, Duration::from_secs(8))
        .await
        .is_ok();
    let mut join_reply = None;
    if !rejoined {
        let id = sim
            .run_command(
                p.guild,
                &p.user,
                &ctx.command,
                json!([{"name": "join", "type": 1}]),
            )
            .map_err(anyhow::Error::msg)?;
        let reply = sim
            .wait_for_since(
                0,
                Duration::from_secs(30),
                "the join command's answer",
                |e| matches!(e, SimEvent::InteractionReply { interaction, .. } if *interaction == id),
            )
            .await
            .map_err(anyhow::Error::msg)?;
        if let SimEvent::InteractionReply { content, .. } = reply {
            join_reply = Some(content);
        }
        sim.wait_voice_ready(p.guild, &p.user, Duration::from_secs(60))
            .await
            .map_err(anyhow::Error::msg)?;
    }
    let spoken = sim
        .speak(p.guild, &p.user, &ctx.speech)
        .await
        .map_err(anyhow::Error::msg)?;
    // The end of the user's speech (not of the WAV's trailing silence): the bot may start
    // answering before the WAV is over.
    let speech_end = spoken
        .stopped
        .checked_sub(ctx.trailing)
        .unwrap_or(spoken.started);
    let (first, pcm) = sim
        .wait_bot_answer(
            p.guild,
            speech_end,
            Duration::from_millis(900),
            Duration::from_secs(60),
        )
        .await
        .context("the bot did not answer within 60 s")?;
    let answer_ms = pcm.len() as f64 * 1e3 / f64::from(voicebot_discord_sim::BotAudio::SAMPLE_RATE);
    let latency_ms = first.saturating_duration_since(speech_end).as_secs_f64() * 1e3;
    let transcript = transcribe(ctx, pcm).await?;
    let dave = sim.dave(p.guild);
    let owners: Vec<[u32; 2]> = sim
        .connected_shards()
        .into_iter()
        .filter(|s| Simulator::shard_of(p.guild, s[1]) == s[0])
        .collect();
    Ok(json!({
        "guild": p.guild.to_string(),
        "owners": owners,
        "rejoined": rejoined,
        "join_reply": join_reply,
        "answer_ms": answer_ms.round(),
        "latency_ms": latency_ms.round(),
        "transcript": transcript,
        "dave_version": dave.as_ref().map(|d| d.version),
        "dave_epoch": dave.as_ref().map(|d| d.epoch),
    }))
}

/// How long `pcm` (48 kHz) is quiet at its end: after the last 10 ms louder than −45 dBFS.
fn trailing_silence(pcm: &[f32]) -> Duration {
    let frames = pcm.len() / 480;
    let last_loud = pcm
        .chunks(480)
        .rposition(|w| audio::rms_dbfs(w) > -45.0)
        .map_or(0, |i| i + 1);
    Duration::from_millis((frames.saturating_sub(last_loud) * 10) as u64)
}

/// Whisper's words for the bot's answer (48 kHz mono).
async fn transcribe(ctx: &Ctx, pcm: Vec<f32>) -> anyhow::Result<String> {
    let pcm = audio::Pcm {
        sample_rate: voicebot_discord_sim::BotAudio::SAMPLE_RATE,
        channels: 1,
        samples: pcm,
    };
    let mut pcm16 = vec![0.0; 4_800];
    pcm16.extend(audio::to_pipeline_rate(&pcm)?);
    pcm16.extend(vec![0.0; 24_000]);
    tokio::task::block_in_place(|| {
        let mut models = ctx
            .models
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let vad = models.new_vad()?;
        let mut listener = Listener::new(ListenerConfig::default(), vad);
        let mut words = Vec::new();
        for frame in pcm16.chunks(320) {
            words.extend(listener.push(&mut *models, frame)?);
        }
        words.extend(listener.finish(&mut *models)?);
        Ok(words
            .iter()
            .map(|u| u.transcript.trim().to_string())
            .collect::<Vec<_>>()
            .join(" "))
    })
}
