//! The real twilight clients against the simulator: REST, identify → READY + GUILD_CREATE,
//! a slash command and its ephemeral reply, a dropped connection resumed, voice state.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use serde_json::json;
use twilight_gateway::{
    ConfigBuilder, Event, EventTypeFlags, Intents, Shard, ShardId, StreamExt as _,
};
use twilight_model::application::command::Command;
use twilight_model::application::interaction::InteractionData;
use twilight_model::gateway::payload::outgoing::UpdateVoiceState;
use twilight_model::http::interaction::{
    InteractionResponse, InteractionResponseData, InteractionResponseType,
};
use twilight_model::id::Id;
use twilight_model::id::marker::ApplicationMarker;
use voicebot_discord_sim::{Guild, SimConfig, SimEvent, Simulator, User};

const GUILD: u64 = 1_400_000_000_000_000_001;
const VOICE: u64 = 1_400_000_000_000_000_010;

async fn next(shard: &mut Shard, what: &str, mut f: impl FnMut(&Event) -> bool) -> Event {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match shard.next_event(EventTypeFlags::all()).await {
                Some(Ok(e)) if f(&e) => return e,
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("gateway error while waiting for {what}: {e}"),
                None => panic!("the shard stopped while waiting for {what}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_twilight_identifies_gets_its_guild_answers_a_command_and_resumes() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = SimConfig::default();
    let token = config.token.clone();
    let owner = User::new(1_500_000_000_000_000_001, "Ann", false);
    let sim = Simulator::start(config).await.unwrap();
    sim.add_guild(Guild::new(GUILD, &owner, (VOICE, "Lounge"), &[]));

    // REST.
    let http = twilight_http::Client::builder()
        .token(token.clone())
        .proxy(sim.http_proxy(), true)
        .build();
    let me = http.current_user().await.unwrap().model().await.unwrap();
    assert_eq!(me.name, "Jarvis");
    let app: Id<ApplicationMarker> = http
        .current_user_application()
        .await
        .unwrap()
        .model()
        .await
        .unwrap()
        .id;
    let command: Command = serde_json::from_value(json!({
        "name": "jarvis", "description": "Talk to Jarvis", "type": 1, "version": "1",
        "options": [{"type": 1, "name": "join", "description": "Join your voice channel"}],
    }))
    .unwrap();
    let interactions = http.interaction(app);
    let registered = interactions
        .set_guild_commands(Id::new(GUILD), &[command])
        .await
        .unwrap()
        .models()
        .await
        .unwrap();
    assert_eq!(registered[0].name, "jarvis");
    assert!(matches!(
        sim.history().last(),
        Some(SimEvent::Commands {
            guild: Some(GUILD),
            ..
        })
    ));

    // Gateway: identify, READY, GUILD_CREATE.
    let gw_config = ConfigBuilder::new(token, Intents::GUILDS | Intents::GUILD_VOICE_STATES)
        .proxy_url(sim.gateway_url())
        .build();
    let mut shard = Shard::with_config(ShardId::ONE, gw_config);
    next(&mut shard, "READY", |e| matches!(e, Event::Ready(_))).await;
    let guild = next(&mut shard, "GUILD_CREATE", |e| {
        matches!(e, Event::GuildCreate(_))
    })
    .await;
    let Event::GuildCreate(g) = guild else {
        unreachable!()
    };
    assert_eq!(g.id().get(), GUILD);
    assert!(matches!(
        sim.history()[..],
        [
            SimEvent::Commands { .. },
            SimEvent::Identify { shard: [0, 1], .. },
            ..
        ]
    ));

    // A user runs /jarvis join; the bot answers ephemerally.
    let id = sim
        .run_command(
            GUILD,
            &owner,
            "jarvis",
            json!([{"name": "join", "type": 1}]),
        )
        .unwrap();
    let Event::InteractionCreate(interaction) = next(&mut shard, "INTERACTION_CREATE", |e| {
        matches!(e, Event::InteractionCreate(_))
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(interaction.id.get(), id);
    let Some(InteractionData::ApplicationCommand(data)) = &interaction.data else {
        panic!("{interaction:?}")
    };
    assert_eq!(data.name, "jarvis");
    assert_eq!(data.options[0].name, "join");
    assert_eq!(interaction.author_id().map(|u| u.get()), Some(owner.id));
    interactions
        .create_response(
            interaction.id,
            &interaction.token,
            &InteractionResponse {
                kind: InteractionResponseType::ChannelMessageWithSource,
                data: Some(InteractionResponseData {
                    content: Some("Joining Lounge".into()),
                    flags: Some(twilight_model::channel::message::MessageFlags::EPHEMERAL),
                    ..InteractionResponseData::default()
                }),
            },
        )
        .await
        .unwrap();
    let reply = sim
        .wait_for("the reply", |e| {
            matches!(e, SimEvent::InteractionReply { .. })
        })
        .await
        .unwrap();
    assert_eq!(
        reply,
        SimEvent::InteractionReply {
            interaction: id,
            content: "Joining Lounge".into(),
            ephemeral: true
        }
    );

    // Voice: the bot asks to join; the simulator answers with both updates.
    shard.command(&UpdateVoiceState::new(
        Id::new(GUILD),
        Some(Id::new(VOICE)),
        true,
        false,
    ));
    next(
        &mut shard,
        "VOICE_STATE_UPDATE",
        |e| matches!(e, Event::VoiceStateUpdate(v) if v.channel_id.map(|c| c.get()) == Some(VOICE)),
    )
    .await;
    next(&mut shard, "VOICE_SERVER_UPDATE", |e| {
        matches!(e, Event::VoiceServerUpdate(_))
    })
    .await;
    assert!(sim.history().contains(&SimEvent::VoiceState {
        guild: GUILD,
        channel: Some(VOICE)
    }));

    // The network drops: the shard comes back with RESUME, not IDENTIFY.
    sim.drop_gateway_connections();
    next(&mut shard, "RESUMED", |e| matches!(e, Event::Resumed)).await;
    let resumes: Vec<_> = sim
        .history()
        .into_iter()
        .filter(|e| matches!(e, SimEvent::Resume { accepted: true, .. }))
        .collect();
    assert_eq!(resumes.len(), 1, "{:?}", sim.history());
    let identifies = sim
        .history()
        .iter()
        .filter(|e| matches!(e, SimEvent::Identify { .. }))
        .count();
    assert_eq!(identifies, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_on_rest_and_fatal_on_the_gateway() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let http = twilight_http::Client::builder()
        .token("wrong".into())
        .proxy(sim.http_proxy(), true)
        .build();
    let err = http.current_user().await.unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("unauthorized") || err.to_string().contains("401"),
        "{err}"
    );
    let gw_config = ConfigBuilder::new("wrong".into(), Intents::GUILDS)
        .proxy_url(sim.gateway_url())
        .build();
    let mut shard = Shard::with_config(ShardId::ONE, gw_config);
    let end = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match shard.next_event(EventTypeFlags::all()).await {
                None => return "stopped".to_string(),
                Some(Err(e)) => return e.to_string(),
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("a fatal close ends the shard");
    assert!(!end.is_empty());
    assert!(
        !sim.history()
            .iter()
            .any(|e| matches!(e, SimEvent::Identify { .. }))
    );
}

/// A shard connected with twilight, polled in the background until dropped.
fn connect(sim: &Simulator, token: &str, id: ShardId) -> tokio::task::JoinHandle<()> {
    let config = ConfigBuilder::new(token.to_string(), Intents::GUILDS)
        .proxy_url(sim.gateway_url())
        .build();
    let mut shard = Shard::with_config(id, config);
    tokio::spawn(async move { while shard.next_event(EventTypeFlags::all()).await.is_some() {} })
}

async fn until(what: &str, f: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guild_owned_by_two_connected_sessions_is_recorded_and_a_clean_reshard_is_not() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = SimConfig {
        // Any address of the machine: the servers bind it and the voice endpoint names it.
        host: "127.0.0.2".parse().unwrap(),
        ..SimConfig::default()
    };
    let token = config.token.clone();
    let sim = Simulator::start(config).await.unwrap();
    assert!(sim.http_proxy().starts_with("127.0.0.2:"));
    assert!(sim.gateway_url().starts_with("ws://127.0.0.2:"));
    assert!(sim.voice_endpoint().starts_with("127.0.0.2:"));
    let owner = User::new(1_500_000_000_000_000_001, "Ann", false);
    // Guild i is on shard i of 2.
    let guilds: Vec<u64> = (0..2)
        .map(|i| ((238_418_579_100 + i) << 22) | 7_000)
        .collect();
    for (i, g) in guilds.iter().enumerate() {
        assert_eq!(Simulator::shard_of(*g, 2), i as u32);
        sim.add_guild(Guild::new(*g, &owner, (g + 10, "Lounge"), &[]));
    }

    // One shard of one owns both guilds.
    let old = connect(&sim, &token, ShardId::new(0, 1));
    until("shard 0 of 1", || sim.connected_shards() == [[0, 1]]).await;
    assert!(sim.double_owners().is_empty());

    // Shard 0 of 2 comes up while it is still connected: guild 0 has two owners.
    let overlapping = connect(&sim, &token, ShardId::new(0, 2));
    until("shard 0 of 2", || sim.connected_shards().len() == 2).await;
    let doubles = sim.double_owners();
    assert_eq!(doubles.len(), 1, "{doubles:?}");
    assert_eq!(doubles[0].guild, guilds[0]);
    assert_eq!(doubles[0].connected, [0, 1]);
    assert_eq!(doubles[0].identified, [0, 2]);

    // A clean reshard: the old shard gone before the new ones identify.
    old.abort();
    overlapping.abort();
    until("no shard connected", || sim.connected_shards().is_empty()).await;
    let _a = connect(&sim, &token, ShardId::new(0, 2));
    let _b = connect(&sim, &token, ShardId::new(1, 2));
    until("shards 0 and 1 of 2", || {
        sim.connected_shards() == [[0, 2], [1, 2]]
    })
    .await;
    assert_eq!(sim.double_owners().len(), 1, "no new double owner");
}
