//! `voicebot-sim`, the servers `scripts/e2e.sh` runs for the pods, against the real
//! `voicebot-shard run` configured as the operator configures a pod whose VoiceBot names
//! `discord.apiProxy` and `discord.gatewayUrl` (here on loopback; the e2e runs the same in a
//! network namespace): its certificate, its control API, a user answered.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_voicebot-sim"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the process when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http(method: &str, addr: &str, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(180))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"))
}

#[test]
fn the_certificate_is_written_once_per_host() {
    let dir = std::env::temp_dir().join(format!("voicebot-sim-cert-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cert = |host: &str| {
        let out = sim()
            .args(["cert", "--host", host, "--dir"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            dir.join("cert.pem").display().to_string()
        );
        std::fs::read_to_string(dir.join("cert.pem")).unwrap()
    };
    let first = cert("10.77.0.1");
    assert!(first.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(
        std::fs::read_to_string(dir.join("key.pem"))
            .unwrap()
            .contains("PRIVATE KEY")
    );
    assert_eq!(cert("10.77.0.1"), first, "kept for the same host");
    assert_ne!(cert("10.77.0.2"), first, "a new one for another host");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `voicebot-sim serve` with files that do not exist (and `extra` arguments): its stderr.
fn refused(extra: &[&str]) -> String {
    let dir = std::env::temp_dir().join(format!("voicebot-sim-bad-{}", std::process::id()));
    let out = sim()
        .args(["serve", "--host", "127.0.0.1"])
        .args(extra)
        .args([
            "--tls-dir",
            "/nonexistent",
            "--token-file",
            "/nonexistent/token",
        ])
        .args(["--input", "/nonexistent.wav", "--ready-file"])
        .arg(dir.join("ready.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_arguments_are_refused_with_the_reason() {
    let err = refused(&["--ports", "1,2"]);
    assert!(err.contains("--ports takes three ports"), "{err}");
    let err = refused(&[]);
    assert!(err.contains("reading /nonexistent/token"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_pod_configured_with_the_proxies_answers_a_simulated_user() {
    let dir = std::env::temp_dir().join(format!("voicebot-sim-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let token = format!("sim-token-{}", std::process::id());
    std::fs::write(dir.join("token"), &token).unwrap();
    // What the user says: a generated question, as scripts/demo.sh and scripts/e2e.sh make it.
    let wav = dir.join("question.wav");
    let status = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "160", "-w"])
        .arg(&wav)
        .arg("Jarvis, what is two plus two?")
        .status()
        .unwrap();
    assert!(status.success());
    let out = sim()
        .args(["cert", "--host", "127.0.0.1", "--dir"])
        .arg(dir.join("tls"))
        .output()
        .unwrap();
    assert!(out.status.success());

    let ports = format!("{},{},{}", free_port(), free_port(), free_port());
    let control = format!("127.0.0.1:{}", free_port());
    let ready = dir.join("ready.json");
    let _sim = Running(
        sim()
            .args(["serve", "--host", "127.0.0.1", "--ports", &ports])
            .args(["--control", &control])
            .args(["--openclaw-port", &free_port().to_string()])
            .arg("--tls-dir")
            .arg(dir.join("tls"))
            .arg("--token-file")
            .arg(dir.join("token"))
            .arg("--input")
            .arg(&wav)
            .arg("--ready-file")
            .arg(&ready)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while !ready.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "voicebot-sim did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(200));
    let peers: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
    assert!(
        !peers.to_string().contains(&token),
        "the ready file never holds the bot token"
    );

    // The pod, as the operator starts it (env only), with the VoiceBot's proxies.
    let shard = Path::new(env!("CARGO_BIN_EXE_voicebot-sim")).with_file_name("voicebot-shard");
    assert!(
        shard.is_file(),
        "{} missing: `cargo test --workspace` builds it",
        shard.display()
    );
    let _pod = Running(
        Command::new(shard)
            .arg("run")
            .env("DISCORD_TOKEN", &token)
            .env("DISCORD_APPLICATION_ID", "1100000000000000001")
            .env("DISCORD_API_PROXY", peers["api_proxy"].as_str().unwrap())
            .env(
                "DISCORD_GATEWAY_URL",
                peers["gateway_url"].as_str().unwrap(),
            )
            .env(
                "OPENCLAW_GATEWAY_URL",
                peers["openclaw_url"].as_str().unwrap(),
            )
            .env(
                "OPENCLAW_GATEWAY_TOKEN",
                peers["openclaw_token"].as_str().unwrap(),
            )
            .env("SSL_CERT_FILE", dir.join("tls/cert.pem"))
            .env("VOICEBOT_MODELS_DIR", repo().join(".cache/models"))
            .env("VOICEBOT_STATE_DIR", dir.join("state"))
            .env("SHARD_COUNT", "1")
            .env("SHARDS_PER_POD", "1")
            .env("POD_NAME", "jarvis-shard-0")
            .env("METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let answer = http("POST", &control, "/converse/0");
    assert!(answer.get("error").is_none(), "{answer}");
    let heard = answer["transcript"].as_str().unwrap().to_lowercase();
    assert!(
        heard.contains("four") || heard.contains('4'),
        "the bot said {heard:?}"
    );
    assert_eq!(answer["dave_version"], 1, "{answer}");
    assert_eq!(answer["rejoined"], false, "the user had to ask it in");
    assert!(answer["answer_ms"].as_f64().unwrap() > 500.0, "{answer}");
    assert_eq!(answer["owners"], serde_json::json!([[0, 1]]));
    let state = http("GET", &control, "/state");
    assert_eq!(state["connected_shards"], serde_json::json!([[0, 1]]));
    assert_eq!(state["double_owners"], serde_json::json!([]));
    // A guild that does not exist is an error, not a hang or a panic.
    let missing = http("POST", &control, "/converse/7");
    assert!(
        missing["error"].as_str().unwrap().contains("no guild 7"),
        "{missing}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
