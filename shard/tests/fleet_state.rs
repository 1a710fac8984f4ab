//! Fleet state: the real `voicebot-shard run` binary (`--no-voice`) against the Discord
//! simulator and a real `redis-server` on a free port (with a password, which must never
//! appear in the logs). A killed pod's replacement RESUMEs its gateway session, keeps every
//! guild's settings and rejoins the voice channel; two pods sharing an IDENTIFY bucket are
//! spaced by the interval; a Redis outage loses nothing, not even a change made during it.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::json;
use voicebot_discord_sim::{Guild, SimConfig, SimEvent, Simulator, User};

const GUILD: u64 = 1_400_000_000_000_000_001;
const LOUNGE: u64 = 1_400_000_000_000_000_010;

mod common;

use common::fleet::{PASSWORD, Redis, free_port};
use common::pod::pod_command;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("voicebot-fleet-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A shard pod: the real binary, as the operator starts it.
struct Pod {
    child: Child,
    log: PathBuf,
    metrics_port: u16,
}

impl Pod {
    fn start(sim: &Simulator, redis: &str, name: &str, shards: u32, dir: &std::path::Path) -> Self {
        let log = dir.join(format!("{name}-{}.log", now_ms()));
        let metrics_port = free_port();
        let child = pod_command(
            sim,
            name,
            metrics_port,
            &["--no-voice", "--agents", "jarvis,sage"],
        )
        .env("SHARD_COUNT", shards.to_string())
        .env("SHARDS_PER_POD", "1")
        .env("REDIS_URL", redis)
        .env("VOICEBOT_IDENTIFY_INTERVAL_MS", "1500")
        .env("VOICEBOT_LOG", "debug")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
        Self {
            child,
            log,
            metrics_port,
        }
    }

    /// Waits (15 s: gauges refresh every 5 s) until /metrics has `line`.
    async fn wait_metric(&self, line: &str) {
        let start = Instant::now();
        loop {
            let body = http_get(self.metrics_port, "/metrics");
            if body.lines().any(|l| l == line) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "/metrics never had {line:?}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILL: the pod dies without closing anything.
    fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait: the pod's logs.
    async fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "no stop on SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Runs a command and returns the bot's answer.
async fn command(sim: &Simulator, user: &User, options: serde_json::Value) -> String {
    let id = sim.run_command(GUILD, user, "jarvis", options).unwrap();
    let e = sim
        .wait_for(
            "the command's answer",
            |e| matches!(e, SimEvent::InteractionReply { interaction, .. } if *interaction == id),
        )
        .await
        .unwrap();
    let SimEvent::InteractionReply { content, .. } = e else {
        unreachable!()
    };
    content
}

fn option(name: &str, option: &str, value: &str) -> serde_json::Value {
    json!([{"name": name, "type": 1, "options": [{"name": option, "type": 3, "value": value}]}])
}

fn assert_no_secrets(logs: &str) {
    let config = SimConfig::default();
    assert!(
        !logs.contains(&config.token),
        "the bot token is in the logs"
    );
    assert!(
        !logs.contains(PASSWORD),
        "the Redis password is in the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_pod_is_replaced_by_one_that_resumes_keeps_settings_and_rejoins_voice() {
    let redis = Redis::start();
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let ann = User::new(1_500_000_000_000_000_001, "Ann", false);
    sim.add_guild(Guild::new(GUILD, &ann, (LOUNGE, "Lounge"), &[]));
    let dir = scratch("restart");
    let pod = Pod::start(&sim, &redis.url(), "jarvis-shard-0", 1, &dir);
    sim.wait_for_commands(GUILD).await.unwrap();

    sim.user_voice(GUILD, &ann, Some(LOUNGE)).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let saved = command(&sim, &ann, option("agent", "name", "sage")).await;
    assert_eq!(saved, "sage will answer from now on. Saved.");
    command(&sim, &ann, option("sensitivity", "level", "high")).await;
    // "Saved." comes once Redis has it: it is there when the user reads it.
    assert_eq!(
        redis.hash(&format!("guild:{GUILD}")).await["sensitivity"],
        "high"
    );
    let invited = command(&sim, &ann, option("invite", "name", "jarvis")).await;
    assert!(
        invited.starts_with("jarvis joins sage") && invited.ends_with("Saved."),
        "{invited}"
    );
    let joined = command(&sim, &ann, json!([{"name": "join", "type": 1}])).await;
    assert_eq!(joined, "Joining Lounge — sage and jarvis are listening.");
    // What Redis holds: the guild's settings and channel, who is in voice, the session.
    let guild = redis
        .wait_hash(&format!("guild:{GUILD}"), |h| h.get("channel").is_some())
        .await;
    assert_eq!(guild["agent"], "sage");
    assert_eq!(guild["guests"], "jarvis");
    assert_eq!(guild["sensitivity"], "high");
    assert_eq!(guild["channel"], LOUNGE.to_string());
    let voice = redis
        .wait_hash(&format!("voice:{GUILD}"), |h| {
            h.contains_key(&ann.id.to_string())
        })
        .await;
    assert_eq!(voice[&ann.id.to_string()], LOUNGE.to_string());
    let session = redis
        .wait_hash("shard:1:0:session", |h| h.contains_key("id"))
        .await;
    assert!(session["id"].starts_with("sim-session-"), "{session:?}");

    // The pod is killed; its replacement starts.
    let logs = pod.kill();
    assert_no_secrets(&logs);
    let mark = sim.history().len();
    let pod = Pod::start(&sim, &redis.url(), "jarvis-shard-0", 1, &dir);
    sim.wait_for_since(mark, Duration::from_secs(30), "a RESUME", |e| {
        matches!(e, SimEvent::Resume { session_id, accepted: true, .. } if *session_id == session["id"])
    })
    .await.unwrap();
    sim.wait_for_since(
        mark,
        Duration::from_secs(30),
        "the voice channel joined again",
        |e| {
            *e == SimEvent::VoiceState {
                guild: GUILD,
                channel: Some(LOUNGE),
            }
        },
    )
    .await
    .unwrap();
    assert!(
        !sim.history()[mark..]
            .iter()
            .any(|e| matches!(e, SimEvent::Identify { .. })),
        "the replacement IDENTIFYed instead of resuming: {:#?}",
        &sim.history()[mark..]
    );
    let status = command(&sim, &ann, json!([{"name": "status", "type": 1}])).await;
    assert!(
        status.starts_with("Agents sage and jarvis, sensitivity high, in "),
        "{status}"
    );
    // A clean stop saves the session for the next pod too.
    let logs = pod.stop().await;
    assert_no_secrets(&logs);
    let mark = sim.history().len();
    let pod = Pod::start(&sim, &redis.url(), "jarvis-shard-0", 1, &dir);
    sim.wait_for_since(
        mark,
        Duration::from_secs(30),
        "a RESUME after a clean stop",
        |e| matches!(e, SimEvent::Resume { accepted: true, .. }),
    )
    .await
    .unwrap();
    assert_no_secrets(&pod.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pods_sharing_a_bucket_identify_at_least_the_interval_apart() {
    let redis = Redis::start();
    let sim = Simulator::start(SimConfig {
        shards: 2,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let dir = scratch("bucket");
    // max_concurrency 1: shards 0 and 1 share bucket 0. Both pods start at once.
    let a = Pod::start(&sim, &redis.url(), "jarvis-shard-0", 2, &dir);
    let b = Pod::start(&sim, &redis.url(), "jarvis-shard-1", 2, &dir);
    let start = Instant::now();
    let identifies = loop {
        let ids: Vec<(u32, u64)> = sim
            .history()
            .iter()
            .filter_map(|e| match e {
                SimEvent::Identify { shard, at_ms, .. } => Some((shard[0], *at_ms)),
                _ => None,
            })
            .collect();
        if ids.len() >= 2 {
            break ids;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{ids:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let shards: std::collections::BTreeSet<u32> = identifies.iter().map(|i| i.0).collect();
    assert_eq!(shards.len(), 2, "{identifies:?}");
    let gap = identifies[1].1.abs_diff(identifies[0].1);
    eprintln!("IDENTIFY gap between the two pods: {gap} ms (interval 1500 ms)");
    assert!(gap >= 1500, "IDENTIFYs {gap} ms apart: {identifies:?}");
    assert_no_secrets(&a.stop().await);
    assert_no_secrets(&b.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_loses_nothing_not_even_a_change_made_during_it() {
    let mut redis = Redis::start();
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let ann = User::new(1_500_000_000_000_000_001, "Ann", false);
    sim.add_guild(Guild::new(GUILD, &ann, (LOUNGE, "Lounge"), &[]));
    let dir = scratch("outage");
    let pod = Pod::start(&sim, &redis.url(), "jarvis-shard-0", 1, &dir);
    sim.wait_for_commands(GUILD).await.unwrap();
    sim.user_voice(GUILD, &ann, Some(LOUNGE)).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    command(&sim, &ann, json!([{"name": "join", "type": 1}])).await;
    redis
        .wait_hash(&format!("guild:{GUILD}"), |h| h.get("channel").is_some())
        .await;

    pod.wait_metric("voicebot_redis_up 1").await;
    // Redis dies. The bot keeps answering; a change made now is kept.
    redis.kill();
    let changed = command(&sim, &ann, option("agent", "name", "sage")).await;
    assert!(
        changed.starts_with("sage will answer from now on. Not saved yet:"),
        "{changed}"
    );
    command(&sim, &ann, option("sensitivity", "level", "medium")).await;
    let status = command(&sim, &ann, json!([{"name": "status", "type": 1}])).await;
    assert!(
        status.starts_with("Agent sage, sensitivity medium, in Lounge"),
        "{status}"
    );
    pod.wait_metric("voicebot_redis_up 0").await;

    // Redis comes back empty: the pod writes back everything it holds.
    redis.restart();
    let back = Instant::now();
    let guild = redis
        .wait_hash(&format!("guild:{GUILD}"), |h| {
            h.get("agent").is_some_and(|a| a == "sage")
        })
        .await;
    assert_eq!(guild["sensitivity"], "medium");
    assert_eq!(guild["channel"], LOUNGE.to_string());
    redis
        .wait_hash(&format!("voice:{GUILD}"), |h| !h.is_empty())
        .await;
    redis
        .wait_hash("shard:1:0:session", |h| h.contains_key("id"))
        .await;
    eprintln!(
        "Redis back (empty) → the pod's whole state written back within {} ms",
        back.elapsed().as_millis()
    );
    pod.wait_metric("voicebot_redis_up 1").await;
    let logs = pod.kill();
    assert!(logs.contains("Redis is unreachable"), "{logs}");
    assert!(logs.contains("Redis answers again"), "{logs}");
    assert_no_secrets(&logs);

    // And a new pod finds it all.
    let mark = sim.history().len();
    let pod = Pod::start(&sim, &redis.url(), "jarvis-shard-0", 1, &dir);
    sim.wait_for_since(mark, Duration::from_secs(30), "a RESUME", |e| {
        matches!(e, SimEvent::Resume { accepted: true, .. })
    })
    .await
    .unwrap();
    let status = command(&sim, &ann, json!([{"name": "status", "type": 1}])).await;
    assert!(
        status.starts_with("Agent sage, sensitivity medium, in "),
        "{status}"
    );
    assert_no_secrets(&pod.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_started_while_redis_is_down_serves_and_writes_back_later() {
    let mut redis = Redis::start();
    redis.kill();
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let ann = User::new(1_500_000_000_000_000_001, "Ann", false);
    sim.add_guild(Guild::new(GUILD, &ann, (LOUNGE, "Lounge"), &[]));
    let dir = scratch("down");
    let pod = Pod::start(&sim, &redis.url(), "jarvis-shard-0", 1, &dir);
    sim.wait_for_commands(GUILD).await.unwrap();
    let changed = command(&sim, &ann, option("agent", "name", "sage")).await;
    assert!(
        changed.starts_with("sage will answer from now on. Not saved yet:"),
        "{changed}"
    );
    redis.restart();
    redis
        .wait_hash(&format!("guild:{GUILD}"), |h| {
            h.get("agent").is_some_and(|a| a == "sage")
        })
        .await;
    let logs = pod.stop().await;
    assert!(logs.contains("fleet state not loaded"), "{logs}");
    assert_no_secrets(&logs);
}

/// A Redis that hangs while a pod starts (SIGSTOP: connections open, no answer) must not
/// make the pod overwrite what Redis holds with its defaults. The pod serves degraded; a
/// change made meanwhile says it is not saved yet; when Redis answers, the stored settings
/// are read and merged (the new change wins, the rest is kept), written, and the bot goes
/// back to the voice channel it was in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_started_while_redis_hangs_keeps_what_redis_holds() {
    let redis = Redis::start();
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let ann = User::new(1_500_000_000_000_000_001, "Ann", false);
    sim.add_guild(Guild::new(GUILD, &ann, (LOUNGE, "Lounge"), &[]));
    let dir = scratch("hang");
    let pod = Pod::start(&sim, &redis.url(), "jarvis-shard-0", 1, &dir);
    sim.wait_for_commands(GUILD).await.unwrap();
    sim.user_voice(GUILD, &ann, Some(LOUNGE)).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    command(&sim, &ann, option("agent", "name", "sage")).await;
    command(&sim, &ann, option("sensitivity", "level", "high")).await;
    command(&sim, &ann, json!([{"name": "join", "type": 1}])).await;
    redis
        .wait_hash(&format!("guild:{GUILD}"), |h| h.get("channel").is_some())
        .await;
    assert_no_secrets(&pod.kill());

    // Redis hangs; the replacement pod starts and serves.
    redis.pause();
    let mark = sim.history().len();
    let pod = Pod::start(&sim, &redis.url(), "jarvis-shard-0", 1, &dir);
    sim.wait_for_since(mark, Duration::from_secs(30), "the new session", |e| {
        matches!(e, SimEvent::Identify { .. })
    })
    .await
    .unwrap();
    sim.wait_for_commands(GUILD).await.unwrap();
    let changed = command(&sim, &ann, option("sensitivity", "level", "medium")).await;
    assert!(
        changed.starts_with("Sensitivity is now medium") && changed.contains("Not saved yet"),
        "{changed}"
    );

    // Redis answers again: nothing it held was overwritten; the change made meanwhile is in.
    let mark = sim.history().len();
    redis.resume();
    let guild = redis
        .wait_hash(&format!("guild:{GUILD}"), |h| {
            h.get("sensitivity").is_some_and(|s| s == "medium")
        })
        .await;
    assert_eq!(guild["agent"], "sage", "the stored agent was overwritten");
    assert_eq!(guild["channel"], LOUNGE.to_string());
    sim.wait_for_since(
        mark,
        Duration::from_secs(30),
        "the voice channel joined again",
        |e| {
            *e == SimEvent::VoiceState {
                guild: GUILD,
                channel: Some(LOUNGE),
            }
        },
    )
    .await
    .unwrap();
    let status = command(&sim, &ann, json!([{"name": "status", "type": 1}])).await;
    assert!(
        status.starts_with("Agent sage, sensitivity medium, in Lounge"),
        "{status}"
    );
    let again = command(&sim, &ann, option("sensitivity", "level", "medium")).await;
    assert!(again.ends_with("Saved."), "{again}");
    let logs = pod.stop().await;
    assert!(logs.contains("fleet state not loaded"), "{logs}");
    assert!(
        logs.contains("stored settings are read and merged"),
        "{logs}"
    );
    assert_no_secrets(&logs);
}

/// Removed from a guild, the bot forgets it: its settings and voice states leave Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guild_the_bot_is_removed_from_is_pruned() {
    let redis = Redis::start();
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let ann = User::new(1_500_000_000_000_000_001, "Ann", false);
    sim.add_guild(Guild::new(GUILD, &ann, (LOUNGE, "Lounge"), &[]));
    let dir = scratch("pruned");
    let pod = Pod::start(&sim, &redis.url(), "jarvis-shard-0", 1, &dir);
    sim.wait_for_commands(GUILD).await.unwrap();
    sim.user_voice(GUILD, &ann, Some(LOUNGE)).unwrap();
    command(&sim, &ann, option("agent", "name", "sage")).await;
    redis
        .wait_hash(&format!("voice:{GUILD}"), |h| !h.is_empty())
        .await;
    redis
        .wait_hash(&format!("guild:{GUILD}"), |h| h.contains_key("agent"))
        .await;
    sim.remove_guild(GUILD).unwrap();
    redis
        .wait_hash(&format!("guild:{GUILD}"), |h| h.is_empty())
        .await;
    redis
        .wait_hash(&format!("voice:{GUILD}"), |h| h.is_empty())
        .await;
    let logs = pod.stop().await;
    assert!(logs.contains("removed from the guild"), "{logs}");
    assert_no_secrets(&logs);
}

/// Redis is shared infrastructure, not trusted with the bot token: a resume URL someone
/// planted there is not followed. The replacement pod resumes the same session through the
/// gateway it was configured with, the planted host sees no connection at all, and the log
/// says why (naming the host, not the token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_url_planted_in_redis_is_not_followed() {
    let redis = Redis::start();
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let ann = User::new(1_500_000_000_000_000_001, "Ann", false);
    sim.add_guild(Guild::new(GUILD, &ann, (LOUNGE, "Lounge"), &[]));
    let dir = scratch("planted");
    let pod = Pod::start(&sim, &redis.url(), "jarvis-shard-0", 1, &dir);
    sim.wait_for_commands(GUILD).await.unwrap();
    let session = redis
        .wait_hash("shard:1:0:session", |h| h.contains_key("resume_url"))
        .await;
    assert_no_secrets(&pod.kill());

    // The attacker's host: counts every connection it gets.
    let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let trap_addr = trap.local_addr().unwrap();
    trap.set_nonblocking(true).unwrap();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        loop {
            match trap.accept() {
                Ok(_) => {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let planted = format!("ws://{trap_addr}");
    let _: () = redis::cmd("HSET")
        .arg(format!("{}shard:1:0:session", common::fleet::PREFIX))
        .arg("resume_url")
        .arg(&planted)
        .query_async(&mut conn)
        .await
        .unwrap();

    let mark = sim.history().len();
    let pod = Pod::start(&sim, &redis.url(), "jarvis-shard-0", 1, &dir);
    sim.wait_for_since(mark, Duration::from_secs(30), "a RESUME through the simulator", |e| {
        matches!(e, SimEvent::Resume { session_id, accepted: true, .. } if *session_id == session["id"])
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let logs = pod.stop().await;
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the bot connected to the planted host: {logs}"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("ignoring the saved resume URL")
                && l.contains(&trap_addr.to_string())),
        "the log does not say why: {logs}"
    );
    assert_no_secrets(&logs);
    // The session saved again no longer points at the planted host.
    let saved = redis
        .wait_hash("shard:1:0:session", |h| h.contains_key("id"))
        .await;
    assert_ne!(saved.get("resume_url"), Some(&planted), "{saved:?}");
}

/// The fleet's OpenClaw device is sealed in Redis with the state key: Redis holds neither
/// the seed nor the token in clear, another key cannot open them (nor plant its own), and an
/// unsealed identity an older pod left is sealed in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_identity_is_sealed_at_rest() {
    use base64::Engine as _;
    use voicebot_shard::secret::Secret;
    use voicebot_shard::state::{FleetState, StateConfig, StateError};
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let redis = Redis::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let reader = conn.clone();
    let raw = |key: &'static str| {
        let mut conn = reader.clone();
        async move {
            let v: Option<String> = redis::cmd("GET")
                .arg(format!("{}{key}", common::fleet::PREFIX))
                .query_async(&mut conn)
                .await
                .unwrap();
            v.unwrap_or_default()
        }
    };
    let state = |key: Option<&str>| {
        FleetState::connect(&StateConfig {
            url: Secret::new(redis.url()),
            prefix: common::fleet::PREFIX.into(),
            seal_key: key.map(Secret::new),
            ca: None,
        })
        .unwrap()
    };

    let seed = [7u8; 32];
    let pod = state(Some("state-key-1"));
    let device = pod.device(&seed).await.unwrap().unwrap();
    assert_eq!(device.seed, seed);
    assert!(device.token.is_none());
    pod.save_device_token(&Secret::new("the-device-token"));
    assert!(pod.flush(Duration::from_secs(3)).await);
    let stored = raw("openclaw:device").await;
    let token = raw("openclaw:device-token").await;
    assert!(stored.starts_with("sealed:v1:"), "{stored}");
    assert!(token.starts_with("sealed:v1:"), "{token}");
    assert!(!stored.contains(&b64(&seed)) && !token.contains("the-device-token"));

    // Another pod with the key gets the same identity and token back; a fresh seed is ignored.
    let again = state(Some("state-key-1"))
        .device(&[9u8; 32])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.seed, seed);
    assert_eq!(again.token.unwrap().expose(), "the-device-token");
    // Another key, or none: a clear error, never another identity.
    for key in [Some("state-key-2"), None] {
        let err = state(key).device(&[9u8; 32]).await.unwrap_err();
        assert!(matches!(err, StateError::Sealed(_)), "{err}");
        assert!(err.to_string().contains("openclaw:device"), "{err}");
    }

    // An identity an older pod stored unsealed is sealed in place by the first pod with a key.
    let _: () = redis::cmd("SET")
        .arg(format!("{}openclaw:device", common::fleet::PREFIX))
        .arg(b64(&[5u8; 32]))
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{}openclaw:device-token", common::fleet::PREFIX))
        .arg("old-token")
        .query_async(&mut conn)
        .await
        .unwrap();
    let pod = state(Some("state-key-1"));
    let migrated = pod.device(&seed).await.unwrap().unwrap();
    assert_eq!(migrated.seed, [5u8; 32]);
    assert_eq!(migrated.token.unwrap().expose(), "old-token");
    assert!(pod.flush(Duration::from_secs(3)).await);
    assert!(raw("openclaw:device").await.starts_with("sealed:v1:"));
    assert!(raw("openclaw:device-token").await.starts_with("sealed:v1:"));
}

/// Redis over TLS (`rediss://` with `redis.caSecret`): the fleet state writes and reads
/// through a real TLS redis-server whose certificate is checked against the CA; a CA that did
/// not sign it is refused (degraded: nothing is written, nothing is acknowledged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_state_speaks_tls_to_redis_and_checks_its_certificate() {
    use voicebot_shard::secret::Secret;
    use voicebot_shard::state::{FleetState, GuildSettings, Health, Sensitivity, StateConfig};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = scratch("tls");
    let run = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl {args:?}");
    };
    for ca in ["ca", "other-ca"] {
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={ca}"),
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.crt"),
        ]);
    }
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=redis",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    ]);
    let port = free_port();
    let mut server = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            "server.crt",
            "--tls-key-file",
            "server.key",
            "--tls-ca-cert-file",
            "ca.crt",
            "--tls-auth-clients",
            "no",
            "--requirepass",
            PASSWORD,
            "--save",
            "",
        ])
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server");
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let url = format!("rediss://:{PASSWORD}@127.0.0.1:{port}");
    let state = |ca: &str| {
        FleetState::connect(&StateConfig {
            url: Secret::new(url.clone()),
            prefix: common::fleet::PREFIX.into(),
            seal_key: None,
            ca: Some(std::fs::read(dir.join(ca)).unwrap()),
        })
        .unwrap()
    };
    let settings = |agent: &str| GuildSettings {
        agent: agent.into(),
        guests: vec![],
        sensitivity: Sensitivity::High,
        channel: None,
    };

    let trusted = state("ca.crt");
    trusted.save_guild(1, &settings("sage"));
    assert!(
        trusted.guild_written(1, Duration::from_secs(10)).await,
        "written over TLS"
    );
    let snapshot = trusted.load(&[0], 1).await.unwrap();
    assert_eq!(snapshot.guilds[&1].agent, "sage");

    let fooled = state("other-ca.crt");
    fooled.save_guild(2, &settings("jarvis"));
    assert!(
        !fooled.guild_written(2, Duration::from_secs(3)).await,
        "a server the CA did not sign is not written to"
    );
    assert_eq!(fooled.health(), Health::Degraded);
    let snapshot = trusted.load(&[0], 1).await.unwrap();
    assert!(!snapshot.guilds.contains_key(&2), "{:?}", snapshot.guilds);
    let _ = server.kill();
    let _ = server.wait();
}
