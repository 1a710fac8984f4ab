//! What the pod takes from its [`BotConfig`] (the VoiceBot's spec, rendered by the operator
//! into `VOICEBOT_CONFIG`): the one place where configuration fields become pipeline settings.
//! Each function here is what a field's "where it takes effect" in the README points to.

use anyhow::Context as _;
use voicebot_config::{AgentConfig, BotConfig, CommandsConfig, TtsConfig, env};

use crate::converse::room::RoomConfig;
use crate::listen::ListenerConfig;
use crate::listen::vad::VadConfig;
use crate::models::WhisperModel;
use crate::secret::Secret;
use crate::state::Sensitivity;

/// What the command line lays over the configuration file (a flag wins: for debugging a pod
/// by hand).
#[derive(Clone, Default)]
pub struct Overrides {
    /// The configuration file the operator mounts (`VOICEBOT_CONFIG`).
    pub config: Option<std::path::PathBuf>,
    /// The slash command's name (default: the first agent).
    pub command: Option<String>,
    /// Agents by name (default: the file's, else `jarvis`).
    pub agents: Vec<String>,
    /// The Whisper model.
    pub whisper: Option<WhisperModel>,
    /// Listening workers.
    pub workers: Option<usize>,
    /// The OpenClaw gateway URL.
    pub gateway: Option<String>,
    /// The Redis URL (a secret: it may hold a password).
    pub redis: Option<String>,
}

/// What the pod runs: the configuration file with the overrides laid over it.
#[derive(Clone)]
pub struct Settings {
    /// The agents (the first is the default and names the slash command).
    pub agents: Vec<AgentConfig>,
    /// Sensitivity of guilds that have not chosen.
    pub sensitivity: Sensitivity,
    /// The Whisper model.
    pub whisper: WhisperModel,
    /// Listening workers.
    pub workers: usize,
    /// Piper sessions per voice (`limits.ttsWorkers`).
    pub tts_workers: usize,
    /// The OpenClaw gateway URL (`None`: the bot listens but does not answer).
    pub gateway: Option<String>,
    /// The Redis URL.
    pub redis: Option<String>,
    /// Speech synthesis.
    pub tts: TtsConfig,
    /// The `http` TTS backend's key (from `TTS_API_KEY`).
    pub tts_api_key: Option<Secret>,
    /// Seals the secrets kept in Redis (from `VOICEBOT_STATE_KEY`; required when the file
    /// names `redis.sealKeySecret`).
    pub state_key: Option<Secret>,
    /// The CA of Redis's TLS certificate (PEM, from `REDIS_CA`; required when the file names
    /// `redis.caSecret`).
    pub redis_ca: Option<Vec<u8>>,
    /// Listening and room bounds.
    pub room: RoomConfig,
    /// Who may run each subcommand.
    pub commands: CommandsConfig,
}

impl Settings {
    /// Reads the file (if any) and lays `o` over it; a secret the file refers to must be in
    /// its environment variable (the operator passes it from the Secret).
    pub fn resolve(o: &Overrides) -> anyhow::Result<Self> {
        let bot = match &o.config {
            Some(path) => Some(super::config_file::load(path).map_err(anyhow::Error::msg)?),
            None => None,
        };
        let named = |name: &str| {
            bot.as_ref()
                .and_then(|b| b.agent(name).cloned())
                .unwrap_or_else(|| AgentConfig {
                    name: name.to_string(),
                    aliases: Vec::new(),
                    persona: None,
                    voice: None,
                })
        };
        let agents = if !o.agents.is_empty() {
            o.agents.iter().map(|n| named(n)).collect()
        } else if let Some(b) = &bot {
            b.agents.clone()
        } else {
            vec![named("jarvis")]
        };
        let redis = match (&o.redis, &bot) {
            (Some(url), _) => Some(url.clone()),
            (None, Some(b)) if b.redis.url_secret.is_some() => anyhow::bail!(
                "redis.urlSecret is set but ${} is empty (the operator passes it from the Secret)",
                env::REDIS_URL
            ),
            (None, Some(b)) => b.redis.url.clone(),
            (None, None) => None,
        };
        let tts = bot
            .as_ref()
            .map(|b| b.models.tts.clone())
            .unwrap_or_default();
        let tts_api_key = match &tts.api_key_secret {
            Some(_) => Some(
                std::env::var(env::TTS_API_KEY)
                    .ok()
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| Secret::new(v.trim()))
                    .with_context(|| {
                        format!(
                            "models.tts.apiKeySecret is set but ${} is empty (the operator passes it from the Secret)",
                            env::TTS_API_KEY
                        )
                    })?,
            ),
            None => None,
        };
        let state_key = std::env::var(env::STATE_KEY)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| Secret::new(v.trim()));
        if state_key.is_none()
            && bot
                .as_ref()
                .is_some_and(|b| b.redis.seal_key_secret.is_some())
        {
            anyhow::bail!(
                "redis.sealKeySecret is set but ${} is empty (the operator passes it from the Secret)",
                env::STATE_KEY
            );
        }
        let redis_ca = std::env::var(env::REDIS_CA)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(String::into_bytes);
        if redis_ca.is_none() && bot.as_ref().is_some_and(|b| b.redis.ca_secret.is_some()) {
            anyhow::bail!(
                "redis.caSecret is set but ${} is empty (the operator passes it from the Secret)",
                env::REDIS_CA
            );
        }
        Ok(Self {
            state_key,
            redis_ca,
            agents,
            sensitivity: bot
                .as_ref()
                .map_or(Sensitivity::Low, |b| b.default_sensitivity),
            whisper: o
                .whisper
                .or(bot.as_ref().map(|b| whisper(b.models.whisper)))
                .unwrap_or(super::DEFAULT_WHISPER),
            workers: o
                .workers
                .or(bot.as_ref().map(|b| b.limits.workers as usize))
                .unwrap_or(2),
            tts_workers: bot
                .as_ref()
                .map_or(voicebot_config::defaults::tts_workers() as usize, |b| {
                    b.limits.tts_workers as usize
                }),
            gateway: o
                .gateway
                .clone()
                .or(bot.as_ref().map(|b| b.gateway.url.clone())),
            redis,
            tts,
            tts_api_key,
            room: bot.as_ref().map(room).unwrap_or_default(),
            commands: bot.as_ref().map(|b| b.commands.clone()).unwrap_or_default(),
        })
    }
}

/// `models.whisper`: the Whisper model the pod loads.
pub fn whisper(model: voicebot_config::WhisperModel) -> WhisperModel {
    match model {
        voicebot_config::WhisperModel::TinyEn => WhisperModel::TinyEn,
        voicebot_config::WhisperModel::Base => WhisperModel::Base,
    }
}

/// `models.vad`, `models.turn` and `limits.maxSpeakers` / `limits.maxPendingTurns`: each
/// speaker's listener and the room's bounds.
pub fn room(bot: &BotConfig) -> RoomConfig {
    let defaults = RoomConfig::default();
    RoomConfig {
        listener: ListenerConfig {
            vad: VadConfig {
                threshold: bot.models.vad.threshold,
                min_speech_ms: bot.models.vad.min_speech_ms,
                silence_ms: bot.models.vad.silence_ms,
            },
            turn_threshold: bot.models.turn.threshold,
            max_wait_ms: bot.models.turn.max_wait_ms,
            unfinished_wait_ms: bot.models.turn.unfinished_wait_ms,
            ..defaults.listener
        },
        max_speakers: bot.limits.max_speakers as usize,
        max_pending: bot.limits.max_pending_turns as usize,
        ..defaults
    }
}

/// The agents' names, in order (the first is the default and the slash command).
pub fn agent_names(bot: &BotConfig) -> Vec<String> {
    bot.agents.iter().map(|a| a.name.clone()).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::converse::relevance::Sensitivity;

    fn bot(patch: serde_json::Value) -> BotConfig {
        let mut v = serde_json::json!({
            "agents": [{"name": "jarvis"}, {"name": "sage"}],
            "redis": {"url": "redis://r:6379"},
            "gateway": {"url": "ws://g:1", "tokenSecret": {"name": "o", "key": "t"}},
        });
        for (k, x) in patch.as_object().unwrap() {
            v[k] = x.clone();
        }
        BotConfig::from_json(&v.to_string()).unwrap()
    }

    #[test]
    fn listening_and_room_fields_reach_the_room() {
        let default = room(&bot(serde_json::json!({})));
        assert_eq!(default.listener.vad, VadConfig::default());
        assert_eq!(default.max_speakers, RoomConfig::default().max_speakers);
        let tuned = room(&bot(serde_json::json!({
            "models": {"vad": {"threshold": 0.7, "minSpeechMs": 100, "silenceMs": 400},
                       "turn": {"threshold": 0.8, "maxWaitMs": 900}},
            "limits": {"maxSpeakers": 4, "maxPendingTurns": 1},
        })));
        assert_eq!(
            tuned.listener.vad,
            VadConfig {
                threshold: 0.7,
                min_speech_ms: 100,
                silence_ms: 400
            }
        );
        assert_eq!(tuned.listener.turn_threshold, 0.8);
        assert_eq!(tuned.listener.max_wait_ms, 900);
        assert_eq!((tuned.max_speakers, tuned.max_pending), (4, 1));
    }

    #[test]
    fn names_whisper_and_sensitivity_translate() {
        let b =
            bot(serde_json::json!({"models": {"whisper": "base"}, "defaultSensitivity": "high"}));
        assert_eq!(whisper(b.models.whisper), WhisperModel::Base);
        assert_eq!(b.default_sensitivity, Sensitivity::High);
        assert_eq!(agent_names(&b), ["jarvis", "sage"]);
    }
}
