//! Discord's gateway close codes, each class against the real twilight shard and the
//! simulator: a resumable close (4000) is RESUMEd; a close that ends the session (4009 session
//! timed out, 4007 invalid sequence) is followed by a new IDENTIFY; a fatal close (4004 bad
//! token, 4014 disallowed intents) stops the shard for good with a clear reason — `run` returns
//! it as an error and the `voicebot-shard run` process exits non-zero saying it.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use tokio::sync::watch;
use voicebot_discord_sim::{Guild, SimConfig, SimEvent, Simulator, User};
use voicebot_shard::discord::gateway::{DiscordConfig, run};
use voicebot_shard::secret::Secret;

const GUILD: u64 = 1_400_000_000_000_000_001;
const LOUNGE: u64 = 1_400_000_000_000_000_010;

async fn started() -> (
    Simulator,
    watch::Sender<bool>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let sim_config = SimConfig::default();
    let sim = Simulator::start(sim_config.clone()).await.unwrap();
    let owner = User::new(1_500_000_000_000_000_001, "Ann", false);
    sim.add_guild(Guild::new(GUILD, &owner, (LOUNGE, "Lounge"), &[]));
    let config = DiscordConfig {
        api_proxy: Some(sim.http_proxy()),
        gateway_url: Some(sim.gateway_url()),
        identify_interval: Duration::from_millis(200),
        ..DiscordConfig::new(
            Secret::new(sim_config.token.clone()),
            sim_config.application_id,
            "jarvis",
            &["jarvis"],
        )
    };
    let (stop, shutdown) = watch::channel(false);
    let shard = tokio::spawn(run(config, shutdown));
    sim.wait_for_commands(GUILD).await.unwrap();
    (sim, stop, shard)
}

fn count(sim: &Simulator, after: usize, pred: impl Fn(&SimEvent) -> bool) -> usize {
    sim.history()[after..].iter().filter(|e| pred(e)).count()
}

fn is_identify(e: &SimEvent) -> bool {
    matches!(e, SimEvent::Identify { .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumable_closes_resume_and_session_ending_closes_identify_again() {
    let (sim, stop, shard) = started().await;
    for code in [4000, 4008] {
        let mark = sim.history().len();
        let closed = Instant::now();
        sim.close_gateway_connections(code);
        sim.wait_for_since(mark, Duration::from_secs(20), "a RESUME", |e| {
            matches!(e, SimEvent::Resume { accepted: true, .. })
        })
        .await
        .unwrap();
        eprintln!("close {code} → RESUMED after {:?}", closed.elapsed());
        assert_eq!(count(&sim, mark, is_identify), 0, "close {code}");
    }
    for code in [4009, 4007] {
        let mark = sim.history().len();
        let closed = Instant::now();
        sim.close_gateway_connections(code);
        sim.wait_for_since(mark, Duration::from_secs(20), "a new IDENTIFY", is_identify)
            .await
            .unwrap();
        eprintln!("close {code} → IDENTIFY again after {:?}", closed.elapsed());
        // The session is gone: the RESUME twilight tries first is refused.
        assert_eq!(
            count(&sim, mark, |e| matches!(
                e,
                SimEvent::Resume { accepted: true, .. }
            )),
            0
        );
    }
    // Still serving: a command is answered.
    let owner = User::new(1_500_000_000_000_000_001, "Ann", false);
    let id = sim
        .run_command(
            GUILD,
            &owner,
            "jarvis",
            serde_json::json!([{"name": "status", "type": 1}]),
        )
        .unwrap();
    sim.wait_for(
        "the status",
        |e| matches!(e, SimEvent::InteractionReply { interaction, .. } if *interaction == id),
    )
    .await
    .unwrap();
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), shard)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_closes_stop_the_shard_with_a_clear_reason() {
    for (code, words) in [
        (4004, "authentication failed"),
        (4014, "disallowed intents"),
    ] {
        let (sim, _stop, shard) = started().await;
        let mark = sim.history().len();
        sim.close_gateway_connections(code);
        let result = tokio::time::timeout(Duration::from_secs(15), shard)
            .await
            .expect("the shard stops by itself")
            .unwrap();
        let error = result.expect_err("a fatal close is an error").to_string();
        assert!(
            error.contains(&code.to_string()) && error.contains(words),
            "{error}"
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            count(&sim, mark, |e| is_identify(e)
                || matches!(e, SimEvent::Resume { .. })),
            0,
            "no reconnection after a fatal close {code}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pod_exits_non_zero_saying_why_when_discord_refuses_the_token() {
    let sim_config = SimConfig::default();
    let sim = Simulator::start(sim_config.clone()).await.unwrap();
    let out = tokio::task::spawn_blocking({
        let (api, gw) = (sim.http_proxy(), sim.gateway_url());
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_voicebot-shard"))
                .args(["run", "--no-voice"])
                .env("DISCORD_TOKEN", "not-the-token")
                .env(
                    "DISCORD_APPLICATION_ID",
                    sim_config.application_id.to_string(),
                )
                .env("DISCORD_API_PROXY", api)
                .env("DISCORD_GATEWAY_URL", gw)
                .env("POD_NAME", "jarvis-shard-0")
                .env("METRICS_ADDR", "127.0.0.1:0")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("4004") && err.contains("DISCORD_TOKEN"),
        "{err}"
    );
    assert!(!err.contains("not-the-token"), "the token in the output");
}
