//! `voicebot-shard`: one pod of the voice-assistant fleet.
//!
//! Subcommands: `pipeline` (the listening pipeline on a WAV file), `transcribe` (Whisper
//! alone), `ask` (one question to an agent through the OpenClaw gateway), `run` (the pod's
//! Discord shards, as the operator starts it).

mod ask;
mod converse_cli;
mod run;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use voicebot_shard::audio;
use voicebot_shard::listen::stt::{AudioCtx, SttConfig};
use voicebot_shard::listen::vad::VadConfig;
use voicebot_shard::listen::{Listener, ListenerConfig, Models};
use voicebot_shard::models::{ModelPaths, WhisperModel};

#[derive(Parser)]
#[command(
    name = "voicebot-shard",
    version,
    about = "One pod of the Discord voice-assistant fleet"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the listening pipeline (VAD → Smart Turn → Whisper) over a WAV file and print one
    /// record per detected utterance.
    Pipeline(PipelineArgs),
    /// Transcribe a whole WAV file with Whisper alone (no VAD, no turn detection).
    Transcribe(TranscribeArgs),
    /// Ask an agent through the OpenClaw gateway and stream the reply to stdout. The token
    /// comes from $OPENCLAW_GATEWAY_TOKEN or --token-file.
    Ask(ask::AskArgs),
    /// Run this pod's Discord shards (as the operator starts it; configuration from the
    /// environment: DISCORD_TOKEN, DISCORD_APPLICATION_ID, SHARD_COUNT, SHARDS_PER_POD,
    /// POD_NAME, VOICEBOT_CONFIG, METRICS_ADDR).
    Run(run::RunArgs),
}

#[derive(Args)]
struct TranscribeArgs {
    /// Input WAV.
    #[arg(long)]
    input: PathBuf,
    /// Whisper model.
    #[arg(long, value_enum, default_value = "tiny.en")]
    model: WhisperModel,
    /// CPU threads.
    #[arg(long, default_value_t = 2, env = "VOICEBOT_THREADS")]
    threads: usize,
    /// Directory with the models.
    #[arg(long, env = "VOICEBOT_MODELS_DIR")]
    models_dir: Option<PathBuf>,
    /// Encoder window: `full`, `fit` or `fit:MIN`.
    #[arg(long, default_value = "fit:384", value_parser = parse_audio_ctx)]
    audio_ctx: AudioCtx,
    /// Disable whisper.cpp's flash attention.
    #[arg(long)]
    no_flash_attn: bool,
    /// Transcribe this many times and report each time (for benchmarking).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
}

#[derive(Args)]
pub(crate) struct PipelineArgs {
    /// Input WAV: mono or multi-channel, 8–192 kHz, integer or float samples.
    #[arg(long)]
    input: PathBuf,
    /// Whisper model.
    #[arg(long, value_enum, default_value = "tiny.en")]
    model: WhisperModel,
    /// One JSON object per utterance on stdout.
    #[arg(long)]
    json: bool,
    /// CPU threads for Whisper and Smart Turn.
    #[arg(long, default_value_t = 2, env = "VOICEBOT_THREADS")]
    threads: usize,
    /// Directory with the models (default: .cache/models from scripts/setup.sh).
    #[arg(long, env = "VOICEBOT_MODELS_DIR")]
    models_dir: Option<PathBuf>,
    /// Silero speech probability threshold.
    #[arg(long, default_value_t = 0.5)]
    vad_threshold: f32,
    /// Shortest speech that counts, ms.
    #[arg(long, default_value_t = 250)]
    min_speech_ms: u32,
    /// Silence that ends a stretch of speech, ms.
    #[arg(long, default_value_t = 200)]
    silence_ms: u32,
    /// Smart Turn probability that ends the turn.
    #[arg(long, default_value_t = 0.5)]
    turn_threshold: f32,
    /// How long an incomplete turn waits for more speech, ms.
    #[arg(long, default_value_t = 2000)]
    max_wait_ms: u32,
    /// How long a turn Smart Turn calls complete waits when Whisper heard an unfinished
    /// phrase, ms (0: trust Smart Turn alone).
    #[arg(long, default_value_t = 1200)]
    unfinished_wait_ms: u32,
    /// Encoder window: `full` (30 s, whisper's default), `fit` (just the utterance) or
    /// `fit:MIN` (the utterance, at least MIN positions of 20 ms).
    #[arg(long, default_value = "fit:384", value_parser = parse_audio_ctx)]
    audio_ctx: AudioCtx,
    /// Disable whisper.cpp's flash attention.
    #[arg(long)]
    no_flash_attn: bool,
    /// Audio kept before the detected start of speech, ms.
    #[arg(long, default_value_t = 400)]
    pre_roll_ms: u32,
    /// Agent id: adds the relevance decision (`addressed`, `reason`) to each record.
    #[arg(long)]
    agent: Option<String>,
    /// Names the agent answers to besides its id (comma-separated), e.g. "Jarvis,J.A.R.V.I.S.".
    #[arg(long, value_delimiter = ',')]
    aliases: Vec<String>,
    /// How readily the agent joins in.
    #[arg(long, value_enum, default_value = "low")]
    sensitivity: voicebot_shard::converse::relevance::Sensitivity,
    /// Humans in the channel (1 = solo mode: every turn is for the bot).
    #[arg(long, default_value_t = 2)]
    humans: usize,
    /// OpenClaw gateway URL: whole turns, with the agent's spoken reply (token from
    /// $OPENCLAW_GATEWAY_TOKEN or --token-file, as for `ask`).
    #[arg(long, env = "OPENCLAW_GATEWAY_URL", requires = "agent")]
    gateway: Option<String>,
    /// File holding the gateway token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Where the device identity is kept.
    #[arg(long, env = "VOICEBOT_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Write every reply's audio to this WAV file.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn parse_audio_ctx(s: &str) -> Result<AudioCtx, String> {
    match s {
        "full" => Ok(AudioCtx::Full),
        "fit" => Ok(AudioCtx::Fit { min: 0 }),
        other => other
            .strip_prefix("fit:")
            .and_then(|n| n.parse().ok())
            .map(|min| AudioCtx::Fit { min })
            .ok_or_else(|| format!("expected full, fit or fit:<min positions>, got {other:?}")),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VOICEBOT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Pipeline(args) => run_pipeline(&args),
        Command::Transcribe(args) => run_transcribe(&args),
        Command::Ask(args) => ask::run(&args),
        Command::Run(args) => run::run_shard(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_pipeline(args: &PipelineArgs) -> anyhow::Result<()> {
    // Decode first: a bad input file should fail fast, before any model loads.
    let t = Instant::now();
    let pcm = audio::read_wav(&args.input)?;
    let samples = audio::to_pipeline_rate(&pcm)?;
    let input_ms = t.elapsed().as_secs_f64() * 1e3;

    let t = Instant::now();
    let paths = ModelPaths::locate(args.models_dir.as_deref(), args.model)?;
    let stt = SttConfig {
        threads: args.threads,
        audio_ctx: args.audio_ctx,
        flash_attn: !args.no_flash_attn,
    };
    let mut models = Models::load(paths, args.model, stt, args.threads)?;
    let config = ListenerConfig {
        vad: VadConfig {
            threshold: args.vad_threshold,
            min_speech_ms: args.min_speech_ms,
            silence_ms: args.silence_ms,
        },
        turn_threshold: args.turn_threshold,
        max_wait_ms: args.max_wait_ms,
        unfinished_wait_ms: args.unfinished_wait_ms,
        pre_roll_ms: args.pre_roll_ms,
        ..ListenerConfig::default()
    };
    let mut listener = Listener::new(config, models.new_vad()?);
    let load_ms = t.elapsed().as_secs_f64() * 1e3;

    let mut responder = match &args.agent {
        Some(agent) => Some(converse_cli::Responder::new(args, agent, &models)?),
        None => None,
    };

    let t = Instant::now();
    let mut stdout = std::io::stdout().lock();
    let mut count = 0;
    let mut emit = |u: voicebot_shard::listen::Utterance,
                    stdout: &mut std::io::StdoutLock<'_>|
     -> anyhow::Result<()> {
        count += 1;
        match responder.as_mut() {
            Some(r) => r.handle(stdout, &u, args.json),
            None => print_utterance(stdout, &u, args.json),
        }
    };
    // Feed 20 ms frames, as Discord will.
    for frame in samples.chunks(320) {
        for u in listener.push(&mut models, frame)? {
            emit(u, &mut stdout)?;
        }
    }
    for u in listener.finish(&mut models)? {
        emit(u, &mut stdout)?;
    }
    if let (Some(r), Some(out)) = (responder.as_ref(), &args.out) {
        r.write_audio(out)?;
    }
    let audio_s = samples.len() as f64 / 16_000.0;
    let run_s = t.elapsed().as_secs_f64();
    eprintln!(
        "{count} utterance(s) in {audio_s:.1} s of audio; pipeline {run_s:.2} s ({:.1}x real time), decode+resample {input_ms:.1} ms, model load {load_ms:.0} ms{}",
        audio_s / run_s.max(1e-9),
        if listener.rejected().is_empty() {
            String::new()
        } else {
            format!(
                ", {} turn(s) dropped by the guard ({})",
                listener.rejected().len(),
                listener
                    .rejected()
                    .iter()
                    .map(|r| r.label())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    Ok(())
}

fn run_transcribe(args: &TranscribeArgs) -> anyhow::Result<()> {
    let pcm = audio::read_wav(&args.input)?;
    let samples = audio::to_pipeline_rate(&pcm)?;
    let paths = ModelPaths::locate(args.models_dir.as_deref(), args.model)?;
    let config = SttConfig {
        threads: args.threads,
        audio_ctx: args.audio_ctx,
        flash_attn: !args.no_flash_attn,
    };
    let mut whisper =
        voicebot_shard::listen::stt::Whisper::new(&paths.whisper, args.model, config)?;
    for _ in 0..args.repeat.max(1) {
        let t = Instant::now();
        let transcript = whisper.transcribe(&samples)?;
        let stt_ms = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "{}",
            serde_json::json!({
                "transcript": transcript.text,
                "stt_ms": stt_ms,
                "audio_ms": samples.len() as u64 * 1000 / 16_000,
                "no_speech_prob": transcript.no_speech_prob,
                "avg_logprob": transcript.avg_logprob,
            })
        );
    }
    Ok(())
}

fn print_utterance(
    out: &mut impl Write,
    u: &voicebot_shard::listen::Utterance,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, u)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "[{:>6.2}s – {:>6.2}s] {:?}  (turn complete {:.2}, {})  vad {:.1} ms · turn {:.1} ms · stt {:.0} ms",
            u.start_ms as f64 / 1000.0,
            u.end_ms as f64 / 1000.0,
            u.transcript,
            u.turn_complete,
            serde_json::to_value(u.commit)?.as_str().unwrap_or("?"),
            u.stages_ms.vad,
            u.stages_ms.turn,
            u.stages_ms.stt,
        )?;
    }
    out.flush()?;
    Ok(())
}
