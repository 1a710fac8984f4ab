//! How many people can talk at once: N rooms (one speaker each, as N guilds on one pod), all
//! speaking at the same moments in real time, sharing the pod's engines, gateway connection
//! and Piper voice. For each N: end of speech → first reply audio (wall clock, everything
//! included: the silence wait, queueing for an engine, Smart Turn, Whisper, the gateway with
//! the instant fake model, Piper), p50 / p95, and the drops.
//!
//! `cargo bench -p voicebot-shard --bench concurrency [-- --max N --workers W]`.
#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

mod common;
#[path = "../../demo/src/local_gateway.rs"]
mod gateway;

use std::sync::Arc;
use std::time::{Duration, Instant};

use voicebot_shard::converse::engine::Conversation;
use voicebot_shard::converse::names::{CommonWords, NameMatcher};
use voicebot_shard::converse::relevance::{Relevance, RelevanceConfig, Sensitivity};
use voicebot_shard::converse::room::{Room, RoomConfig, RoomEvent, VadSource};
use voicebot_shard::eval::percentile;
use voicebot_shard::listen::stt::SttConfig;
use voicebot_shard::listen::{EnginePool, Models, PoolConfig};
use voicebot_shard::models::{DEFAULT_PIPER_VOICE, ModelPaths, WhisperModel};
use voicebot_shard::openclaw::device::MemoryStore;
use voicebot_shard::openclaw::{GatewayClient, session_key};
use voicebot_shard::speak::tts::Voice;
use voicebot_shard::speak::tts::piper::PiperVoice;

fn arg(name: &str) -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

const QUESTIONS: &[(&str, &str)] = &[
    ("Jarvis, what is two plus two?", "en-us"),
    ("Jarvis, how far away is the moon?", "en-gb"),
    ("Jarvis, set a timer for ten minutes.", "en-us+f3"),
    ("Jarvis, what's the weather like tomorrow?", "en-us+m3"),
    ("Jarvis, who wrote Pride and Prejudice?", "en-gb-x-rp"),
    ("Jarvis, play some jazz please.", "en-us"),
    ("Jarvis, how do I make pancakes?", "en-us+f2"),
    ("Jarvis, what time is it in Tokyo?", "en-gb"),
];

fn silence(ms: usize) -> Vec<f32> {
    vec![0.0; ms * 16]
}

struct Run {
    latencies: Vec<f64>,
    /// The same, less the gateway's own first-token time (`chat.send` → first delta).
    own: Vec<f64>,
    /// Parts: listener (end of speech → turn queued), queue, gateway first token, TTS.
    parts: [Vec<f64>; 4],
    answered: usize,
    expected: usize,
    dropped: std::collections::BTreeMap<&'static str, u64>,
}

async fn run(
    n: usize,
    spread_ms: usize,
    clips: &[Vec<f32>],
    pool: &Arc<EnginePool<Models>>,
    vads: &VadSource,
    voice: &Voice,
    client: &GatewayClient,
) -> Run {
    let mut rooms = Vec::new();
    let mut events = Vec::new();
    for i in 0..n {
        let relevance = Relevance::new(
            "jarvis",
            NameMatcher::new(&["Jarvis"], CommonWords::built_in()),
            RelevanceConfig::default(),
        );
        let conversation = Conversation::new(
            "Jarvis",
            session_key(
                "jarvis",
                "bench",
                &format!("conc-{n}-{i}-{}", fastrand::u32(..)),
            ),
            relevance,
            Sensitivity::Low,
        )
        .with_gateway(client.clone(), None)
        .with_voice(voice.clone());
        let mut config = RoomConfig::default();
        config.listener.speculative_stt = !std::env::args().any(|a| a == "--no-speculation");
        let room = Arc::new(Room::start(
            config,
            conversation,
            pool.clone(),
            vads.clone(),
        ));
        events.push(room.subscribe());
        rooms.push(room);
    }
    // Every speaker says three questions, at the same moments as the others.
    let streams: Vec<Vec<f32>> = (0..n)
        .map(|i| {
            // Speaker i starts i/N of the spread later (0: everyone at the same moment).
            let mut s = silence(500 + spread_ms * i / n);
            for q in 0..3 {
                s.extend_from_slice(&clips[(i + q * 3) % clips.len()]);
                s.extend(silence(4_500));
            }
            s
        })
        .collect();
    let len = streams.iter().map(Vec::len).max().unwrap_or(0);
    let t0 = Instant::now();
    // The voice connections: one frame every 20 ms per room; the bots' voices likewise.
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut pos = 0;
    while pos < len {
        tick.tick().await;
        for (room, s) in rooms.iter().zip(&streams) {
            if pos < s.len() {
                let _ = room.push("speaker", &s[pos..(pos + 320).min(s.len())]);
            }
            room.next_frame();
        }
        pos += 320;
    }
    // Let the last replies finish.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(3) {
        tick.tick().await;
        for room in &rooms {
            room.next_frame();
        }
    }
    let mut out = Run {
        latencies: Vec::new(),
        own: Vec::new(),
        parts: Default::default(),
        answered: 0,
        expected: 3 * n,
        dropped: Default::default(),
    };
    for (room, ev) in rooms.iter().zip(events.iter_mut()) {
        while let Ok(e) = ev.try_recv() {
            if let RoomEvent::Turn(t) = e
                && let Some(first) = t.first_audio_at
            {
                let end_of_speech = t0 + Duration::from_millis(t.utterance.end_ms);
                let total = first.saturating_duration_since(end_of_speech).as_secs_f64() * 1e3;
                out.latencies.push(total);
                out.own
                    .push(total - t.reply.stages_ms.gateway_first_token.unwrap_or(0.0));
                let reply = t.reply.first_audio_ms.unwrap_or(0.0);
                out.parts[0].push(total - reply - t.queued_ms);
                out.parts[1].push(t.queued_ms);
                out.parts[2].push(t.reply.stages_ms.gateway_first_token.unwrap_or(0.0));
                out.parts[3].push(t.reply.stages_ms.tts_first_audio.unwrap_or(0.0));
                out.answered += 1;
            }
        }
        for (k, v) in room.stats().dropped() {
            *out.dropped.entry(k).or_default() += v;
        }
    }
    out
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let max = arg("--max").unwrap_or(12);
    let workers = arg("--workers").unwrap_or(2);
    let rt = common::runtime();
    let gw = gateway::Gateway::start();
    let paths = ModelPaths::locate(None, WhisperModel::TinyEn).unwrap();
    let stt = SttConfig {
        threads: (2 / workers).max(1),
        ..SttConfig::default()
    };
    let first = Models::load(paths, WhisperModel::TinyEn, stt, 1).unwrap();
    let vads = VadSource::new(&first);
    let voice = Voice::piper(
        PiperVoice::load(
            &first.env,
            &first.paths.piper_voice(DEFAULT_PIPER_VOICE).unwrap(),
            1,
        )
        .unwrap(),
    );
    let mut all = vec![first];
    for _ in 1..workers {
        let more = all[0].fork(1).unwrap();
        all.push(more);
    }
    let pool = Arc::new(EnginePool::new(all, PoolConfig::default()));
    let clips: Vec<Vec<f32>> = QUESTIONS
        .iter()
        .map(|(t, v)| common::speak(t, v, 165))
        .collect();

    let client = rt.block_on(async {
        let client =
            GatewayClient::start(gw.client_config(), Arc::new(MemoryStore::new().unwrap()));
        client
            .wait_connected(Duration::from_secs(90))
            .await
            .unwrap();
        // The gateway's first turn is slow (≈ 4.5 s); warm it.
        gateway::reply_to(&client, &session_key("jarvis", "bench", "warm"), "warm up").await;
        client
    });

    println!(
        "N speakers at once, one room each; tiny.en, {workers} engine worker(s), 2 cores; \
         end of speech -> first reply audio (wall clock)\n"
    );
    for (mode, spread) in [
        ("all stop talking at the same moment (worst case)", 0),
        (
            "starts spread over 3 s (speech overlapping, ends apart)",
            3_000,
        ),
    ] {
        println!("-- {mode}");
        let mut best = 0;
        for n in [1usize, 2, 4, 6, 8, 10, 12, 16]
            .into_iter()
            .filter(|n| *n <= max)
        {
            let r = rt.block_on(run(n, spread, &clips, &pool, &vads, &voice, &client));
            let p = |q| percentile(&r.latencies, q).unwrap_or(f64::NAN);
            let own = |q| percentile(&r.own, q).unwrap_or(f64::NAN);
            let ok = r.answered >= r.expected && p(95.0) < 1_500.0;
            if ok {
                best = n;
            }
            println!(
                "N={n:<3} p50 {:>6.0} ms  p95 {:>6.0} ms  max {:>6.0} ms | less gateway p50 {:>6.0} p95 {:>6.0} | answered {}/{}  dropped {:?}{}",
                p(50.0),
                p(95.0),
                p(100.0),
                own(50.0),
                own(95.0),
                r.answered,
                r.expected,
                r.dropped,
                if ok { "" } else { "  (over budget)" }
            );
            let m = |v: &[f64]| percentile(v, 50.0).unwrap_or(f64::NAN);
            println!(
                "       p50 parts: listener {:.0} ms, turn queue {:.0} ms, gateway {:.0} ms, TTS {:.0} ms",
                m(&r.parts[0]),
                m(&r.parts[1]),
                m(&r.parts[2]),
                m(&r.parts[3])
            );
        }
        println!("largest N with p95 < 1.5 s and every turn answered: {best}\n");
    }
    let stats = pool.stats();
    let waited = stats.waited.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "engine loans {}, waited {} (mean wait {:.1} ms)",
        stats.loans.load(std::sync::atomic::Ordering::Relaxed),
        waited,
        stats.wait_us.load(std::sync::atomic::Ordering::Relaxed) as f64
            / 1e3
            / waited.max(1) as f64
    );
}
