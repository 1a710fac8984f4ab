//! One connection: WebSocket connect, the challenge/`connect` handshake with the signed
//! device identity, then the pump that routes responses to requests and `chat` events to runs.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::client::{Shared, Status};
use super::device::AuthPayload;
use super::error::ClientError;
use super::frames::{self, ChatEvent, Inbound, PROTOCOL};
use super::reconnect::{SessionEnd, classify};
use crate::lock;
use crate::secret::Secret;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One connection: connect, handshake, then pump frames until it ends.
pub(super) async fn session(shared: &Arc<Shared>, generation: &mut u64) -> SessionEnd {
    let config = &shared.config;
    let connect_err = |reason: String| {
        SessionEnd::Failed(ClientError::Connect {
            url: config.url_for_logs().to_string(),
            reason,
        })
    };
    let identity = match shared.store.identity() {
        Ok(id) => id,
        Err(e) => return connect_err(format!("device identity unavailable: {e}")),
    };
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(config.max_frame_bytes))
        .max_frame_size(Some(config.max_frame_bytes));
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    let connected = tokio::time::timeout_at(
        deadline,
        tokio_tungstenite::connect_async_with_config(config.url.as_str(), Some(ws_config), true),
    )
    .await;
    let mut ws: Ws = match connected {
        Err(_) => return SessionEnd::Failed(ClientError::Timeout("the gateway connection")),
        Ok(Err(e)) => return connect_err(e.to_string()),
        Ok(Ok((ws, _))) => ws,
    };

    // The server speaks first: connect.challenge {nonce, ts}.
    let challenge = loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return SessionEnd::Failed(ClientError::Timeout("the connect challenge")),
            Ok(None) => return connect_err("closed before the challenge".into()),
            Ok(Some(Err(e))) => return connect_err(e.to_string()),
            Ok(Some(Ok(Message::Text(text)))) => match frames::parse(&text, config.max_frame_bytes)
            {
                Ok(Inbound::Event(ev)) if ev.event == "connect.challenge" => break ev.payload,
                Ok(_) => continue,
                Err(e) => return SessionEnd::Failed(ClientError::Protocol(e.to_string())),
            },
            Ok(Some(Ok(Message::Close(frame)))) => {
                return connect_err(format!("closed before the challenge: {frame:?}"));
            }
            Ok(Some(Ok(_))) => continue,
        }
    };
    let nonce = challenge
        .get("nonce")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let ts = challenge
        .get("ts")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        });
    if nonce.is_empty() {
        return SessionEnd::Failed(ClientError::Protocol(
            "connect.challenge without a nonce".into(),
        ));
    }

    let device_token = shared.store.device_token();
    let (auth, token_for_signature) = match (&config.token, &device_token) {
        (Some(t), _) => (json!({"token": t.expose()}), t.expose().to_string()),
        (None, Some(d)) => (json!({"deviceToken": d.expose()}), d.expose().to_string()),
        (None, None) => (json!({}), String::new()),
    };
    let scopes = ["operator.read", "operator.write"];
    let platform = std::env::consts::OS;
    let signature = identity.sign(&AuthPayload {
        client_id: &config.client_id,
        client_mode: &config.client_mode,
        role: "operator",
        scopes: &scopes,
        signed_at_ms: ts,
        token: &token_for_signature,
        nonce: &nonce,
        platform,
        device_family: "",
    });
    let params = json!({
        "minProtocol": PROTOCOL,
        "maxProtocol": PROTOCOL,
        "client": {
            "id": config.client_id,
            "version": env!("CARGO_PKG_VERSION"),
            "platform": platform,
            "mode": config.client_mode,
            "displayName": config.display_name,
        },
        "role": "operator",
        "scopes": scopes,
        "auth": auth,
        "caps": [],
        "userAgent": concat!("voicebot/", env!("CARGO_PKG_VERSION")),
        "device": {
            "id": identity.id(),
            "publicKey": identity.public_key(),
            "signature": signature,
            "signedAt": ts,
            "nonce": nonce,
        },
    });
    let connect = match serde_json::to_string(&frames::Request::new("connect", "connect", &params))
    {
        Ok(s) => s,
        Err(e) => return SessionEnd::Failed(ClientError::Protocol(e.to_string())),
    };
    if let Err(e) = ws.send(Message::text(connect)).await {
        return connect_err(e.to_string());
    }
    let hello = loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return SessionEnd::Failed(ClientError::Timeout("the connect response")),
            Ok(None) => return connect_err("closed during the handshake".into()),
            Ok(Some(Err(e))) => return connect_err(e.to_string()),
            Ok(Some(Ok(Message::Text(text)))) => match frames::parse(&text, config.max_frame_bytes)
            {
                Ok(Inbound::Response(res)) if res.id == "connect" => {
                    if res.ok {
                        break res.payload.unwrap_or_default();
                    }
                    return classify(res.error.unwrap_or_default(), identity.id());
                }
                Ok(_) => continue,
                Err(e) => return SessionEnd::Failed(ClientError::Protocol(e.to_string())),
            },
            Ok(Some(Ok(Message::Close(frame)))) => {
                return connect_err(format!("closed during the handshake: {frame:?}"));
            }
            Ok(Some(Ok(_))) => continue,
        }
    };
    if hello.get("type").and_then(Value::as_str) != Some("hello-ok") {
        return SessionEnd::Failed(ClientError::Protocol(
            "the connect response is not hello-ok".into(),
        ));
    }
    if let Some(token) = hello.pointer("/auth/deviceToken").and_then(Value::as_str) {
        let token = Secret::new(token);
        if device_token.as_ref() != Some(&token)
            && let Err(e) = shared.store.save_device_token(&token)
        {
            tracing::warn!(error = %e, "could not save the device token the gateway issued");
        }
    }
    let tick = hello
        .pointer("/policy/tickIntervalMs")
        .and_then(Value::as_u64)
        .unwrap_or(30_000)
        .clamp(100, 600_000);
    let conn_id = hello
        .pointer("/server/connId")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    *generation += 1;
    tracing::info!(
        url = config.url_for_logs(),
        conn_id,
        device_id = identity.id(),
        "connected to the OpenClaw gateway"
    );

    let (out_tx, mut out_rx) = mpsc::channel::<String>(256);
    *lock(&shared.outbound) = Some(out_tx);
    shared.status.send_replace(Status::Connected {
        conn_id,
        generation: *generation,
    });
    pump(shared, ws, &mut out_rx, Duration::from_millis(tick * 2)).await
}

/// Routes frames until the connection ends.
async fn pump(
    shared: &Arc<Shared>,
    mut ws: Ws,
    out_rx: &mut mpsc::Receiver<String>,
    silence_limit: Duration,
) -> SessionEnd {
    let mut last_frame = Instant::now();
    let mut malformed = 0u32;
    let mut watchdog = tokio::time::interval(silence_limit / 4);
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            incoming = ws.next() => {
                let text = match incoming {
                    None => return SessionEnd::Closed,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "gateway socket error");
                        return SessionEnd::Closed;
                    }
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(frame))) => {
                        tracing::debug!(?frame, "gateway closed the connection");
                        return SessionEnd::Closed;
                    }
                    Some(Ok(_)) => {
                        last_frame = Instant::now();
                        continue;
                    }
                };
                let arrived = Instant::now();
                last_frame = arrived;
                match frames::parse(&text, shared.config.max_frame_bytes) {
                    Ok(Inbound::Response(res)) => {
                        let Some(tx) = lock(&shared.pending).remove(&res.id) else { continue };
                        let result = if res.ok {
                            Ok(res.payload.unwrap_or_default())
                        } else {
                            let e = res.error.unwrap_or_default();
                            Err(ClientError::Rejected { method: String::new(), code: e.detail_code().map_or(e.code.clone(), str::to_string), message: e.message })
                        };
                        let _ = tx.send(result);
                    }
                    Ok(Inbound::Event(ev)) if ev.event == "chat" => {
                        tracing::trace!(payload = %ev.payload, "chat event");
                        let Some(chat) = ChatEvent::from_payload(&ev.payload) else {
                            tracing::debug!("chat event without run id or state");
                            continue;
                        };
                        let tx = lock(&shared.runs).get(&chat.run_id).map(|(_, tx)| tx.clone());
                        if let Some(tx) = tx
                            && tx.try_send(Ok(chat)).is_err()
                        {
                            crate::throttle::peer_warn!("a reply stream is not being read; dropping an event");
                        }
                        shared.dispatch_us.store(arrived.elapsed().as_micros() as u64, Ordering::Relaxed);
                    }
                    Ok(Inbound::Event(ev)) if ev.event == "shutdown" => {
                        tracing::info!(reason = ?ev.payload.get("reason"), "the gateway is shutting down");
                    }
                    Ok(Inbound::Event(_)) => {}
                    Err(e) => {
                        malformed += 1;
                        crate::throttle::peer_warn!(error = %e, malformed, "ignoring a malformed gateway frame");
                    }
                }
            }
            Some(frame) = out_rx.recv() => {
                if let Err(e) = ws.send(Message::text(frame)).await {
                    tracing::debug!(error = %e, "gateway send failed");
                    return SessionEnd::Closed;
                }
            }
            _ = watchdog.tick() => {
                if last_frame.elapsed() > silence_limit {
                    tracing::warn!(silent_ms = last_frame.elapsed().as_millis() as u64, "the gateway went silent; reconnecting");
                    let _ = ws.close(None).await;
                    return SessionEnd::Closed;
                }
            }
        }
    }
}
