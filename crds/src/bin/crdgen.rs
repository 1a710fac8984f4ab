//! `crdgen`: prints the `VoiceBot` CustomResourceDefinition as YAML.
//!
//! `cargo run -p voicebot-crds --bin crdgen > crds/voicebot.yaml`

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    match voicebot_crds::crd_yaml() {
        Ok(yaml) => {
            if std::io::stdout().write_all(yaml.as_bytes()).is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crdgen: cannot render the CRD: {e}");
            ExitCode::FAILURE
        }
    }
}
