//! Piper text-to-speech with the real voice, checked by ear: Whisper transcribes it back.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Instant;

use voicebot_shard::audio::to_pipeline_rate;
use voicebot_shard::eval::word_error_rate;
use voicebot_shard::listen::guard::{self, GuardConfig};
use voicebot_shard::models::{DEFAULT_PIPER_VOICE, ModelPaths, WhisperModel, onnx_environment};
use voicebot_shard::speak::tts::piper::PiperVoice;

#[test]
fn piper_speech_is_understood_by_whisper() {
    let paths = ModelPaths::locate(None, WhisperModel::TinyEn).expect("models (scripts/setup.sh)");
    let env = onnx_environment(&paths.onnxruntime).expect("onnxruntime");
    let mut voice =
        PiperVoice::load(&env, &paths.piper_voice(DEFAULT_PIPER_VOICE).unwrap(), 1).expect("voice");
    assert_eq!(voice.sample_rate(), 22_050);
    // Piper samples noise (VITS's noise_scale / noise_w), so no two syntheses are the same,
    // and tiny.en mishears a lone short word now and then ("Sure." as "Cheer." about one time
    // in forty): a text passes when two of three syntheses are understood.
    for text in [
        "Two plus two is four.",
        "Sure.",
        "The weather in Paris tomorrow will be sunny, with a high of twenty degrees.",
    ] {
        let mut heard_right = 0;
        let mut misheard = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let audio = voice.synthesize(text).expect("synthesize");
            let took = t.elapsed().as_secs_f64();
            let secs = audio.len() as f64 / 22_050.0;
            eprintln!(
                "{text:?}: {secs:.2} s of audio in {:.0} ms (RTF {:.3})",
                took * 1e3,
                took / secs
            );
            assert!(secs > 0.3 && secs < 12.0, "{secs}");
            let pcm = voicebot_shard::audio::Pcm {
                sample_rate: 22_050,
                channels: 1,
                samples: audio,
            };
            let mut clip = common::silence(300);
            clip.extend(to_pipeline_rate(&pcm).unwrap());
            clip.extend(common::silence(300));
            // Through the hallucination guard, as the pipeline does: it also collapses the
            // loop Whisper sometimes decodes after a short clip ("2 plus 2 is 4. 2 plus 2 …").
            let t = common::models().stt.transcribe(&clip).expect("stt");
            let heard = guard::check_text(
                &GuardConfig::default(),
                &t.text,
                t.no_speech_prob,
                t.avg_logprob,
            )
            .unwrap_or_else(|why| format!("<rejected: {why:?}> {}", t.text));
            if word_error_rate(text, &heard) <= 0.2 {
                heard_right += 1;
                if heard_right == 2 {
                    break;
                }
            } else {
                misheard.push(heard);
            }
        }
        assert!(heard_right >= 2, "{text:?} was heard as {misheard:?}");
    }
    assert!(
        voice.synthesize("🎉").unwrap().len() < 22_050,
        "nothing speakable is (nearly) silent"
    );
}
