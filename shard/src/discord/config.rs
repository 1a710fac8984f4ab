//! The bot's configuration file, as the operator mounts it (`VOICEBOT_CONFIG`, rendered from
//! the VoiceBot's spec into a ConfigMap): the agents a guild may choose and the default
//! sensitivity. Anything else in the file is the operator's business and ignored here.

use crate::converse::relevance::Sensitivity;

/// What the shard takes from the configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotConfig {
    /// Agent names, in order (the first is the default); empty when the file names none.
    pub agents: Vec<String>,
    /// Sensitivity of guilds that have not chosen.
    pub default_sensitivity: Sensitivity,
}

/// Parses the file's text: `{"agents": [{"name": …}, …], "defaultSensitivity": "low"}`.
/// The error says what is wrong in words an operator can act on; never panics.
pub fn parse(text: &str) -> Result<BotConfig, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    if !v.is_object() {
        return Err("expected a JSON object with \"agents\" and \"defaultSensitivity\"".into());
    }
    let agents = match &v["agents"] {
        serde_json::Value::Null => Vec::new(),
        serde_json::Value::Array(a) => a
            .iter()
            .map(|x| {
                x["name"]
                    .as_str()
                    .map(str::to_string)
                    .filter(|n| !n.trim().is_empty())
                    .ok_or_else(|| format!("an agent without a name: {x}"))
            })
            .collect::<Result<_, _>>()?,
        other => return Err(format!("\"agents\" must be a list, not {other}")),
    };
    let default_sensitivity = match &v["defaultSensitivity"] {
        serde_json::Value::Null => Sensitivity::Low,
        serde_json::Value::String(s) => s.parse()?,
        other => {
            return Err(format!(
                "\"defaultSensitivity\" must be a string, not {other}"
            ));
        }
    };
    Ok(BotConfig {
        agents,
        default_sensitivity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operators_file_parses_and_mistakes_are_explained() {
        let c = parse(r#"{"agents": [{"name": "sage"}, {"name": "jarvis", "aliases": ["j"]}], "defaultSensitivity": "medium", "models": {}}"#).unwrap();
        assert_eq!(c.agents, ["sage", "jarvis"]);
        assert_eq!(c.default_sensitivity, Sensitivity::Medium);
        assert_eq!(parse("{}").unwrap().default_sensitivity, Sensitivity::Low);
        for (bad, says) in [
            ("", "not JSON"),
            ("[]", "JSON object"),
            (r#"{"agents": 3}"#, "must be a list"),
            (r#"{"agents": [{}]}"#, "without a name"),
            (r#"{"defaultSensitivity": "loud"}"#, "unknown sensitivity"),
            (r#"{"defaultSensitivity": 1}"#, "must be a string"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
