//! The bot's runtime configuration: **one type, three users**.
//!
//! - The `VoiceBot` custom resource embeds [`BotConfig`] in its spec (`voicebot-crds`), so the
//!   API server validates it with the schema generated from these types.
//! - The operator renders it, unchanged, into the pods' ConfigMap (`voicebot.json`), and turns
//!   each [`SecretKeyRef`] into an environment variable of the pod ([`env`]).
//! - The shard parses the same type ([`BotConfig::from_json`]) and builds its pipeline from it.
//!
//! Secrets are never in the configuration, only references to them; the pod receives their
//! values in the environment variables named in [`env`].
//!
//! The oldest API server we support (1.20) has no CEL rules: what the schema cannot say
//! (unique names, a URL that the `http` backend needs, a Piper voice that exists) is checked by
//! [`BotConfig::validate`], which the operator runs before it renders anything (a refused
//! field becomes a status condition that names it) and the shard runs at start-up.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The pods' `/metrics`, `/healthz` and `/readyz` (feature `http`): the same contract for the
/// shard and the operator, which both serve it on `metrics.port`.
#[cfg(feature = "http")]
pub mod health;

/// The environment variables that carry secret values into a shard pod.
pub mod env {
    /// The Discord bot token (`spec.discord.tokenSecret`).
    pub const DISCORD_TOKEN: &str = "DISCORD_TOKEN";
    /// The OpenClaw gateway token (`gateway.tokenSecret`).
    pub const GATEWAY_TOKEN: &str = "OPENCLAW_GATEWAY_TOKEN";
    /// The whole Redis URL, password included (`redis.urlSecret`).
    pub const REDIS_URL: &str = "REDIS_URL";
    /// The speech endpoint's API key (`models.tts.apiKeySecret`).
    pub const TTS_API_KEY: &str = "TTS_API_KEY";
    /// The key that seals the secrets kept in Redis (`redis.sealKeySecret`).
    pub const STATE_KEY: &str = "VOICEBOT_STATE_KEY";
    /// The PEM CA certificate that Redis's TLS certificate is checked against (`redis.caSecret`).
    pub const REDIS_CA: &str = "REDIS_CA";
}

/// Piper voices that `scripts/setup.sh` and the image provision (`models/manifest.tsv` has a
/// `piper/<name>.onnx` for each; a test checks the two agree).
pub const PIPER_VOICES: &[&str] = &["en_US-joe-medium"];

/// Prefix of espeak-ng's own voices, the other local voices (`espeak:en-us+f3`: US English,
/// female variant 3). The registries hold a single Piper voice; espeak-ng (which Piper needs
/// for its phonemes anyway) gives a second, clearly different speaker in the pod.
pub const ESPEAK_PREFIX: &str = "espeak:";

/// Whether a pod can speak with the local voice `name`: a provisioned Piper voice or an
/// espeak-ng voice name (`espeak:<language>[+<variant>]`; that espeak-ng has it is checked by
/// the shard at start-up).
pub fn is_local_voice(name: &str) -> bool {
    if PIPER_VOICES.contains(&name) {
        return true;
    }
    let Some(voice) = name.strip_prefix(ESPEAK_PREFIX) else {
        return false;
    };
    let (language, variant) = voice.split_once('+').unwrap_or((voice, ""));
    let word = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    !language.is_empty()
        && language.len() <= 16
        && language.split('-').all(|p| !p.is_empty() && word(p))
        && variant.len() <= 32
        && word(variant)
}

/// The Piper voice of agents that name none.
pub const DEFAULT_PIPER_VOICE: &str = "en_US-joe-medium";

/// Everything a shard pod's behaviour depends on, but its Discord identity, sharding and
/// Kubernetes placement.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BotConfig {
    /// The agents a guild can pick (the first is the default and names the slash command).
    #[schemars(length(min = 1, max = 25))]
    pub agents: Vec<AgentConfig>,
    /// Sensitivity for guilds that have not chosen one.
    #[serde(default)]
    pub default_sensitivity: Sensitivity,
    /// The models every pod runs, and how they are tuned.
    #[serde(default)]
    pub models: ModelsConfig,
    /// Where fleet state lives.
    pub redis: RedisConfig,
    /// The OpenClaw gateway the agents run on.
    pub gateway: GatewayConfig,
    /// Bounds on the work one pod takes on.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Who may run each part of the slash command.
    #[serde(default)]
    pub commands: CommandsConfig,
}

/// Who may run each subcommand of `/<agent>`: the Discord permissions a member needs (all of
/// those listed; an empty list: anyone; Administrator always may). The pod checks them on
/// every command it receives, and registers the command with the permissions that every
/// subcommand needs as its `default_member_permissions`, so Discord shows the command only to
/// those members (a server's admins can widen that in Server Settings → Integrations; the
/// pod's own check still applies).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandsConfig {
    /// `join`: bring the bot into a voice channel (default: Move Members).
    #[serde(default = "defaults::voice_permissions")]
    #[schemars(length(max = 8))]
    pub join: Vec<Permission>,
    /// `leave`: make it leave (default: Move Members).
    #[serde(default = "defaults::voice_permissions")]
    #[schemars(length(max = 8))]
    pub leave: Vec<Permission>,
    /// `agent`: choose who answers in the server (default: Move Members and Manage Server).
    #[serde(default = "defaults::settings_permissions")]
    #[schemars(length(max = 8))]
    pub agent: Vec<Permission>,
    /// `sensitivity` (default: Move Members and Manage Server).
    #[serde(default = "defaults::settings_permissions")]
    #[schemars(length(max = 8))]
    pub sensitivity: Vec<Permission>,
    /// `status` (default: Move Members).
    #[serde(default = "defaults::voice_permissions")]
    #[schemars(length(max = 8))]
    pub status: Vec<Permission>,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        Self {
            join: defaults::voice_permissions(),
            leave: defaults::voice_permissions(),
            agent: defaults::settings_permissions(),
            sensitivity: defaults::settings_permissions(),
            status: defaults::voice_permissions(),
        }
    }
}

/// A Discord permission a command may require (the ones that make sense for a voice bot).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Permission {
    /// Administrator (has every permission).
    Administrator,
    /// Manage Server.
    ManageGuild,
    /// Manage Channels.
    ManageChannels,
    /// Manage Roles.
    ManageRoles,
    /// Move Members (between voice channels).
    MoveMembers,
    /// Mute Members.
    MuteMembers,
    /// Deafen Members.
    DeafenMembers,
    /// Kick Members.
    KickMembers,
    /// Ban Members.
    BanMembers,
    /// Timeout Members.
    ModerateMembers,
    /// Priority Speaker.
    PrioritySpeaker,
    /// Connect (to voice channels).
    Connect,
    /// Speak.
    Speak,
    /// Send Messages.
    SendMessages,
}

impl Permission {
    /// Its bit in Discord's permission set.
    pub fn bit(self) -> u64 {
        1 << match self {
            Self::KickMembers => 1,
            Self::BanMembers => 2,
            Self::Administrator => 3,
            Self::ManageChannels => 4,
            Self::ManageGuild => 5,
            Self::PrioritySpeaker => 8,
            Self::SendMessages => 11,
            Self::Connect => 20,
            Self::Speak => 21,
            Self::MuteMembers => 22,
            Self::DeafenMembers => 23,
            Self::MoveMembers => 24,
            Self::ManageRoles => 28,
            Self::ModerateMembers => 40,
        }
    }

    /// As Discord's client names it ("Move Members").
    pub fn label(self) -> &'static str {
        match self {
            Self::Administrator => "Administrator",
            Self::ManageGuild => "Manage Server",
            Self::ManageChannels => "Manage Channels",
            Self::ManageRoles => "Manage Roles",
            Self::MoveMembers => "Move Members",
            Self::MuteMembers => "Mute Members",
            Self::DeafenMembers => "Deafen Members",
            Self::KickMembers => "Kick Members",
            Self::BanMembers => "Ban Members",
            Self::ModerateMembers => "Timeout Members",
            Self::PrioritySpeaker => "Priority Speaker",
            Self::Connect => "Connect",
            Self::Speak => "Speak",
            Self::SendMessages => "Send Messages",
        }
    }

    /// The bits of a list of permissions.
    pub fn bits(all: &[Self]) -> u64 {
        all.iter().fold(0, |acc, p| acc | p.bit())
    }
}

impl CommandsConfig {
    /// What `default_member_permissions` the command is registered with: the permissions
    /// every subcommand needs (`0`: none in common; anyone sees the command).
    pub fn common_bits(&self) -> u64 {
        [
            &self.join,
            &self.leave,
            &self.agent,
            &self.sensitivity,
            &self.status,
        ]
        .iter()
        .map(|p| Permission::bits(p))
        .fold(u64::MAX, |acc, b| acc & b)
    }
}

/// A key of a Secret in the VoiceBot's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// An agent a guild can talk to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentConfig {
    /// The OpenClaw agent id, also the name people call it by ("jarvis").
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_-]{0,31}$"))]
    pub name: String,
    /// Other names it answers to (heard as spoken: "Jeeves", "J").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub aliases: Vec<String>,
    /// Who the agent is, sent to the gateway with each of its turns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2000))]
    pub persona: Option<String>,
    /// Its voice: a Piper voice (backend `piper`) or the endpoint's voice id (backend `http`);
    /// default `models.tts.defaultVoice`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub voice: Option<String>,
}

/// How readily the bot answers turns that do not name it (the shard's relevance uses this
/// type itself).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Sensitivity {
    /// Only when named (or in solo mode / a follow-up).
    #[default]
    Low,
    /// Also when a classifier is fairly sure it is for the bot.
    Medium,
    /// Also when a classifier thinks it may be.
    High,
}

impl Sensitivity {
    /// `low`, `medium` or `high`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

impl std::str::FromStr for Sensitivity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "low" => Ok(Self::Low),
            "medium" => Ok(Self::Medium),
            "high" => Ok(Self::High),
            other => Err(format!(
                "unknown sensitivity {other:?} (low, medium or high)"
            )),
        }
    }
}

/// Whisper model size.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum WhisperModel {
    /// tiny.en: fastest, English only.
    #[default]
    #[serde(rename = "tiny.en")]
    TinyEn,
    /// base: multilingual, more accurate, ~2x slower.
    #[serde(rename = "base")]
    Base,
}

/// Models and their tuning.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelsConfig {
    /// Whisper size.
    #[serde(default)]
    pub whisper: WhisperModel,
    /// Voice activity detection (Silero VAD).
    #[serde(default)]
    pub vad: VadConfig,
    /// End-of-turn detection (Smart Turn v3).
    #[serde(default)]
    pub turn: TurnConfig,
    /// Speech synthesis.
    #[serde(default)]
    pub tts: TtsConfig,
}

/// Silero VAD settings.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VadConfig {
    /// Speech probability at or above which a 32 ms chunk is speech.
    #[serde(default = "defaults::vad_threshold")]
    #[schemars(range(min = 0.05, max = 0.95))]
    pub threshold: f32,
    /// Speech shorter than this is ignored (coughs, clicks), ms.
    #[serde(default = "defaults::min_speech_ms")]
    #[schemars(range(min = 32, max = 5000))]
    pub min_speech_ms: u32,
    /// Silence that ends a stretch of speech (and asks Smart Turn whether the turn is over), ms.
    #[serde(default = "defaults::silence_ms")]
    #[schemars(range(min = 64, max = 5000))]
    pub silence_ms: u32,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            threshold: defaults::vad_threshold(),
            min_speech_ms: defaults::min_speech_ms(),
            silence_ms: defaults::silence_ms(),
        }
    }
}

/// Smart Turn settings.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TurnConfig {
    /// Smart Turn probability at or above which a pause ends the turn.
    #[serde(default = "defaults::turn_threshold")]
    #[schemars(range(min = 0.05, max = 0.99))]
    pub threshold: f32,
    /// How long a turn Smart Turn calls incomplete waits for more speech, ms.
    #[serde(default = "defaults::max_wait_ms")]
    #[schemars(range(min = 0, max = 10000))]
    pub max_wait_ms: u32,
    /// How long a turn Smart Turn calls complete waits when Whisper heard an unfinished
    /// phrase (no closing full stop, question or exclamation mark), ms; 0 trusts Smart Turn
    /// alone.
    #[serde(default = "defaults::unfinished_wait_ms")]
    #[schemars(range(min = 0, max = 10000))]
    pub unfinished_wait_ms: u32,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            threshold: defaults::turn_threshold(),
            max_wait_ms: defaults::max_wait_ms(),
            unfinished_wait_ms: defaults::unfinished_wait_ms(),
        }
    }
}

/// Speech synthesis backend.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TtsBackend {
    /// Piper voices in the pod.
    #[default]
    Piper,
    /// An OpenAI-compatible `/v1/audio/speech` endpoint.
    Http,
}

/// Speech synthesis settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TtsConfig {
    /// Backend.
    #[serde(default)]
    pub backend: TtsBackend,
    /// Voice of agents that do not name one.
    #[serde(default = "defaults::voice")]
    #[schemars(length(min = 1, max = 128))]
    pub default_voice: String,
    /// Base URL of the `http` backend, up to and including `/v1` (`http://tts:8000/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://"))]
    pub url: Option<String>,
    /// The `model` the `http` backend is asked for.
    #[serde(default = "defaults::tts_model")]
    #[schemars(length(min = 1, max = 128))]
    pub model: String,
    /// API key of the `http` backend (sent as a bearer token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret: Option<SecretKeyRef>,
}

impl Default for TtsConfig {
    fn default() -> Self {
        Self {
            backend: TtsBackend::default(),
            default_voice: defaults::voice(),
            url: None,
            model: defaults::tts_model(),
            api_key_secret: None,
        }
    }
}

/// Redis.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisConfig {
    /// `redis://host:port/db` (no password here: use `urlSecret` for one that has it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^rediss?://"))]
    pub url: Option<String>,
    /// A Secret key holding the whole URL (takes precedence over `url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret: Option<SecretKeyRef>,
    /// A Secret key holding the key that seals the secrets the pods keep in Redis (the
    /// OpenClaw device identity and token): Redis is not trusted with them in clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_key_secret: Option<SecretKeyRef>,
    /// A Secret key holding the PEM certificate of the CA that signed Redis's TLS certificate
    /// (for a `rediss://` URL whose server the system roots do not vouch for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<SecretKeyRef>,
}

/// The OpenClaw gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayConfig {
    /// WebSocket URL (`ws://` or `wss://`).
    #[schemars(regex(pattern = r"^wss?://"))]
    pub url: String,
    /// The Secret key holding the gateway token.
    pub token_secret: SecretKeyRef,
}

/// Bounds on one pod's work.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitsConfig {
    /// Listening workers (Smart Turn + Whisper) shared by the pod's guilds.
    #[serde(default = "defaults::workers")]
    #[schemars(range(min = 1, max = 32))]
    pub workers: u32,
    /// Speakers listened to at once in one channel; more are ignored.
    #[serde(default = "defaults::max_speakers")]
    #[schemars(range(min = 1, max = 99))]
    pub max_speakers: u32,
    /// Finished turns that may wait while the bot is busy in one channel; more are dropped.
    #[serde(default = "defaults::max_pending_turns")]
    #[schemars(range(min = 1, max = 32))]
    pub max_pending_turns: u32,
    /// Piper sessions per voice: sentences of that voice synthesised at once (each session
    /// holds the voice's model in memory, about 70 MB for a medium voice).
    #[serde(default = "defaults::tts_workers")]
    #[schemars(range(min = 1, max = 8))]
    pub tts_workers: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            workers: defaults::workers(),
            max_speakers: defaults::max_speakers(),
            max_pending_turns: defaults::max_pending_turns(),
            tts_workers: defaults::tts_workers(),
        }
    }
}

/// The defaults, in one place (serde and `Default` share them).
pub mod defaults {
    /// `models.vad.threshold`.
    pub fn vad_threshold() -> f32 {
        0.5
    }
    /// `models.vad.minSpeechMs`.
    pub fn min_speech_ms() -> u32 {
        250
    }
    /// `models.vad.silenceMs`.
    pub fn silence_ms() -> u32 {
        200
    }
    /// `models.turn.threshold`.
    pub fn turn_threshold() -> f32 {
        0.5
    }
    /// `models.turn.maxWaitMs`.
    pub fn max_wait_ms() -> u32 {
        2000
    }
    /// `models.turn.unfinishedWaitMs`.
    pub fn unfinished_wait_ms() -> u32 {
        1200
    }
    /// `models.tts.defaultVoice`.
    pub fn voice() -> String {
        super::DEFAULT_PIPER_VOICE.into()
    }
    /// `models.tts.model`.
    pub fn tts_model() -> String {
        "tts-1".into()
    }
    /// `limits.workers`.
    pub fn workers() -> u32 {
        2
    }
    /// `limits.ttsWorkers`.
    pub fn tts_workers() -> u32 {
        2
    }
    /// `limits.maxSpeakers`.
    pub fn max_speakers() -> u32 {
        16
    }
    /// `limits.maxPendingTurns`.
    pub fn max_pending_turns() -> u32 {
        3
    }
    /// `commands.join`, `commands.leave`, `commands.status`: who moves members between voice
    /// channels may bring the bot in and out.
    pub fn voice_permissions() -> Vec<super::Permission> {
        vec![super::Permission::MoveMembers]
    }
    /// `commands.agent`, `commands.sensitivity`: the server's settings also need Manage Server.
    pub fn settings_permissions() -> Vec<super::Permission> {
        vec![
            super::Permission::MoveMembers,
            super::Permission::ManageGuild,
        ]
    }
}

/// A field the configuration cannot have as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The field's path, as in the resource (`models.tts.url`, `agents[1].name`).
    pub field: String,
    /// What is wrong and what to do.
    pub reason: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Why a configuration file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// Not the JSON of a [`BotConfig`] (serde's message names the field and the position).
    Parse(String),
    /// Parsed, but some fields cannot be honoured.
    Invalid(Vec<Invalid>),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Parse(e) => write!(f, "not a bot configuration: {e}"),
            Self::Invalid(all) => {
                let list: Vec<String> = all.iter().map(Invalid::to_string).collect();
                write!(f, "{}", list.join("; "))
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl BotConfig {
    /// Parses and validates the pod's configuration file.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let config: Self =
            serde_json::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate().map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    /// The default agent (the first), whose name is the slash command.
    pub fn default_agent(&self) -> Option<&AgentConfig> {
        self.agents.first()
    }

    /// An agent by name.
    pub fn agent(&self, name: &str) -> Option<&AgentConfig> {
        self.agents.iter().find(|a| a.name == name)
    }

    /// The voice `agent` speaks with.
    pub fn voice_of<'a>(&'a self, agent: &'a AgentConfig) -> &'a str {
        agent
            .voice
            .as_deref()
            .unwrap_or(&self.models.tts.default_voice)
    }

    /// What the schema cannot check; every problem found, each naming its field.
    pub fn validate(&self) -> Result<(), Vec<Invalid>> {
        let mut bad = Vec::new();
        let mut say = |field: String, reason: String| bad.push(Invalid { field, reason });
        if self.agents.is_empty() {
            say("agents".into(), "name at least one agent".into());
        }
        let mut names: Vec<String> = Vec::new();
        for (i, a) in self.agents.iter().enumerate() {
            if !valid_agent_name(&a.name) {
                say(
                    format!("agents[{i}].name"),
                    format!(
                        "{:?} is not an OpenClaw agent id (lower-case letters, digits, '-' or '_', at most 32, starting with a letter)",
                        a.name
                    ),
                );
            }
            let spoken =
                std::iter::once(a.name.as_str()).chain(a.aliases.iter().map(String::as_str));
            for (j, n) in spoken.enumerate() {
                let field = if j == 0 {
                    format!("agents[{i}].name")
                } else {
                    format!("agents[{i}].aliases[{}]", j - 1)
                };
                let key = n.trim().to_lowercase();
                if key.is_empty() || key.chars().count() > 40 {
                    say(field, "a name is 1 to 40 characters".into());
                } else if names.contains(&key) {
                    say(
                        field,
                        format!(
                            "{n:?} is already the name or an alias of an agent: every name must call one agent"
                        ),
                    );
                } else {
                    names.push(key);
                }
            }
            if a.persona.as_deref().is_some_and(|p| p.trim().is_empty()) {
                say(
                    format!("agents[{i}].persona"),
                    "empty: remove the field or describe the agent".into(),
                );
            }
        }
        let tts = &self.models.tts;
        match tts.backend {
            TtsBackend::Piper => {
                let mut voices = vec![(
                    "models.tts.defaultVoice".to_string(),
                    tts.default_voice.as_str(),
                )];
                for (i, a) in self.agents.iter().enumerate() {
                    if let Some(v) = &a.voice {
                        voices.push((format!("agents[{i}].voice"), v.as_str()));
                    }
                }
                for (field, v) in voices {
                    if !is_local_voice(v) {
                        say(
                            field,
                            format!(
                                "{v:?} is not a voice the pods have (a Piper voice: {}; or \
                                 espeak-ng's: {ESPEAK_PREFIX}<voice>, e.g. {ESPEAK_PREFIX}en-us+f3)",
                                PIPER_VOICES.join(", ")
                            ),
                        );
                    }
                }
                if tts.url.is_some() {
                    say(
                        "models.tts.url".into(),
                        "set only with backend: http (Piper runs in the pod)".into(),
                    );
                }
                if tts.api_key_secret.is_some() {
                    say(
                        "models.tts.apiKeySecret".into(),
                        "set only with backend: http (Piper needs no key)".into(),
                    );
                }
            }
            TtsBackend::Http => match tts.url.as_deref() {
                None => say(
                    "models.tts.url".into(),
                    "backend: http needs the endpoint's base URL (e.g. http://tts:8000/v1)".into(),
                ),
                Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => say(
                    "models.tts.url".into(),
                    format!("{u:?} is not an http:// or https:// URL"),
                ),
                Some(_) => {}
            },
        }
        let vad = &self.models.vad;
        if !(0.05..=0.95).contains(&vad.threshold) {
            say(
                "models.vad.threshold".into(),
                "between 0.05 and 0.95".into(),
            );
        }
        if !(0.05..=0.99).contains(&self.models.turn.threshold) {
            say(
                "models.turn.threshold".into(),
                "between 0.05 and 0.99".into(),
            );
        }
        if self.models.turn.max_wait_ms > 10_000 {
            say("models.turn.maxWaitMs".into(), "at most 10000".into());
        }
        if self.models.turn.unfinished_wait_ms > 10_000 {
            say(
                "models.turn.unfinishedWaitMs".into(),
                "at most 10000".into(),
            );
        }
        for (field, v, lo, hi) in [
            ("models.vad.minSpeechMs", vad.min_speech_ms, 32, 5000),
            ("models.vad.silenceMs", vad.silence_ms, 64, 5000),
            ("limits.workers", self.limits.workers, 1, 32),
            ("limits.maxSpeakers", self.limits.max_speakers, 1, 99),
            (
                "limits.maxPendingTurns",
                self.limits.max_pending_turns,
                1,
                32,
            ),
        ] {
            if !(lo..=hi).contains(&v) {
                say(field.into(), format!("between {lo} and {hi}, not {v}"));
            }
        }
        if self.redis.url.is_none() && self.redis.url_secret.is_none() {
            say(
                "redis".into(),
                "set url or urlSecret: without Redis nothing survives a pod".into(),
            );
        }
        if let Some(u) = &self.redis.url {
            if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                say(
                    "redis.url".into(),
                    format!("{u:?} is not a redis:// or rediss:// URL"),
                );
            } else if url_has_password(u) {
                say(
                    "redis.url".into(),
                    "has a password: put the whole URL in a Secret and use urlSecret".into(),
                );
            }
        }
        if !(self.gateway.url.starts_with("ws://") || self.gateway.url.starts_with("wss://")) {
            say(
                "gateway.url".into(),
                format!("{:?} is not a ws:// or wss:// URL", self.gateway.url),
            );
        }
        if bad.is_empty() { Ok(()) } else { Err(bad) }
    }
}

fn valid_agent_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && n.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Whether `redis://user:password@host` carries a password.
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn minimal() -> serde_json::Value {
        serde_json::json!({
            "agents": [{"name": "jarvis"}],
            "redis": {"url": "redis://redis:6379"},
            "gateway": {"url": "ws://openclaw:18789", "tokenSecret": {"name": "openclaw", "key": "token"}}
        })
    }

    fn with(patch: serde_json::Value) -> BotConfig {
        let mut v = minimal();
        merge(&mut v, patch);
        serde_json::from_value(v).unwrap()
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn fields(config: &BotConfig) -> Vec<String> {
        config
            .validate()
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|i| i.field)
            .collect()
    }

    #[test]
    fn a_minimal_config_takes_the_defaults_and_round_trips() {
        let c = BotConfig::from_json(&minimal().to_string()).unwrap();
        assert_eq!(c.default_sensitivity, Sensitivity::Low);
        assert_eq!(c.models.whisper, WhisperModel::TinyEn);
        assert_eq!(c.models.vad, VadConfig::default());
        assert_eq!(c.models.turn.max_wait_ms, 2000);
        assert_eq!(c.models.tts.default_voice, DEFAULT_PIPER_VOICE);
        assert_eq!(c.limits.workers, 2);
        let again = BotConfig::from_json(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
        assert_eq!(c.voice_of(&c.agents[0]), DEFAULT_PIPER_VOICE);
    }

    #[test]
    fn commands_need_voice_moderators_by_default_and_the_common_part_is_registered() {
        let c = with(serde_json::json!({}));
        assert_eq!(c.commands.join, [Permission::MoveMembers]);
        assert_eq!(
            c.commands.sensitivity,
            [Permission::MoveMembers, Permission::ManageGuild]
        );
        // Every subcommand needs Move Members: the command is shown to those who have it.
        assert_eq!(c.commands.common_bits(), 1 << 24);
        // A field given replaces its default; nothing in common: shown to everyone.
        let open = with(serde_json::json!({"commands": {"status": [], "join": ["Connect"]}}));
        assert_eq!(open.commands.join, [Permission::Connect]);
        assert_eq!(open.commands.leave, [Permission::MoveMembers]);
        assert_eq!(open.commands.common_bits(), 0);
        assert!(
            serde_json::from_value::<CommandsConfig>(serde_json::json!({"join": ["Dance"]}))
                .is_err()
        );
        assert_eq!(Permission::ManageGuild.label(), "Manage Server");
        assert_eq!(
            Permission::bits(&[Permission::Administrator, Permission::ModerateMembers]),
            8 | 1 << 40
        );
    }

    #[test]
    fn what_the_schema_cannot_say_is_refused_with_the_field_named() {
        assert_eq!(
            fields(&with(
                serde_json::json!({"agents": [{"name": "jarvis"}, {"name": "sage", "aliases": ["Jarvis"]}]})
            )),
            ["agents[1].aliases[0]"]
        );
        assert_eq!(
            fields(&with(serde_json::json!({"agents": [{"name": "Jarvis"}]}))),
            ["agents[0].name"]
        );
        assert_eq!(
            fields(&with(
                serde_json::json!({"models": {"tts": {"backend": "http"}}})
            )),
            ["models.tts.url"]
        );
        assert_eq!(
            fields(&with(
                serde_json::json!({"agents": [{"name": "jarvis", "voice": "en_GB-nobody"}]})
            )),
            ["agents[0].voice"]
        );
        // With the http backend a voice is the endpoint's id: anything goes.
        assert!(
            fields(&with(
                serde_json::json!({"agents": [{"name": "jarvis", "voice": "alloy"}],
                "models": {"tts": {"backend": "http", "url": "http://tts/v1"}}})
            ))
            .is_empty()
        );
        assert_eq!(
            fields(&with(
                serde_json::json!({"models": {"tts": {"url": "http://tts/v1"}}})
            )),
            ["models.tts.url"]
        );
        assert_eq!(
            fields(&with(
                serde_json::json!({"redis": {"url": "redis://:hunter2@redis:6379"}})
            )),
            ["redis.url"]
        );
        assert_eq!(
            fields(&with(serde_json::json!({"redis": {"url": null}}))),
            ["redis"]
        );
        assert_eq!(
            fields(&with(
                serde_json::json!({"limits": {"workers": 0}, "models": {"vad": {"threshold": 1.5}}})
            )),
            ["models.vad.threshold", "limits.workers"]
        );
        assert_eq!(
            fields(&with(
                serde_json::json!({"agents": [{"name": "jarvis", "persona": "  "}]})
            )),
            ["agents[0].persona"]
        );
    }

    #[test]
    fn parse_errors_name_the_field() {
        let e = BotConfig::from_json(
            r#"{"agents": [{"name": "jarvis"}], "gateway": {"url": "ws://x"}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("tokenSecret") || e.contains("redis"), "{e}");
        let e = BotConfig::from_json(
            &with(serde_json::json!({"models": {"tts": {"backend": "http"}}})).to_json(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("models.tts.url"), "{e}");
        assert!(matches!(
            BotConfig::from_json("[]"),
            Err(ConfigError::Parse(_))
        ));
    }

    impl BotConfig {
        fn to_json(&self) -> String {
            serde_json::to_string(self).unwrap()
        }
    }

    #[test]
    fn local_voices_are_piper_voices_or_espeak_names() {
        assert!(is_local_voice(DEFAULT_PIPER_VOICE));
        assert!(is_local_voice("espeak:en-us+f3"));
        assert!(is_local_voice("espeak:en"));
        for bad in [
            "en_GB-nobody",
            "espeak:",
            "espeak:+f3",
            "espeak:en us",
            "espeak:en;rm",
        ] {
            assert!(!is_local_voice(bad), "{bad}");
        }
        assert!(
            fields(&with(
                serde_json::json!({"agents": [{"name": "jarvis"}, {"name": "sage", "voice": "espeak:en-us+f3"}]})
            ))
            .is_empty()
        );
    }

    #[test]
    fn a_password_in_a_url_is_found() {
        assert!(url_has_password("redis://:pw@h:1"));
        assert!(url_has_password("redis://u:pw@h:1/0"));
        assert!(!url_has_password("redis://h:6379/0"));
        assert!(!url_has_password("redis://h:6379/a@b"));
        assert!(!url_has_password("redis://default@h:6379"));
    }
}
