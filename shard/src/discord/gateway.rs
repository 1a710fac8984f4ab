//! The gateway loop: this pod's shards (twilight-gateway), slash commands answered through
//! twilight-http, voice joins and leaves asked of the gateway. The same code reaches real
//! Discord (no overrides) or the simulator (`api_proxy` and `gateway_url` set).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use songbird::shards::TwilightMap;
use tokio::sync::watch;
use twilight_gateway::{
    CloseFrame, ConfigBuilder, Event, EventTypeFlags, Intents, MessageSender, Session, Shard,
    ShardId, StreamExt as _,
};
use twilight_model::application::interaction::Interaction;
use twilight_model::channel::message::MessageFlags;
use twilight_model::gateway::payload::incoming::GuildCreate;
use twilight_model::gateway::payload::outgoing::UpdateVoiceState;
use twilight_model::http::interaction::{
    InteractionResponse, InteractionResponseData, InteractionResponseType,
};
use twilight_model::id::Id;
use twilight_model::id::marker::ApplicationMarker;

use super::commands::{self, CommandError, CommandPermissions};
use super::guilds::{Guilds, VoiceAction};
use super::hosts::GatewayHosts;
use super::plan::ShardPlan;
use super::voice::{GuildEvent, Rooms, Voices};
use crate::lock;
use crate::metrics::{Gauge, ShardMetrics};
use crate::secret::Secret;
use crate::state::queue::IdentifyQueue;
use crate::state::{FleetState, Health, SavedRun, SavedSession, SavedVoice, Sensitivity, Snapshot};

/// How the shard reaches Discord and what it offers.
#[derive(Clone)]
pub struct DiscordConfig {
    /// The bot token.
    pub token: Secret,
    /// The application id.
    pub application_id: u64,
    /// The slash command's name (the deployment's agent name, e.g. `jarvis`).
    pub command: String,
    /// Agents a guild can choose (the first is the default).
    pub agents: Vec<String>,
    /// Who may run each subcommand.
    pub permissions: CommandPermissions,
    /// Sensitivity of guilds that have not chosen.
    pub default_sensitivity: Sensitivity,
    /// `host:port` of a plain-HTTP REST API instead of discord.com (the simulator).
    pub api_proxy: Option<String>,
    /// `ws://host:port` of a gateway instead of Discord's (the simulator).
    pub gateway_url: Option<String>,
    /// Domains a resume URL read back from fleet state may point at (each with its
    /// subdomains, `wss://` only; the `gateway_url` is allowed too). Default: Discord's.
    pub gateway_hosts: Vec<String>,
    /// The shards of this pod.
    pub plan: ShardPlan,
    /// Where voice channels get their conversations (`None`: the bot joins and leaves
    /// channels but neither listens nor speaks — command-only tests).
    pub rooms: Option<Arc<dyn Rooms>>,
    /// Every room's events go here (the pod's observers subscribe before the shards start).
    pub room_events: tokio::sync::broadcast::Sender<GuildEvent>,
    /// Where the shard's metrics go (`None`: not kept).
    pub metrics: Option<Arc<ShardMetrics>>,
    /// Set once every shard of the plan has received READY (the pod's readiness).
    pub ready: Option<Arc<AtomicBool>>,
    /// Fleet state: guild settings, voice membership and gateway sessions survive the pod
    /// (memory only unless Redis is configured).
    pub state: FleetState,
    /// This pod's name (owner of the identify slots it takes).
    pub pod: String,
    /// One IDENTIFY per bucket per this interval (Discord's rule: 5 s; shorter in tests).
    pub identify_interval: Duration,
}

impl DiscordConfig {
    /// One shard (0 of 1), agents `agents` under the slash command `command`, default
    /// sensitivity low, Discord's own addresses, no voice engines, metrics or readiness flag:
    /// the base that callers adjust with struct update syntax.
    pub fn new(token: Secret, application_id: u64, command: &str, agents: &[&str]) -> Self {
        Self {
            token,
            application_id,
            command: command.to_string(),
            agents: agents.iter().map(|a| a.to_string()).collect(),
            permissions: CommandPermissions::default(),
            default_sensitivity: Sensitivity::Low,
            api_proxy: None,
            gateway_url: None,
            gateway_hosts: super::hosts::DISCORD_GATEWAY_HOSTS
                .iter()
                .map(|h| h.to_string())
                .collect(),
            plan: ShardPlan {
                count: 1,
                per_pod: 1,
                ordinal: 0,
            },
            rooms: None,
            room_events: tokio::sync::broadcast::channel(1024).0,
            metrics: None,
            ready: None,
            state: FleetState::memory(),
            pod: "local".into(),
            identify_interval: IDENTIFY_INTERVAL,
        }
    }
}

/// Discord's spacing of IDENTIFYs in one bucket.
pub const IDENTIFY_INTERVAL: Duration = Duration::from_secs(5);

impl std::fmt::Debug for DiscordConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscordConfig")
            .field("token", &self.token)
            .field("application_id", &self.application_id)
            .field("command", &self.command)
            .field("agents", &self.agents)
            .field("plan", &self.plan)
            .field("state", &self.state)
            .field("pod", &self.pod)
            .finish_non_exhaustive()
    }
}

/// Guilds, voice and the gateway's intents: nothing privileged.
const INTENTS: Intents = Intents::GUILDS.union(Intents::GUILD_VOICE_STATES);

struct Ctx {
    config: DiscordConfig,
    http: twilight_http::Client,
    app: Id<ApplicationMarker>,
    guilds: Mutex<Guilds>,
    bot_user: Mutex<Option<u64>>,
    senders: Arc<TwilightMap>,
    /// Set once the bot's user id is known (songbird needs it): at start from REST, else at
    /// the first READY.
    voices: std::sync::OnceLock<Arc<Voices>>,
    /// Guilds and the shard that serves them.
    guild_shards: Mutex<HashMap<u64, u32>>,
    /// Shards that have received READY or RESUMED.
    ready_shards: Mutex<HashSet<u32>>,
    /// Replies a previous pod was speaking, by guild: spoken once voice is back.
    pending_runs: Mutex<HashMap<u64, SavedRun>>,
    /// The pod is shutting down: no voice channel is joined again.
    stopping: AtomicBool,
    /// The guilds' stored settings have been read. Until then (Redis slow or down at start)
    /// no guild's settings are written: what Redis holds is not overwritten with defaults.
    loaded: AtomicBool,
    /// Each shard's command sender (voice state updates for a late rejoin).
    shard_senders: HashMap<u32, MessageSender>,
}

impl Ctx {
    fn voices(&self) -> Option<&Arc<Voices>> {
        self.voices.get()
    }

    fn shard_of(&self, guild: u64) -> u32 {
        self.config.plan.shard_of(guild)
    }

    /// The bot's user id is known: voice can start (once).
    fn start_voices(self: &Arc<Self>, bot: u64) {
        *lock(&self.bot_user) = Some(bot);
        let Some(rooms) = &self.config.rooms else {
            return;
        };
        if self.voices.get().is_some() {
            return;
        }
        let voices = Arc::new(Voices::new(
            rooms.clone(),
            self.config.room_events.clone(),
            self.senders.clone(),
            self.config.plan.count,
            bot,
        ));
        let _ = self.voices.set(voices);
    }

    /// Mirrors a guild's settings (if it chose any) and voice states to the fleet state:
    /// map inserts, written to Redis behind the work.
    fn persist(&self, guild: u64) {
        let (settings, voice) = {
            let g = lock(&self.guilds);
            (g.chosen(guild).cloned(), g.voice_states(guild))
        };
        if let Some(s) = settings
            && self.loaded.load(Ordering::Acquire)
        {
            self.config.state.save_guild(guild, &s);
        }
        let voice = voice
            .into_iter()
            .map(|(user, (channel, bot))| (user, SavedVoice { channel, bot }))
            .collect();
        self.config.state.save_voice(guild, &voice);
    }

    /// After a restart: joins again the voice channels this shard's guilds were in (the
    /// RESUMEd session, or a guild's GUILD_CREATE), unless the bot already has the call or
    /// no human is left in the channel.
    fn rejoin(&self, sender: &MessageSender, shard: u32, only: Option<u64>) {
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        let targets: Vec<(u64, u64)> = lock(&self.guilds)
            .in_voice()
            .into_iter()
            .filter(|(g, _)| self.shard_of(*g) == shard && only.is_none_or(|o| o == *g))
            .collect();
        for (guild, channel) in targets {
            if self.voices().is_some_and(|v| v.has_call(guild)) {
                continue;
            }
            let humans = lock(&self.guilds).humans_in(guild, channel);
            if humans == 0 {
                tracing::info!(
                    guild,
                    channel,
                    "no human is left in the voice channel the bot was in; not rejoining"
                );
                lock(&self.guilds).left(guild);
                self.persist(guild);
                continue;
            }
            tracing::info!(
                guild,
                channel,
                humans,
                "rejoining the voice channel the bot was in"
            );
            self.voice_action(sender, guild, Some(channel));
        }
    }

    /// Joins or leaves voice: through songbird when the pod has its engines, else a bare
    /// voice state update.
    fn voice_action(&self, sender: &MessageSender, guild: u64, channel: Option<u64>) {
        let Some(voices) = self.voices().cloned() else {
            voice(sender, guild, channel);
            return;
        };
        match channel {
            Some(channel) => {
                let (settings, humans) = {
                    let g = lock(&self.guilds);
                    (g.settings(guild), g.humans_in(guild, channel))
                };
                let cast = settings.cast(&self.config.agents);
                let pending = lock(&self.pending_runs).remove(&guild);
                let metrics = self.config.metrics.clone();
                let shard = self.shard_of(guild);
                tokio::spawn(async move {
                    match voices
                        .join(guild, channel, &cast, settings.sensitivity, humans)
                        .await
                    {
                        Ok(()) => {
                            if let Some(run) = pending {
                                voices.recover(guild, &run);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(guild, error = %e, "joining voice failed");
                            if let Some(m) = metrics {
                                m.error(shard, "voice_join");
                            }
                        }
                    }
                });
            }
            None => {
                tokio::spawn(async move { voices.leave(guild).await });
            }
        }
    }
}

/// What the pod learns from REST before connecting: the bot's user id (so voice can rejoin
/// after a RESUME, which has no READY) and the IDENTIFY concurrency. Either may be missing
/// when Discord's REST does not answer in time; READY then gives the user id and the
/// concurrency is taken as 1 (the safe value).
async fn discover(http: &twilight_http::Client) -> (Option<u64>, u32) {
    const WAIT: Duration = Duration::from_secs(10);
    let user = async { http.current_user().await.ok()?.model().await.ok() };
    let user = tokio::time::timeout(WAIT, user).await.ok().flatten();
    let gateway = async { http.gateway().authed().await.ok()?.model().await.ok() };
    let concurrency = tokio::time::timeout(WAIT, gateway)
        .await
        .ok()
        .flatten()
        .map_or(1, |g| {
            u32::from(g.session_start_limit.max_concurrency).max(1)
        });
    (user.map(|u| u.id.get()), concurrency)
}

/// Reads the pod's fleet state (`None`: Redis did not answer in 3 s; the pod starts from the
/// defaults, degraded, and [`load_later`] reads it when Redis answers).
async fn load_state(config: &DiscordConfig, quiet: bool) -> Option<Snapshot> {
    let shards: Vec<u32> = config.plan.shards().collect();
    match tokio::time::timeout(
        Duration::from_secs(3),
        config.state.load(&shards, config.plan.count),
    )
    .await
    {
        Ok(Ok(snapshot)) => {
            tracing::info!(
                guilds = snapshot.guilds.len(),
                sessions = snapshot.sessions.len(),
                "fleet state loaded"
            );
            Some(snapshot)
        }
        Ok(Err(e)) => {
            if !quiet {
                tracing::warn!(
                    error = %e,
                    "fleet state not loaded: serving with the defaults, degraded; stored settings are kept and read when Redis answers"
                );
            }
            None
        }
        Err(_) => {
            if !quiet {
                tracing::warn!(
                    "fleet state not loaded in 3 s: serving with the defaults, degraded; stored settings are kept and read when Redis answers"
                );
            }
            None
        }
    }
}

/// Registers the application's slash commands (global: every guild has them), off the shard
/// loop, once per application: skipped when the fleet state says these very definitions are
/// registered already (a restart or a rollout registers nothing), retried with backoff when
/// Discord refuses (twilight-http waits out a 429's `retry_after` itself).
async fn register_commands(ctx: Weak<Ctx>) {
    use sha2::Digest as _;
    let Some(c) = ctx.upgrade() else { return };
    let defs = commands::definitions(&c.config.command, &c.config.agents, &c.config.permissions);
    let fingerprint = match serde_json::to_vec(&defs) {
        Ok(json) => format!("{:x}", sha2::Sha256::digest(&json)),
        Err(_) => String::new(),
    };
    match c.config.state.commands_registered(&fingerprint).await {
        Ok(true) => {
            tracing::info!("slash commands already registered with these definitions");
            return;
        }
        Ok(false) => {}
        Err(e) => tracing::debug!(error = %e, "registering the slash commands without checking"),
    }
    drop(c);
    let mut wait = Duration::from_secs(1);
    loop {
        let Some(c) = ctx.upgrade() else { return };
        if c.stopping.load(Ordering::Acquire) {
            return;
        }
        match c.http.interaction(c.app).set_global_commands(&defs).await {
            Ok(_) => {
                c.config.state.save_commands(&fingerprint);
                tracing::info!(commands = defs.len(), "slash commands registered");
                return;
            }
            Err(e) => {
                crate::throttle::peer_warn!(error = %e, retry_in_s = wait.as_secs(), "registering the slash commands failed");
            }
        }
        drop(c);
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(60));
    }
}

/// Started when the fleet state could not be read at start: reads it once Redis answers,
/// merges it with what the pod decided meanwhile (a setting changed during the outage wins
/// over the stored one; the rest is the stored one), applies it to the running conversations,
/// writes the merged settings and joins again the voice channels the bot was in.
async fn load_later(ctx: Weak<Ctx>) {
    let mut wait = Duration::from_millis(500);
    loop {
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
        let Some(ctx) = ctx.upgrade() else { return };
        if ctx.stopping.load(Ordering::Acquire) {
            return;
        }
        let Some(snapshot) = load_state(&ctx.config, true).await else {
            continue;
        };
        let changes: Vec<_> = {
            let mut guilds = lock(&ctx.guilds);
            snapshot
                .guilds
                .into_iter()
                .map(|(guild, stored)| (guild, guilds.merge_stored(guild, stored)))
                .collect()
        };
        tracing::info!(
            guilds = changes.len(),
            "Redis answers: the stored settings are read and merged with the changes made meanwhile"
        );
        ctx.loaded.store(true, Ordering::Release);
        let mut known: HashSet<u64> = lock(&ctx.guild_shards).keys().copied().collect();
        for (guild, after) in &changes {
            if let Some(v) = ctx.voices() {
                v.apply(*guild, &after.cast(&ctx.config.agents), after.sensitivity);
            }
            known.insert(*guild);
        }
        for guild in known {
            ctx.persist(guild);
        }
        let ready: Vec<u32> = lock(&ctx.ready_shards).iter().copied().collect();
        for shard in ready {
            if let Some(sender) = ctx.shard_senders.get(&shard) {
                ctx.rejoin(sender, shard, None);
            }
        }
        return;
    }
}

/// Runs this pod's shards until `shutdown` turns true; then closes them with a resumable code
/// and saves their sessions (the next pod RESUMEs them).
pub async fn run(config: DiscordConfig, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let mut http = twilight_http::Client::builder().token(config.token.expose().to_string());
    if let Some(proxy) = &config.api_proxy {
        http = http.proxy(proxy.clone(), true);
    }
    let http = http.build();
    let default_agent = config
        .agents
        .first()
        .cloned()
        .unwrap_or_else(|| config.command.clone());
    let loaded = load_state(&config, false).await;
    let late = loaded.is_none();
    let snapshot = loaded.unwrap_or_default();
    let (bot_user, concurrency) = discover(&http).await;
    let queue = IdentifyQueue::new(
        config.state.clone(),
        &config.pod,
        concurrency,
        config.identify_interval,
    );
    let hosts = GatewayHosts::new(
        config.gateway_hosts.iter().map(String::as_str),
        config.gateway_url.as_deref(),
    );
    let mut shards = Vec::new();
    let mut senders = Vec::new();
    for id in config.plan.shards() {
        let mut builder =
            ConfigBuilder::new(config.token.expose().to_string(), INTENTS).queue(queue.clone());
        if let Some(url) = &config.gateway_url {
            builder = builder.proxy_url(url.clone());
        }
        if let Some(saved) = snapshot.sessions.get(&id) {
            tracing::info!(
                shard = id,
                sequence = saved.sequence,
                "resuming the saved gateway session"
            );
            builder = builder.session(Session::new(saved.sequence, saved.id.clone()));
            // Fleet state is not trusted with the token: a RESUME goes only to a gateway host
            // we trust, whatever Redis says; otherwise through the configured gateway.
            match saved.resume_url.as_deref().map(|url| hosts.check(url)) {
                Some(Ok(())) => {
                    builder = builder.resume_url(saved.resume_url.clone().unwrap_or_default());
                }
                Some(Err(why)) => tracing::warn!(
                    shard = id,
                    "ignoring the saved resume URL ({why}); resuming through the configured gateway"
                ),
                None => {}
            }
        }
        let shard = Shard::with_config(ShardId::new(id, config.plan.count), builder.build());
        senders.push(shard.sender());
        shards.push(shard);
    }
    let mut guilds = Guilds::new(default_agent, config.default_sensitivity);
    let mut guild_shards = HashMap::new();
    for (guild, settings) in snapshot.guilds {
        guild_shards.insert(guild, config.plan.shard_of(guild));
        guilds.restore(guild, settings);
    }
    for (guild, users) in snapshot.voice {
        for (user, v) in users {
            guilds.voice_state(guild, user, Some(v.channel), v.bot);
        }
    }
    let ctx = Arc::new(Ctx {
        app: Id::new(config.application_id.max(1)),
        http,
        guilds: Mutex::new(guilds),
        bot_user: Mutex::new(None),
        senders: Arc::new(TwilightMap::new(
            config.plan.shards().zip(senders.iter().cloned()).collect(),
        )),
        voices: std::sync::OnceLock::new(),
        guild_shards: Mutex::new(guild_shards),
        ready_shards: Mutex::new(HashSet::new()),
        pending_runs: Mutex::new(recent_runs(&config.state, snapshot.runs)),
        stopping: AtomicBool::new(false),
        loaded: AtomicBool::new(!late),
        shard_senders: config.plan.shards().zip(senders.iter().cloned()).collect(),
        config,
    });
    if late {
        tokio::spawn(load_later(Arc::downgrade(&ctx)));
    }
    // One pod per application registers: the one that runs shard 0.
    if ctx.config.plan.shards().any(|s| s == 0) {
        tokio::spawn(register_commands(Arc::downgrade(&ctx)));
    }
    if let Some(bot) = bot_user {
        ctx.start_voices(bot);
    }
    if let Some(metrics) = ctx.config.metrics.clone() {
        let shards: Vec<u32> = ctx.config.plan.shards().collect();
        metrics.init(&shards, &ctx.config.agents);
        tokio::spawn(gauges(Arc::downgrade(&ctx), metrics));
    }
    let (close, closing) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for shard in shards {
        tasks.spawn(shard_loop(shard, ctx.clone(), closing.clone()));
    }
    tracing::info!(shards = ?ctx.config.plan.shards(), total = ctx.config.plan.count, "shards started");
    // Until shutdown, or until Discord closes a shard for good (the pod then stops with the
    // reason: Kubernetes shows it, and restarts the pod with backoff).
    let fatal = tokio::select! {
        _ = shutdown.wait_for(|s| *s) => None,
        fatal = async {
            while let Some(done) = tasks.join_next().await {
                if let Ok(Some(why)) = done {
                    return why;
                }
            }
            std::future::pending().await
        } => Some(fatal),
    };
    if fatal.is_some()
        && let Some(flag) = &ctx.config.ready
    {
        flag.store(false, Ordering::Release);
    }
    ctx.stopping.store(true, Ordering::Release);
    if let Some(v) = ctx.voices() {
        tracing::info!(calls = v.connected(), "shutting down: leaving voice");
        let _ = tokio::time::timeout(Duration::from_secs(3), v.leave_all()).await;
    }
    tracing::info!("shutting down: closing the shards with a resumable code");
    let _ = close.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if !ctx.config.state.flush(Duration::from_secs(3)).await {
        tracing::warn!("the fleet state could not be written before exit (Redis unreachable)");
    }
    match fatal {
        Some(why) => Err(anyhow::anyhow!(why)),
        None => Ok(()),
    }
}

/// How often a shard's session (its sequence number) is mirrored; a pod killed between two
/// saves resumes a little behind, and Discord replays what it missed.
const SESSION_SAVE_EVERY: Duration = Duration::from_secs(1);

/// Why Discord closed a shard for good, in words an operator can act on (`None`: a close the
/// shard recovers from by itself — twilight resumes, or identifies again when Discord ended
/// the session).
pub fn fatal_close(code: u16) -> Option<String> {
    let why = match code {
        4004 => {
            "authentication failed: Discord refused the bot token (check the DISCORD_TOKEN secret)"
        }
        4010 => {
            "invalid shard: the shard id is not below the shard count (check SHARD_COUNT and the pod ordinal)"
        }
        4011 => {
            "sharding required: the bot is in too many guilds for one shard (raise spec.shards)"
        }
        4012 => "invalid API version",
        4013 => "invalid intents",
        4014 => "disallowed intents: enable them for the application in Discord's developer portal",
        _ => return None,
    };
    Some(format!("Discord closed the gateway with {code}, {why}"))
}

/// Runs one shard until the pod closes it (`None`) or Discord closes it for good (the reason).
async fn shard_loop(
    mut shard: Shard<IdentifyQueue>,
    ctx: Arc<Ctx>,
    mut close: watch::Receiver<bool>,
) -> Option<String> {
    let sender = shard.sender();
    let id = shard.id().number();
    let mut saved: Option<(String, u64)> = None;
    let mut saved_at = Instant::now();
    let save = |shard: &Shard<IdentifyQueue>, saved: &mut Option<(String, u64)>| {
        let now = shard.session().map(|s| (s.id().to_string(), s.sequence()));
        if now != *saved {
            let session = now.as_ref().map(|(sid, seq)| SavedSession {
                id: sid.clone(),
                sequence: *seq,
                resume_url: shard.resume_url().map(str::to_string),
            });
            ctx.config
                .state
                .save_session(id, ctx.config.plan.count, session.as_ref());
            *saved = now;
        }
    };
    // Set once the pod closes the shard: what is left is drained (no event handled) until the
    // gateway's close, or this deadline.
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        let item = match closing {
            None => tokio::select! {
                item = shard.next_event(EventTypeFlags::all()) => item,
                _ = close.wait_for(|c| *c) => {
                    shard.close(CloseFrame::RESUME);
                    closing = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                    continue;
                }
            },
            Some(deadline) => {
                match tokio::time::timeout_at(deadline, shard.next_event(EventTypeFlags::all()))
                    .await
                {
                    Ok(item) => item,
                    Err(_) => break,
                }
            }
        };
        let Some(item) = item else { break };
        if closing.is_some() {
            if matches!(item, Ok(Event::GatewayClose(_))) {
                break;
            }
            continue;
        }
        if let Ok(Event::GatewayClose(Some(frame))) = &item
            && let Some(why) = fatal_close(frame.code)
        {
            tracing::error!(shard = %shard.id(), code = frame.code, "{why}; the shard stops");
            if let Some(m) = &ctx.config.metrics {
                m.error(id, "gateway_fatal");
            }
            ctx.config
                .state
                .save_session(id, ctx.config.plan.count, None);
            return Some(why);
        }
        match item {
            Ok(event) => handle(&ctx, &sender, id, event).await,
            Err(e) => {
                crate::throttle::peer_warn!(shard = %shard.id(), error = %e, "gateway receive error")
            }
        }
        let new_session = shard.session().map(|s| s.id()) != saved.as_ref().map(|s| s.0.as_str());
        if new_session || saved_at.elapsed() >= SESSION_SAVE_EVERY {
            save(&shard, &mut saved);
            saved_at = Instant::now();
        }
    }
    save(&shard, &mut saved);
    tracing::info!(shard = %shard.id(), "shard stopped");
    None
}

async fn handle(ctx: &Arc<Ctx>, sender: &MessageSender, shard: u32, event: Event) {
    if let Some(v) = ctx.voices() {
        v.process(&event).await;
    }
    match event {
        Event::Ready(ready) => {
            ctx.start_voices(ready.user.id.get());
            shard_ready(ctx, shard);
            tracing::info!(shard, guilds = ready.guilds.len(), "ready");
        }
        Event::Resumed => {
            shard_ready(ctx, shard);
            tracing::info!(shard, "resumed");
            ctx.rejoin(sender, shard, None);
        }
        Event::GuildCreate(g) => {
            let GuildCreate::Available(guild) = *g else {
                return;
            };
            let id = guild.id.get();
            lock(&ctx.guild_shards).insert(id, shard);
            {
                let mut guilds = lock(&ctx.guilds);
                for c in &guild.channels {
                    if let Some(name) = &c.name {
                        guilds.name_channel(c.id.get(), name.clone());
                    }
                }
                let bot = *lock(&ctx.bot_user);
                for (user, _) in guilds.voice_states(id) {
                    guilds.voice_state(id, user, None, false);
                }
                for vs in &guild.voice_states {
                    let user = vs.user_id.get();
                    guilds.voice_state(id, user, vs.channel_id.map(|c| c.get()), Some(user) == bot);
                }
            }
            ctx.persist(id);
            ctx.rejoin(sender, shard, Some(id));
        }
        Event::VoiceStateUpdate(vs) => {
            let Some(guild) = vs.guild_id.map(|g| g.get()) else {
                return;
            };
            let user = vs.user_id.get();
            let is_bot = Some(user) == *lock(&ctx.bot_user)
                || vs.member.as_ref().is_some_and(|m| m.user.bot);
            let (leave, humans) = {
                let mut guilds = lock(&ctx.guilds);
                guilds.voice_state(guild, user, vs.channel_id.map(|c| c.get()), is_bot);
                let humans = guilds
                    .settings(guild)
                    .channel
                    .map(|c| guilds.humans_in(guild, c));
                (guilds.should_leave(guild), humans)
            };
            if leave {
                tracing::info!(guild, "the voice channel has no humans left; leaving");
                lock(&ctx.guilds).left(guild);
                ctx.voice_action(sender, guild, None);
            } else if let (Some(v), Some(h)) = (ctx.voices(), humans) {
                v.set_humans(guild, h);
            }
            ctx.persist(guild);
        }
        Event::InteractionCreate(i) => interaction(ctx, sender, i.0),
        // Removed from the guild (an outage says `unavailable: true` and keeps everything):
        // its settings, voice states and any saved reply are forgotten, here and in Redis.
        Event::GuildDelete(g) if g.unavailable != Some(true) => {
            let guild = g.id.get();
            tracing::info!(guild, "removed from the guild; forgetting its state");
            lock(&ctx.guilds).forget(guild);
            lock(&ctx.guild_shards).remove(&guild);
            lock(&ctx.pending_runs).remove(&guild);
            if let Some(v) = ctx.voices().cloned() {
                tokio::spawn(async move { v.leave(guild).await });
            }
            ctx.config.state.forget_guild(guild);
        }
        _ => {}
    }
}

fn shard_ready(ctx: &Ctx, shard: u32) {
    let all = {
        let mut ready_shards = lock(&ctx.ready_shards);
        ready_shards.insert(shard);
        ready_shards.len() >= ctx.config.plan.shards().count()
    };
    if all && let Some(flag) = &ctx.config.ready {
        flag.store(true, Ordering::Release);
    }
}

/// A reply older than this when the pod restarts is not spoken again.
const RECOVER_WITHIN_MS: u64 = 60_000;

/// The saved runs still worth speaking; the others are forgotten.
fn recent_runs(state: &FleetState, runs: HashMap<u64, SavedRun>) -> HashMap<u64, SavedRun> {
    let now = crate::state::epoch_ms();
    runs.into_iter()
        .filter(|(guild, run)| {
            let recent = now.saturating_sub(run.started_ms) <= RECOVER_WITHIN_MS;
            if !recent {
                state.save_run(*guild, None);
            }
            recent
        })
        .collect()
}

/// The gauges, every 5 s: guilds, voice connections, speakers and queued turns per shard.
async fn gauges(ctx: Weak<Ctx>, metrics: Arc<ShardMetrics>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tick.tick().await;
        let Some(ctx) = ctx.upgrade() else { return };
        let state = &ctx.config.state;
        let stats = state.stats();
        metrics.set_redis(
            match state.health() {
                Health::Memory => None,
                Health::Up => Some(true),
                Health::Degraded => Some(false),
            },
            stats.round_trips.load(Ordering::Relaxed),
            stats.errors.load(Ordering::Relaxed),
        );
        let mut per_shard: HashMap<u32, [i64; 4]> =
            ctx.config.plan.shards().map(|s| (s, [0; 4])).collect();
        for shard in lock(&ctx.guild_shards).values() {
            per_shard.entry(*shard).or_default()[0] += 1;
        }
        if let Some(v) = ctx.voices() {
            for (guild, speakers, queued) in v.load() {
                let g = per_shard.entry(ctx.shard_of(guild)).or_default();
                g[1] += 1;
                g[2] += speakers as i64;
                g[3] += queued as i64;
            }
        }
        for (shard, values) in per_shard {
            for (gauge, value) in [
                Gauge::Guilds,
                Gauge::VoiceConnections,
                Gauge::ActiveSpeakers,
                Gauge::QueueDepth,
            ]
            .into_iter()
            .zip(values)
            {
                metrics.set_gauge(gauge, shard, value);
            }
        }
    }
}

fn voice(sender: &MessageSender, guild: u64, channel: Option<u64>) {
    let Some(guild) = Id::new_checked(guild) else {
        return;
    };
    let cmd = UpdateVoiceState::new(guild, channel.and_then(Id::new_checked), false, false);
    if let Err(e) = sender.command(&cmd) {
        crate::throttle::peer_warn!(error = %e, "voice state update not sent");
    }
}

/// How long a settings reply waits for the write to reach Redis (Discord wants an answer
/// within 3 s).
const SAVE_WAIT: Duration = Duration::from_millis(1500);

/// Runs a command on the shard loop (commands take effect in the order they came) and answers
/// it from a task: a settings change is answered once it is in Redis ("Saved."), or after
/// [`SAVE_WAIT`] with "not saved yet" (it applies already, and is written when Redis is back).
fn interaction(ctx: &Arc<Ctx>, sender: &MessageSender, i: Interaction) {
    let parsed = commands::parse(
        &ctx.config.command,
        &i,
        &ctx.config.agents,
        &ctx.config.permissions,
    );
    let (content, saved_for) = match parsed {
        Err(CommandError::NotOurs) => return,
        Err(e) => (e.to_string(), None),
        Ok(command) => {
            let (Some(guild), Some(user)) = (i.guild_id, i.author_id()) else {
                return;
            };
            let latencies = ctx
                .voices()
                .map(|v| v.latencies(guild.get()))
                .unwrap_or_default();
            let (reply, after) = {
                let mut guilds = lock(&ctx.guilds);
                let reply = guilds.handle(guild.get(), user.get(), &command, latencies);
                (reply, guilds.settings(guild.get()))
            };
            match reply.action {
                Some(VoiceAction::Join(channel)) => {
                    ctx.voice_action(sender, guild.get(), Some(channel));
                }
                Some(VoiceAction::Leave) => ctx.voice_action(sender, guild.get(), None),
                None => {
                    if let Some(v) = ctx.voices() {
                        v.apply(
                            guild.get(),
                            &after.cast(&ctx.config.agents),
                            after.sensitivity,
                        );
                    }
                }
            }
            ctx.persist(guild.get());
            (reply.content, command.is_setting().then_some(guild.get()))
        }
    };
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let content = match saved_for {
            Some(guild) => saved_or_not(&ctx, guild, content).await,
            None => content,
        };
        respond(&ctx, &i, content).await;
    });
}

/// A settings reply, with whether it is saved.
async fn saved_or_not(ctx: &Ctx, guild: u64, content: String) -> String {
    let state = &ctx.config.state;
    if state.health() == Health::Memory {
        return content;
    }
    if ctx.loaded.load(Ordering::Acquire) && state.guild_written(guild, SAVE_WAIT).await {
        format!("{content} Saved.")
    } else {
        format!(
            "{content} Not saved yet: the settings store is not answering. This applies now, and is saved as soon as the store is back."
        )
    }
}

async fn respond(ctx: &Ctx, i: &Interaction, content: String) {
    let response = InteractionResponse {
        kind: InteractionResponseType::ChannelMessageWithSource,
        data: Some(InteractionResponseData {
            content: Some(content),
            flags: Some(MessageFlags::EPHEMERAL),
            ..InteractionResponseData::default()
        }),
    };
    if let Err(e) = ctx
        .http
        .interaction(ctx.app)
        .create_response(i.id, &i.token, &response)
        .await
    {
        crate::throttle::peer_warn!(error = %e, "answering an interaction failed");
    }
}
