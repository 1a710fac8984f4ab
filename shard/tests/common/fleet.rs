//! Fleet-state helpers: a real redis-server with a password on a free port.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The password of the test Redis (must never appear in logs).
pub const PASSWORD: &str = "s3cret-redis-pw";
/// The bot's key prefix in tests.
pub const PREFIX: &str = "voicebot:test:jarvis:";

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real redis-server (installed by scripts/setup.sh) with a password, no persistence: a
/// restart comes back empty, the worst case for the pods. Stopped when dropped.
pub struct Redis {
    child: Option<Child>,
    port: u16,
}

impl Redis {
    pub fn start() -> Self {
        let mut r = Self {
            child: None,
            port: free_port(),
        };
        r.restart();
        r
    }

    /// Starts it (again) on the same port.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--requirepass",
                PASSWORD,
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/setup.sh installs it)");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        self.child = Some(child);
    }

    /// Kills it (SIGKILL: no goodbye).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: Redis hangs (its connections stay open, nothing answers), as a Redis does
    /// that is swapping, paused by its node, or stuck in a long command.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT: Redis answers again, with everything it held.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("redis is running").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    }

    pub fn url(&self) -> String {
        format!("redis://:{PASSWORD}@127.0.0.1:{}", self.port)
    }

    pub async fn hash(&self, key: &str) -> std::collections::HashMap<String, String> {
        let client = redis::Client::open(self.url()).unwrap();
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            return Default::default();
        };
        redis::cmd("HGETALL")
            .arg(format!("{PREFIX}{key}"))
            .query_async(&mut conn)
            .await
            .unwrap_or_default()
    }

    /// Polls until `key`'s hash satisfies `pred` (10 s).
    pub async fn wait_hash(
        &self,
        key: &str,
        pred: impl Fn(&std::collections::HashMap<String, String>) -> bool,
    ) -> std::collections::HashMap<String, String> {
        let start = Instant::now();
        loop {
            let h = self.hash(key).await;
            if pred(&h) {
                return h;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{PREFIX}{key} never matched; it holds {h:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
