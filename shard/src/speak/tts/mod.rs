//! Text-to-speech backends: Piper in the pod, or an OpenAI-compatible HTTP endpoint.

pub mod http;
pub mod piper;

use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, mpsc};

/// An agent's voice.
#[derive(Clone)]
pub enum Voice {
    /// A Piper voice run in the pod (blocking inference, on the blocking pool), with its
    /// pool of sessions.
    Piper(Arc<PiperPool>),
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
        Self::local_pool(env, paths, name, 1)
    }

    /// [`Voice::local`], a Piper voice with `workers` sessions (sentences of several rooms
    /// are synthesised at once; an espeak-ng voice needs no pool).
    pub fn local_pool(
        env: &ort::environment::Environment,
        paths: &crate::models::ModelPaths,
        name: &str,
        workers: usize,
    ) -> Result<Self, crate::error::Error> {
        if name.starts_with(voicebot_config::ESPEAK_PREFIX) {
            return Self::local(env, paths, name);
        }
        let path = paths.piper_voice(name)?;
        let voices = (0..workers.max(1))
            .map(|_| piper::PiperVoice::load(env, &path, 1))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::Piper(Arc::new(PiperPool::new(voices))))
    }

    /// A Piper voice with one session.
    pub fn piper(voice: piper::PiperVoice) -> Self {
        Self::Piper(Arc::new(PiperPool::new(vec![voice])))
    }

    /// Whether `other` is this very voice (the same sessions or endpoint): voices loaded once
    /// are shared by the agents that name them.
    pub fn same_as(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Piper(a), Self::Piper(b)) => Arc::ptr_eq(a, b),
            (Self::Http(a), Self::Http(b)) => Arc::ptr_eq(a, b),
            (Self::Espeak { voice: a, .. }, Self::Espeak { voice: b, .. }) => a == b,
            _ => false,
        }
    }

    /// Sample rate of the audio this voice produces.
    pub fn sample_rate(&self) -> u32 {
        match self {
            Self::Piper(pool) => pool.sample_rate,
            Self::Http(_) => http::PCM_RATE,
            Self::Espeak { rate, .. } => *rate,
        }
    }

    /// Speaks `text`, sending audio chunks into `tx` as they are ready.
    pub async fn speak(&self, text: String, tx: &mpsc::Sender<Vec<f32>>) -> Result<(), String> {
        match self {
            Self::Piper(pool) => {
                let audio = pool.synthesize(text).await?;
                if !audio.is_empty() {
                    let _ = tx.send(audio).await;
                }
                Ok(())
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

/// A Piper voice's sessions: as many sentences synthesised at once as it has sessions; the
/// others wait their turn on a semaphore (not on a blocking thread). A session is handed back
/// by the blocking task itself, so a reply that is abandoned (barge-in) loses none.
pub struct PiperPool {
    free: Arc<Mutex<Vec<piper::PiperVoice>>>,
    permits: Arc<Semaphore>,
    sample_rate: u32,
    size: usize,
}

impl PiperPool {
    /// A pool of these sessions (of one voice).
    pub fn new(voices: Vec<piper::PiperVoice>) -> Self {
        let sample_rate = voices
            .first()
            .map_or(22_050, piper::PiperVoice::sample_rate);
        let size = voices.len();
        Self {
            free: Arc::new(Mutex::new(voices)),
            permits: Arc::new(Semaphore::new(size)),
            sample_rate,
            size,
        }
    }

    /// Sessions in the pool.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Sessions synthesising now.
    pub fn busy(&self) -> usize {
        self.size - self.permits.available_permits()
    }

    /// Sessions waiting for work (all of them once nothing runs: none is ever lost).
    pub fn idle(&self) -> usize {
        crate::lock(&self.free).len()
    }

    /// Speaks `text` on the first free session.
    pub async fn synthesize(&self, text: String) -> Result<Vec<f32>, String> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let free = self.free.clone();
        tokio::task::spawn_blocking(move || {
            let mut voice = crate::lock(&free)
                .pop()
                .ok_or_else(|| "the voice has no session left".to_string())?;
            let result = voice.synthesize(&text).map_err(|e| e.to_string());
            crate::lock(&free).push(voice);
            drop(permit);
            result
        })
        .await
        .map_err(|e| e.to_string())?
    }
}
