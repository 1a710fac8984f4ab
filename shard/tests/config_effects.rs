//! Every field of the bot's configuration changes what the pod does: the configuration a
//! VoiceBot carries (`voicebot_config::BotConfig`, as the pod reads it from its ConfigMap) is
//! turned into the pod's brains with the same code `voicebot-shard run` uses
//! (`BrainsConfig::from_bot` → `Brains::load`), on the real models, the real OpenClaw gateway
//! and, for `tts.backend: http`, a speech endpoint this test serves on loopback.
//!
//! `crds/src/fields.rs` names the test here (or elsewhere) that shows each field's effect; a
//! test there fails when a field of the schema has none.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
#[path = "../../demo/src/local_gateway.rs"]
mod gateway;

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use voicebot_config::BotConfig;
use voicebot_shard::converse::relevance::{Reason, Sensitivity};
use voicebot_shard::eval::word_error_rate;
use voicebot_shard::pod::brains::{Brains, BrainsConfig};
use voicebot_shard::pod::settings;
use voicebot_shard::secret::Secret;

/// A configuration as a user writes it in a VoiceBot's spec (the pod-level parts aside).
fn bot(extra: serde_json::Value) -> BotConfig {
    let mut v = serde_json::json!({
        "agents": [{"name": "jarvis"}],
        "redis": {"url": "redis://127.0.0.1:1"},
        "gateway": {"url": "ws://127.0.0.1:1", "tokenSecret": {"name": "openclaw", "key": "token"}},
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    let bot = BotConfig::from_json(&v.to_string()).unwrap();
    bot.validate().unwrap();
    bot
}

/// The pod's brains for `bot`, with the shared real gateway (or none) and the `TTS_API_KEY`.
async fn brains(bot: &BotConfig, with_gateway: bool, tts_key: Option<&str>) -> Brains {
    let gw = with_gateway.then(|| gateway::shared_gateway().client_config());
    let mut config = BrainsConfig::from_bot(bot, None, gw, tts_key.map(Secret::new));
    config.scope = format!("effects-{}", fastrand::u32(..));
    // The gateway may still be starting (it shares 2 cores with the other tests).
    config.gateway_wait = std::time::Duration::from_secs(90);
    let mut brains = Brains::load(config)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", gateway::shared_gateway().log_tail()));
    // The classifier runs on the gateway, which shares 2 cores with the other tests.
    brains.relevance.classifier_timeout = std::time::Duration::from_secs(10);
    brains
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_answer_to_their_aliases_with_their_persona_and_voice() {
    let b = bot(serde_json::json!({
        "agents": [
            {"name": "jarvis", "aliases": ["Jeeves"], "voice": "en_US-joe-medium",
             "persona": "You are Jarvis, a butler who answers in one short sentence."},
            {"name": "sage", "voice": "espeak:en-us+f3",
             "persona": "You are Sage, a calm teacher of astronomy."},
        ],
    }));
    let brains = brains(&b, true, None).await;

    // Jarvis is called by his alias: addressed, and his persona reaches the model.
    let mut jarvis = brains.conversation("jarvis", 1, 10, Sensitivity::Low);
    jarvis.humans_present = 3;
    let r = jarvis
        .respond("ann", "Jeeves, what is seven plus seven?", 1_000)
        .await;
    assert!(matches!(r.reason, Reason::Name(_)), "{:?}", r.reason);
    assert_eq!(r.reply.as_deref(), Some(gateway::reply_text().as_str()));
    let sent = gateway::user_messages();
    let to_model = sent
        .iter()
        .rev()
        .find(|m| m.contains("seven plus seven"))
        .unwrap();
    assert!(to_model.contains("a butler who answers"), "{to_model}");
    let jarvis_audio = (r.audio.clone(), r.sample_rate);

    // The alias is Jarvis's only: Sage does not take it; Sage answers to her name, with her
    // persona, not his.
    let mut sage = brains.conversation("sage", 2, 10, Sensitivity::Low);
    sage.humans_present = 3;
    let r = sage
        .respond("ann", "Jeeves, what is seven plus seven?", 1_000)
        .await;
    assert_eq!(r.reason, Reason::NotAddressed, "{r:?}");
    let r = sage
        .respond("bob", "Sage, what is the nearest star?", 5_000)
        .await;
    assert!(matches!(r.reason, Reason::Name(_)), "{:?}", r.reason);
    let to_model = gateway::user_messages()
        .into_iter()
        .rev()
        .find(|m| m.contains("nearest star"))
        .unwrap();
    assert!(to_model.contains("teacher of astronomy"), "{to_model}");
    assert!(!to_model.contains("butler"), "{to_model}");
    let sage_audio = (r.audio.clone(), r.sample_rate);

    // Two voices: Joe's (Piper) and espeak-ng's female voice 3 — a pitch apart, and Whisper
    // understands both.
    let jp = common::median_pitch_hz(&jarvis_audio.0, jarvis_audio.1);
    let sp = common::median_pitch_hz(&sage_audio.0, sage_audio.1);
    gateway::note(&format!(
        "voices: jarvis (en_US-joe-medium) median F0 {jp:.0} Hz, sage (espeak:en-us+f3) {sp:.0} Hz"
    ));
    assert!(sp > jp * 1.3, "sage {sp:.0} Hz vs jarvis {jp:.0} Hz");
    for (who, (audio, rate)) in [("jarvis", &jarvis_audio), ("sage", &sage_audio)] {
        let heard = common::transcribe(audio, *rate);
        let wer = word_error_rate(&gateway::reply_text(), &heard);
        gateway::note(&format!("{who} heard back: {heard:?} (WER {wer:.2})"));
        assert!(wer < 0.4, "{who}: {heard:?} (WER {wer:.2})");
    }
}

/// Not a field, but the pod's own choice: a conversation (and the agent's OpenClaw session) is
/// per voice channel, so what was said in one channel is never context in another one of the
/// same guild; within a channel, the session carries what was said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_voice_channel_is_its_own_conversation() {
    let b = bot(serde_json::json!({}));
    let brains = brains(&b, true, None).await;
    let guild = 40 + std::process::id() as u64 % 1000 * 1000;
    let mut first = brains.conversation("jarvis", guild, 1, Sensitivity::Low);
    let mut second = brains.conversation("jarvis", guild, 2, Sensitivity::Low);
    assert_ne!(first.session_key(), second.session_key());
    let seen_with = |needle: &str| {
        gateway::conversations()
            .into_iter()
            .rev()
            .find(|c| c.contains(needle))
            .unwrap_or_else(|| panic!("no request with {needle:?}"))
    };

    let r = first
        .respond("ann", "Jarvis, the code word is pineapple.", 1_000)
        .await;
    assert!(r.addressed, "{:?}", r.reason);
    let r = first
        .respond("ann", "Jarvis, repeat the code word please.", 9_000)
        .await;
    assert!(r.addressed, "{:?}", r.reason);
    let same_channel = seen_with("repeat the code word");
    assert!(
        same_channel.contains("pineapple"),
        "the channel's own session carries its history: {same_channel}"
    );

    let r = second
        .respond("bob", "Jarvis, what is the code word?", 1_000)
        .await;
    assert!(r.addressed, "{:?}", r.reason);
    let other_channel = seen_with("what is the code word");
    assert!(
        !other_channel.contains("pineapple"),
        "another channel of the guild must not see the first one's words: {other_channel}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whisper_size_and_worker_count_choose_what_is_loaded() {
    let piper_sessions = |b: &Brains| match &b.voice {
        Some(voicebot_shard::speak::tts::Voice::Piper(p)) => p.size(),
        _ => 0,
    };
    let tiny = brains(&bot(serde_json::json!({})), false, None).await;
    let models = tiny.models.as_ref().unwrap();
    assert!(models.whisper.ends_with("ggml-tiny.en.bin"), "{models:?}");
    assert_eq!(tiny.pool.workers(), 2, "limits.workers defaults to 2");
    assert_eq!(piper_sessions(&tiny), 2, "limits.ttsWorkers defaults to 2");
    drop(tiny);
    let base = brains(
        &bot(serde_json::json!({"models": {"whisper": "base"},
                                "limits": {"workers": 1, "ttsWorkers": 3}})),
        false,
        None,
    )
    .await;
    let models = base.models.as_ref().unwrap();
    assert!(models.whisper.ends_with("ggml-base.bin"), "{models:?}");
    assert_eq!(base.pool.workers(), 1);
    assert_eq!(piper_sessions(&base), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_sensitivity_is_what_a_guild_gets_until_it_picks() {
    // A guild that has not run /sensitivity talks to the bot at the configured level: at
    // medium, a question without the name goes to the classifier and is answered.
    for (level, addressed) in [("low", false), ("medium", true)] {
        let b = bot(serde_json::json!({"defaultSensitivity": level}));
        let brains = brains(&b, true, None).await;
        let mut c = brains.conversation("jarvis", 7, 10, b.default_sensitivity);
        c.humans_present = 3;
        let r = c
            .respond("ann", "What is the capital of Peru?", 1_000)
            .await;
        assert_eq!(r.addressed, addressed, "{level}: {:?}", r.reason);
    }
}

/// An OpenAI-compatible `/v1/audio/speech` on loopback: records each request, answers with
/// 0.3 s of 24 kHz PCM (a 220 Hz tone) to the right key, 401 to any other.
async fn speech_endpoint(key: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut n = 0;
                loop {
                    let m = s.read(&mut buf[n..]).await.unwrap_or(0);
                    n += m;
                    let text = String::from_utf8_lossy(&buf[..n]).to_string();
                    if m == 0 || (text.contains("\r\n\r\n") && text.trim_end().ends_with('}')) {
                        break;
                    }
                }
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                log.lock().unwrap().push(req.clone());
                if !req.contains(&format!("Bearer {key}")) {
                    let _ = s
                        .write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await;
                    return;
                }
                let pcm: Vec<u8> = (0..7200)
                    .flat_map(|i| {
                        (((i as f32 * 220.0 * std::f32::consts::TAU / 24_000.0).sin() * 8000.0)
                            as i16)
                            .to_le_bytes()
                    })
                    .collect();
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: audio/pcm\r\nConnection: close\r\n\r\n",
                    )
                    .await;
                let _ = s.write_all(&pcm).await;
            });
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_backend_speaks_through_the_endpoint_with_the_key_from_the_secret() {
    const KEY: &str = "sk-from-the-secret-4242";
    let (url, seen) = speech_endpoint(KEY).await;
    let b = bot(serde_json::json!({
        "agents": [{"name": "jarvis", "voice": "onyx"}, {"name": "sage"}],
        "models": {"tts": {"backend": "http", "url": url, "model": "tts-test-model",
                           "defaultVoice": "nova",
                           "apiKeySecret": {"name": "tts", "key": "apiKey"}}},
    }));
    // The pod gets the key in TTS_API_KEY (from the Secret); `run` hands it over like this.
    let keyed = brains(&b, true, Some(KEY)).await;
    for (agent, voice) in [("jarvis", "onyx"), ("sage", "nova")] {
        let before = seen.lock().unwrap().len();
        let mut c = keyed.conversation(agent, 3, 10, Sensitivity::Low);
        c.humans_present = 1;
        let r = c.respond("ann", "what is two plus two", 1_000).await;
        assert!(r.reply.is_some(), "{agent}: {r:?}");
        assert!(r.error.is_none(), "{agent}: {:?}", r.error);
        assert_eq!(r.sample_rate, 24_000);
        assert!(r.audio.len() >= 7200, "{agent}: {} samples", r.audio.len());
        let requests = seen.lock().unwrap()[before..].to_vec();
        assert!(
            !requests.is_empty(),
            "{agent}: nothing reached the endpoint"
        );
        for req in &requests {
            assert!(req.starts_with("POST /v1/audio/speech"), "{req}");
            assert!(req.contains(&format!("Bearer {KEY}")), "{req}");
            assert!(req.contains("\"model\":\"tts-test-model\""), "{req}");
            assert!(
                req.contains(&format!("\"voice\":\"{voice}\"")),
                "{agent}: {req}"
            );
        }
    }
    // Without the key the endpoint refuses, and the turn says so without the key in it.
    let keyless = brains(&b, true, None).await;
    let mut c = keyless.conversation("jarvis", 4, 10, Sensitivity::Low);
    c.humans_present = 1;
    let before = seen.lock().unwrap().len();
    let r = c.respond("ann", "what is two plus two", 1_000).await;
    assert!(r.reply.is_some(), "the text reply still comes: {r:?}");
    assert!(r.audio.is_empty(), "no audio without the key");
    let err = r.error.clone().unwrap_or_default();
    assert!(
        err.contains("text-to-speech") && err.contains("401"),
        "{err}"
    );
    let requests = seen.lock().unwrap()[before..].to_vec();
    assert!(!requests.is_empty() && requests.iter().all(|r| !r.contains("Bearer")));
}

#[test]
fn vad_and_turn_settings_change_what_is_heard_and_when() {
    let clip = [
        common::silence(500),
        common::speak("Jarvis, what time is it in Tokyo?", "en-us", 170),
        common::silence(3000),
    ]
    .concat();
    let listen = |extra: serde_json::Value| {
        let room = settings::room(&bot(extra));
        common::listen(&clip, room.listener)
    };
    // models.vad.silenceMs: the turn waits at least that long after the speech.
    let quick = listen(serde_json::json!({"models": {"vad": {"silenceMs": 200}}}));
    let patient = listen(serde_json::json!({"models": {"vad": {"silenceMs": 900}}}));
    let delay = |u: &[voicebot_shard::listen::Utterance]| {
        assert_eq!(u.len(), 1, "{u:?}");
        u[0].committed_ms - u[0].end_ms
    };
    let (dq, dp) = (delay(&quick), delay(&patient));
    assert!(
        dp >= 900 && dq < 900,
        "silenceMs 200 → {dq} ms, 900 → {dp} ms"
    );
    // models.vad.minSpeechMs: speech shorter than that is not a turn.
    let none = listen(serde_json::json!({"models": {"vad": {"minSpeechMs": 4000}}}));
    assert!(none.is_empty(), "{none:?}");
    // models.turn.threshold / maxWaitMs: a turn Smart Turn cannot be sure of enough waits
    // for maxWaitMs.
    let trailing = [
        common::silence(500),
        common::speak("Jarvis, I was wondering whether the", "en-us", 170),
        common::silence(4000),
    ]
    .concat();
    let unsure = |wait: u32| {
        let room = settings::room(&bot(
            serde_json::json!({"models": {"turn": {"threshold": 0.99, "maxWaitMs": wait}}}),
        ));
        common::listen(&trailing, room.listener)
    };
    let (short, long) = (unsure(600), unsure(2400));
    let (ds, dl) = (delay(&short), delay(&long));
    assert!(dl > ds + 1000, "maxWaitMs 600 → {ds} ms, 2400 → {dl} ms");
    // models.turn.unfinishedWaitMs: a person's "Front ... Center" (a recording) is one turn
    // while the wait covers the pause, two when Smart Turn alone decides.
    let hesitant = [
        common::silence(500),
        common::recorded("Front_Center.wav"),
        common::silence(2500),
    ]
    .concat();
    let turns = |wait: u32| {
        let room = settings::room(&bot(
            serde_json::json!({"models": {"turn": {"unfinishedWaitMs": wait}}}),
        ));
        common::listen(&hesitant, room.listener).len()
    };
    let (held, alone) = (turns(1200), turns(0));
    assert_eq!(
        (held, alone),
        (1, 2),
        "unfinishedWaitMs 1200 → {held} turn(s), 0 → {alone}"
    );
    // models.vad.threshold: a stricter detector hears less of the same speech.
    let span = |u: &[voicebot_shard::listen::Utterance]| u[0].end_ms - u[0].start_ms;
    let lax = listen(serde_json::json!({"models": {"vad": {"threshold": 0.1}}}));
    let strict = listen(serde_json::json!({"models": {"vad": {"threshold": 0.95}}}));
    gateway::note(&format!(
        "commit delay: silenceMs 200 → {dq} ms, 900 → {dp} ms; maxWaitMs 600 → {ds} ms, 2400 → {dl} ms; speech span at threshold 0.1 → {} ms, 0.95 → {} ms",
        span(&lax),
        span(&strict)
    ));
    assert!(
        strict.is_empty() || span(&strict) < span(&lax),
        "{strict:?} vs {lax:?}"
    );
}

#[test]
fn limits_bound_the_room() {
    let room = settings::room(&bot(
        serde_json::json!({"limits": {"maxSpeakers": 3, "maxPendingTurns": 1}}),
    ));
    // The room enforces them: shard/tests/room.rs (the_room_refuses_more_speakers_than_it_
    // listens_to, turns_beyond_the_queue_are_dropped_and_counted_and_nobody_is_stuck).
    assert_eq!((room.max_speakers, room.max_pending), (3, 1));
}

/// `voicebot-shard run` as the operator starts it: `VOICEBOT_CONFIG` (the ConfigMap) and the
/// Secret-backed variables; stderr captured.
fn pod(config: &serde_json::Value, env: &[(&str, &str)]) -> std::process::Command {
    let dir = common::scratch();
    let path = dir.join(format!("voicebot-{}.json", fastrand::u32(..)));
    std::fs::write(&path, config.to_string()).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_voicebot-shard"));
    cmd.arg("run")
        .env_remove("REDIS_URL")
        .env_remove("TTS_API_KEY")
        .env("DISCORD_TOKEN", "test-token")
        .env("DISCORD_APPLICATION_ID", "42")
        // Nothing answers here: the pod gets as far as its Discord connection.
        .env("DISCORD_GATEWAY_URL", "ws://127.0.0.1:1")
        .env("DISCORD_API_PROXY", "http://127.0.0.1:1")
        .env("OPENCLAW_GATEWAY_TOKEN", "gw-token")
        .env("VOICEBOT_REDIS_PREFIX", common::fleet::PREFIX)
        .env(
            "METRICS_ADDR",
            format!("127.0.0.1:{}", common::fleet::free_port()),
        )
        .env("VOICEBOT_CONFIG", &path)
        .envs(env.iter().copied());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pod_takes_redis_and_the_gateway_from_the_config_and_refuses_missing_secrets() {
    let base = serde_json::json!({
        "agents": [{"name": "jarvis"}],
        "redis": {"urlSecret": {"name": "voicebot-redis-url", "key": "url"}},
        "gateway": {"url": "ws://127.0.0.1:1", "tokenSecret": {"name": "openclaw", "key": "token"}},
    });
    // redis.urlSecret without its variable: refused at start, the field named.
    let out = pod(&base, &[]).arg("--no-voice").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("redis.urlSecret"),
        "{err}"
    );
    // models.tts.apiKeySecret likewise.
    let mut keyed = base.clone();
    keyed["models"] = serde_json::json!({"tts": {"backend": "http", "url": "http://127.0.0.1:1/v1",
        "apiKeySecret": {"name": "tts", "key": "apiKey"}}});
    let out = pod(&keyed, &[("REDIS_URL", "redis://127.0.0.1:1")])
        .arg("--no-voice")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("models.tts.apiKeySecret"),
        "{err}"
    );

    // redis.sealKeySecret likewise.
    let mut sealed = base.clone();
    sealed["redis"]["sealKeySecret"] = serde_json::json!({"name": "voicebot-state", "key": "key"});
    let out = pod(&sealed, &[("REDIS_URL", "redis://127.0.0.1:1")])
        .arg("--no-voice")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("redis.sealKeySecret"),
        "{err}"
    );

    // With the Secret's URL in REDIS_URL, the pod keeps the fleet's device identity in that
    // Redis, sealed with the key of VOICEBOT_STATE_KEY, and dials the gateway at
    // `gateway.url` (here: a listener of the test's).
    let redis = common::fleet::Redis::start();
    let gateway = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = sealed.clone();
    config["gateway"]["url"] = format!("ws://{}", gateway.local_addr().unwrap()).into();
    let log = common::scratch().join("pod-config.log");
    let mut child = pod(
        &config,
        &[
            ("REDIS_URL", redis.url().as_str()),
            ("VOICEBOT_STATE_KEY", "the-state-key"),
        ],
    )
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .unwrap();
    let accepted = tokio::time::timeout(std::time::Duration::from_secs(90), gateway.accept()).await;
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let (mut stream, _) = accepted
        .unwrap_or_else(|_| panic!("the pod never dialled gateway.url\n{}", logs()))
        .unwrap();
    let mut head = vec![0u8; 4096];
    let mut n = 0;
    while !String::from_utf8_lossy(&head[..n]).contains("\r\n\r\n") {
        let m = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read(&mut head[n..]),
        )
        .await
        .unwrap()
        .unwrap();
        if m == 0 {
            break;
        }
        n += m;
    }
    let _ = child.kill();
    let _ = child.wait();
    let logs = logs();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(
        head.starts_with("GET /") && head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let device: Option<String> = redis::cmd("GET")
        .arg(format!("{}openclaw:device", common::fleet::PREFIX))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        device
            .as_deref()
            .is_some_and(|d| d.starts_with("sealed:v1:")),
        "no sealed device identity in the configured Redis ({device:?})\n{logs}"
    );
    for secret in [
        "gw-token",
        "test-token",
        common::fleet::PASSWORD,
        "the-state-key",
    ] {
        assert!(!logs.contains(secret), "{secret} in the logs");
    }
}

/// What the pod does before `/readyz` (and the demo before "ready"): one real pass through
/// every engine the configuration loads — each session of each local voice speaks, each
/// listening worker hears that speech through the real listener — and every engine is back in
/// its pool afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warm_up_passes_through_every_configured_engine() {
    let b = bot(serde_json::json!({
        "agents": [{"name": "jarvis"}, {"name": "sage", "voice": "espeak:en-us+f3"}],
        "limits": {"workers": 2, "ttsWorkers": 2},
    }));
    let brains = brains(&b, false, None).await;
    let w = brains.warm_up().await.expect("warm-up");
    gateway::note(&format!("warm-up: {w:?}"));
    // Piper's two sessions (jarvis and the default voice share them) and espeak-ng's voice.
    assert_eq!(w.voice_sessions, 3, "{w:?}");
    assert_eq!(w.workers, 2, "{w:?}");
    let heard = w.heard.to_lowercase();
    assert!(
        heard.contains("two plus two") || heard.contains("2 plus 2"),
        "Whisper heard the warm-up sentence as {:?}",
        w.heard
    );
    let (a, b) = (brains.pool.try_lease(), brains.pool.try_lease());
    assert!(a.is_some() && b.is_some(), "a worker was not given back");
}
