//! Log lines a remote peer can cause (a malformed frame, a failing endpoint, a flapping voice
//! server) are throttled: at most one line per site per interval, and the next line that gets
//! through says how many were left out. A peer cannot flood the pod's logs (or its disk, or
//! the cluster's log pipeline), and an operator still sees that it happens and how often.
//!
//! ```ignore
//! peer_warn!(error = %e, "ignoring a malformed frame");
//! // at most once per 10 s from this line: `suppressed=N error=… ignoring a malformed frame`
//! ```

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One log site's budget: one line per `every`.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Throttle {
    /// One line per `every` (usable in a `static`).
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)`: log now, `n` lines having been left out since the last one; `None`: leave
    /// this one out (it is counted).
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut last = crate::lock(&self.last);
        match *last {
            Some(t) if now.saturating_duration_since(t) < self.every => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.suppressed.swap(0, Ordering::Relaxed))
            }
        }
    }
}

/// Peer-caused lines: one per site per this interval.
pub const PEER_LOG_EVERY: Duration = Duration::from_secs(10);

/// `tracing::warn!` for a line a peer can cause: one per call site per [`PEER_LOG_EVERY`],
/// with a `suppressed` field counting those left out.
macro_rules! peer_warn {
    ($($arg:tt)+) => {{
        static THROTTLE: $crate::throttle::Throttle =
            $crate::throttle::Throttle::new($crate::throttle::PEER_LOG_EVERY);
        if let Some(suppressed) = THROTTLE.allow() {
            tracing::warn!(suppressed, $($arg)+);
        }
    }};
}
pub(crate) use peer_warn;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_next_says_how_many_were_left_out() {
        let t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.allow_at(t0), Some(0));
        for i in 1..=1000 {
            assert_eq!(t.allow_at(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(t.allow_at(t0 + Duration::from_secs(10)), Some(1000));
        assert_eq!(t.allow_at(t0 + Duration::from_secs(11)), None);
        assert_eq!(t.allow_at(t0 + Duration::from_secs(21)), Some(1));
    }
}
