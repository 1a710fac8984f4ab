//! The OpenAI-compatible speech backend against a small local endpoint that streams PCM.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use voicebot_shard::secret::Secret;
use voicebot_shard::speak::tts::http::{HttpTts, HttpTtsConfig, HttpTtsError, PCM_RATE};

const KEY: &str = "sk-test-key-0123456789";

/// 0.5 s of a 440 Hz tone as 24 kHz s16le, sent in pieces of odd sizes.
fn tone() -> Vec<u8> {
    (0..PCM_RATE / 2)
        .flat_map(|i| {
            (((i as f32 * 440.0 * std::f32::consts::TAU / PCM_RATE as f32).sin() * 8000.0) as i16)
                .to_le_bytes()
        })
        .collect()
}

async fn endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut n = 0;
                // Read the head and the (small) JSON body.
                loop {
                    let m = s.read(&mut buf[n..]).await.unwrap_or(0);
                    n += m;
                    let text = String::from_utf8_lossy(&buf[..n]).to_string();
                    if m == 0 || (text.contains("\r\n\r\n") && text.trim_end().ends_with('}')) {
                        break;
                    }
                }
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                if !req.contains(&format!("Bearer {KEY}")) {
                    let body = r#"{"error":"invalid api key"}"#;
                    let _ = s
                        .write_all(format!("HTTP/1.1 401 Unauthorized\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes())
                        .await;
                    return;
                }
                assert!(
                    req.contains("\"response_format\":\"pcm\"")
                        && req.contains("\"voice\":\"jarvis\""),
                    "{req}"
                );
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: audio/pcm\r\nConnection: close\r\n\r\n",
                    )
                    .await;
                let pcm = tone();
                for piece in [&pcm[..1001], &pcm[1001..9000], &pcm[9000..]] {
                    let _ = s.write_all(piece).await;
                    let _ = s.flush().await;
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            });
        }
    });
    url
}

fn config(url: String, key: &str) -> HttpTtsConfig {
    HttpTtsConfig {
        base_url: url,
        api_key: Some(Secret::new(key)),
        model: "tts-1".into(),
        voice: "jarvis".into(),
        timeout: Duration::from_secs(10),
    }
}

#[tokio::test]
async fn streams_pcm_as_it_arrives() {
    let tts = HttpTts::new(config(endpoint().await, KEY)).unwrap();
    let (tx, mut rx) = mpsc::channel(64);
    let collect = tokio::spawn(async move {
        let mut chunks = Vec::new();
        while let Some(c) = rx.recv().await {
            chunks.push(c);
        }
        chunks
    });
    tts.synthesize_into("Two plus two is four.", &tx)
        .await
        .unwrap();
    drop(tx);
    let chunks = collect.await.unwrap();
    assert!(
        chunks.len() >= 2,
        "audio should arrive in pieces: {}",
        chunks.len()
    );
    let audio: Vec<f32> = chunks.concat();
    assert_eq!(
        audio.len(),
        (PCM_RATE / 2) as usize,
        "odd chunk boundaries lose nothing"
    );
    let expected = tone();
    let first = f32::from(i16::from_le_bytes([expected[2], expected[3]])) / 32768.0;
    assert!((audio[1] - first).abs() < 1e-6);
}

#[tokio::test]
async fn errors_are_clear_and_keep_the_key_out() {
    let url = endpoint().await;
    let tts = HttpTts::new(config(url, "wrong-key-xyz")).unwrap();
    let (tx, _rx) = mpsc::channel(4);
    let err = tts.synthesize_into("hi", &tx).await.unwrap_err();
    assert!(
        matches!(err, HttpTtsError::Status { status: 401, .. }),
        "{err}"
    );
    assert!(!err.to_string().contains("wrong-key-xyz"));

    let dead = HttpTts::new(config("http://127.0.0.1:9/v1".into(), KEY)).unwrap();
    let err = dead.synthesize_into("hi", &tx).await.unwrap_err();
    assert!(matches!(err, HttpTtsError::Transport(_)), "{err}");
    assert!(!format!("{err} {err:?}").contains(KEY));
}
