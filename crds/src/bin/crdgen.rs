//! `crdgen`: prints the `VoiceBot` CustomResourceDefinition as YAML.
//!
//! `cargo run -p voicebot-crds --bin crdgen > crds/voicebot.yaml`
//! `cargo run -p voicebot-crds --bin crdgen -- --fields`: the README's field table.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--fields") {
        print!("{}", voicebot_crds::fields::markdown());
        return ExitCode::SUCCESS;
    }
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
