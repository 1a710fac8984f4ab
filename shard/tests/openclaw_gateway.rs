//! The OpenClaw client against a real gateway (npm `openclaw`, started once for this binary)
//! in front of the fake model server: handshake and device identity, streamed replies, abort,
//! timeouts and authentication errors. Hostile peers are a fake WebSocket server.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../../demo/src/local_gateway.rs"]
mod gateway;

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use voicebot_shard::openclaw::device::{CredentialStore, FileStore, MemoryStore};
use voicebot_shard::openclaw::{
    ChatOptions, ClientConfig, ClientError, GatewayClient, ReplyEvent, session_key,
};
use voicebot_shard::secret::Secret;

fn config(url: &str, token: &str) -> ClientConfig {
    gateway::client_config(url, token)
}

async fn connected(store: Arc<dyn CredentialStore>) -> GatewayClient {
    let gw = gateway::shared_gateway();
    let client = GatewayClient::start(config(&gw.url, &gw.token), store);
    if let Err(e) = client.wait_connected(Duration::from_secs(60)).await {
        panic!("connect failed: {e}\n{}", gw.log_tail());
    }
    client
}

fn unique(name: &str) -> String {
    format!("{name}-{}", fastrand::u64(..))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_with_a_persisted_device_identity() {
    let dir = std::env::temp_dir().join(unique("voicebot-device"));
    let store = Arc::new(FileStore::new(&dir));
    let client = connected(store.clone()).await;
    let first_id = store.identity().unwrap().id().to_string();
    assert!(dir.join("device.json").is_file());
    client.close();
    // A second start is the same device.
    let again = connected(Arc::new(FileStore::new(&dir))).await;
    assert_eq!(FileStore::new(&dir).identity().unwrap().id(), first_id);
    again.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_reply_equals_the_model_text() {
    let client = connected(Arc::new(MemoryStore::new().unwrap())).await;
    let key = session_key("jarvis", "test", &unique("stream"));
    let mut reply = client
        .chat(&key, "What is two plus two? [slow]", ChatOptions::default())
        .await
        .unwrap();
    let (mut deltas, mut streamed, mut final_text) = (0, String::new(), None);
    while let Some(event) = reply.next().await {
        match event.unwrap() {
            ReplyEvent::Delta(d) => {
                deltas += 1;
                streamed.push_str(&d);
            }
            ReplyEvent::Replace(t) => streamed = t,
            ReplyEvent::Final(t) => final_text = Some(t),
            ReplyEvent::Aborted(t) => panic!("aborted: {t}"),
        }
    }
    assert_eq!(final_text.as_deref(), Some(gateway::reply_text().as_str()));
    assert_eq!(streamed, gateway::reply_text());
    assert!(
        deltas >= 2,
        "the reply should arrive in pieces, got {deltas}"
    );

    // A second agent, same connection.
    let sage = session_key("sage", "test", &unique("stream"));
    let text = gateway::reply_to(&client, &sage, "Hello").await;
    assert_eq!(text, gateway::reply_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_mid_stream_stops_the_deltas() {
    let client = connected(Arc::new(MemoryStore::new().unwrap())).await;
    let key = session_key("jarvis", "test", &unique("abort"));
    let mut reply = client
        .chat(&key, "Tell me a long story [long]", ChatOptions::default())
        .await
        .unwrap();
    // Wait for the reply to start.
    let first = reply.next().await.expect("stream ended early").unwrap();
    assert!(
        matches!(first, ReplyEvent::Delta(_) | ReplyEvent::Replace(_)),
        "unexpected {first:?}"
    );
    let aborted = client.abort(&key, reply.run_id()).await.unwrap();
    assert!(aborted, "the gateway should report the run aborted");
    let mut after_abort = 0;
    let mut ended_aborted = false;
    while let Some(event) = reply.next().await {
        match event.unwrap() {
            ReplyEvent::Aborted(text) => {
                ended_aborted = true;
                assert!(
                    text.split_whitespace().count() < 40,
                    "the whole story arrived: {text}"
                );
            }
            ReplyEvent::Final(t) => panic!("finished despite the abort: {t}"),
            _ => after_abort += 1,
        }
    }
    assert!(ended_aborted);
    assert!(after_abort <= 2, "{after_abort} deltas after the abort");
    // The session still works afterwards.
    let text = gateway::reply_to(&client, &key, "And now?").await;
    assert_eq!(text, gateway::reply_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_model_trips_the_first_token_timeout() {
    let gw = gateway::shared_gateway();
    // Warm the session with normal timeouts, so the short timeout below measures the stall
    // and not the first turn's set-up (several seconds).
    let key = session_key("jarvis", "test", &unique("stall"));
    let warm = connected(Arc::new(MemoryStore::new().unwrap())).await;
    gateway::reply_to(&warm, &key, "hi").await;

    let mut c = config(&gw.url, &gw.token);
    c.first_token_timeout = Duration::from_secs(3);
    let client = GatewayClient::start(c, Arc::new(MemoryStore::new().unwrap()));
    client
        .wait_connected(Duration::from_secs(60))
        .await
        .unwrap();
    // The fake answers with headers and then nothing: the first-token timeout fires.
    let started = std::time::Instant::now();
    let mut reply = client
        .chat(&key, "Are you there? [stall]", ChatOptions::default())
        .await
        .unwrap();
    let mut outcome = None;
    while let Some(event) = reply.next().await {
        match event {
            Err(e) => {
                outcome = Some(e);
                break;
            }
            Ok(ev) => gateway::note(&format!("stall: {ev:?} after {:?}", started.elapsed())),
        }
    }
    let err = outcome.expect("the stream must end with an error, not hang");
    assert!(matches!(err, ClientError::Timeout(_)), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // The client aborted the stalled run, so the session answers the next message normally.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = gateway::reply_to(&warm, &key, "Still there?").await;
    assert_eq!(text, gateway::reply_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_a_clear_auth_error() {
    let gw = gateway::shared_gateway();
    let secret = "definitely-not-the-token-0123456789";
    let client = GatewayClient::start(
        config(&gw.url, secret),
        Arc::new(MemoryStore::new().unwrap()),
    );
    let err = client
        .wait_connected(Duration::from_secs(60))
        .await
        .expect_err("must not connect");
    assert!(matches!(err, ClientError::Auth { .. }), "{err}");
    let text = format!("{err} {err:?}");
    assert!(text.contains("token"), "{text}");
    assert!(!text.contains(secret), "the token leaked: {text}");
    client.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_an_unknown_agent_are_rejected() {
    let client = connected(Arc::new(MemoryStore::new().unwrap())).await;
    let key = session_key("nobody-here", "test", "x");
    let err = match client.chat(&key, "hello", ChatOptions::default()).await {
        Ok(stream) => stream.collect().await.expect_err("unknown agent"),
        Err(e) => e,
    };
    assert!(
        matches!(err, ClientError::Rejected { .. } | ClientError::Run(_)),
        "{err}"
    );
}

/// A WebSocket server that sends `frames` after accepting, then keeps the socket open.
async fn hostile_server(frames: Vec<String>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let frames = frames.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                for f in frames {
                    if ws
                        .send(tokio_tungstenite::tungstenite::Message::text(f))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                while let Some(Ok(_)) = ws.next().await {}
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_are_errors_not_panics() {
    let challenge =
        r#"{"type":"event","event":"connect.challenge","payload":{"nonce":"n","ts":1}}"#
            .to_string();
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("not json", vec!["}{".into()]),
        (
            "json bomb",
            vec![format!("{}{}", "[".repeat(100_000), "]".repeat(100_000))],
        ),
        (
            "oversized",
            vec![format!(
                r#"{{"type":"event","event":"x","payload":"{}"}}"#,
                "a".repeat(2 << 20)
            )],
        ),
        (
            "wrong types",
            vec![r#"{"type":"res","id":7,"ok":"maybe"}"#.into()],
        ),
        (
            "challenge without nonce",
            vec![r#"{"type":"event","event":"connect.challenge","payload":{}}"#.into()],
        ),
        (
            "hello that is not hello-ok",
            vec![
                challenge.clone(),
                r#"{"type":"res","id":"connect","ok":true,"payload":{"type":"nope"}}"#.into(),
            ],
        ),
        (
            "refusal with garbage details",
            vec![
                challenge,
                r#"{"type":"res","id":"connect","ok":false,"error":{"code":7,"details":[1]}}"#
                    .into(),
            ],
        ),
    ];
    for (name, frames) in cases {
        let url = hostile_server(frames).await;
        let mut c = ClientConfig::new(url, Some(Secret::new("t")));
        c.connect_timeout = Duration::from_secs(2);
        c.max_frame_bytes = 1 << 20;
        let client = GatewayClient::start(c, Arc::new(MemoryStore::new().unwrap()));
        let err = client
            .wait_connected(Duration::from_secs(3))
            .await
            .expect_err(name);
        assert!(!matches!(err, ClientError::Closed), "{name}: {err}");
        // Requests fail cleanly too, and the client can still be closed.
        client.close();
    }
    // A 100 MB frame against the default limit (16 MB): refused by its size, not read whole.
    let huge = format!(
        r#"{{"type":"event","event":"x","payload":"{}"}}"#,
        "a".repeat(100 << 20)
    );
    let url = hostile_server(vec![huge]).await;
    let mut c = ClientConfig::new(url, Some(Secret::new("t")));
    c.connect_timeout = Duration::from_secs(5);
    let client = GatewayClient::start(c, Arc::new(MemoryStore::new().unwrap()));
    let err = client
        .wait_connected(Duration::from_secs(10))
        .await
        .expect_err("a 100 MB frame");
    assert!(!matches!(err, ClientError::Closed), "{err}");
    client.close();
}

fn ask(args: &[&str], token: &str, state: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_voicebot-shard"))
        .arg("ask")
        .args(args)
        .env("OPENCLAW_GATEWAY_TOKEN", token)
        .env("VOICEBOT_STATE_DIR", state)
        .env_remove("OPENCLAW_GATEWAY_URL")
        .output()
        .expect("run voicebot-shard ask")
}

#[test]
fn the_ask_command_streams_the_reply_and_keeps_secrets_out() {
    let gw = gateway::shared_gateway();
    let state = std::env::temp_dir().join(unique("voicebot-ask"));
    let session = unique("cli");
    let out = ask(
        &[
            "--gateway",
            &gw.url,
            "--agent",
            "jarvis",
            "--session",
            &session,
            "What",
            "is",
            "two",
            "plus",
            "two?",
        ],
        &gw.token,
        &state,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim_end(), gateway::reply_text(), "stderr: {stderr}");
    assert!(stderr.contains("first token"), "{stderr}");
    assert!(
        state.join("device.json").is_file(),
        "device identity persisted"
    );
    assert!(!stdout.contains(&gw.token) && !stderr.contains(&gw.token));

    let wrong = "wrong-token-abcdef0123456789";
    let out = ask(
        &["--gateway", &gw.url, "--agent", "jarvis", "hello"],
        wrong,
        &state,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("error:") && stderr.contains("token"),
        "{stderr}"
    );
    assert!(!stderr.contains(wrong), "the token leaked: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A dead gateway is a clear error within the connect timeout, not a hang.
    let out = ask(
        &[
            "--gateway",
            "ws://127.0.0.1:9",
            "--agent",
            "jarvis",
            "--connect-timeout-ms",
            "2000",
            "hello",
        ],
        &gw.token,
        &state,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("error: cannot reach the gateway"),
        "{stderr}"
    );
}
