//! The shard binary started as one pod of a simulated fleet.
#![allow(dead_code)]

use std::process::Command;

use voicebot_discord_sim::{SimConfig, Simulator};

/// `voicebot-shard run ARGS` as the pod `name` of the simulator's bot (its token, application,
/// REST proxy and gateway), with the tests' Redis prefix and `/metrics` on `metrics_port`; the
/// caller adds the rest (Redis URL, certificates, sharding, log level) and spawns it.
pub fn pod_command(sim: &Simulator, name: &str, metrics_port: u16, args: &[&str]) -> Command {
    let config = SimConfig::default();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voicebot-shard"));
    cmd.arg("run")
        .args(args)
        .env("DISCORD_TOKEN", &config.token)
        .env("DISCORD_APPLICATION_ID", config.application_id.to_string())
        .env("DISCORD_API_PROXY", sim.http_proxy())
        .env("DISCORD_GATEWAY_URL", sim.gateway_url())
        .env("POD_NAME", name)
        .env("VOICEBOT_REDIS_PREFIX", super::fleet::PREFIX)
        .env("METRICS_ADDR", format!("127.0.0.1:{metrics_port}"));
    cmd
}
