//! `pipeline --agent … [--gateway …]`: whole turns on a file — relevance, the agent's reply,
//! its speech — one record per utterance.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use voicebot_shard::converse::classifier::GatewayClassifier;
use voicebot_shard::converse::engine::Conversation;
use voicebot_shard::converse::names::{CommonWords, NameMatcher, display_name};
use voicebot_shard::converse::relevance::{Classifier, Relevance, RelevanceConfig};
use voicebot_shard::converse::turn::TurnRecord;
use voicebot_shard::listen::{Models, Utterance};
use voicebot_shard::models::DEFAULT_PIPER_VOICE;
use voicebot_shard::openclaw::device::FileStore;
use voicebot_shard::openclaw::{ClientConfig, GatewayClient, session_key};
use voicebot_shard::speak::tts::piper::PiperVoice;

use crate::PipelineArgs;

pub struct Responder {
    rt: tokio::runtime::Runtime,
    conversation: Conversation,
    audio: Vec<f32>,
    rate: u32,
    speaker: String,
}

impl Responder {
    pub fn new(args: &PipelineArgs, agent: &str, models: &Models) -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let vocabulary = models.paths.dir.join("ct2/whisper-tiny.en/vocabulary.txt");
        let common = std::fs::read_to_string(&vocabulary)
            .map(|v| CommonWords::from_whisper_vocabulary(&v))
            .unwrap_or_else(|_| CommonWords::built_in());
        let mut names = vec![display_name(agent)];
        names.extend(args.aliases.iter().cloned());
        let relevance = Relevance::new(
            agent,
            NameMatcher::new(&names, common),
            RelevanceConfig::default(),
        );
        let conversation_id = format!(
            "file:{}",
            args.input
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("input")
        );
        let mut conversation = Conversation::new(
            display_name(agent),
            session_key(agent, "cli", &conversation_id),
            relevance,
            args.sensitivity,
        );
        conversation.humans_present = args.humans;
        if let Some(url) = &args.gateway {
            let mut config =
                ClientConfig::new(url, crate::ask::load_token(args.token_file.as_deref())?);
            config.first_token_timeout = Duration::from_secs(30);
            let store = Arc::new(FileStore::new(
                args.state_dir
                    .clone()
                    .unwrap_or_else(crate::ask::default_state_dir),
            ));
            let client = rt.block_on(async {
                let client = GatewayClient::start(config, store);
                client
                    .wait_connected(Duration::from_secs(30))
                    .await
                    .map(|()| client)
            })?;
            let classifier: Arc<dyn Classifier> =
                Arc::new(GatewayClassifier::new(client.clone(), conversation_id));
            let voice = PiperVoice::load(
                &models.env,
                &models.paths.piper_voice(DEFAULT_PIPER_VOICE)?,
                1,
            )?;
            conversation = conversation
                .with_gateway(client, Some(classifier))
                .with_voice(voicebot_shard::speak::tts::Voice::piper(voice));
        }
        Ok(Self {
            rt,
            conversation,
            audio: Vec::new(),
            rate: 22_050,
            speaker: "user".into(),
        })
    }

    pub fn handle(
        &mut self,
        out: &mut impl Write,
        u: &Utterance,
        json: bool,
    ) -> anyhow::Result<()> {
        let mut reply = self.rt.block_on(self.conversation.respond(
            &self.speaker,
            &u.transcript,
            u.end_ms,
        ));
        let audio = std::mem::take(&mut reply.audio);
        if !audio.is_empty() {
            if !self.audio.is_empty() {
                self.audio
                    .extend(std::iter::repeat_n(0.0, reply.sample_rate as usize / 2));
            }
            self.rate = reply.sample_rate;
            self.audio.extend_from_slice(&audio);
        }
        let agent = self.conversation.agent().to_string();
        let turn = TurnRecord::new(&self.speaker, &agent, u.clone(), reply, 0.0);
        // End of speech → first reply audio, less the gateway's first-token wait: the listener's
        // real-time latency (silence wait, Smart Turn, Whisper — overlapped when speculative),
        // relevance, and speech synthesis.
        let overhead_ms = turn.overhead_ms();
        let reply = &turn.reply;
        if json {
            writeln!(out, "{}", turn.to_pipeline_json())?;
        } else {
            writeln!(
                out,
                "[{:>6.2}s – {:>6.2}s] {:?} → {} ({}){}",
                u.start_ms as f64 / 1000.0,
                u.end_ms as f64 / 1000.0,
                u.transcript,
                if reply.addressed {
                    "addressed"
                } else {
                    "ignored"
                },
                reply.reason.label(),
                match (&reply.reply, overhead_ms) {
                    (Some(text), Some(o)) => format!("\n    reply: {text:?}  (overhead {o:.0} ms)"),
                    (Some(text), None) => format!("\n    reply: {text:?}"),
                    _ => reply
                        .error
                        .as_ref()
                        .map(|e| format!("\n    error: {e}"))
                        .unwrap_or_default(),
                }
            )?;
        }
        out.flush()?;
        Ok(())
    }

    pub fn write_audio(&self, path: &std::path::Path) -> anyhow::Result<()> {
        voicebot_shard::audio::write_wav(path, &self.audio, self.rate)?;
        Ok(())
    }
}
