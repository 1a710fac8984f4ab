//! The simulator's world: guilds, sessions, and the record of what the bot did.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How the simulated Discord is set up.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The bot's application id.
    pub application_id: u64,
    /// The bot user.
    pub bot: User,
    /// Shards `GET /gateway/bot` recommends.
    pub shards: u32,
    /// `session_start_limit.max_concurrency`.
    pub max_concurrency: u32,
    /// Heartbeat interval sent in HELLO, ms.
    pub heartbeat_interval_ms: u64,
    /// The token the bot must present (`Bot <token>` on REST, in IDENTIFY).
    pub token: String,
    /// The voice server's TLS identity (generated when `None`; the bot must trust it, see
    /// [`crate::TlsIdentity`]).
    pub tls: Option<std::sync::Arc<crate::TlsIdentity>>,
    /// Negotiate DAVE (end-to-end encrypted voice, version 1) with a bot that offers it, as
    /// Discord requires; `false`: transport encryption only (`dave_protocol_version: 0`).
    pub dave: bool,
    /// The address every server binds (REST, gateway, voice WebSocket and UDP): loopback for
    /// tests in one process; an address of a network namespace the test made when the bot runs
    /// elsewhere (a pod). The voice endpoint names it (`localhost` for loopback).
    pub host: std::net::IpAddr,
    /// Ports of the REST API, the gateway and the voice server (WebSocket and UDP); 0: any free.
    pub ports: [u16; 3],
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            application_id: 1_100_000_000_000_000_001,
            bot: User::new(1_100_000_000_000_000_001, "Jarvis", true),
            shards: 1,
            max_concurrency: 1,
            heartbeat_interval_ms: 41_250,
            token: "sim-bot-token".into(),
            tls: None,
            dave: true,
            host: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            ports: [0; 3],
        }
    }
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Snowflake.
    pub id: u64,
    /// Username.
    pub name: String,
    /// Whether it is a bot.
    pub bot: bool,
}

impl User {
    /// A user.
    pub fn new(id: u64, name: &str, bot: bool) -> Self {
        Self {
            id,
            name: name.into(),
            bot,
        }
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "id": self.id.to_string(),
            "username": self.name,
            "global_name": self.name,
            "discriminator": "0",
            "avatar": null,
            "bot": self.bot,
        })
    }
}

/// A guild with a text channel and voice channels.
#[derive(Debug, Clone)]
pub struct Guild {
    /// Snowflake (its shard is `(id >> 22) % shards`).
    pub id: u64,
    /// Name.
    pub name: String,
    /// Owner (has every permission).
    pub owner: u64,
    /// A text channel.
    pub text_channel: u64,
    /// Voice channels: id and name.
    pub voice_channels: Vec<(u64, String)>,
    /// Members (the bot is added automatically).
    pub members: Vec<User>,
    /// Members' permissions beyond @everyone's (View Channel, Connect, Speak, Use Voice
    /// Activity), by user; the owner has every permission.
    pub permissions: HashMap<u64, u64>,
    /// Members a server admin allowed to use a command whatever its
    /// `default_member_permissions` (Server Settings → Integrations), by command name.
    pub command_overrides: HashMap<String, Vec<u64>>,
    /// Who is in which voice channel (users and the bot): GUILD_CREATE carries it, as
    /// Discord's does, so a bot that IDENTIFYs afresh knows who is in voice.
    pub voice: std::collections::BTreeMap<u64, u64>,
}

/// What @everyone may do: View Channel, Connect, Speak, Use Voice Activity.
pub const EVERYONE: u64 = (1 << 10) | (1 << 20) | (1 << 21) | (1 << 25);
/// Every permission (the owner's).
pub const ALL: u64 = (1 << 41) - 1;

impl Guild {
    /// A guild owned by `owner` with a text channel (`id + 1`) and one voice channel; the
    /// owner is a member.
    pub fn new(id: u64, owner: &User, voice: (u64, &str), members: &[User]) -> Self {
        let mut all = vec![owner.clone()];
        all.extend(members.iter().filter(|m| m.id != owner.id).cloned());
        Self {
            id,
            name: "Test guild".into(),
            owner: owner.id,
            text_channel: id + 1,
            voice_channels: vec![(voice.0, voice.1.into())],
            members: all,
            permissions: HashMap::new(),
            command_overrides: HashMap::new(),
            voice: std::collections::BTreeMap::new(),
        }
    }

    /// Gives `user` the permissions `bits` (on top of @everyone's), as a role would.
    pub fn with_permissions(mut self, user: &User, bits: u64) -> Self {
        self.permissions.insert(user.id, bits);
        self
    }

    /// Lets `user` use `command` whatever its default permissions, as a server admin can in
    /// Server Settings → Integrations (the bot still sees the member's real permissions).
    pub fn allow_command(mut self, command: &str, user: &User) -> Self {
        self.command_overrides
            .entry(command.to_string())
            .or_default()
            .push(user.id);
        self
    }

    /// A member's permissions in the guild.
    pub fn permissions_of(&self, user: u64) -> u64 {
        if user == self.owner {
            ALL
        } else {
            EVERYONE | self.permissions.get(&user).copied().unwrap_or(0)
        }
    }
}

/// Something the bot did, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum SimEvent {
    /// An IDENTIFY on the main gateway.
    Identify {
        /// `[shard, total]`.
        shard: [u32; 2],
        /// Intents requested.
        intents: u64,
        /// When (ms since the simulator started).
        at_ms: u64,
    },
    /// A RESUME of an existing session.
    Resume {
        /// The session.
        session_id: String,
        /// The last sequence the bot saw.
        seq: u64,
        /// Whether the simulator knew the session (else it answered INVALID_SESSION).
        accepted: bool,
    },
    /// A voice state update (op 4): join (`channel`) or leave (`None`).
    VoiceState {
        /// Guild.
        guild: u64,
        /// Channel, or `None` to leave.
        channel: Option<u64>,
    },
    /// The bot connected to a guild's voice server (identify), or resumed its connection.
    VoiceConnect {
        /// Guild.
        guild: u64,
        /// Whether it was a resume (op 7) rather than a new identify.
        resumed: bool,
        /// The highest DAVE protocol version the bot offered (`max_dave_protocol_version`;
        /// 0 when it offered none). The simulator itself answers 0 (no end-to-end encryption).
        max_dave_version: u64,
    },
    /// A REST request answered 429 (a rate limit the test asked for).
    RateLimited {
        /// The request's path under `/api/v10`.
        path: String,
        /// The `retry_after` it was given, seconds.
        retry_after: f64,
        /// When (ms since the simulator started).
        at_ms: u64,
    },
    /// Commands registered (`PUT .../commands`).
    Commands {
        /// Guild for guild commands.
        guild: Option<u64>,
        /// The commands as sent.
        commands: Value,
    },
    /// The bot answered an interaction (callback, or an edit / follow-up of its response).
    InteractionReply {
        /// The interaction (for callbacks) or 0 for webhook edits.
        interaction: u64,
        /// The message content.
        content: String,
        /// Whether it was ephemeral (flag 64).
        ephemeral: bool,
    },
}

/// What a connection's writer sends next.
pub(crate) enum Out {
    /// A text frame.
    Text(String),
    /// Close with this code and reason, then stop.
    Close(u16, &'static str),
}

/// A live gateway session.
pub(crate) struct Session {
    pub shard: [u32; 2],
    pub seq: u64,
    /// Frames to send to the bot, while it is connected.
    pub tx: Option<mpsc::UnboundedSender<Out>>,
    /// Its READY and GUILD_CREATEs have been sent.
    pub guilds_sent: bool,
}

pub(crate) struct Inner {
    pub guilds: BTreeMap<u64, Guild>,
    pub sessions: HashMap<String, Session>,
    pub history: Vec<SimEvent>,
    /// Interaction id → token.
    pub interactions: HashMap<u64, String>,
    /// Commands registered: (guild, or `None` for global; name) → definition.
    pub commands: HashMap<(Option<u64>, String), Value>,
    /// Rate limits to play: (REST path prefix under `/api/v10`, requests still refused,
    /// `retry_after` in seconds).
    pub rate_limits: Vec<(String, u32, f64)>,
    /// IDENTIFYs that made a guild owned by two connected sessions at once (two pods claiming
    /// one shard, or an old and a new shard count overlapping during a reshard).
    pub double_owners: Vec<DoubleOwner>,
}

/// A guild that two connected sessions owned at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoubleOwner {
    /// The guild.
    pub guild: u64,
    /// The session already connected, `[shard, total]`.
    pub connected: [u32; 2],
    /// The session that identified, `[shard, total]`.
    pub identified: [u32; 2],
}

pub(crate) struct Shared {
    pub config: SimConfig,
    pub gateway_url: String,
    pub started: Instant,
    pub inner: Mutex<Inner>,
    pub events: broadcast::Sender<SimEvent>,
    pub voice: crate::voice::VoiceServer,
    next_id: AtomicU64,
}

impl Shared {
    pub fn new(config: SimConfig, gateway_url: String, voice: crate::voice::VoiceServer) -> Self {
        Self {
            config,
            gateway_url,
            started: Instant::now(),
            inner: Mutex::new(Inner {
                guilds: BTreeMap::new(),
                sessions: HashMap::new(),
                history: Vec::new(),
                interactions: HashMap::new(),
                commands: HashMap::new(),
                rate_limits: Vec::new(),
                double_owners: Vec::new(),
            }),
            events: broadcast::channel(1024).0,
            voice,
            next_id: AtomicU64::new(1_200_000_000_000_000_000),
        }
    }

    /// A fresh snowflake.
    pub fn id(&self) -> u64 {
        self.next_id.fetch_add(1 << 22, Ordering::Relaxed)
    }

    pub fn record(&self, event: SimEvent) {
        lock(&self.inner).history.push(event.clone());
        let _ = self.events.send(event);
    }

    pub fn at_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}
