//! The shard's gateway loop against the Discord simulator: commands registered once for the
//! application (and again after Discord's 429 says when),
//! `/jarvis join` follows the user into voice, commands refused without their permissions
//! (Discord's `default_member_permissions`, and the bot's own check), the bot
//! leaves when the channel empties, and shutdown closes the shard resumably.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;
use twilight_model::guild::Permissions;
use voicebot_discord_sim::{Guild, SimConfig, SimEvent, Simulator, User};
use voicebot_shard::discord::gateway::{DiscordConfig, run};
use voicebot_shard::secret::Secret;

const GUILD: u64 = 1_400_000_000_000_000_001;
const LOUNGE: u64 = 1_400_000_000_000_000_010;

fn reply(id: u64) -> impl Fn(&SimEvent) -> bool {
    move |e| matches!(e, SimEvent::InteractionReply { interaction, .. } if *interaction == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shard_answers_commands_joins_voice_and_leaves_an_empty_channel() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim_config = SimConfig::default();
    let ann = User::new(1_500_000_000_000_000_001, "Ann", false);
    // Bob moderates voice (Move Members); Cy is an everyday member; Dee too, but an admin
    // let her use the command in Discord's settings.
    let bob = User::new(1_500_000_000_000_000_002, "Bob", false);
    let cy = User::new(1_500_000_000_000_000_003, "Cy", false);
    let dee = User::new(1_500_000_000_000_000_004, "Dee", false);
    let sim = Simulator::start(sim_config.clone()).await.unwrap();
    sim.add_guild(
        Guild::new(
            GUILD,
            &ann,
            (LOUNGE, "Lounge"),
            &[bob.clone(), cy.clone(), dee.clone()],
        )
        .with_permissions(&bob, Permissions::MOVE_MEMBERS.bits())
        .allow_command("jarvis", &dee),
    );
    let config = DiscordConfig {
        api_proxy: Some(sim.http_proxy()),
        gateway_url: Some(sim.gateway_url()),
        ..DiscordConfig::new(
            Secret::new(sim_config.token.clone()),
            sim_config.application_id,
            "jarvis",
            &["jarvis", "sage"],
        )
    };
    let (stop, shutdown) = watch::channel(false);
    let shard = tokio::spawn(run(config, shutdown));
    let commands = sim.wait_for_commands(GUILD).await.unwrap();
    assert_eq!(
        commands[0]["default_member_permissions"],
        Permissions::MOVE_MEMBERS.bits().to_string(),
        "the command is shown to voice moderators"
    );

    // Discord does not offer the command to Cy; Dee gets it through the admin's override,
    // and the bot checks again: she may not move the bot.
    let refused = sim.run_command(GUILD, &cy, "jarvis", json!([{"name": "join", "type": 1}]));
    assert!(refused.is_err(), "{refused:?}");
    sim.user_voice(GUILD, &dee, Some(LOUNGE)).unwrap();
    let id = sim
        .run_command(GUILD, &dee, "jarvis", json!([{"name": "join", "type": 1}]))
        .unwrap();
    let SimEvent::InteractionReply { content, .. } =
        sim.wait_for("the refusal", reply(id)).await.unwrap()
    else {
        unreachable!()
    };
    assert_eq!(content, "`/jarvis join` needs the Move Members permission.");
    sim.user_voice(GUILD, &dee, None).unwrap();

    // Ann is not in voice yet: join explains; then she joins and the bot follows.
    let id = sim
        .run_command(GUILD, &ann, "jarvis", json!([{"name": "join", "type": 1}]))
        .unwrap();
    let SimEvent::InteractionReply {
        content, ephemeral, ..
    } = sim.wait_for("the reply", reply(id)).await.unwrap()
    else {
        unreachable!()
    };
    assert!(
        content.starts_with("Join a voice channel first"),
        "{content}"
    );
    assert!(ephemeral);
    sim.user_voice(GUILD, &ann, Some(LOUNGE)).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let id = sim
        .run_command(GUILD, &ann, "jarvis", json!([{"name": "join", "type": 1}]))
        .unwrap();
    let SimEvent::InteractionReply { content, .. } =
        sim.wait_for("the reply", reply(id)).await.unwrap()
    else {
        unreachable!()
    };
    assert_eq!(content, "Joining Lounge — jarvis is listening.");
    sim.wait_for("the voice join", |e| {
        *e == SimEvent::VoiceState {
            guild: GUILD,
            channel: Some(LOUNGE),
        }
    })
    .await
    .unwrap();

    // Bob may not change settings; Ann may.
    let id = sim
        .run_command(
            GUILD,
            &bob,
            "jarvis",
            json!([{"name": "sensitivity", "type": 1,
                    "options": [{"name": "level", "type": 3, "value": "high"}]}]),
        )
        .unwrap();
    let SimEvent::InteractionReply { content, .. } =
        sim.wait_for("the reply", reply(id)).await.unwrap()
    else {
        unreachable!()
    };
    assert_eq!(
        content,
        "`/jarvis sensitivity` needs the Move Members and Manage Server permissions."
    );
    let id = sim
        .run_command(
            GUILD,
            &ann,
            "jarvis",
            json!([{"name": "agent", "type": 1,
                    "options": [{"name": "name", "type": 3, "value": "sage"}]}]),
        )
        .unwrap();
    sim.wait_for("the agent change", reply(id)).await.unwrap();
    let id = sim
        .run_command(
            GUILD,
            &bob,
            "jarvis",
            json!([{"name": "status", "type": 1}]),
        )
        .unwrap();
    let SimEvent::InteractionReply { content, .. } =
        sim.wait_for("the status", reply(id)).await.unwrap()
    else {
        unreachable!()
    };
    assert!(
        content.starts_with("Agent sage, sensitivity low, in Lounge"),
        "{content}"
    );

    // Ann leaves: no human is left, so the bot leaves too.
    sim.user_voice(GUILD, &ann, None).unwrap();
    sim.wait_for("the bot leaving", |e| {
        *e == SimEvent::VoiceState {
            guild: GUILD,
            channel: None,
        }
    })
    .await
    .unwrap();

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), shard)
        .await
        .expect("the shard stops on shutdown")
        .unwrap()
        .unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_command_starts_as_the_operator_configures_it_and_stops_on_sigterm() {
    let sim_config = SimConfig::default();
    let sim = Simulator::start(sim_config.clone()).await.unwrap();
    let owner = User::new(1_500_000_000_000_000_009, "Owner", false);
    sim.add_guild(Guild::new(GUILD, &owner, (LOUNGE, "Lounge"), &[]));
    let dir = std::env::temp_dir().join(format!("voicebot-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The ConfigMap the operator renders (`voicebot-operator render`): the spec's BotConfig.
    // Redis is down here (the pod serves and writes back later: fleet_state.rs).
    let config = dir.join("voicebot.json");
    std::fs::write(
        &config,
        r#"{"agents": [{"name": "sage"}, {"name": "jarvis"}], "defaultSensitivity": "medium",
            "redis": {"url": "redis://127.0.0.1:1"},
            "gateway": {"url": "ws://127.0.0.1:1", "tokenSecret": {"name": "openclaw", "key": "token"}}}"#,
    )
    .unwrap();
    let port = free_port();
    let log = dir.join("stderr.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_voicebot-shard"))
        .args(["run", "--no-voice"])
        .env("DISCORD_TOKEN", &sim_config.token)
        .env(
            "DISCORD_APPLICATION_ID",
            sim_config.application_id.to_string(),
        )
        .env("DISCORD_API_PROXY", sim.http_proxy())
        .env("DISCORD_GATEWAY_URL", sim.gateway_url())
        .env("SHARD_COUNT", "1")
        .env("SHARDS_PER_POD", "1")
        .env("POD_NAME", "sage-shard-0")
        .env("VOICEBOT_CONFIG", &config)
        .env("METRICS_ADDR", format!("127.0.0.1:{port}"))
        .env("VOICEBOT_LOG", "debug")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let commands = sim.wait_for_commands(GUILD).await.unwrap();
    assert_eq!(
        commands[0]["name"], "sage",
        "the first agent names the command"
    );
    let ready = http_get(port, "/readyz");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    // /metrics: Prometheus text, the guild counted on its shard (gauges refresh every 5 s).
    let start = Instant::now();
    let metrics = loop {
        let m = http_get(port, "/metrics");
        if m.contains("voicebot_guilds{shard=\"0\"} 1") {
            break m;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let body = metrics.split("\r\n\r\n").nth(1).unwrap();
    assert_prometheus_text(body);
    assert!(!body.contains(&sim_config.token), "the token in /metrics");
    // SIGTERM: a clean, resumable stop.
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        !logs.contains(&sim_config.token),
        "the bot token appeared in the logs"
    );

    // Without a token: a clear error, not a panic.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_voicebot-shard"))
        .args(["run", "--no-voice"])
        .env_remove("DISCORD_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DISCORD_TOKEN is not set"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    // In two writes, as a client may: the server must wait for the whole head.
    s.write_all(b"GET ").unwrap();
    s.write_all(format!("{path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Every line is a `# HELP`/`# TYPE` comment or `name{labels} value` with a numeric value.
fn assert_prometheus_text(body: &str) {
    assert!(!body.trim().is_empty());
    for line in body.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            assert!(
                rest.starts_with("HELP ") || rest.starts_with("TYPE "),
                "{line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "not a number: {line}");
        let name = series.split('{').next().unwrap();
        assert!(
            name.starts_with("voicebot_")
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
    }
}

/// Discord answers 429 with a `retry_after`: the commands are registered and a command is
/// answered once the wait is over, never before, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_rate_limits_are_waited_out() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim_config = SimConfig::default();
    let ann = User::new(1_500_000_000_000_000_001, "Ann", false);
    let sim = Simulator::start(sim_config.clone()).await.unwrap();
    sim.add_guild(Guild::new(GUILD, &ann, (LOUNGE, "Lounge"), &[]));
    sim.rate_limit("/applications/", 1, 1.5);
    let config = DiscordConfig {
        api_proxy: Some(sim.http_proxy()),
        gateway_url: Some(sim.gateway_url()),
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
    let history = sim.history();
    let limited = history
        .iter()
        .find_map(|e| match e {
            SimEvent::RateLimited { path, at_ms, .. } if path.contains("/commands") => Some(*at_ms),
            _ => None,
        })
        .expect("the registration was rate limited");
    let registered = history
        .iter()
        .position(|e| matches!(e, SimEvent::Commands { .. }))
        .unwrap();
    assert!(
        history[..registered]
            .iter()
            .any(|e| matches!(e, SimEvent::RateLimited { .. })),
        "registered before the 429"
    );
    eprintln!("commands: 429 at {limited} ms, registered after the wait");

    // The answer to a command is rate limited twice: it still arrives, after both waits.
    sim.rate_limit("/interactions/", 2, 0.5);
    let asked = Instant::now();
    let id = sim
        .run_command(
            GUILD,
            &ann,
            "jarvis",
            json!([{"name": "status", "type": 1}]),
        )
        .unwrap();
    let SimEvent::InteractionReply { content, .. } =
        sim.wait_for("the answer", reply(id)).await.unwrap()
    else {
        unreachable!()
    };
    let waited = asked.elapsed();
    eprintln!("a command answered through two 429s (0.5 s each) in {waited:?}");
    assert!(content.starts_with("Agent jarvis"), "{content}");
    assert!(waited >= Duration::from_millis(1000), "{waited:?}");
    let limits = sim
        .history()
        .iter()
        .filter(|e| matches!(e, SimEvent::RateLimited { path, .. } if path.starts_with("/interactions/")))
        .count();
    assert_eq!(limits, 2);
    stop.send(true).unwrap();
    shard.await.unwrap().unwrap();
}
