//! `voicebot-models`: model provisioning commands (called by `scripts/setup.sh`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "voicebot-models",
    version,
    about = "Model provisioning for the voice bot"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert CTranslate2 Whisper weights into a whisper.cpp ggml model.
    ConvertWhisper {
        /// `model.bin`, or its parts in order (they are concatenated).
        #[arg(long = "model", required = true)]
        model: Vec<PathBuf>,
        /// The model's `vocabulary.txt`.
        #[arg(long)]
        vocabulary: PathBuf,
        /// Output ggml file.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::ConvertWhisper {
            model,
            vocabulary,
            out,
        } => {
            let started = std::time::Instant::now();
            match voicebot_models::convert_whisper(&model, &vocabulary, &out) {
                Ok(summary) => {
                    println!(
                        "wrote {} ({} tensors, {} encoder / {} decoder layers) in {:.2}s",
                        out.display(),
                        summary.tensors,
                        summary.hparams.n_audio_layer,
                        summary.hparams.n_text_layer,
                        started.elapsed().as_secs_f64()
                    );
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("error: {err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
