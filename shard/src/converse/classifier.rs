//! The LLM relevance classifier, through the OpenClaw gateway.
//!
//! It asks the agent, in a side session of its own (`agent:<agent>:classifier:<conversation>`,
//! so the real conversation never sees these exchanges), whether the latest line is meant for
//! it, and reads a JSON answer `{"addressed": bool, "confidence": 0..1}`. Anything else is an
//! error, and the relevance check falls back to name-only.

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

use super::relevance::Classifier;
use crate::openclaw::{ChatOptions, GatewayClient, session_key};

/// Marker at the start of every classifier prompt (lets test doubles recognise it).
pub const PROMPT_TAG: &str = "[VOICEBOT_CLASSIFIER]";

/// Classifier that asks the agent itself.
pub struct GatewayClassifier {
    client: GatewayClient,
    conversation: String,
    /// The other agents in the room (display names).
    others: Vec<String>,
}

impl GatewayClassifier {
    /// A classifier for one conversation (its side session is keyed by it).
    pub fn new(client: GatewayClient, conversation: impl Into<String>) -> Self {
        Self {
            client,
            conversation: conversation.into(),
            others: Vec::new(),
        }
    }

    /// The other agents that listen in the same room (display names): the prompt names them,
    /// so a line meant for one of them is not taken for this one.
    #[must_use]
    pub fn with_others(mut self, others: &[String]) -> Self {
        self.others = others.to_vec();
        self
    }
}

/// The prompt for one decision; `others` are the other assistants in the room.
pub fn prompt(agent: &str, others: &[String], context: &str, text: &str) -> String {
    let others = match others {
        [] => String::new(),
        [one] => format!(
            " Another assistant, \"{one}\", is in the channel too: a line meant for it (by name, \
             or continuing what it was asked) is not for \"{agent}\"."
        ),
        many => format!(
            " Other assistants are in the channel too ({}): a line meant for one of them (by \
             name, or continuing what it was asked) is not for \"{agent}\".",
            many.iter()
                .map(|o| format!("\"{o}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!(
        "{PROMPT_TAG} You are deciding whether the voice assistant \"{agent}\" should answer out loud. \
         People in a voice channel are talking; the assistant should answer when the latest line is \
         addressed to it or is a question or request it can usefully answer, and stay quiet during \
         ordinary conversation between people.{others} Reply with JSON only, no prose: \
         {{\"addressed\": true|false, \"confidence\": number between 0 and 1}}.\n\
         Recent conversation:\n{context}\nLatest line: {text}"
    )
}

/// Reads the model's answer: the first JSON object in the text.
pub fn parse_answer(reply: &str) -> Result<f32, String> {
    let start = reply
        .find('{')
        .ok_or_else(|| format!("no JSON in {reply:?}"))?;
    let end = reply
        .rfind('}')
        .filter(|e| *e > start)
        .ok_or_else(|| format!("no JSON in {reply:?}"))?;
    let v: Value =
        serde_json::from_str(&reply[start..=end]).map_err(|e| format!("bad JSON: {e}"))?;
    let confidence = v
        .get("confidence")
        .and_then(Value::as_f64)
        .ok_or_else(|| "no confidence".to_string())? as f32;
    let addressed = v.get("addressed").and_then(Value::as_bool).unwrap_or(true);
    let c = confidence.clamp(0.0, 1.0);
    Ok(if addressed { c } else { c.min(1.0 - c) })
}

impl Classifier for GatewayClassifier {
    fn classify<'a>(
        &'a self,
        agent: &'a str,
        context: &'a str,
        text: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<f32, String>> + Send + 'a>> {
        Box::pin(async move {
            let key = session_key(agent, "classifier", &self.conversation);
            let options = ChatOptions {
                interrupt: true,
                ..ChatOptions::default()
            };
            let stream = self
                .client
                .chat(&key, &prompt(agent, &self.others, context, text), options)
                .await
                .map_err(|e| e.to_string())?;
            let reply = stream.collect().await.map_err(|e| e.to_string())?;
            parse_answer(&reply)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_names_the_other_agents() {
        let alone = prompt("Jarvis", &[], "ann: hi", "what time is it?");
        assert!(!alone.contains("Another assistant"), "{alone}");
        assert!(alone.ends_with("Latest line: what time is it?"), "{alone}");
        let two = prompt("Jarvis", &["Sage".into()], "", "and you?");
        assert!(
            two.contains("Another assistant, \"Sage\", is in the channel too"),
            "{two}"
        );
        let three = prompt("Jarvis", &["Sage".into(), "Ada".into()], "", "x");
        assert!(three.contains("(\"Sage\", \"Ada\")"), "{three}");
        assert!(three.starts_with(PROMPT_TAG));
    }

    #[test]
    fn answers_are_parsed_leniently_and_checked() {
        assert_eq!(
            parse_answer(r#"{"addressed": true, "confidence": 0.9}"#),
            Ok(0.9)
        );
        let not_for_us =
            parse_answer("Sure! ```json\n{\"addressed\":false,\"confidence\":0.8}\n```").unwrap();
        assert!((not_for_us - 0.2).abs() < 1e-6, "{not_for_us}");
        assert!(parse_answer("Two plus two is four.").is_err());
        assert!(parse_answer("{\"addressed\": true}").is_err());
        assert_eq!(parse_answer(r#"{"confidence": 7}"#), Ok(1.0));
    }
}
