//! Voice: a songbird call per guild, wired to that guild's [`Room`].
//!
//! ```text
//! twilight shard ─ VOICE_STATE/SERVER_UPDATE ─► Voices::process ─► songbird Call (per guild)
//! songbird driver ─ SpeakingStateUpdate ──────► SSRC → user
//!                 ─ VoiceTick (20 ms, decoded 16 kHz mono per SSRC) ─► Room::push(user, pcm)
//!                   (+ 20 ms of silence for a speaker who just went quiet, so end of turn is seen)
//! Room playout ◄─ RoomSource::read (the mixer pulls 20 ms at a time) ◄─ a track, started by the
//!                 playback task when the room has audio and ended after 200 ms of nothing
//! DriverDisconnect (not asked for) ─► join the channel again, with backoff
//! ```
//!
//! songbird decodes Opus at 16 kHz mono itself (the pipeline's rate), and resamples the
//! voice's rate (Piper 22.05 kHz) to Discord's 48 kHz stereo. DAVE is songbird's: it offers
//! protocol version 1 and speaks it when the voice server asks.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use songbird::driver::DecodeMode;
use songbird::events::{CoreEvent, Event, EventContext, EventHandler};
use songbird::input::{Input, RawAdapter};
use songbird::shards::{Shard as VoiceShard, TwilightMap};
use songbird::{Call, Config};
use tokio::sync::{broadcast, watch};

use super::guilds::Latencies;
use super::plan::shard_of;
use crate::converse::room::{Room, RoomEvent, TurnRecord};
use crate::eval::percentile;
use crate::lock;
use crate::state::{SavedRun, Sensitivity};

/// How the Discord side gets a conversation for a voice channel: the pod's engines behind a
/// narrow handle (the pod's `Brains` in production, anything that makes a [`Room`] in tests).
pub trait Rooms: Send + Sync {
    /// A new room where `agents` answer in voice channel `channel` of `guild` with
    /// `sensitivity` (the first is the room's own; the others answer when called by name, see
    /// [`Room::start_cast`]). Its conversations (and each agent's session) belong to that
    /// channel: what was said in one channel is not context in another.
    fn open(&self, guild: u64, channel: u64, agents: &[String], sensitivity: Sensitivity) -> Room;
}

/// A room's event, tagged with the guild and the agent of the room (for the pod's observers:
/// metrics, the run recorder, the demo, tests).
#[derive(Debug, Clone)]
pub struct GuildEvent {
    /// The guild.
    pub guild: u64,
    /// The agent it is about (its id, e.g. `jarvis`): a turn's or a barge-in's own, else the
    /// room's first agent.
    pub agent: String,
    /// What happened.
    pub event: RoomEvent,
}

/// A speaker who went quiet keeps getting silence for this long (the listener needs trailing
/// silence to end the turn); after it, nothing is pushed for them.
const TRAILING_SILENCE: Duration = Duration::from_secs(3);
/// A track ends after this much silence from the room.
const TRACK_IDLE_FRAMES: u32 = 10;
/// Turns remembered for `/status`.
const RECENT_TURNS: usize = 20;

/// A guild's voice: its call, its room, and who is who.
struct GuildVoice {
    call: Arc<tokio::sync::Mutex<Call>>,
    channel: u64,
    room: Arc<Mutex<Arc<Room>>>,
    /// The room's agents (ids), its own first.
    cast: Vec<String>,
    recent: Arc<Mutex<Vec<f64>>>,
    /// Set when the bot leaves on purpose: no rejoin.
    leaving: Arc<AtomicBool>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for GuildVoice {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A change to a call from a gateway event.
type CallUpdate = Box<dyn FnOnce(&mut Call) + Send>;

/// The pod's voice connections.
pub struct Voices {
    rooms: Arc<dyn Rooms>,
    senders: Arc<TwilightMap>,
    shard_count: u32,
    bot: u64,
    config: Config,
    guilds: Mutex<HashMap<u64, GuildVoice>>,
    events: broadcast::Sender<GuildEvent>,
}

impl Voices {
    /// Voice for the shards in `senders` (keyed by shard id; `shard_count` in all) of bot user
    /// `bot`, its conversations from `rooms`, every room's events sent to `events`. Must be called within the Tokio runtime that runs the calls: their mixers'
    /// scheduler lives there (songbird's default one is process-wide and dies with the first
    /// runtime that used it).
    pub fn new(
        rooms: Arc<dyn Rooms>,
        events: broadcast::Sender<GuildEvent>,
        senders: Arc<TwilightMap>,
        shard_count: u32,
        bot: u64,
    ) -> Self {
        let scheduler =
            songbird::driver::Scheduler::new(songbird::driver::SchedulerConfig::default());
        let config = Config::default()
            .scheduler(scheduler)
            // The receive side decodes Opus itself (`opus_frame`): songbird's decoder is handed
            // the rest of a DAVE frame after its Opus.
            .decode_mode(DecodeMode::Decrypt)
            .gateway_timeout(Some(Duration::from_secs(10)))
            .playout_buffer_length(PLAYOUT_PACKETS);
        Self {
            senders,
            shard_count: shard_count.max(1),
            bot,
            config,
            guilds: Mutex::new(HashMap::new()),
            events,
            rooms,
        }
    }

    /// What happens in every guild's room (turns, barge-ins, drops), for metrics and tests.
    pub fn subscribe(&self) -> broadcast::Receiver<GuildEvent> {
        self.events.subscribe()
    }

    /// Guilds with a voice connection.
    pub fn connected(&self) -> usize {
        lock(&self.guilds).len()
    }

    /// Whether the bot has a call (connected or connecting) in `guild`.
    pub fn has_call(&self, guild: u64) -> bool {
        lock(&self.guilds).contains_key(&guild)
    }

    /// Each voice guild's load: speakers listened to and turns waiting.
    pub fn load(&self) -> Vec<(u64, usize, usize)> {
        lock(&self.guilds)
            .iter()
            .map(|(g, v)| {
                let (speakers, queued) = lock(&v.room).load();
                (*g, speakers, queued)
            })
            .collect()
    }

    /// Recent end-of-speech → first-audio latencies in `guild`.
    pub fn latencies(&self, guild: u64) -> Latencies {
        let Some(recent) = lock(&self.guilds).get(&guild).map(|g| g.recent.clone()) else {
            return Latencies::default();
        };
        let v = lock(&recent);
        Latencies {
            p50_ms: percentile(&v, 50.0),
            p95_ms: percentile(&v, 95.0),
        }
    }

    /// Routes the gateway's voice events to the calls (call from the shard's event loop, never
    /// from a task that awaits a join).
    pub async fn process(&self, event: &twilight_gateway::Event) {
        use twilight_gateway::Event as E;
        let (guild, update): (u64, CallUpdate) = match event {
            E::VoiceServerUpdate(v) => {
                let Some(endpoint) = v.endpoint.clone() else {
                    return;
                };
                let token = v.token.clone();
                (
                    v.guild_id.get(),
                    Box::new(move |c: &mut Call| c.update_server(endpoint, token)),
                )
            }
            E::VoiceStateUpdate(v) if v.user_id.get() == self.bot => {
                let Some(g) = v.guild_id else { return };
                let session = v.session_id.clone();
                let channel = v.channel_id;
                (
                    g.get(),
                    Box::new(move |c: &mut Call| c.update_state(session, channel)),
                )
            }
            _ => return,
        };
        let call = lock(&self.guilds).get(&guild).map(|g| g.call.clone());
        if let Some(call) = call {
            update(&mut *call.lock().await);
        }
    }

    /// Humans now in the bot's channel in `guild` (one: solo mode).
    pub fn set_humans(&self, guild: u64, humans: usize) {
        if let Some(g) = lock(&self.guilds).get(&guild) {
            lock(&g.room).set_humans(humans.max(1));
        }
    }

    /// Applies a guild's settings to its running conversation: other agents (another one
    /// chosen, one invited or dismissed) start a new room (each agent's session of the channel
    /// goes on: an agent that stays keeps what was said); a new sensitivity applies from the
    /// next turn.
    pub fn apply(&self, guild: u64, cast: &[String], sensitivity: Sensitivity) {
        let mut guilds = lock(&self.guilds);
        let Some(g) = guilds.get_mut(&guild) else {
            return;
        };
        if cast != g.cast.as_slice() {
            let room = Arc::new(self.rooms.open(guild, g.channel, cast, sensitivity));
            room.set_humans(lock(&g.room).humans());
            // Ends with the room it forwards.
            forward_events(&room, guild, cast, &self.events, &g.recent);
            *lock(&g.room) = room;
            g.cast = cast.to_vec();
        } else {
            lock(&g.room).set_sensitivity(sensitivity);
        }
    }

    /// Speaks a reply that a previous pod was speaking in `guild` when it stopped, if it belongs
    /// to the conversation the guild has now (same agent). Returns whether it was queued.
    pub fn recover(&self, guild: u64, saved: &SavedRun) -> bool {
        let Some(room) = lock(&self.guilds)
            .get(&guild)
            .map(|g| lock(&g.room).clone())
        else {
            return false;
        };
        if room.session_key() != saved.session {
            tracing::info!(
                guild,
                "the guild's agent changed since the run was recorded; not recovering it"
            );
            return false;
        }
        tracing::info!(guild, run = %saved.run, "speaking the reply the previous pod was speaking");
        room.recover(saved.run.clone())
    }

    /// Joins `channel` in `guild` with `cast` answering (its first agent the room's own);
    /// returns once connected (or failed). Call from its own task: the join waits for the
    /// gateway's voice events, which [`Voices::process`] delivers.
    pub async fn join(
        self: &Arc<Self>,
        guild: u64,
        channel: u64,
        cast: &[String],
        sensitivity: Sensitivity,
        humans: usize,
    ) -> anyhow::Result<()> {
        let call = {
            let mut guilds = lock(&self.guilds);
            if let Some(g) = guilds.get_mut(&guild) {
                if g.channel != channel || g.cast != cast {
                    // Another channel is another conversation: a new room and session, so
                    // nothing said in the old channel is context (or spoken) in the new one.
                    let room = Arc::new(self.rooms.open(guild, channel, cast, sensitivity));
                    room.set_humans(humans.max(1));
                    forward_events(&room, guild, cast, &self.events, &g.recent);
                    *lock(&g.room) = room;
                    g.channel = channel;
                    g.cast = cast.to_vec();
                }
                g.leaving.store(false, Ordering::Release);
                g.call.clone()
            } else {
                let g = self.start_guild(guild, channel, cast, sensitivity, humans)?;
                let call = g.call.clone();
                guilds.insert(guild, g);
                call
            }
        };
        connect(&call, channel).await
    }

    /// Joins the guild's channel again after the connection dropped.
    async fn rejoin(&self, guild: u64) -> anyhow::Result<()> {
        let Some((call, channel)) = lock(&self.guilds)
            .get(&guild)
            .map(|g| (g.call.clone(), g.channel))
        else {
            return Ok(());
        };
        connect(&call, channel).await
    }

    /// Leaves the voice channel in `guild` (on purpose: no rejoin).
    pub async fn leave(&self, guild: u64) {
        let g = lock(&self.guilds).remove(&guild);
        if let Some(g) = g {
            g.leaving.store(true, Ordering::Release);
            let mut call = g.call.lock().await;
            call.remove_all_global_events();
            if let Err(e) = call.leave().await {
                tracing::debug!(guild, error = %e, "leaving voice");
            }
        }
    }

    /// Leaves every channel (shutdown).
    pub async fn leave_all(&self) {
        let guilds: Vec<u64> = lock(&self.guilds).keys().copied().collect();
        for g in guilds {
            self.leave(g).await;
        }
    }

    fn start_guild(
        self: &Arc<Self>,
        guild: u64,
        channel: u64,
        cast: &[String],
        sensitivity: Sensitivity,
        humans: usize,
    ) -> anyhow::Result<GuildVoice> {
        let guild_id =
            std::num::NonZeroU64::new(guild).ok_or_else(|| anyhow::anyhow!("guild id 0"))?;
        let bot = std::num::NonZeroU64::new(self.bot)
            .ok_or_else(|| anyhow::anyhow!("the bot's user id is not known yet"))?;
        let shard = shard_of(guild, self.shard_count);
        let mut call = Call::from_config(
            guild_id,
            VoiceShard::Twilight(self.senders.clone(), shard),
            bot,
            self.config.clone(),
        );
        let room = Arc::new(self.rooms.open(guild, channel, cast, sensitivity));
        room.set_humans(humans.max(1));
        let recent = Arc::new(Mutex::new(Vec::new()));
        let forward = forward_events(&room, guild, cast, &self.events, &recent);
        let room = Arc::new(Mutex::new(room));
        let leaving = Arc::new(AtomicBool::new(false));
        let receiver = Arc::new(Receiver {
            room: room.clone(),
            speakers: Mutex::new(Speakers::default()),
        });
        call.add_global_event(
            Event::Core(CoreEvent::SpeakingStateUpdate),
            Handler(receiver.clone()),
        );
        call.add_global_event(Event::Core(CoreEvent::VoiceTick), Handler(receiver.clone()));
        call.add_global_event(Event::Core(CoreEvent::ClientDisconnect), Handler(receiver));
        call.add_global_event(
            Event::Core(CoreEvent::DriverDisconnect),
            Rejoin {
                voices: Arc::downgrade(self),
                guild,
                leaving: leaving.clone(),
                rejoining: Arc::new(AtomicBool::new(false)),
            },
        );
        let call = Arc::new(tokio::sync::Mutex::new(call));
        let playback = tokio::spawn(playback(call.clone(), room.clone()));
        Ok(GuildVoice {
            call,
            channel,
            room,
            cast: cast.to_vec(),
            recent,
            leaving,
            tasks: vec![playback.abort_handle(), forward],
        })
    }
}

async fn connect(call: &tokio::sync::Mutex<Call>, channel: u64) -> anyhow::Result<()> {
    let channel =
        std::num::NonZeroU64::new(channel).ok_or_else(|| anyhow::anyhow!("channel id 0"))?;
    let join = call.lock().await.join(channel).await;
    match join {
        Ok(j) => j.await.map_err(|e| anyhow::anyhow!("joining voice: {e}")),
        Err(e) => Err(anyhow::anyhow!("joining voice: {e}")),
    }
}

/// Room events → the pod's stream (each labelled with the agent it is about, `cast` being the
/// room's agents), and the guild's recent latencies. Ends with the room.
fn forward_events(
    room: &Room,
    guild: u64,
    cast: &[String],
    events: &broadcast::Sender<GuildEvent>,
    recent: &Arc<Mutex<Vec<f64>>>,
) -> tokio::task::AbortHandle {
    let mut rx = room.subscribe();
    let events = events.clone();
    let recent = recent.clone();
    // The room's records name an agent by its display name (what the transcript says).
    let ids: Vec<(String, String)> = cast
        .iter()
        .map(|id| (crate::converse::room::display_name(id), id.clone()))
        .collect();
    let room_agent = cast.first().cloned().unwrap_or_default();
    tokio::spawn(async move {
        let id_of = |display: &str| {
            ids.iter()
                .find(|(d, _)| d == display)
                .map_or_else(|| room_agent.clone(), |(_, id)| id.clone())
        };
        loop {
            match rx.recv().await {
                Ok(e) => {
                    let agent = match &e {
                        RoomEvent::Turn(t) => {
                            note_latency(&recent, t);
                            id_of(&t.agent)
                        }
                        RoomEvent::BargeIn { agent, .. } => id_of(agent),
                        _ => room_agent.clone(),
                    };
                    let _ = events.send(GuildEvent {
                        guild,
                        agent,
                        event: e,
                    });
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    })
    .abort_handle()
}

fn note_latency(recent: &Mutex<Vec<f64>>, t: &TurnRecord) {
    if let Some(ms) = t.latency_ms() {
        let mut r = lock(recent);
        r.push(ms);
        let excess = r.len().saturating_sub(RECENT_TURNS);
        r.drain(..excess);
    }
}

/// Receive side of a call: SSRC → user, and each user's audio into the room.
struct Receiver {
    room: Arc<Mutex<Arc<Room>>>,
    speakers: Mutex<Speakers>,
}

#[derive(Default)]
struct Speakers {
    /// SSRC → the user's id as the room knows them (made once, not per frame).
    names: HashMap<u32, String>,
    /// When each SSRC last carried voice.
    last_voice: HashMap<u32, Instant>,
    /// Each SSRC's Opus decoder (16 kHz mono: the pipeline's rate).
    decoders: HashMap<u32, opus2::Decoder>,
    /// The frame being decoded and converted (reused every 20 ms).
    pcm: Vec<i16>,
    scratch: Vec<f32>,
}

/// Samples in the largest Opus packet (120 ms) at 16 kHz.
const MAX_FRAME_16K: usize = 1_920;

/// The Opus frame of a received packet (transport-decrypted, and DAVE-decrypted by songbird
/// when end-to-end encrypted): the payload after the RTP header extension, without what is
/// left of a DAVE trailer. songbird 0.6.1 decrypts a DAVE frame in place but hands over the
/// whole body, so the Opus is followed by the rest of the frame — the DAVE supplemental data,
/// whose last three bytes are its size and the 0xFAFA marker; decoding that as Opus garbles
/// the speech ("two plus two" heard as "the plus two").
fn opus_frame(rtp: &songbird::events::context_data::RtpData) -> Option<&[u8]> {
    use songbird::packet::rtp::{RtpExtensionPacket, RtpPacket};
    use songbird::packet::{Packet as _, PacketSize as _};
    let packet = RtpPacket::new(&rtp.packet)?;
    let header = rtp.packet.len().checked_sub(packet.payload().len())?;
    let payload = rtp.packet.get(header..)?;
    let data = payload.get(rtp.payload_offset..rtp.payload_end_pad)?;
    let start = if packet.get_extension() == 0 {
        0
    } else {
        RtpExtensionPacket::new(data)?.packet_size()
    };
    Some(strip_dave_trailer(data.get(start..)?))
}

/// A DAVE frame's plaintext length is the frame's less its supplemental data, whose size is the
/// byte before the 0xFAFA marker (at least 11: an 8-byte tag, a nonce, the size, the marker).
fn strip_dave_trailer(frame: &[u8]) -> &[u8] {
    match frame {
        [.., size, 0xFA, 0xFA] if (11..=frame.len()).contains(&usize::from(*size)) => {
            &frame[..frame.len() - usize::from(*size)]
        }
        _ => frame,
    }
}

struct Handler(Arc<Receiver>);

#[async_trait::async_trait]
impl EventHandler for Handler {
    async fn act(&self, ctx: &EventContext<'_>) -> Option<Event> {
        let r = &self.0;
        match ctx {
            EventContext::SpeakingStateUpdate(s) => {
                if let Some(user) = s.user_id {
                    lock(&r.speakers).names.insert(s.ssrc, user.0.to_string());
                }
            }
            EventContext::ClientDisconnect(d) => {
                let user = d.user_id.0.to_string();
                {
                    let mut sp = lock(&r.speakers);
                    let ssrcs: Vec<u32> = sp
                        .names
                        .iter()
                        .filter(|(_, u)| **u == user)
                        .map(|(s, _)| *s)
                        .collect();
                    for s in ssrcs {
                        sp.names.remove(&s);
                        sp.last_voice.remove(&s);
                        sp.decoders.remove(&s);
                    }
                }
                lock(&r.room).leave(&user);
            }
            EventContext::VoiceTick(tick) => {
                let room = lock(&r.room).clone();
                let now = Instant::now();
                let mut sp = lock(&r.speakers);
                let Speakers {
                    names,
                    last_voice,
                    decoders,
                    pcm,
                    scratch,
                } = &mut *sp;
                for (ssrc, data) in &tick.speaking {
                    let Some(user) = names.get(ssrc) else {
                        continue;
                    };
                    let decoder = match decoders.entry(*ssrc) {
                        std::collections::hash_map::Entry::Occupied(d) => d.into_mut(),
                        std::collections::hash_map::Entry::Vacant(v) => {
                            match opus2::Decoder::new(16_000, opus2::Channels::Mono) {
                                Ok(d) => v.insert(d),
                                Err(e) => {
                                    crate::throttle::peer_warn!(error = %e, "no Opus decoder");
                                    continue;
                                }
                            }
                        }
                    };
                    // No packet in its slot: the decoder conceals the loss.
                    let frame = data.packet.as_ref().and_then(opus_frame).unwrap_or(&[]);
                    pcm.resize(MAX_FRAME_16K, 0);
                    let n = match decoder.decode(frame, pcm, false) {
                        Ok(n) => n,
                        Err(e) => {
                            // A peer's malformed packet: dropped, like a lost one.
                            crate::throttle::peer_warn!(error = %e, "an Opus packet did not decode");
                            continue;
                        }
                    };
                    last_voice.insert(*ssrc, now);
                    scratch.clear();
                    scratch.extend(pcm[..n].iter().map(|s| f32::from(*s) / 32_768.0));
                    let _ = room.push(user, scratch);
                }
                // Silence for speakers who just stopped, so their turn can end.
                last_voice.retain(|ssrc, last| {
                    if tick.speaking.contains_key(ssrc) {
                        return true;
                    }
                    if now.duration_since(*last) > TRAILING_SILENCE {
                        return false;
                    }
                    if let Some(user) = names.get(ssrc) {
                        let _ = room.push(user, &[0.0; 320]);
                    }
                    true
                });
            }
            _ => {}
        }
        None
    }
}

/// Joins again when the voice connection drops without being asked to.
struct Rejoin {
    voices: Weak<Voices>,
    guild: u64,
    leaving: Arc<AtomicBool>,
    /// A rejoin loop runs (a failed attempt disconnects again: one loop, not one per event).
    rejoining: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl EventHandler for Rejoin {
    async fn act(&self, ctx: &EventContext<'_>) -> Option<Event> {
        let EventContext::DriverDisconnect(d) = ctx else {
            return None;
        };
        if self.leaving.load(Ordering::Acquire)
            || matches!(
                d.reason,
                Some(songbird::events::context_data::DisconnectReason::Requested)
            )
        {
            return None;
        }
        if self.rejoining.swap(true, Ordering::AcqRel) {
            return None;
        }
        crate::throttle::peer_warn!(guild = self.guild, reason = ?d.reason, "voice connection lost; rejoining");
        let voices = self.voices.clone();
        let guild = self.guild;
        let leaving = self.leaving.clone();
        let rejoining = self.rejoining.clone();
        // Until it works, however long the voice server is gone: the bot stays in the
        // channel the guild asked for unless it is told to leave (or the channel empties).
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(500);
            loop {
                tokio::time::sleep(backoff).await;
                let Some(v) = voices.upgrade() else { break };
                if leaving.load(Ordering::Acquire) {
                    break;
                }
                match v.rejoin(guild).await {
                    Ok(()) => {
                        tracing::info!(guild, "voice rejoined");
                        break;
                    }
                    Err(e) => crate::throttle::peer_warn!(guild, error = %e, "rejoin failed"),
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            rejoining.store(false, Ordering::Release);
        });
        None
    }
}

/// Packets songbird holds per speaker before decoding (its default is 5): each one is 20 ms
/// added to every turn's latency, since the end of speech is heard that much later. Three
/// still absorb 40 ms of network jitter plus reordering (a later packet fills its slot;
/// one later than that is concealed by the Opus decoder).
const PLAYOUT_PACKETS: std::num::NonZeroU8 = match std::num::NonZeroU8::new(3) {
    Some(n) => n,
    None => std::num::NonZeroU8::MIN,
};

/// Starts a track whenever the room has something to say; stops it at once when the room
/// says a human talked over it (the room's own barge-in signal: the mixer may have read ahead
/// of real time, so stopping the room's playout alone would leave what it buffered to be
/// heard). A new room (the guild chose another agent) brings its own signal.
async fn playback(call: Arc<tokio::sync::Mutex<Call>>, room: Arc<Mutex<Arc<Room>>>) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut active: Option<(Arc<AtomicBool>, Instant, songbird::tracks::TrackHandle)> = None;
    let mut current = lock(&room).clone();
    let mut barge_ins: watch::Receiver<u64> = current.barge_ins();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = current.audio_ready() => {}
            Ok(()) = barge_ins.changed() => {
                if let Some((_, _, track)) = &active {
                    let _ = track.stop();
                }
                continue;
            }
        }
        let now = lock(&room).clone();
        if !Arc::ptr_eq(&now, &current) {
            barge_ins = now.barge_ins();
            current = now;
        }
        match &active {
            Some((playing, _, _)) if playing.load(Ordering::Acquire) => continue,
            // A track that ended at once could not be played: do not spin on it.
            Some((_, started, _)) if started.elapsed() < Duration::from_millis(200) => {
                tracing::warn!("the reply track failed to start; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            _ => {}
        }
        if !current.is_playing() {
            continue;
        }
        let playing = Arc::new(AtomicBool::new(true));
        let source = RoomSource {
            room: Arc::downgrade(&current),
            pending: Vec::new(),
            offset: 0,
            idle: 0,
            playing: playing.clone(),
            frame: (current.sample_rate() / 50) as usize,
        };
        let input: Input = RawAdapter::new(source, current.sample_rate(), 1).into();
        let track = call.lock().await.play_input(input);
        active = Some((playing, Instant::now(), track));
    }
}

/// The room's playout as a live f32 PCM stream for songbird's mixer, which pulls it at real
/// time. Ends after [`TRACK_IDLE_FRAMES`] of nothing (the next reply starts a new track).
struct RoomSource {
    room: Weak<Room>,
    pending: Vec<u8>,
    offset: usize,
    idle: u32,
    playing: Arc<AtomicBool>,
    frame: usize,
}

impl Read for RoomSource {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.offset >= self.pending.len() {
            let frame = self.room.upgrade().and_then(|r| r.next_frame());
            let samples = match frame {
                Some(f) => {
                    self.idle = 0;
                    f
                }
                None => {
                    self.idle += 1;
                    if self.idle > TRACK_IDLE_FRAMES || self.room.strong_count() == 0 {
                        self.playing.store(false, Ordering::Release);
                        return Ok(0);
                    }
                    vec![0.0; self.frame]
                }
            };
            self.pending.clear();
            self.pending
                .extend(samples.iter().flat_map(|s| s.to_le_bytes()));
            self.offset = 0;
        }
        let n = buf.len().min(self.pending.len() - self.offset);
        buf[..n].copy_from_slice(&self.pending[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

impl Seek for RoomSource {
    fn seek(&mut self, _: SeekFrom) -> std::io::Result<u64> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

impl songbird::input::core::io::MediaSource for RoomSource {
    fn is_seekable(&self) -> bool {
        false
    }

    fn byte_len(&self) -> Option<u64> {
        None
    }
}

impl Drop for RoomSource {
    fn drop(&mut self) {
        self.playing.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::strip_dave_trailer;

    #[test]
    fn what_is_left_of_a_dave_frame_is_cut_from_its_opus() {
        let opus = [0x78, 0x01, 0x02, 0x03, 0x04];
        // Tag (8), a one-byte nonce, the size (12 in all), the marker.
        let mut frame = opus.to_vec();
        frame.extend([0xAA; 8]);
        frame.extend([0x05, 12, 0xFA, 0xFA]);
        assert_eq!(strip_dave_trailer(&frame), opus);
        // Plain Opus, and frames whose "size" cannot be a DAVE trailer, stay whole.
        assert_eq!(strip_dave_trailer(&opus), opus);
        for bad in [
            vec![0x78, 0x01, 10, 0xFA, 0xFA],
            vec![0x78, 0x01, 200, 0xFA, 0xFA],
            vec![0xFA, 0xFA],
            vec![],
        ] {
            assert_eq!(strip_dave_trailer(&bad), bad.as_slice());
        }
    }
}
