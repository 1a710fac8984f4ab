//! Runs: `chat.send` with a run id, the reply stream that run's events are routed to, its
//! recovery from a wedged session, `chat.history` lookups and `chat.abort`.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::client::{ChatOptions, GatewayClient, RunReceiver, Shared};
use super::error::ClientError;
use super::frames::ChatState;
use crate::lock;
use std::sync::Arc;

/// Where a run stands, from `chat.history` (after a restart: a reply the pod was speaking).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// Still being written: the text so far.
    InFlight(String),
    /// Finished: the assistant's whole reply.
    Finished(String),
    /// The session holds no such run (never started, or aborted without text).
    Missing,
}

/// What a reply stream yields.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyEvent {
    /// New text appended to the reply.
    Delta(String),
    /// The gateway replaced the reply so far with this text.
    Replace(String),
    /// The reply is complete: the whole text.
    Final(String),
    /// The run was aborted: the text that had been written.
    Aborted(String),
}

impl GatewayClient {
    /// Sends `message` to the agent of `session_key` and streams the reply.
    pub async fn chat(
        &self,
        session_key: &str,
        message: &str,
        options: ChatOptions,
    ) -> Result<ReplyStream, ClientError> {
        let started = tokio::time::Instant::now();
        let (run_id, rx, guard) = self.send_run(session_key, message, options).await?;
        let config = &self.shared.config;
        Ok(ReplyStream {
            client: self.clone(),
            rx,
            run_id,
            session_key: session_key.to_string(),
            message: message.to_string(),
            first_token_deadline: started + config.first_token_timeout,
            reply_deadline: started + config.reply_timeout,
            got_text: false,
            text: String::new(),
            done: false,
            recoveries: 0,
            _guard: guard,
        })
    }

    /// `chat.send` with a fresh run id whose events are routed to the returned receiver.
    async fn send_run(
        &self,
        session_key: &str,
        message: &str,
        options: ChatOptions,
    ) -> Result<(String, RunReceiver, RunGuard), ClientError> {
        let interrupt = options.interrupt;
        let run_id = options.run_id.unwrap_or_else(new_run_id);
        let (tx, rx) = mpsc::channel(1024);
        lock(&self.shared.runs).insert(run_id.clone(), (session_key.to_string(), tx));
        let guard = RunGuard {
            shared: self.shared.clone(),
            run_id: run_id.clone(),
        };
        let mut params = json!({
            "sessionKey": session_key,
            "message": message,
            "idempotencyKey": run_id,
        });
        if interrupt {
            params["queueMode"] = json!("interrupt");
        }
        let payload = self.request("chat.send", params).await?;
        tracing::debug!(run_id, ?payload, "chat.send accepted");
        let gateway_run = payload
            .get("runId")
            .and_then(Value::as_str)
            .unwrap_or(&run_id);
        if gateway_run != run_id {
            return Err(ClientError::Protocol(format!(
                "chat.send answered for another run ({gateway_run})"
            )));
        }
        Ok((run_id, rx, guard))
    }

    /// Whether another live reply stream of ours is in `session_key`.
    fn other_run_in(&self, session_key: &str, run_id: &str) -> bool {
        lock(&self.shared.runs)
            .iter()
            .any(|(id, (key, _))| id != run_id && key == session_key)
    }

    /// Where `run` of `session_key` stands (`chat.history`): in flight with its text so far,
    /// finished with its reply, or missing.
    pub async fn run_state(&self, session_key: &str, run: &str) -> Result<RunState, ClientError> {
        let history = self
            .request("chat.history", json!({ "sessionKey": session_key }))
            .await?;
        Ok(run_state_in(&history, run))
    }

    /// Aborts a run (barge-in). Returns whether the gateway aborted something.
    pub async fn abort(&self, session_key: &str, run_id: &str) -> Result<bool, ClientError> {
        let payload = self
            .request(
                "chat.abort",
                json!({"sessionKey": session_key, "runId": run_id}),
            )
            .await?;
        Ok(payload
            .get("aborted")
            .and_then(Value::as_bool)
            .unwrap_or(false))
    }
}

/// Reads a run's state out of a `chat.history` answer.
fn run_state_in(history: &Value, run: &str) -> RunState {
    let in_flight = &history["inFlightRun"];
    if in_flight["runId"].as_str() == Some(run) {
        return RunState::InFlight(in_flight["text"].as_str().unwrap_or_default().to_string());
    }
    let reply = history["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "assistant" && m["__openclaw"]["runId"].as_str() == Some(run))
        .map(|m| match &m["content"] {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(""),
            _ => String::new(),
        })
        .next_back();
    match reply {
        Some(text) if !text.trim().is_empty() => RunState::Finished(text.trim().to_string()),
        _ => RunState::Missing,
    }
}

/// A fresh run id (`vb-` and 24 random hex digits).
pub fn new_run_id() -> String {
    let mut bytes = [0u8; 12];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes.copy_from_slice(&nanos.to_le_bytes()[..12]);
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("vb-{hex}")
}

/// Removes a run's routing entry when its stream goes away.
struct RunGuard {
    shared: Arc<Shared>,
    run_id: String,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        lock(&self.shared.runs).remove(&self.run_id);
    }
}

/// How many times a reply stream clears a wedged session and resends.
const MAX_RECOVERIES: u32 = 3;

/// The streamed reply of one run.
pub struct ReplyStream {
    client: GatewayClient,
    rx: RunReceiver,
    run_id: String,
    session_key: String,
    message: String,
    /// Recoveries from a wedged session so far (at most [`MAX_RECOVERIES`]).
    recoveries: u32,
    first_token_deadline: tokio::time::Instant,
    reply_deadline: tokio::time::Instant,
    got_text: bool,
    text: String,
    done: bool,
    _guard: RunGuard,
}

impl ReplyStream {
    /// The run id (also the idempotency key), for [`GatewayClient::abort`].
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The session this run belongs to.
    pub fn session_key(&self) -> &str {
        &self.session_key
    }

    /// The reply text received so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The next piece of the reply; `None` after the final, aborted or error event.
    pub async fn next(&mut self) -> Option<Result<ReplyEvent, ClientError>> {
        if self.done {
            return None;
        }
        loop {
            let (deadline, what) = if self.got_text {
                (self.reply_deadline, "the end of the reply")
            } else {
                (
                    self.first_token_deadline.min(self.reply_deadline),
                    "the first reply token",
                )
            };
            let event = match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => {
                    self.done = true;
                    // Stop the run at the gateway too: otherwise the next message in this
                    // session would be steered into it and get an empty reply.
                    let (client, key, run) = (
                        self.client.clone(),
                        self.session_key.clone(),
                        self.run_id.clone(),
                    );
                    tokio::spawn(async move {
                        if let Err(e) = client.abort(&key, &run).await {
                            tracing::debug!(error = %e, "could not abort a timed-out run");
                        }
                    });
                    return Some(Err(ClientError::Timeout(what)));
                }
                Ok(None) => {
                    self.done = true;
                    return Some(Err(ClientError::Disconnected));
                }
                Ok(Some(Err(e))) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Ok(Some(Ok(event))) => event,
            };
            match event.state {
                ChatState::Delta => {
                    let Some(delta) = event.delta_text else {
                        continue;
                    };
                    self.got_text = true;
                    if event.replace {
                        if let Some(new) = delta.strip_prefix(self.text.as_str()) {
                            let new = new.to_string();
                            self.text = delta;
                            if new.is_empty() {
                                continue;
                            }
                            return Some(Ok(ReplyEvent::Delta(new)));
                        }
                        self.text.clone_from(&delta);
                        return Some(Ok(ReplyEvent::Replace(delta)));
                    }
                    if delta.is_empty() {
                        continue;
                    }
                    self.text.push_str(&delta);
                    return Some(Ok(ReplyEvent::Delta(delta)));
                }
                ChatState::Final
                    if !self.got_text
                        && self.recoveries < MAX_RECOVERIES
                        && event.message_text.as_deref().is_none_or(str::is_empty)
                        && !self.client.other_run_in(&self.session_key, &self.run_id) =>
                {
                    // An empty final before any text, while we have no other run in this
                    // session: the message was steered into a run we do not own — typically
                    // one left active by a gateway that crashed mid-reply. Clear the session
                    // and send again, interrupting whatever is left; the gateway may need a
                    // moment to wind the stale run down, so wait a little longer each time.
                    self.recoveries += 1;
                    tracing::info!(session = %self.session_key, attempt = self.recoveries, "message absorbed by a stale run; clearing the session and resending");
                    if let Err(e) = self
                        .client
                        .request("chat.abort", json!({"sessionKey": self.session_key}))
                        .await
                    {
                        tracing::debug!(error = %e, "could not clear the session");
                    }
                    tokio::time::sleep(Duration::from_millis(250 << self.recoveries)).await;
                    match self
                        .client
                        .send_run(
                            &self.session_key,
                            &self.message,
                            ChatOptions {
                                interrupt: true,
                                run_id: None,
                            },
                        )
                        .await
                    {
                        Ok((run_id, rx, guard)) => {
                            self.run_id = run_id;
                            self.rx = rx;
                            self._guard = guard;
                            continue;
                        }
                        Err(e) => {
                            self.done = true;
                            return Some(Err(e));
                        }
                    }
                }
                ChatState::Final => {
                    self.done = true;
                    let text = event.message_text.unwrap_or_else(|| self.text.clone());
                    self.text.clone_from(&text);
                    return Some(Ok(ReplyEvent::Final(text)));
                }
                ChatState::Aborted => {
                    self.done = true;
                    let text = event.message_text.unwrap_or_else(|| self.text.clone());
                    return Some(Ok(ReplyEvent::Aborted(text)));
                }
                ChatState::Error => {
                    self.done = true;
                    return Some(Err(ClientError::Run(
                        event
                            .error_message
                            .unwrap_or_else(|| "unknown error".into()),
                    )));
                }
                ChatState::Status | ChatState::Other(_) => continue,
            }
        }
    }

    /// Reads the whole reply: the final text, or the partial text if it was aborted.
    pub async fn collect(mut self) -> Result<String, ClientError> {
        let mut last = String::new();
        while let Some(event) = self.next().await {
            match event? {
                ReplyEvent::Final(t) | ReplyEvent::Aborted(t) => return Ok(t),
                ReplyEvent::Delta(_) | ReplyEvent::Replace(_) => last.clone_from(&self.text),
            }
        }
        Ok(last)
    }
}
