//! The gateway loop: this pod's shards (twilight-gateway), slash commands answered through
//! twilight-http, voice joins and leaves asked of the gateway. The same code reaches real
//! Discord (no overrides) or the simulator (`api_proxy` and `gateway_url` set).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use songbird::shards::TwilightMap;
use tokio::sync::watch;
use twilight_gateway::{
    CloseFrame, ConfigBuilder, Event, EventTypeFlags, Intents, MessageSender, Shard, ShardId,
    StreamExt as _,
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

use super::commands::{self, CommandError};
use super::guilds::{Guilds, VoiceAction};
use super::plan::ShardPlan;
use super::voice::{Brains, Voices};
use crate::converse::relevance::Sensitivity;
use crate::lock;
use crate::metrics::{Gauge, ShardMetrics};
use crate::secret::Secret;

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
    /// Sensitivity of guilds that have not chosen.
    pub default_sensitivity: Sensitivity,
    /// `host:port` of a plain-HTTP REST API instead of discord.com (the simulator).
    pub api_proxy: Option<String>,
    /// `ws://host:port` of a gateway instead of Discord's (the simulator).
    pub gateway_url: Option<String>,
    /// The shards of this pod.
    pub plan: ShardPlan,
    /// The conversation engines for voice (`None`: the bot joins and leaves channels but
    /// neither listens nor speaks — command-only tests).
    pub brains: Option<Brains>,
    /// Where the shard's metrics go (`None`: not kept).
    pub metrics: Option<Arc<ShardMetrics>>,
    /// Set once every shard of the plan has received READY (the pod's readiness).
    pub ready: Option<Arc<AtomicBool>>,
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
            default_sensitivity: Sensitivity::Low,
            api_proxy: None,
            gateway_url: None,
            plan: ShardPlan {
                count: 1,
                per_pod: 1,
                ordinal: 0,
            },
            brains: None,
            metrics: None,
            ready: None,
        }
    }
}

impl std::fmt::Debug for DiscordConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscordConfig")
            .field("token", &self.token)
            .field("application_id", &self.application_id)
            .field("command", &self.command)
            .field("agents", &self.agents)
            .field("plan", &self.plan)
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
    /// Set at the first READY (songbird needs the bot's user id).
    voices: std::sync::OnceLock<Arc<Voices>>,
    /// Guilds and the shard that serves them.
    guild_shards: Mutex<HashMap<u64, u32>>,
    /// Shards that have received READY.
    ready_shards: Mutex<HashSet<u32>>,
}

impl Ctx {
    fn voices(&self) -> Option<&Arc<Voices>> {
        self.voices.get()
    }

    fn shard_of(&self, guild: u64) -> u32 {
        ((guild >> 22) % u64::from(self.config.plan.count.max(1))) as u32
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
                tokio::spawn(async move {
                    if let Err(e) = voices
                        .join(
                            guild,
                            channel,
                            &settings.agent,
                            settings.sensitivity,
                            humans,
                        )
                        .await
                    {
                        tracing::warn!(guild, error = %e, "joining voice failed");
                    }
                });
            }
            None => {
                tokio::spawn(async move { voices.leave(guild).await });
            }
        }
    }
}

/// Runs this pod's shards until `shutdown` turns true; then closes them with a resumable code
/// (the next pod RESUMEs their sessions).
pub async fn run(config: DiscordConfig, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let mut http = twilight_http::Client::builder().token(config.token.expose().to_string());
    if let Some(proxy) = &config.api_proxy {
        http = http.proxy(proxy.clone(), true);
    }
    let default_agent = config
        .agents
        .first()
        .cloned()
        .unwrap_or_else(|| config.command.clone());
    let mut shards = Vec::new();
    let mut senders = Vec::new();
    for id in config.plan.shards() {
        let mut builder = ConfigBuilder::new(config.token.expose().to_string(), INTENTS);
        if let Some(url) = &config.gateway_url {
            builder = builder.proxy_url(url.clone());
        }
        let shard = Shard::with_config(ShardId::new(id, config.plan.count), builder.build());
        senders.push(shard.sender());
        shards.push(shard);
    }
    let ctx = Arc::new(Ctx {
        app: Id::new(config.application_id.max(1)),
        http: http.build(),
        guilds: Mutex::new(Guilds::new(default_agent, config.default_sensitivity)),
        bot_user: Mutex::new(None),
        senders: Arc::new(TwilightMap::new(
            config.plan.shards().zip(senders.iter().cloned()).collect(),
        )),
        voices: std::sync::OnceLock::new(),
        guild_shards: Mutex::new(HashMap::new()),
        ready_shards: Mutex::new(HashSet::new()),
        config,
    });
    if let Some(metrics) = ctx.config.metrics.clone() {
        tokio::spawn(gauges(Arc::downgrade(&ctx), metrics));
    }
    let tasks: Vec<_> = shards
        .into_iter()
        .map(|shard| tokio::spawn(shard_loop(shard, ctx.clone())))
        .collect();
    tracing::info!(shards = ?ctx.config.plan.shards(), total = ctx.config.plan.count, "shards started");
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            break;
        }
    }
    if let Some(v) = ctx.voices() {
        tracing::info!(calls = v.connected(), "shutting down: leaving voice");
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), v.leave_all()).await;
    }
    tracing::info!("shutting down: closing the shards with a resumable code");
    for s in &senders {
        let _ = s.close(CloseFrame::RESUME);
    }
    for t in tasks {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
    }
    Ok(())
}

async fn shard_loop(mut shard: Shard, ctx: Arc<Ctx>) {
    let sender = shard.sender();
    let id = shard.id().number();
    while let Some(item) = shard.next_event(EventTypeFlags::all()).await {
        match item {
            Ok(event) => handle(&ctx, &sender, id, event).await,
            Err(e) => tracing::warn!(shard = %shard.id(), error = %e, "gateway receive error"),
        }
    }
    tracing::info!(shard = %shard.id(), "shard stopped");
}

async fn handle(ctx: &Arc<Ctx>, sender: &MessageSender, shard: u32, event: Event) {
    if let Some(v) = ctx.voices() {
        v.process(&event).await;
    }
    match event {
        Event::Ready(ready) => {
            *lock(&ctx.bot_user) = Some(ready.user.id.get());
            if let Some(brains) = &ctx.config.brains
                && ctx.voices.get().is_none()
            {
                let voices = Arc::new(Voices::new(
                    brains.clone(),
                    ctx.senders.clone(),
                    ctx.config.plan.count,
                    ready.user.id.get(),
                ));
                if ctx.voices.set(voices.clone()).is_ok()
                    && let Some(metrics) = ctx.config.metrics.clone()
                {
                    tokio::spawn(count_rooms(Arc::downgrade(ctx), voices, metrics));
                }
            }
            let all = {
                let mut ready_shards = lock(&ctx.ready_shards);
                ready_shards.insert(shard);
                ready_shards.len() >= ctx.config.plan.shards().count()
            };
            if all && let Some(flag) = &ctx.config.ready {
                flag.store(true, Ordering::Release);
            }
            tracing::info!(guilds = ready.guilds.len(), "ready");
        }
        Event::GuildCreate(g) => {
            let GuildCreate::Available(guild) = *g else {
                return;
            };
            lock(&ctx.guild_shards).insert(guild.id.get(), shard);
            {
                let mut guilds = lock(&ctx.guilds);
                for c in &guild.channels {
                    if let Some(name) = &c.name {
                        guilds.name_channel(c.id.get(), name.clone());
                    }
                }
                let bot = *lock(&ctx.bot_user);
                for vs in &guild.voice_states {
                    let user = vs.user_id.get();
                    guilds.voice_state(
                        guild.id.get(),
                        user,
                        vs.channel_id.map(|c| c.get()),
                        Some(user) == bot,
                    );
                }
            }
            let defs = commands::definitions(&ctx.config.command, &ctx.config.agents);
            if let Err(e) = ctx
                .http
                .interaction(ctx.app)
                .set_guild_commands(guild.id, &defs)
                .await
            {
                tracing::warn!(guild = guild.id.get(), error = %e, "registering commands failed");
            }
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
        }
        Event::InteractionCreate(i) => interaction(ctx, sender, &i).await,
        _ => {}
    }
}

/// Room events → the metrics, labelled with the guild's shard and agent.
async fn count_rooms(ctx: Weak<Ctx>, voices: Arc<Voices>, metrics: Arc<ShardMetrics>) {
    let mut rx = voices.subscribe();
    drop(voices);
    loop {
        match rx.recv().await {
            Ok((guild, event)) => {
                let Some(ctx) = ctx.upgrade() else { return };
                let agent = lock(&ctx.guilds).settings(guild).agent;
                metrics.observe(ctx.shard_of(guild), &agent, &event);
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "metrics fell behind the rooms' events");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The gauges, every 5 s: guilds, voice connections, speakers and queued turns per shard.
async fn gauges(ctx: Weak<Ctx>, metrics: Arc<ShardMetrics>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tick.tick().await;
        let Some(ctx) = ctx.upgrade() else { return };
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
        tracing::warn!(error = %e, "voice state update not sent");
    }
}

async fn interaction(ctx: &Ctx, sender: &MessageSender, i: &Interaction) {
    let parsed = commands::parse(&ctx.config.command, i, &ctx.config.agents);
    let content = match parsed {
        Err(CommandError::NotOurs) => return,
        Err(e) => e.to_string(),
        Ok(command) => {
            let (Some(guild), Some(user)) = (i.guild_id, i.author_id()) else {
                return;
            };
            let latencies = ctx
                .voices()
                .map(|v| v.latencies(guild.get()))
                .unwrap_or_default();
            let (before, reply, after) = {
                let mut guilds = lock(&ctx.guilds);
                let before = guilds.settings(guild.get());
                let reply = guilds.handle(guild.get(), user.get(), &command, latencies);
                (before, reply, guilds.settings(guild.get()))
            };
            match reply.action {
                Some(VoiceAction::Join(channel)) => {
                    ctx.voice_action(sender, guild.get(), Some(channel));
                }
                Some(VoiceAction::Leave) => ctx.voice_action(sender, guild.get(), None),
                None => {
                    if let Some(v) = ctx.voices() {
                        v.apply(guild.get(), &after.agent, after.sensitivity, &before.agent);
                    }
                }
            }
            reply.content
        }
    };
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
        tracing::warn!(error = %e, "answering an interaction failed");
    }
}
