//! Hostile input, as property tests (proptest, bounded case counts so they run in the test
//! command): every parser the shard owns returns an error or a value, never panics — OpenClaw
//! frames, WAV files, PCM at any rate and channel count, slash-command options, the bot's
//! configuration file, the pod's sharding environment — and the listener takes NaN, infinities, extreme amplitudes, empty and
//! 1-sample frames and very long turns in its stride. (The operator's CRD specs have their own
//! property test in `operator/tests/hostile_spec.rs`.)
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::io::Cursor;

use proptest::prelude::*;
use serde_json::{Value, json};
use voicebot_shard::audio::{self, ToPipelineRate};
use voicebot_shard::discord::commands;
use voicebot_shard::discord::plan::ShardPlan;
use voicebot_shard::listen::{Listener, ListenerConfig};
use voicebot_shard::openclaw::frames;
use voicebot_shard::pod::config_file as config;

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "event",
            "res",
            "req",
            "connect.challenge",
            "chat",
            "tick",
            "delta",
            "final",
            "error",
            "ok",
            "id",
            "payload",
            "runId",
            "1",
            "",
        ])
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "type", "event", "payload", "id", "ok", "error", "code", "message",
                        "details", "runId", "state", "seq", "name", "value", "options", "nonce",
                    ]),
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

/// A valid 16-bit WAV of `samples`.
fn wav_bytes(rate: u32, channels: u16, samples: &[i16]) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::new(&mut out, spec).unwrap();
    let whole = samples.len() / usize::from(channels) * usize::from(channels);
    for s in &samples[..whole] {
        w.write_sample(*s).unwrap();
    }
    w.finalize().unwrap();
    out.into_inner()
}

/// A sample that may be anything a broken source could send.
fn hostile_sample() -> impl Strategy<Value = f32> {
    prop_oneof![
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        Just(f32::MAX),
        Just(f32::MIN),
        Just(1e30f32),
        Just(0.0f32),
        -2.0f32..2.0f32,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn openclaw_frames_are_values_or_errors(v in json_value(), garbage in ".{0,200}") {
        let text = v.to_string();
        // A frame is accepted only when it says what it is: a `res` or an `event`.
        let kind = v.get("type").and_then(Value::as_str);
        match frames::parse(&text, 1 << 20) {
            Ok(frames::Inbound::Response(_)) => prop_assert_eq!(kind, Some("res")),
            Ok(frames::Inbound::Event(_)) => prop_assert_eq!(kind, Some("event")),
            Err(frames::FrameError::UnknownType(t)) => prop_assert_eq!(kind, Some(t.as_str())),
            Err(frames::FrameError::TooLarge { .. }) => prop_assert!(false, "under the limit"),
            Err(_) => prop_assert!(!matches!(kind, Some(k) if k != "res" && k != "event")),
        }
        if let Ok(g) = frames::parse(&garbage, 1 << 20) {
            let kind = serde_json::from_str::<Value>(&garbage).ok().and_then(|v| v["type"].as_str().map(str::to_string));
            prop_assert!(matches!(kind.as_deref(), Some("res" | "event")), "{garbage:?} → {g:?}");
        }
        // Over the limit: refused before parsing.
        if text.len() > 1 {
            let over = frames::parse(&text, text.len() - 1);
            prop_assert!(matches!(over, Err(frames::FrameError::TooLarge { .. })), "{over:?}");
        }
    }

    #[test]
    fn wav_files_are_decoded_or_refused(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        flips in prop::collection::vec((0usize..2048, any::<u8>()), 0..8),
        rate in 1u32..200_000,
        channels in 1u16..8,
        samples in prop::collection::vec(any::<i16>(), 0..256),
    ) {
        let _ = audio::decode_wav(Cursor::new(bytes));
        let mut wav = wav_bytes(rate, channels, &samples);
        for (at, b) in flips {
            let len = wav.len();
            wav[at % len] = b;
        }
        if let Ok(pcm) = audio::decode_wav(Cursor::new(wav)) {
            prop_assert!(pcm.samples.iter().all(|s| s.is_finite() && s.abs() <= 1.0));
            let _ = audio::to_pipeline_rate(&pcm);
        }
    }

    #[test]
    fn pcm_at_any_rate_and_channel_count(
        rate in 0u32..400_000,
        channels in 0u16..12,
        frames in prop::collection::vec(prop::collection::vec(hostile_sample(), 0..64), 0..6),
    ) {
        if let Ok(mut r) = ToPipelineRate::new(rate, channels) {
            let mut out = Vec::new();
            for f in &frames {
                r.push(f, &mut out);
            }
            let fed: usize = frames.iter().map(Vec::len).sum();
            // Never more out than in, beyond the resampler's rounding.
            prop_assert!(out.len() <= fed * 16 + 4096, "{} from {fed}", out.len());
        }
    }

    #[test]
    fn slash_command_options_are_commands_or_explained(
        options in prop::collection::vec(
            (
                prop::sample::select(vec!["join", "leave", "agent", "sensitivity", "status", "x", ""]),
                0u8..12,
                prop::collection::vec(
                    (
                        prop::sample::select(vec!["name", "level", "channel", "other"]),
                        0u8..12,
                        prop_oneof![
                            ".{0,20}".prop_map(Value::String),
                            any::<i64>().prop_map(|n| json!(n)),
                            any::<bool>().prop_map(Value::Bool),
                            Just(Value::Null),
                            Just(json!("1400000000000000010")),
                            Just(json!("sage")),
                            Just(json!("high")),
                        ],
                    ),
                    0..3,
                ),
            ),
            0..3,
        ),
        permissions in prop::sample::select(vec!["0", "32", "8", "36701184", "garbage"]),
        guild in any::<bool>(),
    ) {
        let options: Vec<Value> = options
            .into_iter()
            .map(|(name, kind, inner)| {
                let inner: Vec<Value> = inner
                    .into_iter()
                    .map(|(n, t, v)| json!({"name": n, "type": t, "value": v}))
                    .collect();
                json!({"name": name, "type": kind, "options": inner})
            })
            .collect();
        let mut v = json!({
            "id": "1500000000000000001", "application_id": "1100000000000000001", "type": 2,
            "token": "t", "version": 1, "authorizing_integration_owners": {},
            "member": {"user": {"id": "1600000000000000001", "username": "ann", "discriminator": "0"},
                       "roles": [], "deaf": false, "mute": false, "flags": 0,
                       "permissions": permissions},
            "data": {"id": "1700000000000000001", "name": "jarvis", "type": 1, "options": options},
        });
        if guild {
            v["guild_id"] = json!("1400000000000000001");
        }
        // What twilight accepts reaches our parser. A command is accepted only in a server,
        // from a member holding what the subcommand needs (or Administrator), and it is the
        // subcommand that was sent; anything else is refused with a sentence.
        if let Ok(interaction) = serde_json::from_value(v) {
            let held: Option<u64> = permissions.parse().ok();
            match commands::parse(
                "jarvis",
                &interaction,
                &["jarvis".into(), "sage".into()],
                &commands::CommandPermissions::default(),
            ) {
                Ok(cmd) => {
                    prop_assert!(guild, "accepted outside a server: {cmd:?}");
                    let sent = options.first().and_then(|o| o["name"].as_str()).unwrap_or_default();
                    prop_assert_eq!(cmd.name(), sent);
                    let held = held.unwrap_or(0);
                    let config = voicebot_config::CommandsConfig::default();
                    let needs = voicebot_config::Permission::bits(match cmd.name() {
                        "join" => &config.join,
                        "leave" => &config.leave,
                        "agent" => &config.agent,
                        "sensitivity" => &config.sensitivity,
                        _ => &config.status,
                    });
                    prop_assert!(held & 8 != 0 || held & needs == needs, "{cmd:?} with {held:#x}");
                }
                Err(commands::CommandError::NotOurs) => {}
                Err(e) => {
                    let m = e.to_string();
                    prop_assert!(m.len() > 10 && m.ends_with(['.', '?', ')']), "{m:?}");
                }
            }
        }
    }

    #[test]
    fn any_configuration_file_is_a_config_or_an_explained_error(
        v in json_value(),
        agents in prop::collection::vec(prop_oneof![".{0,10}".prop_map(|n| json!({"name": n})), json_value()], 0..4),
        sensitivity in prop_oneof![Just(json!("low")), Just(json!("HIGH")), ".{0,8}".prop_map(Value::String), json_value()],
        garbage in ".{0,64}",
    ) {
        for text in [
            v.to_string(),
            json!({"agents": agents, "defaultSensitivity": sensitivity, "redis": {"url": "redis://r:6379"},
                   "gateway": {"url": "ws://g:1", "tokenSecret": {"name": "o", "key": "t"}}}).to_string(),
            garbage,
        ] {
            match config::parse(&text) {
                // Whatever parses is a configuration the pod can run: valid agent ids, it
                // validates, and it reads back the same once written (the operator renders it
                // into the ConfigMap the pod parses).
                Ok(c) => {
                    prop_assert!(!c.agents.is_empty() && c.agents.iter().all(|a| a.name.starts_with(|ch: char| ch.is_ascii_lowercase())));
                    prop_assert!(c.validate().is_ok());
                    let again = config::parse(&serde_json::to_string(&c).unwrap());
                    prop_assert_eq!(again.as_ref(), Ok(&c));
                }
                // Refused with a sentence, not a panic or a blank.
                Err(e) => prop_assert!(e.len() > 10, "{e:?}"),
            }
        }
    }

    #[test]
    fn any_sharding_environment_is_a_plan_or_an_explained_error(
        count in prop::option::of(".{0,6}|[0-9]{1,3}"),
        per_pod in prop::option::of(".{0,6}|[0-9]{1,3}"),
        pod in prop::option::of(".{0,12}|jarvis-shard-[0-9]{1,3}"),
    ) {
        let lookup = |k: &str| match k {
            "SHARD_COUNT" => count.clone(),
            "SHARDS_PER_POD" => per_pod.clone(),
            "POD_NAME" => pod.clone(),
            _ => None,
        };
        match ShardPlan::from_lookup(lookup) {
            Ok(plan) => {
                prop_assert!(plan.shards().count() >= 1);
                prop_assert!(plan.shards().all(|s| s < plan.count));
                // Every shard of the bot belongs to exactly one pod.
                let owners = (0..plan.count)
                    .filter(|s| s / plan.per_pod.max(1) == plan.ordinal)
                    .count();
                prop_assert_eq!(owners, plan.shards().count());
            }
            // Refused naming what to fix.
            Err(e) => {
                let m = e.to_string();
                prop_assert!(
                    ["SHARD_COUNT", "SHARDS_PER_POD", "pod ordinal", "has no shards"].iter().any(|v| m.contains(v)),
                    "{m}"
                );
            }
        }
    }
}

proptest! {
    // The real models: few cases, each a few seconds of audio.
    #![proptest_config(ProptestConfig { cases: 6, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_listener_takes_hostile_audio(
        frames in prop::collection::vec(
            prop_oneof![
                prop::collection::vec(hostile_sample(), 0..2),
                prop::collection::vec(hostile_sample(), 320..321),
                prop::collection::vec(hostile_sample(), 0..4000),
            ],
            1..80,
        ),
    ) {
        let mut models = common::models();
        let mut listener = Listener::new(ListenerConfig::default(), models.new_vad().unwrap());
        for f in &frames {
            for u in listener.push(&mut *models, f).unwrap() {
                prop_assert!(u.end_ms >= u.start_ms);
            }
        }
        for u in listener.finish(&mut *models).unwrap() {
            prop_assert!(u.end_ms >= u.start_ms);
        }
    }
}

#[test]
fn a_very_long_loud_turn_and_an_empty_stream() {
    let mut models = common::models();
    // 40 s of full-scale square wave (a stuck microphone): turns are cut at 30 s at most.
    let mut listener = Listener::new(ListenerConfig::default(), models.new_vad().unwrap());
    let loud: Vec<f32> = (0..16_000 * 40)
        .map(|i| if (i / 40) % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    let mut turns = Vec::new();
    for chunk in loud.chunks(320) {
        turns.extend(listener.push(&mut *models, chunk).unwrap());
    }
    turns.extend(listener.finish(&mut *models).unwrap());
    for t in &turns {
        assert!(t.end_ms - t.start_ms <= 30_500, "{t:?}");
    }
    // Nothing at all.
    let mut listener = Listener::new(ListenerConfig::default(), models.new_vad().unwrap());
    assert!(listener.push(&mut *models, &[]).unwrap().is_empty());
    assert!(listener.finish(&mut *models).unwrap().is_empty());
}
