//! `voicebot-demo --guilds N --speakers M --minutes X`: the load summary's contract, on a short
//! run (2 guilds × 2 users for 20 s, the real models, gateway and simulator). The figures
//! themselves are measured with longer runs (README, Benchmarks); here: the summary is one JSON
//! object with every field, every utterance is accounted for (a turn or a counted drop), the
//! questions are answered within generous bounds, nothing failed.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[test]
fn a_short_load_run_prints_its_summary() {
    let out_dir = std::env::temp_dir().join(format!("voicebot-load-test-{}", std::process::id()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_voicebot-demo"))
        .args([
            "--guilds",
            "2",
            "--speakers",
            "2",
            "--minutes",
            "0.33",
            "--json",
            "--workers",
            "1",
        ])
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}\n{stderr}"));
    for field in [
        "offered",
        "turns",
        "replied",
        "dropped",
        "dropped_total",
        "latency_ms",
        "rss_mb",
        "errors",
    ] {
        assert!(summary.get(field).is_some(), "{field} missing: {summary}");
    }
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or_else(|| panic!("{v} in {summary}"));
    assert_eq!(summary["guilds"], 2);
    assert_eq!(summary["speakers"], 4);
    assert_eq!(summary["errors"], 0, "{summary}");
    // Every call negotiated DAVE; the simulator read the bot's answers only as a member.
    assert_eq!(summary["dave"]["guilds"], 2, "{summary}");
    assert!(n(&summary["dave"]["bot_frames_decrypted"]) > 0, "{summary}");
    assert_eq!(summary["dave"]["bot_frames_refused"], 0, "{summary}");
    // Every utterance is accounted for: heard as a turn, or dropped and counted. (The VAD may
    // split an utterance at a pause or join two that follow closely, so not exactly one each.)
    let offered = n(&summary["offered"]["utterances"]);
    let addressed = n(&summary["offered"]["addressed"]);
    assert!(offered >= 6, "4 people talking for 20 s: {summary}");
    let dropped = n(&summary["dropped_total"]);
    let by_reason: u64 = summary["dropped"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(dropped, by_reason, "{summary}");
    let heard = n(&summary["turns"]) + dropped;
    assert!(
        heard * 4 >= offered * 3 && heard <= offered * 3 / 2 + 1,
        "{heard} turns and drops for {offered} utterances: {summary}"
    );
    // Answered: the questions for the bot, bar what was dropped (one worker on 2 cores drops
    // some when people talk over each other).
    let replied = n(&summary["replied"]);
    assert!(
        replied >= 2 && replied * 10 >= addressed * 3,
        "{replied} answers to {addressed} questions: {summary}"
    );
    assert!(
        replied + dropped >= addressed / 2,
        "questions neither answered nor counted as dropped: {summary}"
    );
    // Latency: a ceiling generous enough for a busy CI machine (the figures are in the README).
    let p95 = summary["latency_ms"]["p95"]
        .as_f64()
        .expect("latencies measured");
    assert!(p95 > 0.0 && p95 < 20_000.0, "p95 {p95} ms: {summary}");
    let rss = &summary["rss_mb"];
    assert!(
        rss["end"].as_f64().unwrap() > 100.0,
        "the models are in memory: {rss}"
    );
    let _ = std::fs::remove_dir_all(&out_dir);
}
