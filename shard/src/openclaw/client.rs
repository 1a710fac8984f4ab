//! The connection task, request correlation, run routing, timeouts and reconnects.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::device::{AuthPayload, CredentialStore};
use super::frames::{self, ChatEvent, ChatState, ErrorShape, Inbound, PROTOCOL};
use crate::lock;
use crate::secret::Secret;

/// Client settings. Every timeout is configurable; the defaults suit a voice bot.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `ws://` or `wss://` URL of the gateway.
    pub url: String,
    /// The gateway's shared token (`auth.token`); without it the device token is used.
    pub token: Option<Secret>,
    /// `client.id`: one of the gateway's known client ids.
    pub client_id: String,
    /// `client.mode`.
    pub client_mode: String,
    /// Shown in the gateway's device list.
    pub display_name: String,
    /// TCP + WebSocket + handshake.
    pub connect_timeout: Duration,
    /// A request's response (also how long a request waits for a reconnect).
    pub request_timeout: Duration,
    /// From `chat.send` to the first reply text.
    pub first_token_timeout: Duration,
    /// From `chat.send` to the end of the reply.
    pub reply_timeout: Duration,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Largest frame accepted from the gateway.
    pub max_frame_bytes: usize,
}

impl ClientConfig {
    /// Defaults for a gateway at `url`.
    pub fn new(url: impl Into<String>, token: Option<Secret>) -> Self {
        Self {
            url: url.into(),
            token,
            client_id: "gateway-client".into(),
            client_mode: "backend".into(),
            display_name: "voicebot".into(),
            connect_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(15),
            first_token_timeout: Duration::from_secs(20),
            reply_timeout: Duration::from_secs(120),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            max_frame_bytes: 16 << 20,
        }
    }

    /// The URL without query or credentials, for logs.
    fn url_for_logs(&self) -> &str {
        let end = self.url.find(['?', '#']).unwrap_or(self.url.len());
        let url = &self.url[..end];
        match (url.find("://"), url.find('@')) {
            (Some(scheme), Some(at)) if at > scheme => &url[at + 1..],
            _ => url,
        }
    }
}

/// Everything the client can fail with. Messages never contain a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The gateway could not be reached.
    #[error("cannot reach the gateway at {url}: {reason}")]
    Connect {
        /// Gateway URL (without credentials).
        url: String,
        /// Why.
        reason: String,
    },
    /// The gateway refused our credentials.
    #[error("the gateway refused authentication ({code}): {message}; check the gateway token")]
    Auth {
        /// `details.code` or `code`.
        code: String,
        /// The gateway's message.
        message: String,
    },
    /// The device must be approved by an operator.
    #[error(
        "device {device_id} is not paired yet: on the gateway host run `openclaw devices approve {request_id}`"
    )]
    PairingRequired {
        /// Our device id.
        device_id: String,
        /// The pairing request to approve.
        request_id: String,
    },
    /// The gateway sent something we cannot use.
    #[error("gateway protocol error: {0}")]
    Protocol(String),
    /// A request was refused.
    #[error("{method} failed ({code}): {message}")]
    Rejected {
        /// The method.
        method: String,
        /// Error code.
        code: String,
        /// The gateway's message.
        message: String,
    },
    /// Something took too long.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The connection dropped while a request or reply was in flight.
    #[error("the gateway connection was lost")]
    Disconnected,
    /// The agent's run failed.
    #[error("the agent's reply failed: {0}")]
    Run(String),
    /// The client was shut down.
    #[error("the gateway client is closed")]
    Closed,
}

impl ClientError {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::Auth { .. } => "auth",
            Self::PairingRequired { .. } => "pairing",
            Self::Protocol(_) => "protocol",
            Self::Rejected { .. } => "rejected",
            Self::Timeout(_) => "timeout",
            Self::Disconnected => "disconnected",
            Self::Run(_) => "run",
            Self::Closed => "closed",
        }
    }

    /// Whether retrying the same thing later can succeed.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::Auth { .. } | Self::Closed)
    }
}

/// The connection's state.
#[derive(Debug, Clone)]
pub enum Status {
    /// Connecting or reconnecting.
    Connecting,
    /// Handshake done.
    Connected {
        /// The gateway's connection id.
        conn_id: String,
        /// How many handshakes this client has completed (1 on the first connection).
        generation: u64,
    },
    /// The last attempt failed; a retry is scheduled.
    Retrying(ClientError),
    /// Shut down.
    Closed,
}

/// Per-message options of `chat.send`.
#[derive(Debug, Clone, Default)]
pub struct ChatOptions {
    /// `queueMode: "interrupt"`: a run already going in this session is aborted.
    pub interrupt: bool,
    /// The run id (= idempotency key) to use instead of a fresh one: a caller that records
    /// the run before it starts (fleet state) chooses it with [`new_run_id`].
    pub run_id: Option<String>,
}

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

type Pending = HashMap<String, oneshot::Sender<Result<Value, ClientError>>>;
type RunSender = mpsc::Sender<Result<ChatEvent, ClientError>>;
type RunReceiver = mpsc::Receiver<Result<ChatEvent, ClientError>>;

struct Shared {
    config: ClientConfig,
    store: Arc<dyn CredentialStore>,
    pending: Mutex<Pending>,
    /// Live reply streams: run id → (session key, sender).
    runs: Mutex<HashMap<String, (String, RunSender)>>,
    outbound: Mutex<Option<mpsc::Sender<String>>>,
    status: watch::Sender<Status>,
    next_id: AtomicU64,
    /// Time from a `chat` frame's arrival to its hand-off to the run's stream (µs, last value).
    dispatch_us: AtomicU64,
}

impl Shared {
    fn fail_in_flight(&self) {
        for (_, tx) in lock(&self.pending).drain() {
            let _ = tx.send(Err(ClientError::Disconnected));
        }
        for (_, (_, tx)) in lock(&self.runs).drain() {
            let _ = tx.try_send(Err(ClientError::Disconnected));
        }
    }
}

/// A handle to the pod's gateway connection. Cheap to clone; the connection task stops when
/// the last handle is dropped or [`GatewayClient::close`] is called.
#[derive(Clone)]
pub struct GatewayClient {
    shared: Arc<Shared>,
    status: watch::Receiver<Status>,
    _task: Arc<TaskGuard>,
}

struct TaskGuard(tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl GatewayClient {
    /// Starts the connection task (in the background; it retries until closed).
    pub fn start(config: ClientConfig, store: Arc<dyn CredentialStore>) -> Self {
        // wss:// needs a process-wide rustls provider; installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (status_tx, status) = watch::channel(Status::Connecting);
        let shared = Arc::new(Shared {
            config,
            store,
            pending: Mutex::new(HashMap::new()),
            runs: Mutex::new(HashMap::new()),
            outbound: Mutex::new(None),
            status: status_tx,
            next_id: AtomicU64::new(1),
            dispatch_us: AtomicU64::new(0),
        });
        let task = tokio::spawn(run_connection(shared.clone()));
        Self {
            shared,
            status,
            _task: Arc::new(TaskGuard(task)),
        }
    }

    /// The current connection state.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A receiver of state changes.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Time the client took to hand the last `chat` frame to its stream, in microseconds.
    pub fn last_dispatch_us(&self) -> u64 {
        self.shared.dispatch_us.load(Ordering::Relaxed)
    }

    /// Waits until connected. Fails at once on an authentication error, and with the last
    /// connection error when `timeout` passes.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), ClientError> {
        let mut rx = self.status.clone();
        let waited = tokio::time::timeout(timeout, async {
            loop {
                match &*rx.borrow_and_update() {
                    Status::Connected { .. } => return Ok(()),
                    Status::Retrying(e @ ClientError::Auth { .. }) => return Err(e.clone()),
                    Status::Closed => return Err(ClientError::Closed),
                    _ => {}
                }
                if rx.changed().await.is_err() {
                    return Err(ClientError::Closed);
                }
            }
        })
        .await;
        match waited {
            Ok(result) => result,
            Err(_) => Err(match &*self.status.borrow() {
                Status::Retrying(e) => e.clone(),
                _ => ClientError::Timeout("the gateway connection"),
            }),
        }
    }

    /// Sends a request and waits for its response payload.
    pub async fn request(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        let timeout = self.shared.config.request_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        // A request made while reconnecting waits for the connection, within its timeout.
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        match self.wait_connected(remaining).await {
            Ok(()) => {}
            Err(ClientError::Timeout(_)) => {
                return Err(ClientError::Timeout("the gateway connection"));
            }
            Err(e) => return Err(e),
        }
        let id = self
            .shared
            .next_id
            .fetch_add(1, Ordering::Relaxed)
            .to_string();
        let frame = serde_json::to_string(&frames::Request::new(&id, method, &params))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.pending).insert(id.clone(), tx);
        let sender = lock(&self.shared.outbound).clone();
        let sent = match sender {
            Some(s) => s.send(frame).await.is_ok(),
            None => false,
        };
        if !sent {
            lock(&self.shared.pending).remove(&id);
            return Err(ClientError::Disconnected);
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(Ok(payload))) => Ok(payload),
            Ok(Ok(Err(ClientError::Rejected { code, message, .. }))) => {
                Err(ClientError::Rejected {
                    method: method.to_string(),
                    code,
                    message,
                })
            }
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(ClientError::Disconnected),
            Err(_) => {
                lock(&self.shared.pending).remove(&id);
                Err(ClientError::Timeout("a gateway response"))
            }
        }
    }

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

    /// Stops the connection task; requests in flight end with [`ClientError::Closed`].
    pub fn close(&self) {
        self._task.0.abort();
        self.shared.fail_in_flight();
        self.shared.status.send_replace(Status::Closed);
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

/// Why one connection ended.
enum SessionEnd {
    /// The gateway said retry after this long (start-up).
    RetryAfter(Duration, ClientError),
    /// Any other failure.
    Failed(ClientError),
    /// The connection had been up and then closed.
    Closed,
}

async fn run_connection(shared: Arc<Shared>) {
    let mut attempt: u32 = 0;
    let mut generation = 0u64;
    let mut announced_pairing: Option<String> = None;
    loop {
        shared.status.send_replace(Status::Connecting);
        let end = session(&shared, &mut generation).await;
        *lock(&shared.outbound) = None;
        let delay = match end {
            SessionEnd::Closed => {
                attempt = 0;
                tracing::info!(
                    url = shared.config.url_for_logs(),
                    "gateway connection closed; reconnecting"
                );
                shared
                    .status
                    .send_replace(Status::Retrying(ClientError::Disconnected));
                jittered(shared.config.backoff_initial, 0, shared.config.backoff_max)
            }
            SessionEnd::RetryAfter(after, err) => {
                tracing::debug!(
                    after_ms = after.as_millis() as u64,
                    "gateway is starting; retrying"
                );
                shared.status.send_replace(Status::Retrying(err));
                after + jittered(Duration::from_millis(50), 0, Duration::from_millis(100))
            }
            SessionEnd::Failed(err) => {
                match &err {
                    ClientError::PairingRequired { request_id, .. } => {
                        if announced_pairing.as_deref() != Some(request_id.as_str()) {
                            tracing::warn!("{err}");
                            announced_pairing = Some(request_id.clone());
                        }
                    }
                    ClientError::Auth { .. } => tracing::error!("{err}"),
                    _ if attempt == 0 => tracing::warn!("{err}"),
                    _ => tracing::debug!("{err}"),
                }
                shared.status.send_replace(Status::Retrying(err));
                attempt = attempt.saturating_add(1);
                jittered(
                    shared.config.backoff_initial,
                    attempt,
                    shared.config.backoff_max,
                )
            }
        };
        // Status first, then the runs: whoever sees a run end with `Disconnected` must not
        // find the client still reporting itself connected.
        shared.fail_in_flight();
        tokio::time::sleep(delay).await;
    }
}

/// Exponential backoff with jitter: a random delay in [base·2ⁿ/2, base·2ⁿ], capped.
fn jittered(base: Duration, attempt: u32, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16)).min(max);
    let half = exp / 2;
    half + Duration::from_micros(fastrand::u64(0..=half.as_micros() as u64))
}

fn classify(err: ErrorShape, device_id: &str) -> SessionEnd {
    let detail = err.detail_code().unwrap_or_default().to_string();
    if err.code == "UNAVAILABLE" {
        let after = Duration::from_millis(err.retry_after_ms.unwrap_or(500).clamp(50, 30_000));
        let e = ClientError::Connect {
            url: String::new(),
            reason: format!(
                "gateway unavailable ({})",
                err.detail("reason").unwrap_or(&err.message)
            ),
        };
        return SessionEnd::RetryAfter(after, e);
    }
    if err.code == "NOT_PAIRED" || detail == "PAIRING_REQUIRED" {
        return SessionEnd::Failed(ClientError::PairingRequired {
            device_id: device_id.to_string(),
            request_id: err
                .detail("requestId")
                .unwrap_or("<see openclaw devices list>")
                .to_string(),
        });
    }
    if detail.starts_with("AUTH_")
        || detail.starts_with("DEVICE_AUTH")
        || err.code == "UNAUTHORIZED"
    {
        return SessionEnd::Failed(ClientError::Auth {
            code: detail,
            message: err.message,
        });
    }
    SessionEnd::Failed(ClientError::Protocol(format!(
        "connect refused ({}{}): {}",
        err.code,
        if detail.is_empty() {
            String::new()
        } else {
            format!("/{detail}")
        },
        err.message
    )))
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One connection: connect, handshake, then pump frames until it ends.
async fn session(shared: &Arc<Shared>, generation: &mut u64) -> SessionEnd {
    let config = &shared.config;
    let connect_err = |reason: String| {
        SessionEnd::Failed(ClientError::Connect {
            url: config.url_for_logs().to_string(),
            reason,
        })
    };
    let identity = match shared.store.identity() {
        Ok(id) => id,
        Err(e) => return connect_err(format!("device identity unavailable: {e}")),
    };
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(config.max_frame_bytes))
        .max_frame_size(Some(config.max_frame_bytes));
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    let connected = tokio::time::timeout_at(
        deadline,
        tokio_tungstenite::connect_async_with_config(config.url.as_str(), Some(ws_config), true),
    )
    .await;
    let mut ws: Ws = match connected {
        Err(_) => return SessionEnd::Failed(ClientError::Timeout("the gateway connection")),
        Ok(Err(e)) => return connect_err(e.to_string()),
        Ok(Ok((ws, _))) => ws,
    };

    // The server speaks first: connect.challenge {nonce, ts}.
    let challenge = loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return SessionEnd::Failed(ClientError::Timeout("the connect challenge")),
            Ok(None) => return connect_err("closed before the challenge".into()),
            Ok(Some(Err(e))) => return connect_err(e.to_string()),
            Ok(Some(Ok(Message::Text(text)))) => match frames::parse(&text, config.max_frame_bytes)
            {
                Ok(Inbound::Event(ev)) if ev.event == "connect.challenge" => break ev.payload,
                Ok(_) => continue,
                Err(e) => return SessionEnd::Failed(ClientError::Protocol(e.to_string())),
            },
            Ok(Some(Ok(Message::Close(frame)))) => {
                return connect_err(format!("closed before the challenge: {frame:?}"));
            }
            Ok(Some(Ok(_))) => continue,
        }
    };
    let nonce = challenge
        .get("nonce")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let ts = challenge
        .get("ts")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        });
    if nonce.is_empty() {
        return SessionEnd::Failed(ClientError::Protocol(
            "connect.challenge without a nonce".into(),
        ));
    }

    let device_token = shared.store.device_token();
    let (auth, token_for_signature) = match (&config.token, &device_token) {
        (Some(t), _) => (json!({"token": t.expose()}), t.expose().to_string()),
        (None, Some(d)) => (json!({"deviceToken": d.expose()}), d.expose().to_string()),
        (None, None) => (json!({}), String::new()),
    };
    let scopes = ["operator.read", "operator.write"];
    let platform = std::env::consts::OS;
    let signature = identity.sign(&AuthPayload {
        client_id: &config.client_id,
        client_mode: &config.client_mode,
        role: "operator",
        scopes: &scopes,
        signed_at_ms: ts,
        token: &token_for_signature,
        nonce: &nonce,
        platform,
        device_family: "",
    });
    let params = json!({
        "minProtocol": PROTOCOL,
        "maxProtocol": PROTOCOL,
        "client": {
            "id": config.client_id,
            "version": env!("CARGO_PKG_VERSION"),
            "platform": platform,
            "mode": config.client_mode,
            "displayName": config.display_name,
        },
        "role": "operator",
        "scopes": scopes,
        "auth": auth,
        "caps": [],
        "userAgent": concat!("voicebot/", env!("CARGO_PKG_VERSION")),
        "device": {
            "id": identity.id(),
            "publicKey": identity.public_key(),
            "signature": signature,
            "signedAt": ts,
            "nonce": nonce,
        },
    });
    let connect = match serde_json::to_string(&frames::Request::new("connect", "connect", &params))
    {
        Ok(s) => s,
        Err(e) => return SessionEnd::Failed(ClientError::Protocol(e.to_string())),
    };
    if let Err(e) = ws.send(Message::text(connect)).await {
        return connect_err(e.to_string());
    }
    let hello = loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return SessionEnd::Failed(ClientError::Timeout("the connect response")),
            Ok(None) => return connect_err("closed during the handshake".into()),
            Ok(Some(Err(e))) => return connect_err(e.to_string()),
            Ok(Some(Ok(Message::Text(text)))) => match frames::parse(&text, config.max_frame_bytes)
            {
                Ok(Inbound::Response(res)) if res.id == "connect" => {
                    if res.ok {
                        break res.payload.unwrap_or_default();
                    }
                    return classify(res.error.unwrap_or_default(), identity.id());
                }
                Ok(_) => continue,
                Err(e) => return SessionEnd::Failed(ClientError::Protocol(e.to_string())),
            },
            Ok(Some(Ok(Message::Close(frame)))) => {
                return connect_err(format!("closed during the handshake: {frame:?}"));
            }
            Ok(Some(Ok(_))) => continue,
        }
    };
    if hello.get("type").and_then(Value::as_str) != Some("hello-ok") {
        return SessionEnd::Failed(ClientError::Protocol(
            "the connect response is not hello-ok".into(),
        ));
    }
    if let Some(token) = hello.pointer("/auth/deviceToken").and_then(Value::as_str) {
        let token = Secret::new(token);
        if device_token.as_ref() != Some(&token)
            && let Err(e) = shared.store.save_device_token(&token)
        {
            tracing::warn!(error = %e, "could not save the device token the gateway issued");
        }
    }
    let tick = hello
        .pointer("/policy/tickIntervalMs")
        .and_then(Value::as_u64)
        .unwrap_or(30_000)
        .clamp(100, 600_000);
    let conn_id = hello
        .pointer("/server/connId")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    *generation += 1;
    tracing::info!(
        url = config.url_for_logs(),
        conn_id,
        device_id = identity.id(),
        "connected to the OpenClaw gateway"
    );

    let (out_tx, mut out_rx) = mpsc::channel::<String>(256);
    *lock(&shared.outbound) = Some(out_tx);
    shared.status.send_replace(Status::Connected {
        conn_id,
        generation: *generation,
    });
    pump(shared, ws, &mut out_rx, Duration::from_millis(tick * 2)).await
}

/// Routes frames until the connection ends.
async fn pump(
    shared: &Arc<Shared>,
    mut ws: Ws,
    out_rx: &mut mpsc::Receiver<String>,
    silence_limit: Duration,
) -> SessionEnd {
    let mut last_frame = Instant::now();
    let mut malformed = 0u32;
    let mut watchdog = tokio::time::interval(silence_limit / 4);
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            incoming = ws.next() => {
                let text = match incoming {
                    None => return SessionEnd::Closed,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "gateway socket error");
                        return SessionEnd::Closed;
                    }
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(frame))) => {
                        tracing::debug!(?frame, "gateway closed the connection");
                        return SessionEnd::Closed;
                    }
                    Some(Ok(_)) => {
                        last_frame = Instant::now();
                        continue;
                    }
                };
                let arrived = Instant::now();
                last_frame = arrived;
                match frames::parse(&text, shared.config.max_frame_bytes) {
                    Ok(Inbound::Response(res)) => {
                        let Some(tx) = lock(&shared.pending).remove(&res.id) else { continue };
                        let result = if res.ok {
                            Ok(res.payload.unwrap_or_default())
                        } else {
                            let e = res.error.unwrap_or_default();
                            Err(ClientError::Rejected { method: String::new(), code: e.detail_code().map_or(e.code.clone(), str::to_string), message: e.message })
                        };
                        let _ = tx.send(result);
                    }
                    Ok(Inbound::Event(ev)) if ev.event == "chat" => {
                        tracing::trace!(payload = %ev.payload, "chat event");
                        let Some(chat) = ChatEvent::from_payload(&ev.payload) else {
                            tracing::debug!("chat event without run id or state");
                            continue;
                        };
                        let tx = lock(&shared.runs).get(&chat.run_id).map(|(_, tx)| tx.clone());
                        if let Some(tx) = tx
                            && tx.try_send(Ok(chat)).is_err()
                        {
                            tracing::warn!("a reply stream is not being read; dropping an event");
                        }
                        shared.dispatch_us.store(arrived.elapsed().as_micros() as u64, Ordering::Relaxed);
                    }
                    Ok(Inbound::Event(ev)) if ev.event == "shutdown" => {
                        tracing::info!(reason = ?ev.payload.get("reason"), "the gateway is shutting down");
                    }
                    Ok(Inbound::Event(_)) => {}
                    Err(e) => {
                        malformed += 1;
                        if malformed <= 3 {
                            tracing::warn!(error = %e, "ignoring a malformed gateway frame");
                        }
                    }
                }
            }
            Some(frame) = out_rx.recv() => {
                if let Err(e) = ws.send(Message::text(frame)).await {
                    tracing::debug!(error = %e, "gateway send failed");
                    return SessionEnd::Closed;
                }
            }
            _ = watchdog.tick() => {
                if last_frame.elapsed() > silence_limit {
                    tracing::warn!(silent_ms = last_frame.elapsed().as_millis() as u64, "the gateway went silent; reconnecting");
                    let _ = ws.close(None).await;
                    return SessionEnd::Closed;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for attempt in 0..20 {
            let d = jittered(base, attempt, max);
            let exp = base.saturating_mul(1 << attempt.min(16)).min(max);
            assert!(d >= exp / 2 && d <= exp, "attempt {attempt}: {d:?}");
        }
    }

    #[test]
    fn urls_in_logs_lose_credentials() {
        let c = ClientConfig::new("wss://user:pw@gw.example:443/ws?token=abc", None);
        assert_eq!(c.url_for_logs(), "gw.example:443/ws");
        let c = ClientConfig::new("ws://127.0.0.1:1234", None);
        assert_eq!(c.url_for_logs(), "ws://127.0.0.1:1234");
    }

    #[test]
    fn connect_errors_are_classified() {
        let unavailable = ErrorShape {
            code: "UNAVAILABLE".into(),
            retry_after_ms: Some(500),
            ..ErrorShape::default()
        };
        assert!(
            matches!(classify(unavailable, "d"), SessionEnd::RetryAfter(d, _) if d == Duration::from_millis(500))
        );
        let auth = ErrorShape {
            code: "INVALID_REQUEST".into(),
            message: "bad token".into(),
            details: Some(json!({"code": "AUTH_TOKEN_MISMATCH"})),
            ..ErrorShape::default()
        };
        assert!(matches!(
            classify(auth, "d"),
            SessionEnd::Failed(ClientError::Auth { .. })
        ));
        let pairing = ErrorShape {
            code: "NOT_PAIRED".into(),
            details: Some(json!({"code": "PAIRING_REQUIRED", "requestId": "req-9"})),
            ..ErrorShape::default()
        };
        match classify(pairing, "dev1") {
            SessionEnd::Failed(e @ ClientError::PairingRequired { .. }) => {
                assert!(
                    e.to_string().contains("openclaw devices approve req-9"),
                    "{e}"
                );
            }
            _ => panic!("not a pairing error"),
        }
    }
}
