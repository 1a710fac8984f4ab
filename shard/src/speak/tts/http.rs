//! Any OpenAI-compatible `/v1/audio/speech` endpoint, streamed.
//!
//! We ask for `response_format: "pcm"` (raw 16-bit little-endian mono at 24 kHz, as OpenAI's API
//! defines it) and hand audio on as the response body arrives, so a sentence starts playing
//! before the endpoint has finished rendering it.

use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::secret::Secret;

/// Sample rate of the `pcm` response format.
pub const PCM_RATE: u32 = 24_000;

/// Settings of an HTTP speech endpoint.
#[derive(Debug, Clone)]
pub struct HttpTtsConfig {
    /// Base URL up to and including `/v1`, e.g. `http://tts:8000/v1`.
    pub base_url: String,
    /// Bearer token, if the endpoint wants one.
    pub api_key: Option<Secret>,
    /// `model` field (e.g. `tts-1`, `kokoro`).
    pub model: String,
    /// `voice` field (the agent's voice).
    pub voice: String,
    /// Whole-request timeout.
    pub timeout: std::time::Duration,
}

/// Why the endpoint gave no audio.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HttpTtsError {
    /// Network or protocol failure.
    #[error("speech endpoint unreachable: {0}")]
    Transport(String),
    /// The endpoint answered with an error status.
    #[error("speech endpoint answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
}

/// A client for one endpoint and voice.
#[derive(Debug, Clone)]
pub struct HttpTts {
    config: HttpTtsConfig,
    http: reqwest::Client,
}

impl HttpTts {
    /// A client (no connection is made until the first sentence).
    pub fn new(config: HttpTtsConfig) -> Result<Self, HttpTtsError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| HttpTtsError::Transport(e.to_string()))?;
        Ok(Self { config, http })
    }

    /// Streams the speech for `text` as f32 chunks at [`PCM_RATE`] into `tx`.
    pub async fn synthesize_into(
        &self,
        text: &str,
        tx: &mpsc::Sender<Vec<f32>>,
    ) -> Result<(), HttpTtsError> {
        let url = format!(
            "{}/audio/speech",
            self.config.base_url.trim_end_matches('/')
        );
        let mut request = self.http.post(&url).json(&serde_json::json!({
            "model": self.config.model,
            "voice": self.config.voice,
            "input": text,
            "response_format": "pcm",
        }));
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key.expose());
        }
        // reqwest's errors can carry the URL but never the bearer token.
        let response = request
            .send()
            .await
            .map_err(|e| HttpTtsError::Transport(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(HttpTtsError::Status {
                status: status.as_u16(),
                body: body.chars().take(200).collect(),
            });
        }
        let mut body = response.bytes_stream();
        let mut carry: Option<u8> = None;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| HttpTtsError::Transport(e.without_url().to_string()))?;
            let mut bytes: Vec<u8> = carry
                .take()
                .into_iter()
                .chain(chunk.iter().copied())
                .collect();
            if bytes.len() % 2 == 1 {
                carry = bytes.pop();
            }
            let samples: Vec<f32> = bytes
                .chunks_exact(2)
                .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
                .collect();
            if !samples.is_empty() && tx.send(samples).await.is_err() {
                return Ok(()); // the listener went away (barge-in): stop reading
            }
        }
        Ok(())
    }
}
