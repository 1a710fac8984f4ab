//! The slash commands: one command per agent deployment (`/jarvis join|leave|agent|
//! sensitivity|status`), their definitions for Discord and the parsing of an interaction into a
//! typed command, with a friendly message for every invalid use.

use serde_json::json;
use twilight_model::application::command::Command;
use twilight_model::application::interaction::application_command::{
    CommandData, CommandOptionValue,
};
use twilight_model::application::interaction::{Interaction, InteractionData};
use twilight_model::guild::Permissions;

use crate::state::Sensitivity;

/// A command a user ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlashCommand {
    /// Join the user's voice channel, or this one.
    Join {
        /// An explicit channel.
        channel: Option<u64>,
    },
    /// Leave the voice channel.
    Leave,
    /// Switch the guild's agent.
    Agent(String),
    /// Change the guild's sensitivity.
    Sensitivity(Sensitivity),
    /// Show the channel, agent, sensitivity and recent latencies.
    Status,
}

impl SlashCommand {
    /// Whether it changes the guild's settings (needs Manage Server).
    pub fn is_setting(&self) -> bool {
        matches!(self, Self::Agent(_) | Self::Sensitivity(_))
    }
}

/// Why a command cannot be run, worded for the person who ran it (sent ephemerally).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Another bot's command (not ours to answer).
    #[error("not this bot's command")]
    NotOurs,
    /// Used outside a server.
    #[error("This command only works in a server.")]
    NotInGuild,
    /// A subcommand we do not have.
    #[error("Unknown command `{0}`. Try `/{1} status`.")]
    Unknown(String, String),
    /// An agent that is not configured.
    #[error("There is no agent called `{given}`. Available: {known}.")]
    UnknownAgent {
        /// What was asked for.
        given: String,
        /// What exists.
        known: String,
    },
    /// A sensitivity that does not exist.
    #[error("Sensitivity must be low, medium or high (not `{0}`).")]
    BadSensitivity(String),
    /// Settings need Manage Server.
    #[error("Changing the agent or the sensitivity needs the Manage Server permission.")]
    NoPermission,
}

/// Discord allows 25 choices per option.
const MAX_CHOICES: usize = 25;

/// The command definitions to register (guild or global) for command `name`.
pub fn definitions(name: &str, agents: &[String]) -> Vec<Command> {
    let agent_choices: Vec<_> = agents
        .iter()
        .take(MAX_CHOICES)
        .map(|a| json!({"name": a, "value": a}))
        .collect();
    let command = json!({
        "name": name,
        "description": format!("Talk with {name} in a voice channel"),
        "type": 1,
        "version": "1",
        "contexts": [0],
        "options": [
            {"type": 1, "name": "join", "description": "Join your voice channel (or the one given)",
             "options": [{"type": 7, "name": "channel", "description": "A voice channel",
                          "required": false, "channel_types": [2, 13]}]},
            {"type": 1, "name": "leave", "description": "Leave the voice channel"},
            {"type": 1, "name": "agent", "description": "Choose who answers in this server",
             "options": [{"type": 3, "name": "name", "description": "Agent", "required": true,
                          "choices": agent_choices}]},
            {"type": 1, "name": "sensitivity",
             "description": "How readily the bot answers when not called by name",
             "options": [{"type": 3, "name": "level", "description": "low: only by name; medium; high",
                          "required": true,
                          "choices": [{"name": "low", "value": "low"},
                                      {"name": "medium", "value": "medium"},
                                      {"name": "high", "value": "high"}]}]},
            {"type": 1, "name": "status",
             "description": "Channel, agent, sensitivity and recent latencies"},
        ],
    });
    serde_json::from_value(command)
        .map(|c| vec![c])
        .unwrap_or_else(|e| unreachable!("static command definition: {e}"))
}

/// Reads an interaction as one of our commands.
pub fn parse(
    name: &str,
    interaction: &Interaction,
    agents: &[String],
) -> Result<SlashCommand, CommandError> {
    let Some(InteractionData::ApplicationCommand(data)) = &interaction.data else {
        return Err(CommandError::NotOurs);
    };
    if data.name != name {
        return Err(CommandError::NotOurs);
    }
    if interaction.guild_id.is_none() {
        return Err(CommandError::NotInGuild);
    }
    let command = subcommand(name, data, agents)?;
    if command.is_setting() {
        let permissions = interaction
            .member
            .as_ref()
            .and_then(|m| m.permissions)
            .unwrap_or_else(Permissions::empty);
        if !permissions.intersects(Permissions::MANAGE_GUILD | Permissions::ADMINISTRATOR) {
            return Err(CommandError::NoPermission);
        }
    }
    Ok(command)
}

fn subcommand(
    name: &str,
    data: &CommandData,
    agents: &[String],
) -> Result<SlashCommand, CommandError> {
    let Some(first) = data.options.first() else {
        return Err(CommandError::Unknown(String::new(), name.into()));
    };
    let CommandOptionValue::SubCommand(options) = &first.value else {
        return Err(CommandError::Unknown(first.name.clone(), name.into()));
    };
    let string = |key: &str| {
        options
            .iter()
            .find(|o| o.name == key)
            .and_then(|o| match &o.value {
                CommandOptionValue::String(s) => Some(s.trim().to_string()),
                _ => None,
            })
    };
    match first.name.as_str() {
        "join" => Ok(SlashCommand::Join {
            channel: options.iter().find_map(|o| match o.value {
                CommandOptionValue::Channel(c) => Some(c.get()),
                _ => None,
            }),
        }),
        "leave" => Ok(SlashCommand::Leave),
        "status" => Ok(SlashCommand::Status),
        "agent" => {
            let given = string("name").unwrap_or_default();
            agents
                .iter()
                .find(|a| a.eq_ignore_ascii_case(&given))
                .map(|a| SlashCommand::Agent(a.clone()))
                .ok_or_else(|| CommandError::UnknownAgent {
                    given,
                    known: agents.join(", "),
                })
        }
        "sensitivity" => {
            let given = string("level").unwrap_or_default();
            given
                .parse::<Sensitivity>()
                .map(SlashCommand::Sensitivity)
                .map_err(|_| CommandError::BadSensitivity(given))
        }
        other => Err(CommandError::Unknown(other.into(), name.into())),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn interaction(options: Value, permissions: &str, guild: bool) -> Interaction {
        let mut v = json!({
            "id": "1500000000000000001", "application_id": "1100000000000000001", "type": 2,
            "token": "t", "version": 1, "authorizing_integration_owners": {},
            "member": {"user": {"id": "1600000000000000001", "username": "ann",
                                "discriminator": "0"},
                       "roles": [], "deaf": false, "mute": false, "flags": 0,
                       "permissions": permissions},
            "data": {"id": "1700000000000000001", "name": "jarvis", "type": 1,
                     "options": options},
        });
        if guild {
            v["guild_id"] = json!("1400000000000000001");
        }
        serde_json::from_value(v).unwrap()
    }

    fn agents() -> Vec<String> {
        vec!["jarvis".into(), "sage".into()]
    }

    fn run(options: Value, permissions: &str) -> Result<SlashCommand, CommandError> {
        parse(
            "jarvis",
            &interaction(options, permissions, true),
            &agents(),
        )
    }

    const MEMBER: &str = "36701184";
    const MANAGER: &str = "32";

    #[test]
    fn every_subcommand_parses() {
        assert_eq!(
            run(json!([{"name": "join", "type": 1}]), MEMBER),
            Ok(SlashCommand::Join { channel: None })
        );
        assert_eq!(
            run(
                json!([{"name": "join", "type": 1, "options": [
                {"name": "channel", "type": 7, "value": "1400000000000000010"}]}]),
                MEMBER
            ),
            Ok(SlashCommand::Join {
                channel: Some(1_400_000_000_000_000_010)
            })
        );
        assert_eq!(
            run(json!([{"name": "leave", "type": 1}]), MEMBER),
            Ok(SlashCommand::Leave)
        );
        assert_eq!(
            run(json!([{"name": "status", "type": 1}]), MEMBER),
            Ok(SlashCommand::Status)
        );
        assert_eq!(
            run(
                json!([{"name": "agent", "type": 1, "options": [
                {"name": "name", "type": 3, "value": "Sage"}]}]),
                MANAGER
            ),
            Ok(SlashCommand::Agent("sage".into()))
        );
        assert_eq!(
            run(
                json!([{"name": "sensitivity", "type": 1, "options": [
                {"name": "level", "type": 3, "value": "high"}]}]),
                MANAGER
            ),
            Ok(SlashCommand::Sensitivity(Sensitivity::High))
        );
    }

    #[test]
    fn invalid_uses_get_a_message_for_the_user() {
        let e = run(
            json!([{"name": "agent", "type": 1, "options": [
            {"name": "name", "type": 3, "value": "hal"}]}]),
            MANAGER,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "There is no agent called `hal`. Available: jarvis, sage."
        );
        let e = run(
            json!([{"name": "sensitivity", "type": 1, "options": [
            {"name": "level", "type": 3, "value": "loud"}]}]),
            MANAGER,
        )
        .unwrap_err();
        assert!(e.to_string().contains("low, medium or high"), "{e}");
        // Settings need Manage Server; joining does not.
        let e = run(
            json!([{"name": "sensitivity", "type": 1, "options": [
            {"name": "level", "type": 3, "value": "low"}]}]),
            MEMBER,
        )
        .unwrap_err();
        assert_eq!(e, CommandError::NoPermission);
        let e = run(json!([{"name": "dance", "type": 1}]), MEMBER).unwrap_err();
        assert!(e.to_string().contains("/jarvis status"), "{e}");
        let dm = interaction(json!([{"name": "join", "type": 1}]), MEMBER, false);
        assert_eq!(
            parse("jarvis", &dm, &agents()),
            Err(CommandError::NotInGuild)
        );
        assert_eq!(
            parse("sage", &dm, &agents()),
            Err(CommandError::NotOurs),
            "another deployment's command"
        );
    }

    #[test]
    fn definitions_are_valid_commands_with_the_agents_as_choices() {
        let defs = definitions("jarvis", &agents());
        let c = &defs[0];
        assert_eq!(c.name, "jarvis");
        let names: Vec<_> = c.options.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["join", "leave", "agent", "sensitivity", "status"]);
        let agent = &c.options[2].options.as_ref().unwrap()[0];
        assert_eq!(agent.choices.as_ref().unwrap().len(), 2);
        // Never more choices than Discord accepts.
        let many: Vec<String> = (0..40).map(|i| format!("a{i}")).collect();
        let defs = definitions("jarvis", &many);
        let agent = &defs[0].options[2].options.as_ref().unwrap()[0];
        assert_eq!(agent.choices.as_ref().unwrap().len(), MAX_CHOICES);
    }
}
