//! Fleet state in Redis: what makes a pod disposable.
//!
//! The pod keeps its state in memory (the guilds' settings and voice states, the
//! shards' sessions, the OpenClaw credentials) and mirrors it to Redis **behind** the work:
//! a change is a map insert ([`FleetState::put_hash`], never an await), and one writer task
//! sends the changed keys in one pipelined `MULTI` round trip. Nothing on the audio path
//! touches Redis. Redis is read once, at start-up ([`FleetState::load`]), so a restarted pod
//! finds its guilds' settings, the voice channels it was in, its shards' gateway sessions (it
//! RESUMEs) and the conversation runs it was speaking.
//!
//! **Degraded mode.** When a write fails the writer keeps the keys dirty, retries with
//! backoff (0.2 s → 2 s) and, because a Redis that comes back may have come back empty, writes
//! the pod's *whole* mirror once it answers again. The pod meanwhile serves from memory;
//! slash-command changes made during the outage are in the mirror and reach Redis then.
//!
//! Schema (every key under the VoiceBot's prefix `voicebot:<namespace>:<bot>:`, which the
//! operator's finalizer deletes): see ARCHITECTURE.md, "Fleet state".

pub mod queue;
pub mod seal;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Notify;

use crate::lock;
use crate::secret::Secret;
use seal::{SealError, Sealer, is_sealed};
pub use voicebot_config::Sensitivity;

/// How long a saved gateway session stays usable. Discord keeps a session resumable for a
/// few minutes after its connection drops; an older one would only cost an INVALID_SESSION.
pub const SESSION_TTL: Duration = Duration::from_secs(15 * 60);

/// The key of the fleet's OpenClaw device seed.
const DEVICE_KEY: &str = "openclaw:device";
/// The key of its device token.
const DEVICE_TOKEN_KEY: &str = "openclaw:device-token";

/// How long a run in flight is worth recovering after a restart.
pub const RUN_TTL: Duration = Duration::from_secs(10 * 60);
/// The fingerprint of the slash commands last registered for the application.
const COMMANDS_KEY: &str = "commands";
/// Registered commands are registered again after this long even when unchanged (they may
/// have been removed by hand in the Developer Portal).
pub const COMMANDS_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Now, in ms since the epoch (the clock of saved records).
pub fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where the state lives.
#[derive(Clone)]
pub struct StateConfig {
    /// `redis://[:password@]host:port[/db]` (a secret: it may hold a password).
    pub url: Secret,
    /// Prefix of every key, e.g. `voicebot:default:jarvis:`.
    pub prefix: String,
    /// The key that seals secrets kept in Redis (the device identity and token):
    /// `VOICEBOT_STATE_KEY`, from a Kubernetes Secret. `None`: they are kept unsealed.
    pub seal_key: Option<Secret>,
    /// PEM certificate of the CA that signed Redis's TLS certificate (`rediss://`; `REDIS_CA`,
    /// from a Secret). `None`: the system's roots.
    pub ca: Option<Vec<u8>>,
}

/// A Redis client for `url`: over TLS for `rediss://`, Redis's certificate checked against
/// `ca` (PEM) or the system's roots.
pub fn redis_client(url: &str, ca: Option<&[u8]>) -> Result<redis::Client, StateError> {
    let client = match ca {
        Some(ca) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.to_vec()),
            },
        ),
        None => redis::Client::open(url),
    };
    client.map_err(|e| StateError::Url(describe(&e)))
}

impl std::fmt::Debug for StateConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateConfig")
            .field("url", &redact(self.url.expose()))
            .field("prefix", &self.prefix)
            .field("sealed", &self.seal_key.is_some())
            .field("ca", &self.ca.is_some())
            .finish()
    }
}

/// A Redis URL without credentials, for logs (`redis://host:port/db`).
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            format!("{scheme}://{host}")
        }
        None => "<redis url>".into(),
    }
}

/// A guild's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuildSettings {
    /// The agent that answers (the room's own: it answers a turn that names nobody when no
    /// other agent spoke last).
    pub agent: String,
    /// Agents invited to answer beside it (`/… invite`), each when called by name.
    pub guests: Vec<String>,
    /// How readily it answers.
    pub sensitivity: Sensitivity,
    /// The voice channel the bot is in (or joining).
    pub channel: Option<u64>,
}

/// The most agents one room hosts (the guild's agent and its guests).
pub const MAX_CAST: usize = 4;

impl GuildSettings {
    /// The agents of the guild's room, its own first: the guests that are among `allowed`
    /// (the VoiceBot's agents; a guest the spec no longer lists is left out), at most
    /// [`MAX_CAST`], each once.
    pub fn cast(&self, allowed: &[String]) -> Vec<String> {
        let mut cast = vec![self.agent.clone()];
        for g in &self.guests {
            if cast.len() >= MAX_CAST {
                break;
            }
            if !cast.contains(g) && allowed.contains(g) {
                cast.push(g.clone());
            }
        }
        cast
    }
}

/// The fleet's OpenClaw device as Redis keeps it: the identity's private seed and the device
/// token the gateway issued. Both are secrets.
pub struct StoredDevice {
    /// The Ed25519 private seed.
    pub seed: [u8; 32],
    /// The device token, once the gateway issued one.
    pub token: Option<Secret>,
}

impl std::fmt::Debug for StoredDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredDevice(***)")
    }
}

/// A saved gateway session of one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedSession {
    /// Discord's session id.
    pub id: String,
    /// The last sequence number seen.
    pub sequence: u64,
    /// Where to resume.
    pub resume_url: Option<String>,
}

/// A reply that was being written when the pod stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRun {
    /// The OpenClaw session key of the conversation.
    pub session: String,
    /// The run (= idempotency key).
    pub run: String,
    /// When it started, ms since the epoch.
    pub started_ms: u64,
}

/// A user's voice state as saved: the channel, and whether the user is a bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedVoice {
    /// Voice channel.
    pub channel: u64,
    /// A bot (it never keeps ours in a channel).
    pub bot: bool,
}

/// What a pod reads at start-up.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Guild → settings (agent, sensitivity, the voice channel the bot was in).
    pub guilds: HashMap<u64, GuildSettings>,
    /// Guild → user → voice state.
    pub voice: HashMap<u64, BTreeMap<u64, SavedVoice>>,
    /// Shard → its gateway session.
    pub sessions: HashMap<u32, SavedSession>,
    /// Guild → the run in flight.
    pub runs: HashMap<u64, SavedRun>,
}

/// Whether Redis answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No Redis configured: memory only.
    Memory,
    /// The last write went through.
    Up,
    /// Writes are failing; the pod serves from memory and retries.
    Degraded,
}

/// Counters, for metrics and the benchmark.
#[derive(Debug, Default)]
pub struct StateStats {
    /// Round trips to Redis (pipelines and single commands).
    pub round_trips: AtomicU64,
    /// Failed round trips.
    pub errors: AtomicU64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Hash(Vec<(String, String)>, Option<Duration>),
    Str(String, Option<Duration>),
    Absent,
}

struct Inner {
    prefix: String,
    conn: Option<ConnectionManager>,
    /// What Redis should hold, by full key.
    mirror: Mutex<BTreeMap<String, Entry>>,
    /// Keys changed since the writer last sent them.
    dirty: Mutex<BTreeSet<String>>,
    /// Keys of the batch on its way (not written until Redis says so).
    inflight: Mutex<BTreeSet<String>>,
    /// A batch is on its way.
    writing: AtomicBool,
    wake: Notify,
    written: Notify,
    degraded: AtomicBool,
    stats: StateStats,
    /// Seals the secrets written to Redis.
    sealer: Option<Sealer>,
}

/// The pod's fleet state (cheap to clone).
#[derive(Clone)]
pub struct FleetState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FleetState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetState")
            .field("prefix", &self.inner.prefix)
            .field("health", &self.health())
            .finish_non_exhaustive()
    }
}

/// Why the state could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The URL does not parse.
    #[error("the Redis URL is not valid ({0}); expected redis://[:password@]host:port[/db]")]
    Url(String),
    /// Redis did not answer.
    #[error("Redis did not answer: {0}")]
    Unreachable(String),
    /// A sealed secret in Redis does not open (another key, or written by someone else).
    #[error("{0}")]
    Sealed(#[from] SealError),
}

/// A Redis error in words that never include the URL or its password.
fn describe(e: &redis::RedisError) -> String {
    format!("{:?}", e.kind())
}

impl FleetState {
    /// State in memory only (no `--redis`): nothing survives the process.
    pub fn memory() -> Self {
        Self::with_conn(String::new(), None, None)
    }

    /// State mirrored to Redis. Connects lazily: a Redis that is down now only delays the
    /// writes (degraded mode). Spawns the writer task (call inside a tokio runtime).
    pub fn connect(config: &StateConfig) -> Result<Self, StateError> {
        let client = redis_client(config.url.expose(), config.ca.as_deref())?;
        let manager = ConnectionManager::new_lazy_with_config(
            client,
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(2)))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500)),
        )
        .map_err(|e| StateError::Url(describe(&e)))?;
        if config.seal_key.is_none() {
            tracing::warn!(
                "VOICEBOT_STATE_KEY is not set: the OpenClaw device identity is kept in Redis unsealed"
            );
        }
        let sealer = config.seal_key.as_ref().map(Sealer::new);
        let state = Self::with_conn(config.prefix.clone(), Some(manager), sealer);
        tokio::spawn(writer(state.clone()));
        Ok(state)
    }

    fn with_conn(prefix: String, conn: Option<ConnectionManager>, sealer: Option<Sealer>) -> Self {
        Self {
            inner: Arc::new(Inner {
                prefix,
                conn,
                mirror: Mutex::new(BTreeMap::new()),
                dirty: Mutex::new(BTreeSet::new()),
                inflight: Mutex::new(BTreeSet::new()),
                writing: AtomicBool::new(false),
                wake: Notify::new(),
                written: Notify::new(),
                degraded: AtomicBool::new(false),
                stats: StateStats::default(),
                sealer,
            }),
        }
    }

    /// Whether Redis answers.
    pub fn health(&self) -> Health {
        if self.inner.conn.is_none() {
            Health::Memory
        } else if self.inner.degraded.load(Ordering::Acquire) {
            Health::Degraded
        } else {
            Health::Up
        }
    }

    /// Round trips, keys written, errors.
    pub fn stats(&self) -> &StateStats {
        &self.inner.stats
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.inner.prefix)
    }

    fn conn(&self) -> Option<ConnectionManager> {
        self.inner.conn.clone()
    }

    fn count_trip(&self) {
        self.inner.stats.round_trips.fetch_add(1, Ordering::Relaxed);
    }

    /// Records what Redis already holds (read at start-up): no write now, but the whole
    /// mirror is written back if Redis ever comes back empty.
    fn remember(&self, key: String, entry: Entry) {
        if self.inner.conn.is_some() {
            lock(&self.inner.mirror).insert(key, entry);
        }
    }

    fn set(&self, key: String, entry: Entry) {
        if self.inner.conn.is_none() {
            return;
        }
        {
            let mut mirror = lock(&self.inner.mirror);
            if mirror.get(&key) == Some(&entry) {
                return;
            }
            mirror.insert(key.clone(), entry);
        }
        lock(&self.inner.dirty).insert(key);
        self.inner.wake.notify_one();
    }

    /// Waits until every change made so far has reached Redis, or `timeout` passes (at
    /// shutdown). Returns whether everything was written.
    pub async fn flush(&self, timeout: Duration) -> bool {
        if self.inner.conn.is_none() {
            return true;
        }
        let done = async {
            loop {
                let written = self.inner.written.notified();
                if lock(&self.inner.dirty).is_empty() && !self.inner.writing.load(Ordering::Acquire)
                {
                    return;
                }
                self.inner.wake.notify_one();
                let _ = tokio::time::timeout(Duration::from_millis(100), written).await;
            }
        };
        tokio::time::timeout(timeout, done).await.is_ok()
    }

    /// Waits until `key`'s latest value has reached Redis, or `timeout` passes. Without Redis
    /// there is nothing to wait for (memory is all there is).
    async fn written(&self, key: &str, timeout: Duration) -> bool {
        if self.inner.conn.is_none() {
            return true;
        }
        // Both under the `dirty` lock, the writer's order: a failed batch moves its keys from
        // `inflight` back to `dirty` under it, so a key is never seen in neither.
        let pending = || {
            let dirty = lock(&self.inner.dirty);
            dirty.contains(key) || lock(&self.inner.inflight).contains(key)
        };
        let done = async {
            loop {
                let written = self.inner.written.notified();
                if !pending() {
                    return;
                }
                self.inner.wake.notify_one();
                let _ = tokio::time::timeout(Duration::from_millis(50), written).await;
            }
        };
        tokio::time::timeout(timeout, done).await.is_ok()
    }

    // ---- typed API -------------------------------------------------------------------------

    /// Waits until the guild's settings as last saved are in Redis (`timeout`: how long the
    /// user may wait for "saved"). `false`: not yet; the writer keeps them and retries.
    pub async fn guild_written(&self, guild: u64, timeout: Duration) -> bool {
        self.written(&self.key(&format!("guild:{guild}")), timeout)
            .await
    }

    /// A guild's settings changed (agent, sensitivity, the bot's voice channel).
    pub fn save_guild(&self, guild: u64, settings: &GuildSettings) {
        let entry = Entry::Hash(guild_fields(settings), None);
        self.set(self.key(&format!("guild:{guild}")), entry);
    }

    /// Whether the application's slash commands are registered as `fingerprint` says (by
    /// this pod or another, within [`COMMANDS_TTL`]). `false` without Redis; an error when
    /// Redis does not answer (register anyway: it is idempotent).
    pub async fn commands_registered(&self, fingerprint: &str) -> Result<bool, StateError> {
        let Some(mut conn) = self.conn() else {
            return Ok(false);
        };
        self.count_trip();
        let stored: Option<String> = redis::cmd("GET")
            .arg(self.key(COMMANDS_KEY))
            .query_async(&mut conn)
            .await
            .map_err(|e| StateError::Unreachable(describe(&e)))?;
        Ok(stored.as_deref() == Some(fingerprint))
    }

    /// The application's slash commands were registered as `fingerprint`.
    pub fn save_commands(&self, fingerprint: &str) {
        self.set(
            self.key(COMMANDS_KEY),
            Entry::Str(fingerprint.to_string(), Some(COMMANDS_TTL)),
        );
    }

    /// A guild the bot left for good: its settings, voice states and saved run are deleted.
    pub fn forget_guild(&self, guild: u64) {
        for key in ["guild", "voice", "conv"] {
            self.set(self.key(&format!("{key}:{guild}")), Entry::Absent);
        }
    }

    /// The voice states of a guild's members (who is in which channel).
    pub fn save_voice(&self, guild: u64, states: &BTreeMap<u64, SavedVoice>) {
        let key = self.key(&format!("voice:{guild}"));
        if states.is_empty() {
            self.set(key, Entry::Absent);
        } else {
            self.set(key, Entry::Hash(voice_fields(states), None));
        }
    }

    /// A shard's gateway session (`None`: it has none to resume). The key holds the shard
    /// count: a session belongs to one sharding, and a resharded pod must IDENTIFY.
    pub fn save_session(&self, shard: u32, count: u32, session: Option<&SavedSession>) {
        let key = self.key(&format!("shard:{count}:{shard}:session"));
        let entry = match session {
            Some(s) => {
                let mut fields = vec![
                    ("id".to_string(), s.id.clone()),
                    ("seq".to_string(), s.sequence.to_string()),
                ];
                if let Some(url) = &s.resume_url {
                    fields.push(("resume_url".into(), url.clone()));
                }
                Entry::Hash(fields, Some(SESSION_TTL))
            }
            None => Entry::Absent,
        };
        self.set(key, entry);
    }

    /// A reply run started in a guild's conversation (`None`: it ended).
    pub fn save_run(&self, guild: u64, run: Option<&SavedRun>) {
        let key = self.key(&format!("conv:{guild}"));
        let entry = match run {
            Some(r) => Entry::Hash(
                vec![
                    ("session".into(), r.session.clone()),
                    ("run".into(), r.run.clone()),
                    ("started_ms".into(), r.started_ms.to_string()),
                ],
                Some(RUN_TTL),
            ),
            None => Entry::Absent,
        };
        self.set(key, entry);
    }

    /// Reads what this pod needs: the guilds of `shards` (of `count`), their voice states
    /// and runs, and the shards' sessions. Empty without Redis; an error when Redis does not
    /// answer (the caller decides to go on degraded).
    pub async fn load(&self, shards: &[u32], count: u32) -> Result<Snapshot, StateError> {
        let Some(mut conn) = self.conn() else {
            return Ok(Snapshot::default());
        };
        let unreachable = |e: redis::RedisError| {
            self.inner.stats.errors.fetch_add(1, Ordering::Relaxed);
            self.inner.degraded.store(true, Ordering::Release);
            self.inner.wake.notify_one();
            StateError::Unreachable(describe(&e))
        };
        let ours =
            |guild: u64| shards.contains(&(((guild >> 22) % u64::from(count.max(1))) as u32));
        let mut snapshot = Snapshot::default();
        // The guilds: SCAN (never KEYS) for this bot's guild hashes.
        let pattern = self.key("guild:*");
        let mut guilds = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(unreachable)?;
            self.count_trip();
            guilds.extend(
                keys.iter()
                    .filter_map(|k| k.rsplit(':').next()?.parse::<u64>().ok())
                    .filter(|g| ours(*g)),
            );
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let mut pipe = redis::pipe();
        for g in &guilds {
            pipe.hgetall(self.key(&format!("guild:{g}")))
                .hgetall(self.key(&format!("voice:{g}")))
                .hgetall(self.key(&format!("conv:{g}")));
        }
        for s in shards {
            pipe.hgetall(self.key(&format!("shard:{count}:{s}:session")));
        }
        let maps: Vec<HashMap<String, String>> =
            pipe.query_async(&mut conn).await.map_err(unreachable)?;
        self.count_trip();
        let mut maps = maps.into_iter();
        for g in &guilds {
            let (Some(settings), Some(voice), Some(conv)) = (maps.next(), maps.next(), maps.next())
            else {
                break;
            };
            if let Some(s) = parse_guild(*g, &settings) {
                snapshot.guilds.insert(*g, s);
            }
            let states: BTreeMap<u64, SavedVoice> = voice
                .iter()
                .filter_map(|(user, v)| Some((user.parse().ok()?, parse_voice(v)?)))
                .collect();
            if !states.is_empty() {
                snapshot.voice.insert(*g, states);
            }
            if let (Some(session), Some(run)) = (conv.get("session"), conv.get("run")) {
                snapshot.runs.insert(
                    *g,
                    SavedRun {
                        session: session.clone(),
                        run: run.clone(),
                        started_ms: conv
                            .get("started_ms")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0),
                    },
                );
            }
        }
        for s in shards {
            let Some(map) = maps.next() else { break };
            if let (Some(id), Some(seq)) = (map.get("id"), map.get("seq")) {
                snapshot.sessions.insert(
                    *s,
                    SavedSession {
                        id: id.clone(),
                        sequence: seq.parse().unwrap_or(0),
                        resume_url: map.get("resume_url").cloned(),
                    },
                );
            }
        }
        // What was loaded is what Redis holds: the mirror starts from it, so a Redis that
        // comes back empty after an outage gets it all back.
        for (g, s) in &snapshot.guilds {
            self.remember(
                self.key(&format!("guild:{g}")),
                Entry::Hash(guild_fields(s), None),
            );
        }
        for (g, states) in &snapshot.voice {
            self.remember(
                self.key(&format!("voice:{g}")),
                Entry::Hash(voice_fields(states), None),
            );
        }
        Ok(snapshot)
    }

    /// The OpenClaw device of the fleet, kept in Redis (one identity for every pod of the bot:
    /// one pairing approval covers the fleet). The first pod stores `fresh_seed` (`SET NX`, so
    /// two pods starting together agree on one); every pod gets the stored one back, with the
    /// device token if the gateway issued one. `None` without Redis. Both are secrets: sealed
    /// with the state key when the pod has one (an unsealed value left by an older pod is
    /// sealed in place), never logged, never in an error.
    pub async fn device(&self, fresh_seed: &[u8; 32]) -> Result<Option<StoredDevice>, StateError> {
        let Some(mut conn) = self.conn() else {
            return Ok(None);
        };
        let unreachable = |e: redis::RedisError| StateError::Unreachable(describe(&e));
        let key = self.key(DEVICE_KEY);
        let _: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(self.encode_secret(DEVICE_KEY, fresh_seed))
            .arg("NX")
            .query_async(&mut conn)
            .await
            .map_err(unreachable)?;
        let (stored, token): (Option<String>, Option<String>) = redis::pipe()
            .get(&key)
            .get(self.key(DEVICE_TOKEN_KEY))
            .query_async(&mut conn)
            .await
            .map_err(unreachable)?;
        self.inner.stats.round_trips.fetch_add(2, Ordering::Relaxed);
        let stored = stored.unwrap_or_default();
        let (seed, was_sealed) = self.decode_secret(DEVICE_KEY, &stored)?;
        let seed = <[u8; 32]>::try_from(seed)
            .map_err(|_| SealError::Malformed(format!("{DEVICE_KEY} (not a 32-byte seed)")))?;
        self.keep_secret(DEVICE_KEY, stored, &seed, was_sealed);
        let token = match token {
            None => None,
            Some(t) => {
                let (plain, was_sealed) = self.decode_secret(DEVICE_TOKEN_KEY, &t)?;
                let text = String::from_utf8(plain.clone())
                    .map_err(|_| SealError::Malformed(DEVICE_TOKEN_KEY.into()))?;
                self.keep_secret(DEVICE_TOKEN_KEY, t, &plain, was_sealed);
                Some(Secret::new(text))
            }
        };
        Ok(Some(StoredDevice { seed, token }))
    }

    /// Saves the device token the gateway issued (written behind, like every change).
    pub fn save_device_token(&self, token: &Secret) {
        self.set(
            self.key(DEVICE_TOKEN_KEY),
            Entry::Str(
                self.encode_secret(DEVICE_TOKEN_KEY, token.expose().as_bytes()),
                None,
            ),
        );
    }

    /// Mirrors a secret read from Redis as it is stored; an unsealed one, while the pod has a
    /// state key, is sealed and written back (an identity an older pod left in clear).
    fn keep_secret(&self, name: &str, stored: String, plain: &[u8], was_sealed: bool) {
        let key = self.key(name);
        if was_sealed || self.inner.sealer.is_none() {
            self.remember(key, Entry::Str(stored, None));
        } else {
            tracing::info!(key = name, "sealing a secret kept in Redis unsealed");
            self.set(key, Entry::Str(self.encode_secret(name, plain), None));
        }
    }

    /// A secret as Redis keeps it: sealed with the state key, else base64url (the seed) or
    /// as it is (the token).
    fn encode_secret(&self, name: &str, plain: &[u8]) -> String {
        match &self.inner.sealer {
            Some(s) => s.seal(name, plain),
            None if name == DEVICE_KEY => URL_SAFE_NO_PAD.encode(plain),
            None => String::from_utf8_lossy(plain).into_owned(),
        }
    }

    /// The secret `stored` holds, and whether it was sealed.
    fn decode_secret(&self, name: &str, stored: &str) -> Result<(Vec<u8>, bool), StateError> {
        if is_sealed(stored) {
            let sealer = self
                .inner
                .sealer
                .as_ref()
                .ok_or_else(|| SealError::NoKey(name.to_string()))?;
            return Ok((sealer.open(name, stored)?, true));
        }
        if name == DEVICE_KEY {
            let bytes = URL_SAFE_NO_PAD
                .decode(stored)
                .map_err(|_| SealError::Malformed(name.to_string()))?;
            return Ok((bytes, false));
        }
        Ok((stored.as_bytes().to_vec(), false))
    }

    /// Runs one command on Redis directly (the identify queue), counting the round trip.
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Option<Result<T, String>> {
        let mut conn = self.conn()?;
        self.count_trip();
        Some(cmd.query_async(&mut conn).await.map_err(|e| {
            self.inner.stats.errors.fetch_add(1, Ordering::Relaxed);
            describe(&e)
        }))
    }
}

fn guild_fields(s: &GuildSettings) -> Vec<(String, String)> {
    let mut fields = vec![
        ("agent".to_string(), s.agent.clone()),
        (
            "sensitivity".to_string(),
            s.sensitivity.as_str().to_string(),
        ),
    ];
    if let Some(c) = s.channel {
        fields.push(("channel".into(), c.to_string()));
    }
    if !s.guests.is_empty() {
        fields.push(("guests".into(), s.guests.join(",")));
    }
    fields
}

fn voice_fields(states: &BTreeMap<u64, SavedVoice>) -> Vec<(String, String)> {
    states
        .iter()
        .map(|(user, v)| {
            let value = if v.bot {
                format!("{}:bot", v.channel)
            } else {
                v.channel.to_string()
            };
            (user.to_string(), value)
        })
        .collect()
}

fn parse_guild(guild: u64, map: &HashMap<String, String>) -> Option<GuildSettings> {
    let agent = map.get("agent")?.clone();
    let sensitivity = match map.get("sensitivity").map(|s| s.parse::<Sensitivity>()) {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            tracing::warn!(guild, error = %e, "a saved sensitivity is not valid; using low");
            Sensitivity::Low
        }
        None => Sensitivity::Low,
    };
    let guests = map
        .get("guests")
        .map(|g| {
            g.split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty() && *a != agent)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Some(GuildSettings {
        agent,
        guests,
        sensitivity,
        channel: map.get("channel").and_then(|c| c.parse().ok()),
    })
}

fn parse_voice(value: &str) -> Option<SavedVoice> {
    let (channel, bot) = match value.strip_suffix(":bot") {
        Some(c) => (c, true),
        None => (value, false),
    };
    Some(SavedVoice {
        channel: channel.parse().ok()?,
        bot,
    })
}

/// The writer: sends dirty keys in one atomic pipeline; on failure keeps them dirty, marks the
/// whole mirror for rewriting (Redis may come back empty) and retries with backoff.
async fn writer(state: FleetState) {
    const MIN_BACKOFF: Duration = Duration::from_millis(200);
    const MAX_BACKOFF: Duration = Duration::from_secs(2);
    let Some(mut conn) = state.conn() else { return };
    let inner = &state.inner;
    let mut backoff = MIN_BACKOFF;
    loop {
        let wake = inner.wake.notified();
        let keys: Vec<String> = {
            let mut dirty = lock(&inner.dirty);
            inner.writing.store(!dirty.is_empty(), Ordering::Release);
            let keys = std::mem::take(&mut *dirty);
            // Taken from `dirty` and put in `inflight` under the same lock: a key is always
            // in one of them until Redis has it.
            lock(&inner.inflight).extend(keys.iter().cloned());
            keys.into_iter().collect()
        };
        let probe = keys.is_empty() && inner.degraded.load(Ordering::Acquire);
        if keys.is_empty() && !probe {
            inner.written.notify_waiters();
            // The last clone besides this task's is gone: the pod is shutting down.
            if Arc::strong_count(inner) <= 1 {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), wake).await;
            continue;
        }
        let batch: Vec<(String, Entry)> = {
            let mirror = lock(&inner.mirror);
            keys.iter()
                .map(|k| (k.clone(), mirror.get(k).cloned().unwrap_or(Entry::Absent)))
                .collect()
        };
        let mut pipe = redis::pipe();
        pipe.atomic();
        if probe {
            // Degraded with nothing to write: is Redis back?
            pipe.cmd("PING").ignore();
        }
        for (key, entry) in &batch {
            match entry {
                Entry::Hash(fields, ttl) => {
                    pipe.del(key).ignore();
                    if !fields.is_empty() {
                        pipe.hset_multiple(key, fields).ignore();
                        if let Some(ttl) = ttl {
                            pipe.pexpire(key, ttl.as_millis() as i64).ignore();
                        }
                    }
                }
                Entry::Str(value, Some(ttl)) => {
                    pipe.pset_ex(key, value, ttl.as_millis() as u64).ignore();
                }
                Entry::Str(value, None) => {
                    pipe.set(key, value).ignore();
                }
                Entry::Absent => {
                    pipe.del(key).ignore();
                }
            }
        }
        state.count_trip();
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => {
                // Tombstones that reached Redis are forgotten.
                {
                    let mut mirror = lock(&inner.mirror);
                    let dirty = lock(&inner.dirty);
                    for (key, entry) in &batch {
                        if *entry == Entry::Absent
                            && !dirty.contains(key)
                            && mirror.get(key) == Some(&Entry::Absent)
                        {
                            mirror.remove(key);
                        }
                    }
                }
                if inner.degraded.swap(false, Ordering::AcqRel) {
                    tracing::info!(
                        keys = batch.len(),
                        "Redis answers again; the state kept in memory is written back"
                    );
                }
                backoff = MIN_BACKOFF;
                lock(&inner.inflight).clear();
                inner.writing.store(false, Ordering::Release);
            }
            Err(e) => {
                inner.stats.errors.fetch_add(1, Ordering::Relaxed);
                if !inner.degraded.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        error = %describe(&e),
                        "Redis is unreachable: serving from memory, retrying; changes are kept"
                    );
                }
                {
                    // Everything, not only this batch: Redis may come back without its data.
                    let all: Vec<String> = lock(&inner.mirror).keys().cloned().collect();
                    let mut dirty = lock(&inner.dirty);
                    dirty.extend(all);
                    let mut inflight = lock(&inner.inflight);
                    dirty.extend(std::mem::take(&mut *inflight));
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_logged_without_credentials() {
        assert_eq!(
            redact("redis://:hunter2@redis.svc:6379/0"),
            "redis://redis.svc:6379/0"
        );
        assert_eq!(redact("redis://user:pw@h:1"), "redis://h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        assert_eq!(redact("nonsense"), "<redis url>");
        let config = StateConfig {
            url: Secret::new("redis://:hunter2@h:1"),
            prefix: "p:".into(),
            seal_key: Some(Secret::new("the-seal-key")),
            ca: Some(b"-----BEGIN CERTIFICATE-----".to_vec()),
        };
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(!format!("{config:?}").contains("the-seal-key"));
    }

    #[test]
    fn saved_values_parse_back() {
        let s = GuildSettings {
            agent: "sage".into(),
            guests: vec![],
            sensitivity: Sensitivity::High,
            channel: Some(42),
        };
        let map: HashMap<String, String> = guild_fields(&s).into_iter().collect();
        assert!(!map.contains_key("guests"), "no guests, no field: {map:?}");
        assert_eq!(parse_guild(1, &map), Some(s.clone()));
        let with_guests = GuildSettings {
            guests: vec!["jarvis".into(), "hal".into()],
            ..s
        };
        let map: HashMap<String, String> = guild_fields(&with_guests).into_iter().collect();
        assert_eq!(map["guests"], "jarvis,hal");
        assert_eq!(parse_guild(1, &map), Some(with_guests.clone()));
        // The cast: the guild's agent first, guests the spec lists, each once, at most four.
        let allowed: Vec<String> = ["jarvis", "sage", "ada", "bob", "cy"]
            .map(String::from)
            .to_vec();
        assert_eq!(with_guests.cast(&allowed), ["sage", "jarvis"]);
        let crowd = GuildSettings {
            guests: ["jarvis", "sage", "jarvis", "ada", "bob", "cy"]
                .map(String::from)
                .to_vec(),
            ..with_guests
        };
        assert_eq!(crowd.cast(&allowed), ["sage", "jarvis", "ada", "bob"]);
        // A hand-edited value: the agent itself and empty names are dropped.
        let map: HashMap<String, String> = [
            ("agent".to_string(), "sage".to_string()),
            ("guests".into(), "sage, ,jarvis,".into()),
        ]
        .into_iter()
        .collect();
        assert_eq!(parse_guild(1, &map).unwrap().guests, ["jarvis"]);
        let map: HashMap<String, String> = [
            ("agent".to_string(), "jarvis".to_string()),
            ("sensitivity".into(), "loud".into()),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            parse_guild(1, &map).map(|s| s.sensitivity),
            Some(Sensitivity::Low)
        );
        assert_eq!(
            parse_voice("7:bot"),
            Some(SavedVoice {
                channel: 7,
                bot: true
            })
        );
        assert_eq!(
            parse_voice("7"),
            Some(SavedVoice {
                channel: 7,
                bot: false
            })
        );
        assert_eq!(parse_voice("x"), None);
    }

    #[tokio::test]
    async fn memory_state_needs_no_redis() {
        let state = FleetState::memory();
        state.save_guild(
            1,
            &GuildSettings {
                agent: "jarvis".into(),
                guests: vec![],
                sensitivity: Sensitivity::Low,
                channel: None,
            },
        );
        assert_eq!(state.health(), Health::Memory);
        assert!(state.flush(Duration::from_millis(10)).await);
        assert!(state.load(&[0], 1).await.unwrap().guilds.is_empty());
    }
}
