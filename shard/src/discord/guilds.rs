//! What the shard knows of its guilds: each guild's settings (agent, sensitivity, the voice
//! channel the bot is in) and who is in which voice channel, and what a slash command does
//! with them. Pure state, no I/O: the gateway loop feeds it events and carries out the
//! [`VoiceAction`]s it returns; Redis persistence wraps it (fleet state).

use std::collections::HashMap;

use crate::state::{MAX_CAST, Sensitivity};

use super::commands::{SlashCommand, and_list as list};

pub use crate::state::GuildSettings;

/// What the gateway loop must do after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoiceAction {
    /// Join this channel.
    Join(u64),
    /// Leave the guild's voice channel.
    Leave,
}

/// The answer to a command: an ephemeral message, and maybe a voice action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Shown to the user who ran the command.
    pub content: String,
    /// To carry out.
    pub action: Option<VoiceAction>,
}

impl Reply {
    fn text(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            action: None,
        }
    }
}

/// Recent latency figures for `/status`, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latencies {
    /// End of speech → first reply audio, p50.
    pub p50_ms: Option<f64>,
    /// The same, p95.
    pub p95_ms: Option<f64>,
}

/// The shard's guilds.
#[derive(Debug, Default)]
pub struct Guilds {
    default_agent: String,
    default_sensitivity: Sensitivity,
    settings: HashMap<u64, GuildSettings>,
    /// (guild, user) → voice channel.
    voice: HashMap<(u64, u64), u64>,
    /// Voice channel names, for messages.
    channel_names: HashMap<u64, String>,
    /// Users known to be bots (they never keep the bot in a channel).
    bots: std::collections::HashSet<u64>,
    /// The settings this pod changed (by command, or by leaving an empty channel), per guild:
    /// what wins over the stored settings read late (Redis was down at start).
    touched: HashMap<u64, Touched>,
}

/// Which of a guild's settings this pod changed.
#[derive(Debug, Default, Clone, Copy)]
struct Touched {
    agent: bool,
    sensitivity: bool,
    channel: bool,
}

impl Guilds {
    /// Guilds that have not chosen get `agent` and `sensitivity`.
    pub fn new(agent: impl Into<String>, sensitivity: Sensitivity) -> Self {
        Self {
            default_agent: agent.into(),
            default_sensitivity: sensitivity,
            ..Self::default()
        }
    }

    /// A guild's settings (the defaults if it never chose).
    pub fn settings(&self, guild: u64) -> GuildSettings {
        self.settings
            .get(&guild)
            .cloned()
            .unwrap_or_else(|| GuildSettings {
                agent: self.default_agent.clone(),
                guests: Vec::new(),
                sensitivity: self.default_sensitivity,
                channel: None,
            })
    }

    /// Restores settings (from Redis at start-up).
    pub fn restore(&mut self, guild: u64, settings: GuildSettings) {
        self.settings.insert(guild, settings);
    }

    /// Settings read late (Redis answered after the pod started): the stored ones, except
    /// what this pod changed since it started. Returns the guild's settings now.
    pub fn merge_stored(&mut self, guild: u64, stored: GuildSettings) -> GuildSettings {
        let mut merged = stored;
        if let (Some(mine), Some(t)) = (self.settings.get(&guild), self.touched.get(&guild)) {
            if t.agent {
                merged.agent = mine.agent.clone();
                merged.guests = mine.guests.clone();
            }
            if t.sensitivity {
                merged.sensitivity = mine.sensitivity;
            }
            if t.channel {
                merged.channel = mine.channel;
            }
        }
        self.settings.insert(guild, merged.clone());
        merged
    }

    /// Forgets a guild the bot was removed from (or that was deleted).
    pub fn forget(&mut self, guild: u64) {
        self.settings.remove(&guild);
        self.touched.remove(&guild);
        self.voice.retain(|(g, _), _| *g != guild);
    }

    /// The settings a guild chose (`None`: it never ran a command; nothing to save).
    pub fn chosen(&self, guild: u64) -> Option<&GuildSettings> {
        self.settings.get(&guild)
    }

    /// Guilds whose bot is in (or joining) a voice channel, with the channel.
    pub fn in_voice(&self) -> Vec<(u64, u64)> {
        self.settings
            .iter()
            .filter_map(|(g, s)| Some((*g, s.channel?)))
            .collect()
    }

    /// A guild's voice states: user → (channel, is a bot).
    pub fn voice_states(&self, guild: u64) -> std::collections::BTreeMap<u64, (u64, bool)> {
        self.voice
            .iter()
            .filter(|((g, _), _)| *g == guild)
            .map(|((_, u), c)| (*u, (*c, self.bots.contains(u))))
            .collect()
    }

    /// Names a voice channel (from GUILD_CREATE).
    pub fn name_channel(&mut self, channel: u64, name: impl Into<String>) {
        self.channel_names.insert(channel, name.into());
    }

    /// A user's voice state changed (`None`: left voice).
    pub fn voice_state(&mut self, guild: u64, user: u64, channel: Option<u64>, bot: bool) {
        if bot {
            self.bots.insert(user);
        }
        match channel {
            Some(c) => {
                self.voice.insert((guild, user), c);
            }
            None => {
                self.voice.remove(&(guild, user));
            }
        }
    }

    /// Humans in a voice channel.
    pub fn humans_in(&self, guild: u64, channel: u64) -> usize {
        self.voice
            .iter()
            .filter(|((g, u), c)| *g == guild && **c == channel && !self.bots.contains(u))
            .count()
    }

    /// Whether the bot should leave: it is in a channel no human is in.
    pub fn should_leave(&self, guild: u64) -> bool {
        self.settings
            .get(&guild)
            .and_then(|s| s.channel)
            .is_some_and(|c| self.humans_in(guild, c) == 0)
    }

    /// The bot left the guild's voice channel (on its own, or because it emptied).
    pub fn left(&mut self, guild: u64) {
        if let Some(s) = self.settings.get_mut(&guild) {
            s.channel = None;
            self.touched.entry(guild).or_default().channel = true;
        }
    }

    fn channel_name(&self, channel: u64) -> String {
        self.channel_names
            .get(&channel)
            .cloned()
            .unwrap_or_else(|| format!("<#{channel}>"))
    }

    /// Runs a command from `user` in `guild`.
    pub fn handle(
        &mut self,
        guild: u64,
        user: u64,
        command: &SlashCommand,
        latencies: Latencies,
    ) -> Reply {
        let mut settings = self.settings(guild);
        let reply = match command {
            SlashCommand::Join { channel } => {
                let Some(target) = channel.or_else(|| self.voice.get(&(guild, user)).copied())
                else {
                    return Reply::text(
                        "Join a voice channel first, or name one: `/… join channel:`.",
                    );
                };
                if settings.channel == Some(target) {
                    return Reply::text(format!("I'm already in {}.", self.channel_name(target)));
                }
                settings.channel = Some(target);
                let cast = cast_of(&settings);
                Reply {
                    content: format!(
                        "Joining {} — {} {} listening.",
                        self.channel_name(target),
                        list(&cast),
                        if cast.len() > 1 { "are" } else { "is" }
                    ),
                    action: Some(VoiceAction::Join(target)),
                }
            }
            SlashCommand::Leave => match settings.channel.take() {
                None => return Reply::text("I'm not in a voice channel."),
                Some(c) => Reply {
                    content: format!("Leaving {}.", self.channel_name(c)),
                    action: Some(VoiceAction::Leave),
                },
            },
            SlashCommand::Agent(agent) => {
                settings.agent = agent.clone();
                settings.guests.retain(|g| g != agent);
                if settings.guests.is_empty() {
                    Reply::text(format!("{agent} will answer from now on."))
                } else {
                    Reply::text(format!(
                        "{agent} will answer from now on; {} when called by name.",
                        list(&settings.guests)
                    ))
                }
            }
            SlashCommand::Invite(agent) => {
                if cast_of(&settings).contains(agent) {
                    return Reply::text(format!("{agent} is already here."));
                }
                if 1 + settings.guests.len() >= MAX_CAST {
                    return Reply::text(format!(
                        "A room holds at most {MAX_CAST} agents: `/… dismiss` one first."
                    ));
                }
                let hosts = cast_of(&settings);
                settings.guests.push(agent.clone());
                Reply::text(format!(
                    "{agent} joins {}: call each by name (a question without a name goes to whoever spoke last).",
                    list(&hosts)
                ))
            }
            SlashCommand::Dismiss(agent) => {
                if settings.guests.contains(agent) {
                    settings.guests.retain(|g| g != agent);
                    Reply::text(format!("{agent} has left the room."))
                } else if settings.agent == *agent {
                    if settings.guests.is_empty() {
                        return Reply::text(format!(
                            "{agent} is the only agent here: choose another with `/… agent`."
                        ));
                    }
                    settings.agent = settings.guests.remove(0);
                    Reply::text(format!(
                        "{agent} has left the room; {} answers from now on.",
                        settings.agent
                    ))
                } else {
                    return Reply::text(format!("{agent} is not in the room."));
                }
            }
            SlashCommand::Sensitivity(level) => {
                settings.sensitivity = *level;
                Reply::text(format!(
                    "Sensitivity is now {}: {}.",
                    level.as_str(),
                    match level {
                        Sensitivity::Low => "I answer when called by name",
                        Sensitivity::Medium => "I also answer what is clearly meant for me",
                        Sensitivity::High => "I also answer what might be meant for me",
                    }
                ))
            }
            SlashCommand::Status => {
                let channel = settings.channel.map_or_else(
                    || "not in a voice channel".into(),
                    |c| format!("in {}", self.channel_name(c)),
                );
                let latency = match (latencies.p50_ms, latencies.p95_ms) {
                    (Some(p50), Some(p95)) => {
                        format!("voice-to-voice p50 {p50:.0} ms, p95 {p95:.0} ms")
                    }
                    _ => "no turns yet".into(),
                };
                let cast = cast_of(&settings);
                return Reply::text(format!(
                    "Agent{} {}, sensitivity {}, {channel}; {latency}.",
                    if cast.len() > 1 { "s" } else { "" },
                    list(&cast),
                    settings.sensitivity.as_str()
                ));
            }
        };
        let t = self.touched.entry(guild).or_default();
        match command {
            SlashCommand::Join { .. } | SlashCommand::Leave => t.channel = true,
            SlashCommand::Agent(_) | SlashCommand::Invite(_) | SlashCommand::Dismiss(_) => {
                t.agent = true;
            }
            SlashCommand::Sensitivity(_) => t.sensitivity = true,
            SlashCommand::Status => {}
        }
        self.settings.insert(guild, settings);
        reply
    }
}

/// The guild's agents, its own first (as chosen; the room leaves out what the spec dropped).
fn cast_of(settings: &GuildSettings) -> Vec<String> {
    std::iter::once(&settings.agent)
        .chain(&settings.guests)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1;
    const ANN: u64 = 10;
    const BOT: u64 = 99;
    const LOUNGE: u64 = 100;

    fn guilds() -> Guilds {
        let mut g = Guilds::new("jarvis", Sensitivity::Low);
        g.name_channel(LOUNGE, "Lounge");
        g
    }

    #[test]
    fn join_follows_the_user_and_refuses_when_they_are_not_in_voice() {
        let mut g = guilds();
        let r = g.handle(
            G,
            ANN,
            &SlashCommand::Join { channel: None },
            Latencies::default(),
        );
        assert!(r.content.contains("Join a voice channel first"), "{r:?}");
        assert_eq!(r.action, None);
        g.voice_state(G, ANN, Some(LOUNGE), false);
        let r = g.handle(
            G,
            ANN,
            &SlashCommand::Join { channel: None },
            Latencies::default(),
        );
        assert_eq!(r.action, Some(VoiceAction::Join(LOUNGE)));
        assert_eq!(r.content, "Joining Lounge — jarvis is listening.");
        assert_eq!(g.settings(G).channel, Some(LOUNGE));
        let again = g.handle(
            G,
            ANN,
            &SlashCommand::Join { channel: None },
            Latencies::default(),
        );
        assert_eq!(again.action, None);
    }

    #[test]
    fn settings_change_and_show_in_status() {
        let mut g = guilds();
        g.handle(
            G,
            ANN,
            &SlashCommand::Agent("sage".into()),
            Latencies::default(),
        );
        g.handle(
            G,
            ANN,
            &SlashCommand::Sensitivity(Sensitivity::High),
            Latencies::default(),
        );
        let s = g.settings(G);
        assert_eq!(
            (s.agent.as_str(), s.sensitivity),
            ("sage", Sensitivity::High)
        );
        let status = g.handle(
            G,
            ANN,
            &SlashCommand::Status,
            Latencies {
                p50_ms: Some(812.0),
                p95_ms: Some(1190.0),
            },
        );
        assert_eq!(
            status.content,
            "Agent sage, sensitivity high, not in a voice channel; voice-to-voice p50 812 ms, p95 1190 ms."
        );
        // Another guild keeps the defaults.
        assert_eq!(g.settings(2).agent, "jarvis");
    }

    #[test]
    fn agents_are_invited_and_dismissed() {
        let mut g = guilds();
        let run = |g: &mut Guilds, c: SlashCommand| g.handle(G, ANN, &c, Latencies::default());
        let r = run(&mut g, SlashCommand::Invite("sage".into()));
        assert_eq!(
            r.content,
            "sage joins jarvis: call each by name (a question without a name goes to whoever spoke last)."
        );
        assert_eq!(g.settings(G).guests, ["sage"]);
        let r = run(&mut g, SlashCommand::Invite("sage".into()));
        assert_eq!(r.content, "sage is already here.");
        let r = run(&mut g, SlashCommand::Invite("jarvis".into()));
        assert_eq!(r.content, "jarvis is already here.");
        g.voice_state(G, ANN, Some(LOUNGE), false);
        let r = run(&mut g, SlashCommand::Join { channel: None });
        assert_eq!(r.content, "Joining Lounge — jarvis and sage are listening.");
        let r = run(&mut g, SlashCommand::Status);
        assert!(
            r.content
                .starts_with("Agents jarvis and sage, sensitivity low, in Lounge"),
            "{r:?}"
        );
        // A full room refuses one more.
        run(&mut g, SlashCommand::Invite("ada".into()));
        run(&mut g, SlashCommand::Invite("bob".into()));
        let r = run(&mut g, SlashCommand::Invite("cy".into()));
        assert!(r.content.contains("at most 4 agents"), "{r:?}");
        assert_eq!(g.settings(G).guests, ["sage", "ada", "bob"]);
        // Dismissing a guest; dismissing the room's own agent hands the room to the first guest.
        let r = run(&mut g, SlashCommand::Dismiss("ada".into()));
        assert_eq!(r.content, "ada has left the room.");
        let r = run(&mut g, SlashCommand::Dismiss("jarvis".into()));
        assert_eq!(
            r.content,
            "jarvis has left the room; sage answers from now on."
        );
        let s = g.settings(G);
        assert_eq!(
            (s.agent.as_str(), s.guests.as_slice()),
            ("sage", &["bob".to_string()][..])
        );
        let r = run(&mut g, SlashCommand::Dismiss("jarvis".into()));
        assert_eq!(r.content, "jarvis is not in the room.");
        // Choosing a guest as the agent takes it out of the guests.
        let r = run(&mut g, SlashCommand::Agent("bob".into()));
        assert_eq!(r.content, "bob will answer from now on.");
        let s = g.settings(G);
        assert_eq!((s.agent.as_str(), s.guests.len()), ("bob", 0));
        let r = run(&mut g, SlashCommand::Dismiss("bob".into()));
        assert!(r.content.contains("the only agent here"), "{r:?}");
        assert_eq!(g.settings(G).agent, "bob");
        // The change wins over settings Redis returns late.
        let merged = g.merge_stored(
            G,
            GuildSettings {
                agent: "jarvis".into(),
                guests: vec!["sage".into()],
                sensitivity: Sensitivity::High,
                channel: None,
            },
        );
        assert_eq!((merged.agent.as_str(), merged.guests.len()), ("bob", 0));
        assert_eq!(merged.sensitivity, Sensitivity::High);
    }

    #[test]
    fn settings_read_late_keep_what_changed_meanwhile() {
        let mut g = guilds();
        // Redis was down at start: the pod serves the defaults; a user changes one setting.
        g.handle(
            G,
            ANN,
            &SlashCommand::Sensitivity(Sensitivity::Medium),
            Latencies::default(),
        );
        let stored = GuildSettings {
            agent: "sage".into(),
            guests: vec![],
            sensitivity: Sensitivity::High,
            channel: Some(LOUNGE),
        };
        let merged = g.merge_stored(G, stored.clone());
        assert_eq!(merged.agent, "sage", "the stored agent is kept");
        assert_eq!(
            merged.sensitivity,
            Sensitivity::Medium,
            "the new level wins"
        );
        assert_eq!(merged.channel, Some(LOUNGE), "the stored channel is kept");
        assert_eq!(g.settings(G), merged);
        // A guild nobody touched gets what was stored.
        assert_eq!(g.merge_stored(2, stored.clone()), stored);
        g.forget(G);
        assert_eq!(g.settings(G).agent, "jarvis");
        assert!(g.chosen(G).is_none());
    }

    #[test]
    fn the_bot_leaves_a_channel_without_humans() {
        let mut g = guilds();
        g.voice_state(G, ANN, Some(LOUNGE), false);
        g.handle(
            G,
            ANN,
            &SlashCommand::Join { channel: None },
            Latencies::default(),
        );
        g.voice_state(G, BOT, Some(LOUNGE), true);
        assert!(!g.should_leave(G));
        g.voice_state(G, ANN, None, false);
        assert!(g.should_leave(G), "only the bot is left");
        let r = g.handle(G, ANN, &SlashCommand::Leave, Latencies::default());
        assert_eq!(r.action, Some(VoiceAction::Leave));
        assert!(!g.should_leave(G));
        let r = g.handle(G, ANN, &SlashCommand::Leave, Latencies::default());
        assert_eq!(r.content, "I'm not in a voice channel.");
    }
}
