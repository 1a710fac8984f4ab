//! A voice channel at run time, with the real models, the real gateway and Piper: several
//! speakers, barge-in, the bounded turn queue, and a monologue longer than the maximum turn.
//! Speech is fed faster than real time; the bot's voice is played out in real time (a frame
//! every 20 ms), as the voice connection would.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
#[path = "../../demo/src/local_gateway.rs"]
mod gateway;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{silence, speak};
use tokio::sync::broadcast;
use voicebot_shard::converse::engine::Conversation;
use voicebot_shard::converse::names::{CommonWords, NameMatcher};
use voicebot_shard::converse::relevance::{Relevance, RelevanceConfig, Sensitivity};
use voicebot_shard::converse::room::{
    DropReason, Room, RoomConfig, RoomEvent, SpeakerState, TurnRecord,
};
use voicebot_shard::listen::CommitReason;
use voicebot_shard::openclaw::device::MemoryStore;
use voicebot_shard::openclaw::{GatewayClient, session_key};

/// The tests share one pod's engine pool (two workers), and the queue test saturates it on
/// purpose: run concurrently, another test's turn would be dropped as `overloaded` — right for
/// a pod, wrong for that test. So the tests that speak take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn room(config: RoomConfig, humans: usize, gateway: bool) -> Arc<Room> {
    let (pool, vads, voice) = common::engines();
    let id = format!("room-{}", fastrand::u64(..));
    let relevance = Relevance::new(
        "jarvis",
        NameMatcher::new(&["Jarvis"], CommonWords::built_in()),
        RelevanceConfig::default(),
    );
    let mut conversation = Conversation::new(
        "Jarvis",
        session_key("jarvis", "test", &id),
        relevance,
        Sensitivity::Low,
    );
    if gateway {
        conversation = conversation
            .with_gateway(gateway_client().await, None)
            .with_voice(voice.clone());
    }
    conversation.humans_present = humans;
    played_out(Room::start(
        config,
        conversation,
        pool.clone(),
        vads.clone(),
    ))
}

/// A client of the shared real gateway, connected.
async fn gateway_client() -> GatewayClient {
    let gw = gateway::shared_gateway();
    let client = GatewayClient::start(gw.client_config(), Arc::new(MemoryStore::new().unwrap()));
    client
        .wait_connected(Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", gw.log_tail()));
    client
}

/// The room with a voice connection pulling a frame every 20 ms, as songbird's mixer does.
fn played_out(room: Room) -> Arc<Room> {
    let room = Arc::new(room);
    let player = Arc::downgrade(&room);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tick.tick().await;
            let Some(room) = player.upgrade() else { return };
            room.next_frame();
        }
    });
    room
}

async fn say(room: &Room, speaker: &str, text: &str, voice: &str) {
    // Then 3 s of silence, as the voice connection sends for a speaker who went quiet: under
    // load Smart Turn may find no engine free and the turn then ends by its maximum wait,
    // which needs the audio to go on (1.2 s of trailing silence left such turns unfinished).
    let clip = [silence(200), speak(text, voice, 160), silence(3_000)].concat();
    for frame in clip.chunks(320) {
        room.feed(speaker, frame).await.unwrap();
    }
}

async fn wait_for<T>(
    events: &mut broadcast::Receiver<RoomEvent>,
    what: &str,
    mut pick: impl FnMut(&RoomEvent) -> Option<T>,
) -> T {
    let found = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let Some(t) = pick(&e) {
                        return t;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => panic!("events ended: {e}"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn wait_state(room: &Room, speaker: &str, state: SpeakerState) {
    let start = Instant::now();
    while room.speaker_state(speaker) != Some(state) {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{speaker} never became {state:?} (is {:?})",
            room.speaker_state(speaker)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn turn_of(speaker: &str) -> impl FnMut(&RoomEvent) -> Option<TurnRecord> + '_ {
    move |e| match e {
        RoomEvent::Turn(t) if t.speaker == speaker => Some((**t).clone()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_human_who_starts_talking_stops_the_bot_and_the_run_is_aborted() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let room = room(RoomConfig::default(), 2, true).await;
    let mut events = room.subscribe();
    say(&room, "ann", "Jarvis, tell me a story.", "en-us").await;
    wait_state(&room, "ann", SpeakerState::Speaking).await;
    // A second or so of the story is heard; then Bob talks over it.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    say(&room, "bob", "Hold on, I have a question.", "en-gb").await;

    let who = wait_for(&mut events, "the barge-in", |e| match e {
        RoomEvent::BargeIn { speaker, .. } => Some(speaker.clone()),
        _ => None,
    })
    .await;
    assert_eq!(who, "bob");
    let ann = wait_for(&mut events, "Ann's turn", turn_of("ann")).await;
    assert!(ann.reply.addressed, "{ann:?}");
    assert!(ann.barged_in && ann.gateway_aborted, "{ann:?}");
    // What was heard is the start of the story, cut off: not the whole reply.
    let heard: Vec<&str> = ann.heard.split_whitespace().collect();
    assert!(
        !heard.is_empty() && heard.len() < 40,
        "heard {:?} of {:?}",
        ann.heard,
        ann.reply.reply
    );
    assert!(ann.heard.starts_with("word0"), "{:?}", ann.heard);
    assert!(
        room.next_frame().is_none(),
        "the bot is silent after the barge-in"
    );
    // Bob did not say the name and the bot had not answered him: his turn is heard, not
    // answered, and everyone is listening again.
    let bob = wait_for(&mut events, "Bob's turn", turn_of("bob")).await;
    assert!(!bob.reply.addressed, "{bob:?}");
    wait_state(&room, "ann", SpeakerState::Listening).await;
    wait_state(&room, "bob", SpeakerState::Listening).await;
    let stats = room.stats();
    assert_eq!(
        stats.barge_ins.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_beyond_the_queue_are_dropped_and_counted_and_nobody_is_stuck() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let config = RoomConfig {
        max_pending: 1,
        max_turn_age: Duration::from_secs(2),
        barge_in: false,
        ..RoomConfig::default()
    };
    let room = room(config, 5, true).await;
    let mut events = room.subscribe();
    say(&room, "ann", "Jarvis, tell me a story.", "en-us").await;
    wait_state(&room, "ann", SpeakerState::Speaking).await;
    // While the story plays (about fifteen seconds), four more people ask.
    let others = ["carl", "dana", "erin", "fred"];
    for (who, voice) in others
        .iter()
        .zip(["en-gb", "en-us+f3", "en-us+m3", "en-gb-x-rp"])
    {
        say(&room, who, "Jarvis, what time is it?", voice).await;
    }
    // One waits in the queue (and goes stale behind the long story); three find it full.
    let mut reasons = Vec::new();
    let mut ann = None;
    while reasons.len() < 4 || ann.is_none() {
        let e = wait_for(&mut events, "the drops and Ann's turn", |e| match e {
            RoomEvent::Dropped { reason, .. } => Some(Err(*reason)),
            RoomEvent::Turn(t) if t.speaker == "ann" => Some(Ok((**t).clone())),
            _ => None,
        })
        .await;
        match e {
            Ok(t) => ann = Some(t),
            Err(reason) => reasons.push(reason),
        }
    }
    reasons.sort_by_key(|r| r.label());
    assert_eq!(
        reasons,
        [
            DropReason::QueueFull,
            DropReason::QueueFull,
            DropReason::QueueFull,
            DropReason::Stale
        ]
    );
    let ann = ann.unwrap();
    assert!(!ann.barged_in && ann.reply.reply.is_some(), "{ann:?}");
    // Nobody is left thinking.
    for who in others.iter().chain(&["ann"]) {
        wait_state(&room, who, SpeakerState::Listening).await;
    }
    let dropped = room.stats().dropped();
    assert_eq!(dropped.get("queue_full"), Some(&3), "{dropped:?}");
    assert_eq!(dropped.get("stale"), Some(&1), "{dropped:?}");
    let turns = room
        .stats()
        .turns
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(turns, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monologue_longer_than_the_maximum_turn_is_cut_into_bounded_turns() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let config = RoomConfig::default();
    let room = room(config, 1, false).await;
    let mut events = room.subscribe();
    // Voiced speech joined with 60 ms gaps: no pause that could end the turn.
    let sentence = speak(
        "and this story goes on and on without any pause",
        "en-us",
        170,
    );
    let (a, b) = common::speech_bounds_ms(&sentence);
    let voiced = &sentence[(a * 16) as usize..(b * 16) as usize];
    let mut clip = silence(300);
    while clip.len() < 16_000 * 40 {
        clip.extend_from_slice(voiced);
        clip.extend(silence(60));
    }
    clip.extend(silence(2_500));
    for frame in clip.chunks(320) {
        room.feed("ann", frame).await.unwrap();
    }
    let mut heard = Vec::new();
    while heard.len() < 2 {
        let u = wait_for(&mut events, "a turn", |e| match e {
            RoomEvent::Heard { utterance, .. } => Some(utterance.clone()),
            _ => None,
        })
        .await;
        heard.push(u);
    }
    assert_eq!(heard[0].commit, CommitReason::MaxLength, "{heard:?}");
    for u in &heard {
        assert!(
            u.end_ms - u.start_ms <= u64::from(config.listener.max_turn_ms) + 100,
            "{u:?}"
        );
    }
    // Alone in the channel, every turn is for the bot (no gateway here: relevance only).
    let t = wait_for(&mut events, "the first turn", turn_of("ann")).await;
    assert!(t.reply.addressed, "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_refuses_more_speakers_than_it_listens_to() {
    let config = RoomConfig {
        max_speakers: 2,
        ..RoomConfig::default()
    };
    let room = room(config, 3, false).await;
    let frame = silence(20);
    room.push("a", &frame).unwrap();
    room.push("b", &frame).unwrap();
    assert_eq!(room.push("c", &frame), Err(DropReason::TooManySpeakers));
    room.leave("a");
    tokio::time::sleep(Duration::from_millis(100)).await;
    room.push("c", &frame).unwrap();
    assert_eq!(room.speaker_state("a"), None);
    assert_eq!(room.speaker_state("c"), Some(SpeakerState::Listening));
}

/// Two agents in one room (issue 20's room half): a turn goes to the agent it names, a turn
/// without a name to the agent whose follow-up window is open, a turn naming both to both in
/// the order named; each agent answers in its own session, and the second one's context has
/// what the first one said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_agents_answer_by_name_by_follow_up_and_in_turn() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (pool, vads, piper) = common::engines();
    let client = gateway_client().await;
    let id = format!("cast-{}", fastrand::u64(..));
    let agent = |name: &str, display: &str, voice: voicebot_shard::speak::tts::Voice| {
        let relevance = Relevance::new(
            name,
            NameMatcher::new(&[display], CommonWords::built_in()),
            RelevanceConfig::default(),
        );
        let mut c = Conversation::new(
            display,
            session_key(name, "test", &id),
            relevance,
            Sensitivity::Low,
        )
        .with_gateway(client.clone(), None)
        .with_voice(voice);
        c.humans_present = 2;
        c
    };
    let espeak = voicebot_shard::speak::tts::Voice::Espeak {
        voice: "en-us+f3".into(),
        rate: voicebot_shard::speak::espeak::check_voice("en-us+f3").unwrap(),
    };
    let room = played_out(Room::start_cast(
        RoomConfig::default(),
        vec![
            agent("jarvis", "Jarvis", piper.clone()),
            agent("sage", "Sage", espeak),
        ],
        pool.clone(),
        vads.clone(),
    ));
    let mut events = room.subscribe();
    // espeak-ng's en-us "Sage" is "Page" or "Age" to Whisper tiny; the RP voice's is "Sage".
    let mut ask = async |text: &str, voice: &str, answers: usize| {
        say(&room, "ann", text, voice).await;
        let mut turns = Vec::new();
        for _ in 0..answers {
            turns.push(wait_for(&mut events, text, turn_of("ann")).await);
        }
        wait_state(&room, "ann", SpeakerState::Listening).await;
        turns
            .into_iter()
            .map(|t| {
                assert!(
                    t.reply.reply.is_some(),
                    "{text:?} heard as {:?}: {t:?}",
                    t.utterance.transcript
                );
                (t.agent.clone(), t.reply.reason.label().to_string())
            })
            .collect::<Vec<_>>()
    };
    let jarvis = ask("Jarvis, what is two plus two?", "en-us", 1).await;
    assert_eq!(jarvis, [("Jarvis".to_string(), "name".to_string())]);
    let sage = ask("Hey Sage, what is two plus two?", "en-gb-x-rp", 1).await;
    assert_eq!(sage, [("Sage".to_string(), "name".to_string())]);
    let follow = ask("And what is three plus three?", "en-us", 1).await;
    assert_eq!(follow, [("Sage".to_string(), "follow_up".to_string())]);
    let both = ask("Jarvis and Sage, what is two plus two?", "en-us", 2).await;
    let order: Vec<&str> = both.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(order, ["Jarvis", "Sage"]);
    // Sage's request, the last, carries what Jarvis had just said.
    let last = gateway::conversations().last().cloned().unwrap_or_default();
    assert!(
        last.contains("Jarvis: Two plus two is four."),
        "sage's context lacks jarvis's answer: {last}"
    );
}
