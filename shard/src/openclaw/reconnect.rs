//! The connection task: one connection after another, with exponential backoff and jitter,
//! and what each kind of refusal means for the next attempt.

use std::sync::Arc;
use std::time::Duration;

use super::client::{Shared, Status};
use super::connection::session;
use super::error::ClientError;
use super::frames::ErrorShape;
use crate::lock;

/// Why one connection ended.
pub(super) enum SessionEnd {
    /// The gateway said retry after this long (start-up).
    RetryAfter(Duration, ClientError),
    /// Any other failure.
    Failed(ClientError),
    /// The connection had been up and then closed.
    Closed,
}

pub(super) async fn run_connection(shared: Arc<Shared>) {
    let mut attempt: u32 = 0;
    let mut generation = 0u64;
    let mut announced_pairing: Option<String> = None;
    loop {
        shared.status.send_replace(Status::Connecting);
        let end = session(&shared, &mut generation).await;
        *lock(&shared.outbound) = None;
        let delay = match end {
            SessionEnd::Closed => {
                attempt = 0;
                tracing::info!(
                    url = shared.config.url_for_logs(),
                    "gateway connection closed; reconnecting"
                );
                shared
                    .status
                    .send_replace(Status::Retrying(ClientError::Disconnected));
                jittered(shared.config.backoff_initial, 0, shared.config.backoff_max)
            }
            SessionEnd::RetryAfter(after, err) => {
                tracing::debug!(
                    after_ms = after.as_millis() as u64,
                    "gateway is starting; retrying"
                );
                shared.status.send_replace(Status::Retrying(err));
                after + jittered(Duration::from_millis(50), 0, Duration::from_millis(100))
            }
            SessionEnd::Failed(err) => {
                match &err {
                    ClientError::PairingRequired { request_id, .. } => {
                        if announced_pairing.as_deref() != Some(request_id.as_str()) {
                            tracing::warn!("{err}");
                            announced_pairing = Some(request_id.clone());
                        }
                    }
                    ClientError::Auth { .. } => tracing::error!("{err}"),
                    _ if attempt == 0 => tracing::warn!("{err}"),
                    _ => tracing::debug!("{err}"),
                }
                shared.status.send_replace(Status::Retrying(err));
                attempt = attempt.saturating_add(1);
                jittered(
                    shared.config.backoff_initial,
                    attempt,
                    shared.config.backoff_max,
                )
            }
        };
        // Status first, then the runs: whoever sees a run end with `Disconnected` must not
        // find the client still reporting itself connected.
        shared.fail_in_flight();
        tokio::time::sleep(delay).await;
    }
}

/// Exponential backoff with jitter: a random delay in [base·2ⁿ/2, base·2ⁿ], capped.
fn jittered(base: Duration, attempt: u32, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16)).min(max);
    let half = exp / 2;
    half + Duration::from_micros(fastrand::u64(0..=half.as_micros() as u64))
}

pub(super) fn classify(err: ErrorShape, device_id: &str) -> SessionEnd {
    let detail = err.detail_code().unwrap_or_default().to_string();
    if err.code == "UNAVAILABLE" {
        let after = Duration::from_millis(err.retry_after_ms.unwrap_or(500).clamp(50, 30_000));
        let e = ClientError::Connect {
            url: String::new(),
            reason: format!(
                "gateway unavailable ({})",
                err.detail("reason").unwrap_or(&err.message)
            ),
        };
        return SessionEnd::RetryAfter(after, e);
    }
    if err.code == "NOT_PAIRED" || detail == "PAIRING_REQUIRED" {
        return SessionEnd::Failed(ClientError::PairingRequired {
            device_id: device_id.to_string(),
            request_id: err
                .detail("requestId")
                .unwrap_or("<see openclaw devices list>")
                .to_string(),
        });
    }
    if detail.starts_with("AUTH_")
        || detail.starts_with("DEVICE_AUTH")
        || err.code == "UNAUTHORIZED"
    {
        return SessionEnd::Failed(ClientError::Auth {
            code: detail,
            message: err.message,
        });
    }
    SessionEnd::Failed(ClientError::Protocol(format!(
        "connect refused ({}{}): {}",
        err.code,
        if detail.is_empty() {
            String::new()
        } else {
            format!("/{detail}")
        },
        err.message
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for attempt in 0..20 {
            let d = jittered(base, attempt, max);
            let exp = base.saturating_mul(1 << attempt.min(16)).min(max);
            assert!(d >= exp / 2 && d <= exp, "attempt {attempt}: {d:?}");
        }
    }

    #[test]
    fn connect_errors_are_classified() {
        let unavailable = ErrorShape {
            code: "UNAVAILABLE".into(),
            retry_after_ms: Some(500),
            ..ErrorShape::default()
        };
        assert!(
            matches!(classify(unavailable, "d"), SessionEnd::RetryAfter(d, _) if d == Duration::from_millis(500))
        );
        let auth = ErrorShape {
            code: "INVALID_REQUEST".into(),
            message: "bad token".into(),
            details: Some(json!({"code": "AUTH_TOKEN_MISMATCH"})),
            ..ErrorShape::default()
        };
        assert!(matches!(
            classify(auth, "d"),
            SessionEnd::Failed(ClientError::Auth { .. })
        ));
        let pairing = ErrorShape {
            code: "NOT_PAIRED".into(),
            details: Some(json!({"code": "PAIRING_REQUIRED", "requestId": "req-9"})),
            ..ErrorShape::default()
        };
        match classify(pairing, "dev1") {
            SessionEnd::Failed(e @ ClientError::PairingRequired { .. }) => {
                assert!(
                    e.to_string().contains("openclaw devices approve req-9"),
                    "{e}"
                );
            }
            _ => panic!("not a pairing error"),
        }
    }
}
