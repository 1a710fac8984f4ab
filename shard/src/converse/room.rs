//! A voice channel's conversation at run time: its speakers, the turn queue, the reply being
//! spoken and barge-in.
//!
//! ```text
//! push(speaker, 20 ms) ─► speaker task (one per speaker; frames in a bounded queue)
//!                            Listener on the blocking pool; Smart Turn + Whisper borrowed
//!                            from the pod's EnginePool (bounded wait, else "overloaded")
//!                            │ speech started ─────────────────► barge-in (if the bot talks)
//!                            │ utterance ─► turn queue (bounded; full → "queue_full")
//!                                              ▼
//!                       reply worker (one per room): stale? → relevance → gateway → TTS
//!                                              ▼
//!                            Playout ◄── next_frame() every 20 ms (the voice connection)
//! ```
//!
//! A room may host several agents (`Room::start_cast`): a turn goes to the agents it names, in
//! the order named, else to the one whose follow-up window is open, else to the one that spoke
//! last; the others hear the turn and each reply, and all speak through the one playout.
//! A room answers one turn at a time (it has one voice); turns that arrive meanwhile wait in a
//! queue of `max_pending` and go stale after `max_turn_age`. Every turn that is not answered
//! is counted under a bounded reason ([`DropReason`]); every speaker is always in one of
//! [`SpeakerState`]'s states and returns to `Listening` whatever happens to their turn.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{broadcast, mpsc, watch};

use super::engine::{ActiveReply, Conversation, TurnReply};
/// How the room's records name an agent (`jarvis` → `Jarvis`): what its events say.
pub use super::names::display_name;
pub use super::turn::TurnRecord;
use crate::listen::guard::Rejection;
use crate::listen::vad::SileroVad;
use crate::listen::{EnginePool, Listener, ListenerConfig, Models, Utterance};
use crate::lock;
use crate::speak::playout::Playout;

/// Bounds and tuning of a room.
#[derive(Debug, Clone, Copy)]
pub struct RoomConfig {
    /// Each speaker's listening pipeline.
    pub listener: ListenerConfig,
    /// Finished turns that may wait while the bot is busy; more are dropped ("queue_full").
    pub max_pending: usize,
    /// A queued turn older than this is dropped ("stale"): an answer that late is confusing.
    pub max_turn_age: Duration,
    /// 20 ms frames buffered per speaker; beyond, frames are dropped ("audio_overrun").
    pub frame_queue: usize,
    /// Speakers listened to at once; more are ignored ("too_many_speakers").
    pub max_speakers: usize,
    /// Whether a human who starts talking stops the bot (barge-in).
    pub barge_in: bool,
}

impl Default for RoomConfig {
    fn default() -> Self {
        Self {
            listener: ListenerConfig::default(),
            max_pending: 3,
            max_turn_age: Duration::from_secs(8),
            // 3 s: the longest a speaker may wait for an engine (PoolConfig::max_wait).
            frame_queue: 150,
            max_speakers: 16,
            barge_in: true,
        }
    }
}

/// Where a speaker's turn is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpeakerState {
    /// Nothing pending for them.
    Listening,
    /// Their turn is queued or the agent is writing the answer.
    Thinking,
    /// The bot is speaking its answer to them.
    Speaking,
}

/// Why a turn (or audio) was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// The turn queue was full.
    QueueFull,
    /// The turn waited longer than `max_turn_age`.
    Stale,
    /// The speaker's frame queue was full (their pipeline is behind).
    AudioOverrun,
    /// The room already listens to `max_speakers` speakers.
    TooManySpeakers,
    /// The listener dropped the turn (noise, a Whisper phantom, no engine free).
    Listener(Rejection),
}

impl DropReason {
    /// A bounded label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::Stale => "stale",
            Self::AudioOverrun => "audio_overrun",
            Self::TooManySpeakers => "too_many_speakers",
            Self::Listener(r) => r.label(),
        }
    }
}

/// What happens in a room, for observers (a bounded broadcast: a slow observer misses events,
/// the room never waits for it).
#[derive(Debug, Clone)]
pub enum RoomEvent {
    /// A speaker started talking.
    SpeechStarted {
        /// Who.
        speaker: String,
    },
    /// A speaker's turn was heard and queued.
    Heard {
        /// Who.
        speaker: String,
        /// What.
        utterance: Utterance,
    },
    /// A reply run started at the gateway (recorded in the fleet state until its turn ends,
    /// so a pod that replaces this one can speak it).
    ReplyStarted {
        /// The conversation's session key.
        session: String,
        /// The run.
        run: String,
    },
    /// A turn was handled (answered or not).
    Turn(Box<TurnRecord>),
    /// The bot stops talking because a human started (sent as the playout stops, before the
    /// run is aborted at the gateway).
    BargeIn {
        /// Who interrupted.
        speaker: String,
        /// The agent that was speaking (its display name).
        agent: String,
    },
    /// Something was dropped.
    Dropped {
        /// Whose.
        speaker: String,
        /// Why.
        reason: DropReason,
    },
}

/// Counters of a room (monotonic).
#[derive(Debug, Default)]
pub struct RoomStats {
    /// Turns heard.
    pub turns: AtomicU64,
    /// Turns answered.
    pub answered: AtomicU64,
    /// Turns the bot decided not to answer.
    pub ignored: AtomicU64,
    /// Replies cut off by a human.
    pub barge_ins: AtomicU64,
    /// Replies that failed (gateway or TTS).
    pub reply_errors: AtomicU64,
    dropped: Mutex<BTreeMap<&'static str, u64>>,
}

impl RoomStats {
    /// Drops so far, by reason label.
    pub fn dropped(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.dropped).clone()
    }

    fn drop_one(&self, reason: DropReason) {
        *lock(&self.dropped).entry(reason.label()).or_default() += 1;
    }
}

/// Makes a VAD for each new speaker: one model session for the pod, a state per speaker.
#[derive(Clone)]
pub struct VadSource {
    env: ort::environment::Environment,
    path: std::path::PathBuf,
    shared: Arc<Mutex<Option<SileroVad>>>,
}

impl VadSource {
    /// VADs from the same files as `models` (the session loads with the first speaker).
    pub fn new(models: &Models) -> Self {
        Self {
            env: models.env.clone(),
            path: models.paths.silero_vad.clone(),
            shared: Arc::new(Mutex::new(None)),
        }
    }

    /// A VAD for one more speaker (the pod's one session, a state of its own).
    pub fn make(&self) -> crate::Result<SileroVad> {
        let mut shared = lock(&self.shared);
        if let Some(vad) = shared.as_ref() {
            return Ok(vad.share());
        }
        let vad = SileroVad::new(&self.env, &self.path)?;
        let mine = vad.share();
        *shared = Some(vad);
        Ok(mine)
    }
}

struct QueuedTurn {
    speaker: String,
    utterance: Utterance,
    queued: Instant,
    /// Not a heard turn: a run of a previous pod to speak (its id).
    recover: Option<String>,
}

struct Inner {
    config: RoomConfig,
    started: Instant,
    states: Mutex<HashMap<String, SpeakerState>>,
    /// Whether reply audio is being produced or played (barge-in is armed).
    speaking: std::sync::atomic::AtomicBool,
    barge: watch::Sender<(u64, String)>,
    /// The room's output side: bumped each time the playout is cut (a barge-in), so the voice
    /// connection drops what its mixer buffered.
    cut: watch::Sender<u64>,
    turns: mpsc::Sender<QueuedTurn>,
    events: broadcast::Sender<RoomEvent>,
    playout: Mutex<Playout>,
    /// The playout's sample rate (the first agent's voice); other voices are resampled to it.
    sample_rate: u32,
    /// Signalled when reply audio is queued in the playout: the voice connection starts its
    /// track at once instead of at its next poll.
    audio_ready: tokio::sync::Notify,
    humans: AtomicUsize,
    /// The names of the room's agents, for Whisper (see [`crate::listen::Listener::with_names`]).
    hint: Arc<str>,
    /// A sensitivity to switch to before the next turn (a slash command).
    sensitivity: Mutex<Option<crate::converse::relevance::Sensitivity>>,
    stats: RoomStats,
}

impl Inner {
    fn clock_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn set_state(&self, speaker: &str, state: SpeakerState) {
        if let Some(s) = lock(&self.states).get_mut(speaker) {
            *s = state;
        }
    }

    fn emit(&self, event: RoomEvent) {
        let _ = self.events.send(event);
    }

    fn dropped(&self, speaker: &str, reason: DropReason) {
        tracing::debug!(speaker, reason = reason.label(), "dropped");
        self.stats.drop_one(reason);
        self.emit(RoomEvent::Dropped {
            speaker: speaker.to_string(),
            reason,
        });
    }

    fn speech_started(&self, speaker: &str) {
        self.emit(RoomEvent::SpeechStarted {
            speaker: speaker.to_string(),
        });
        if self.config.barge_in && self.speaking.load(Ordering::Acquire) {
            self.barge.send_modify(|(n, who)| {
                *n += 1;
                *who = speaker.to_string();
            });
        }
    }

    /// Stops the reply's audio because `by` talked over it: the playout, then the voice
    /// connection (through [`Room::barge_ins`]), then the observers. Returns what was heard.
    fn cut_playout(&self, by: String, agent: &str) -> String {
        let spoken = lock(&self.playout).stop();
        self.cut.send_modify(|n| *n += 1);
        self.emit(RoomEvent::BargeIn {
            speaker: by,
            agent: agent.to_string(),
        });
        spoken.text
    }

    fn heard(&self, speaker: &str, utterance: Utterance) {
        self.stats.turns.fetch_add(1, Ordering::Relaxed);
        self.emit(RoomEvent::Heard {
            speaker: speaker.to_string(),
            utterance: utterance.clone(),
        });
        let turn = QueuedTurn {
            speaker: speaker.to_string(),
            utterance,
            queued: Instant::now(),
            recover: None,
        };
        self.set_state(speaker, SpeakerState::Thinking);
        if self.turns.try_send(turn).is_err() {
            self.dropped(speaker, DropReason::QueueFull);
            self.set_state(speaker, SpeakerState::Listening);
        }
    }
}

/// A running room. Dropping it stops its tasks.
pub struct Room {
    inner: Arc<Inner>,
    pool: Arc<EnginePool<Models>>,
    vads: VadSource,
    speakers: Mutex<HashMap<String, mpsc::Sender<Vec<f32>>>>,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    sample_rate: u32,
    session: String,
}

impl Room {
    /// Starts a room for `conversation` (its agent, gateway and voice), its speakers' heavy
    /// work on `pool`. Must be called within a Tokio runtime.
    pub fn start(
        config: RoomConfig,
        conversation: Conversation,
        pool: Arc<EnginePool<Models>>,
        vads: VadSource,
    ) -> Self {
        Self::start_cast(config, vec![conversation], pool, vads)
    }

    /// Starts a room where several agents listen (`cast`, the first the room's own: its voice
    /// sets the playout's rate, its session is [`Room::session_key`]). A turn goes to the
    /// agents it names, in the order it names them; else to the agent whose follow-up window
    /// for that speaker is open; else to the agent that spoke last (the first, at first),
    /// which decides as a lone agent would. The others hear the turn and every reply.
    ///
    /// # Panics
    /// When `cast` is empty.
    pub fn start_cast(
        config: RoomConfig,
        cast: Vec<Conversation>,
        pool: Arc<EnginePool<Models>>,
        vads: VadSource,
    ) -> Self {
        assert!(!cast.is_empty(), "a room needs an agent");
        let conversation = &cast[0];
        let sample_rate = conversation.sample_rate().unwrap_or(48_000);
        let session = conversation.session_key().to_string();
        let (turns_tx, turns_rx) = mpsc::channel(config.max_pending.max(1));
        let (barge, barge_rx) = watch::channel((0, String::new()));
        let inner = Arc::new(Inner {
            config,
            started: Instant::now(),
            states: Mutex::new(HashMap::new()),
            speaking: false.into(),
            barge,
            cut: watch::channel(0).0,
            turns: turns_tx,
            events: broadcast::channel(256).0,
            playout: Mutex::new(Playout::new((sample_rate / 50) as usize)),
            sample_rate,
            audio_ready: tokio::sync::Notify::new(),
            humans: AtomicUsize::new(conversation.humans_present),
            hint: crate::listen::names_hint(
                &cast
                    .iter()
                    .flat_map(Conversation::names)
                    .collect::<Vec<_>>(),
            ),
            sensitivity: Mutex::new(None),
            stats: RoomStats::default(),
        });
        let worker = tokio::spawn(reply_worker(inner.clone(), cast, turns_rx, barge_rx));
        Self {
            inner,
            pool,
            vads,
            speakers: Mutex::new(HashMap::new()),
            tasks: Mutex::new(vec![worker.abort_handle()]),
            sample_rate,
            session,
        }
    }

    /// Sample rate of [`Room::next_frame`]'s audio (the voice's).
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// The OpenClaw session key of the room's conversation.
    pub fn session_key(&self) -> &str {
        &self.session
    }

    /// Changes each time the bot's reply is cut off by a human: the voice connection stops
    /// what it has buffered at once (the room's playout is already stopped).
    pub fn barge_ins(&self) -> watch::Receiver<u64> {
        self.inner.cut.subscribe()
    }

    /// Observes the room's events.
    pub fn subscribe(&self) -> broadcast::Receiver<RoomEvent> {
        self.inner.events.subscribe()
    }

    /// The counters.
    pub fn stats(&self) -> &RoomStats {
        &self.inner.stats
    }

    /// Where `speaker`'s turn is (`None` for someone never heard).
    pub fn speaker_state(&self, speaker: &str) -> Option<SpeakerState> {
        lock(&self.inner.states).get(speaker).copied()
    }

    /// Humans in the channel (one: solo mode).
    pub fn set_humans(&self, humans: usize) {
        self.inner.humans.store(humans, Ordering::Relaxed);
    }

    /// Humans in the channel, as last told.
    pub fn humans(&self) -> usize {
        self.inner.humans.load(Ordering::Relaxed)
    }

    /// Speaks a reply that a previous pod was speaking in this conversation when it stopped
    /// (`run` from the fleet state): queued like a turn; the reply worker waits for the run to
    /// finish at the gateway and speaks it. The turn it yields has the reason `recovered`.
    pub fn recover(&self, run: String) -> bool {
        let utterance = Utterance {
            start_ms: 0,
            end_ms: 0,
            committed_ms: 0,
            ready_ms: 0,
            transcript: String::new(),
            turn_complete: 1.0,
            commit: crate::listen::CommitReason::EndOfInput,
            stages_ms: crate::listen::StagesMs::default(),
        };
        let turn = QueuedTurn {
            speaker: RECOVERED_SPEAKER.to_string(),
            utterance,
            queued: Instant::now(),
            recover: Some(run),
        };
        self.inner.turns.try_send(turn).is_ok()
    }

    /// Changes how readily the agent answers, from the next turn on.
    pub fn set_sensitivity(&self, sensitivity: crate::converse::relevance::Sensitivity) {
        *lock(&self.inner.sensitivity) = Some(sensitivity);
    }

    /// Speakers being listened to, and turns waiting for an answer.
    pub fn load(&self) -> (usize, usize) {
        let queued = self.inner.turns.max_capacity() - self.inner.turns.capacity();
        (lock(&self.speakers).len(), queued)
    }

    /// Resolves when reply audio has been queued (at once if some was queued since the last
    /// wait): the voice connection's cue to start playing without polling.
    pub async fn audio_ready(&self) {
        self.inner.audio_ready.notified().await;
    }

    /// Whether reply audio is waiting in the playout (the voice connection should be sending).
    pub fn is_playing(&self) -> bool {
        lock(&self.inner.playout).is_playing()
    }

    /// The next 20 ms of the bot's voice, `None` when it is silent. Call every 20 ms.
    pub fn next_frame(&self) -> Option<Vec<f32>> {
        lock(&self.inner.playout).next_frame()
    }

    /// Real-time audio from `speaker` (16 kHz mono, any length; 20 ms frames from Discord).
    /// Never waits: when the speaker's pipeline is behind, the frame is dropped and counted.
    pub fn push(&self, speaker: &str, pcm: &[f32]) -> Result<(), DropReason> {
        let tx = self.sender(speaker)?;
        match tx.try_send(pcm.to_vec()) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.inner.dropped(speaker, DropReason::AudioOverrun);
                Err(DropReason::AudioOverrun)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                // The speaker's task ended (a model error, logged): start afresh next frame.
                lock(&self.speakers).remove(speaker);
                Ok(())
            }
        }
    }

    /// Audio from a file or a test: waits for room in the speaker's queue instead of dropping.
    pub async fn feed(&self, speaker: &str, pcm: &[f32]) -> Result<(), DropReason> {
        let tx = self.sender(speaker)?;
        if tx.send(pcm.to_vec()).await.is_err() {
            lock(&self.speakers).remove(speaker);
        }
        Ok(())
    }

    /// The speaker left: their pending speech is finished and their state forgotten.
    pub fn leave(&self, speaker: &str) {
        lock(&self.speakers).remove(speaker);
    }

    fn sender(&self, speaker: &str) -> Result<mpsc::Sender<Vec<f32>>, DropReason> {
        let mut speakers = lock(&self.speakers);
        if let Some(tx) = speakers.get(speaker) {
            return Ok(tx.clone());
        }
        if speakers.len() >= self.inner.config.max_speakers {
            drop(speakers);
            self.inner.dropped(speaker, DropReason::TooManySpeakers);
            return Err(DropReason::TooManySpeakers);
        }
        let vad = self.vads.make().map_err(|e| {
            tracing::error!(error = %e, "cannot make a VAD for a new speaker");
            DropReason::Listener(Rejection::Overloaded)
        })?;
        let (tx, rx) = mpsc::channel(self.inner.config.frame_queue.max(1));
        lock(&self.inner.states).insert(speaker.to_string(), SpeakerState::Listening);
        let task = tokio::spawn(speaker_task(
            self.inner.clone(),
            self.pool.clone(),
            speaker.to_string(),
            Listener::new(self.inner.config.listener, vad).with_hint(self.inner.hint.clone()),
            rx,
        ));
        lock(&self.tasks).push(task.abort_handle());
        speakers.insert(speaker.to_string(), tx.clone());
        Ok(tx)
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }
}

/// One speaker: frames → listener (on the blocking pool) → events and turns.
async fn speaker_task(
    inner: Arc<Inner>,
    pool: Arc<EnginePool<Models>>,
    speaker: String,
    mut listener: Listener,
    mut frames: mpsc::Receiver<Vec<f32>>,
) {
    loop {
        let (batch, last) = match frames.recv().await {
            Some(mut batch) => {
                // Whatever else is queued goes in the same call.
                while let Ok(more) = frames.try_recv() {
                    batch.extend(more);
                }
                (batch, false)
            }
            None => (Vec::new(), true),
        };
        let p = pool.clone();
        let work = tokio::task::spawn_blocking(move || {
            let mut engines = p.borrower();
            let result = if last {
                listener.finish(&mut engines)
            } else {
                listener.push(&mut engines, &batch)
            };
            let rejected = listener.take_rejected();
            (listener, result, rejected)
        })
        .await;
        let (l, result, rejected) = match work {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(speaker, error = %e, "listener task failed");
                break;
            }
        };
        listener = l;
        for r in rejected {
            inner.dropped(&speaker, DropReason::Listener(r));
        }
        let utterances = match result {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(speaker, error = %e, "listening failed; the speaker starts afresh");
                break;
            }
        };
        if listener.take_speech_started() {
            inner.speech_started(&speaker);
        }
        for u in utterances {
            inner.heard(&speaker, u);
        }
        if last {
            break;
        }
    }
    lock(&inner.states).remove(&speaker);
}

/// The speaker of a recovered reply's turn record.
pub const RECOVERED_SPEAKER: &str = "(recovered)";

/// Which agents of `cast` answer `speaker`'s `text` (indexes, in speaking order): the named
/// ones in the order they are named; else the one whose follow-up window is open (the latest);
/// else `last` (the agent that spoke last), which then decides as a lone agent would.
fn addressees(
    cast: &[Conversation],
    speaker: &str,
    text: &str,
    at_ms: u64,
    last: usize,
) -> Vec<usize> {
    if cast.len() == 1 {
        return vec![0];
    }
    let mut named: Vec<(usize, usize)> = cast
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.mention(text).map(|at| (at, i)))
        .collect();
    if !named.is_empty() {
        named.sort_unstable();
        return named.into_iter().map(|(_, i)| i).collect();
    }
    let follow_up = cast
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.follow_up_since(speaker, at_ms).map(|t| (t, i)))
        .max();
    vec![follow_up.map_or(last.min(cast.len() - 1), |(_, i)| i)]
}

/// Answers the room's turns one at a time.
async fn reply_worker(
    inner: Arc<Inner>,
    mut cast: Vec<Conversation>,
    mut turns: mpsc::Receiver<QueuedTurn>,
    mut barge: watch::Receiver<(u64, String)>,
) {
    let mut last_spoke = 0;
    while let Some(turn) = turns.recv().await {
        let queued_ms = turn.queued.elapsed().as_secs_f64() * 1e3;
        if turn.queued.elapsed() > inner.config.max_turn_age {
            inner.dropped(&turn.speaker, DropReason::Stale);
            inner.set_state(&turn.speaker, SpeakerState::Listening);
            continue;
        }
        let humans = inner.humans.load(Ordering::Relaxed);
        let sensitivity = lock(&inner.sensitivity).take();
        for c in &mut cast {
            c.humans_present = humans;
            if let Some(s) = sensitivity {
                c.set_sensitivity(s);
            }
        }
        let said_at = inner.clock_ms();
        let text = turn.utterance.transcript.clone();
        let targets = match turn.recover {
            Some(_) => vec![0],
            None => addressees(&cast, &turn.speaker, &text, said_at, last_spoke),
        };
        if turn.recover.is_none() {
            for (i, c) in cast.iter_mut().enumerate() {
                if !targets.contains(&i) {
                    c.hear(&turn.speaker, &text, said_at);
                }
            }
        }
        for (n, &i) in targets.iter().enumerate() {
            let (reply, message) = match &turn.recover {
                Some(_) => (
                    TurnReply {
                        addressed: true,
                        reason: super::relevance::Reason::Recovered,
                        reply: None,
                        error: None,
                        truncated: false,
                        stages_ms: super::engine::ReplyStages::default(),
                        first_audio_ms: None,
                        audio: Vec::new(),
                        sample_rate: 0,
                    },
                    None,
                ),
                // A second named agent decides after the first has answered, so that answer
                // is in its context.
                None => cast[i].decide(&turn.speaker, &text, said_at).await,
            };
            let started = Instant::now();
            let addressed = reply.addressed;
            let utterance = turn.utterance.clone();
            let mut record = TurnRecord::new(
                &turn.speaker,
                cast[i].agent(),
                utterance,
                reply,
                if n == 0 { queued_ms } else { 0.0 },
            );
            let active = match &turn.recover {
                Some(run) => cast[i].start_recovered(run.clone()),
                None => message.and_then(|m| cast[i].start_reply(m)),
            };
            if let Some(a) = &active {
                inner.emit(RoomEvent::ReplyStarted {
                    session: a.session_key().to_string(),
                    run: a.run_id().to_string(),
                });
            }
            match active {
                None => {
                    let counter = if addressed {
                        &inner.stats.answered
                    } else {
                        &inner.stats.ignored
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Some(active) => {
                    inner.stats.answered.fetch_add(1, Ordering::Relaxed);
                    barge.borrow_and_update();
                    let played = play(&inner, &turn.speaker, active, &mut barge, &mut record).await;
                    if played.error.is_some() {
                        inner.stats.reply_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    record.played(started, played);
                    let ended = inner.clock_ms();
                    cast[i].reply_heard(&turn.speaker, &record.heard, said_at, ended);
                    if !record.heard.is_empty() {
                        last_spoke = i;
                        let agent = cast[i].agent().to_string();
                        for (j, c) in cast.iter_mut().enumerate() {
                            if j != i {
                                c.other_agent_said(&agent, &record.heard, ended);
                            }
                        }
                    }
                }
            }
            // A human talked over the reply: the next named agent does not start after it.
            let last = record.barged_in || n + 1 == targets.len();
            inner.speaking.store(false, Ordering::Release);
            if last {
                inner.set_state(&turn.speaker, SpeakerState::Listening);
            }
            inner.emit(RoomEvent::Turn(Box::new(record)));
            if last {
                break;
            }
        }
    }
}

/// Plays a reply into the playout as its sentences come, until it is over or a human cuts in.
async fn play(
    inner: &Inner,
    speaker: &str,
    mut active: ActiveReply,
    barge: &mut watch::Receiver<(u64, String)>,
    record: &mut TurnRecord,
) -> super::engine::ReplyOutcome {
    let has_voice = active.sample_rate > 0;
    let mut written = String::new();
    // Sentences as they are spoken; barge-in is armed from the first audio.
    let cut = loop {
        let armed = inner.speaking.load(Ordering::Acquire);
        tokio::select! {
            chunk = active.next_chunk() => match chunk {
                Some(chunk) => {
                    if !chunk.audio.is_empty() {
                        record.first_audio_at.get_or_insert_with(Instant::now);
                        let audio = crate::audio::linear(chunk.audio, active.sample_rate, inner.sample_rate);
                        lock(&inner.playout).push(&chunk.text, &audio);
                        inner.audio_ready.notify_one();
                        inner.speaking.store(true, Ordering::Release);
                        inner.set_state(speaker, SpeakerState::Speaking);
                    }
                    if !written.is_empty() {
                        written.push(' ');
                    }
                    written.push_str(&chunk.text);
                }
                None => break false,
            },
            Ok(()) = barge.changed(), if armed => break true,
        }
    };
    if cut {
        // Tell the voice connection now; aborting the run at the gateway takes a round trip.
        let spoken = inner.cut_playout(barge.borrow().1.clone(), &record.agent);
        let outcome = active.barge_in().await;
        return barged(inner, record, spoken, outcome, barge);
    }
    let outcome = active.finish().await;
    if !has_voice {
        record.heard = written;
        return outcome;
    }
    // The rest of the audio plays out; a human may still cut in.
    inner.speaking.store(true, Ordering::Release);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        if !lock(&inner.playout).is_playing() {
            record.heard = lock(&inner.playout).take_spoken();
            return outcome;
        }
        tokio::select! {
            _ = tick.tick() => {}
            Ok(()) = barge.changed() => {
                let spoken = inner.cut_playout(barge.borrow().1.clone(), &record.agent);
                return barged(inner, record, spoken, outcome, barge);
            }
        }
    }
}

fn barged(
    inner: &Inner,
    record: &mut TurnRecord,
    heard: String,
    outcome: super::engine::ReplyOutcome,
    barge: &watch::Receiver<(u64, String)>,
) -> super::engine::ReplyOutcome {
    let who = barge.borrow().1.clone();
    tracing::debug!(by = who, heard = heard.len(), "barge-in");
    inner.stats.barge_ins.fetch_add(1, Ordering::Relaxed);
    record.cut_off(heard, outcome.gateway_aborted);
    inner.speaking.store(false, Ordering::Release);
    outcome
}
