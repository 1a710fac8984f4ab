//! The main gateway WebSocket (`/?v=10&encoding=json`), uncompressed text frames.
//!
//! Shapes follow twilight-model 0.17.1 (see PROTOCOL.md): `t`, `s`, `op` come first in every
//! frame, timestamps have at least 25 characters, dispatches always carry an integer `s`.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::state::{DoubleOwner, Guild, SimEvent, User, lock};
use crate::state::{Out, Session, Shared};

/// An abrupt close with a resumable code, as after a network failure.
const DROP: Out = Out::Close(4000, "simulated drop");

pub(crate) const TIMESTAMP: &str = "2026-01-01T00:00:00.000000+00:00";

pub(crate) async fn serve(listener: TcpListener, state: Arc<Shared>) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(connection(stream, state.clone()));
    }
}

fn frame(t: Option<&str>, s: Option<u64>, op: u8, d: Value) -> String {
    // Key order matters to twilight's fast path: t, s, op, then d.
    format!(
        r#"{{"t":{},"s":{},"op":{op},"d":{d}}}"#,
        t.map_or("null".to_string(), |t| format!("\"{t}\"")),
        s.map_or("null".to_string(), |s| s.to_string()),
    )
}

pub(crate) fn shard_of(guild: u64, shards: u32) -> u32 {
    ((guild >> 22) % u64::from(shards.max(1))) as u32
}

/// Sends a dispatch on a session, with the next sequence number.
fn dispatch(state: &Shared, session_id: &str, t: &str, d: Value) -> bool {
    let mut inner = lock(&state.inner);
    let Some(session) = inner.sessions.get_mut(session_id) else {
        return false;
    };
    session.seq += 1;
    let text = frame(Some(t), Some(session.seq), 0, d);
    session
        .tx
        .as_ref()
        .is_some_and(|tx| tx.send(Out::Text(text)).is_ok())
}

pub(crate) fn member_json(user: &User, permissions: Option<&str>) -> Value {
    let mut m = json!({
        "user": user.json(),
        "roles": [],
        "deaf": false,
        "mute": false,
        "flags": 0,
        "joined_at": TIMESTAMP,
        "nick": null,
    });
    if let Some(p) = permissions {
        m["permissions"] = json!(p);
    }
    m
}

fn guild_json(g: &Guild, bot: &User) -> Value {
    let mut channels = vec![json!({
        "id": g.text_channel.to_string(), "type": 0, "name": "general", "position": 0,
        "permission_overwrites": [], "nsfw": false,
    })];
    for (i, (id, name)) in g.voice_channels.iter().enumerate() {
        channels.push(json!({
            "id": id.to_string(), "type": 2, "name": name, "position": i + 1,
            "bitrate": 64000, "user_limit": 0, "permission_overwrites": [],
        }));
    }
    let mut members: Vec<Value> = g.members.iter().map(|u| member_json(u, None)).collect();
    members.push(member_json(bot, None));
    let voice_states: Vec<Value> = g
        .voice
        .iter()
        .map(|(user, channel)| {
            json!({
                "guild_id": g.id.to_string(), "channel_id": channel.to_string(),
                "user_id": user.to_string(), "session_id": format!("voice-{user}"),
                "deaf": false, "mute": false, "self_deaf": false, "self_mute": false,
                "self_stream": false, "self_video": false, "suppress": false,
                "request_to_speak_timestamp": null,
            })
        })
        .collect();
    json!({
        "id": g.id.to_string(), "name": g.name, "owner_id": g.owner.to_string(), "icon": null,
        "afk_timeout": 300, "default_message_notifications": 0, "explicit_content_filter": 0,
        "features": [], "mfa_level": 0, "nsfw_level": 0, "preferred_locale": "en-US",
        "premium_progress_bar_enabled": false, "premium_tier": 0, "system_channel_flags": 0,
        "verification_level": 0, "unavailable": false, "large": false,
        "member_count": members.len(), "joined_at": TIMESTAMP,
        "roles": [{
            "id": g.id.to_string(), "name": "@everyone", "color": 0,
            "colors": {"primary_color": 0, "secondary_color": null, "tertiary_color": null},
            "hoist": false, "managed": false, "mentionable": false,
            // View channel, send messages, connect, speak, use voice activity.
            "permissions": "36701184", "position": 0, "flags": 0,
        }],
        "channels": channels, "members": members, "voice_states": voice_states,
        "emojis": [], "stickers": [], "threads": [], "presences": [],
        "stage_instances": [], "guild_scheduled_events": [],
    })
}

async fn connection(stream: TcpStream, state: Arc<Shared>) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    let hello = frame(
        None,
        None,
        10,
        json!({"heartbeat_interval": state.config.heartbeat_interval_ms}),
    );
    if sink.send(Message::text(hello)).await.is_err() {
        return;
    }
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            match out {
                Out::Text(text) => {
                    if sink.send(Message::text(text)).await.is_err() {
                        return;
                    }
                }
                Out::Close(code, reason) => {
                    // When the client closed first, tungstenite has queued the echo already
                    // and refuses a second close: flushing sends the queued one.
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code: CloseCode::Library(code),
                            reason: reason.into(),
                        })))
                        .await;
                    let _ = sink.flush().await;
                    return;
                }
            }
        }
    });
    let mut session_id: Option<String> = None;
    while let Some(Ok(msg)) = source.next().await {
        let Message::Text(text) = msg else {
            if let Message::Close(frame) = msg {
                // Echo the client's close, as Discord does (the client then knows it is done).
                let code = frame.map_or(1000, |f| u16::from(f.code));
                let _ = tx.send(Out::Close(code, ""));
                break;
            }
            continue;
        };
        let Ok(payload) = serde_json::from_str::<Value>(text.as_str()) else {
            let _ = tx.send(DROP);
            break;
        };
        let d = &payload["d"];
        match payload["op"].as_u64() {
            Some(1) => {
                let _ = tx.send(Out::Text(frame(None, None, 11, Value::Null)));
            }
            Some(2) => {
                let token = d["token"].as_str().unwrap_or_default();
                if token.trim_start_matches("Bot ") != state.config.token {
                    // 4004: authentication failed (fatal for the client).
                    let _ = tx.send(Out::Close(4004, "Authentication failed."));
                    break;
                }
                let shard = [
                    d["shard"][0].as_u64().unwrap_or(0) as u32,
                    d["shard"][1].as_u64().unwrap_or(1) as u32,
                ];
                state.record(SimEvent::Identify {
                    shard,
                    intents: d["intents"].as_u64().unwrap_or(0),
                    at_ms: state.at_ms(),
                });
                let id = format!("sim-session-{}", state.id());
                let mut inner = lock(&state.inner);
                let mut doubles = Vec::new();
                for g in inner.guilds.keys() {
                    if shard_of(*g, shard[1]) != shard[0] {
                        continue;
                    }
                    for s in inner.sessions.values() {
                        if s.tx.is_some() && shard_of(*g, s.shard[1]) == s.shard[0] {
                            doubles.push(DoubleOwner {
                                guild: *g,
                                connected: s.shard,
                                identified: shard,
                            });
                        }
                    }
                }
                if !doubles.is_empty() {
                    tracing::warn!(?doubles, "a guild owned by two connected sessions");
                }
                inner.double_owners.extend(doubles);
                // Checked and registered under one lock: two shards identifying at once still
                // see each other.
                inner.sessions.insert(
                    id.clone(),
                    Session {
                        shard,
                        seq: 0,
                        tx: Some(tx.clone()),
                        guilds_sent: false,
                    },
                );
                drop(inner);
                session_id = Some(id.clone());
                let guilds: Vec<Guild> = lock(&state.inner)
                    .guilds
                    .values()
                    .filter(|g| shard_of(g.id, shard[1]) == shard[0])
                    .cloned()
                    .collect();
                let ready = json!({
                    "v": 10,
                    "user": {
                        "id": state.config.bot.id.to_string(), "username": state.config.bot.name,
                        "discriminator": "0", "avatar": null, "bot": true,
                        "mfa_enabled": false, "flags": 0,
                    },
                    "guilds": guilds.iter()
                        .map(|g| json!({"id": g.id.to_string(), "unavailable": true}))
                        .collect::<Vec<_>>(),
                    "session_id": id,
                    "resume_gateway_url": state.gateway_url,
                    "shard": shard,
                    "application": {"id": state.config.application_id.to_string(), "flags": 0},
                });
                dispatch(&state, &id, "READY", ready);
                for g in &guilds {
                    dispatch(
                        &state,
                        &id,
                        "GUILD_CREATE",
                        guild_json(g, &state.config.bot),
                    );
                }
                if let Some(s) = lock(&state.inner).sessions.get_mut(&id) {
                    s.guilds_sent = true;
                }
            }
            Some(6) => {
                let id = d["session_id"].as_str().unwrap_or_default().to_string();
                let seq = d["seq"].as_u64().unwrap_or(0);
                let accepted = {
                    let mut inner = lock(&state.inner);
                    match inner.sessions.get_mut(&id) {
                        Some(s) => {
                            s.tx = Some(tx.clone());
                            true
                        }
                        None => false,
                    }
                };
                state.record(SimEvent::Resume {
                    session_id: id.clone(),
                    seq,
                    accepted,
                });
                if accepted {
                    session_id = Some(id.clone());
                    dispatch(&state, &id, "RESUMED", json!({}));
                } else {
                    let _ = tx.send(Out::Text(frame(None, None, 9, json!(false))));
                }
            }
            Some(4) => {
                let guild = d["guild_id"]
                    .as_str()
                    .and_then(|g| g.parse().ok())
                    .unwrap_or(0);
                let channel: Option<u64> = d["channel_id"].as_str().and_then(|c| c.parse().ok());
                state.record(SimEvent::VoiceState { guild, channel });
                if let Some(id) = &session_id {
                    voice_state(&state, id, guild, channel, d);
                }
            }
            _ => {}
        }
    }
    // The connection is gone; the session stays resumable.
    if let Some(id) = session_id
        && let Some(s) = lock(&state.inner).sessions.get_mut(&id)
    {
        s.tx = None;
    }
    drop(tx);
    let _ = writer.await;
}

/// Who is in which voice channel of `guild`, for the next GUILD_CREATE.
fn remember_voice(state: &Shared, guild: u64, user: u64, channel: Option<u64>) {
    if let Some(g) = lock(&state.inner).guilds.get_mut(&guild) {
        match channel {
            Some(c) => {
                g.voice.insert(user, c);
            }
            None => {
                g.voice.remove(&user);
            }
        }
    }
}

/// Answers a voice state update like Discord: the bot's voice state, then the voice server.
fn voice_state(state: &Shared, session: &str, guild: u64, channel: Option<u64>, d: &Value) {
    let bot = &state.config.bot;
    remember_voice(state, guild, bot.id, channel);
    let vs = json!({
        "guild_id": guild.to_string(),
        "channel_id": channel.map(|c| c.to_string()),
        "user_id": bot.id.to_string(),
        "session_id": format!("voice-{session}"),
        "deaf": false, "mute": false,
        "self_deaf": d["self_deaf"].as_bool().unwrap_or(false),
        "self_mute": d["self_mute"].as_bool().unwrap_or(false),
        "self_stream": false, "self_video": false, "suppress": false,
        "request_to_speak_timestamp": null,
        "member": member_json(bot, None),
    });
    dispatch(state, session, "VOICE_STATE_UPDATE", vs);
    let token = format!("voice-token-{}", state.id());
    state.voice.voice_state(guild, channel, token.clone());
    if channel.is_some() {
        let server = json!({
            "token": token,
            "guild_id": guild.to_string(),
            "endpoint": state.voice.endpoint,
        });
        dispatch(state, session, "VOICE_SERVER_UPDATE", server);
    }
}

/// The guild's voice server moves: a new VOICE_SERVER_UPDATE (new token) on the guild's shard;
/// the old voice connection is closed (4014) once the bot has had the news.
pub(crate) fn move_voice_server(state: &Shared, guild: u64) -> Result<(), String> {
    let (session, _) = guild_session(state, guild)?;
    let token = format!("voice-token-{}", state.id());
    let old = state.voice.move_server(guild, token.clone())?;
    let server = json!({
        "token": token,
        "guild_id": guild.to_string(),
        "endpoint": state.voice.endpoint,
    });
    dispatch(state, &session, "VOICE_SERVER_UPDATE", server);
    if let Some(ws) = old {
        let _ = ws.send(crate::voice::WsOut::Close(4014));
    }
    Ok(())
}

/// The bot's commands as `guild` offers them (its own and the global ones), once the guild has
/// been delivered to a connected shard of the bot; `None` before.
pub(crate) fn commands_offered(state: &Shared, guild: u64) -> Option<Value> {
    let inner = lock(&state.inner);
    inner.guilds.get(&guild)?;
    let delivered = inner
        .sessions
        .values()
        .any(|s| s.tx.is_some() && s.guilds_sent && shard_of(guild, s.shard[1]) == s.shard[0]);
    let commands: Vec<Value> = inner
        .commands
        .iter()
        .filter(|((g, _), _)| g.is_none() || *g == Some(guild))
        .map(|(_, c)| c.clone())
        .collect();
    (delivered && !commands.is_empty()).then_some(Value::Array(commands))
}

/// The bot is removed from a guild: GUILD_DELETE (no `unavailable`) on its shard, and the
/// guild is gone from the simulator (a new session does not get it).
pub(crate) fn remove_guild(state: &Shared, guild: u64) -> Result<(), String> {
    let (session, _) = guild_session(state, guild)?;
    lock(&state.inner).guilds.remove(&guild);
    if dispatch(
        state,
        &session,
        "GUILD_DELETE",
        json!({"id": guild.to_string()}),
    ) {
        Ok(())
    } else {
        Err("the shard's connection is gone".into())
    }
}

fn guild_session(state: &Shared, guild: u64) -> Result<(String, Guild), String> {
    let inner = lock(&state.inner);
    let g = inner
        .guilds
        .get(&guild)
        .cloned()
        .ok_or_else(|| format!("no guild {guild}"))?;
    let session = inner
        .sessions
        .iter()
        .find(|(_, s)| s.tx.is_some() && shard_of(guild, s.shard[1]) == s.shard[0])
        .map(|(id, _)| id.clone())
        .ok_or_else(|| format!("no connected shard for guild {guild}"))?;
    Ok((session, g))
}

/// A user's voice state changes; the guild's shard is told.
pub(crate) fn user_voice(
    state: &Shared,
    guild: u64,
    user: &User,
    channel: Option<u64>,
) -> Result<(), String> {
    let (session, _) = guild_session(state, guild)?;
    remember_voice(state, guild, user.id, channel);
    crate::voice::dave_user_moved(state, guild, user.id, channel);
    let vs = json!({
        "guild_id": guild.to_string(),
        "channel_id": channel.map(|c| c.to_string()),
        "user_id": user.id.to_string(),
        "session_id": format!("user-voice-{}", user.id),
        "deaf": false, "mute": false, "self_deaf": false, "self_mute": false,
        "self_stream": false, "self_video": false, "suppress": false,
        "request_to_speak_timestamp": null,
        "member": member_json(user, None),
    });
    if dispatch(state, &session, "VOICE_STATE_UPDATE", vs) {
        Ok(())
    } else {
        Err("the shard's connection is gone".into())
    }
}

/// Sends an INTERACTION_CREATE for a slash command to the guild's shard.
pub(crate) fn inject_command(
    state: &Shared,
    guild: u64,
    user: &User,
    command: &str,
    options: Value,
) -> Result<u64, String> {
    let (session, g) = guild_session(state, guild)?;
    let has = g.permissions_of(user.id);
    // Discord offers a command only to members with all of its default permissions (or
    // Administrator), unless an admin allowed them; it never reaches the bot otherwise.
    let registered = {
        let inner = lock(&state.inner);
        inner
            .commands
            .get(&(Some(guild), command.to_string()))
            .or_else(|| inner.commands.get(&(None, command.to_string())))
            .cloned()
    };
    let needed: Option<u64> = registered
        .as_ref()
        .and_then(|c| c["default_member_permissions"].as_str())
        .and_then(|p| p.parse().ok());
    let allowed = g
        .command_overrides
        .get(command)
        .is_some_and(|users| users.contains(&user.id));
    if let Some(needed) = needed
        && has & needed != needed
        && has & (1 << 3) == 0
        && !allowed
    {
        return Err(format!(
            "Discord does not offer /{command} to {}: it needs permissions {needed} (they have {has})",
            user.name
        ));
    }
    let id = state.id();
    let token = format!("interaction-token-{id}");
    lock(&state.inner).interactions.insert(id, token.clone());
    let permissions = has.to_string();
    let d = json!({
        "id": id.to_string(),
        "application_id": state.config.application_id.to_string(),
        "type": 2,
        "token": token,
        "version": 1,
        "guild_id": guild.to_string(),
        "channel_id": g.text_channel.to_string(),
        "channel": {"id": g.text_channel.to_string(), "type": 0, "name": "general"},
        "app_permissions": "2147483647",
        "locale": "en-US",
        "guild_locale": "en-US",
        "context": 0,
        "authorizing_integration_owners": {"0": guild.to_string()},
        "entitlements": [],
        "attachment_size_limit": 8_388_608,
        "member": member_json(user, Some(&permissions)),
        "data": {
            "id": "1300000000000000001",
            "name": command,
            "type": 1,
            "guild_id": guild.to_string(),
            "options": options,
        },
    });
    if dispatch(state, &session, "INTERACTION_CREATE", d) {
        Ok(id)
    } else {
        Err("the shard's connection is gone".into())
    }
}

/// Drops every connection (the sessions stay resumable).
/// Closes every gateway connection with `code`. Codes after which Discord will not resume the
/// session (4007 invalid sequence, 4009 session timed out) also forget it, so a RESUME gets
/// INVALID_SESSION and the bot must IDENTIFY.
pub(crate) fn close_all(state: &Shared, code: u16) {
    let mut inner = lock(&state.inner);
    let forget = matches!(code, 4007 | 4009);
    inner.sessions.retain(|_, s| {
        if let Some(tx) = s.tx.take() {
            let _ = tx.send(Out::Close(code, "closed by the simulator"));
        }
        !forget
    });
}

pub(crate) fn drop_all(state: &Shared) {
    for s in lock(&state.inner).sessions.values_mut() {
        if let Some(tx) = s.tx.take() {
            let _ = tx.send(DROP);
        }
    }
}
