//! The `voicebot-shard pipeline` command-line contract: JSON records, clear errors, no panics.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::process::{Command, Output};

fn shard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_voicebot-shard"))
        .args(args)
        .output()
        .expect("run voicebot-shard")
}

fn assert_clean_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one error line: {stderr}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(needle),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn json_records_have_the_documented_fields() {
    let dir = common::scratch();
    let speech = common::speak("Hey Jarvis, what is the capital of France?", "en-us", 160);
    let clip = [common::silence(600), speech, common::silence(2_500)].concat();
    let path = dir.join("cli-speech.wav");
    common::write_wav(&path, &clip);
    let out = shard(&["pipeline", "--input", path.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let records: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(records.len(), 1, "{stdout}");
    let r = &records[0];
    for key in ["start_ms", "end_ms", "turn_complete"] {
        assert!(r[key].is_number(), "{key} in {r}");
    }
    assert!(
        r["transcript"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("france"),
        "{r}"
    );
    for stage in ["vad", "turn", "stt"] {
        assert!(
            r["stages_ms"][stage].as_f64().unwrap() > 0.0,
            "{stage} in {r}"
        );
    }
    assert_eq!(r["commit"], "turn_complete");

    // Human-readable mode prints the same utterance on one line.
    let out = shard(&["pipeline", "--input", path.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(text.lines().count(), 1);
    assert!(text.contains("France"), "{text}");
}

#[test]
fn bad_inputs_fail_with_one_clear_line() {
    let dir = common::scratch();
    let text = dir.join("notes.wav");
    std::fs::write(&text, "these are my meeting notes, not audio").unwrap();
    assert_clean_error(
        &shard(&["pipeline", "--input", text.to_str().unwrap()]),
        "not a WAV file",
    );

    let empty = dir.join("empty.wav");
    std::fs::write(&empty, b"").unwrap();
    assert_clean_error(
        &shard(&["pipeline", "--input", empty.to_str().unwrap()]),
        "empty.wav",
    );

    let header_only = dir.join("header-only.wav");
    common::write_wav(&header_only, &[]);
    assert_clean_error(
        &shard(&["pipeline", "--input", header_only.to_str().unwrap()]),
        "no audio",
    );

    let missing = dir.join("does-not-exist.wav");
    assert_clean_error(
        &shard(&["pipeline", "--input", missing.to_str().unwrap()]),
        "cannot open",
    );

    assert_clean_error(&shard(&["pipeline", "--input", dir.to_str().unwrap()]), "");
}

#[test]
fn missing_models_name_the_fix() {
    let dir = common::scratch();
    let path = dir.join("tone.wav");
    common::write_wav(&path, &common::silence(500));
    let empty_models = dir.join("no-models");
    std::fs::create_dir_all(&empty_models).unwrap();
    let out = shard(&[
        "pipeline",
        "--input",
        path.to_str().unwrap(),
        "--models-dir",
        empty_models.to_str().unwrap(),
    ]);
    assert_clean_error(&out, "scripts/setup.sh");
}

#[test]
fn silence_prints_nothing() {
    let dir = common::scratch();
    let path = dir.join("silence.wav");
    common::write_wav(&path, &common::silence(3_000));
    let out = shard(&["pipeline", "--input", path.to_str().unwrap(), "--json"]);
    assert!(out.status.success());
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
