//! The REST API under `/api/v10` (what twilight-http calls for a voice bot).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::gateway::TIMESTAMP;
use crate::state::{Shared, SimEvent, lock};

type S = State<Arc<Shared>>;

pub(crate) async fn serve(listener: TcpListener, state: Arc<Shared>) {
    let api = Router::new()
        .route("/gateway/bot", get(gateway_bot))
        .route("/users/@me", get(me))
        .route("/applications/@me", get(application))
        .route("/applications/{app}/commands", put(global_commands))
        .route(
            "/applications/{app}/guilds/{guild}/commands",
            put(guild_commands),
        )
        .route("/interactions/{id}/{token}/callback", post(callback))
        .route(
            "/webhooks/{app}/{token}/messages/{message}",
            patch(edit_original),
        )
        .route("/webhooks/{app}/{token}", post(followup))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            rate_limited,
        ))
        .with_state(state);
    let app = Router::new().nest("/api/v10", api);
    let _ = axum::serve(listener, app).await;
}

/// Plays Discord's rate limit where a test asked for one: 429, the `retry_after` in the body
/// and in the headers twilight-http's rate limiter reads (a per-route bucket with nothing left
/// until it resets).
async fn rate_limited(
    State(state): S,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path().to_string();
    let hit = {
        let mut inner = lock(&state.inner);
        inner
            .rate_limits
            .iter_mut()
            .find(|(prefix, left, _)| *left > 0 && path.starts_with(prefix.as_str()))
            .map(|(_, left, retry_after)| {
                *left -= 1;
                *retry_after
            })
    };
    let Some(retry_after) = hit else {
        return next.run(request).await;
    };
    state.record(SimEvent::RateLimited {
        path,
        retry_after,
        at_ms: state.started.elapsed().as_millis() as u64,
    });
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({"message": "You are being rate limited.", "retry_after": retry_after, "global": false})),
    )
        .into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-ratelimit-scope", "user".to_string()),
        ("x-ratelimit-bucket", "sim-bucket".to_string()),
        ("x-ratelimit-limit", "1".to_string()),
        ("x-ratelimit-remaining", "0".to_string()),
        ("x-ratelimit-reset-after", format!("{retry_after:.3}")),
        ("retry-after", format!("{}", retry_after.ceil() as u64)),
    ] {
        if let Ok(v) = axum::http::HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    response
}

fn authorized(state: &Shared, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.strip_prefix("Bot ") == Some(state.config.token.as_str()))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"code": 0, "message": "401: Unauthorized"})),
    )
        .into_response()
}

async fn gateway_bot(State(state): S, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    Json(json!({
        "url": state.gateway_url,
        "shards": state.config.shards,
        "session_start_limit": {
            "total": 1000, "remaining": 1000, "reset_after": 86_400_000,
            "max_concurrency": state.config.max_concurrency,
        },
    }))
    .into_response()
}

async fn me(State(state): S, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let bot = &state.config.bot;
    Json(json!({
        "id": bot.id.to_string(), "username": bot.name, "discriminator": "0",
        "avatar": null, "bot": true, "mfa_enabled": false, "flags": 0, "public_flags": 0,
    }))
    .into_response()
}

async fn application(State(state): S, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    Json(json!({
        "id": state.config.application_id.to_string(), "name": state.config.bot.name,
        "description": "", "icon": null, "bot_public": true, "bot_require_code_grant": false,
        "verify_key": "00", "flags": 0, "team": null,
    }))
    .into_response()
}

fn register(state: &Shared, guild: Option<u64>, body: Value) -> Response {
    let commands: Vec<Value> = body
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut c| {
            c["id"] = json!(state.id().to_string());
            c["application_id"] = json!(state.config.application_id.to_string());
            c["version"] = json!("1");
            if let Some(g) = guild {
                c["guild_id"] = json!(g.to_string());
            }
            c
        })
        .collect();
    {
        // A PUT replaces the whole set (of the guild, or the global one).
        let mut inner = lock(&state.inner);
        inner.commands.retain(|(g, _), _| *g != guild);
        for c in &commands {
            if let Some(name) = c["name"].as_str() {
                inner.commands.insert((guild, name.to_string()), c.clone());
            }
        }
    }
    state.record(SimEvent::Commands {
        guild,
        commands: Value::Array(commands.clone()),
    });
    Json(Value::Array(commands)).into_response()
}

async fn global_commands(State(state): S, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    register(&state, None, body)
}

async fn guild_commands(
    State(state): S,
    Path((_app, guild)): Path<(String, u64)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    register(&state, Some(guild), body)
}

fn reply_event(interaction: u64, data: &Value) -> SimEvent {
    SimEvent::InteractionReply {
        interaction,
        content: data["content"].as_str().unwrap_or_default().to_string(),
        ephemeral: data["flags"].as_u64().is_some_and(|f| f & 64 != 0),
    }
}

async fn callback(
    State(state): S,
    Path((id, token)): Path<(u64, String)>,
    Json(body): Json<Value>,
) -> Response {
    let known = lock(&state.inner).interactions.get(&id) == Some(&token);
    if !known {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"code": 10062, "message": "Unknown interaction"})),
        )
            .into_response();
    }
    state.record(reply_event(id, &body["data"]));
    StatusCode::NO_CONTENT.into_response()
}

fn message(state: &Shared, body: &Value) -> Value {
    let bot = &state.config.bot;
    json!({
        "id": state.id().to_string(), "channel_id": "1300000000000000002",
        "author": {"id": bot.id.to_string(), "username": bot.name, "discriminator": "0",
                   "avatar": null, "bot": true},
        "content": body["content"].as_str().unwrap_or_default(),
        "timestamp": TIMESTAMP, "edited_timestamp": null, "type": 20, "tts": false,
        "pinned": false, "mention_everyone": false, "mention_roles": [], "mentions": [],
        "attachments": [], "embeds": [], "components": [],
        "flags": body["flags"].as_u64().unwrap_or(0),
        "webhook_id": state.config.application_id.to_string(),
        "application_id": state.config.application_id.to_string(),
    })
}

fn interaction_of(state: &Shared, token: &str) -> Option<u64> {
    lock(&state.inner)
        .interactions
        .iter()
        .find(|(_, t)| t.as_str() == token)
        .map(|(id, _)| *id)
}

async fn edit_original(
    State(state): S,
    Path((_app, token, message_id)): Path<(String, String, String)>,
    Json(body): Json<Value>,
) -> Response {
    let Some(id) = interaction_of(&state, &token).filter(|_| message_id == "@original") else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"code": 10008, "message": "Unknown Message"})),
        )
            .into_response();
    };
    state.record(reply_event(id, &body));
    Json(message(&state, &body)).into_response()
}

async fn followup(
    State(state): S,
    Path((_app, token)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    let Some(id) = interaction_of(&state, &token) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"code": 10015, "message": "Unknown Webhook"})),
        )
            .into_response();
    };
    state.record(reply_event(id, &body));
    Json(message(&state, &body)).into_response()
}
