//! The pod's observers of its rooms: each reads the rooms' [`GuildEvent`]s (a bounded
//! broadcast: an observer that falls behind misses events, a room never waits for one) and
//! does one thing with them.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::converse::room::RoomEvent;
use crate::discord::plan::shard_of;
use crate::discord::voice::GuildEvent;
use crate::metrics::ShardMetrics;
use crate::state::{FleetState, SavedRun, epoch_ms};

/// The run each guild's bot is speaking, mirrored to the fleet state (from the rooms' events,
/// never from the audio path): recorded when it starts, cleared when its turn ends. Also the
/// pod's log line of each turn.
pub async fn record_runs(mut rx: broadcast::Receiver<GuildEvent>, state: FleetState) {
    loop {
        match rx.recv().await {
            Ok(GuildEvent { guild, event, .. }) => match event {
                RoomEvent::ReplyStarted { session, run } => {
                    let run = SavedRun {
                        session,
                        run,
                        started_ms: epoch_ms(),
                    };
                    state.save_run(guild, Some(&run));
                }
                RoomEvent::Turn(t) => {
                    state.save_run(guild, None);
                    t.log(guild);
                }
                RoomEvent::Dropped { reason, .. } => {
                    tracing::info!(guild, reason = reason.label(), "turn dropped");
                }
                _ => {}
            },
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "the run recorder fell behind the rooms' events");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Room events → the metrics, labelled with the guild's shard (of `shard_count`) and the
/// room's agent.
pub async fn count_rooms(
    mut rx: broadcast::Receiver<GuildEvent>,
    shard_count: u32,
    metrics: Arc<ShardMetrics>,
) {
    loop {
        match rx.recv().await {
            Ok(e) => metrics.observe(shard_of(e.guild, shard_count), &e.agent, &e.event),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "metrics fell behind the rooms' events");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
