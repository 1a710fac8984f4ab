//! `voicebot-operator`: turns `VoiceBot` resources into shard StatefulSets.
//!
//! Not implemented yet (it needs only the workspace and is its own piece of work); the binary
//! exists so the workspace layout, the Dockerfile and the chart have their final names.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "voicebot-operator: the reconciler for {} is not implemented yet",
        voicebot_crds::api_version()
    );
    ExitCode::from(2)
}
