//! The pods' observability endpoints, the same for the shard and the operator: `/metrics`
//! (Prometheus text), `/healthz` (the process answers) and `/readyz` (200 once the process says
//! it is ready, 503 before). axum over hyper: the HTTP parsing is not ours.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// What `/metrics` renders (called per scrape).
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The three endpoints as a router (to serve, or to test without a socket).
pub fn router(render: Render, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let render = render.clone();
                async move { ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], render()) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::Acquire);
                async move {
                    if ready {
                        (StatusCode::OK, "ok\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
                    }
                }
            }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        // Probes and scrapes are one request each: the connection ends with the answer, so
        // an idle client holds nothing open.
        .layer(axum::middleware::map_response(close))
}

fn close(mut r: Response) -> Pin<Box<dyn Future<Output = Response> + Send>> {
    r.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    Box::pin(async move { r.into_response() })
}

/// Serves the endpoints on `listener` until it fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    render: Render,
    ready: Arc<AtomicBool>,
) -> std::io::Result<()> {
    axum::serve(listener, router(render, ready)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(port: u16, request: &[u8]) -> String {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(request).await.unwrap();
        let mut out = String::new();
        // Ends because the server closes the connection after its answer.
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            s.read_to_string(&mut out),
        )
        .await
        .expect("the server closes the connection after answering")
        .unwrap();
        out
    }

    #[tokio::test]
    async fn metrics_health_and_readiness_answer_and_close() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let ready = Arc::new(AtomicBool::new(false));
        let render: Render = Arc::new(|| "voicebot_up 1\n".to_string());
        tokio::spawn(serve(listener, render, ready.clone()));

        let m = get(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(m.starts_with("HTTP/1.1 200"), "{m}");
        assert!(m.contains("version=0.0.4"), "{m}");
        assert!(m.ends_with("voicebot_up 1\n"), "{m}");
        let r = get(port, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        ready.store(true, Ordering::Release);
        let r = get(port, b"GET /readyz?verbose HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        let h = get(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(h.starts_with("HTTP/1.1 200") && h.ends_with("ok\n"), "{h}");
        let n = get(port, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(n.starts_with("HTTP/1.1 404"), "{n}");
        // Not HTTP: an error answer, and the server keeps serving.
        let bad = get(port, b"\x16\x03\x01 garbage\r\n\r\n").await;
        assert!(bad.is_empty() || bad.starts_with("HTTP/1.1 400"), "{bad:?}");
        let h = get(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    }
}
