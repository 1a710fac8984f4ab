//! The IDENTIFY queue across pods.
//!
//! Discord allows one IDENTIFY per *bucket* (`shard id % max_concurrency`) every 5 s for the
//! whole bot, whichever process sends it. Each bucket is a Redis key taken with
//! `SET <prefix>identify:<max_concurrency>:<bucket> <pod> NX PX <interval>`: the pod that sets
//! it may identify; the others wait for the key to expire (`PTTL`) and try again. The key is
//! its own lease: it lapses after one interval whatever happens to its pod, so a dead pod never
//! blocks the fleet. Without Redis (none configured, or unreachable) the pod spaces its own
//! IDENTIFYs per bucket and says so: it can no longer coordinate with other pods.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use twilight_gateway::queue::Queue;

use super::FleetState;
use crate::lock;

/// The IDENTIFY queue (cheap to clone; one per pod).
#[derive(Clone, Debug)]
pub struct IdentifyQueue {
    inner: Arc<QueueInner>,
}

#[derive(Debug)]
struct QueueInner {
    state: FleetState,
    owner: String,
    max_concurrency: u32,
    interval: Duration,
    /// Bucket → the last IDENTIFY this pod allowed without Redis.
    local: Mutex<HashMap<u32, Instant>>,
}

impl IdentifyQueue {
    /// A queue for `max_concurrency` buckets (Discord's `session_start_limit`), one IDENTIFY
    /// per bucket per `interval` (Discord: 5 s; shorter in tests); `owner` names this pod.
    pub fn new(state: FleetState, owner: &str, max_concurrency: u32, interval: Duration) -> Self {
        Self {
            inner: Arc::new(QueueInner {
                state,
                owner: owner.to_string(),
                max_concurrency: max_concurrency.max(1),
                interval,
                local: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The bucket of a shard.
    pub fn bucket(&self, shard: u32) -> u32 {
        shard % self.inner.max_concurrency
    }

    /// Waits for this shard's turn to IDENTIFY.
    pub async fn acquire(&self, shard: u32) {
        let inner = &self.inner;
        let bucket = self.bucket(shard);
        let key = format!(
            "{}identify:{}:{bucket}",
            inner.state.prefix(),
            inner.max_concurrency
        );
        loop {
            let set = redis::cmd("SET")
                .arg(&key)
                .arg(&inner.owner)
                .arg("NX")
                .arg("PX")
                .arg(lease_ms(inner.interval))
                .clone();
            match inner.state.query::<Option<String>>(&set).await {
                Some(Ok(Some(_))) => {
                    tracing::debug!(shard, bucket, "identify slot taken");
                    return;
                }
                Some(Ok(None)) => {
                    // Another IDENTIFY of this bucket (this pod's or another's) is recent.
                    let pttl = redis::cmd("PTTL").arg(&key).clone();
                    let wait = match inner.state.query::<i64>(&pttl).await {
                        Some(Ok(ms)) if ms > 0 => Duration::from_millis(ms as u64),
                        _ => Duration::from_millis(20),
                    };
                    tokio::time::sleep(wait.min(inner.interval) + Duration::from_millis(5)).await;
                }
                Some(Err(e)) => {
                    tracing::warn!(shard, bucket, error = %e, "the identify queue in Redis does not answer; spacing this pod's IDENTIFYs alone");
                    self.local_slot(bucket).await;
                    return;
                }
                None => {
                    self.local_slot(bucket).await;
                    return;
                }
            }
        }
    }

    /// Spaces this pod's IDENTIFYs per bucket without Redis.
    async fn local_slot(&self, bucket: u32) {
        let inner = &self.inner;
        let at = {
            let mut local = lock(&inner.local);
            let now = Instant::now();
            let at = local
                .get(&bucket)
                .map_or(now, |last| (*last + inner.interval).max(now));
            local.insert(bucket, at);
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// The slot's lease: the interval and 5% more, so that jitter between taking the slot and the
/// IDENTIFY reaching Discord never brings two IDENTIFYs of a bucket closer than the interval.
fn lease_ms(interval: Duration) -> u64 {
    (interval.as_millis() as u64 * 21 / 20).max(1)
}

impl Queue for IdentifyQueue {
    fn enqueue(&self, shard: u32) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let queue = self.clone();
        tokio::spawn(async move {
            queue.acquire(shard).await;
            let _ = tx.send(());
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn without_redis_a_bucket_is_spaced_and_buckets_are_independent() {
        let q = IdentifyQueue::new(FleetState::memory(), "pod-0", 2, Duration::from_secs(5));
        let start = Instant::now();
        q.acquire(0).await;
        q.acquire(1).await;
        assert_eq!(start.elapsed(), Duration::ZERO, "two buckets go at once");
        q.acquire(2).await;
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(5),
            "bucket 0 again waits"
        );
        let rx = q.enqueue(4);
        rx.await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }
}
