//! The Discord side of the shard: which gateway shards this pod runs (`plan`), the slash
//! commands (`commands`) and what they do to the guilds' state (`guilds`). The gateway
//! connection (twilight) and voice (songbird) build on these.

pub mod commands;
pub mod gateway;
pub mod guilds;
pub mod hosts;
pub mod plan;
pub mod voice;
