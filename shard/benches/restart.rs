//! Pod kill → voice back: `voicebot-shard run` (the real binary, models loaded) with its
//! fleet state in a real redis-server, in voice with a user in each of N guilds of the Discord
//! simulator; the pod is killed (SIGKILL, or SIGTERM with `--term`) and a replacement started
//! at once, K times. Prints, per restart and as p50/max: kill → RESUMED, kill → the voice
//! connection of every guild identified again, kill → every guild's voice carries audio.
//! Without `--redis-less` a replacement RESUMEs; with it (the pod has no fleet state) it
//! IDENTIFYs and never rejoins: that is what the fleet state buys.
//!
//!   cargo bench --profile dev -p voicebot-shard --bench restart -- [--kills 5] [--guilds 1] [--term]
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/common/fleet.rs"]
mod fleet;
#[path = "../tests/common/pod.rs"]
mod pod;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use voicebot_discord_sim::{Guild, SimConfig, SimEvent, Simulator, TlsIdentity, User};
use voicebot_shard::eval::percentile;

use fleet::{Redis, free_port};
use pod::pod_command;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

struct Pod(Child);

impl Pod {
    fn start(sim: &Simulator, redis: Option<&Redis>, cert: &Path) -> Self {
        let log = cert.with_file_name(format!("pod-{}.log", fleet::free_port()));
        let mut cmd = pod_command(sim, "jarvis-shard-0", free_port(), &["--workers", "1"]);
        cmd.env("SSL_CERT_FILE", cert)
            .env("VOICEBOT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap());
        if let Some(r) = redis {
            cmd.env("REDIS_URL", r.url());
        }
        Self(cmd.spawn().unwrap())
    }

    fn stop(mut self, term: bool) {
        if term {
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
        } else {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_after(
    sim: &Simulator,
    after: usize,
    within: Duration,
    pred: impl Fn(&[SimEvent]) -> bool,
) -> Option<Instant> {
    let start = Instant::now();
    loop {
        if pred(&sim.history()[after..]) {
            return Some(Instant::now());
        }
        if start.elapsed() > within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "never".into(), |d| format!("{} ms", d.as_millis()))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let kills: usize = arg("--kills").and_then(|v| v.parse().ok()).unwrap_or(5);
    let guilds: u64 = arg("--guilds").and_then(|v| v.parse().ok()).unwrap_or(1);
    let term = flag("--term");
    let with_redis = !flag("--redis-less");
    let tls = Arc::new(TlsIdentity::generate().unwrap());
    let dir = std::env::temp_dir().join(format!("voicebot-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("sim-ca.pem");
    std::fs::write(&cert, tls.cert_pem()).unwrap();
    let redis = with_redis.then(Redis::start);
    let sim = Simulator::start(SimConfig {
        tls: Some(tls),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let users: Vec<(u64, User)> = (0..guilds)
        .map(|i| {
            let guild = 1_800_000_000_000_000_000 + (i << 22);
            let user = User::new(1_900_000_000_000_000_000 + i, &format!("user{i}"), false);
            sim.add_guild(Guild::new(guild, &user, (guild + 100, "Lounge"), &[]));
            (guild, user)
        })
        .collect();
    let mut pod = Pod::start(&sim, redis.as_ref(), &cert);
    for (guild, user) in &users {
        wait_after(&sim, 0, Duration::from_secs(120), |h| {
            h.iter()
                .any(|e| matches!(e, SimEvent::Commands { guild: Some(g), .. } if g == guild))
        })
        .await
        .expect("the pod never registered its commands");
        sim.user_voice(*guild, user, Some(guild + 100)).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        sim.run_command(*guild, user, "jarvis", json!([{"name": "join", "type": 1}]))
            .unwrap();
        sim.wait_voice_ready(*guild, user, Duration::from_secs(30))
            .await
            .unwrap();
    }
    println!(
        "{} restarts ({}), {guilds} guild(s) in voice, fleet state {}",
        kills,
        if term { "SIGTERM" } else { "SIGKILL" },
        if with_redis { "in Redis" } else { "absent" }
    );
    let (mut resumed, mut connected, mut ready) = (Vec::new(), Vec::new(), Vec::new());
    for k in 1..=kills {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mark = sim.history().len();
        let killed = Instant::now();
        pod.stop(term);
        pod = Pod::start(&sim, redis.as_ref(), &cert);
        let within = Duration::from_secs(30);
        let r = wait_after(&sim, mark, within, |h| {
            h.iter().any(|e| {
                matches!(
                    e,
                    SimEvent::Resume { accepted: true, .. } | SimEvent::Identify { .. }
                )
            })
        })
        .await;
        let c = wait_after(&sim, mark, within, |h| {
            users.iter().all(|(g, _)| {
                h.iter()
                    .any(|e| matches!(e, SimEvent::VoiceConnect { guild, .. } if guild == g))
            })
        })
        .await;
        let mut all_ready = c.is_some();
        for (guild, user) in &users {
            all_ready &= sim
                .wait_voice_ready(*guild, user, Duration::from_secs(10))
                .await
                .is_ok();
        }
        let v = all_ready.then(Instant::now);
        let since = |t: Option<Instant>| t.map(|t| t.duration_since(killed));
        let identified = sim.history()[mark..]
            .iter()
            .any(|e| matches!(e, SimEvent::Identify { .. }));
        println!(
            "  restart {k}: {} {}, voice identified {}, voice carries audio {}",
            if identified { "IDENTIFY" } else { "RESUMED" },
            ms(since(r)),
            ms(since(c)),
            ms(since(v))
        );
        for (list, t) in [(&mut resumed, r), (&mut connected, c), (&mut ready, v)] {
            if let Some(d) = since(t) {
                list.push(d.as_secs_f64() * 1e3);
            }
        }
    }
    for (what, list) in [
        ("kill → gateway session back", &resumed),
        ("kill → voice connections identified", &connected),
        ("kill → voice carries audio", &ready),
    ] {
        println!(
            "{what}: p50 {:.0} ms, max {:.0} ms ({} of {kills})",
            percentile(list, 50.0).unwrap_or(f64::NAN),
            list.iter().copied().fold(f64::NAN, f64::max),
            list.len()
        );
    }
    println!("pod logs: {}", dir.display());
}
