//! A pod killed in the middle of a spoken reply, with everything real: the `voicebot-shard run`
//! binary (models, twilight, songbird), a real OpenClaw gateway, a real redis-server and the
//! Discord simulator with TLS voice and RTP. Its replacement RESUMEs the gateway session,
//! rejoins the voice channel, speaks the reply the dead pod was speaking (the gateway kept
//! writing it; `chat.history` gives it back) and answers the next question. The time from the
//! kill to the voice connection being back is printed (`pod kill → voice rejoined`).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
#[path = "../../demo/src/local_gateway.rs"]
mod gateway;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::json;
use voicebot_discord_sim::{BotAudio, Guild, SimConfig, SimEvent, Simulator, TlsIdentity, User};

use common::fleet::{Redis, free_port};
use common::pod::pod_command;
use common::{silence, speak};

const GUILD: u64 = 1_800_000_000_000_000_001;
const LOUNGE: u64 = 1_800_000_000_000_000_010;

struct Pod(Child, PathBuf);

impl Pod {
    fn start(sim: &Simulator, redis: &Redis, cert: &Path, n: u32) -> Self {
        let gw = gateway::shared_gateway().client_config();
        Self::start_with_gateway(sim, redis, cert, n, &gw.url)
    }

    /// A pod that dials the OpenClaw gateway at `gateway_url`.
    fn start_with_gateway(
        sim: &Simulator,
        redis: &Redis,
        cert: &Path,
        n: u32,
        gateway_url: &str,
    ) -> Self {
        let gw = gateway::shared_gateway().client_config();
        let log = common::scratch().join(format!("pod-{n}.log"));
        let args = ["--workers", "1", "--agents", "jarvis,sage"];
        let child = pod_command(sim, "jarvis-shard-0", free_port(), &args)
            .env("SSL_CERT_FILE", cert)
            .env("REDIS_URL", redis.url())
            .env("OPENCLAW_GATEWAY_URL", gateway_url)
            .env(
                "OPENCLAW_GATEWAY_TOKEN",
                gw.token.as_ref().map(|t| t.expose()).unwrap_or_default(),
            )
            .env("VOICEBOT_LOG", "info,voicebot_shard=debug")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self(child, log)
    }

    fn kill(mut self) -> String {
        let _ = self.0.kill();
        let _ = self.0.wait();
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn command(sim: &Simulator, user: &User, options: serde_json::Value) -> String {
    command_in(sim, GUILD, user, options).await
}

fn says(text: &str) -> Vec<f32> {
    let mut pcm = speak(text, "en-us", 150);
    pcm.extend(silence(300));
    voicebot_discord_sim::from_16k(&pcm)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_killed_mid_reply_is_replaced_and_the_reply_is_spoken() {
    let tls = std::sync::Arc::new(TlsIdentity::generate().unwrap());
    let cert = common::scratch().join("sim-ca.pem");
    std::fs::write(&cert, tls.cert_pem()).unwrap();
    let redis = Redis::start();
    let sim = Simulator::start(SimConfig {
        tls: Some(tls),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let ann = User::new(1_900_000_000_000_000_001, "Ann", false);
    sim.add_guild(Guild::new(GUILD, &ann, (LOUNGE, "Lounge"), &[]));
    gateway::shared_gateway();

    let pod = Pod::start(&sim, &redis, &cert, 1);
    sim.wait_for_commands_within(GUILD, Duration::from_secs(120))
        .await
        .unwrap();
    sim.user_voice(GUILD, &ann, Some(LOUNGE)).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    command(&sim, &ann, json!([{"name": "join", "type": 1}])).await;
    sim.wait_voice_ready(GUILD, &ann, Duration::from_secs(30))
        .await
        .unwrap();

    // A long reply (the fake model writes "story" slowly: 40 words, 300 ms apart).
    let asked = sim
        .speak(GUILD, &ann, &says("Jarvis, tell me a story."))
        .await
        .unwrap();
    let start = Instant::now();
    while sim.bot_audio(GUILD).since(asked.stopped).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the bot never started its reply: {}",
            pod.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let run = redis
        .wait_hash(&format!("conv:{GUILD}"), |h| h.contains_key("run"))
        .await;
    assert!(run["session"].starts_with("agent:jarvis:"), "{run:?}");

    // The pod dies mid-sentence; its replacement starts at once (as the StatefulSet would).
    let mark = sim.history().len();
    let killed = Instant::now();
    pod.kill();
    let pod = Pod::start(&sim, &redis, &cert, 2);
    sim.wait_for_since(mark, Duration::from_secs(60), "a RESUME", |e| {
        matches!(e, SimEvent::Resume { accepted: true, .. })
    })
    .await
    .unwrap();
    sim.wait_for_since(mark, Duration::from_secs(60), "the voice connection", |e| {
        matches!(e, SimEvent::VoiceConnect { guild: GUILD, .. })
    })
    .await
    .unwrap();
    let rejoined = Instant::now();
    eprintln!(
        "pod kill → voice rejoined: {} ms",
        rejoined.duration_since(killed).as_millis()
    );
    assert!(
        !sim.history()[mark..]
            .iter()
            .any(|e| matches!(e, SimEvent::Identify { .. })),
        "the replacement IDENTIFYed"
    );

    // The reply the dead pod was speaking is spoken by its replacement.
    let (first, pcm) = sim
        .wait_bot_answer(
            GUILD,
            rejoined,
            // Sentences are synthesised one by one on a busy machine: a gap is not the end.
            Duration::from_millis(3000),
            Duration::from_secs(90),
        )
        .await
        .unwrap_or_else(|| panic!("no recovered reply: {}", pod.logs()));
    eprintln!(
        "pod kill → the interrupted reply spoken again: {} ms",
        first.duration_since(killed).as_millis()
    );
    // The long reply is "word0 word1 …"; Whisper tiny sometimes hears Piper's "word" as "ward".
    let heard = common::transcribe(&pcm, BotAudio::SAMPLE_RATE).to_lowercase();
    assert!(heard.contains("word") || heard.contains("ward"), "{heard}");
    redis
        .wait_hash(&format!("conv:{GUILD}"), |h| h.is_empty())
        .await;

    // And the bot answers the next question.
    let asked = sim
        .speak(GUILD, &ann, &says("Jarvis, what is two plus two?"))
        .await
        .unwrap();
    let (_, pcm) = sim
        .wait_bot_answer(
            GUILD,
            asked.stopped,
            Duration::from_millis(800),
            Duration::from_secs(60),
        )
        .await
        .unwrap_or_else(|| panic!("no answer after the restart: {}", pod.logs()));
    let heard = common::transcribe(&pcm, BotAudio::SAMPLE_RATE)
        .to_lowercase()
        .replace('4', "four");
    assert!(heard.contains("four"), "{heard}");
    let logs = pod.kill();
    let gw = gateway::shared_gateway().client_config();
    let token = gw.token.unwrap();
    assert!(
        !logs.contains(token.expose()),
        "the gateway token is in the logs"
    );
    assert!(
        !logs.contains(common::fleet::PASSWORD),
        "the Redis password is in the logs"
    );
}

/// The simulator with TLS voice, Ann in the Lounge, and the pod joined there.
///
/// Each test has its own guild (`GUILD + n`): the tests of this file run at once against one
/// OpenClaw gateway, and a guild's voice channel is a session there.
async fn in_voice(redis: &Redis, n: u32, gateway_url: Option<&str>) -> (Simulator, User, Pod, u64) {
    let guild = GUILD + u64::from(n);
    let tls = std::sync::Arc::new(TlsIdentity::generate().unwrap());
    let cert = common::scratch().join(format!("sim-ca-{n}.pem"));
    std::fs::write(&cert, tls.cert_pem()).unwrap();
    let sim = Simulator::start(SimConfig {
        tls: Some(tls),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let ann = User::new(1_900_000_000_000_000_001, "Ann", false);
    sim.add_guild(Guild::new(guild, &ann, (LOUNGE, "Lounge"), &[]));
    let pod = match gateway_url {
        Some(url) => Pod::start_with_gateway(&sim, redis, &cert, n, url),
        None => Pod::start(&sim, redis, &cert, n),
    };
    sim.wait_for_commands_within(guild, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", pod.logs()));
    sim.user_voice(guild, &ann, Some(LOUNGE)).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    command_in(&sim, guild, &ann, json!([{"name": "join", "type": 1}])).await;
    sim.wait_voice_ready(guild, &ann, Duration::from_secs(30))
        .await
        .unwrap();
    (sim, ann, pod, guild)
}

async fn command_in(
    sim: &Simulator,
    guild: u64,
    user: &User,
    options: serde_json::Value,
) -> String {
    let id = sim.run_command(guild, user, "jarvis", options).unwrap();
    let SimEvent::InteractionReply { content, .. } = sim
        .wait_for(
            "the answer",
            |e| matches!(e, SimEvent::InteractionReply { interaction, .. } if *interaction == id),
        )
        .await
        .unwrap()
    else {
        unreachable!()
    };
    content
}

/// Ann asks; what the bot says back, as Whisper hears it (lower case, digits as words).
async fn ask(sim: &Simulator, guild: u64, ann: &User, pod: &Pod, question: &str) -> String {
    let asked = sim.speak(guild, ann, &says(question)).await.unwrap();
    let (_, pcm) = sim
        .wait_bot_answer(
            guild,
            asked.stopped,
            Duration::from_millis(1500),
            Duration::from_secs(60),
        )
        .await
        .unwrap_or_else(|| panic!("no answer to {question:?}: {}", pod.logs()));
    common::transcribe(&pcm, BotAudio::SAMPLE_RATE)
        .to_lowercase()
        .replace('4', "four")
}

/// Redis hangs (SIGSTOP) for 30 s in the middle of a conversation: the bot keeps hearing and
/// answering as fast as before, a settings change says it is not saved yet, and once Redis
/// answers every change is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_hangs_30_s_mid_conversation_stops_nothing_and_loses_nothing() {
    let redis = Redis::start();
    let (sim, ann, pod, guild) = in_voice(&redis, 10, None).await;
    let before = Instant::now();
    let heard = ask(&sim, guild, &ann, &pod, "Jarvis, what is two plus two?").await;
    eprintln!(
        "Redis up: a turn (question spoken, answer heard) took {} ms",
        before.elapsed().as_millis()
    );
    assert!(heard.contains("four"), "{heard}");

    redis.pause();
    let paused = Instant::now();
    let heard = ask(&sim, guild, &ann, &pod, "Jarvis, what is two plus two?").await;
    eprintln!(
        "Redis hung: a turn (question spoken, answer heard) took {} ms",
        paused.elapsed().as_millis()
    );
    assert!(
        heard.contains("four"),
        "answered while Redis hangs: {heard}"
    );
    let changed = command_in(
        &sim,
        guild,
        &ann,
        json!([{"name": "sensitivity", "type": 1,
        "options": [{"name": "level", "type": 3, "value": "high"}]}]),
    )
    .await;
    assert!(changed.contains("Not saved yet"), "{changed}");
    let outage = Duration::from_secs(30);
    tokio::time::sleep(outage.saturating_sub(paused.elapsed())).await;
    redis.resume();
    let resumed = Instant::now();
    let stored = redis
        .wait_hash(&format!("guild:{guild}"), |h| {
            h.get("sensitivity").is_some_and(|s| s == "high")
        })
        .await;
    eprintln!(
        "Redis back after 30 s: the change made during the outage written in {} ms",
        resumed.elapsed().as_millis()
    );
    assert_eq!(stored["channel"], LOUNGE.to_string());
    let heard = ask(&sim, guild, &ann, &pod, "Jarvis, what is two plus two?").await;
    assert!(heard.contains("four"), "{heard}");
    let logs = pod.kill();
    assert!(logs.contains("Redis is unreachable"), "{logs}");
    assert!(logs.contains("Redis answers again"), "{logs}");
    assert!(!logs.contains(common::fleet::PASSWORD));
}

/// The OpenClaw gateway is down when the pod starts: the pod starts anyway (Discord, voice,
/// listening), a question gets a spoken apology rather than silence, and once the gateway is
/// up the next question is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_started_while_the_gateway_is_down_apologises_then_answers() {
    let gw = gateway::shared_gateway().client_config();
    let real: std::net::SocketAddr = gw
        .url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // The pod dials a port where nothing listens yet.
    let port = free_port();
    let redis = Redis::start();
    let (sim, ann, pod, guild) =
        in_voice(&redis, 20, Some(&format!("ws://127.0.0.1:{port}"))).await;
    let heard = ask(&sim, guild, &ann, &pod, "Jarvis, what is two plus two?").await;
    assert!(
        heard.contains("sorry") || heard.contains("connection"),
        "an apology while the gateway is down: {heard}"
    );

    // The gateway comes up (a proxy to the real one starts on that port).
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let up = Instant::now();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(real).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    let start = Instant::now();
    while !pod.logs().contains("connected to the OpenClaw gateway") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the pod never reached the gateway: {}",
            pod.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "gateway up → the pod connected in {} ms",
        up.elapsed().as_millis()
    );
    let heard = ask(&sim, guild, &ann, &pod, "Jarvis, what is two plus two?").await;
    assert!(heard.contains("four"), "{heard}");
    let logs = pod.kill();
    assert!(logs.contains("does not answer yet"), "{logs}");
}
