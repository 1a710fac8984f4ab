//! The slash commands end to end through the real twilight clients and the Discord simulator:
//! registered for a guild, run by users, parsed into commands or refused with the message the
//! user sees — as an ephemeral reply, the way the shard answers.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use serde_json::json;
use twilight_gateway::{
    ConfigBuilder, Event, EventTypeFlags, Intents, Shard, ShardId, StreamExt as _,
};
use twilight_model::channel::message::MessageFlags;
use twilight_model::guild::Permissions;
use twilight_model::http::interaction::{
    InteractionResponse, InteractionResponseData, InteractionResponseType,
};
use twilight_model::id::Id;
use voicebot_discord_sim::{Guild, SimConfig, SimEvent, Simulator, User};
use voicebot_shard::converse::relevance::Sensitivity;
use voicebot_shard::discord::commands::{self, CommandPermissions, SlashCommand};

const GUILD: u64 = 1_400_000_000_000_000_001;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_registered_parsed_and_refused_with_a_reason() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = SimConfig::default();
    let token = config.token.clone();
    let app = Id::new(config.application_id);
    let owner = User::new(1_500_000_000_000_000_001, "Ann", false);
    let guest = User::new(1_500_000_000_000_000_002, "Bob", false);
    let plain = User::new(1_500_000_000_000_000_003, "Cy", false);
    let sim = Simulator::start(config).await.unwrap();
    sim.add_guild(
        Guild::new(
            GUILD,
            &owner,
            (1_400_000_000_000_000_010, "Lounge"),
            &[guest.clone(), plain.clone()],
        )
        .with_permissions(&guest, Permissions::MOVE_MEMBERS.bits()),
    );
    let permissions = CommandPermissions::default();
    let agents = vec!["jarvis".to_string(), "sage".to_string()];
    let http = twilight_http::Client::builder()
        .token(token.clone())
        .proxy(sim.http_proxy(), true)
        .build();
    http.interaction(app)
        .set_guild_commands(
            Id::new(GUILD),
            &commands::definitions("jarvis", &agents, &permissions),
        )
        .await
        .unwrap();
    let registered = sim
        .history()
        .into_iter()
        .find_map(|e| match e {
            SimEvent::Commands { commands, .. } => Some(commands),
            _ => None,
        })
        .unwrap();
    assert_eq!(registered[0]["name"], "jarvis");
    assert_eq!(
        registered[0]["options"][2]["options"][0]["choices"][1]["value"],
        "sage"
    );

    let mut shard = Shard::with_config(
        ShardId::ONE,
        ConfigBuilder::new(token, Intents::GUILDS | Intents::GUILD_VOICE_STATES)
            .proxy_url(sim.gateway_url())
            .build(),
    );
    // Wait for the guild, then run commands as the owner and as a guest.
    loop {
        if let Some(Ok(Event::GuildCreate(_))) = shard.next_event(EventTypeFlags::all()).await {
            break;
        }
    }
    let cases = [
        (
            &owner,
            json!([{"name": "sensitivity", "type": 1,
                    "options": [{"name": "level", "type": 3, "value": "high"}]}]),
            Ok(SlashCommand::Sensitivity(Sensitivity::High)),
        ),
        (
            &guest,
            json!([{"name": "sensitivity", "type": 1,
                    "options": [{"name": "level", "type": 3, "value": "low"}]}]),
            Err("`/jarvis sensitivity` needs the Move Members and Manage Server permissions."),
        ),
        (
            &guest,
            json!([{"name": "join", "type": 1}]),
            Ok(SlashCommand::Join { channel: None }),
        ),
        (
            &owner,
            json!([{"name": "agent", "type": 1,
                    "options": [{"name": "name", "type": 3, "value": "hal"}]}]),
            Err("There is no agent called `hal`. Available: jarvis, sage."),
        ),
    ];
    // Discord does not offer the command to a member without Move Members.
    assert!(
        sim.run_command(
            GUILD,
            &plain,
            "jarvis",
            json!([{"name": "status", "type": 1}])
        )
        .is_err()
    );
    for (user, options, expected) in cases {
        let id = sim.run_command(GUILD, user, "jarvis", options).unwrap();
        let interaction = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Some(Ok(Event::InteractionCreate(i))) =
                    shard.next_event(EventTypeFlags::all()).await
                {
                    return i;
                }
            }
        })
        .await
        .expect("the interaction");
        assert_eq!(interaction.id.get(), id);
        let parsed = commands::parse("jarvis", &interaction, &agents, &permissions);
        let content = match (&parsed, &expected) {
            (Ok(got), Ok(want)) => {
                assert_eq!(got, want);
                format!("ok: {got:?}")
            }
            (Err(got), Err(want)) => {
                assert_eq!(got.to_string(), *want);
                got.to_string()
            }
            _ => panic!("{parsed:?} vs {expected:?}"),
        };
        http.interaction(app)
            .create_response(
                interaction.id,
                &interaction.token,
                &InteractionResponse {
                    kind: InteractionResponseType::ChannelMessageWithSource,
                    data: Some(InteractionResponseData {
                        content: Some(content.clone()),
                        flags: Some(MessageFlags::EPHEMERAL),
                        ..InteractionResponseData::default()
                    }),
                },
            )
            .await
            .unwrap();
        assert!(sim.history().contains(&SimEvent::InteractionReply {
            interaction: id,
            content,
            ephemeral: true,
        }));
    }
}
