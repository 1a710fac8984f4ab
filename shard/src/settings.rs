//! What the pod takes from its [`BotConfig`] (the VoiceBot's spec, rendered by the operator
//! into `VOICEBOT_CONFIG`): the one place where configuration fields become pipeline settings.
//! Each function here is what a field's "where it takes effect" in the README points to.

use voicebot_config::BotConfig;

use crate::converse::room::RoomConfig;
use crate::listen::ListenerConfig;
use crate::listen::vad::VadConfig;
use crate::models::WhisperModel;

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
