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
}

impl Voice {
    /// Sample rate of the audio this voice produces.
    pub fn sample_rate(&self) -> u32 {
        match self {
            Self::Piper(v) => v.lock().map_or(22_050, |v| v.sample_rate()),
            Self::Http(_) => http::PCM_RATE,
        }
    }

    /// Speaks `text`, sending audio chunks into `tx` as they are ready.
    pub async fn speak(&self, text: String, tx: &mpsc::Sender<Vec<f32>>) -> Result<(), String> {
        match self {
            Self::Piper(voice) => {
                let voice = voice.clone();
                let audio = tokio::task::spawn_blocking(move || {
                    voice
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .synthesize(&text)
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
                if !audio.is_empty() {
                    let _ = tx.send(audio).await;
                }
                Ok(())
            }
            Self::Http(tts) => tts
                .synthesize_into(&text, tx)
                .await
                .map_err(|e| e.to_string()),
        }
    }
}
