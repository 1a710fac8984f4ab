//! One conversation (a voice channel and its agent): relevance, the agent's streamed reply,
//! sentence splitting and speech synthesis while the model is still writing.
//!
//! ```text
//! respond(speaker, text) ─► transcript ─► relevance ─► chat.send ─► deltas ─► SentenceSplitter
//!                                                                         │ sentences (mpsc)
//!                                                                         ▼
//!                                           TTS worker (blocking thread per sentence) ─► audio
//! ```

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::mpsc;

use super::context::Transcript;
use super::relevance::{Classifier, Reason, Relevance, Sensitivity, Turn};
use crate::openclaw::{ChatOptions, GatewayClient, ReplyEvent};
use crate::speak::sentences::SentenceSplitter;
use crate::speak::tts::Voice;

/// Time spent per stage of a reply, ms.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ReplyStages {
    /// The relevance decision (a classifier call included).
    pub relevance: f64,
    /// `chat.send` → first reply text (the gateway and the model).
    pub gateway_first_token: Option<f64>,
    /// `chat.send` → end of the reply.
    pub gateway_total: Option<f64>,
    /// First complete sentence → its first audio (TTS only).
    pub tts_first_audio: Option<f64>,
}

/// What happened to one turn.
#[derive(Debug, Clone, Serialize)]
pub struct TurnReply {
    /// Whether the bot answered.
    pub addressed: bool,
    /// Why (or why not).
    pub reason: Reason,
    /// The reply text, when there was one.
    pub reply: Option<String>,
    /// What went wrong, if something did.
    pub error: Option<String>,
    /// Time per stage.
    pub stages_ms: ReplyStages,
    /// From the start of `respond` to the first reply audio, ms.
    pub first_audio_ms: Option<f64>,
    /// The reply's audio (mono, at `sample_rate`).
    #[serde(skip)]
    pub audio: Vec<f32>,
    /// Sample rate of `audio`.
    #[serde(skip)]
    pub sample_rate: u32,
}

/// A conversation with one agent.
pub struct Conversation {
    agent: String,
    session_key: String,
    relevance: Relevance,
    sensitivity: Sensitivity,
    client: Option<GatewayClient>,
    classifier: Option<Arc<dyn Classifier>>,
    voice: Option<Voice>,
    transcript: Transcript,
    last_answered: Option<(String, u64)>,
    /// Humans in the channel (solo mode when 1).
    pub humans_present: usize,
}

impl Conversation {
    /// A conversation of `agent` (display name) in session `session_key`.
    pub fn new(
        agent: impl Into<String>,
        session_key: impl Into<String>,
        relevance: Relevance,
        sensitivity: Sensitivity,
    ) -> Self {
        Self {
            agent: agent.into(),
            session_key: session_key.into(),
            relevance,
            sensitivity,
            client: None,
            classifier: None,
            voice: None,
            transcript: Transcript::default(),
            last_answered: None,
            humans_present: 2,
        }
    }

    /// Answers through this gateway client (without one, turns stop after relevance).
    pub fn with_gateway(
        mut self,
        client: GatewayClient,
        classifier: Option<Arc<dyn Classifier>>,
    ) -> Self {
        self.client = Some(client);
        self.classifier = classifier;
        self
    }

    /// Speaks replies with this voice.
    pub fn with_voice(mut self, voice: Voice) -> Self {
        self.voice = Some(voice);
        self
    }

    /// Changes the sensitivity (a slash command).
    pub fn set_sensitivity(&mut self, sensitivity: Sensitivity) {
        self.sensitivity = sensitivity;
    }

    /// Handles one finished turn of `speaker`, said at `at_ms` (conversation clock).
    pub async fn respond(&mut self, speaker: &str, text: &str, at_ms: u64) -> TurnReply {
        let started = Instant::now();
        self.transcript.push(at_ms, speaker, text);
        let context = self.transcript.prompt_for(speaker, text);
        let last = self.last_answered.as_ref().map(|(s, t)| (s.as_str(), *t));
        let turn = Turn {
            speaker,
            text,
            at_ms,
            humans_present: self.humans_present,
            last_answered: last,
            context: &context,
        };
        let decision = self
            .relevance
            .decide(&turn, self.sensitivity, self.classifier.as_deref())
            .await;
        let mut out = TurnReply {
            addressed: decision.addressed,
            reason: decision.reason,
            reply: None,
            error: None,
            stages_ms: ReplyStages {
                relevance: started.elapsed().as_secs_f64() * 1e3,
                ..ReplyStages::default()
            },
            first_audio_ms: None,
            audio: Vec::new(),
            sample_rate: 0,
        };
        let (true, Some(client)) = (out.addressed, self.client.clone()) else {
            return out;
        };

        // TTS worker: sentences in, audio out, one sentence at a time.
        let (sentence_tx, mut sentence_rx) = mpsc::channel::<(String, Instant)>(32);
        let voice = self.voice.clone();
        let tts = tokio::spawn(async move {
            let mut audio = Vec::new();
            let (mut first_audio, mut tts_first) = (None, None);
            let rate = voice.as_ref().map_or(0, Voice::sample_rate);
            let Some(voice) = voice else {
                while sentence_rx.recv().await.is_some() {}
                return (audio, rate, first_audio, tts_first);
            };
            while let Some((sentence, ready)) = sentence_rx.recv().await {
                let (chunk_tx, mut chunk_rx) = mpsc::channel::<Vec<f32>>(64);
                let voice = voice.clone();
                let speak = async move {
                    let r = voice.speak(sentence, &chunk_tx).await;
                    drop(chunk_tx);
                    r
                };
                let collect = async {
                    while let Some(chunk) = chunk_rx.recv().await {
                        if first_audio.is_none() {
                            first_audio = Some(Instant::now());
                            tts_first = Some(ready.elapsed().as_secs_f64() * 1e3);
                        }
                        audio.extend(chunk);
                    }
                };
                let (result, ()) = tokio::join!(speak, collect);
                if let Err(e) = result {
                    tracing::warn!(error = %e, "text-to-speech failed for a sentence");
                }
            }
            (audio, rate, first_audio, tts_first)
        });

        let sent = Instant::now();
        let mut splitter = SentenceSplitter::default();
        let mut reply_text = String::new();
        match client
            .chat(&self.session_key, &context, ChatOptions::default())
            .await
        {
            Err(e) => out.error = Some(e.to_string()),
            Ok(mut stream) => {
                while let Some(event) = stream.next().await {
                    let sentences = match event {
                        Ok(ReplyEvent::Delta(d)) => {
                            out.stages_ms
                                .gateway_first_token
                                .get_or_insert(sent.elapsed().as_secs_f64() * 1e3);
                            splitter.push(&d)
                        }
                        Ok(ReplyEvent::Replace(t)) => {
                            out.stages_ms
                                .gateway_first_token
                                .get_or_insert(sent.elapsed().as_secs_f64() * 1e3);
                            // Text already spoken cannot be unsaid; speak what is new.
                            let new = t
                                .strip_prefix(stream.text())
                                .unwrap_or_default()
                                .to_string();
                            splitter.push(&new)
                        }
                        Ok(ReplyEvent::Final(t) | ReplyEvent::Aborted(t)) => {
                            reply_text = t;
                            splitter.finish().into_iter().collect()
                        }
                        Err(e) => {
                            out.error = Some(e.to_string());
                            reply_text = stream.text().to_string();
                            splitter.finish().into_iter().collect()
                        }
                    };
                    for s in sentences {
                        let _ = sentence_tx.send((s, Instant::now())).await;
                    }
                }
                out.stages_ms.gateway_total = Some(sent.elapsed().as_secs_f64() * 1e3);
            }
        }
        drop(sentence_tx);
        let (audio, rate, first_audio, tts_first) = tts.await.unwrap_or_default();
        out.stages_ms.tts_first_audio = tts_first;
        out.first_audio_ms = first_audio.map(|t| t.duration_since(started).as_secs_f64() * 1e3);
        let audio_ms = if rate > 0 {
            audio.len() as u64 * 1000 / u64::from(rate)
        } else {
            0
        };
        out.audio = audio;
        out.sample_rate = rate;
        if !reply_text.is_empty() {
            self.transcript.push(at_ms, &self.agent, &reply_text);
            let ended = at_ms + started.elapsed().as_millis() as u64 + audio_ms;
            self.last_answered = Some((speaker.to_string(), ended));
            out.reply = Some(reply_text);
        }
        out
    }
}
