//! The operator's own Prometheus metrics (bounded labels only).

use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

/// Counters and histograms of the reconciler.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    reconciles: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
    writes: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with the operator's metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "voicebot_operator_reconciles_total",
                "Reconciles, by result",
            ),
            &["result"],
        )
        .unwrap_or_else(|_| unreachable!("static metric definition"));
        let errors = IntCounterVec::new(
            Opts::new(
                "voicebot_operator_reconcile_errors_total",
                "Failed reconciles, by reason",
            ),
            &["reason"],
        )
        .unwrap_or_else(|_| unreachable!("static metric definition"));
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "voicebot_operator_reconcile_duration_seconds",
                "Time per reconcile",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &[],
        )
        .unwrap_or_else(|_| unreachable!("static metric definition"));
        let writes = IntCounterVec::new(
            Opts::new(
                "voicebot_operator_writes_total",
                "Objects written to the API server, by kind",
            ),
            &["kind"],
        )
        .unwrap_or_else(|_| unreachable!("static metric definition"));
        for c in [&reconciles, &errors, &writes] {
            let _ = registry.register(Box::new(c.clone()));
        }
        // Every series at zero from the start (bounded label sets): dashboards and `rate()`
        // see them before the first event.
        for result in ["ok", "error"] {
            reconciles.with_label_values(&[result]);
        }
        for reason in crate::reconcile::Error::LABELS {
            errors.with_label_values(&[*reason]);
        }
        let _ = registry.register(Box::new(duration.clone()));
        Self {
            registry,
            reconciles,
            errors,
            duration,
            writes,
        }
    }

    /// Records a reconcile.
    pub fn observe(&self, took: Duration, error: Option<&crate::reconcile::Error>) {
        self.duration
            .with_label_values::<&str>(&[])
            .observe(took.as_secs_f64());
        match error {
            None => self.reconciles.with_label_values(&["ok"]).inc(),
            Some(e) => {
                self.reconciles.with_label_values(&["error"]).inc();
                self.errors.with_label_values(&[e.label()]).inc();
            }
        }
    }

    /// Records a write.
    pub fn applied(&self, kind: &str) {
        self.writes.with_label_values(&[kind]).inc();
    }

    /// Writes so far (all kinds).
    pub fn writes(&self) -> u64 {
        self.writes
            .collect()
            .iter()
            .flat_map(|f| f.get_metric())
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
