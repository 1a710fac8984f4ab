//! `voicebot-demo`: the bot end to end on one machine, no Discord account needed.
//!
//! It starts the Discord simulator in-process (REST, gateway, TLS voice WebSocket, UDP RTP),
//! an OpenClaw gateway (the real `openclaw` from npm in front of a small fake model, unless
//! `--gateway` names one), and the shard (`voicebot_shard::discord::gateway::run`, the same
//! code `voicebot-shard run` runs against Discord). A simulated user joins a voice channel,
//! runs `/<agent> join`, and says `--input` (a WAV) over RTP; the bot listens, answers through
//! the gateway and speaks. For each turn it prints the transcript, whether the bot was
//! addressed, the reply, the WAV of what the bot sent over RTP, and the latency from the end
//! of the user's speech to the bot's first RTP packet.

mod load;
#[path = "local_gateway.rs"]
mod local_gateway;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use serde_json::json;
use tokio::sync::{broadcast, watch};
use voicebot_config::BotConfig;
use voicebot_crds::VoiceBot;
use voicebot_discord_sim::{Guild, SimConfig, SimEvent, Simulator, TlsIdentity, User};
use voicebot_shard::audio;
use voicebot_shard::converse::relevance::Sensitivity;
use voicebot_shard::converse::room::{RoomEvent, TurnRecord};
use voicebot_shard::discord::gateway::{DiscordConfig, run};
use voicebot_shard::discord::voice::GuildEvent;
use voicebot_shard::eval::percentile;
use voicebot_shard::metrics::ShardMetrics;
use voicebot_shard::models::WhisperModel;
use voicebot_shard::openclaw::ClientConfig;
use voicebot_shard::pod::brains::{Brains, BrainsConfig, WarmUp};
use voicebot_shard::secret::Secret;
use voicebot_shard::state::{FleetState, StateConfig};

const GUILD: u64 = 1_000_000_000_000_000_001 << 1;
const VOICE_CHANNEL: u64 = GUILD + 10;

#[derive(Parser)]
#[command(
    name = "voicebot-demo",
    version,
    args_override_self = true,
    about = "A simulated Discord user talks to the bot: simulator + OpenClaw gateway + shard on this machine"
)]
struct Args {
    /// What the user says: a WAV (any rate, mono or stereo). Not needed with `--guilds`.
    #[arg(long, required_unless_present = "guilds")]
    input: Option<PathBuf>,
    /// Load: this many guilds, each with `--speakers` users talking over each other with
    /// generated speech for `--minutes`; prints one summary object (turns, replied, dropped,
    /// latency_ms p50/p95/max, rss_mb start/end, errors).
    #[arg(long)]
    guilds: Option<usize>,
    /// Load: simulated users per guild.
    #[arg(long, default_value_t = 2)]
    speakers: usize,
    /// Load: how long they talk.
    #[arg(long, default_value_t = 1.0)]
    minutes: f64,
    /// One JSON object per turn on stdout.
    #[arg(long)]
    json: bool,
    /// An OpenClaw gateway to use instead of starting one (token from $OPENCLAW_GATEWAY_TOKEN).
    #[arg(long, env = "OPENCLAW_GATEWAY_URL")]
    gateway: Option<String>,
    /// A VoiceBot resource (e.g. examples/voicebot.yaml): the demo runs its agents (names,
    /// aliases, personas, voices), models, listening settings, limits and default sensitivity,
    /// as the cluster would. Its Redis and gateway addresses are the cluster's: the demo uses
    /// `--redis` / `--gateway` (or its local gateway) instead.
    #[arg(long)]
    voicebot: Option<PathBuf>,
    /// The agent that answers (default: the first agent; without `--voicebot` the agents are
    /// `jarvis` and `sage` and the slash command is `/jarvis`).
    #[arg(long)]
    agent: Option<String>,
    /// How readily the bot answers (default: the file's `defaultSensitivity`, else low).
    #[arg(long)]
    sensitivity: Option<Sensitivity>,
    /// Say the input this many times (latency figures over several turns).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Where the reply WAVs go.
    #[arg(long, default_value = "voicebot-demo-out")]
    out: PathBuf,
    /// Whisper model (default: the file's `models.whisper`, else tiny.en).
    #[arg(long, value_enum)]
    model: Option<WhisperModel>,
    /// Directory with the models.
    #[arg(long, env = "VOICEBOT_MODELS_DIR")]
    models_dir: Option<PathBuf>,
    /// Listening workers (default: the file's `limits.workers`, else 2).
    #[arg(long)]
    workers: Option<usize>,
    /// Serve the shard's /metrics, /healthz and /readyz here (e.g. 127.0.0.1:9090).
    #[arg(long)]
    metrics_addr: Option<String>,
    /// Keep serving /metrics this many seconds after the turns (to read the figures).
    #[arg(long, default_value_t = 0)]
    hold_secs: u64,
    /// Skip the warm-up before "ready" (one pass through the gateway, the voices and the
    /// listening workers): shows what a cold first turn costs.
    #[arg(long)]
    no_warm_up: bool,
    /// Voice with transport encryption only: the simulator does not negotiate DAVE (by
    /// default it does, as Discord requires, and each turn reports `dave_version`/`dave_epoch`).
    #[arg(long)]
    no_dave: bool,
    /// Keep the shard's fleet state in this Redis (`redis://host:port`); each turn then
    /// reports the Redis round trips it cost (`redis_round_trips`).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis: Option<String>,
    /// Prefix of the demo's Redis keys.
    #[arg(long, default_value = "voicebot:demo:jarvis:")]
    redis_prefix: String,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,voicebot=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match demo(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("voicebot-demo: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Makes the simulator's certificate trusted by songbird's voice WebSocket (it reads the
/// platform roots, SSL_CERT_FILE included, at each connection). Runs before any other thread
/// exists, which is what makes changing the environment sound.
fn trust(tls: &TlsIdentity, dir: &std::path::Path) -> anyhow::Result<()> {
    let path = dir.join("simulator-ca.pem");
    std::fs::write(&path, tls.cert_pem()).with_context(|| format!("writing {}", path.display()))?;
    // SAFETY: single-threaded at this point (called from `demo` before the runtime starts).
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("SSL_CERT_FILE", &path);
    }
    Ok(())
}

/// The bot the demo runs: from `--voicebot`, else the built-in jarvis + sage.
fn bot_config(args: &Args) -> anyhow::Result<BotConfig> {
    let mut bot = match &args.voicebot {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let vb: VoiceBot = serde_yaml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: not a VoiceBot: {e}", path.display()))?;
            if let Err(bad) = vb.spec.validate() {
                let list: Vec<String> = bad.iter().map(ToString::to_string).collect();
                anyhow::bail!("{}: {}", path.display(), list.join("; "));
            }
            vb.spec.config
        }
        None => BotConfig::from_json(
            &json!({
                "agents": [{"name": "jarvis"}, {"name": "sage"}],
                "redis": {"url": "redis://127.0.0.1:6379"},
                "gateway": {"url": "ws://127.0.0.1:18789", "tokenSecret": {"name": "-", "key": "-"}},
            })
            .to_string(),
        )
        .map_err(anyhow::Error::msg)?,
    };
    if let Some(m) = args.model {
        bot.models.whisper = match m {
            WhisperModel::TinyEn => voicebot_config::WhisperModel::TinyEn,
            WhisperModel::Base => voicebot_config::WhisperModel::Base,
        };
    }
    if let Some(w) = args.workers {
        bot.limits.workers = w.clamp(1, 32) as u32;
    }
    if let Some(agent) = &args.agent
        && bot.agent(agent).is_none()
    {
        let known: Vec<&str> = bot.agents.iter().map(|a| a.name.as_str()).collect();
        anyhow::bail!(
            "--agent {agent}: not an agent of this bot ({})",
            known.join(", ")
        );
    }
    Ok(bot)
}

fn demo(args: Args) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let speech = match &args.input {
        Some(input) => {
            let pcm = audio::read_wav(input)?;
            voicebot_discord_sim::from_16k(&audio::to_pipeline_rate(&pcm)?)
        }
        None => Vec::new(),
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let tls = Arc::new(TlsIdentity::generate().map_err(anyhow::Error::msg)?);
    trust(&tls, &args.out)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let bot = bot_config(&args)?;
    rt.block_on(session(args, bot, tls, speech))
}

/// Where speech starts in 48 kHz audio: the first 10 ms louder than −45 dBFS, ms.
fn speech_onset_ms(pcm: &[f32]) -> u64 {
    pcm.chunks(480)
        .position(|w| audio::rms_dbfs(w) > -45.0)
        .unwrap_or(0) as u64
        * 10
}

async fn session(
    args: Args,
    bot: BotConfig,
    tls: Arc<TlsIdentity>,
    speech: Vec<f32>,
) -> anyhow::Result<()> {
    let agents = voicebot_shard::pod::settings::agent_names(&bot);
    let slash = agents[0].clone();
    let agent = args.agent.clone().unwrap_or_else(|| slash.clone());
    let started = Instant::now();
    // The gateway: the user's, or a local one with the fake model.
    let (gateway_config, local) = match &args.gateway {
        Some(url) => {
            let token = std::env::var("OPENCLAW_GATEWAY_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())
                .map(Secret::new);
            (ClientConfig::new(url, token), None)
        }
        None => {
            let names = agents.clone();
            let gw =
                tokio::task::spawn_blocking(move || local_gateway::Gateway::start_with(&names))
                    .await?;
            (gw.client_config(), Some(gw))
        }
    };
    let owner = User::new(1_300_000_000_000_000_001, "alice", false);
    let sim_config = SimConfig {
        tls: Some(tls),
        dave: !args.no_dave,
        ..SimConfig::default()
    };
    let sim = Arc::new(Simulator::start(sim_config.clone()).await?);
    let load_guilds = args
        .guilds
        .map(|n| load::guilds(n.max(1), args.speakers.max(1)));
    match &load_guilds {
        Some(guilds) => load::add_guilds(&sim, guilds),
        None => sim.add_guild(Guild::new(GUILD, &owner, (VOICE_CHANNEL, "Lounge"), &[])),
    }
    let (room_events, mut turns) = broadcast::channel(4096);
    let tts_key = std::env::var(voicebot_config::env::TTS_API_KEY)
        .ok()
        .filter(|k| !k.is_empty())
        .map(Secret::new);
    if bot.models.tts.api_key_secret.is_some() && tts_key.is_none() {
        anyhow::bail!(
            "models.tts.apiKeySecret is set: put the key in ${}",
            voicebot_config::env::TTS_API_KEY
        );
    }
    let brains = Brains::load(BrainsConfig {
        scope: "demo".into(),
        // The local gateway may still be starting: the demo's first turn needs it.
        gateway_wait: Duration::from_secs(60),
        ..BrainsConfig::from_bot(&bot, args.models_dir.clone(), Some(gateway_config), tts_key)
    })
    .await?;
    if !args.no_warm_up {
        warm_up(&brains, &agent, local.is_some()).await;
    }
    let voice_name = brains
        .agents
        .get(&agent)
        .map(|p| p.voice_name.clone())
        .unwrap_or_default();
    // With the local gateway the demo can say whether the agent's persona reached the model.
    let persona = bot
        .agent(&agent)
        .and_then(|a| a.persona.clone())
        .filter(|_| local.is_some());
    let metrics = Arc::new(ShardMetrics::new());
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let state = match &args.redis {
        Some(url) => FleetState::connect(&StateConfig {
            url: Secret::new(url.trim()),
            prefix: args.redis_prefix.clone(),
            seal_key: std::env::var("VOICEBOT_STATE_KEY")
                .ok()
                .filter(|k| !k.trim().is_empty())
                .map(Secret::new),
            ca: None,
        })?,
        None => FleetState::memory(),
    };
    let config = DiscordConfig {
        state: state.clone(),
        api_proxy: Some(sim.http_proxy()),
        gateway_url: Some(sim.gateway_url()),
        rooms: Some(Arc::new(brains)),
        room_events,
        metrics: Some(metrics.clone()),
        ready: Some(ready.clone()),
        default_sensitivity: bot.default_sensitivity,
        ..DiscordConfig::new(
            Secret::new(sim_config.token.clone()),
            sim_config.application_id,
            &slash,
            &agents.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };
    if let Some(addr) = &args.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        eprintln!("metrics: http://{}/metrics", listener.local_addr()?);
        tokio::spawn(voicebot_shard::metrics::serve(
            listener,
            metrics.clone(),
            ready,
        ));
    }
    let (stop, shutdown) = watch::channel(false);
    voicebot_shard::pod::observe(&config, metrics.clone());
    let shard = tokio::spawn(run(config, shutdown));
    let first_guild = load_guilds
        .as_ref()
        .and_then(|g| g.first().map(|g| g.0))
        .unwrap_or(GUILD);
    sim.wait_for_commands_within(first_guild, Duration::from_secs(60))
        .await
        .map_err(anyhow::Error::msg)?;
    eprintln!(
        "ready in {:.1} s: simulator, gateway, shard (models loaded)",
        started.elapsed().as_secs_f64()
    );
    if let Some(guilds) = &load_guilds {
        let clips = Arc::new(load::clips()?);
        for (guild, channel, users) in guilds {
            sim.wait_for_commands(*guild)
                .await
                .map_err(anyhow::Error::msg)?;
            for u in users {
                sim.user_voice(*guild, u, Some(*channel))
                    .map_err(anyhow::Error::msg)?;
            }
            command(
                &sim,
                &slash,
                *guild,
                &users[0],
                json!([{"name": "join", "type": 1}]),
            )
            .await?;
        }
        for (guild, _, users) in guilds {
            sim.wait_voice_ready(*guild, &users[0], Duration::from_secs(60))
                .await
                .map_err(anyhow::Error::msg)?;
        }
        eprintln!(
            "load: {} guilds × {} speakers for {} min",
            guilds.len(),
            args.speakers,
            args.minutes
        );
        while turns.try_recv().is_ok() {}
        let summary = load::drive(&sim, guilds, clips, args.minutes, turns).await;
        println!("{summary}");
        if args.hold_secs > 0 {
            tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
        }
        let _ = stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), shard).await;
        return Ok(());
    }

    // The user joins the voice channel, sets up the bot, and invites it.
    sim.user_voice(GUILD, &owner, Some(VOICE_CHANNEL))
        .map_err(anyhow::Error::msg)?;
    if agent != slash {
        command(&sim, &slash, GUILD, &owner, json!([{"name": "agent", "type": 1, "options": [{"name": "name", "type": 3, "value": agent}]}])).await?;
    }
    if let Some(level) = args.sensitivity {
        command(&sim, &slash, GUILD, &owner, json!([{"name": "sensitivity", "type": 1, "options": [{"name": "level", "type": 3, "value": level.as_str()}]}])).await?;
    }
    command(
        &sim,
        &slash,
        GUILD,
        &owner,
        json!([{"name": "join", "type": 1}]),
    )
    .await?;
    sim.wait_voice_ready(GUILD, &owner, Duration::from_secs(20))
        .await
        .map_err(anyhow::Error::msg)?;

    let onset_ms = speech_onset_ms(&speech);
    let mut latencies = Vec::new();
    let mut n = 0;
    let mut counted = 0;
    for _ in 0..args.repeat.max(1) {
        // Drain what earlier rounds left.
        while turns.try_recv().is_ok() {}
        let trips_before = state.stats().round_trips.load(Ordering::Relaxed);
        let spoken = sim
            .speak(GUILD, &owner, &speech)
            .await
            .map_err(anyhow::Error::msg)?;
        let turns_heard = collect_turns(&mut turns).await;
        // The listener's clock runs from the speaker's first audio ever: line it up with this
        // round through the first utterance's start and where speech starts in the file.
        let offset = turns_heard
            .first()
            .map_or(0, |t| t.utterance.start_ms.saturating_sub(onset_ms));
        for turn in turns_heard {
            n += 1;
            let end = spoken.started
                + Duration::from_millis(turn.utterance.end_ms.saturating_sub(offset));
            let answer = if turn.reply.reply.is_some() {
                sim.wait_bot_answer(
                    GUILD,
                    end,
                    Duration::from_millis(600),
                    Duration::from_secs(30),
                )
                .await
            } else {
                None
            };
            let latency_ms = answer
                .as_ref()
                .map(|(first, _)| first.saturating_duration_since(end).as_secs_f64() * 1e3);
            let reply_audio = match &answer {
                Some((_, pcm)) => {
                    let path = args.out.join(format!("reply-{n}.wav"));
                    audio::write_wav(&path, pcm, voicebot_discord_sim::BotAudio::SAMPLE_RATE)
                        .with_context(|| format!("writing {}", path.display()))?;
                    Some(path)
                }
                None => None,
            };
            if let Some(l) = latency_ms {
                latencies.push(l);
            }
            // Everything the turn cost in Redis (written behind, off the audio path); with
            // several turns in one utterance the first carries the round's count.
            let trips = state.stats().round_trips.load(Ordering::Relaxed);
            let redis_round_trips = args
                .redis
                .as_ref()
                .map(|_| trips.saturating_sub(trips_before.max(counted)));
            counted = trips;
            let persona_sent = persona.as_ref().map(|p| {
                local_gateway::user_messages()
                    .iter()
                    .rev()
                    .find(|m| !m.contains("[VOICEBOT_CLASSIFIER]"))
                    .is_some_and(|m| m.contains(p.as_str()))
            });
            print_turn(
                &args,
                (&agent, &voice_name, persona_sent),
                &turn,
                reply_audio.as_deref(),
                latency_ms,
                (redis_round_trips, sim.dave(GUILD)),
            );
        }
    }
    if !latencies.is_empty() {
        eprintln!(
            "{} answered turn(s) of {n}: end of speech → first bot RTP packet p50 {:.0} ms, p95 {:.0} ms",
            latencies.len(),
            percentile(&latencies, 50.0).unwrap_or(0.0),
            percentile(&latencies, 95.0).unwrap_or(0.0)
        );
        if let Some(line) = first_and_steady(&latencies) {
            eprintln!("{line}");
        }
    } else if n == 0 {
        eprintln!(
            "the bot heard no turn in {}",
            args.input
                .as_deref()
                .unwrap_or(std::path::Path::new("-"))
                .display()
        );
    }
    if args.hold_secs > 0 {
        eprintln!("serving /metrics for {} s more", args.hold_secs);
        tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    }
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), shard).await;
    Ok(())
}

/// One real pass through the engines before "ready" (see [`Brains::warm_up`]) and, when the
/// demo started the gateway itself, one run of the agent on a session of its own: the
/// gateway's first run pays for loading its agent runtime (seconds on 2 cores), which the
/// user's first turn should not. A gateway named with `--gateway` is the user's: left alone.
async fn warm_up(brains: &Brains, agent: &str, local_gateway: bool) {
    let started = Instant::now();
    let gateway = async {
        let Some(gw) = brains.gateway.as_ref().filter(|_| local_gateway) else {
            return Ok(None);
        };
        let t = Instant::now();
        let key = voicebot_shard::openclaw::session_key(agent, "demo", "warm-up");
        gw.chat(
            &key,
            voicebot_shard::pod::brains::WARM_UP_TEXT,
            voicebot_shard::openclaw::ChatOptions::default(),
        )
        .await?
        .collect()
        .await?;
        anyhow::Ok(Some(t.elapsed().as_secs_f64() * 1e3))
    };
    let (engines, gateway_ms) = tokio::join!(brains.warm_up(), gateway);
    // Like the pod: a failed warm-up only makes the first turn slower.
    let engines = engines.unwrap_or_else(|e| {
        eprintln!("warm-up failed ({e:#}); the first turn will be slower");
        WarmUp::default()
    });
    let gateway_ms = gateway_ms.unwrap_or_else(|e| {
        eprintln!("warm-up: the gateway's first run failed ({e:#}); the first turn will be slower");
        None
    });
    eprintln!(
        "warmed up in {:.1} s: {} voice session(s) {:.0} ms, {} listening worker(s) {:.0} ms (heard \"{}\"){}",
        started.elapsed().as_secs_f64(),
        engines.voice_sessions,
        engines.tts_ms,
        engines.workers,
        engines.listen_ms,
        engines.heard.trim(),
        gateway_ms.map_or_else(String::new, |ms| format!(
            ", the gateway's first run {ms:.0} ms"
        ))
    );
}

/// The first answered turn against the ones after it (the steady state): whether the warm-up
/// made the first turn cost what the later ones do. `None` with fewer than two turns.
fn first_and_steady(latencies: &[f64]) -> Option<String> {
    let (first, steady) = latencies.split_first()?;
    let p50 = percentile(steady, 50.0)?;
    let p95 = percentile(steady, 95.0)?;
    Some(format!(
        "first turn {first:.0} ms ({:.2}× the steady p50); steady state (turns 2–{}): p50 {p50:.0} ms, p95 {p95:.0} ms",
        first / p50.max(1.0),
        latencies.len()
    ))
}

async fn command(
    sim: &Simulator,
    slash: &str,
    guild: u64,
    user: &User,
    options: serde_json::Value,
) -> anyhow::Result<()> {
    let id = sim
        .run_command(guild, user, slash, options)
        .map_err(anyhow::Error::msg)?;
    let reply = sim
        .wait_for(
            "the command's answer",
            |e| matches!(e, SimEvent::InteractionReply { interaction, .. } if *interaction == id),
        )
        .await
        .map_err(anyhow::Error::msg)?;
    if let SimEvent::InteractionReply { content, .. } = reply {
        eprintln!("bot: {content}");
    }
    Ok(())
}

/// The turns of one utterance round: waits for the first, then until none has come for a while.
async fn collect_turns(rx: &mut broadcast::Receiver<GuildEvent>) -> Vec<TurnRecord> {
    let mut out = Vec::new();
    let mut pending = 0usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let wait = if out.is_empty() || pending > 0 {
            deadline.saturating_duration_since(Instant::now())
        } else {
            Duration::from_secs(3)
        };
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Ok(GuildEvent {
                event: RoomEvent::Heard { .. },
                ..
            })) => pending += 1,
            Ok(Ok(GuildEvent {
                event: RoomEvent::Turn(t),
                ..
            })) => {
                pending = pending.saturating_sub(1);
                out.push(*t);
            }
            Ok(Ok(GuildEvent {
                event: RoomEvent::Dropped { .. },
                ..
            })) => pending = pending.saturating_sub(1),
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return out,
        }
    }
}

fn print_turn(
    args: &Args,
    (agent, voice, persona_sent): (&str, &str, Option<bool>),
    t: &TurnRecord,
    reply_audio: Option<&std::path::Path>,
    latency: Option<f64>,
    (redis_round_trips, dave): (Option<u64>, Option<voicebot_discord_sim::DaveStats>),
) {
    if args.json {
        // The room's record of the turn, plus what only the demo measures or knows.
        let mut record = t.to_json();
        record["latency_ms"] = json!(latency.map(|l| (l * 10.0).round() / 10.0));
        record["reply_audio"] = json!(reply_audio.map(|p| p.display().to_string()));
        record["redis_round_trips"] = json!(redis_round_trips);
        record["agent"] = json!(agent);
        record["voice"] = json!(voice);
        record["persona_sent"] = json!(persona_sent);
        // DAVE: 0 = transport encryption only; the epoch of the call's MLS group.
        record["dave_version"] = json!(dave.map_or(0, |d| d.version));
        record["dave_epoch"] = json!(dave.map(|d| d.epoch));
        println!("{record}");
        return;
    }
    println!("user: \"{}\"", t.utterance.transcript);
    match (&t.reply.reply, latency) {
        (Some(reply), Some(l)) => println!(
            "  {agent} ({voice}{}): \"{reply}\"  — first RTP packet {l:.0} ms after the user stopped; audio: {}",
            match persona_sent {
                Some(true) => ", persona sent",
                Some(false) => ", persona NOT sent",
                None => "",
            },
            reply_audio.map_or_else(String::new, |p| p.display().to_string())
        ),
        (Some(reply), None) => println!("  {agent}: \"{reply}\" (no audio heard)"),
        (None, _) => println!(
            "  (not answered: {}{})",
            t.reply.reason.label(),
            t.reply
                .error
                .as_ref()
                .map_or_else(String::new, |e| format!(", {e}"))
        ),
    }
    match dave.filter(|d| d.version > 0) {
        Some(d) => println!(
            "  voice end-to-end encrypted: DAVE v{}, MLS epoch {}",
            d.version, d.epoch
        ),
        None => println!("  voice: transport encryption only (no DAVE)"),
    }
}
