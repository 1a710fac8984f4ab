//! A turn's record: the one place where what happened to a turn is put together (the
//! transcript and the listener's stages, the relevance decision, the reply and its stages,
//! what was heard of it) and the one place every consumer reads it from — the metrics, the
//! pod's log line, the JSON of `voicebot-demo` and of `voicebot-shard pipeline`, and, through
//! the room, the conversation's transcript context.

use std::time::Instant;

use serde_json::{Value, json};

use super::engine::{ReplyOutcome, ReplyStages, TurnReply};
use crate::listen::Utterance;

/// One turn a room (or a file pipeline) handled.
#[derive(Debug, Clone)]
pub struct TurnRecord {
    /// Who spoke.
    pub speaker: String,
    /// The agent that decided (and answered), by display name.
    pub agent: String,
    /// What the listener heard.
    pub utterance: Utterance,
    /// The decision and the reply (its audio went to the playout, not here).
    pub reply: TurnReply,
    /// Time the turn waited in the queue, ms.
    pub queued_ms: f64,
    /// When the first reply audio was queued for playout.
    pub first_audio_at: Option<Instant>,
    /// What the listeners heard of the reply (cut at a barge-in).
    pub heard: String,
    /// Whether a human cut the reply off.
    pub barged_in: bool,
    /// Whether the gateway confirmed the abort of the cut-off run.
    pub gateway_aborted: bool,
}

impl TurnRecord {
    /// The record of a decided turn: `speaker` said `utterance`, `agent` decided `reply` after
    /// the turn waited `queued_ms`. The reply's outcome comes with [`TurnRecord::played`].
    pub fn new(
        speaker: &str,
        agent: &str,
        utterance: Utterance,
        reply: TurnReply,
        queued_ms: f64,
    ) -> Self {
        Self {
            speaker: speaker.to_string(),
            agent: agent.to_string(),
            utterance,
            reply,
            queued_ms,
            first_audio_at: None,
            heard: String::new(),
            barged_in: false,
            gateway_aborted: false,
        }
    }

    /// The reply started at `started` came out as `outcome`: its text, error and stages (the
    /// relevance time stays the decision's).
    pub fn played(&mut self, started: Instant, outcome: ReplyOutcome) {
        let reply = &mut self.reply;
        reply.first_audio_ms = self
            .first_audio_at
            .map(|t| t.duration_since(started).as_secs_f64() * 1e3);
        reply.error = outcome.error;
        reply.stages_ms = ReplyStages {
            relevance: reply.stages_ms.relevance,
            ..outcome.stages
        };
        reply.reply = (!outcome.text.is_empty()).then_some(outcome.text);
    }

    /// A human cut the reply off after `heard` of it was played.
    pub fn cut_off(&mut self, heard: String, gateway_aborted: bool) {
        self.heard = heard;
        self.barged_in = true;
        self.gateway_aborted = gateway_aborted;
    }

    /// The listener's wait after the end of speech (silence, Smart Turn, Whisper when not
    /// overlapped), ms.
    pub fn listen_ms(&self) -> u64 {
        self.utterance
            .ready_ms
            .saturating_sub(self.utterance.end_ms)
    }

    /// End of speech → first reply audio queued for playout, ms: the listener's wait after the
    /// speech, the queue, then relevance, the agent's first words and speech synthesis.
    pub fn latency_ms(&self) -> Option<f64> {
        Some(self.listen_ms() as f64 + self.queued_ms + self.reply.first_audio_ms?)
    }

    /// End of speech → first reply audio less the gateway's first-token wait: what the
    /// pipeline itself costs (listening, relevance, speech synthesis).
    pub fn overhead_ms(&self) -> Option<f64> {
        self.reply.first_audio_ms.map(|first| {
            self.listen_ms() as f64 + first
                - self.reply.stages_ms.gateway_first_token.unwrap_or(0.0)
        })
    }

    /// Every stage's time, ms: the listener's (`vad`, `turn`, `stt`, and `listen`, its wait
    /// after the speech), the queue, then the reply's (`relevance`, `gateway_first_token`,
    /// `gateway_total`, `tts_first_audio`).
    pub fn stages_json(&self) -> Value {
        let u = &self.utterance.stages_ms;
        let r = &self.reply.stages_ms;
        json!({
            "vad": u.vad,
            "turn": u.turn,
            "stt": u.stt,
            "listen": self.listen_ms(),
            "queued": self.queued_ms,
            "relevance": r.relevance,
            "gateway_first_token": r.gateway_first_token,
            "gateway_total": r.gateway_total,
            "tts_first_audio": r.tts_first_audio,
        })
    }

    /// The record as a room's consumers print it (`voicebot-demo --json` adds what only it
    /// measures: the first RTP packet, the audio file, the agent's id and voice).
    pub fn to_json(&self) -> Value {
        json!({
            "speaker": self.speaker,
            "agent": self.agent,
            "transcript": self.utterance.transcript,
            "addressed": self.reply.addressed,
            "reason": self.reply.reason.label(),
            "reply": self.reply.reply,
            "error": self.reply.error,
            "heard": self.heard,
            "latency_ms": self.latency_ms().map(round1),
            "stages_ms": self.stages_json(),
            "barged_in": self.barged_in,
            "gateway_aborted": self.gateway_aborted,
        })
    }

    /// The record as `voicebot-shard pipeline --json` prints it: the utterance's own fields
    /// (times, transcript, commit, its `stages_ms` with the reply's stages added), then the
    /// decision (`reason` in full), the reply and the pipeline's overhead.
    pub fn to_pipeline_json(&self) -> Value {
        let mut record = serde_json::to_value(&self.utterance).unwrap_or_else(|_| json!({}));
        if let Some(r) = record.as_object_mut() {
            r.insert("addressed".into(), self.reply.addressed.into());
            r.insert(
                "reason".into(),
                serde_json::to_value(&self.reply.reason).unwrap_or(Value::Null),
            );
            r.insert("reply".into(), self.reply.reply.clone().into());
            if let Some(e) = &self.reply.error {
                r.insert("error".into(), e.clone().into());
            }
            r.insert("overhead_ms".into(), self.overhead_ms().into());
            let reply_stages = serde_json::to_value(self.reply.stages_ms).unwrap_or(Value::Null);
            if let (Some(s), Some(extra)) = (
                r.get_mut("stages_ms").and_then(Value::as_object_mut),
                reply_stages.as_object(),
            ) {
                for (k, v) in extra {
                    s.insert(k.clone(), v.clone());
                }
            }
        }
        record
    }

    /// The pod's log line of the turn (its text only at debug: what people say is theirs).
    pub fn log(&self, guild: u64) {
        tracing::info!(
            guild,
            agent = %self.agent,
            addressed = self.reply.addressed,
            reason = self.reply.reason.label(),
            latency_ms = self.latency_ms().map(|l| l.round() as u64),
            barged_in = self.barged_in,
            error = self.reply.error.as_deref(),
            "turn"
        );
        tracing::debug!(guild, heard = %self.utterance.transcript, said = %self.heard, "turn text");
    }
}

fn round1(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}
