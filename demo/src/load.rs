//! Load: N guilds with M simulated users each, all in voice with the bot, talking over each
//! other for X minutes with generated speech (some lines addressed to the bot, some not),
//! against the same shard, gateway and simulator as the single-user demo. One summary object:
//! utterances offered (all, and those addressed to the bot), turns, replies, drops by reason
//! and in all, stop speaking → first bot RTP packet (p50/p95/max), the process's memory at the
//! start and end of the load, errors.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use voicebot_discord_sim::{Guild, Simulator, User};
use voicebot_shard::audio;
use voicebot_shard::converse::room::RoomEvent;
use voicebot_shard::discord::voice::GuildEvent;
use voicebot_shard::eval::percentile;

/// What the simulated users say (generated with espeak-ng): questions for the bot and chatter.
const LINES: &[&str] = &[
    "Jarvis, what is two plus two?",
    "Jarvis, how far away is the moon?",
    "I think we should order pizza tonight.",
    "Did anyone see the game yesterday?",
    "Jarvis, can you tell me a fun fact?",
    "That was a really long meeting.",
];

/// A line as the simulator's microphone wants it, and where its speech ends, ms.
pub struct Clip {
    pcm48: Vec<f32>,
    speech_end_ms: u64,
    /// The line names the bot (it should be answered).
    addressed: bool,
}

/// The guilds of the load: guild `i` has users `i*M .. i*M+M`.
pub fn guilds(n: usize, m: usize) -> Vec<(u64, u64, Vec<User>)> {
    (0..n as u64)
        .map(|i| {
            let guild = 2_100_000_000_000_000_000 + (i << 22);
            let users = (0..m as u64)
                .map(|j| {
                    let id = 2_200_000_000_000_000_000 + i * 1000 + j;
                    User::new(id, &format!("user{i}-{j}"), false)
                })
                .collect();
            (guild, guild + 100, users)
        })
        .collect()
}

/// Adds the load's guilds to the simulator.
pub fn add_guilds(sim: &Simulator, guilds: &[(u64, u64, Vec<User>)]) {
    for (guild, channel, users) in guilds {
        sim.add_guild(Guild::new(
            *guild,
            &users[0],
            (*channel, "Lounge"),
            &users[1..],
        ));
    }
}

/// Generates the lines with espeak-ng.
pub fn clips() -> anyhow::Result<Vec<Clip>> {
    LINES
        .iter()
        .map(|line| {
            // A file, not --stdout: espeak-ng streams a WAV header without a length.
            let path = std::env::temp_dir().join(format!(
                "voicebot-load-{}-{}.wav",
                std::process::id(),
                fastrand::u64(..)
            ));
            let status = std::process::Command::new("espeak-ng")
                .args(["-v", "en-us", "-s", "165", "-w"])
                .arg(&path)
                .arg(line)
                .status()
                .context("running espeak-ng (scripts/setup.sh installs it)")?;
            anyhow::ensure!(status.success(), "espeak-ng failed");
            let pcm = audio::read_wav(&path);
            let _ = std::fs::remove_file(&path);
            let pcm = pcm?;
            let mut pcm16 = audio::to_pipeline_rate(&pcm)?;
            let speech_end_ms = pcm16.len() as u64 / 16;
            pcm16.extend(std::iter::repeat_n(0.0, 16 * 400));
            Ok(Clip {
                pcm48: voicebot_discord_sim::from_16k(&pcm16),
                speech_end_ms,
                addressed: line.starts_with("Jarvis"),
            })
        })
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// When each user stopped speaking, by (guild, user id).
type SpeechEnds = Arc<Mutex<HashMap<(u64, String), Vec<Instant>>>>;

/// Drives the load for `minutes` and returns the summary.
pub async fn drive(
    sim: &Arc<Simulator>,
    guilds: &[(u64, u64, Vec<User>)],
    clips: Arc<Vec<Clip>>,
    minutes: f64,
    mut events: broadcast::Receiver<GuildEvent>,
) -> Value {
    // Warm-up, not counted: each guild's owner asks once and the answer comes (a new
    // conversation's first turn costs the gateway seconds).
    for (guild, _, users) in guilds {
        let _ = sim.speak(*guild, &users[0], &clips[0].pcm48).await;
    }
    let mut warm = std::collections::HashSet::new();
    let warm_until = Instant::now() + Duration::from_secs(120);
    while warm.len() < guilds.len() && Instant::now() < warm_until {
        if let Ok(Ok(GuildEvent {
            guild,
            event: RoomEvent::Turn(_),
            ..
        })) = tokio::time::timeout(Duration::from_secs(1), events.recv()).await
        {
            warm.insert(guild);
        }
    }
    while events.try_recv().is_ok() {}
    let rss_start = rss_mb();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(minutes * 60.0);
    let ends: SpeechEnds = Arc::default();
    let mut talkers = Vec::new();
    let talker_errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Utterances spoken during the load, and those addressed to the bot.
    let offered = Arc::new([
        std::sync::atomic::AtomicU64::new(0),
        std::sync::atomic::AtomicU64::new(0),
    ]);
    for (guild, _, users) in guilds {
        for user in users {
            let (sim, clips, ends, user, guild) = (
                sim.clone(),
                clips.clone(),
                ends.clone(),
                user.clone(),
                *guild,
            );
            let errors = talker_errors.clone();
            let offered = offered.clone();
            talkers.push(tokio::spawn(async move {
                // Start at different moments, then talk every few seconds: people talk over
                // each other and over the bot.
                tokio::time::sleep(Duration::from_millis(fastrand::u64(0..3000))).await;
                while Instant::now() < deadline {
                    let clip = &clips[fastrand::usize(..clips.len())];
                    match sim.speak(guild, &user, &clip.pcm48).await {
                        Ok(spoken) => {
                            use std::sync::atomic::Ordering::Relaxed;
                            offered[0].fetch_add(1, Relaxed);
                            if clip.addressed {
                                offered[1].fetch_add(1, Relaxed);
                            }
                            let end = spoken.started + Duration::from_millis(clip.speech_end_ms);
                            lock(&ends)
                                .entry((guild, user.id.to_string()))
                                .or_default()
                                .push(end);
                        }
                        Err(_) => {
                            errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(1000..5000))).await;
                }
            }));
        }
    }
    let mut tally = Tally::default();
    let mut forgot = Instant::now();
    // Memory once a minute: growth shows as a rising series, caches as an early plateau.
    let mut rss_by_minute = vec![rss_start.round()];
    let mut next_sample = started + Duration::from_secs(60);
    // Turns still come after the talkers stop: wait for them (up to 30 s).
    let end = deadline + Duration::from_secs(30);
    loop {
        // Once every talker is done, stop when nothing has come for 5 s.
        let quiet = Instant::now() >= deadline && talkers.iter().all(|t| t.is_finished());
        let wait = Duration::from_secs(if quiet { 5 } else { 1 });
        match tokio::time::timeout(wait, events.recv()).await {
            Err(_) if quiet => break,
            Err(_) => {}
            Ok(e) => {
                if !tally.account(e, sim, &ends) {
                    break;
                }
            }
        }
        if Instant::now() > end {
            break;
        }
        if Instant::now() >= next_sample && Instant::now() < deadline {
            rss_by_minute.push(rss_mb().round());
            next_sample += Duration::from_secs(60);
        }
        if forgot.elapsed() > Duration::from_secs(30) {
            sim.forget_bot_audio(Instant::now() - Duration::from_secs(60));
            forgot = Instant::now();
        }
    }
    let speakers: usize = guilds.iter().map(|g| g.2.len()).sum();
    // Calls whose voice was end-to-end encrypted (DAVE), and the bot's frames read as a member.
    let dave: Vec<_> = guilds
        .iter()
        .filter_map(|(g, _, _)| sim.dave(*g).filter(|d| d.version > 0))
        .collect();
    json!({
        "guilds": guilds.len(),
        "speakers": speakers,
        "minutes": minutes,
        "offered": {
            "utterances": offered[0].load(std::sync::atomic::Ordering::Relaxed),
            "addressed": offered[1].load(std::sync::atomic::Ordering::Relaxed),
        },
        "turns": tally.turns,
        "replied": tally.replied,
        "dropped": tally.dropped,
        "dropped_total": tally.dropped.values().sum::<u64>(),
        "latency_ms": {
            "p50": percentile(&tally.latencies, 50.0).map(|v| v.round()),
            "p95": percentile(&tally.latencies, 95.0).map(|v| v.round()),
            "max": tally.latencies.iter().copied().reduce(f64::max).map(|v| v.round()),
            "count": tally.latencies.len(),
        },
        "rss_mb": {"start": rss_start.round(), "end": rss_mb().round(), "by_minute": rss_by_minute},
        "errors": tally.errors + talker_errors.load(std::sync::atomic::Ordering::Relaxed),
        "wall_s": started.elapsed().as_secs(),
        "dave": {
            "guilds": dave.len(),
            "bot_frames_decrypted": dave.iter().map(|d| d.bot_frames_decrypted).sum::<u64>(),
            "bot_frames_refused": dave.iter().map(|d| d.bot_frames_refused).sum::<u64>(),
        },
    })
}

/// What the load produced so far.
#[derive(Default)]
struct Tally {
    turns: u64,
    replied: u64,
    errors: u64,
    dropped: BTreeMap<String, u64>,
    latencies: Vec<f64>,
}

impl Tally {
    /// Counts one room event; `false` when the broadcast closed.
    fn account(
        &mut self,
        event: Result<GuildEvent, broadcast::error::RecvError>,
        sim: &Simulator,
        ends: &SpeechEnds,
    ) -> bool {
        match event {
            Ok(GuildEvent {
                guild,
                event: RoomEvent::Turn(t),
                ..
            }) => {
                self.turns += 1;
                if t.reply.error.is_some() {
                    self.errors += 1;
                }
                if t.reply.reply.is_some() && t.reply.error.is_none() {
                    self.replied += 1;
                }
                // Stop speaking (the speaker's last speech end before the reply audio) → the
                // bot's first RTP packet after the reply audio was queued.
                if let Some(queued) = t.first_audio_at {
                    let end = lock(ends)
                        .get(&(guild, t.speaker.clone()))
                        .and_then(|v| v.iter().rev().find(|e| **e <= queued).copied());
                    if let (Some(end), Some(rtp)) = (end, sim.bot_packet_after(guild, queued)) {
                        self.latencies
                            .push(rtp.saturating_duration_since(end).as_secs_f64() * 1e3);
                    }
                }
                true
            }
            Ok(GuildEvent {
                event: RoomEvent::Dropped { reason, .. },
                ..
            }) => {
                *self.dropped.entry(reason.label().to_string()).or_default() += 1;
                true
            }
            Ok(_) => true,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                *self.dropped.entry("observer_lagged".into()).or_default() += n;
                true
            }
            Err(broadcast::error::RecvError::Closed) => false,
        }
    }
}
