//! Text-to-speech backends: Piper in the pod, or an OpenAI-compatible HTTP endpoint.

pub mod http;
pub mod piper;

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

/// An agent's voice.
#[derive(Clone)]
pub enum Voice {
    /// A Piper voice run in the pod (blocking inference, on the blocking pool).
    Piper(Arc<Mutex<piper::PiperVoice>>),
    /// A remote endpoint.
    Http(Arc<http::HttpTts>),
    /// One of espeak-ng's own voices (`espeak:en-us+f3`): formant synthesis in the pod, the
    /// second local voice while the registries hold a single Piper voice.
    Espeak {
        /// The espeak-ng voice (`en-us+f3`).
        voice: String,
        /// Its output rate.
        rate: u32,
    },
}

impl Voice {
    /// A local voice by name: `espeak:<voice>` is espeak-ng's, anything else a Piper voice in
    /// `paths` (`piper/<name>.onnx`).
    pub fn local(
        env: &ort::environment::Environment,
        paths: &crate::models::ModelPaths,
        name: &str,
    ) -> Result<Self, crate::error::Error> {
        if let Some(voice) = name.strip_prefix(voicebot_config::ESPEAK_PREFIX) {
            let rate = crate::speak::espeak::check_voice(voice).map_err(|e| {
                crate::error::Error::Model {
                    what: "espeak-ng voice",
                    path: std::path::PathBuf::from(voice),
                    reason: e.to_string(),
                }
            })?;
            return Ok(Self::Espeak {
                voice: voice.to_string(),
                rate,
            });
        }
        Ok(Self::Piper(Arc::new(Mutex::new(piper::PiperVoice::load(
            env,
            &paths.piper_voice(name)?,
            1,
        )?))))
    }

    /// Sample rate of the audio this voice produces.
    pub fn sample_rate(&self) -> u32 {
        match self {
            Self::Piper(v) => v.lock().map_or(22_050, |v| v.sample_rate()),
            Self::Http(_) => http::PCM_RATE,
            Self::Espeak { rate, .. } => *rate,
        }
    }

    /// Speaks `text`, sending audio chunks into `tx` as they are ready.
    pub async fn speak(&self, text: String, tx: &mpsc::Sender<Vec<f32>>) -> Result<(), String> {
        match self {
            Self::Piper(voice) => {
                let voice = voice.clone();
                send_blocking(tx, move || {
                    voice
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .synthesize(&text)
                        .map_err(|e| e.to_string())
                })
                .await
            }
            Self::Espeak { voice, .. } => {
                let voice = voice.clone();
                send_blocking(tx, move || {
                    crate::speak::espeak::synthesize(&text, &voice)
                        .map(|(audio, _)| audio)
                        .map_err(|e| e.to_string())
                })
                .await
            }
            Self::Http(tts) => tts
                .synthesize_into(&text, tx)
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

/// Runs a local (blocking) synthesis on the blocking pool and sends its audio, if any.
async fn send_blocking(
    tx: &mpsc::Sender<Vec<f32>>,
    synth: impl FnOnce() -> Result<Vec<f32>, String> + Send + 'static,
) -> Result<(), String> {
    let audio = tokio::task::spawn_blocking(synth)
        .await
        .map_err(|e| e.to_string())??;
    if !audio.is_empty() {
        let _ = tx.send(audio).await;
    }
    Ok(())
}
