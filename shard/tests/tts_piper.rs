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

/// `limits.ttsWorkers`: a voice with two sessions synthesises two sentences at once, a third
/// waits its turn; an abandoned synthesis (a barge-in drops the reply) loses no session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_synthesises_as_many_at_once_as_it_has_sessions() {
    use std::sync::Arc;
    use voicebot_shard::speak::tts::PiperPool;
    let paths = ModelPaths::locate(None, WhisperModel::TinyEn).expect("models (scripts/setup.sh)");
    let env = onnx_environment(&paths.onnxruntime).expect("onnxruntime");
    let path = paths.piper_voice(DEFAULT_PIPER_VOICE).unwrap();
    let voices = (0..2)
        .map(|_| PiperVoice::load(&env, &path, 1).unwrap())
        .collect();
    let pool = Arc::new(PiperPool::new(voices));
    let text = "The weather in Paris tomorrow will be sunny, with a high of twenty degrees.";
    let started = Instant::now();
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.synthesize(text.to_string()).await })
        })
        .collect();
    let mut most = 0;
    while tasks.iter().any(|t| !t.is_finished()) {
        most = most.max(pool.busy());
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    for t in tasks {
        assert!(!t.await.unwrap().unwrap().is_empty());
    }
    eprintln!(
        "3 sentences on 2 sessions in {:.0} ms; at most {most} at once",
        started.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(most, 2, "two sessions work at once, never three");

    // Abandoned mid-synthesis: the session comes back anyway.
    let p = pool.clone();
    let abandoned = tokio::spawn(async move { p.synthesize(text.to_string()).await });
    while pool.busy() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    abandoned.abort();
    let after = pool.synthesize("Sure.".to_string()).await.unwrap();
    assert!(!after.is_empty());
    while pool.busy() > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(pool.idle(), 2, "no session was lost");
}
