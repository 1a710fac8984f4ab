//! The pod's shared engines: a few [`Models`] workers lent to whichever speaker needs one.
//!
//! Voice activity runs per speaker (cheap, ~0.1 ms per 32 ms chunk); Smart Turn and Whisper
//! are the heavy part, and a pod has only so many cores. Each worker is one Smart Turn session
//! and one Whisper decoder (the Whisper weights are shared between workers). A speaker that
//! needs an engine waits for one — in a bounded queue (`max_waiting`) and for a bounded time
//! (`max_wait`); beyond either the work is refused with [`Error::Overloaded`], which the
//! listener turns into a counted drop ("overloaded") instead of a stuck speaker or a growing
//! backlog of stale speech.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::pipeline::Engines;
use super::stt::Transcript;
use crate::{Error, Result, lock};

/// Bounds of the pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Speakers that may wait for an engine at once; more are refused at once.
    pub max_waiting: usize,
    /// How long a speaker may wait; a turn that waited longer would be answered too late.
    pub max_wait: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_waiting: 32,
            max_wait: Duration::from_secs(3),
        }
    }
}

/// Counters of the pool (monotonic).
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Engine loans.
    pub loans: AtomicU64,
    /// Loans that had to wait for a worker.
    pub waited: AtomicU64,
    /// Total time spent waiting, µs.
    pub wait_us: AtomicU64,
    /// Refused because too many were already waiting.
    pub refused_queue_full: AtomicU64,
    /// Refused because no worker came free within `max_wait`.
    pub refused_timeout: AtomicU64,
}

struct State<E> {
    free: Vec<E>,
    waiting: usize,
}

/// A fixed set of engines, lent out one at a time.
pub struct EnginePool<E> {
    state: Mutex<State<E>>,
    returned: Condvar,
    workers: usize,
    config: PoolConfig,
    stats: PoolStats,
}

impl<E: Engines> EnginePool<E> {
    /// A pool of these workers.
    pub fn new(workers: Vec<E>, config: PoolConfig) -> Self {
        Self {
            workers: workers.len(),
            state: Mutex::new(State {
                free: workers,
                waiting: 0,
            }),
            returned: Condvar::new(),
            config,
            stats: PoolStats::default(),
        }
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The counters.
    pub fn stats(&self) -> &PoolStats {
        &self.stats
    }

    /// Takes a worker, waiting (blocking the thread) within the pool's bounds.
    pub fn lease(&self) -> Result<Lease<'_, E>> {
        let mut state = lock(&self.state);
        self.stats.loans.fetch_add(1, Ordering::Relaxed);
        if let Some(engine) = state.free.pop() {
            return Ok(Lease {
                pool: self,
                engine: Some(engine),
            });
        }
        if state.waiting >= self.config.max_waiting {
            self.stats
                .refused_queue_full
                .fetch_add(1, Ordering::Relaxed);
            return Err(Error::Overloaded("too many speakers waiting for an engine"));
        }
        state.waiting += 1;
        let started = Instant::now();
        let deadline = started + self.config.max_wait;
        let engine = loop {
            if let Some(engine) = state.free.pop() {
                break Some(engine);
            }
            let now = Instant::now();
            if now >= deadline {
                break None;
            }
            state = match self.returned.wait_timeout(state, deadline - now) {
                Ok((s, _)) => s,
                Err(poisoned) => poisoned.into_inner().0,
            };
        };
        state.waiting -= 1;
        self.stats.waited.fetch_add(1, Ordering::Relaxed);
        self.stats
            .wait_us
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        match engine {
            Some(engine) => Ok(Lease {
                pool: self,
                engine: Some(engine),
            }),
            None => {
                self.stats.refused_timeout.fetch_add(1, Ordering::Relaxed);
                Err(Error::Overloaded("no engine came free in time"))
            }
        }
    }

    /// Takes a worker only if one is free now.
    pub fn try_lease(&self) -> Option<Lease<'_, E>> {
        let engine = lock(&self.state).free.pop()?;
        self.stats.loans.fetch_add(1, Ordering::Relaxed);
        Some(Lease {
            pool: self,
            engine: Some(engine),
        })
    }

    /// An [`Engines`] that takes a worker on first use and keeps it until dropped: VAD-only
    /// audio never touches the pool, and one call's Smart Turn and Whisper run on one loan.
    pub fn borrower(&self) -> Borrower<'_, E> {
        Borrower {
            pool: self,
            lease: None,
        }
    }

    fn give_back(&self, engine: E) {
        lock(&self.state).free.push(engine);
        self.returned.notify_one();
    }
}

/// A worker on loan; it goes back to the pool when dropped.
pub struct Lease<'a, E: Engines> {
    pool: &'a EnginePool<E>,
    engine: Option<E>,
}

impl<E: Engines> Lease<'_, E> {
    fn engine(&mut self) -> Result<&mut E> {
        self.engine
            .as_mut()
            .ok_or(Error::Overloaded("engine already returned"))
    }
}

impl<E: Engines> Drop for Lease<'_, E> {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            self.pool.give_back(engine);
        }
    }
}

impl<E: Engines> Engines for Lease<'_, E> {
    fn end_of_turn(&mut self, audio: &[f32]) -> Result<f32> {
        self.engine()?.end_of_turn(audio)
    }

    fn transcribe(&mut self, audio: &[f32], hint: &str) -> Result<Transcript> {
        self.engine()?.transcribe(audio, hint)
    }
}

/// Borrows a worker lazily; see [`EnginePool::borrower`].
pub struct Borrower<'a, E: Engines> {
    pool: &'a EnginePool<E>,
    lease: Option<Lease<'a, E>>,
}

impl<'a, E: Engines> Borrower<'a, E> {
    fn lease(&mut self) -> Result<&mut Lease<'a, E>> {
        if self.lease.is_none() {
            self.lease = Some(self.pool.lease()?);
        }
        self.lease
            .as_mut()
            .ok_or(Error::Overloaded("engine already returned"))
    }
}

impl<E: Engines> Engines for Borrower<'_, E> {
    fn end_of_turn(&mut self, audio: &[f32]) -> Result<f32> {
        self.lease()?.end_of_turn(audio)
    }

    fn transcribe(&mut self, audio: &[f32], hint: &str) -> Result<Transcript> {
        self.lease()?.transcribe(audio, hint)
    }

    fn transcribe_if_idle(&mut self, audio: &[f32], hint: &str) -> Result<Option<Transcript>> {
        if self.lease.is_none() {
            self.lease = self.pool.try_lease();
        }
        match self.lease.as_mut() {
            Some(lease) => lease.transcribe(audio, hint).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// An engine that takes a fixed time, counting the calls made on it.
    struct Slow(Duration, Arc<AtomicU64>);

    impl Engines for Slow {
        fn end_of_turn(&mut self, _: &[f32]) -> Result<f32> {
            std::thread::sleep(self.0);
            self.1.fetch_add(1, Ordering::Relaxed);
            Ok(1.0)
        }

        fn transcribe(&mut self, _: &[f32], _: &str) -> Result<Transcript> {
            std::thread::sleep(self.0);
            self.1.fetch_add(1, Ordering::Relaxed);
            Ok(Transcript::default())
        }
    }

    fn pool(workers: usize, config: PoolConfig) -> (Arc<EnginePool<Slow>>, Arc<AtomicU64>) {
        let calls = Arc::new(AtomicU64::new(0));
        let w = (0..workers)
            .map(|_| Slow(Duration::from_millis(50), calls.clone()))
            .collect();
        (Arc::new(EnginePool::new(w, config)), calls)
    }

    #[test]
    fn speakers_share_the_workers_and_all_get_served_within_the_bounds() {
        let (pool, calls) = pool(2, PoolConfig::default());
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let pool = pool.clone();
                std::thread::spawn(move || pool.borrower().transcribe(&[], "").is_ok())
            })
            .collect();
        let ok = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|ok| *ok)
            .count();
        assert_eq!(ok, 6);
        assert_eq!(calls.load(Ordering::Relaxed), 6);
        assert_eq!(pool.stats().loans.load(Ordering::Relaxed), 6);
        assert!(pool.stats().waited.load(Ordering::Relaxed) >= 4);
        // Every worker came back.
        assert_eq!(lock(&pool.state).free.len(), 2);
    }

    #[test]
    fn beyond_the_queue_or_the_wait_work_is_refused_and_counted() {
        let (pool, calls) = pool(
            1,
            PoolConfig {
                max_waiting: 1,
                max_wait: Duration::from_millis(70),
            },
        );
        // Holding the only worker: the next caller waits, the one after is refused at once.
        let held = pool.lease().unwrap();
        let waiter = {
            let pool = pool.clone();
            std::thread::spawn(move || pool.borrower().transcribe(&[], "").map(|_| ()))
        };
        while lock(&pool.state).waiting == 0 {
            std::thread::yield_now();
        }
        let refused = pool.borrower().transcribe(&[], "");
        assert!(matches!(refused, Err(Error::Overloaded(_))), "{refused:?}");
        // The waiter gives up after max_wait.
        let waited = waiter.join().unwrap();
        assert!(matches!(waited, Err(Error::Overloaded(_))), "{waited:?}");
        drop(held);
        let s = pool.stats();
        assert_eq!(s.refused_queue_full.load(Ordering::Relaxed), 1);
        assert_eq!(s.refused_timeout.load(Ordering::Relaxed), 1);
        assert_eq!(calls.load(Ordering::Relaxed), 0);
        // Nothing is stuck: the worker is back and serves the next call.
        assert!(pool.borrower().end_of_turn(&[]).is_ok());
        assert_eq!(lock(&pool.state).waiting, 0);
    }

    #[test]
    fn speculative_work_never_waits_for_a_worker() {
        let (pool, calls) = pool(1, PoolConfig::default());
        let held = pool.lease().unwrap();
        let t = Instant::now();
        assert!(
            pool.borrower()
                .transcribe_if_idle(&[], "")
                .unwrap()
                .is_none()
        );
        assert!(t.elapsed() < Duration::from_millis(40));
        drop(held);
        assert!(
            pool.borrower()
                .transcribe_if_idle(&[], "")
                .unwrap()
                .is_some()
        );
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_borrower_keeps_one_worker_for_all_its_calls() {
        let (pool, calls) = pool(1, PoolConfig::default());
        let mut b = pool.borrower();
        b.end_of_turn(&[]).unwrap();
        b.transcribe(&[], "").unwrap();
        assert_eq!(pool.stats().loans.load(Ordering::Relaxed), 1);
        drop(b);
        assert_eq!(calls.load(Ordering::Relaxed), 2);
        assert_eq!(lock(&pool.state).free.len(), 1);
    }
}
