//! Whole-turn overhead and Piper speed, against a real gateway with the fake model.
//!
//! `cargo bench -p voicebot-shard --bench converse` (after `scripts/setup.sh`). For each clip
//! ("Jarvis, …" in several espeak voices): the listener, relevance, the gateway, the sentence
//! splitter and Piper; `overhead_ms` = end of speech → first reply audio, minus `chat.send` →
//! first delta (the gateway and the model). Also Piper's time to first audio per sentence and
//! its real-time factor.
#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

mod common;
#[path = "../../demo/src/local_gateway.rs"]
mod gateway;

use std::sync::Arc;
use std::time::{Duration, Instant};

use voicebot_shard::converse::engine::Conversation;
use voicebot_shard::converse::names::{CommonWords, NameMatcher};
use voicebot_shard::converse::relevance::{Relevance, RelevanceConfig, Sensitivity};
use voicebot_shard::eval::percentile;
use voicebot_shard::listen::stt::SttConfig;
use voicebot_shard::listen::{Listener, ListenerConfig, Models};
use voicebot_shard::models::{DEFAULT_PIPER_VOICE, ModelPaths, WhisperModel};
use voicebot_shard::openclaw::device::MemoryStore;
use voicebot_shard::openclaw::{GatewayClient, session_key};
use voicebot_shard::speak::tts::piper::PiperVoice;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = common::runtime();
    let gw = gateway::Gateway::start();
    let paths = ModelPaths::locate(None, WhisperModel::TinyEn).unwrap();
    let voice_path = paths.piper_voice(DEFAULT_PIPER_VOICE).unwrap();
    let mut models = Models::load(paths, WhisperModel::TinyEn, SttConfig::default(), 2).unwrap();
    let mut piper = PiperVoice::load(&models.env, &voice_path, 1).unwrap();

    // Piper alone, and espeak-ng's own voice (the second local voice, `espeak:en-us+f3`) on
    // the same sentences: per-sentence time and real-time factor.
    let (ttfa, rtf) = time_sentences(|s| (piper.synthesize(s).unwrap(), 22_050));
    let (es_ttfa, es_rtf) =
        time_sentences(|s| voicebot_shard::speak::espeak::synthesize(s, "en-us+f3").unwrap());

    let client = rt.block_on(async {
        let c = gw.client_config();
        let client = GatewayClient::start(c, Arc::new(MemoryStore::new().unwrap()));
        client
            .wait_connected(Duration::from_secs(90))
            .await
            .unwrap();
        client
    });
    let relevance = Relevance::new(
        "jarvis",
        NameMatcher::new(&["Jarvis"], CommonWords::built_in()),
        RelevanceConfig::default(),
    );
    let mut conv = Conversation::new(
        "Jarvis",
        session_key("jarvis", "bench", "overhead"),
        relevance,
        Sensitivity::Low,
    )
    .with_gateway(client, None)
    .with_voice(voicebot_shard::speak::tts::Voice::piper(piper));
    rt.block_on(conv.respond("warm", "Jarvis, warm up.", 0));

    let questions = [
        ("Jarvis, what is two plus two?", "en-us", 160),
        ("Jarvis, how far away is the moon?", "en-gb", 150),
        ("Jarvis, set a timer for ten minutes.", "en-us+f3", 170),
        ("Jarvis, what's the weather like tomorrow?", "en-us+m3", 180),
        ("Jarvis, who wrote Pride and Prejudice?", "en-gb-x-rp", 150),
        ("Jarvis, play some jazz please.", "en-us", 140),
        ("Jarvis, how do I make pancakes?", "en-us+f2", 165),
        ("Jarvis, what time is it in Tokyo?", "en-gb", 160),
    ];
    let (mut overhead, mut listen_ms, mut tts_first) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..3 {
        for (i, (text, v, speed)) in questions.iter().enumerate() {
            let clip = [
                vec![0.0; 8_000],
                common::speak(text, v, *speed),
                vec![0.0; 40_000],
            ]
            .concat();
            let mut listener = Listener::new(ListenerConfig::default(), models.new_vad().unwrap());
            let mut utterances = Vec::new();
            for f in clip.chunks(320) {
                utterances.extend(listener.push(&mut models, f).unwrap());
            }
            utterances.extend(listener.finish(&mut models).unwrap());
            for u in utterances {
                let r = rt.block_on(conv.respond(
                    "ann",
                    &u.transcript,
                    (round * 100 + i as u64) * 60_000,
                ));
                let Some(first) = r.first_audio_ms else {
                    eprintln!("no reply audio for {:?}: {:?}", u.transcript, r.reason);
                    continue;
                };
                let listener = u.ready_ms.saturating_sub(u.end_ms) as f64;
                listen_ms.push(listener);
                tts_first.push(r.stages_ms.tts_first_audio.unwrap_or(f64::NAN));
                overhead.push(listener + first - r.stages_ms.gateway_first_token.unwrap_or(0.0));
            }
        }
    }
    println!("Whole turns, tiny.en, 2 threads, Piper en_US-joe-medium (1 thread)\n");
    common::summary(
        "overhead: end of speech -> first reply audio",
        "ms",
        &overhead,
    );
    common::summary(
        "  listener, real time (silence wait, Smart Turn, STT)",
        "ms",
        &listen_ms,
    );
    common::summary("  TTS first audio (first sentence)", "ms", &tts_first);
    common::summary(
        "Piper per sentence (Sure. / 5 words / 15 words)",
        "ms",
        &ttfa,
    );
    println!(
        "Piper real-time factor: p50 {:.3}",
        percentile(&rtf, 50.0).unwrap_or(f64::NAN)
    );
    common::summary(
        "espeak-ng en-us+f3 per sentence (same sentences)",
        "ms",
        &es_ttfa,
    );
    println!(
        "espeak-ng real-time factor: p50 {:.3}",
        percentile(&es_rtf, 50.0).unwrap_or(f64::NAN)
    );
}

/// Five runs of three sentences through `synth` (audio, rate): each time in ms, each real-time
/// factor.
fn time_sentences(mut synth: impl FnMut(&str) -> (Vec<f32>, u32)) -> (Vec<f64>, Vec<f64>) {
    let (mut took_ms, mut rtf) = (Vec::new(), Vec::new());
    for s in [
        "Sure.",
        "Two plus two is four.",
        "The weather in Paris tomorrow will be sunny, with a high of twenty degrees.",
    ] {
        for _ in 0..5 {
            let t = Instant::now();
            let (audio, rate) = synth(s);
            let took = t.elapsed().as_secs_f64();
            took_ms.push(took * 1e3);
            rtf.push(took / (audio.len() as f64 / f64::from(rate)));
        }
    }
    (took_ms, rtf)
}
