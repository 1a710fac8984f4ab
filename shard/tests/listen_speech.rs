//! The listening pipeline on real speech (espeak-ng, generated at test time) with the real
//! models: transcripts, utterance boundaries, turn completion, and nothing from silence or noise.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{listen, listen_for, recorded, silence, speak, speech_bounds_ms, stretch_pause};
use voicebot_shard::eval::word_error_rate;
use voicebot_shard::listen::{CommitReason, ListenerConfig};

#[test]
fn transcribes_several_voices_and_speeds_with_right_boundaries() {
    let cases = [
        ("Hey Jarvis, what is the capital of France?", "en-us", 160),
        (
            "Please add a reminder for the dentist on Friday.",
            "en-gb",
            140,
        ),
        (
            "Sage, remind me to call my mother tomorrow morning.",
            "en-us+f3",
            175,
        ),
        (
            "How many kilometers is it from Paris to Berlin?",
            "en-gb-x-rp",
            150,
        ),
        (
            "Could you play some relaxing music for me?",
            "en-us+m3",
            190,
        ),
        (
            "The meeting starts at three o'clock this afternoon.",
            "en-us",
            130,
        ),
    ];
    let mut total_wer = 0.0;
    let mut report = Vec::new();
    for (text, voice, speed) in cases {
        let speech = speak(text, voice, speed);
        let lead = 800;
        let (s0, s1) = speech_bounds_ms(&speech);
        let clip = [silence(lead), speech, silence(2_500)].concat();
        let utterances = listen(&clip, ListenerConfig::default());
        assert_eq!(
            utterances.len(),
            1,
            "{voice}@{speed} {text:?}: {utterances:?}"
        );
        let u = &utterances[0];
        let wer = word_error_rate(text, &u.transcript);
        report.push(format!("{voice}@{speed}: wer {wer:.2} {:?}", u.transcript));
        total_wer += wer;
        assert!(
            wer <= 0.25,
            "{voice}@{speed}: {text:?} heard as {:?}",
            u.transcript
        );
        let (true_start, true_end) = (u64::from(lead) + s0, u64::from(lead) + s1);
        assert!(
            u.start_ms.abs_diff(true_start) <= 250,
            "{voice}: start {} vs {true_start}",
            u.start_ms
        );
        assert!(
            u.end_ms.abs_diff(true_end) <= 400,
            "{voice}: end {} vs {true_end}",
            u.end_ms
        );
        assert!(u.stages_ms.stt > 0.0 && u.stages_ms.vad > 0.0 && u.stages_ms.turn > 0.0);
    }
    let mean = total_wer / cases.len() as f32;
    eprintln!("{}\nmean WER {mean:.3}", report.join("\n"));
    assert!(mean <= 0.12, "mean WER {mean}");
}

#[test]
fn two_utterances_separated_by_a_pause_are_two_records() {
    let first = speak("What time is it in Tokyo?", "en-us", 160);
    let second = speak("Please set a timer for ten minutes.", "en-gb", 150);
    let first_len = first.len() as u64 / 16;
    let clip = [silence(500), first, silence(2_500), second, silence(1_500)].concat();
    let u = listen(&clip, ListenerConfig::default());
    assert_eq!(u.len(), 2, "{u:?}");
    assert!(
        word_error_rate("What time is it in Tokyo?", &u[0].transcript) <= 0.2,
        "{:?}",
        u[0].transcript
    );
    assert!(
        word_error_rate("Please set a timer for ten minutes.", &u[1].transcript) <= 0.2,
        "{:?}",
        u[1].transcript
    );
    assert!(
        u[0].end_ms <= 500 + first_len + 100,
        "first ends before the pause: {}",
        u[0].end_ms
    );
    assert!(
        u[1].start_ms >= 500 + first_len + 2_000,
        "second starts after the pause: {}",
        u[1].start_ms
    );
    // espeak's flat questions do not always convince Smart Turn; either way the turn is
    // committed during the pause, not merged with the next one.
    assert!(
        u.iter().all(|u| matches!(
            u.commit,
            CommitReason::TurnComplete
                | CommitReason::Question
                | CommitReason::MaxWait
                | CommitReason::Unfinished
        )),
        "{u:?}"
    );
}

#[test]
fn a_trailing_filler_is_an_incomplete_turn_that_waits_then_commits() {
    let speech = speak("I want to order a pizza and then, um", "en-us", 160);
    let clip = [silence(500), speech, silence(3_000)].concat();
    let u = listen(&clip, ListenerConfig::default());
    assert_eq!(u.len(), 1, "{u:?}");
    assert!(
        u[0].turn_complete < 0.5,
        "turn judged complete: {}",
        u[0].turn_complete
    );
    assert_eq!(u[0].commit, CommitReason::MaxWait);
    assert!(
        u[0].transcript.to_lowercase().contains("pizza"),
        "{:?}",
        u[0].transcript
    );

    // The same pause, but the speaker goes on within the wait: one turn, not two.
    let rest = speak("a large salad with extra cheese.", "en-us", 160);
    let clip = [
        silence(500),
        speak("I want to order a pizza and then, um", "en-us", 160),
        silence(1_000),
        rest,
        silence(2_000),
    ]
    .concat();
    let u = listen(&clip, ListenerConfig::default());
    assert_eq!(u.len(), 1, "{u:?}");
    let t = u[0].transcript.to_lowercase();
    assert!(t.contains("pizza") && t.contains("salad"), "{t:?}");
}

#[test]
fn silence_and_noise_give_no_utterances() {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut noise = |amp: f32| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng as f64 / u64::MAX as f64 * 2.0 - 1.0) as f32 * amp
    };
    let clips: Vec<(&str, Vec<f32>)> = vec![
        ("digital silence", silence(5_000)),
        ("white noise", (0..80_000).map(|_| noise(0.1)).collect()),
        ("quiet hiss", (0..80_000).map(|_| noise(0.003)).collect()),
        (
            "mains hum",
            (0..80_000)
                .map(|i| (i as f32 * 50.0 * std::f32::consts::TAU / 16_000.0).sin() * 0.2)
                .collect(),
        ),
        (
            "clicks",
            (0..80_000)
                .map(|i| if i % 8_000 < 40 { 0.8 } else { 0.0 })
                .collect(),
        ),
    ];
    for (name, clip) in clips {
        let u = listen(&clip, ListenerConfig::default());
        assert!(u.is_empty(), "{name} became {u:?}");
    }
}

#[test]
fn a_monologue_longer_than_the_maximum_turn_is_split_not_buffered_forever() {
    // Speech trimmed to its voiced part and joined with 60 ms gaps: no pause the VAD would
    // take for the end of speech, so only the maximum turn length can commit it.
    let sentence = speak(
        "and this story goes on and on without any pause",
        "en-us",
        170,
    );
    let (a, b) = speech_bounds_ms(&sentence);
    let voiced = &sentence[(a * 16) as usize..(b * 16) as usize];
    let mut clip = silence(300);
    while clip.len() < 16_000 * 34 {
        clip.extend_from_slice(voiced);
        clip.extend(silence(60));
    }
    clip.extend(silence(2_500));
    let config = ListenerConfig::default();
    let u = listen(&clip, config);
    assert!(u.len() >= 2, "{u:?}");
    assert!(
        u.iter().any(|u| u.commit == CommitReason::MaxLength),
        "{u:?}"
    );
    assert!(
        u.iter()
            .all(|u| u.end_ms - u.start_ms <= u64::from(config.max_turn_ms) + 100)
    );
}

#[test]
fn speculative_transcription_changes_timing_not_transcripts() {
    let clip = [
        silence(500),
        speak("Please set a timer for ten minutes.", "en-gb", 150),
        silence(2_500),
        speak("I want to order a pizza and then, um", "en-us", 160),
        silence(700),
        speak("a salad.", "en-us", 160),
        silence(2_500),
    ]
    .concat();
    let with = listen(&clip, ListenerConfig::default());
    let without = listen(
        &clip,
        ListenerConfig {
            speculative_stt: false,
            ..ListenerConfig::default()
        },
    );
    let texts = |u: &[voicebot_shard::listen::Utterance]| {
        u.iter().map(|u| u.transcript.clone()).collect::<Vec<_>>()
    };
    assert_eq!(texts(&with), texts(&without));
    assert_eq!(with.len(), 2, "{with:?}");
    for u in &with {
        assert!(
            u.ready_ms >= u.end_ms,
            "ready before the speech ended: {u:?}"
        );
    }
}

/// A person hesitating mid-request ("Front ... Center", alsa-utils' human recordings, with
/// the natural 0.4 s pause and stretched to 0.95 s): Smart Turn hears the falling "Front" as a
/// finished turn, Whisper hears "front" without a full stop; the listener waits for the rest
/// (`unfinished_wait_ms`) and makes one turn of it. With the wait off, the same audio splits.
#[test]
fn a_mid_phrase_pause_in_a_real_recording_stays_one_turn() {
    let mut report = Vec::new();
    for (file, second) in [("Front_Center.wav", "center"), ("Front_Left.wav", "left")] {
        let natural = recorded(file);
        for (label, voice) in [
            ("natural pause", natural.clone()),
            ("0.95 s pause", stretch_pause(&natural, 950)),
        ] {
            let clip = [silence(500), voice, silence(2_500)].concat();
            let u = listen(&clip, ListenerConfig::default());
            let heard: Vec<&str> = u.iter().map(|u| u.transcript.as_str()).collect();
            report.push(format!("{file} ({label}): {heard:?}"));
            assert_eq!(u.len(), 1, "{file} ({label}): one request, heard {u:?}");
            let text = u[0].transcript.to_lowercase();
            assert!(
                text.contains("front") && text.contains(second),
                "{file} ({label}): {text:?}"
            );
        }
    }
    // What the hold is for: Smart Turn alone ends the turn at the pause.
    let clip = [silence(500), recorded("Front_Center.wav"), silence(2_500)].concat();
    let alone = listen(
        &clip,
        ListenerConfig {
            unfinished_wait_ms: 0,
            ..ListenerConfig::default()
        },
    );
    report.push(format!(
        "Front_Center.wav, Smart Turn alone: {:?}",
        alone.iter().map(|u| &u.transcript).collect::<Vec<_>>()
    ));
    eprintln!("{}", report.join("\n"));
    assert_eq!(alone.len(), 2, "{alone:?}");
    assert_eq!(alone[0].commit, CommitReason::TurnComplete);
}

/// A finished request is not held: Whisper closes it, so Smart Turn's verdict stands and the
/// turn is committed at the first pause, as fast as before.
#[test]
fn a_closed_phrase_is_not_held() {
    let clip = [
        silence(500),
        speak("Jarvis, what is two plus two?", "en-us", 160),
        silence(2_500),
    ]
    .concat();
    let u = listen(&clip, ListenerConfig::default());
    assert_eq!(u.len(), 1, "{u:?}");
    assert!(
        matches!(
            u[0].commit,
            CommitReason::TurnComplete | CommitReason::Question
        ),
        "{u:?}"
    );
    assert!(
        u[0].committed_ms - u[0].end_ms < 600,
        "committed {} ms after the speech: {u:?}",
        u[0].committed_ms - u[0].end_ms
    );
}

/// Whisper tiny spells an unusual name as a common word ("Sage" → "page", "age", or drops
/// it); told the room's agents' names, it writes them, and it does not put them where nobody
/// said them.
#[test]
fn whisper_told_the_agents_names_spells_them() {
    let names = ["Jarvis", "Sage"];
    let transcript = |clip: &[f32], names: &[&str]| -> String {
        listen_for(clip, ListenerConfig::default(), names)
            .iter()
            .map(|u| u.transcript.clone())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut plain_heard = 0;
    for (text, voice) in [
        ("Hey Sage, what is two plus two?", "en-gb-x-rp"),
        ("Sage, what is two plus two?", "en-us"),
        ("Okay Sage, what is two plus two?", "en-us+m3"),
        ("Jarvis and Sage, what is two plus two?", "en-gb-x-rp"),
    ] {
        let clip = [silence(300), speak(text, voice, 160), silence(1_500)].concat();
        let plain = transcript(&clip, &[]);
        let hinted = transcript(&clip, &names);
        eprintln!("{voice:>11} {text:?}: plain {plain:?}, told the names {hinted:?}");
        plain_heard += usize::from(plain.to_lowercase().contains("sage"));
        assert!(
            hinted.to_lowercase().contains("sage"),
            "{voice}: {hinted:?}"
        );
    }
    eprintln!("without the names Whisper wrote \"Sage\" {plain_heard} times of 4");
    // No name where none was said: speech, silence and noise.
    let speech = [
        silence(300),
        speak(
            "I think we should book the restaurant for eight tonight.",
            "en-us",
            160,
        ),
        silence(1_500),
    ]
    .concat();
    let heard = transcript(&speech, &names).to_lowercase();
    assert!(heard.contains("restaurant"), "{heard:?}");
    assert!(
        !heard.contains("sage") && !heard.contains("jarvis"),
        "{heard:?}"
    );
    let mut noise = silence(3_000);
    let mut rng = fastrand::Rng::with_seed(7);
    for s in &mut noise {
        *s = (rng.f32() - 0.5) * 0.1;
    }
    assert_eq!(transcript(&noise, &names), "", "noise");
    assert_eq!(transcript(&silence(3_000), &names), "", "silence");
}
