//! The shard's Prometheus metrics: the contract the Grafana dashboard (charts/voicebot/
//! dashboards) reads. Every label value comes from a bounded set — stage names, the configured
//! agents, this pod's shard ids, the fixed reason/outcome/kind labels — never from user input.
//!
//! | metric | labels |
//! | --- | --- |
//! | `voicebot_stage_seconds` (histogram) | `stage` (vad, turn, stt, relevance, gateway_first_token, gateway_total, tts_first_audio, overhead), `agent`, `shard` |
//! | `voicebot_turns_total` | `outcome` (answered, ignored, error), `agent`, `shard` |
//! | `voicebot_turns_ignored_total` | `reason`, `agent`, `shard` |
//! | `voicebot_barge_ins_total` | `agent`, `shard` |
//! | `voicebot_dropped_total` | `reason`, `shard` |
//! | `voicebot_errors_total` | `kind`, `shard` |
//! | `voicebot_guilds`, `voicebot_voice_connections`, `voicebot_active_speakers`, `voicebot_queue_depth` (gauges) | `shard` |
//!
//! `overhead` is the end-to-end figure: end of speech → first reply audio queued for playout.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::converse::room::{RoomEvent, TurnRecord};

/// Buckets for stage times, seconds: 5 ms … 10 s.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
];

/// The shard's metrics and their registry.
pub struct ShardMetrics {
    registry: Registry,
    stage: HistogramVec,
    turns: IntCounterVec,
    ignored: IntCounterVec,
    barge_ins: IntCounterVec,
    dropped: IntCounterVec,
    errors: IntCounterVec,
    gauges: [IntGaugeVec; 4],
    redis_up: prometheus::IntGauge,
    redis_round_trips: prometheus::IntCounter,
    redis_errors: prometheus::IntCounter,
}

/// A gauge of [`ShardMetrics::set_gauge`].
#[derive(Debug, Clone, Copy)]
pub enum Gauge {
    /// Guilds the shard serves.
    Guilds = 0,
    /// Voice connections.
    VoiceConnections = 1,
    /// Speakers with a listener.
    ActiveSpeakers = 2,
    /// Turns waiting for an answer.
    QueueDepth = 3,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ShardMetrics {
    /// Fresh metrics in their own registry.
    #[allow(clippy::expect_used)] // static, valid metric definitions: a failure is a bug
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("metric registration");
            c
        };
        let stage = HistogramVec::new(
            HistogramOpts::new(
                "voicebot_stage_seconds",
                "Time of each stage of a voice turn",
            )
            .buckets(BUCKETS.to_vec()),
            &["stage", "agent", "shard"],
        )
        .expect("metric definition");
        registry
            .register(Box::new(stage.clone()))
            .expect("metric registration");
        let gauge = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["shard"]).expect("metric definition");
            registry
                .register(Box::new(g.clone()))
                .expect("metric registration");
            g
        };
        let gauges = [
            gauge("voicebot_guilds", "Guilds served by the shard"),
            gauge("voicebot_voice_connections", "Voice connections"),
            gauge("voicebot_active_speakers", "Speakers being listened to"),
            gauge("voicebot_queue_depth", "Turns waiting for an answer"),
        ];
        let redis_up = prometheus::IntGauge::new(
            "voicebot_redis_up",
            "1 when the fleet state reaches Redis, 0 while degraded (serving from memory)",
        )
        .expect("metric definition");
        let redis_round_trips = prometheus::IntCounter::new(
            "voicebot_redis_round_trips_total",
            "Round trips to Redis (each a pipeline of writes, or one command)",
        )
        .expect("metric definition");
        let redis_errors = prometheus::IntCounter::new(
            "voicebot_redis_errors_total",
            "Failed round trips to Redis",
        )
        .expect("metric definition");
        for m in [
            Box::new(redis_up.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(redis_round_trips.clone()),
            Box::new(redis_errors.clone()),
        ] {
            registry.register(m).expect("metric registration");
        }
        Self {
            redis_up,
            redis_round_trips,
            redis_errors,
            turns: counter(
                "voicebot_turns_total",
                "Turns heard, by outcome",
                &["outcome", "agent", "shard"],
            ),
            ignored: counter(
                "voicebot_turns_ignored_total",
                "Turns the bot decided not to answer, by reason",
                &["reason", "agent", "shard"],
            ),
            barge_ins: counter(
                "voicebot_barge_ins_total",
                "Replies cut off by a human",
                &["agent", "shard"],
            ),
            dropped: counter(
                "voicebot_dropped_total",
                "Turns or audio dropped, by reason",
                &["reason", "shard"],
            ),
            errors: counter(
                "voicebot_errors_total",
                "Errors, by kind",
                &["kind", "shard"],
            ),
            stage,
            gauges,
            registry,
        }
    }

    /// Counts what happened in a room of `shard`; `agent` (the agent's id) labels it.
    pub fn observe(&self, shard: u32, agent: &str, event: &RoomEvent) {
        let shard = shard.to_string();
        match event {
            RoomEvent::Turn(t) => self.turn(&shard, agent, t),
            RoomEvent::BargeIn { .. } => {
                self.barge_ins
                    .with_label_values(&[agent_label(agent).as_str(), shard.as_str()])
                    .inc();
            }
            RoomEvent::Dropped { reason, .. } => {
                self.dropped
                    .with_label_values(&[reason.label(), shard.as_str()])
                    .inc();
            }
            RoomEvent::SpeechStarted { .. }
            | RoomEvent::Heard { .. }
            | RoomEvent::ReplyStarted { .. } => {}
        }
    }

    fn turn(&self, shard: &str, agent: &str, t: &TurnRecord) {
        let agent = agent_label(agent);
        if t.reply.reason == crate::converse::relevance::Reason::Recovered {
            // A previous pod's reply spoken again: no stage of this pod to time.
            self.turns
                .with_label_values(&["recovered", agent.as_str(), shard])
                .inc();
            return;
        }
        let labels = |stage: &'static str| [stage, agent.as_str(), shard];
        let observe_ms = |stage: &'static str, ms: f64| {
            if ms.is_finite() && ms >= 0.0 {
                self.stage
                    .with_label_values(&labels(stage))
                    .observe(ms / 1e3);
            }
        };
        let u = &t.utterance.stages_ms;
        observe_ms("vad", u.vad);
        observe_ms("turn", u.turn);
        observe_ms("stt", u.stt);
        let r = &t.reply.stages_ms;
        observe_ms("relevance", r.relevance);
        if let Some(ms) = r.gateway_first_token {
            observe_ms("gateway_first_token", ms);
        }
        if let Some(ms) = r.gateway_total {
            observe_ms("gateway_total", ms);
        }
        if let Some(ms) = r.tts_first_audio {
            observe_ms("tts_first_audio", ms);
        }
        if let Some(ms) = t.latency_ms() {
            observe_ms("overhead", ms);
        }
        let outcome = if t.reply.error.is_some() {
            self.errors.with_label_values(&["reply", shard]).inc();
            "error"
        } else if t.reply.addressed {
            "answered"
        } else {
            self.ignored
                .with_label_values(&[t.reply.reason.label(), agent.as_str(), shard])
                .inc();
            "ignored"
        };
        self.turns
            .with_label_values(&[outcome, agent.as_str(), shard])
            .inc();
    }

    /// Counts an error of `kind` (one of [`ERROR_KINDS`]).
    pub fn error(&self, shard: u32, kind: &'static str) {
        self.errors
            .with_label_values(&[kind, shard.to_string().as_str()])
            .inc();
    }

    /// Creates every series of `shards` × `agents` at zero, so dashboards and `rate()` see
    /// them before the first event (a counter that appears at its first increment loses that
    /// increment to `rate`). Every label set is bounded, so this is a fixed, small number.
    pub fn init(&self, shards: &[u32], agents: &[String]) {
        use crate::converse::room::DropReason;
        use crate::listen::guard::Rejection;
        const REASONS: &[&str] = &[
            "name",
            "solo",
            "follow_up",
            "classifier",
            "below_threshold",
            "not_addressed",
            "classifier_unavailable",
            "empty",
        ];
        const OUTCOMES: &[&str] = &["answered", "ignored", "error", "recovered"];
        let drops = [
            DropReason::QueueFull,
            DropReason::Stale,
            DropReason::AudioOverrun,
            DropReason::TooManySpeakers,
            DropReason::Listener(Rejection::Quiet),
            DropReason::Listener(Rejection::NoSpeech),
            DropReason::Listener(Rejection::Phantom),
            DropReason::Listener(Rejection::Empty),
            DropReason::Listener(Rejection::Overloaded),
        ];
        for shard in shards {
            let shard = shard.to_string();
            for kind in ERROR_KINDS {
                self.errors.with_label_values(&[*kind, shard.as_str()]);
            }
            for d in drops {
                self.dropped.with_label_values(&[d.label(), shard.as_str()]);
            }
            for agent in agents {
                let agent = agent_label(agent);
                self.barge_ins
                    .with_label_values(&[agent.as_str(), shard.as_str()]);
                for o in OUTCOMES {
                    self.turns
                        .with_label_values(&[*o, agent.as_str(), shard.as_str()]);
                }
                for r in REASONS {
                    self.ignored
                        .with_label_values(&[*r, agent.as_str(), shard.as_str()]);
                }
            }
        }
    }

    /// The fleet state's health and counters (`up`: `None` without Redis).
    pub fn set_redis(&self, up: Option<bool>, round_trips: u64, errors: u64) {
        self.redis_up.set(match up {
            Some(true) => 1,
            Some(false) => 0,
            None => -1,
        });
        let grow = |c: &prometheus::IntCounter, to: u64| c.inc_by(to.saturating_sub(c.get()));
        grow(&self.redis_round_trips, round_trips);
        grow(&self.redis_errors, errors);
    }

    /// Sets a gauge of `shard`.
    pub fn set_gauge(&self, gauge: Gauge, shard: u32, value: i64) {
        self.gauges[gauge as usize]
            .with_label_values(&[shard.to_string().as_str()])
            .set(value);
    }

    /// The metrics in Prometheus's text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Agents are labelled by their id (the display name in lower case).
/// The kinds of `voicebot_errors_total`: a reply that failed, a voice join that failed, a
/// shard Discord closed for good.
pub const ERROR_KINDS: &[&str] = &["reply", "voice_join", "gateway_fatal"];

fn agent_label(agent: &str) -> String {
    agent.to_lowercase()
}

/// Serves `/metrics` (Prometheus text), `/healthz` (the process answers) and `/readyz` (200 once
/// `ready` is set: the models loaded and every shard connected) until the listener fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: std::sync::Arc<ShardMetrics>,
    ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let render: voicebot_config::health::Render = std::sync::Arc::new(move || metrics.render());
    if let Err(e) = voicebot_config::health::serve(listener, render, ready).await {
        tracing::warn!(error = %e, "the metrics and health endpoints stopped");
    }
}
