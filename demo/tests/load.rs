//! `voicebot-demo --guilds N --speakers M --minutes X`: the load summary's contract, on a short
//! run (2 guilds × 2 users for 20 s, the real models, gateway and simulator). The figures
//! themselves are measured with longer runs (README, Benchmarks); here: the summary is one JSON
//! object with every field, people were heard and answered, nothing failed.
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
        "turns",
        "replied",
        "dropped",
        "latency_ms",
        "rss_mb",
        "errors",
    ] {
        assert!(summary.get(field).is_some(), "{field} missing: {summary}");
    }
    assert_eq!(summary["guilds"], 2);
    assert_eq!(summary["speakers"], 4);
    assert!(summary["turns"].as_u64().unwrap() >= 4, "{summary}");
    assert!(summary["replied"].as_u64().unwrap() >= 2, "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
    let p50 = summary["latency_ms"]["p50"]
        .as_f64()
        .expect("latencies measured");
    assert!(p50 > 0.0, "{summary}");
    assert!(summary["rss_mb"]["end"].as_f64().unwrap() > 0.0);
    let _ = std::fs::remove_dir_all(&out_dir);
}
