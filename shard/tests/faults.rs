//! Faults of the agent's side, with real peers (the OpenClaw gateway, Piper, Whisper): the
//! speaker is never left in silence. A model that stalls past the first-token timeout, and a
//! gateway killed in the middle of a reply, both end in a short spoken apology; the client
//! reconnects by itself and the next turn is answered. Recovery times are printed.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
#[path = "../../demo/src/local_gateway.rs"]
mod gateway;

use std::sync::Arc;
use std::time::{Duration, Instant};

use voicebot_shard::converse::engine::{APOLOGY, Conversation};
use voicebot_shard::converse::names::{CommonWords, NameMatcher};
use voicebot_shard::converse::relevance::{Relevance, RelevanceConfig, Sensitivity};
use voicebot_shard::models::{DEFAULT_PIPER_VOICE, ModelPaths, WhisperModel, onnx_environment};
use voicebot_shard::openclaw::device::MemoryStore;
use voicebot_shard::openclaw::{ClientConfig, GatewayClient, session_key};
use voicebot_shard::speak::tts::Voice;
use voicebot_shard::speak::tts::piper::PiperVoice;

async fn conversation(config: ClientConfig) -> (Conversation, GatewayClient, String) {
    let client = GatewayClient::start(config, Arc::new(MemoryStore::new().unwrap()));
    client
        .wait_connected(Duration::from_secs(90))
        .await
        .unwrap();
    let paths = ModelPaths::locate(None, WhisperModel::TinyEn).unwrap();
    let env = onnx_environment(&paths.onnxruntime).unwrap();
    let voice =
        PiperVoice::load(&env, &paths.piper_voice(DEFAULT_PIPER_VOICE).unwrap(), 1).unwrap();
    let id = format!("faults-{}", fastrand::u64(..));
    let key = session_key("jarvis", "test", &id);
    let c = Conversation::new(
        "Jarvis",
        key.clone(),
        Relevance::new(
            "jarvis",
            NameMatcher::new(&["Jarvis"], CommonWords::built_in()),
            RelevanceConfig::default(),
        ),
        Sensitivity::Low,
    )
    .with_gateway(client.clone(), None)
    .with_voice(Voice::piper(voice));
    (c, client, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_model_gets_a_spoken_apology_not_silence() {
    let gw = gateway::shared_gateway();
    let mut config = gw.client_config();
    config.first_token_timeout = Duration::from_secs(3);
    let (mut c, _client, key) = conversation(config).await;
    // Warm the session with a patient client (a session's first turn takes seconds on a busy
    // machine, more than this conversation's 3 s first-token timeout).
    let warm = GatewayClient::start(gw.client_config(), Arc::new(MemoryStore::new().unwrap()));
    warm.wait_connected(Duration::from_secs(90)).await.unwrap();
    assert_eq!(
        gateway::reply_to(&warm, &key, "hello").await,
        gateway::reply_text()
    );

    let r = c
        .respond("ann", "Jarvis, are you there? [stall]", 5_000)
        .await;
    let error = r.error.clone().expect("a first-token timeout");
    assert!(error.contains("first"), "{error}");
    let first_audio = r.first_audio_ms.expect("the apology is spoken");
    eprintln!("stalled model → apology audio after {first_audio:.0} ms (timeout 3000 ms)");
    let heard = common::transcribe(&r.audio, r.sample_rate).to_lowercase();
    assert!(heard.contains("sorry"), "{heard}");
    assert!(APOLOGY.to_lowercase().starts_with("sorry"));

    // The next turn is answered.
    let r = c
        .respond("ann", "Jarvis, what is two plus two?", 40_000)
        .await;
    assert_eq!(
        r.reply.as_deref(),
        Some(gateway::reply_text().as_str()),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_reply_gets_an_apology_and_the_bot_comes_back() {
    let gw = gateway::Gateway::start();
    let mut config = gw.client_config();
    config.backoff_max = Duration::from_secs(2);
    let (mut c, client, _) = conversation(config).await;
    let r = c
        .respond("ann", "Jarvis, what is two plus two?", 1_000)
        .await;
    assert!(r.error.is_none(), "{r:?}");

    let (decision, message) = c
        .decide("ann", "Jarvis, tell me a long story [long]", 5_000)
        .await;
    assert!(decision.addressed);
    let mut active = c.start_reply(message.unwrap()).unwrap();
    let first = active.next_chunk().await.expect("a first sentence");
    assert!(first.text.starts_with("word0"), "{first:?}");
    let killed = Instant::now();
    tokio::task::block_in_place(|| gw.crash());
    let mut said = Vec::new();
    let mut apology_at = None;
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), active.next_chunk())
        .await
        .expect("the reply ends after the kill")
    {
        if chunk.text == APOLOGY {
            apology_at = Some(killed.elapsed());
            assert!(!chunk.audio.is_empty(), "the apology is spoken");
        }
        said.push(chunk.text);
    }
    let outcome = active.finish().await;
    assert!(outcome.error.is_some(), "{outcome:?}");
    let apology_at = apology_at.unwrap_or_else(|| panic!("no apology in {said:?}"));
    eprintln!("gateway killed → apology synthesised after {apology_at:?}");

    // The gateway comes back; the client reconnects by itself and the next turn is answered.
    let restarted = Instant::now();
    tokio::task::block_in_place(|| gw.restart_in_place());
    client
        .wait_connected(Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", gw.log_tail()));
    let r = c
        .respond("ann", "Jarvis, what is two plus two?", 60_000)
        .await;
    eprintln!(
        "gateway restarted → reconnected and answered after {:?}",
        restarted.elapsed()
    );
    assert_eq!(
        r.reply.as_deref(),
        Some(gateway::reply_text().as_str()),
        "{r:?}"
    );
}
