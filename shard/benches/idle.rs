//! The shard's idle cost: `voicebot-shard run` (the real binary, models loaded, as a pod runs
//! it) connected to the Discord simulator with N guilds, the bot in a voice channel of each
//! with one silent user, nobody talking. Prints the process's CPU use (user + system, % of one
//! core, over 20 s) and its resident memory.
//!
//!   cargo bench -p voicebot-shard --bench idle -- [--guilds 1,50] [--secs 20] [--no-speakers]
//!
//! By default each guild's user has been heard once (a listener exists for them);
//! `--no-speakers` leaves the channels silent.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use voicebot_discord_sim::{Guild, SimConfig, SimEvent, Simulator, TlsIdentity, User};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// utime + stime of `pid`, seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start after ") ".
    let rest = &stat[stat.rfind(") ").unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

struct Shard(Child);

impl Drop for Shard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn measure(
    guilds: usize,
    secs: u64,
    cert: &std::path::Path,
    tls: Arc<TlsIdentity>,
    speakers: bool,
) {
    let sim_config = SimConfig {
        tls: Some(tls),
        ..SimConfig::default()
    };
    let sim = Simulator::start(sim_config.clone()).await.unwrap();
    let users: Vec<(u64, u64, User)> = (0..guilds as u64)
        .map(|i| {
            let guild = 1_800_000_000_000_000_000 + (i << 22);
            let user = User::new(1_900_000_000_000_000_000 + i, &format!("user{i}"), false);
            sim.add_guild(Guild::new(guild, &user, (guild + 100, "Lounge"), &[]));
            (guild, guild + 100, user)
        })
        .collect();
    let child = Command::new(env!("CARGO_BIN_EXE_voicebot-shard"))
        .args(["run", "--workers", "2"])
        .env("DISCORD_TOKEN", &sim_config.token)
        .env(
            "DISCORD_APPLICATION_ID",
            sim_config.application_id.to_string(),
        )
        .env("DISCORD_API_PROXY", sim.http_proxy())
        .env("DISCORD_GATEWAY_URL", sim.gateway_url())
        .env("SSL_CERT_FILE", cert)
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("the shard binary");
    let shard = Shard(child);
    let pid = shard.0.id();
    let start = Instant::now();
    loop {
        let registered = sim
            .history()
            .iter()
            .filter(|e| matches!(e, SimEvent::Commands { guild: Some(_), .. }))
            .count();
        if registered >= guilds {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the shard did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (guild, channel, user) in &users {
        sim.user_voice(*guild, user, Some(*channel)).unwrap();
        sim.run_command(*guild, user, "jarvis", json!([{"name": "join", "type": 1}]))
            .unwrap();
    }
    for (guild, _, user) in &users {
        if speakers {
            sim.wait_voice_ready(*guild, user, Duration::from_secs(60))
                .await
                .unwrap();
            continue;
        }
        let connected =
            |e: &SimEvent| matches!(e, SimEvent::VoiceConnect { guild: g, .. } if g == guild);
        let start = Instant::now();
        while !sim.history().iter().any(connected) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "voice did not come up in guild {guild}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let ready = start.elapsed();
    // Settle, then measure.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let cpu = (cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    println!(
        "guilds {guilds:>3} (bot in voice in each{}): idle CPU {cpu:5.1}% of one core, RSS {:6.0} MiB \
         (all connected {:.1} s after start)",
        if speakers {
            ", a user heard in each"
        } else {
            ""
        },
        rss_mib(pid),
        ready.as_secs_f64()
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let guilds: Vec<usize> = arg("--guilds")
        .unwrap_or_else(|| "1,50".into())
        .split(',')
        .filter_map(|g| g.parse().ok())
        .collect();
    let secs = arg("--secs").and_then(|s| s.parse().ok()).unwrap_or(20);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = Arc::new(TlsIdentity::generate().unwrap());
    let cert = std::env::temp_dir().join(format!("voicebot-idle-{}.pem", std::process::id()));
    std::fs::write(&cert, tls.cert_pem()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let speakers = !std::env::args().any(|a| a == "--no-speakers");
    for n in guilds {
        rt.block_on(measure(n, secs, &cert, tls.clone(), speakers));
    }
    let _ = std::fs::remove_file(&cert);
}
