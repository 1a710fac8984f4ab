//! The bot's configuration file, as the operator mounts it (`VOICEBOT_CONFIG`): the VoiceBot
//! spec's [`BotConfig`], the same type the CRD embeds. Parsed and validated here; a refusal
//! names the field and says what to do, and never panics.

pub use voicebot_config::{BotConfig, ConfigError};

/// Parses and validates the file's text.
pub fn parse(text: &str) -> Result<BotConfig, String> {
    BotConfig::from_json(text).map_err(|e| e.to_string())
}

/// Reads, parses and validates the file at `path`.
pub fn load(path: &std::path::Path) -> Result<BotConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operators_file_parses_and_mistakes_are_explained() {
        let ok = r#"{"agents": [{"name": "sage"}, {"name": "jarvis", "aliases": ["j"]}],
            "defaultSensitivity": "medium", "redis": {"url": "redis://r:6379"},
            "gateway": {"url": "ws://g:1", "tokenSecret": {"name": "o", "key": "t"}}}"#;
        let c = parse(ok).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.agents[0].name, "sage");
        assert_eq!(c.agents[1].aliases, ["j"]);
        assert_eq!(c.default_sensitivity, voicebot_config::Sensitivity::Medium);
        for (bad, says) in [
            ("", "EOF"),
            ("[]", "expected struct"),
            (r#"{"agents": 3}"#, "invalid type"),
            (r#"{"agents": [{}]}"#, "missing field `name`"),
            (
                &ok.replace("\"medium\"", "\"loud\""),
                "unknown variant `loud`",
            ),
            (&ok.replace("\"sage\"", "\"Sage\""), "agents[0].name"),
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
