//! Piper voices (VITS, ONNX) in the pod: text → espeak-ng IPA → phoneme ids → audio.
//!
//! Ids follow Piper's scheme: `^`, `_`, then each phoneme followed by `_`, then `$`. The voice's
//! JSON gives the id map, the sample rate and the inference scales.

use std::collections::HashMap;
use std::path::Path;

use ort::value::TensorRef;

use crate::speak::espeak;
use crate::{Error, Result};

/// A loaded Piper voice.
pub struct PiperVoice {
    session: ort::session::Session,
    ids: HashMap<char, Vec<i64>>,
    espeak_voice: String,
    sample_rate: u32,
    scales: [f32; 3],
}

#[derive(serde::Deserialize)]
struct VoiceConfig {
    audio: AudioConfig,
    espeak: EspeakConfig,
    inference: InferenceConfig,
    phoneme_id_map: HashMap<String, Vec<i64>>,
}

#[derive(serde::Deserialize)]
struct AudioConfig {
    sample_rate: u32,
}

#[derive(serde::Deserialize)]
struct EspeakConfig {
    voice: String,
}

#[derive(serde::Deserialize)]
struct InferenceConfig {
    noise_scale: f32,
    length_scale: f32,
    noise_w: f32,
}

impl PiperVoice {
    /// Loads `voice.onnx` and `voice.onnx.json`.
    pub fn load(env: &ort::environment::Environment, onnx: &Path, threads: usize) -> Result<Self> {
        let json_path = onnx.with_extension("onnx.json");
        let model_err = |reason: String| Error::Model {
            what: "Piper voice",
            path: json_path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&json_path).map_err(|e| model_err(e.to_string()))?;
        let config: VoiceConfig =
            serde_json::from_str(&text).map_err(|e| model_err(format!("bad voice config: {e}")))?;
        let ids = config
            .phoneme_id_map
            .into_iter()
            .filter_map(|(k, v)| {
                let mut chars = k.chars();
                let c = chars.next()?;
                chars.next().is_none().then_some((c, v))
            })
            .collect::<HashMap<_, _>>();
        for required in ['^', '_', '$'] {
            if !ids.contains_key(&required) {
                return Err(model_err(format!("phoneme_id_map lacks {required:?}")));
            }
        }
        Ok(Self {
            session: crate::models::onnx_session(env, "Piper voice", onnx, threads)?,
            ids,
            espeak_voice: config.espeak.voice,
            sample_rate: config.audio.sample_rate,
            scales: [
                config.inference.noise_scale,
                config.inference.length_scale,
                config.inference.noise_w,
            ],
        })
    }

    /// Output sample rate (22050 for medium voices).
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Phoneme ids for IPA text.
    pub fn ids(&self, phonemes: &str) -> Vec<i64> {
        let id = |c: char| self.ids.get(&c).cloned().unwrap_or_default();
        let pad = id('_');
        let mut out = id('^');
        out.extend(&pad);
        for c in phonemes.chars() {
            match self.ids.get(&c) {
                Some(v) => {
                    out.extend(v);
                    out.extend(&pad);
                }
                None => tracing::trace!(phoneme = %c, "no id for phoneme; skipped"),
            }
        }
        out.extend(id('$'));
        out
    }

    /// Speech for `text`, mono f32 at [`PiperVoice::sample_rate`].
    pub fn synthesize(&mut self, text: &str) -> Result<Vec<f32>> {
        let phonemes = espeak::phonemize(text, &self.espeak_voice).map_err(|e| Error::Model {
            what: "espeak-ng",
            path: std::path::PathBuf::from(&self.espeak_voice),
            reason: e.to_string(),
        })?;
        let ids = self.ids(&phonemes);
        if ids.len() <= 3 {
            return Ok(Vec::new());
        }
        let lengths = [ids.len() as i64];
        let input = TensorRef::from_array_view(([1usize, ids.len()], &ids[..]))
            .map_err(Error::onnx("tts"))?;
        let input_lengths =
            TensorRef::from_array_view(([1usize], &lengths[..])).map_err(Error::onnx("tts"))?;
        let scales =
            TensorRef::from_array_view(([3usize], &self.scales[..])).map_err(Error::onnx("tts"))?;
        let outputs = self
            .session
            .run(ort::inputs!["input" => input, "input_lengths" => input_lengths, "scales" => scales])
            .map_err(Error::onnx("tts"))?;
        let (_, audio) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(Error::onnx("tts"))?;
        let mut audio = audio.to_vec();
        crate::audio::sanitize(&mut audio);
        Ok(audio)
    }
}
