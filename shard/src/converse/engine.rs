//! One conversation (a voice channel and its agent): relevance, the agent's streamed reply,
//! sentence splitting and speech synthesis while the model is still writing.
//!
//! ```text
//! respond(speaker, text) ─► transcript ─► relevance ─► chat.send ─► deltas ─► SentenceSplitter
//!                                                                         │ sentences (mpsc)
//!                                                                         ▼
//!                                           TTS worker (blocking thread per sentence) ─► audio
//! ```

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::mpsc;

use super::context::Transcript;
use super::relevance::{Classifier, Reason, Relevance, Sensitivity, Turn};
use crate::lock;
use crate::openclaw::{ChatOptions, GatewayClient, ReplyEvent, RunState, new_run_id};
use crate::speak::sentences::SentenceSplitter;
use crate::speak::tts::Voice;

/// Time spent per stage of a reply, ms.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ReplyStages {
    /// The relevance decision (a classifier call included).
    pub relevance: f64,
    /// `chat.send` → first reply text (the gateway and the model).
    pub gateway_first_token: Option<f64>,
    /// `chat.send` → end of the reply.
    pub gateway_total: Option<f64>,
    /// First complete sentence → its first audio (TTS only).
    pub tts_first_audio: Option<f64>,
}

/// What happened to one turn.
#[derive(Clone, Serialize)]
pub struct TurnReply {
    /// Whether the bot answered.
    pub addressed: bool,
    /// Why (or why not).
    pub reason: Reason,
    /// The reply text, when there was one.
    pub reply: Option<String>,
    /// What went wrong, if something did.
    pub error: Option<String>,
    /// The reply ran past [`MAX_SPOKEN_CHARS`]: `reply` is what was said, the rest dropped.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Time per stage.
    pub stages_ms: ReplyStages,
    /// From the start of `respond` to the first reply audio, ms.
    pub first_audio_ms: Option<f64>,
    /// The reply's audio (mono, at `sample_rate`).
    #[serde(skip)]
    pub audio: Vec<f32>,
    /// Sample rate of `audio`.
    #[serde(skip)]
    pub sample_rate: u32,
}

impl std::fmt::Debug for TurnReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnReply")
            .field("addressed", &self.addressed)
            .field("reason", &self.reason)
            .field("reply", &self.reply)
            .field("error", &self.error)
            .field("truncated", &self.truncated)
            .field("stages_ms", &self.stages_ms)
            .field("first_audio_ms", &self.first_audio_ms)
            .field("audio_samples", &self.audio.len())
            .field("sample_rate", &self.sample_rate)
            .finish()
    }
}

/// A conversation with one agent.
pub struct Conversation {
    agent: String,
    session_key: String,
    relevance: Relevance,
    sensitivity: Sensitivity,
    client: Option<GatewayClient>,
    classifier: Option<Arc<dyn Classifier>>,
    voice: Option<Voice>,
    persona: Option<String>,
    transcript: Transcript,
    last_answered: Option<(String, u64)>,
    /// Humans in the channel (solo mode when 1).
    pub humans_present: usize,
}

impl Conversation {
    /// A conversation of `agent` (display name) in session `session_key`.
    pub fn new(
        agent: impl Into<String>,
        session_key: impl Into<String>,
        relevance: Relevance,
        sensitivity: Sensitivity,
    ) -> Self {
        Self {
            agent: agent.into(),
            session_key: session_key.into(),
            relevance,
            sensitivity,
            client: None,
            classifier: None,
            voice: None,
            persona: None,
            transcript: Transcript::default(),
            last_answered: None,
            humans_present: 2,
        }
    }

    /// Answers through this gateway client (without one, turns stop after relevance).
    pub fn with_gateway(
        mut self,
        client: GatewayClient,
        classifier: Option<Arc<dyn Classifier>>,
    ) -> Self {
        self.client = Some(client);
        self.classifier = classifier;
        self
    }

    /// Speaks replies with this voice.
    pub fn with_voice(mut self, voice: Voice) -> Self {
        self.voice = Some(voice);
        self
    }

    /// Sends this persona (who the agent is, from the VoiceBot's `agents[].persona`) with each
    /// of its turns.
    pub fn with_persona(mut self, persona: Option<String>) -> Self {
        self.persona = persona.filter(|p| !p.trim().is_empty());
        self
    }

    /// The message for the agent: the persona (if any), then the channel's context.
    fn message(&self, context: String) -> String {
        match &self.persona {
            None => context,
            Some(p) if context.contains("\n[Now]\n") => format!("[Persona] {p}\n{context}"),
            Some(p) => format!("[Persona] {p}\n[Now]\n{context}"),
        }
    }

    /// The agent's display name.
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// The gateway session this conversation speaks in (`agent:<id>:discord:<guild>:<channel>`).
    pub fn session_key(&self) -> &str {
        &self.session_key
    }

    /// Sample rate of the voice's audio (`None` without a voice).
    pub fn sample_rate(&self) -> Option<u32> {
        self.voice.as_ref().map(Voice::sample_rate)
    }

    /// Changes the sensitivity (a slash command).
    pub fn set_sensitivity(&mut self, sensitivity: Sensitivity) {
        self.sensitivity = sensitivity;
    }

    /// The recent transcript (what the agent will hear with the next turn).
    pub fn transcript(&self) -> &Transcript {
        &self.transcript
    }

    /// Decides whether to answer `speaker`'s turn, said at `at_ms` (conversation clock); when
    /// it does, returns the message for the agent too.
    pub async fn decide(
        &mut self,
        speaker: &str,
        text: &str,
        at_ms: u64,
    ) -> (TurnReply, Option<String>) {
        let started = Instant::now();
        self.transcript.push(at_ms, speaker, text);
        let context = self.transcript.prompt_for(speaker, text);
        let last = self.last_answered.as_ref().map(|(s, t)| (s.as_str(), *t));
        let turn = Turn {
            speaker,
            text,
            at_ms,
            humans_present: self.humans_present,
            last_answered: last,
            context: &context,
        };
        let decision = self
            .relevance
            .decide(&turn, self.sensitivity, self.classifier.as_deref())
            .await;
        let reply = TurnReply {
            addressed: decision.addressed,
            reason: decision.reason,
            reply: None,
            error: None,
            truncated: false,
            stages_ms: ReplyStages {
                relevance: started.elapsed().as_secs_f64() * 1e3,
                ..ReplyStages::default()
            },
            first_audio_ms: None,
            audio: Vec::new(),
            sample_rate: 0,
        };
        let message = (reply.addressed && self.client.is_some()).then(|| self.message(context));
        (reply, message)
    }

    /// Starts the agent's reply to `message`: written by the gateway, split into sentences and
    /// spoken, sentence by sentence, into the returned [`ActiveReply`].
    pub fn start_reply(&self, message: String) -> Option<ActiveReply> {
        self.reply_from(Source::Chat(message), new_run_id())
    }

    /// Speaks again a reply of this conversation that a previous pod was speaking when it
    /// stopped: waits for the run to finish at the gateway (`chat.history`), then speaks it.
    pub fn start_recovered(&self, run_id: String) -> Option<ActiveReply> {
        self.reply_from(Source::Recover, run_id)
    }

    fn reply_from(&self, source: Source, run_id: String) -> Option<ActiveReply> {
        let client = self.client.clone()?;
        let state = Arc::new(std::sync::Mutex::new(ReplyState {
            run_id: Some(run_id.clone()),
            ..ReplyState::default()
        }));
        let (chunk_tx, chunk_rx) = mpsc::channel(8);
        let task = tokio::spawn(run_reply(
            client.clone(),
            self.session_key.clone(),
            source,
            run_id.clone(),
            self.voice.clone(),
            state.clone(),
            chunk_tx,
        ));
        Some(ActiveReply {
            client,
            run_id,
            session_key: self.session_key.clone(),
            sample_rate: self.voice.as_ref().map_or(0, Voice::sample_rate),
            state,
            chunks: chunk_rx,
            task,
        })
    }

    /// The names the agent answers to (its own, then its aliases).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.relevance.names()
    }

    /// Where the agent is named in `text` (`None`: not named); see [`Relevance::mention`].
    pub fn mention(&self, text: &str) -> Option<usize> {
        self.relevance.mention(text)
    }

    /// When this agent last answered `speaker`, if a turn of theirs at `at_ms` falls in its
    /// follow-up window.
    pub fn follow_up_since(&self, speaker: &str, at_ms: u64) -> Option<u64> {
        let (who, ended) = self.last_answered.as_ref()?;
        (who == speaker && at_ms.saturating_sub(*ended) <= self.relevance.follow_up_ms())
            .then_some(*ended)
    }

    /// Records a turn this agent was not asked to answer (another agent of the room was): it
    /// still hears what was said.
    pub fn hear(&mut self, speaker: &str, text: &str, at_ms: u64) {
        self.transcript.push(at_ms, speaker, text);
    }

    /// Records what another agent of the room said (what the listeners heard of it): this
    /// agent knows the answer, and its own follow-up window closes — the conversation moved on
    /// to the other agent.
    pub fn other_agent_said(&mut self, agent: &str, heard: &str, at_ms: u64) {
        if !heard.is_empty() {
            self.transcript.push(at_ms, agent, heard);
            self.last_answered = None;
        }
    }

    /// Records what the listeners actually heard of a reply to `speaker` (all of it, or what
    /// was played before a barge-in); opens the follow-up window from `ended_at_ms`.
    pub fn reply_heard(&mut self, speaker: &str, heard: &str, said_at_ms: u64, ended_at_ms: u64) {
        if !heard.is_empty() {
            self.transcript.push(said_at_ms, &self.agent, heard);
            self.last_answered = Some((speaker.to_string(), ended_at_ms));
        }
    }

    /// Handles one finished turn end to end (no playback: the whole reply is collected).
    pub async fn respond(&mut self, speaker: &str, text: &str, at_ms: u64) -> TurnReply {
        let started = Instant::now();
        let (mut out, message) = self.decide(speaker, text, at_ms).await;
        let Some(mut active) = message.and_then(|m| self.start_reply(m)) else {
            return out;
        };
        let sample_rate = active.sample_rate;
        let mut first_audio = None;
        while let Some(chunk) = active.next_chunk().await {
            if first_audio.is_none() && !chunk.audio.is_empty() {
                first_audio = Some(started.elapsed().as_secs_f64() * 1e3);
            }
            out.audio.extend(chunk.audio);
        }
        let outcome = active.finish().await;
        out.sample_rate = sample_rate;
        out.first_audio_ms = first_audio;
        out.error = outcome.error;
        out.truncated = outcome.truncated;
        let relevance = out.stages_ms.relevance;
        out.stages_ms = ReplyStages {
            relevance,
            ..outcome.stages
        };
        if !outcome.text.is_empty() {
            let audio_ms = if sample_rate > 0 {
                out.audio.len() as u64 * 1000 / u64::from(sample_rate)
            } else {
                0
            };
            let ended = at_ms + started.elapsed().as_millis() as u64 + audio_ms;
            self.reply_heard(speaker, &outcome.text, at_ms, ended);
            out.reply = Some(outcome.text);
        }
        out
    }
}

/// A sentence of the reply with its speech.
#[derive(Debug, Clone)]
pub struct SpokenChunk {
    /// The sentence.
    pub text: String,
    /// Its audio (mono, at the voice's rate; empty without a voice).
    pub audio: Vec<f32>,
}

/// How a reply ended.
#[derive(Debug, Clone, Default)]
pub struct ReplyOutcome {
    /// The reply text the gateway produced (complete, or up to the abort).
    pub text: String,
    /// Whether the run was aborted (barge-in).
    pub aborted: bool,
    /// Whether the gateway confirmed the abort.
    pub gateway_aborted: bool,
    /// What went wrong, if something did.
    pub error: Option<String>,
    /// Whether the reply ran past [`MAX_SPOKEN_CHARS`]: the rest was not said, the run was
    /// aborted at the gateway, and `text` is what was said.
    pub truncated: bool,
    /// Stage times (relevance not included).
    pub stages: ReplyStages,
}

/// The most of one reply that is spoken, in characters (about 80 s of speech): a model that
/// does not stop, or a peer that floods, cannot hold the channel's voice, the TTS workers or
/// the pod's memory. The cut falls at a word.
pub const MAX_SPOKEN_CHARS: usize = 1200;

/// Reply text received past which nothing more can be said (bytes: at least as many as
/// characters; the slack covers the markup the splitter strips).
const FLOOD_BYTES: usize = MAX_SPOKEN_CHARS * 3 / 2 * 4;

/// What is left of a reply's [`MAX_SPOKEN_CHARS`].
#[derive(Debug)]
struct Budget {
    left: usize,
    said: String,
    /// A sentence was cut, or refused: the reply is longer than what is said.
    over: bool,
}

impl Budget {
    fn new(chars: usize) -> Self {
        Self {
            left: chars,
            said: String::new(),
            over: false,
        }
    }

    /// What of `sentence` may still be said (`None`: nothing more); cut at a word when it
    /// crosses the limit.
    fn take(&mut self, sentence: String) -> Option<String> {
        if self.left == 0 {
            self.over = true;
            return None;
        }
        let n = sentence.chars().count();
        let out = if n <= self.left {
            self.left -= n;
            sentence
        } else {
            let end = sentence
                .char_indices()
                .nth(self.left)
                .map_or(sentence.len(), |(i, _)| i);
            let head = &sentence[..end];
            // A limit that falls between two words keeps the whole head; inside a word, the
            // word goes.
            let at_word_end = sentence[end..].starts_with(char::is_whitespace);
            let cut = if at_word_end {
                head
            } else {
                head.rfind(char::is_whitespace)
                    .filter(|&i| i > 0)
                    .map_or(head, |i| &head[..i])
            };
            self.left = 0;
            self.over = true;
            cut.trim_end().to_string()
        };
        if !self.said.is_empty() {
            self.said.push(' ');
        }
        self.said.push_str(&out);
        Some(out)
    }

    fn over(&self) -> bool {
        self.over
    }
}

#[derive(Debug, Default)]
struct ReplyState {
    run_id: Option<String>,
    outcome: ReplyOutcome,
}

/// A reply in progress. Read its sentences with [`ActiveReply::next_chunk`]; stop it with
/// [`ActiveReply::barge_in`].
pub struct ActiveReply {
    client: GatewayClient,
    run_id: String,
    session_key: String,
    /// Sample rate of the chunks' audio.
    pub sample_rate: u32,
    state: Arc<std::sync::Mutex<ReplyState>>,
    chunks: mpsc::Receiver<SpokenChunk>,
    task: tokio::task::JoinHandle<()>,
}

impl ActiveReply {
    /// The run at the gateway (chosen before it starts, so it can be recorded).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The conversation's session key.
    pub fn session_key(&self) -> &str {
        &self.session_key
    }

    /// The next spoken sentence; `None` when the reply is over.
    pub async fn next_chunk(&mut self) -> Option<SpokenChunk> {
        self.chunks.recv().await
    }

    /// Waits for the reply to end and returns how it went.
    pub async fn finish(mut self) -> ReplyOutcome {
        while self.chunks.recv().await.is_some() {}
        let _ = (&mut self.task).await;
        lock(&self.state).outcome.clone()
    }

    /// A human started speaking: stop synthesising at once and abort the run at the gateway.
    pub async fn barge_in(self) -> ReplyOutcome {
        self.task.abort();
        let run_id = lock(&self.state).run_id.clone();
        let mut gateway_aborted = false;
        if let Some(run_id) = run_id {
            match self.client.abort(&self.session_key, &run_id).await {
                Ok(aborted) => gateway_aborted = aborted,
                Err(e) => tracing::debug!(error = %e, "abort after barge-in failed"),
            }
        }
        let mut outcome = lock(&self.state).outcome.clone();
        outcome.aborted = true;
        outcome.gateway_aborted = gateway_aborted;
        outcome
    }
}

/// Speaks one sentence; the audio, and when its first piece came.
async fn speak(
    voice: Option<&Voice>,
    sentence: &str,
) -> (Vec<f32>, Option<Instant>, Option<String>) {
    let Some(voice) = voice else {
        return (Vec::new(), None, None);
    };
    let (tx, mut rx) = mpsc::channel::<Vec<f32>>(64);
    let voice = voice.clone();
    let text = sentence.to_string();
    let speak = async move {
        let r = voice.speak(text, &tx).await;
        drop(tx);
        r
    };
    let collect = async {
        let (mut audio, mut first) = (Vec::new(), None);
        while let Some(chunk) = rx.recv().await {
            first.get_or_insert_with(Instant::now);
            audio.extend(chunk);
        }
        (audio, first)
    };
    let (result, (audio, first)) = tokio::join!(speak, collect);
    let error = result.err().map(|e| {
        crate::throttle::peer_warn!(error = %e, "text-to-speech failed for a sentence");
        format!("text-to-speech: {e}")
    });
    (audio, first, error)
}

/// Said when the agent's reply fails (the gateway gone, the model stalled past the first-token
/// timeout, an error from the run): the listeners hear that something went wrong instead of
/// silence, and know to ask again.
pub const APOLOGY: &str = "Sorry, I lost my connection there. Please ask me again.";

/// Where a reply's text comes from.
enum Source {
    /// A new message to the agent, streamed back.
    Chat(String),
    /// A run already started (by a previous pod): its finished text from `chat.history`.
    Recover,
}

/// How long a recovered run may still take to finish.
const RECOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The reply task: gateway deltas → sentences → (TTS task) → spoken chunks.
async fn run_reply(
    client: GatewayClient,
    session_key: String,
    source: Source,
    run_id: String,
    voice: Option<Voice>,
    state: Arc<std::sync::Mutex<ReplyState>>,
    chunks: mpsc::Sender<SpokenChunk>,
) {
    // Sentences go to a TTS task so synthesis runs while the model is still writing.
    let (sentence_tx, mut sentence_rx) = mpsc::channel::<(String, Instant)>(32);
    let tts_state = state.clone();
    let mut tts = AbortOnDrop(tokio::spawn(async move {
        while let Some((sentence, ready)) = sentence_rx.recv().await {
            let (audio, first, error) = speak(voice.as_ref(), &sentence).await;
            if let Some(e) = error {
                // The text still goes out; the turn says why nothing was heard.
                lock(&tts_state).outcome.error.get_or_insert(e);
            }
            if let Some(first) = first {
                let mut st = lock(&tts_state);
                st.outcome
                    .stages
                    .tts_first_audio
                    .get_or_insert(first.duration_since(ready).as_secs_f64() * 1e3);
            }
            if chunks
                .send(SpokenChunk {
                    text: sentence,
                    audio,
                })
                .await
                .is_err()
            {
                return;
            }
        }
    }));

    let sent = Instant::now();
    let mut splitter = SentenceSplitter::default();
    let mut budget = Budget::new(MAX_SPOKEN_CHARS);
    let mut received = 0usize;
    let message = match source {
        Source::Chat(message) => message,
        Source::Recover => {
            let text = recovered_text(&client, &session_key, &run_id, &state).await;
            let mut sentences = splitter.push(&text);
            sentences.extend(splitter.finish());
            lock(&state).outcome.text = text;
            for s in sentences {
                let Some(s) = budget.take(s) else { break };
                let _ = sentence_tx.send((s, Instant::now())).await;
            }
            if budget.over() {
                let mut st = lock(&state);
                st.outcome.truncated = true;
                st.outcome.text = budget.said;
            }
            drop(sentence_tx);
            let _ = (&mut tts.0).await;
            return;
        }
    };
    let options = ChatOptions {
        run_id: Some(run_id),
        ..ChatOptions::default()
    };
    match client.chat(&session_key, &message, options).await {
        Err(e) => {
            lock(&state).outcome.error = Some(e.to_string());
            let _ = sentence_tx
                .send((APOLOGY.to_string(), Instant::now()))
                .await;
        }
        Ok(mut stream) => {
            lock(&state).run_id = Some(stream.run_id().to_string());
            while let Some(event) = stream.next().await {
                let mark_first = |state: &std::sync::Mutex<ReplyState>| {
                    lock(state)
                        .outcome
                        .stages
                        .gateway_first_token
                        .get_or_insert(sent.elapsed().as_secs_f64() * 1e3);
                };
                let mut sentences = match event {
                    Ok(ReplyEvent::Delta(d)) => {
                        mark_first(&state);
                        received += d.len();
                        splitter.push(&d)
                    }
                    Ok(ReplyEvent::Replace(t)) => {
                        mark_first(&state);
                        // Text already spoken cannot be unsaid; speak what is new.
                        let new = t
                            .strip_prefix(stream.text())
                            .unwrap_or_default()
                            .to_string();
                        received += new.len();
                        splitter.push(&new)
                    }
                    Ok(ReplyEvent::Final(t)) => {
                        lock(&state).outcome.text = t;
                        splitter.finish().into_iter().collect()
                    }
                    Ok(ReplyEvent::Aborted(t)) => {
                        let mut st = lock(&state);
                        st.outcome.text = t;
                        st.outcome.aborted = true;
                        splitter.finish().into_iter().collect()
                    }
                    Err(e) => {
                        let mut st = lock(&state);
                        st.outcome.error = Some(e.to_string());
                        st.outcome.text = stream.text().to_string();
                        // The speaker is never left waiting in silence: what was written is
                        // said, then a short apology.
                        let mut rest: Vec<String> = splitter.finish().into_iter().collect();
                        rest.push(APOLOGY.to_string());
                        rest
                    }
                };
                // More text than can ever be said (a sentence that does not end, a model
                // that does not stop): what is held is all that will be said.
                let flood = received > FLOOD_BYTES;
                if flood {
                    sentences.extend(splitter.finish());
                }
                for s in sentences {
                    // The apology is said whatever the budget: it explains the silence.
                    let s = if s == APOLOGY {
                        Some(s)
                    } else {
                        budget.take(s)
                    };
                    let Some(s) = s else { break };
                    let _ = sentence_tx.send((s, Instant::now())).await;
                    if budget.over() {
                        break;
                    }
                }
                if budget.over() || flood {
                    {
                        let mut st = lock(&state);
                        st.outcome.truncated = true;
                        st.outcome.text = std::mem::take(&mut budget.said);
                    }
                    tracing::info!(
                        limit = MAX_SPOKEN_CHARS,
                        "the reply is longer than is spoken; the rest is dropped and the run aborted"
                    );
                    if let Err(e) = client.abort(&session_key, stream.run_id()).await {
                        tracing::debug!(error = %e, "aborting a run past the spoken limit failed");
                    }
                    break;
                }
            }
            lock(&state).outcome.stages.gateway_total = Some(sent.elapsed().as_secs_f64() * 1e3);
        }
    }
    drop(sentence_tx);
    let _ = (&mut tts.0).await;
}

/// The finished text of a run, waiting (polling `chat.history`) while it is still written;
/// empty when the run is gone or does not finish in time (the error says which).
async fn recovered_text(
    client: &GatewayClient,
    session_key: &str,
    run_id: &str,
    state: &std::sync::Mutex<ReplyState>,
) -> String {
    let start = Instant::now();
    loop {
        match client.run_state(session_key, run_id).await {
            Ok(RunState::Finished(text)) => return text,
            Ok(RunState::Missing) => {
                lock(state).outcome.error = Some("the run is not in the session's history".into());
                return String::new();
            }
            Ok(RunState::InFlight(_)) if start.elapsed() < RECOVER_WAIT => {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Ok(RunState::InFlight(_)) => {
                lock(state).outcome.error = Some("the run did not finish in time".into());
                return String::new();
            }
            Err(e) => {
                lock(state).outcome.error = Some(e.to_string());
                return String::new();
            }
        }
    }
}

/// Aborts the task when dropped (a barge-in aborts the reply task, and with it its TTS task).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_cuts_at_a_word_and_then_says_nothing() {
        let mut b = Budget::new(20);
        assert_eq!(
            b.take("Two plus two.".into()).as_deref(),
            Some("Two plus two.")
        );
        assert!(!b.over());
        // 7 characters left: "is four" fits of "is four and more".
        assert_eq!(
            b.take("is four and more".into()).as_deref(),
            Some("is four")
        );
        assert!(b.over());
        assert_eq!(b.take("Anything else.".into()), None);
        assert_eq!(b.said, "Two plus two. is four");
        // A limit that falls inside a multi-byte character, and a word longer than the limit.
        let mut b = Budget::new(3);
        assert_eq!(b.take("héllo wörld".into()).as_deref(), Some("hél"));
        let mut b = Budget::new(5);
        assert_eq!(b.take("exactly".into()).as_deref(), Some("exact"));
        // Exactly the limit is not over it.
        let mut b = Budget::new(5);
        assert_eq!(b.take("Hello".into()).as_deref(), Some("Hello"));
        assert!(!b.over());
    }
}
