//! Helpers shared by the operator's integration tests: the shard tests' Redis (a real
//! `redis-server` on a free port, with a password, installed by scripts/setup.sh), so the
//! finalizer is tested against the same kind of Redis the pods use.
#![allow(dead_code, unused_imports)] // each test binary uses some of them

#[path = "../../../shard/tests/common/fleet.rs"]
mod fleet;

pub use fleet::{Redis, free_port};
