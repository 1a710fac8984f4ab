//! Helpers shared by the benches.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use voicebot_shard::audio;
use voicebot_shard::eval::percentile;

/// Speech from espeak-ng at the pipeline's rate (16 kHz mono).
pub fn speak(text: &str, voice: &str, speed: u32) -> Vec<f32> {
    let path = std::env::temp_dir().join(format!(
        "voicebot-bench-{}-{}.wav",
        std::process::id(),
        fastrand::u32(..)
    ));
    let ok = std::process::Command::new("espeak-ng")
        .args(["-v", voice, "-s", &speed.to_string(), "-w"])
        .arg(&path)
        .arg(text)
        .status()
        .unwrap()
        .success();
    assert!(ok, "espeak-ng failed");
    let pcm = audio::to_pipeline_rate(&audio::read_wav(&path).unwrap()).unwrap();
    let _ = std::fs::remove_file(&path);
    pcm
}

/// The runtime the benches measure with: 2 worker threads, like the 2-core pods.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One line: p50 and p95 of `v`.
pub fn summary(name: &str, unit: &str, v: &[f64]) {
    let p = |q| percentile(v, q).unwrap_or(f64::NAN);
    println!(
        "{name:<52} p50 {:>8.2} {unit}  p95 {:>8.2} {unit}  (n={})",
        p(50.0),
        p(95.0),
        v.len()
    );
}
