//! Whole turns against the real gateway: relevance at each sensitivity, follow-ups, solo mode,
//! the classifier, and the spoken reply (Piper) transcribed back by Whisper.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
#[path = "../../demo/src/local_gateway.rs"]
mod gateway;

use std::sync::Arc;
use std::time::Duration;

use voicebot_shard::converse::classifier::GatewayClassifier;
use voicebot_shard::converse::engine::Conversation;
use voicebot_shard::converse::names::{CommonWords, NameMatcher};
use voicebot_shard::converse::relevance::{
    Classifier, Reason, Relevance, RelevanceConfig, Sensitivity,
};
use voicebot_shard::eval::word_error_rate;
use voicebot_shard::models::{DEFAULT_PIPER_VOICE, ModelPaths, WhisperModel, onnx_environment};
use voicebot_shard::openclaw::device::MemoryStore;
use voicebot_shard::openclaw::{GatewayClient, session_key};
use voicebot_shard::speak::tts::piper::PiperVoice;

async fn conversation(sensitivity: Sensitivity, humans: usize, with_voice: bool) -> Conversation {
    let gw = gateway::shared_gateway();
    let config = gw.client_config();
    let client = GatewayClient::start(config, Arc::new(MemoryStore::new().unwrap()));
    client
        .wait_connected(Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", gw.log_tail()));
    let conv_id = format!("test-{}", fastrand::u64(..));
    let relevance = Relevance::new(
        "jarvis",
        NameMatcher::new(&["Jarvis"], CommonWords::built_in()),
        RelevanceConfig {
            // The first classifier call opens a new gateway session: seconds, not the usual
            // budget.
            classifier_timeout: Duration::from_secs(60),
            ..RelevanceConfig::default()
        },
    );
    let classifier: Arc<dyn Classifier> =
        Arc::new(GatewayClassifier::new(client.clone(), conv_id.clone()));
    let mut c = Conversation::new(
        "Jarvis",
        session_key("jarvis", "test", &conv_id),
        relevance,
        sensitivity,
    )
    .with_gateway(client, Some(classifier));
    if with_voice {
        let paths = ModelPaths::locate(None, WhisperModel::TinyEn).unwrap();
        let env = onnx_environment(&paths.onnxruntime).unwrap();
        let voice =
            PiperVoice::load(&env, &paths.piper_voice(DEFAULT_PIPER_VOICE).unwrap(), 1).unwrap();
        c = c.with_voice(voicebot_shard::speak::tts::Voice::piper(voice));
    }
    c.humans_present = humans;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_sensitivity_answers_names_follow_ups_and_nothing_else() {
    let mut c = conversation(Sensitivity::Low, 3, false).await;
    let r = c
        .respond("ann", "I think the weather is nice today.", 1_000)
        .await;
    assert!(!r.addressed && r.reply.is_none(), "{r:?}");
    assert_eq!(r.reason, Reason::NotAddressed);

    let r = c
        .respond("ann", "Jervis, what is two plus two?", 5_000)
        .await;
    assert!(r.addressed, "{r:?}");
    assert!(matches!(r.reason, Reason::Name(_)), "{:?}", r.reason);
    assert_eq!(
        r.reply.as_deref(),
        Some(gateway::reply_text().as_str()),
        "{r:?}"
    );
    assert!(r.stages_ms.gateway_first_token.is_some() && r.stages_ms.gateway_total.is_some());

    // Ann goes on without the name: a follow-up. Bob does not get one.
    let r = c.respond("ann", "and three plus three?", 8_000).await;
    assert!(
        matches!(r.reason, Reason::FollowUp { .. }),
        "{:?}",
        r.reason
    );
    let r = c.respond("bob", "and four plus four?", 9_000).await;
    assert!(!r.addressed, "{:?}", r.reason);
    // Long after the reply, Ann needs the name again.
    let r = c.respond("ann", "and five plus five?", 120_000).await;
    assert!(!r.addressed, "{:?}", r.reason);
}

/// A model that does not stop (3,000 words, no full stop) is not spoken to the end: what is
/// said stops at the limit, at a word, and the run is aborted at the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_does_not_stop_is_cut_at_the_limit() {
    use voicebot_shard::converse::engine::MAX_SPOKEN_CHARS;
    let mut c = conversation(Sensitivity::Low, 1, false).await;
    let r = c.respond("ann", "Tell me everything [flood]", 1_000).await;
    assert!(r.truncated, "{r:?}");
    let said = r.reply.as_deref().unwrap_or_default();
    let n = said.chars().count();
    assert!(
        n <= MAX_SPOKEN_CHARS && n > MAX_SPOKEN_CHARS - 20,
        "{n} characters said"
    );
    assert!(said.starts_with("blah0 blah1 "), "{said}");
    assert!(
        said.ends_with(|ch: char| ch.is_ascii_digit()),
        "cut inside a word: {said}"
    );
    // What the listeners heard is what the context keeps; a normal reply follows.
    let r = c.respond("ann", "what is two plus two", 60_000).await;
    assert!(!r.truncated);
    assert_eq!(r.reply.as_deref(), Some(gateway::reply_text().as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn solo_mode_answers_everything() {
    let mut c = conversation(Sensitivity::Low, 1, false).await;
    let r = c.respond("ann", "what is two plus two", 1_000).await;
    assert_eq!(r.reason, Reason::Solo);
    assert!(r.reply.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn medium_and_high_ask_the_classifier() {
    let mut medium = conversation(Sensitivity::Medium, 3, false).await;
    let r = medium
        .respond("ann", "What's the capital of Peru?", 1_000)
        .await;
    assert!(
        matches!(r.reason, Reason::Classifier { .. }),
        "{:?}",
        r.reason
    );
    assert!(r.reply.is_some());
    let r = medium
        .respond("bob", "We should get lunch after this.", 60_000)
        .await;
    assert!(
        matches!(r.reason, Reason::BelowThreshold { .. }),
        "{:?}",
        r.reason
    );

    let mut high = conversation(Sensitivity::High, 3, false).await;
    let r = high
        .respond("ann", "Does anyone know how tall Everest is?", 1_000)
        .await;
    assert!(r.addressed, "{:?}", r.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spoken_reply_says_the_reply_text() {
    let mut c = conversation(Sensitivity::Low, 2, true).await;
    let r = c
        .respond("ann", "Jarvis, what is two plus two?", 1_000)
        .await;
    let reply = r.reply.clone().expect("a reply");
    assert_eq!(r.sample_rate, 22_050);
    assert!(
        r.first_audio_ms.is_some() && r.stages_ms.tts_first_audio.is_some(),
        "{r:?}"
    );
    let pcm = voicebot_shard::audio::Pcm {
        sample_rate: r.sample_rate,
        channels: 1,
        samples: r.audio.clone(),
    };
    let mut clip = common::silence(300);
    clip.extend(voicebot_shard::audio::to_pipeline_rate(&pcm).unwrap());
    clip.extend(common::silence(300));
    let heard =
        tokio::task::block_in_place(|| common::models().stt.transcribe(&clip).unwrap().text);
    assert!(
        word_error_rate(&reply, &heard) <= 0.2,
        "said {reply:?}, heard {heard:?}"
    );
}

#[test]
fn the_pipeline_command_runs_whole_turns() {
    let gw = gateway::shared_gateway();
    let dir = common::scratch();
    let speech = common::speak("Jarvis, what is two plus two?", "en-us", 160);
    let chatter = common::speak("I think we should order pizza tonight.", "en-gb", 150);
    let clip = [
        common::silence(500),
        chatter,
        common::silence(2_500),
        speech,
        common::silence(2_500),
    ]
    .concat();
    let input = dir.join("turns.wav");
    common::write_wav(&input, &clip);
    let out_wav = dir.join("reply.wav");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_voicebot-shard"))
        .args([
            "pipeline",
            "--json",
            "--agent",
            "jarvis",
            "--sensitivity",
            "low",
            "--gateway",
            &gw.url,
        ])
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(&out_wav)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("OPENCLAW_GATEWAY_TOKEN", &gw.token)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[0]["addressed"], false);
    assert_eq!(records[0]["reason"]["kind"], "not_addressed");
    assert!(records[0]["reply"].is_null());
    let r = &records[1];
    assert_eq!(r["addressed"], true, "{r}");
    assert_eq!(r["reason"]["kind"], "name");
    assert_eq!(r["reply"], gateway::reply_text());
    for stage in [
        "vad",
        "turn",
        "stt",
        "relevance",
        "gateway_first_token",
        "gateway_total",
        "tts_first_audio",
    ] {
        assert!(r["stages_ms"][stage].as_f64().is_some(), "{stage} in {r}");
    }
    assert!(r["overhead_ms"].as_f64().unwrap() > 0.0, "{r}");
    let reply = voicebot_shard::audio::read_wav(&out_wav).unwrap();
    assert!(reply.duration_ms() > 500, "reply audio written");
    assert!(!stderr.contains(&gw.token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_stops_playback_aborts_the_run_and_keeps_what_was_said() {
    use voicebot_shard::speak::playout::Playout;
    let mut c = conversation(Sensitivity::Low, 2, true).await;
    let (decision, message) = c
        .decide("ann", "Jarvis, tell me a long story [then-stall]", 1_000)
        .await;
    assert!(decision.addressed);
    let mut active = c
        .start_reply(message.expect("a message for the agent"))
        .expect("a reply");
    let rate = active.sample_rate as usize;
    let mut playout = Playout::new(rate / 50);
    // The first sentence is spoken while the model is still writing (here: stalled on) the rest.
    let first = active.next_chunk().await.expect("a first sentence");
    assert!(first.text.starts_with("word0"), "{first:?}");
    playout.push(&first.text, &first.audio);
    // A second of it goes out, then Bob starts talking.
    for _ in 0..50 {
        assert_eq!(playout.next_frame().map(|f| f.len()), Some(rate / 50));
    }
    let spoken = playout.stop();
    assert!(
        playout.next_frame().is_none(),
        "playback stops within the frame"
    );
    let outcome = active.barge_in().await;
    assert!(outcome.aborted && outcome.gateway_aborted, "{outcome:?}");
    assert!(spoken.interrupted);
    let said = spoken.text.clone();
    assert!(
        said.split_whitespace().count() < 5,
        "only the start was heard: {said:?}"
    );
    c.reply_heard("ann", &said, 1_000, 2_000);
    let last = c.transcript().lines().last().unwrap().clone();
    assert_eq!(
        (last.speaker.as_str(), last.text.as_str()),
        ("Jarvis", said.as_str())
    );

    // The conversation goes on normally.
    let r = c
        .respond("bob", "Jarvis, what is two plus two?", 5_000)
        .await;
    assert_eq!(
        r.reply.as_deref(),
        Some(gateway::reply_text().as_str()),
        "{r:?}"
    );
}
