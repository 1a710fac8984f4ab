//! `/metrics`, `/healthz` and `/readyz`: the pods' shared endpoints (`voicebot_config::health`).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Serves until the listener fails. `ready` turns true once the controller runs.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let render: voicebot_config::health::Render = Arc::new(move || metrics.render());
    voicebot_config::health::serve(listener, render, ready).await
}
