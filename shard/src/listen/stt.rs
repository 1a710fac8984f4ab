//! Speech to text with whisper.cpp (through whisper-rs).

use std::path::Path;

use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
};

use crate::models::WhisperModel;
use crate::{Error, Result};

/// How much of its 30 s window the encoder runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCtx {
    /// The full 1500 positions (30 s), whatever the utterance length: whisper's default.
    Full,
    /// Just enough positions for the utterance (plus a margin), never fewer than `min`:
    /// most of the encoder's time goes on positions that are only padding.
    Fit {
        /// Lower bound in positions (50 per second).
        min: u16,
    },
}

/// Speech-to-text settings.
#[derive(Debug, Clone, Copy)]
pub struct SttConfig {
    /// CPU threads for whisper.cpp.
    pub threads: usize,
    /// Encoder window policy.
    pub audio_ctx: AudioCtx,
    /// whisper.cpp's flash attention (faster on CPU, same output up to rounding).
    pub flash_attn: bool,
}

impl Default for SttConfig {
    fn default() -> Self {
        Self {
            threads: 2,
            // Measured on the benchmark clips: WER 0.134 at 222 ms vs 0.192 at 965 ms for the
            // full window (faster-whisper int8 on the same weights: 0.174 at 371 ms).
            audio_ctx: AudioCtx::Fit { min: 384 },
            flash_attn: true,
        }
    }
}

/// A transcript with the confidence figures the hallucination guard needs.
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    /// Raw text as decoded.
    pub text: String,
    /// Highest no-speech probability across segments.
    pub no_speech_prob: f32,
    /// Mean log-probability of the text tokens.
    pub avg_logprob: f32,
}

/// A loaded Whisper model with one decoding state (reused between calls).
pub struct Whisper {
    /// The weights, shared by every [`Whisper::fork`].
    ctx: std::sync::Arc<WhisperContext>,
    state: WhisperState,
    config: SttConfig,
}

/// whisper.cpp refuses less than a second of audio; shorter input is padded with silence.
const MIN_SAMPLES: usize = 16_800;

impl Whisper {
    /// Loads a ggml model.
    pub fn new(path: &Path, model: WhisperModel, config: SttConfig) -> Result<Self> {
        whisper_rs::install_logging_hooks();
        let ctx = WhisperContext::new_with_params(path, WhisperContextParameters::default())
            .map_err(|e| Error::Model {
                what: "Whisper model",
                path: path.to_path_buf(),
                reason: format!("whisper.cpp could not load it: {e}"),
            })?;
        tracing::info!(model = ?model, system = whisper_rs::print_system_info(), "whisper.cpp loaded");
        let state = ctx.create_state()?;
        Ok(Self {
            ctx: std::sync::Arc::new(ctx),
            state,
            config,
        })
    }

    /// Another decoder over the same weights (a worker of its own; the model is not copied).
    pub fn fork(&self) -> Result<Self> {
        Ok(Self {
            ctx: self.ctx.clone(),
            state: self.ctx.create_state()?,
            config: self.config,
        })
    }

    /// Transcribes 16 kHz mono audio.
    pub fn transcribe(&mut self, audio: &[f32]) -> Result<Transcript> {
        self.transcribe_with(audio, "")
    }

    /// Transcribes 16 kHz mono audio, told that `hint` (e.g. the agents' names, "Jarvis,
    /// Sage") may be said: Whisper's initial prompt, which steers rare names to their spelling
    /// ("Sage", not "page") for a few milliseconds more decoding. Empty: no prompt.
    pub fn transcribe_with(&mut self, audio: &[f32], hint: &str) -> Result<Transcript> {
        let padded;
        let audio = if audio.len() < MIN_SAMPLES {
            padded = [audio, &vec![0.0; MIN_SAMPLES - audio.len()]].concat();
            &padded[..]
        } else {
            audio
        };
        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        params.set_n_threads(self.config.threads.max(1) as i32);
        // Always English: on tiny.en it skips language detection (an extra encoder pass),
        // on the multilingual base it keeps the bot from answering in the wrong language.
        params.set_language(Some("en"));
        params.set_translate(false);
        params.set_no_context(true);
        params.set_single_segment(true);
        params.set_no_timestamps(true);
        params.set_suppress_blank(true);
        params.set_suppress_nst(true);
        params.set_temperature(0.0);
        params.set_temperature_inc(0.0);
        // A NUL would make whisper-rs panic: the hint is cut there (names never have one).
        let hint = hint.split('\0').next().unwrap_or_default();
        if !hint.is_empty() {
            params.set_initial_prompt(hint);
        }
        params.set_print_special(false);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_timestamps(false);
        // Fast speech is about 5 tokens a second; a decode far beyond that is a loop, and
        // cutting it short saves the time it would take.
        params.set_max_tokens((12 + audio.len() * 7 / 16_000) as i32);
        if let AudioCtx::Fit { min } = self.config.audio_ctx {
            // 50 encoder positions per second, plus half a second of margin.
            let needed = (audio.len() / 320 + 25).max(usize::from(min)).min(1500);
            params.set_audio_ctx(needed as i32);
        }
        self.state.full(params, audio)?;

        let mut out = Transcript::default();
        let (mut logprob_sum, mut tokens) = (0.0f32, 0usize);
        for segment in self.state.as_iter() {
            out.text.push_str(&segment.to_str_lossy()?);
            out.no_speech_prob = out.no_speech_prob.max(segment.no_speech_probability());
            for i in 0..segment.n_tokens() {
                let Some(token) = segment.get_token(i) else {
                    continue;
                };
                let special = token
                    .to_str_lossy()
                    .map(|t| t.starts_with("[_") || t.starts_with("<|"))
                    .unwrap_or(true);
                if !special {
                    logprob_sum += token.token_data().plog;
                    tokens += 1;
                }
            }
        }
        out.avg_logprob = if tokens == 0 {
            f32::NEG_INFINITY
        } else {
            logprob_sum / tokens as f32
        };
        out.text = out.text.trim().to_string();
        Ok(out)
    }
}
