//! The Discord side of the shard: which gateway shards this pod runs (`plan`) and the slash
//! commands (`commands`). The gateway connection (twilight) and voice (songbird) build on these.

pub mod commands;
pub mod plan;
