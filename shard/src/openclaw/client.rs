//! The pod's handle on its gateway connection: settings, request/response correlation and
//! the routing tables the connection task fills. The connection itself is `connection`
//! (connect, handshake, frame pump), its retry loop `reconnect`, reply streams `run`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use super::device::CredentialStore;
use super::error::ClientError;
use super::frames::{self, ChatEvent};
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
    pub(super) fn url_for_logs(&self) -> &str {
        let end = self.url.find(['?', '#']).unwrap_or(self.url.len());
        let url = &self.url[..end];
        match (url.find("://"), url.find('@')) {
            (Some(scheme), Some(at)) if at > scheme => &url[at + 1..],
            _ => url,
        }
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

pub(super) type Pending = HashMap<String, oneshot::Sender<Result<Value, ClientError>>>;
pub(super) type RunSender = mpsc::Sender<Result<ChatEvent, ClientError>>;
pub(super) type RunReceiver = mpsc::Receiver<Result<ChatEvent, ClientError>>;

pub(super) struct Shared {
    pub(super) config: ClientConfig,
    pub(super) store: Arc<dyn CredentialStore>,
    pub(super) pending: Mutex<Pending>,
    /// Live reply streams: run id → (session key, sender).
    pub(super) runs: Mutex<HashMap<String, (String, RunSender)>>,
    pub(super) outbound: Mutex<Option<mpsc::Sender<String>>>,
    pub(super) status: watch::Sender<Status>,
    pub(super) next_id: AtomicU64,
    /// Time from a `chat` frame's arrival to its hand-off to the run's stream (µs, last value).
    pub(super) dispatch_us: AtomicU64,
}

impl Shared {
    pub(super) fn fail_in_flight(&self) {
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
    pub(super) shared: Arc<Shared>,
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
        let task = tokio::spawn(super::reconnect::run_connection(shared.clone()));
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

    /// Stops the connection task; requests in flight end with [`ClientError::Closed`].
    pub fn close(&self) {
        self._task.0.abort();
        self.shared.fail_in_flight();
        self.shared.status.send_replace(Status::Closed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_logs_lose_credentials() {
        let c = ClientConfig::new("wss://user:pw@gw.example:443/ws?token=abc", None);
        assert_eq!(c.url_for_logs(), "gw.example:443/ws");
        let c = ClientConfig::new("ws://127.0.0.1:1234", None);
        assert_eq!(c.url_for_logs(), "ws://127.0.0.1:1234");
    }
}
