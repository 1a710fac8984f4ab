//! OpenClaw Gateway wire frames (protocol v4).
//!
//! Request `{type:"req", id, method, params}`; response `{type:"res", id, ok, payload | error}`;
//! event `{type:"event", event, payload, seq?}`. Parsing is lenient about extra fields (the
//! gateway adds them between releases) and strict about size: a frame larger than the limit is
//! refused before it is parsed.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Protocol version we speak.
pub const PROTOCOL: u32 = 4;

/// An outgoing request.
#[derive(Debug, Serialize)]
pub struct Request<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    /// Client-chosen correlation id.
    pub id: &'a str,
    /// Method name, e.g. `chat.send`.
    pub method: &'a str,
    /// Method parameters.
    pub params: &'a Value,
}

impl<'a> Request<'a> {
    /// A `req` frame.
    pub fn new(id: &'a str, method: &'a str, params: &'a Value) -> Self {
        Self {
            kind: "req",
            id,
            method,
            params,
        }
    }
}

/// The error shape of a failed response.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorShape {
    /// `INVALID_REQUEST`, `FORBIDDEN`, `NOT_PAIRED`, `UNAVAILABLE`, …
    #[serde(default)]
    pub code: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// Structured details; `details.code` refines `code`.
    #[serde(default)]
    pub details: Option<Value>,
    /// Whether retrying may succeed.
    #[serde(default)]
    pub retryable: Option<bool>,
    /// Suggested delay before a retry.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
}

impl ErrorShape {
    /// `details.code`, when present.
    pub fn detail_code(&self) -> Option<&str> {
        self.details.as_ref()?.get("code")?.as_str()
    }

    /// A detail field as a string.
    pub fn detail(&self, key: &str) -> Option<&str> {
        self.details.as_ref()?.get(key)?.as_str()
    }
}

/// A response to one of our requests.
#[derive(Debug, Clone, Deserialize)]
pub struct Response {
    /// The request id it answers.
    pub id: String,
    /// Success flag.
    pub ok: bool,
    /// Result when `ok`.
    #[serde(default)]
    pub payload: Option<Value>,
    /// Error when not `ok`.
    #[serde(default)]
    pub error: Option<ErrorShape>,
}

/// A server event.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    /// Event name (`connect.challenge`, `chat`, `tick`, `shutdown`, …).
    pub event: String,
    /// Event body.
    #[serde(default)]
    pub payload: Value,
    /// Sequence number, when the server numbers events.
    #[serde(default)]
    pub seq: Option<u64>,
}

/// Anything the gateway sends.
#[derive(Debug, Clone)]
pub enum Inbound {
    /// A response.
    Response(Response),
    /// An event.
    Event(Event),
}

/// Why an inbound frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Larger than the limit.
    #[error("frame of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Frame size.
        size: usize,
        /// Limit in force.
        limit: usize,
    },
    /// Not JSON, or JSON of the wrong shape.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A `type` we do not know.
    #[error("unknown frame type {0:?}")]
    UnknownType(String),
}

/// Parses one text frame, refusing anything over `limit` bytes before parsing it.
pub fn parse(text: &str, limit: usize) -> Result<Inbound, FrameError> {
    if text.len() > limit {
        return Err(FrameError::TooLarge {
            size: text.len(),
            limit,
        });
    }
    // serde_json refuses nesting deeper than 128 levels, so a JSON bomb is an error too.
    let value: Value =
        serde_json::from_str(text).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| FrameError::Malformed("no \"type\" field".into()))?
        .to_string();
    match kind.as_str() {
        "res" => serde_json::from_value(value)
            .map(Inbound::Response)
            .map_err(|e| FrameError::Malformed(format!("response: {e}"))),
        "event" => serde_json::from_value(value)
            .map(Inbound::Event)
            .map_err(|e| FrameError::Malformed(format!("event: {e}"))),
        _ => Err(FrameError::UnknownType(kind)),
    }
}

/// The state of a chat run, as carried by `chat` events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatState {
    /// A phase change (thinking, tool use); carries no text.
    Status,
    /// More reply text.
    Delta,
    /// The run finished.
    Final,
    /// The run was aborted.
    Aborted,
    /// The run failed.
    Error,
    /// Something newer than this client.
    Other(String),
}

/// A `chat` event, reduced to what the bot uses.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatEvent {
    /// The run it belongs to.
    pub run_id: String,
    /// Its session.
    pub session_key: String,
    /// What happened.
    pub state: ChatState,
    /// New text (for deltas): incremental, or the whole text when `replace`.
    pub delta_text: Option<String>,
    /// `deltaText` replaces the text so far.
    pub replace: bool,
    /// Whole message text (cumulative on deltas, complete on final/aborted).
    pub message_text: Option<String>,
    /// Error text on `error`.
    pub error_message: Option<String>,
}

/// Concatenated text parts of a `message` object (`content: [{type:"text", text}]` or a string).
fn message_text(message: &Value) -> Option<String> {
    match message.get("content")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<String>(),
        ),
        _ => None,
    }
}

impl ChatEvent {
    /// Reads a `chat` event payload; `None` if it lacks a run id or state.
    pub fn from_payload(payload: &Value) -> Option<Self> {
        let s = |k: &str| payload.get(k).and_then(Value::as_str).map(str::to_string);
        let state = match payload.get("state")?.as_str()? {
            "status" => ChatState::Status,
            "delta" => ChatState::Delta,
            "final" => ChatState::Final,
            "aborted" => ChatState::Aborted,
            "error" => ChatState::Error,
            other => ChatState::Other(other.to_string()),
        };
        Some(Self {
            run_id: s("runId")?,
            session_key: s("sessionKey").unwrap_or_default(),
            state,
            delta_text: s("deltaText"),
            replace: payload
                .get("replace")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            message_text: payload.get("message").and_then(message_text),
            error_message: s("errorMessage"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_responses_and_events() {
        let res = parse(
            r#"{"type":"res","id":"7","ok":true,"payload":{"runId":"r1"},"extra":1}"#,
            1024,
        )
        .unwrap();
        assert!(matches!(res, Inbound::Response(r) if r.id == "7" && r.ok));
        let err = parse(
            r#"{"type":"res","id":"1","ok":false,"error":{"code":"UNAVAILABLE","message":"starting","retryable":true,"retryAfterMs":500,"details":{"reason":"startup-sidecars"}}}"#,
            1024,
        )
        .unwrap();
        let Inbound::Response(r) = err else {
            panic!("not a response")
        };
        let e = r.error.unwrap();
        assert_eq!(
            (e.code.as_str(), e.retry_after_ms, e.detail("reason")),
            ("UNAVAILABLE", Some(500), Some("startup-sidecars"))
        );
        let ev = parse(
            r#"{"type":"event","event":"tick","payload":{"ts":1},"seq":3}"#,
            1024,
        )
        .unwrap();
        assert!(matches!(ev, Inbound::Event(e) if e.event == "tick" && e.seq == Some(3)));
    }

    #[test]
    fn chat_events_carry_text() {
        let delta = ChatEvent::from_payload(&serde_json::json!({
            "runId": "r", "sessionKey": "agent:jarvis:x", "seq": 2, "state": "delta", "deltaText": " four",
            "message": {"role": "assistant", "content": [{"type": "text", "text": "Two plus two is four"}]}
        }))
        .unwrap();
        assert_eq!(delta.state, ChatState::Delta);
        assert_eq!(delta.delta_text.as_deref(), Some(" four"));
        assert_eq!(delta.message_text.as_deref(), Some("Two plus two is four"));
        assert!(ChatEvent::from_payload(&serde_json::json!({"state": "delta"})).is_none());
        let odd =
            ChatEvent::from_payload(&serde_json::json!({"runId": "r", "state": "thinking-hard"}))
                .unwrap();
        assert_eq!(odd.state, ChatState::Other("thinking-hard".into()));
    }

    #[test]
    fn hostile_frames_are_errors() {
        assert!(matches!(
            parse(&"x".repeat(2000), 1024),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(matches!(
            parse("{not json", 1024),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            parse("[1,2,3]", 1024),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            parse(r#"{"type":"boom"}"#, 1024),
            Err(FrameError::UnknownType(_))
        ));
        assert!(matches!(
            parse(r#"{"type":"res"}"#, 1024),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            parse(r#"{"type":"res","id":5,"ok":"yes"}"#, 1024),
            Err(FrameError::Malformed(_))
        ));
        let bomb = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            parse(&bomb, 1 << 20),
            Err(FrameError::Malformed(_))
        ));
        assert!(parse("", 1024).is_err());
    }
}
