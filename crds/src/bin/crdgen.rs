//! `crdgen`: renders the `VoiceBot` CustomResourceDefinition YAML into `crds/`.
//!
//! Not implemented yet: the schema comes from the Rust types, which land with the operator.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "crdgen: the {} ({}) CRD types are not implemented yet; see the operator issue",
        voicebot_crds::KIND,
        voicebot_crds::api_version()
    );
    ExitCode::from(2)
}
