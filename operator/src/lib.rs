//! The VoiceBot operator: `VoiceBot` resources become shard StatefulSets (with their Service,
//! ConfigMap, PodDisruptionBudget and ServiceMonitor), status is written back, resharding never
//! runs two pods with the same shard, and a deleted bot's Redis keys are removed.
//!
//! `render` holds the pure resource → objects functions, `reconcile` the controller logic,
//! `metrics` and `http` the operator's own metrics and health endpoints.

pub mod http;
pub mod metrics;
pub mod reconcile;
pub mod render;
