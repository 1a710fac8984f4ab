//! Listening-pipeline benchmark against the Python peers, on the same clips and threads.
//!
//! Run through `scripts/bench.sh` (which prepares the clips and the Python environment):
//! Silero per chunk vs pipecat's onnxruntime model, Smart Turn (features + inference) vs
//! pipecat's analyzer, whole-utterance STT vs faster-whisper on the same CTranslate2 weights.
//! Prints a table of medians and the Rust/Python ratios (lower is better for Rust).
#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use voicebot_shard::audio;
use voicebot_shard::eval::{percentile, word_error_rate};
use voicebot_shard::listen::stt::{AudioCtx, SttConfig, Whisper};
use voicebot_shard::listen::turn::SmartTurn;
use voicebot_shard::listen::vad::{CHUNK, SileroVad};
use voicebot_shard::models::{ModelPaths, WhisperModel, onnx_environment};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn median(v: &[f64]) -> f64 {
    percentile(v, 50.0).unwrap_or(f64::NAN)
}

fn main() {
    let Some(clip_dir) = arg("--clips").map(PathBuf::from) else {
        eprintln!("usage: scripts/bench.sh (needs --clips DIR [--python PATH] [--models DIR])");
        return;
    };
    let threads: usize = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    let models_dir = arg("--models").map(PathBuf::from);
    let paths = ModelPaths::locate(models_dir.as_deref(), WhisperModel::TinyEn).expect("models");
    let list = std::fs::read_to_string(clip_dir.join("clips.tsv")).expect("clips.tsv");
    let clips: Vec<(Vec<f32>, String)> = list
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(name, text)| {
            let pcm = audio::read_wav(&clip_dir.join(name)).expect("clip");
            (
                audio::to_pipeline_rate(&pcm).expect("resample"),
                text.to_string(),
            )
        })
        .collect();
    let audio_s: f64 = clips.iter().map(|(a, _)| a.len() as f64 / 16_000.0).sum();
    println!(
        "{} clips, {audio_s:.1} s of speech, {threads} threads\n",
        clips.len()
    );

    let env = onnx_environment(&paths.onnxruntime).expect("onnxruntime");
    // Silero, per chunk.
    let mut vad = SileroVad::new(&env, &paths.silero_vad).expect("vad");
    let mut chunks = 0;
    let t = Instant::now();
    for _ in 0..3 {
        for (audio, _) in &clips {
            vad.reset();
            for c in audio.chunks_exact(CHUNK) {
                let mut chunk = [0.0; CHUNK];
                chunk.copy_from_slice(c);
                vad.process(&chunk).expect("vad");
                chunks += 1;
            }
        }
    }
    let vad_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(chunks);

    // Smart Turn, features included.
    let mut turn = SmartTurn::new(&env, &paths.smart_turn, threads).expect("turn");
    turn.predict(&clips[0].0).expect("warm-up");
    let mut turn_ms = Vec::new();
    let mut features_ms = Vec::new();
    for (audio, _) in &clips {
        let t = Instant::now();
        let (_, timing) = turn.predict(audio).expect("turn");
        turn_ms.push(t.elapsed().as_secs_f64() * 1e3);
        features_ms.push(timing.features_ms);
    }

    // Whisper, whole utterance, both encoder-window policies.
    let mut stt = Vec::new();
    // The last: what a room does, Whisper told the agents' names (its initial prompt).
    let variants = [
        ("full", AudioCtx::Full, false, ""),
        ("fit", AudioCtx::Fit { min: 0 }, true, ""),
        ("fit:384 default", AudioCtx::Fit { min: 384 }, true, ""),
        (
            "fit:384 + names hint",
            AudioCtx::Fit { min: 384 },
            true,
            "Jarvis, Sage",
        ),
    ];
    for (label, audio_ctx, flash_attn, hint) in variants {
        let config = SttConfig {
            threads,
            audio_ctx,
            flash_attn,
        };
        let mut whisper =
            Whisper::new(&paths.whisper, WhisperModel::TinyEn, config).expect("whisper");
        whisper.transcribe_with(&clips[0].0, hint).expect("warm-up");
        let (mut ms, mut wer) = (Vec::new(), Vec::new());
        for (audio, text) in &clips {
            let t = Instant::now();
            let out = whisper.transcribe_with(audio, hint).expect("stt");
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            let w = word_error_rate(text, &out.text);
            if w > 0.3 {
                eprintln!("  {label}: {text:?} heard as {:?}", out.text);
            }
            wer.push(f64::from(w));
        }
        stt.push((label, ms, wer));
    }

    let peers: Option<serde_json::Value> = arg("--python").and_then(|python| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench/peers.py");
        let out = Command::new(python)
            .arg(script)
            .arg(&clip_dir)
            .arg(&paths.dir)
            .env("BENCH_THREADS", threads.to_string())
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "python peers failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    });
    let peer_list = |key: &str| -> Option<Vec<f64>> {
        Some(
            peers
                .as_ref()?
                .get(key)?
                .as_array()?
                .iter()
                .filter_map(serde_json::Value::as_f64)
                .collect(),
        )
    };
    let peer_wer = |key: &str| -> Option<f64> {
        let texts = peers.as_ref()?.get(key)?.as_array()?;
        let w: Vec<f64> = texts
            .iter()
            .zip(&clips)
            .map(|(t, (_, r))| f64::from(word_error_rate(r, t.as_str().unwrap_or(""))))
            .collect();
        Some(w.iter().sum::<f64>() / w.len() as f64)
    };

    println!(
        "{:<44} {:>12} {:>12} {:>8}",
        "stage (median)", "rust", "python", "ratio"
    );
    let row = |name: &str, rust: f64, py: Option<f64>, unit: &str| match py {
        Some(py) => println!(
            "{name:<44} {rust:>9.2} {unit} {py:>9.2} {unit} {:>7.2}x",
            rust / py
        ),
        None => println!("{name:<44} {rust:>9.2} {unit} {:>12} {:>8}", "-", "-"),
    };
    let py_vad = peers
        .as_ref()
        .and_then(|p| p.get("vad_us_per_chunk")?.as_f64());
    row("Silero VAD per 32 ms chunk", vad_us, py_vad, "µs");
    row(
        "Smart Turn incl. features (pipecat)",
        median(&turn_ms),
        peer_list("turn_ms").map(|v| median(&v)),
        "ms",
    );
    println!(
        "{:<44} {:>9.2} ms",
        "  of which features",
        median(&features_ms)
    );
    for (label, ms, wer) in &stt {
        let mean_wer = wer.iter().sum::<f64>() / wer.len() as f64;
        for peer in ["int8", "float32"] {
            row(
                &format!("STT tiny.en {label} (WER {mean_wer:.3}) vs fw {peer}"),
                median(ms),
                peer_list(&format!("stt_{peer}_ms")).map(|v| median(&v)),
                "ms",
            );
        }
    }
    for peer in ["int8", "float32"] {
        if let Some(w) = peer_wer(&format!("stt_{peer}_text")) {
            println!("faster-whisper {peer} mean WER {w:.3}");
        }
    }
}
