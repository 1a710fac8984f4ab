//! Helpers shared by the benches.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use voicebot_shard::audio;

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
