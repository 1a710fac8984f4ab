//! One speaker's listening pipeline: VAD → end-of-turn → STT → guard.
//!
//! [`Listener`] holds what is per speaker (the VAD's recurrent state, the segmenter, the audio
//! of the turn in progress); [`Models`] holds the heavy shared engines (Smart Turn, Whisper),
//! lent to the listener on each call so that many speakers can share one copy. Time is counted
//! in samples, never read from a clock, so a file runs faster than real time and every run
//! decides the same way; wall-clock time is only measured, for `stages_ms`.

use std::time::Instant;

use serde::Serialize;

use super::guard::{self, GuardConfig, Rejection};
use super::stt::{SttConfig, Transcript, Whisper};
use super::turn::SmartTurn;
use super::vad::{CHUNK, Segmenter, SileroVad, VadConfig, VadEvent};
use crate::models::{ModelPaths, WhisperModel};
use crate::{Error, Result};

const RATE: u64 = 16_000;

fn ms(samples: u64) -> u64 {
    samples * 1000 / RATE
}

fn samples(ms: u32) -> u64 {
    u64::from(ms) * RATE / 1000
}

/// Tuning of the whole listening pipeline.
#[derive(Debug, Clone, Copy)]
pub struct ListenerConfig {
    /// Speech segmentation.
    pub vad: VadConfig,
    /// Smart Turn probability at or above which a pause ends the turn.
    pub turn_threshold: f32,
    /// How long an incomplete turn waits for more speech before it is committed anyway.
    pub max_wait_ms: u32,
    /// How long a turn waits when Smart Turn calls it complete but Whisper heard an unfinished
    /// phrase (no full stop, question or exclamation mark: "front" of "Front ... Center"), ms
    /// after the speech; 0 trusts Smart Turn alone. Falling intonation mid-phrase fools the
    /// audio model; the transcript of the same pause (speculative, already paid for) does not.
    pub unfinished_wait_ms: u32,
    /// A turn longer than this is committed even while the speaker goes on (bounds memory).
    pub max_turn_ms: u32,
    /// Audio kept before the detected start of speech.
    pub pre_roll_ms: u32,
    /// Audio kept after the detected end of speech (for Whisper).
    pub post_roll_ms: u32,
    /// Hallucination guard.
    pub guard: GuardConfig,
    /// Transcribe during a pause, before the silence that ends the turn has passed, so that
    /// Whisper's time overlaps the wait (the result is dropped if the speaker goes on).
    pub speculative_stt: bool,
    /// A pause must last this long before it is worth a speculative transcription.
    pub speculate_after_ms: u32,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            vad: VadConfig::default(),
            turn_threshold: 0.5,
            max_wait_ms: 2_000,
            unfinished_wait_ms: 1_200,
            max_turn_ms: 30_000,
            pre_roll_ms: 400,
            post_roll_ms: 200,
            guard: GuardConfig::default(),
            speculative_stt: true,
            speculate_after_ms: 64,
        }
    }
}

/// The shared, heavy engines.
pub struct Models {
    /// End-of-turn model.
    pub turn: SmartTurn,
    /// Speech to text.
    pub stt: Whisper,
    /// ONNX Runtime environment (to make per-speaker VADs).
    pub env: ort::environment::Environment,
    /// Where the files are.
    pub paths: ModelPaths,
}

impl Models {
    /// Loads Smart Turn and Whisper; `threads` is used by both.
    pub fn load(
        paths: ModelPaths,
        whisper: WhisperModel,
        stt: SttConfig,
        turn_threads: usize,
    ) -> Result<Self> {
        let env = crate::models::onnx_environment(&paths.onnxruntime)?;
        Ok(Self {
            turn: SmartTurn::new(&env, &paths.smart_turn, turn_threads)?,
            stt: Whisper::new(&paths.whisper, whisper, stt)?,
            env,
            paths,
        })
    }

    /// A fresh VAD for a new speaker.
    pub fn new_vad(&self) -> Result<SileroVad> {
        SileroVad::new(&self.env, &self.paths.silero_vad)
    }

    /// Another worker: its own Smart Turn session and Whisper decoder, the Whisper weights
    /// shared.
    pub fn fork(&self, turn_threads: usize) -> Result<Self> {
        Ok(Self {
            turn: SmartTurn::new(&self.env, &self.paths.smart_turn, turn_threads)?,
            stt: self.stt.fork()?,
            env: self.env.clone(),
            paths: self.paths.clone(),
        })
    }
}

/// The heavy engines a listener borrows for a moment: end of turn and speech to text.
///
/// [`Models`] is the plain implementation; [`super::EnginePool`] lends one of several
/// [`Models`] to whichever speaker needs it, and says [`crate::Error::Overloaded`] when none
/// comes free in time.
pub trait Engines {
    /// Probability that the turn ending with `audio` (16 kHz mono) is complete.
    fn end_of_turn(&mut self, audio: &[f32]) -> Result<f32>;
    /// Transcribes 16 kHz mono audio; `hint`: words that may be said (see
    /// [`super::stt::Whisper::transcribe_with`]), empty for none.
    fn transcribe(&mut self, audio: &[f32], hint: &str) -> Result<Transcript>;
    /// Transcribes only if an engine is free right now (`None` otherwise): for speculative
    /// work, which must never queue in front of turns that are really over.
    fn transcribe_if_idle(&mut self, audio: &[f32], hint: &str) -> Result<Option<Transcript>> {
        self.transcribe(audio, hint).map(Some)
    }
}

impl Engines for Models {
    fn end_of_turn(&mut self, audio: &[f32]) -> Result<f32> {
        Ok(self.turn.predict(audio)?.0)
    }

    fn transcribe(&mut self, audio: &[f32], hint: &str) -> Result<Transcript> {
        self.stt.transcribe_with(audio, hint)
    }
}

/// Wall-clock time spent in each stage for one utterance, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StagesMs {
    /// Silero VAD over the utterance's chunks.
    pub vad: f64,
    /// Smart Turn (features + inference), all calls for this turn.
    pub turn: f64,
    /// Whisper.
    pub stt: f64,
}

/// Why a turn was committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitReason {
    /// Smart Turn judged the turn complete.
    TurnComplete,
    /// Smart Turn was unsure, but Whisper heard a question ending in "?".
    Question,
    /// The turn looked incomplete but no more speech came within the maximum wait.
    MaxWait,
    /// Smart Turn judged it complete, Whisper heard an unfinished phrase, and no more speech
    /// came within [`ListenerConfig::unfinished_wait_ms`].
    Unfinished,
    /// The turn reached the maximum length.
    MaxLength,
    /// The input ended.
    EndOfInput,
}

/// A finished, transcribed turn.
#[derive(Debug, Clone, Serialize)]
pub struct Utterance {
    /// Start of speech, ms from the start of the stream.
    pub start_ms: u64,
    /// End of speech, ms from the start of the stream.
    pub end_ms: u64,
    /// Stream position when the turn was committed (end of speech plus the silence it took to
    /// decide), ms.
    pub committed_ms: u64,
    /// When the utterance would have been ready had the audio arrived in real time (frames at
    /// their timestamps, processed in order), ms on the stream's clock; `ready_ms - end_ms` is
    /// the listener's real-time latency, silence wait and inference included.
    pub ready_ms: u64,
    /// What was said.
    pub transcript: String,
    /// Smart Turn's probability that the turn is complete (last prediction).
    pub turn_complete: f32,
    /// Why the turn was committed.
    pub commit: CommitReason,
    /// Time per stage.
    pub stages_ms: StagesMs,
}

#[derive(Debug, Clone, Copy)]
struct Turn {
    start: u64,
    /// End of the last speech, while waiting for the speaker to go on.
    waiting_since: Option<u64>,
    prob: f32,
    /// Smart Turn called the pause complete but the phrase sounded unfinished: the wait is
    /// [`ListenerConfig::unfinished_wait_ms`] instead of the maximum.
    unfinished: bool,
}

/// Whether Whisper closed the phrase: it ends in a full stop, question or exclamation mark
/// (closing quotes and brackets aside), and not in an ellipsis, which is Whisper's way of
/// saying the speaker trailed off.
pub fn sounds_finished(text: &str) -> bool {
    let t = text.trim_end_matches(|c: char| c.is_whitespace() || "\"')]”’".contains(c));
    if t.ends_with("...") || t.ends_with('…') {
        return false;
    }
    t.ends_with(['.', '?', '!', '。', '？', '！'])
}

/// One speaker's listening state.
pub struct Listener {
    config: ListenerConfig,
    vad: SileroVad,
    segmenter: Segmenter,
    /// Audio from `origin` up to `pos` (plus a partial chunk at the end).
    buf: Vec<f32>,
    origin: u64,
    /// Samples consumed by the VAD.
    pos: u64,
    turn: Option<Turn>,
    stages: StagesMs,
    rejected: Vec<Rejection>,
    /// A transcript made during the current pause.
    spec: Option<Speculation>,
    /// Real-time simulation: when processing of the audio so far would finish, ms.
    clock_ms: f64,
    /// Processing time spent in the current `push`, ms (for the clock).
    push_started: Option<Instant>,
    /// Speech started since [`Listener::take_speech_started`] was last called.
    speech_started: bool,
    /// What Whisper is told may be said (the room's agents' names).
    hint: std::sync::Arc<str>,
}

/// A transcript made speculatively during a pause.
struct Speculation {
    start: u64,
    end: u64,
    transcript: super::stt::Transcript,
    stt_ms: f64,
}

/// Whisper's initial prompt for `names`: "Jarvis, Sage" (no closing period: a prompt that ends
/// a sentence makes Whisper end sentences at every pause, and a pause would then sound
/// finished).
pub fn names_hint<S: AsRef<str>>(names: &[S]) -> std::sync::Arc<str> {
    let mut seen: Vec<&str> = Vec::new();
    for n in names {
        let n = n.as_ref().trim();
        if !n.is_empty() && !seen.iter().any(|s| s.eq_ignore_ascii_case(n)) {
            seen.push(n);
        }
    }
    std::sync::Arc::from(seen.join(", "))
}

impl Listener {
    /// A listener for one speaker.
    pub fn new(config: ListenerConfig, vad: SileroVad) -> Self {
        Self {
            segmenter: Segmenter::new(config.vad),
            config,
            vad,
            buf: Vec::new(),
            origin: 0,
            pos: 0,
            turn: None,
            stages: StagesMs::default(),
            rejected: Vec::new(),
            spec: None,
            clock_ms: 0.0,
            push_started: None,
            speech_started: false,
            hint: std::sync::Arc::from(""),
        }
    }

    /// Tells Whisper that `names` may be said (the agents of the room, their aliases): rare
    /// names are then spelled as the name matcher expects.
    #[must_use]
    pub fn with_names<S: AsRef<str>>(self, names: &[S]) -> Self {
        self.with_hint(names_hint(names))
    }

    /// [`Listener::with_names`], the names already made into a [`names_hint`].
    #[must_use]
    pub fn with_hint(mut self, hint: std::sync::Arc<str>) -> Self {
        self.hint = hint;
        self
    }

    /// Turns that were dropped by the hallucination guard, in order.
    pub fn rejected(&self) -> &[Rejection] {
        &self.rejected
    }

    /// Whether a turn is in progress (speech, or a pause that may continue).
    pub fn in_turn(&self) -> bool {
        self.turn.is_some()
    }

    /// Whether the speaker is talking right now (speech confirmed by the VAD, not yet ended).
    pub fn in_speech(&self) -> bool {
        self.segmenter.in_speech()
    }

    /// Whether speech started (a new turn, or the speaker going on after a pause) since the
    /// last call: the barge-in signal, however many frames one `push` carried.
    pub fn take_speech_started(&mut self) -> bool {
        std::mem::take(&mut self.speech_started)
    }

    /// Takes the drops recorded so far (for counting by the caller).
    pub fn take_rejected(&mut self) -> Vec<Rejection> {
        std::mem::take(&mut self.rejected)
    }

    /// Feeds 16 kHz mono samples; returns the utterances completed by them.
    pub fn push(&mut self, models: &mut dyn Engines, audio: &[f32]) -> Result<Vec<Utterance>> {
        // This frame arrives when its last sample has been spoken.
        let arrival = (self.origin + self.buf.len() as u64 + audio.len() as u64) as f64 * 1000.0
            / RATE as f64;
        self.clock_ms = self.clock_ms.max(arrival);
        self.push_started = Some(Instant::now());
        self.buf.extend_from_slice(audio);
        let mut out = Vec::new();
        while self.buf.len() as u64 - (self.pos - self.origin) >= CHUNK as u64 {
            let off = (self.pos - self.origin) as usize;
            let mut chunk = [0.0f32; CHUNK];
            chunk.copy_from_slice(&self.buf[off..off + CHUNK]);
            self.step(models, &chunk, &mut out)?;
        }
        self.advance_clock();
        Ok(out)
    }

    /// Adds the processing time of the current call to the real-time clock.
    fn advance_clock(&mut self) {
        if let Some(t) = self.push_started.take() {
            self.clock_ms += t.elapsed().as_secs_f64() * 1e3;
        }
    }

    /// The real-time clock at this moment of the current call, ms.
    fn clock_now(&self) -> f64 {
        self.clock_ms
            + self
                .push_started
                .map_or(0.0, |t| t.elapsed().as_secs_f64() * 1e3)
    }

    /// Ends the stream: closes speech in progress and commits any pending turn.
    pub fn finish(&mut self, models: &mut dyn Engines) -> Result<Vec<Utterance>> {
        self.push_started = Some(Instant::now());
        let mut out = Vec::new();
        let off = (self.pos - self.origin) as usize;
        if off < self.buf.len() {
            // Last partial chunk, padded with silence.
            let mut chunk = [0.0f32; CHUNK];
            let tail = &self.buf[off..];
            chunk[..tail.len()].copy_from_slice(tail);
            self.buf.truncate(off);
            self.buf.extend_from_slice(&chunk);
            self.step(models, &chunk, &mut out)?;
        }
        if let Some(VadEvent::End { start, end }) = self.segmenter.finish(self.pos) {
            self.speech_ended(models, start, end)?;
        }
        if let Some(u) = self.commit(models, CommitReason::EndOfInput)? {
            out.push(u);
        }
        self.advance_clock();
        Ok(out)
    }

    fn step(
        &mut self,
        models: &mut dyn Engines,
        chunk: &[f32; CHUNK],
        out: &mut Vec<Utterance>,
    ) -> Result<()> {
        let at = self.pos;
        let t = Instant::now();
        let prob = self.vad.process(chunk)?;
        let vad_ms = t.elapsed().as_secs_f64() * 1e3;
        self.stages.vad += vad_ms;
        self.pos += CHUNK as u64;

        let event = self.segmenter.push(at, prob);
        if matches!(event, Some(VadEvent::Start(_))) {
            self.speech_started = true;
        }
        match event {
            Some(VadEvent::Start(start)) => match self.turn.as_mut() {
                Some(turn) => {
                    turn.waiting_since = None;
                    turn.unfinished = false;
                }
                None => {
                    // Stage times count from the chunk that confirmed speech.
                    self.stages = StagesMs {
                        vad: vad_ms,
                        ..StagesMs::default()
                    };
                    self.turn = Some(Turn {
                        start,
                        waiting_since: None,
                        prob: 0.0,
                        unfinished: false,
                    });
                }
            },
            Some(VadEvent::End { start, end }) => {
                let prob = self.speech_ended(models, start, end)?;
                // What Whisper heard of this very pause (transcribed while the silence grew):
                // its question mark is a second end-of-turn signal (Smart Turn is often unsure
                // about flat questions, and waiting them out costs seconds), and a phrase it
                // did not close is a reason to doubt a "complete" from Smart Turn.
                let heard = self
                    .spec
                    .as_ref()
                    .filter(|s| s.end == end)
                    .map(|s| s.transcript.text.trim_end());
                let question = heard.is_some_and(|t| t.ends_with('?'));
                let unfinished = self.config.unfinished_wait_ms > 0
                    && heard.is_some_and(|t| !t.is_empty() && !sounds_finished(t));
                let reason = if prob >= self.config.turn_threshold && !unfinished {
                    Some(CommitReason::TurnComplete)
                } else if question {
                    Some(CommitReason::Question)
                } else {
                    None
                };
                if reason.is_none()
                    && prob >= self.config.turn_threshold
                    && let Some(turn) = self.turn.as_mut()
                {
                    turn.unfinished = true;
                }
                if let Some(reason) = reason
                    && let Some(u) = self.commit(models, reason)?
                {
                    out.push(u);
                }
            }
            None => {}
        }

        if let Some(turn) = self.turn {
            let (wait, reason) = if turn.unfinished {
                (self.config.unfinished_wait_ms, CommitReason::Unfinished)
            } else {
                (self.config.max_wait_ms, CommitReason::MaxWait)
            };
            match turn.waiting_since {
                Some(end) if !self.segmenter.in_speech() && self.pos - end >= samples(wait) => {
                    if let Some(u) = self.commit(models, reason)? {
                        out.push(u);
                    }
                }
                _ if self.pos - turn.start >= samples(self.config.max_turn_ms) => {
                    if let Some(t) = self.turn.as_mut() {
                        t.waiting_since.get_or_insert(self.pos);
                    }
                    if let Some(u) = self.commit(models, CommitReason::MaxLength)? {
                        out.push(u);
                    }
                    if self.segmenter.in_speech() {
                        // The speaker goes on: what follows is a new turn.
                        self.turn = Some(Turn {
                            start: self.pos,
                            waiting_since: None,
                            prob: 0.0,
                            unfinished: false,
                        });
                    }
                }
                _ => {}
            }
        }
        if self.config.speculative_stt {
            self.speculate(models)?;
        }
        if self.turn.is_none() {
            self.trim();
        }
        Ok(())
    }

    /// During a pause in a turn, transcribe what has been said so far (once per pause).
    fn speculate(&mut self, models: &mut dyn Engines) -> Result<()> {
        let (Some(turn), Some((end, paused))) = (self.turn, self.segmenter.pause()) else {
            return Ok(());
        };
        if turn.waiting_since.is_some()
            || paused < samples(self.config.speculate_after_ms)
            || self
                .spec
                .as_ref()
                .is_some_and(|s| s.start == turn.start && s.end == end)
        {
            return Ok(());
        }
        let from = turn.start.saturating_sub(samples(self.config.pre_roll_ms));
        let to = (end + samples(self.config.post_roll_ms)).min(self.pos);
        let audio = self.audio(from, to);
        if guard::check_audio(&self.config.guard, audio).is_err() {
            return Ok(());
        }
        let t = Instant::now();
        let transcript = match models.transcribe_if_idle(audio, &self.hint) {
            Ok(Some(t)) => t,
            // Speculation is an optimisation: under load, skip it.
            Ok(None) | Err(Error::Overloaded(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.spec = Some(Speculation {
            start: turn.start,
            end,
            transcript,
            stt_ms: t.elapsed().as_secs_f64() * 1e3,
        });
        Ok(())
    }

    /// Speech that began at `start` stopped at `end`: the turn now waits, and Smart Turn says
    /// how likely it is to be complete.
    fn speech_ended(&mut self, models: &mut dyn Engines, start: u64, end: u64) -> Result<f32> {
        let turn = self.turn.get_or_insert(Turn {
            start,
            waiting_since: None,
            prob: 0.0,
            unfinished: false,
        });
        turn.waiting_since = Some(end);
        let prob = self.predict_turn(models)?;
        if let Some(turn) = self.turn.as_mut() {
            turn.prob = prob;
        }
        Ok(prob)
    }

    /// Drops audio older than the pre-roll while no turn is in progress.
    fn trim(&mut self) {
        let keep_from = self
            .pos
            .saturating_sub(samples(self.config.pre_roll_ms) + CHUNK as u64);
        if keep_from > self.origin {
            let n = (keep_from - self.origin) as usize;
            self.buf.drain(..n.min(self.buf.len()));
            self.origin = keep_from;
        }
    }

    /// The buffered audio between two stream positions.
    fn audio(&self, from: u64, to: u64) -> &[f32] {
        let a = from.max(self.origin) - self.origin;
        let b = (to.max(self.origin) - self.origin).min(self.buf.len() as u64);
        &self.buf[(a as usize).min(b as usize)..b as usize]
    }

    fn predict_turn(&mut self, models: &mut dyn Engines) -> Result<f32> {
        let Some(turn) = self.turn else {
            return Ok(0.0);
        };
        let from = turn.start.saturating_sub(samples(self.config.pre_roll_ms));
        let t = Instant::now();
        let start = (from.max(self.origin) - self.origin) as usize;
        let end = ((self.pos - self.origin) as usize).min(self.buf.len());
        let prob = match models.end_of_turn(&self.buf[start.min(end)..end]) {
            Ok(prob) => prob,
            // No engine free in time: treat the pause as inconclusive; the maximum wait and
            // Whisper's punctuation still end the turn.
            Err(Error::Overloaded(_)) => 0.0,
            Err(e) => return Err(e),
        };
        self.stages.turn += t.elapsed().as_secs_f64() * 1e3;
        Ok(prob)
    }

    fn commit(
        &mut self,
        models: &mut dyn Engines,
        reason: CommitReason,
    ) -> Result<Option<Utterance>> {
        let Some(turn) = self.turn.take() else {
            return Ok(None);
        };
        let end = turn.waiting_since.unwrap_or(self.pos);
        let from = turn.start.saturating_sub(samples(self.config.pre_roll_ms));
        let to = (end + samples(self.config.post_roll_ms)).min(self.pos);
        let stages = std::mem::take(&mut self.stages);
        let spec = self.spec.take();
        let audio = self.audio(from, to);
        let result = match guard::check_audio(&self.config.guard, audio) {
            Err(rejection) => Err(rejection),
            Ok(()) => {
                let (transcript, stt_ms) = match spec {
                    Some(spec) if spec.start == turn.start && spec.end == end => {
                        (spec.transcript, spec.stt_ms)
                    }
                    _ => {
                        let t = Instant::now();
                        match models.transcribe(audio, &self.hint) {
                            Ok(transcript) => (transcript, t.elapsed().as_secs_f64() * 1e3),
                            Err(Error::Overloaded(_)) => {
                                self.trim();
                                return self.reject(turn.start, Rejection::Overloaded);
                            }
                            Err(e) => {
                                self.trim();
                                return Err(e);
                            }
                        }
                    }
                };
                guard::check_text(
                    &self.config.guard,
                    &transcript.text,
                    transcript.no_speech_prob,
                    transcript.avg_logprob,
                )
                .map(|text| (text, stt_ms))
            }
        };
        self.trim();
        match result {
            Ok((transcript, stt)) => Ok(Some(Utterance {
                start_ms: ms(turn.start),
                end_ms: ms(end),
                committed_ms: ms(self.pos),
                ready_ms: self.clock_now() as u64,
                transcript,
                turn_complete: turn.prob,
                commit: reason,
                stages_ms: StagesMs { stt, ..stages },
            })),
            Err(rejection) => self.reject(turn.start, rejection),
        }
    }

    fn reject(&mut self, start: u64, rejection: Rejection) -> Result<Option<Utterance>> {
        tracing::debug!(
            reason = rejection.label(),
            start_ms = ms(start),
            "turn dropped"
        );
        self.rejected.push(rejection);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::{names_hint, sounds_finished};

    #[test]
    fn the_names_hint_lists_each_name_once_without_closing_the_sentence() {
        assert_eq!(
            &*names_hint(&["Jarvis", "Jeeves", "Sage"]),
            "Jarvis, Jeeves, Sage"
        );
        assert_eq!(
            &*names_hint(&["Sage", " sage ", "", "Jarvis"]),
            "Sage, Jarvis"
        );
        assert_eq!(&*names_hint::<&str>(&[]), "");
    }

    #[test]
    fn a_phrase_is_finished_by_its_closing_mark_not_by_an_ellipsis() {
        for done in [
            "Center.",
            "What is 2 plus 2?",
            "Stop!",
            "He said \"yes.\"",
            "(Fine.) ",
        ] {
            assert!(sounds_finished(done), "{done}");
        }
        for open in [
            "front",
            "I was wondering whether the",
            "so, um,",
            "Front...",
            "and then…",
            "",
        ] {
            assert!(!sounds_finished(open), "{open}");
        }
    }
}
