//! OpenClaw client latency against a real gateway and the fake model server.
//!
//! `cargo bench -p voicebot-shard --bench openclaw` (after `scripts/setup.sh`). Prints, over 50
//! requests on a warm session: the fake model's first token → the client's first delta (the
//! gateway's own processing and its ~75 ms delta throttle included), the client's share of it
//! (WebSocket frame received → delta handed to the reply stream), `chat.send` → first delta,
//! and the time to connect (TCP + WebSocket + signed handshake) over 10 connections.
#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

mod common;
#[path = "../../demo/src/local_gateway.rs"]
mod gateway;

use std::sync::Arc;
use std::time::{Duration, Instant};

use voicebot_shard::openclaw::device::MemoryStore;
use voicebot_shard::openclaw::{ChatOptions, GatewayClient, ReplyEvent, session_key};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = common::runtime();
    let gw = gateway::Gateway::start();
    let model = gateway::fake_model();
    let config = || gw.client_config();
    rt.block_on(async {
        // Connect time (the first connection also waits out the gateway's start-up).
        let first = GatewayClient::start(config(), Arc::new(MemoryStore::new().unwrap()));
        first.wait_connected(Duration::from_secs(90)).await.unwrap();
        let mut connect_ms = Vec::new();
        for _ in 0..10 {
            let t = Instant::now();
            let c = GatewayClient::start(config(), Arc::new(MemoryStore::new().unwrap()));
            c.wait_connected(Duration::from_secs(30)).await.unwrap();
            connect_ms.push(t.elapsed().as_secs_f64() * 1e3);
            c.close();
        }

        let key = session_key("jarvis", "bench", "latency");
        first
            .chat(&key, "warm up", ChatOptions::default())
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let (mut model_to_client, mut dispatch_us, mut send_to_first) =
            (Vec::new(), Vec::new(), Vec::new());
        for i in 0..50 {
            let before = model.first_tokens.lock().unwrap().len();
            let sent = Instant::now();
            let mut reply = first
                .chat(&key, &format!("question {i}"), ChatOptions::default())
                .await
                .unwrap();
            let mut first_delta = None;
            while let Some(event) = reply.next().await {
                match event.unwrap() {
                    ReplyEvent::Delta(_) | ReplyEvent::Replace(_) if first_delta.is_none() => {
                        first_delta = Some(Instant::now());
                        dispatch_us.push(first.last_dispatch_us() as f64);
                    }
                    _ => {}
                }
            }
            let first_delta = first_delta.expect("a delta");
            let model_first = model
                .first_tokens
                .lock()
                .unwrap()
                .get(before)
                .copied()
                .expect("model token");
            model_to_client.push(first_delta.duration_since(model_first).as_secs_f64() * 1e3);
            send_to_first.push(first_delta.duration_since(sent).as_secs_f64() * 1e3);
        }
        println!("OpenClaw client against openclaw@2026.9.6 (fake model), 2 worker threads\n");
        common::summary(
            "connect (TCP + WebSocket + signed handshake)",
            "ms",
            &connect_ms,
        );
        common::summary(
            "model first token -> client first delta",
            "ms",
            &model_to_client,
        );
        common::summary(
            "  of which the client (frame in -> stream)",
            "µs",
            &dispatch_us,
        );
        common::summary(
            "chat.send -> first delta (gateway + model)",
            "ms",
            &send_to_first,
        );
        first.close();
    });
}
