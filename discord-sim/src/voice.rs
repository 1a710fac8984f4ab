//! The voice server: a TLS WebSocket (gateway v4) and a UDP socket carrying RTP with Opus,
//! encrypted `aead_aes256_gcm_rtpsize` like Discord's.
//!
//! ```text
//! bot op4 on the main gateway ─► gateway.rs: VOICE_SERVER_UPDATE {endpoint: localhost:PORT, token}
//! songbird ──wss──► connection(): hello, identify → ready {ssrc, port}, select protocol →
//!                    session description {secret_key, dave_protocol_version}, heartbeats
//! songbird ──UDP──► udp_loop(): IP discovery, the bot's RTP → decrypt → Opus decode → recording
//! speak()  ──UDP──► a simulated user's speech: op5 speaking (SSRC → user), then Opus RTP at
//!                    20 ms real time, then five silence frames
//! ```
//!
//! DAVE (end-to-end encryption, `dave.rs`): with a bot that offers it (`max_dave_protocol_version`
//! ≥ 1 in its identify) and `SimConfig::dave`, the session description says version 1, the
//! simulator sends who is in the channel (op 11) and its external sender (op 25), and relays
//! the MLS handshake over the DAVE opcodes (binary 26-30, JSON 21-24 and 31); the users' Opus
//! is end-to-end encrypted for the group and the bot's is read only as a member:
//!
//! ```text
//! select protocol ─► op4 {dave_protocol_version: 1}, op11 users, op25 external sender
//! bot op26 key package ─► users in the call commit its addition ─► op30 welcome
//! a user joins/leaves ─► op11, op27 proposals ─► bot op28 commit (+welcome) ─► op29 announce
//! bot op23 ready ─► op22 execute (the next change waits for it)
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::dave::{DaveCall, DaveStats, Out};
use crate::state::{Shared, SimEvent, User, lock};

/// The only transport mode the simulator offers (songbird's preferred one).
const MODE: &str = "aead_aes256_gcm_rtpsize";
/// Opus's "silence" frame, sent by clients when they stop talking.
const SILENCE: [u8; 3] = [0xf8, 0xff, 0xfe];
/// 48 kHz, 20 ms.
const FRAME: usize = 960;
const RTP_HEADER: usize = 12;
const TAG: usize = 16;

/// A self-signed certificate for `localhost` (or the names given): the voice WebSocket's
/// identity.
///
/// Tests and the demo generate it before anything reads `SSL_CERT_FILE`.
///
/// songbird connects to `wss://{endpoint}` and trusts the platform's roots, which include the
/// file named by `SSL_CERT_FILE`: write [`TlsIdentity::cert_pem`] there before the bot connects
/// (a pod: add it to the image's CA bundle).
pub struct TlsIdentity {
    cert_pem: String,
    key_pem: String,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// A fresh key and certificate for `localhost`.
    pub fn generate() -> Result<Self, String> {
        Self::generate_for(&["localhost".to_string()])
    }

    /// A fresh key and certificate for `names` (host names or IP addresses).
    pub fn generate_for(names: &[String]) -> Result<Self, String> {
        let ck = rcgen::generate_simple_self_signed(names.to_vec())
            .map_err(|e| format!("certificate: {e}"))?;
        Self::from_pem(&ck.cert.pem(), &ck.signing_key.serialize_pem())
    }

    /// The identity written earlier ([`TlsIdentity::cert_pem`], [`TlsIdentity::key_pem`]).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, String> {
        use rustls::pki_types::pem::PemObject as _;
        let cert = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| format!("certificate: {e}"))?;
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| format!("key: {e}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .map_err(|e| format!("tls: {e}"))?;
        Ok(Self {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key, PEM (a test identity: kept only to serve the same certificate again).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }
}

/// What the bot sent in a guild's voice channel, as the simulator heard it.
#[derive(Debug, Clone, Default)]
pub struct BotAudio {
    /// Decoded audio, 48 kHz mono.
    pub pcm: Vec<f32>,
    /// For each RTP packet carrying sound (not the silence frame): when it arrived and where
    /// its samples start in `pcm`.
    pub packets: Vec<(Instant, usize)>,
}

impl BotAudio {
    /// Sample rate of `pcm`.
    pub const SAMPLE_RATE: u32 = 48_000;

    /// When the first packet at or after `t` arrived, and the audio from there on.
    pub fn since(&self, t: Instant) -> Option<(Instant, &[f32])> {
        let &(at, start) = self.packets.iter().find(|(at, _)| *at >= t)?;
        Some((at, &self.pcm[start..]))
    }

    /// When the last sound packet arrived.
    pub fn last_packet(&self) -> Option<Instant> {
        self.packets.last().map(|p| p.0)
    }

    /// Forgets what arrived before `t` (long runs keep memory flat).
    pub fn forget_before(&mut self, t: Instant) {
        let keep = self.packets.partition_point(|(at, _)| *at < t);
        let Some(&(_, start)) = self.packets.get(keep) else {
            self.packets.clear();
            self.pcm.clear();
            return;
        };
        self.packets.drain(..keep);
        for p in &mut self.packets {
            p.1 -= start;
        }
        self.pcm.drain(..start);
    }
}

/// The bot's voice connection in one guild.
struct Call {
    token: String,
    channel: Option<u64>,
    bot_ssrc: u32,
    key: [u8; 32],
    /// Set by select protocol.
    cipher: Option<Aes256Gcm>,
    bot_addr: Option<SocketAddr>,
    ws: Option<mpsc::UnboundedSender<WsOut>>,
    /// Users who spoke: their SSRC and RTP clock (a stream continues across utterances, as a
    /// real client's does; a jump back would make the receiver drop it as late).
    users: HashMap<u64, Stream>,
    decoder: Option<opus2::Decoder>,
    audio: BotAudio,
    /// Counter of the packets the simulator sends (the rtpsize nonce).
    nonce: u32,
    /// The DAVE version the bot offered in its identify.
    bot_max_dave: u64,
    /// DAVE in this call (`None`: transport encryption only).
    dave: Option<DaveCall>,
}

impl Call {
    /// Sends DAVE's messages to the bot's voice WebSocket.
    fn send(&self, out: Vec<Out>) {
        let Some(ws) = &self.ws else { return };
        for o in out {
            let _ = ws.send(match o {
                Out::Json(code, d) => WsOut::Text(op(code, d)),
                Out::Binary(b) => WsOut::Binary(b),
            });
        }
    }
}

#[derive(Clone, Copy)]
struct Stream {
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    /// When the stream last sent.
    at: Instant,
}

pub(crate) enum WsOut {
    Text(String),
    Binary(Vec<u8>),
    Close(u16),
    /// Drop the connection without a close frame (the server is gone).
    Cut,
}

pub(crate) struct VoiceServer {
    pub endpoint: String,
    udp: Arc<UdpSocket>,
    calls: Mutex<HashMap<u64, Call>>,
    next_ssrc: std::sync::atomic::AtomicU32,
    /// The voice server is gone until then: connections are cut at once, UDP is dropped.
    down_until: Mutex<Option<Instant>>,
}

impl VoiceServer {
    pub async fn bind(host: std::net::IpAddr, port: u16) -> std::io::Result<(Self, TcpListener)> {
        let ws = TcpListener::bind((host, port)).await?;
        // A fixed port serves both (TCP and UDP); otherwise each takes a free one.
        let udp = UdpSocket::bind((host, port)).await?;
        // The name the voice certificate is for: `localhost` for 127.0.0.1 or ::1, else the
        // address.
        let name = if host == std::net::Ipv4Addr::LOCALHOST || host == std::net::Ipv6Addr::LOCALHOST
        {
            "localhost".to_string()
        } else {
            host.to_string()
        };
        let endpoint = format!("{name}:{}", ws.local_addr()?.port());
        Ok((
            Self {
                endpoint,
                udp: Arc::new(udp),
                calls: Mutex::new(HashMap::new()),
                next_ssrc: 100.into(),
                down_until: Mutex::new(None),
            },
            ws,
        ))
    }

    /// Whether the voice server is gone now.
    pub(crate) fn down(&self) -> bool {
        lock(&self.down_until).is_some_and(|t| Instant::now() < t)
    }

    fn ssrc(&self) -> u32 {
        self.next_ssrc
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// The bot asked to join `channel` (or leave with `None`) in `guild`: a token for the
    /// voice server update. Leaving closes the voice connection like Discord does.
    /// The guild's voice server moves: a new token (the old one is refused from now on) and no
    /// session; returns the old connection's sender, to close it.
    pub(crate) fn move_server(
        &self,
        guild: u64,
        token: String,
    ) -> Result<Option<mpsc::UnboundedSender<WsOut>>, String> {
        let mut calls = lock(&self.calls);
        let call = calls
            .get_mut(&guild)
            .filter(|c| c.channel.is_some())
            .ok_or_else(|| format!("the bot is not in voice in guild {guild}"))?;
        call.token = token;
        call.cipher = None;
        Ok(call.ws.take())
    }

    pub fn voice_state(&self, guild: u64, channel: Option<u64>, token: String) {
        let mut calls = lock(&self.calls);
        match channel {
            Some(c) => {
                let call = calls.entry(guild).or_insert_with(|| Call {
                    token: String::new(),
                    channel: None,
                    bot_ssrc: 0,
                    key: [0; 32],
                    cipher: None,
                    bot_addr: None,
                    ws: None,
                    users: HashMap::new(),
                    decoder: None,
                    audio: BotAudio::default(),
                    nonce: 0,
                    bot_max_dave: 0,
                    dave: None,
                });
                call.token = token;
                call.channel = Some(c);
            }
            None => {
                if let Some(call) = calls.get_mut(&guild) {
                    call.channel = None;
                    call.cipher = None;
                    if let Some(ws) = call.ws.take() {
                        let _ = ws.send(WsOut::Close(4014));
                    }
                }
            }
        }
    }
}

pub(crate) async fn serve_ws(listener: TcpListener, state: Arc<Shared>, tls: Arc<TlsIdentity>) {
    while let Ok((stream, _)) = listener.accept().await {
        if state.voice.down() {
            // Gone: the connection is reset, as to a host that went away.
            drop(stream);
            continue;
        }
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let Ok(stream) = tls.acceptor.accept(stream).await else {
                tracing::debug!("voice: TLS handshake failed");
                return;
            };
            match tokio_tungstenite::accept_async(stream).await {
                Ok(ws) => connection(ws, state).await,
                Err(e) => tracing::debug!(error = %e, "voice: not a WebSocket"),
            }
        });
    }
}

fn op(op: u8, d: Value) -> String {
    json!({"op": op, "d": d}).to_string()
}

async fn connection<S>(ws: tokio_tungstenite::WebSocketStream<S>, state: Arc<Shared>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<WsOut>();
    let cut = Arc::new(tokio::sync::Notify::new());
    let cut_by_writer = cut.clone();
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            let msg = match out {
                WsOut::Text(t) => Message::Text(t.into()),
                WsOut::Binary(b) => Message::Binary(b.into()),
                WsOut::Cut => {
                    cut_by_writer.notify_one();
                    break;
                }
                WsOut::Close(code) => {
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code: code.into(),
                            reason: "simulated".into(),
                        })))
                        .await;
                    break;
                }
            };
            if sink.send(msg).await.is_err() {
                break;
            }
        }
    });
    let _ = tx.send(WsOut::Text(op(8, json!({"heartbeat_interval": 13_750.0}))));
    let voice = &state.voice;
    let mut guild = None;
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            () = cut.notified() => break,
        };
        let Some(Ok(msg)) = next else { break };
        let text = match msg {
            Message::Text(t) => t.to_string(),
            Message::Binary(b) => {
                if let Some(g) = guild {
                    dave_binary(&state, g, &b);
                }
                continue;
            }
            Message::Close(_) => break,
            _ => continue,
        };
        let Ok(payload) = serde_json::from_str::<Value>(&text) else {
            let _ = tx.send(WsOut::Close(4002));
            break;
        };
        let d = &payload["d"];
        match payload["op"].as_u64() {
            // Identify, or resume.
            Some(0) | Some(7) => {
                let resumed = payload["op"] == 7;
                let g = d["server_id"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .or_else(|| d["server_id"].as_u64());
                let mut calls = lock(&voice.calls);
                let call = g.and_then(|g| calls.get_mut(&g));
                let Some(call) = call.filter(|c| {
                    c.channel.is_some() && d["token"].as_str() == Some(c.token.as_str())
                }) else {
                    drop(calls);
                    let _ = tx.send(WsOut::Close(4004));
                    break;
                };
                guild = g;
                if let Some(old) = call.ws.replace(tx.clone()) {
                    let _ = old.send(WsOut::Close(4006));
                }
                if resumed && call.cipher.is_some() {
                    let _ = tx.send(WsOut::Text(op(9, Value::Null)));
                } else {
                    call.bot_max_dave = d["max_dave_protocol_version"].as_u64().unwrap_or(0);
                    call.dave = None;
                    call.bot_ssrc = voice.ssrc();
                    call.key = std::array::from_fn(|_| fastrand::u8(..));
                    call.cipher = None;
                    let (ip, port) = voice
                        .udp
                        .local_addr()
                        .map(|a| (a.ip().to_string(), a.port()))
                        .unwrap_or_else(|_| ("127.0.0.1".into(), 0));
                    let ready = json!({
                        "ssrc": call.bot_ssrc, "ip": ip, "port": port,
                        "modes": [MODE], "heartbeat_interval": 1
                    });
                    let _ = tx.send(WsOut::Text(op(2, ready)));
                }
                drop(calls);
                state.record(SimEvent::VoiceConnect {
                    guild: g.unwrap_or(0),
                    resumed,
                    max_dave_version: d["max_dave_protocol_version"].as_u64().unwrap_or(0),
                });
            }
            // Select protocol.
            Some(1) => {
                let Some(g) = guild else { break };
                let users = users_in_call(&state, g);
                let mode = d["data"]["mode"].as_str().unwrap_or_default();
                if mode != MODE {
                    let _ = tx.send(WsOut::Close(4016));
                    break;
                }
                let addr = format!(
                    "{}:{}",
                    d["data"]["address"].as_str().unwrap_or_default(),
                    d["data"]["port"].as_u64().unwrap_or(0)
                );
                let mut calls = lock(&voice.calls);
                let Some(call) = calls.get_mut(&g) else { break };
                call.bot_addr = addr.parse().ok();
                tracing::debug!(
                    guild = g,
                    addr,
                    ssrc = call.bot_ssrc,
                    "voice: protocol selected"
                );
                call.cipher = Aes256Gcm::new_from_slice(&call.key).ok();
                call.decoder = opus2::Decoder::new(48_000, opus2::Channels::Stereo).ok();
                let channel = call.channel.unwrap_or(0);
                call.dave = if state.config.dave && call.bot_max_dave >= 1 {
                    DaveCall::new(channel, state.config.bot.id)
                        .inspect_err(|e| tracing::warn!(error = %e, "dave: not offered"))
                        .ok()
                } else {
                    None
                };
                let version = if call.dave.is_some() {
                    crate::dave::VERSION
                } else {
                    0
                };
                let description = json!({
                    "mode": MODE,
                    "secret_key": call.key.to_vec(),
                    "dave_protocol_version": version,
                });
                let _ = tx.send(WsOut::Text(op(4, description)));
                // `call.ws` is this connection's sender (set at identify).
                match call.dave.as_mut().map(|dave| dave.start(&users)) {
                    Some(Ok(out)) => call.send(out),
                    Some(Err(e)) => tracing::warn!(error = %e, "dave: the call's group"),
                    None => {}
                }
            }
            // DAVE: ready for a transition; a commit or welcome the bot could not process.
            Some(23) | Some(31) => {
                let Some(g) = guild else { break };
                let transition = d["transition_id"].as_u64().unwrap_or(0) as u16;
                let mut calls = lock(&voice.calls);
                if let Some(call) = calls.get_mut(&g)
                    && let Some(dave) = &mut call.dave
                {
                    let out = if payload["op"] == 23 {
                        dave.on_ready(transition)
                    } else {
                        tracing::warn!(
                            transition,
                            "dave: the bot could not process a commit or welcome"
                        );
                        dave.on_invalid();
                        Vec::new()
                    };
                    call.send(out);
                }
            }
            // Heartbeat: echo the nonce (v4).
            Some(3) => {
                let _ = tx.send(WsOut::Text(op(6, d.clone())));
            }
            // The bot's own speaking state, a client disconnect of its own, etc.
            _ => {}
        }
    }
    if let Some(g) = guild
        && let Some(call) = lock(&voice.calls).get_mut(&g)
        && call.ws.as_ref().is_some_and(|w| w.same_channel(&tx))
    {
        call.ws = None;
    }
    drop(tx);
    let _ = writer.await;
}

/// The users (not the bot) in the voice channel the bot is joining in `guild`.
fn users_in_call(state: &Shared, guild: u64) -> Vec<u64> {
    let channel = lock(&state.voice.calls).get(&guild).and_then(|c| c.channel);
    let bot = state.config.bot.id;
    let inner = lock(&state.inner);
    inner
        .guilds
        .get(&guild)
        .map(|g| {
            g.voice
                .iter()
                .filter(|(u, c)| Some(**c) == channel && **u != bot)
                .map(|(u, _)| *u)
                .collect()
        })
        .unwrap_or_default()
}

/// A binary DAVE message from the bot: its key package (26) or its commit and welcome (28).
fn dave_binary(state: &Shared, guild: u64, data: &[u8]) {
    let mut calls = lock(&state.voice.calls);
    let Some(call) = calls.get_mut(&guild) else {
        return;
    };
    let Some(dave) = &mut call.dave else {
        tracing::debug!(guild, "dave: a binary message without DAVE");
        return;
    };
    let result = match data.split_first() {
        Some((26, key_package)) => dave.on_key_package(key_package),
        Some((28, commit_welcome)) => dave.on_commit_welcome(commit_welcome),
        Some((other, _)) => Err(format!("unexpected binary opcode {other}")),
        None => Err("an empty binary message".into()),
    };
    match result {
        Ok(out) => call.send(out),
        // What the bot sent is refused (Discord would answer op 31 or drop it), never a panic.
        Err(e) => tracing::warn!(guild, error = %e, "dave: refused a message from the bot"),
    }
}

/// A user's voice state changed in `guild`: DAVE adds them to the bot's call (or removes them).
pub(crate) fn dave_user_moved(state: &Shared, guild: u64, user: u64, channel: Option<u64>) {
    let mut calls = lock(&state.voice.calls);
    let Some(call) = calls.get_mut(&guild) else {
        return;
    };
    let joined = channel.is_some() && channel == call.channel;
    if let Some(dave) = &mut call.dave {
        let out = dave.user_moved(user, joined);
        call.send(out);
    }
}

/// Waits until `user` is in the call's DAVE group with no transition under way (they are
/// added first if they never joined the channel); at once without DAVE.
async fn dave_member(state: &Shared, guild: u64, user: u64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut asked = false;
    loop {
        {
            let mut calls = lock(&state.voice.calls);
            let call = calls
                .get_mut(&guild)
                .ok_or_else(|| format!("the bot is not in a voice channel of guild {guild}"))?;
            let Some(dave) = &mut call.dave else {
                return Ok(());
            };
            if dave.settled_member(user) {
                return Ok(());
            }
            if !asked {
                asked = true;
                let out = dave.user_moved(user, true);
                call.send(out);
            }
        }
        if Instant::now() > deadline {
            return Err(format!("user {user} never got into the call's DAVE group"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What DAVE did in `guild`'s call (`None`: not negotiated).
pub(crate) fn dave_stats(state: &Shared, guild: u64) -> Option<DaveStats> {
    lock(&state.voice.calls)
        .get(&guild)?
        .dave
        .as_ref()
        .map(DaveCall::stats)
}

/// A client without DAVE joined `guild`'s call: back to transport encryption only.
pub(crate) fn dave_downgrade(state: &Shared, guild: u64) -> Result<(), String> {
    let mut calls = lock(&state.voice.calls);
    let call = calls
        .get_mut(&guild)
        .ok_or_else(|| format!("the bot is not in voice in guild {guild}"))?;
    let dave = call.dave.as_mut().ok_or("DAVE is not in force")?;
    let out = dave.downgrade()?;
    call.send(out);
    Ok(())
}

/// The bot's latest frame, from an earlier epoch, heard again by the members.
pub(crate) fn dave_replay_stale_bot_frame(state: &Shared, guild: u64) -> Option<bool> {
    lock(&state.voice.calls)
        .get_mut(&guild)?
        .dave
        .as_mut()?
        .replay_stale_bot_frame()
}

/// Whether `user` (in the call, or who left it) can decrypt the bot's latest DAVE frame.
pub(crate) fn dave_can_read(state: &Shared, guild: u64, user: u64) -> Option<bool> {
    lock(&state.voice.calls)
        .get_mut(&guild)?
        .dave
        .as_mut()?
        .can_read_latest(user)
}

/// Receives the bot's UDP: IP discovery, keepalives, RTP.
pub(crate) async fn udp_loop(state: Arc<Shared>) {
    let voice = &state.voice;
    let mut buf = vec![0u8; 2048];
    loop {
        let Ok((n, from)) = voice.udp.recv_from(&mut buf).await else {
            return;
        };
        if voice.down() {
            continue;
        }
        let packet = &mut buf[..n];
        if n == 74 && packet[..2] == [0, 1] {
            let mut reply = [0u8; 74];
            reply[..2].copy_from_slice(&2u16.to_be_bytes());
            reply[2..4].copy_from_slice(&70u16.to_be_bytes());
            reply[4..8].copy_from_slice(&packet[4..8]);
            let ip = from.ip().to_string();
            reply[8..8 + ip.len()].copy_from_slice(ip.as_bytes());
            reply[72..74].copy_from_slice(&from.port().to_be_bytes());
            let _ = voice.udp.send_to(&reply, from).await;
            continue;
        }
        // RTP (version 2, not RTCP's payload types 200-204).
        if n < RTP_HEADER + TAG + 4 || packet[0] >> 6 != 2 || (200..=204).contains(&packet[1]) {
            continue;
        }
        let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
        let mut calls = lock(&voice.calls);
        let Some(call) = calls.values_mut().find(|c| c.bot_ssrc == ssrc) else {
            continue;
        };
        let Some(opus) = decrypt(call.cipher.as_ref(), packet) else {
            tracing::debug!("voice: a packet that does not decrypt");
            continue;
        };
        if opus == SILENCE {
            continue;
        }
        let opus = match &mut call.dave {
            Some(dave) => match dave.bot_frame(opus) {
                Some(opus) => opus,
                None => continue,
            },
            None => opus,
        };
        let mut pcm = vec![0i16; FRAME * 2 * 6];
        let Some(decoded) = call
            .decoder
            .as_mut()
            .and_then(|d| d.decode(&opus, &mut pcm, false).ok())
        else {
            continue;
        };
        let start = call.audio.pcm.len();
        call.audio.packets.push((Instant::now(), start));
        call.audio.pcm.extend(
            pcm[..decoded * 2]
                .chunks_exact(2)
                .map(|lr| (f32::from(lr[0]) + f32::from(lr[1])) / 65_536.0),
        );
    }
}

/// The Opus payload of an `aead_aes256_gcm_rtpsize` RTP packet.
fn decrypt(cipher: Option<&Aes256Gcm>, packet: &[u8]) -> Option<Vec<u8>> {
    let cipher = cipher?;
    let csrcs = usize::from(packet[0] & 0x0f) * 4;
    let extension = packet[0] & 0x10 != 0;
    // The header, CSRCs and the 4-byte extension preamble are in the clear.
    let clear = RTP_HEADER + csrcs + if extension { 4 } else { 0 };
    if packet.len() < clear + TAG + 4 {
        return None;
    }
    let (aad, rest) = packet.split_at(clear);
    let (body, suffix) = rest.split_at(rest.len() - 4);
    let (ciphertext, tag) = body.split_at(body.len() - TAG);
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(suffix);
    let mut plain = ciphertext.to_vec();
    cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(&nonce),
            aad,
            &mut plain,
            Tag::from_slice(tag),
        )
        .ok()?;
    if extension {
        // The extension's length (in 32-bit words) is in the preamble; its body was encrypted.
        let words = usize::from(u16::from_be_bytes([aad[clear - 2], aad[clear - 1]]));
        plain.drain(..(words * 4).min(plain.len()));
    }
    Some(plain)
}

fn encrypt(cipher: &Aes256Gcm, header: &[u8; RTP_HEADER], opus: &[u8], nonce: u32) -> Vec<u8> {
    let mut body = opus.to_vec();
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&nonce.to_be_bytes());
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&n), header, &mut body)
        .unwrap_or_default();
    let mut packet = Vec::with_capacity(RTP_HEADER + body.len() + TAG + 4);
    packet.extend_from_slice(header);
    packet.extend_from_slice(&body);
    packet.extend_from_slice(&tag);
    packet.extend_from_slice(&nonce.to_be_bytes());
    packet
}

/// 16 kHz mono → 48 kHz mono by linear interpolation: a simulated microphone for speech made
/// at the pipeline's rate (espeak-ng clips, resampled WAVs).
pub fn from_16k(pcm: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(pcm.len() * 3);
    for (i, &s) in pcm.iter().enumerate() {
        let next = pcm.get(i + 1).copied().unwrap_or(s);
        out.extend([s, s + (next - s) / 3.0, s + 2.0 * (next - s) / 3.0]);
    }
    out
}

/// When a simulated user's speech went out.
#[derive(Debug, Clone, Copy)]
pub struct Spoken {
    /// The first packet was sent (sample 0 of their audio).
    pub started: Instant,
    /// The last packet of their audio was sent (then come five silence frames).
    pub stopped: Instant,
}

/// A simulated user says `pcm` (48 kHz mono) in `guild`'s voice channel, in real time.
pub(crate) async fn speak(
    state: &Shared,
    guild: u64,
    user: &User,
    pcm: &[f32],
) -> Result<Spoken, String> {
    send_speech(state, guild, user, Speech::Pcm(pcm)).await
}

/// A user sends again, as they are, the end-to-end encrypted frames they sent under earlier
/// DAVE epochs (a replay, or a client stuck on an old key): returns how many went out.
pub(crate) async fn replay_stale(state: &Shared, guild: u64, user: &User) -> Result<usize, String> {
    let frames = lock(&state.voice.calls)
        .get(&guild)
        .and_then(|c| c.dave.as_ref())
        .map(|d| d.stale_frames(user.id))
        .ok_or("DAVE is not in force")?;
    let n = frames.len();
    send_speech(state, guild, user, Speech::Replay(frames)).await?;
    Ok(n)
}

/// What a user sends: speech to encode (and encrypt), or frames already on the wire once.
enum Speech<'a> {
    Pcm(&'a [f32]),
    Replay(Vec<Vec<u8>>),
}

async fn send_speech(
    state: &Shared,
    guild: u64,
    user: &User,
    speech: Speech<'_>,
) -> Result<Spoken, String> {
    let voice = &state.voice;
    let mut encoder =
        opus2::Encoder::new(48_000, opus2::Channels::Stereo, opus2::Application::Voip)
            .map_err(|e| format!("opus: {e}"))?;
    dave_member(state, guild, user.id).await?;
    let (stream, addr) = {
        let mut calls = lock(&voice.calls);
        let call = calls
            .get_mut(&guild)
            .ok_or_else(|| format!("the bot is not in a voice channel of guild {guild}"))?;
        let addr = call
            .bot_addr
            .filter(|_| call.cipher.is_some())
            .ok_or("the bot's voice connection is not ready")?;
        let stream = match call.users.get(&user.id) {
            // The RTP clock ran on while they were quiet.
            Some(s) => Stream {
                timestamp: s.timestamp.wrapping_add(
                    (s.at.elapsed().as_millis() as u32 / 20).wrapping_mul(FRAME as u32),
                ),
                ..*s
            },
            None => Stream {
                ssrc: voice.ssrc(),
                seq: fastrand::u16(..),
                timestamp: fastrand::u32(..),
                at: Instant::now(),
            },
        };
        let ssrc = stream.ssrc;
        call.users.insert(user.id, stream);
        let ws = call
            .ws
            .as_ref()
            .ok_or("the bot's voice WebSocket is closed")?;
        let speaking =
            json!({"user_id": user.id.to_string(), "ssrc": ssrc, "speaking": 1, "delay": 0});
        let _ = ws.send(WsOut::Text(op(5, speaking)));
        (stream, addr)
    };
    let Stream {
        ssrc,
        mut seq,
        mut timestamp,
        ..
    } = stream;
    let (pcm, replay) = match speech {
        Speech::Pcm(pcm) => (pcm, None),
        Speech::Replay(frames) => (&[][..], Some(frames)),
    };
    let fresh = replay.is_none();
    let mut frames: Vec<Vec<u8>> = replay.unwrap_or_default();
    let mut out = [0u8; 1500];
    for chunk in pcm.chunks(FRAME) {
        let mut stereo = vec![0i16; FRAME * 2];
        for (i, s) in chunk.iter().enumerate() {
            let v = (s.clamp(-1.0, 1.0) * 32_767.0) as i16;
            stereo[2 * i] = v;
            stereo[2 * i + 1] = v;
        }
        let n = encoder
            .encode(&stereo, &mut out)
            .map_err(|e| format!("opus: {e}"))?;
        frames.push(out[..n].to_vec());
    }
    let voiced = frames.len();
    tracing::debug!(guild, user = user.id, ssrc, %addr, frames = voiced, "voice: a user speaks");
    frames.extend(std::iter::repeat_n(SILENCE.to_vec(), 5));
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut started = None;
    let mut stopped = Instant::now();
    for (i, frame) in frames.iter().enumerate() {
        tick.tick().await;
        let mut header = [0u8; RTP_HEADER];
        header[0] = 0x80;
        header[1] = 0x78;
        header[2..4].copy_from_slice(&seq.to_be_bytes());
        header[4..8].copy_from_slice(&timestamp.to_be_bytes());
        header[8..12].copy_from_slice(&ssrc.to_be_bytes());
        let packet = {
            let mut calls = lock(&voice.calls);
            let call = calls.get_mut(&guild).ok_or("the bot left")?;
            let cipher = call
                .cipher
                .as_ref()
                .ok_or("the bot's voice connection closed")?;
            call.nonce = call.nonce.wrapping_add(1);
            let nonce = call.nonce;
            match &mut call.dave {
                Some(dave) if fresh => {
                    encrypt(cipher, &header, &dave.user_frame(user.id, frame), nonce)
                }
                _ => encrypt(cipher, &header, frame, nonce),
            }
        };
        // The bot may be reconnecting: a lost packet is what real networks do too.
        let _ = voice.udp.send_to(&packet, addr).await;
        started.get_or_insert_with(Instant::now);
        if i + 1 == voiced {
            stopped = Instant::now();
        }
        seq = seq.wrapping_add(1);
        timestamp = timestamp.wrapping_add(FRAME as u32);
        if let Some(s) = lock(&voice.calls)
            .get_mut(&guild)
            .and_then(|c| c.users.get_mut(&user.id))
        {
            *s = Stream {
                ssrc,
                seq,
                timestamp,
                at: Instant::now(),
            };
        }
    }
    Ok(Spoken {
        started: started.unwrap_or(stopped),
        stopped,
    })
}

/// What the bot sent in `guild` so far.
pub(crate) fn bot_packet_after(state: &Shared, guild: u64, t: Instant) -> Option<Instant> {
    let calls = lock(&state.voice.calls);
    let audio = &calls.get(&guild)?.audio;
    audio.packets.iter().find(|(at, _)| *at >= t).map(|p| p.0)
}

pub(crate) fn forget_bot_audio(state: &Shared, before: Instant) {
    for call in lock(&state.voice.calls).values_mut() {
        call.audio.forget_before(before);
    }
}

pub(crate) fn bot_audio(state: &Shared, guild: u64) -> BotAudio {
    lock(&state.voice.calls)
        .get(&guild)
        .map(|c| c.audio.clone())
        .unwrap_or_default()
}

/// The voice server goes away for `outage`: every voice connection is cut (no close frame),
/// new ones are refused and UDP is dropped until it is back.
pub(crate) fn voice_outage(state: &Shared, outage: std::time::Duration) {
    *lock(&state.voice.down_until) = Some(Instant::now() + outage);
    let mut calls = lock(&state.voice.calls);
    for call in calls.values_mut() {
        call.cipher = None;
        if let Some(ws) = call.ws.take() {
            let _ = ws.send(WsOut::Cut);
        }
    }
}

/// Closes the bot's voice WebSocket in `guild` with `code` (4015: the voice server crashed,
/// resumable; 4006: session no longer valid).
pub(crate) fn drop_voice(state: &Shared, guild: u64, code: u16) -> bool {
    let mut calls = lock(&state.voice.calls);
    let Some(call) = calls.get_mut(&guild) else {
        return false;
    };
    if code != 4015 {
        call.cipher = None;
    }
    call.ws
        .take()
        .is_some_and(|ws| ws.send(WsOut::Close(code)).is_ok())
}
