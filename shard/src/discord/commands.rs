//! The slash commands: one command per agent deployment (`/jarvis join|leave|agent|
//! sensitivity|status|invite|dismiss`), their definitions for Discord and the parsing of an interaction into a
//! typed command, with a friendly message for every invalid use.

use serde_json::json;
use twilight_model::application::command::Command;
use twilight_model::application::interaction::application_command::{
    CommandData, CommandOptionValue,
};
use twilight_model::application::interaction::{Interaction, InteractionData};
use twilight_model::guild::Permissions;
use voicebot_config::{CommandsConfig, Permission};

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
    /// Bring another agent into the guild's room: it answers when called by name.
    Invite(String),
    /// Send an invited agent away.
    Dismiss(String),
    /// Change the guild's sensitivity.
    Sensitivity(Sensitivity),
    /// Show the channel, agent, sensitivity and recent latencies.
    Status,
}

impl SlashCommand {
    /// Whether it changes the guild's settings (agents, sensitivity).
    pub fn is_setting(&self) -> bool {
        matches!(
            self,
            Self::Agent(_) | Self::Invite(_) | Self::Dismiss(_) | Self::Sensitivity(_)
        )
    }

    /// The subcommand's name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Join { .. } => "join",
            Self::Leave => "leave",
            Self::Agent(_) => "agent",
            Self::Invite(_) => "invite",
            Self::Dismiss(_) => "dismiss",
            Self::Sensitivity(_) => "sensitivity",
            Self::Status => "status",
        }
    }
}

/// Who may run each subcommand (`commands` in the configuration): checked on every command
/// received, whatever Discord let through.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandPermissions(CommandsConfig);

impl CommandPermissions {
    /// From the configuration.
    pub fn new(config: CommandsConfig) -> Self {
        Self(config)
    }

    fn needed(&self, command: &SlashCommand) -> &[Permission] {
        let c = &self.0;
        match command {
            SlashCommand::Join { .. } => &c.join,
            SlashCommand::Leave => &c.leave,
            // Who answers in the guild is one setting: choosing, inviting, dismissing.
            SlashCommand::Agent(_) | SlashCommand::Invite(_) | SlashCommand::Dismiss(_) => &c.agent,
            SlashCommand::Sensitivity(_) => &c.sensitivity,
            SlashCommand::Status => &c.status,
        }
    }

    /// The command's `default_member_permissions`: what every subcommand needs (`None`:
    /// nothing in common, every member sees the command).
    pub fn default_member(&self) -> Option<Permissions> {
        Some(Permissions::from_bits_truncate(self.0.common_bits())).filter(|p| !p.is_empty())
    }

    /// Whether a member with `has` may run `command` (Administrator always may).
    pub fn check(&self, command: &SlashCommand, has: Permissions) -> Result<(), Vec<Permission>> {
        if has.contains(Permissions::ADMINISTRATOR) {
            return Ok(());
        }
        let needed = self.needed(command);
        let wanted = Permissions::from_bits_truncate(Permission::bits(needed));
        if has.contains(wanted) {
            Ok(())
        } else {
            Err(needed.to_vec())
        }
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
    /// The member lacks a permission the subcommand needs.
    #[error("`/{command} {sub}` needs the {} permission{}.", labels(.needs), if .needs.len() > 1 { "s" } else { "" })]
    NoPermission {
        /// The slash command.
        command: String,
        /// The subcommand.
        sub: &'static str,
        /// What it needs.
        needs: Vec<Permission>,
    },
}

fn labels(needs: &[Permission]) -> String {
    let names: Vec<&str> = needs.iter().map(|p| p.label()).collect();
    and_list(&names)
}

/// "a", "a and b", "a, b and c" (for the answers users read).
pub(crate) fn and_list<S: AsRef<str>>(names: &[S]) -> String {
    match names {
        [] => String::new(),
        [one] => one.as_ref().to_string(),
        [rest @ .., last] => {
            let rest: Vec<&str> = rest.iter().map(AsRef::as_ref).collect();
            format!("{} and {}", rest.join(", "), last.as_ref())
        }
    }
}

/// Discord allows 25 choices per option.
const MAX_CHOICES: usize = 25;

/// The command definitions to register (guild or global) for command `name`, shown by
/// default to members who have what every subcommand needs.
pub fn definitions(
    name: &str,
    agents: &[String],
    permissions: &CommandPermissions,
) -> Vec<Command> {
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
            {"type": 1, "name": "invite",
             "description": "Bring another agent into the room: it answers when called by name",
             "options": [{"type": 3, "name": "name", "description": "Agent", "required": true,
                          "choices": agent_choices}]},
            {"type": 1, "name": "dismiss", "description": "Send an invited agent away",
             "options": [{"type": 3, "name": "name", "description": "Agent", "required": true,
                          "choices": agent_choices}]},
        ],
    });
    let mut command: Command = serde_json::from_value(command)
        .unwrap_or_else(|e| unreachable!("static command definition: {e}"));
    command.default_member_permissions = permissions.default_member();
    vec![command]
}

/// Reads an interaction as one of our commands.
pub fn parse(
    name: &str,
    interaction: &Interaction,
    agents: &[String],
    permissions: &CommandPermissions,
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
    // Discord sends the member's permissions in the channel with every guild interaction;
    // none sent counts as none held.
    let has = interaction
        .member
        .as_ref()
        .and_then(|m| m.permissions)
        .unwrap_or_else(Permissions::empty);
    permissions
        .check(&command, has)
        .map_err(|needs| CommandError::NoPermission {
            command: name.to_string(),
            sub: command.name(),
            needs,
        })?;
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
        sub @ ("agent" | "invite" | "dismiss") => {
            let given = string("name").unwrap_or_default();
            let agent = agents
                .iter()
                .find(|a| a.eq_ignore_ascii_case(&given))
                .cloned()
                .ok_or_else(|| CommandError::UnknownAgent {
                    given,
                    known: agents.join(", "),
                })?;
            Ok(match sub {
                "invite" => SlashCommand::Invite(agent),
                "dismiss" => SlashCommand::Dismiss(agent),
                _ => SlashCommand::Agent(agent),
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
            &CommandPermissions::default(),
        )
    }

    /// View Channel, Connect, Speak, Use Voice Activity: what @everyone has.
    const MEMBER: &str = "36701184";
    /// A member and Move Members.
    const MOVER: &str = "53478400";
    /// Move Members and Manage Server.
    const MANAGER: &str = "16777248";
    /// Administrator only.
    const ADMIN: &str = "8";

    #[test]
    fn every_subcommand_parses() {
        assert_eq!(
            run(json!([{"name": "join", "type": 1}]), MOVER),
            Ok(SlashCommand::Join { channel: None })
        );
        assert_eq!(
            run(
                json!([{"name": "join", "type": 1, "options": [
                {"name": "channel", "type": 7, "value": "1400000000000000010"}]}]),
                MOVER
            ),
            Ok(SlashCommand::Join {
                channel: Some(1_400_000_000_000_000_010)
            })
        );
        assert_eq!(
            run(json!([{"name": "leave", "type": 1}]), MOVER),
            Ok(SlashCommand::Leave)
        );
        assert_eq!(
            run(json!([{"name": "status", "type": 1}]), ADMIN),
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
        assert_eq!(
            run(
                json!([{"name": "invite", "type": 1, "options": [
                {"name": "name", "type": 3, "value": " sage "}]}]),
                MANAGER
            ),
            Ok(SlashCommand::Invite("sage".into()))
        );
        assert_eq!(
            run(
                json!([{"name": "dismiss", "type": 1, "options": [
                {"name": "name", "type": 3, "value": "SAGE"}]}]),
                MANAGER
            ),
            Ok(SlashCommand::Dismiss("sage".into()))
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
            json!([{"name": "invite", "type": 1, "options": [
            {"name": "name", "type": 3, "value": "hal"}]}]),
            MANAGER,
        )
        .unwrap_err();
        assert!(e.to_string().contains("no agent called `hal`"), "{e}");
        // Inviting is a setting: a voice moderator may not.
        let e = run(
            json!([{"name": "invite", "type": 1, "options": [
            {"name": "name", "type": 3, "value": "sage"}]}]),
            MOVER,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "`/jarvis invite` needs the Move Members and Manage Server permissions."
        );
        let e = run(
            json!([{"name": "sensitivity", "type": 1, "options": [
            {"name": "level", "type": 3, "value": "loud"}]}]),
            MANAGER,
        )
        .unwrap_err();
        assert!(e.to_string().contains("low, medium or high"), "{e}");
        // Settings need Manage Server too; joining does not.
        let e = run(
            json!([{"name": "sensitivity", "type": 1, "options": [
            {"name": "level", "type": 3, "value": "low"}]}]),
            MOVER,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "`/jarvis sensitivity` needs the Move Members and Manage Server permissions."
        );
        // An everyday member (Discord would not show them the command; the pod checks again).
        for sub in ["join", "leave", "status"] {
            let e = run(json!([{"name": sub, "type": 1}]), MEMBER).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("`/jarvis {sub}` needs the Move Members permission.")
            );
        }
        let e = run(json!([{"name": "dance", "type": 1}]), MEMBER).unwrap_err();
        assert!(e.to_string().contains("/jarvis status"), "{e}");
        let dm = interaction(json!([{"name": "join", "type": 1}]), MEMBER, false);
        let permissions = CommandPermissions::default();
        assert_eq!(
            parse("jarvis", &dm, &agents(), &permissions),
            Err(CommandError::NotInGuild)
        );
        assert_eq!(
            parse("sage", &dm, &agents(), &permissions),
            Err(CommandError::NotOurs),
            "another deployment's command"
        );
    }

    #[test]
    fn definitions_are_valid_commands_with_the_agents_as_choices() {
        let defs = definitions("jarvis", &agents(), &CommandPermissions::default());
        let c = &defs[0];
        assert_eq!(
            c.default_member_permissions,
            Some(Permissions::MOVE_MEMBERS),
            "shown to voice moderators"
        );
        assert_eq!(c.name, "jarvis");
        let names: Vec<_> = c.options.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "join",
                "leave",
                "agent",
                "sensitivity",
                "status",
                "invite",
                "dismiss"
            ]
        );
        for i in [2, 5, 6] {
            let agent = &c.options[i].options.as_ref().unwrap()[0];
            assert_eq!(agent.choices.as_ref().unwrap().len(), 2);
        }
        // Never more choices than Discord accepts.
        let many: Vec<String> = (0..40).map(|i| format!("a{i}")).collect();
        let open = CommandPermissions::new(CommandsConfig {
            status: vec![],
            ..CommandsConfig::default()
        });
        let defs = definitions("jarvis", &many, &open);
        assert_eq!(
            defs[0].default_member_permissions, None,
            "shown to everyone"
        );
        let agent = &defs[0].options[2].options.as_ref().unwrap()[0];
        assert_eq!(agent.choices.as_ref().unwrap().len(), MAX_CHOICES);
    }

    #[test]
    fn permissions_are_configurable_per_subcommand() {
        let custom = CommandPermissions::new(CommandsConfig {
            join: vec![],
            status: vec![],
            agent: vec![Permission::ManageGuild],
            ..CommandsConfig::default()
        });
        let member = Permissions::from_bits_truncate(36_701_184);
        assert_eq!(
            custom.check(&SlashCommand::Join { channel: None }, member),
            Ok(())
        );
        assert_eq!(
            custom.check(&SlashCommand::Leave, member),
            Err(vec![Permission::MoveMembers])
        );
        assert_eq!(
            custom.check(
                &SlashCommand::Agent("sage".into()),
                Permissions::MANAGE_GUILD
            ),
            Ok(())
        );
        assert_eq!(
            custom.check(&SlashCommand::Leave, Permissions::ADMINISTRATOR),
            Ok(())
        );
        // The configuration's bits are Discord's (twilight's constants).
        for (p, t) in [
            (Permission::MoveMembers, Permissions::MOVE_MEMBERS),
            (Permission::ManageGuild, Permissions::MANAGE_GUILD),
            (Permission::Administrator, Permissions::ADMINISTRATOR),
            (Permission::ModerateMembers, Permissions::MODERATE_MEMBERS),
            (Permission::ManageRoles, Permissions::MANAGE_ROLES),
            (Permission::PrioritySpeaker, Permissions::PRIORITY_SPEAKER),
            (Permission::Connect, Permissions::CONNECT),
            (Permission::Speak, Permissions::SPEAK),
            (Permission::MuteMembers, Permissions::MUTE_MEMBERS),
            (Permission::DeafenMembers, Permissions::DEAFEN_MEMBERS),
            (Permission::KickMembers, Permissions::KICK_MEMBERS),
            (Permission::BanMembers, Permissions::BAN_MEMBERS),
            (Permission::ManageChannels, Permissions::MANAGE_CHANNELS),
            (Permission::SendMessages, Permissions::SEND_MESSAGES),
        ] {
            assert_eq!(p.bit(), t.bits(), "{p:?}");
        }
    }
}
