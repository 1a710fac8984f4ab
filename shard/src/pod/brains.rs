//! The pod's engines: what every guild's conversation shares (the listening workers, the
//! VAD source, the voices, the OpenClaw client), loaded once from the configuration, and the
//! conversation each room gets ([`Brains`] is the [`Rooms`] that the Discord side opens rooms
//! through).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use voicebot_config::{AgentConfig, BotConfig, TtsBackend, TtsConfig};

use crate::converse::classifier::GatewayClassifier;
use crate::converse::engine::Conversation;
use crate::converse::names::{CommonWords, NameMatcher, display_name};
use crate::converse::relevance::{Classifier, Relevance, RelevanceConfig, Sensitivity};
use crate::converse::room::{Room, RoomConfig, VadSource};
use crate::discord::voice::Rooms;
use crate::listen::stt::SttConfig;
use crate::listen::{EnginePool, Models, PoolConfig};
use crate::models::{ModelPaths, WhisperModel};
use crate::openclaw::device::{CredentialStore, FileStore, MemoryStore};
use crate::openclaw::{ClientConfig, ClientError, GatewayClient, session_key};
use crate::secret::Secret;
use crate::speak::tts::Voice;
use crate::speak::tts::http::{HttpTts, HttpTtsConfig};

/// What every guild's conversation shares: the pod's engines, its voice and its gateway.
#[derive(Clone)]
pub struct Brains {
    /// Smart Turn + Whisper workers.
    pub pool: Arc<EnginePool<Models>>,
    /// A VAD per speaker.
    pub vads: VadSource,
    /// Speech synthesis of agents without a voice of their own (`None`: the bot listens and
    /// answers in text only — nothing is sent).
    pub voice: Option<Voice>,
    /// Each configured agent's names, persona and voice (from the VoiceBot's `agents`).
    pub agents: HashMap<String, AgentProfile>,
    /// The OpenClaw gateway (`None`: turns stop after relevance).
    pub gateway: Option<GatewayClient>,
    /// Room bounds.
    pub room: RoomConfig,
    /// Relevance settings (follow-up window, classifier thresholds and time budget).
    pub relevance: RelevanceConfig,
    /// Words that are never taken for the agent's name.
    pub common: CommonWords,
    /// The session scope (e.g. the VoiceBot's name) in OpenClaw session keys.
    pub scope: String,
    /// The model files loaded (`None` when built by hand): what `models.whisper` chose.
    pub models: Option<ModelPaths>,
}

/// What the configuration says of one agent.
#[derive(Clone, Default)]
pub struct AgentProfile {
    /// Names it answers to besides its own.
    pub aliases: Vec<String>,
    /// Sent with each of its turns.
    pub persona: Option<String>,
    /// Its voice (`None`: the pod's default voice).
    pub voice: Option<Voice>,
    /// The voice's name (a Piper voice or the endpoint's id), for logs and tests.
    pub voice_name: String,
}

/// A credential store in a config (its `Debug` shows nothing of it).
#[derive(Clone)]
pub struct Credentials(pub Arc<dyn CredentialStore>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(***)")
    }
}

/// How long the start waits for the OpenClaw gateway before it goes on without it.
pub const GATEWAY_WAIT: Duration = Duration::from_secs(10);

/// How to load [`Brains`].
#[derive(Debug, Clone)]
pub struct BrainsConfig {
    /// Where the models are (`None`: the usual places, see [`ModelPaths::locate`]).
    pub models_dir: Option<std::path::PathBuf>,
    /// The Whisper model.
    pub whisper: WhisperModel,
    /// Listening workers (each a Smart Turn session and a Whisper state; one model in memory).
    pub workers: usize,
    /// Piper sessions per voice.
    pub tts_workers: usize,
    /// The OpenClaw gateway (`None`: no answers).
    pub gateway: Option<ClientConfig>,
    /// How long the start waits for the gateway before it goes on without it (it keeps
    /// reconnecting; a refused token stops the start instead).
    pub gateway_wait: Duration,
    /// Where the gateway device identity is kept (`None`: in memory).
    pub state_dir: Option<std::path::PathBuf>,
    /// The device identity's store when it is not a directory (Redis: the fleet's identity);
    /// takes precedence over `state_dir`.
    pub credentials: Option<Credentials>,
    /// Session scope.
    pub scope: String,
    /// The agents, with their aliases, personas and voices (empty: agents are known by name
    /// only and speak with the default voice).
    pub agents: Vec<AgentConfig>,
    /// Speech synthesis: the backend, the default voice, the `http` endpoint.
    pub tts: TtsConfig,
    /// The `http` backend's API key (from `TTS_API_KEY`).
    pub tts_api_key: Option<Secret>,
    /// Listening (VAD, Smart Turn) and room bounds.
    pub room: RoomConfig,
}

impl BrainsConfig {
    /// The engines `bot` describes, with models from `models_dir` and the gateway `gateway`.
    pub fn from_bot(
        bot: &BotConfig,
        models_dir: Option<std::path::PathBuf>,
        gateway: Option<ClientConfig>,
        tts_api_key: Option<Secret>,
    ) -> Self {
        Self {
            models_dir,
            whisper: super::settings::whisper(bot.models.whisper),
            workers: bot.limits.workers as usize,
            tts_workers: bot.limits.tts_workers as usize,
            gateway,
            gateway_wait: GATEWAY_WAIT,
            state_dir: None,
            credentials: None,
            scope: String::new(),
            agents: bot.agents.clone(),
            tts: bot.models.tts.clone(),
            tts_api_key,
            room: super::settings::room(bot),
        }
    }
}

/// The voices the configuration names, loaded once each: the default voice, then each agent's.
fn load_voices(
    env: &ort::environment::Environment,
    paths: &ModelPaths,
    tts: &TtsConfig,
    api_key: Option<&Secret>,
    agents: &[AgentConfig],
    tts_workers: usize,
) -> anyhow::Result<(Voice, HashMap<String, AgentProfile>)> {
    let mut loaded: HashMap<String, Voice> = HashMap::new();
    let mut load = |name: &str| -> anyhow::Result<Voice> {
        if let Some(v) = loaded.get(name) {
            return Ok(v.clone());
        }
        let voice = match tts.backend {
            TtsBackend::Piper => Voice::local_pool(env, paths, name, tts_workers)?,
            TtsBackend::Http => {
                let url = tts
                    .url
                    .clone()
                    .context("models.tts.url: backend http needs the endpoint's URL")?;
                Voice::Http(Arc::new(
                    HttpTts::new(HttpTtsConfig {
                        base_url: url,
                        api_key: api_key.cloned(),
                        model: tts.model.clone(),
                        voice: name.to_string(),
                        timeout: Duration::from_secs(30),
                    })
                    .map_err(|e| anyhow::anyhow!("models.tts: {e}"))?,
                ))
            }
        };
        loaded.insert(name.to_string(), voice.clone());
        Ok(voice)
    };
    let default = load(&tts.default_voice)?;
    let mut profiles = HashMap::new();
    for a in agents {
        let voice_name = a.voice.clone().unwrap_or_else(|| tts.default_voice.clone());
        let voice = load(&voice_name)?;
        profiles.insert(
            a.name.clone(),
            AgentProfile {
                aliases: a.aliases.clone(),
                persona: a.persona.clone(),
                voice: Some(voice),
                voice_name,
            },
        );
    }
    Ok((default, profiles))
}

impl Brains {
    /// Loads the models and the voice, and connects to the gateway (waits up to 30 s).
    pub async fn load(config: BrainsConfig) -> anyhow::Result<Self> {
        let BrainsConfig {
            models_dir,
            whisper,
            workers,
            tts_workers,
            gateway,
            gateway_wait,
            state_dir,
            credentials,
            scope,
            agents,
            tts,
            tts_api_key,
            room,
        } = config;
        let (pool, vads, voice, profiles, common, loaded) =
            tokio::task::spawn_blocking(move || {
                let paths = ModelPaths::locate(models_dir.as_deref(), whisper)?;
                let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
                let workers = workers.max(1);
                let stt = SttConfig {
                    threads: (cores / workers).max(1),
                    ..SttConfig::default()
                };
                let vocabulary = paths.dir.join("ct2/whisper-tiny.en/vocabulary.txt");
                let common = std::fs::read_to_string(&vocabulary)
                    .map(|v| CommonWords::from_whisper_vocabulary(&v))
                    .unwrap_or_else(|_| CommonWords::built_in());
                tracing::info!(
                    whisper = %paths.whisper.display(),
                    workers,
                    "loading the listening models"
                );
                let loaded = paths.clone();
                let first = Models::load(paths, whisper, stt, 1)?;
                let vads = VadSource::new(&first);
                let (voice, profiles) = load_voices(
                    &first.env,
                    &first.paths,
                    &tts,
                    tts_api_key.as_ref(),
                    &agents,
                    tts_workers,
                )?;
                let mut all = vec![first];
                for _ in 1..workers {
                    let more = all[0].fork(1)?;
                    all.push(more);
                }
                let pool = Arc::new(EnginePool::new(all, PoolConfig::default()));
                anyhow::Ok((pool, vads, voice, profiles, common, loaded))
            })
            .await??;
        let gateway = match gateway {
            None => None,
            Some(config) => {
                let store: Arc<dyn CredentialStore> = match (credentials, state_dir) {
                    (Some(c), _) => c.0,
                    (None, Some(dir)) => Arc::new(FileStore::new(dir)),
                    (None, None) => Arc::new(MemoryStore::new()?),
                };
                let client = GatewayClient::start(config, store);
                match client.wait_connected(gateway_wait).await {
                    Ok(()) => {}
                    // A refused token does not fix itself: say so by not starting.
                    Err(e @ ClientError::Auth { .. }) => return Err(e.into()),
                    // Down, starting, or waiting for the device's pairing: the pod serves
                    // anyway (Discord, voice, listening) and the client keeps reconnecting;
                    // a turn meanwhile is answered with an apology, not silence.
                    Err(e) => tracing::warn!(
                        error = %e,
                        "the OpenClaw gateway does not answer yet; starting anyway and reconnecting in the background"
                    ),
                }
                Some(client)
            }
        };
        Ok(Self {
            pool,
            vads,
            voice: Some(voice),
            agents: profiles,
            gateway,
            room,
            relevance: RelevanceConfig::default(),
            common,
            scope,
            models: Some(loaded),
        })
    }

    /// The conversation of `agent` in voice channel `channel` of `guild`: its names (aliases
    /// too), persona and voice, and a session of its own (`guild-{guild}:channel-{channel}`):
    /// moving to another channel does not carry what was said in the first.
    pub fn conversation(
        &self,
        agent: &str,
        guild: u64,
        channel: u64,
        sensitivity: Sensitivity,
    ) -> Conversation {
        self.conversation_among(agent, &[], guild, channel, sensitivity)
    }

    /// The conversations of a room where `agents` answer (the room's own first): each as
    /// [`Brains::conversation`] makes it, its classifier told who the others are.
    pub fn cast(
        &self,
        agents: &[String],
        guild: u64,
        channel: u64,
        sensitivity: Sensitivity,
    ) -> Vec<Conversation> {
        agents
            .iter()
            .map(|agent| {
                let others: Vec<String> = agents
                    .iter()
                    .filter(|a| *a != agent)
                    .map(|a| display_name(a))
                    .collect();
                self.conversation_among(agent, &others, guild, channel, sensitivity)
            })
            .collect()
    }

    fn conversation_among(
        &self,
        agent: &str,
        others: &[String],
        guild: u64,
        channel: u64,
        sensitivity: Sensitivity,
    ) -> Conversation {
        let display = display_name(agent);
        let profile = self.agents.get(agent);
        let mut names = vec![display.as_str()];
        if let Some(p) = profile {
            names.extend(p.aliases.iter().map(String::as_str));
        }
        let relevance = Relevance::new(
            agent,
            NameMatcher::new(&names, self.common.clone()),
            self.relevance,
        );
        let id = format!("guild-{guild}:channel-{channel}");
        let mut c = Conversation::new(
            display,
            session_key(agent, &self.scope, &id),
            relevance,
            sensitivity,
        );
        if let Some(gw) = &self.gateway {
            let classifier: Arc<dyn Classifier> =
                Arc::new(GatewayClassifier::new(gw.clone(), id.clone()).with_others(others));
            c = c.with_gateway(gw.clone(), Some(classifier));
        }
        let voice = profile
            .and_then(|p| p.voice.clone())
            .or_else(|| self.voice.clone());
        if let Some(v) = voice {
            c = c.with_voice(v);
        }
        c.with_persona(profile.and_then(|p| p.persona.clone()))
    }
}

/// What the warm-up says before a pod (or the demo) calls itself ready: one sentence in the
/// default voice, which every listening worker then hears back.
pub const WARM_UP_TEXT: &str = "Hello there, what is two plus two?";

/// What [`Brains::warm_up`] did, for the start-up log.
#[derive(Debug, Clone, Default)]
pub struct WarmUp {
    /// Local voice sessions that synthesised the sentence.
    pub voice_sessions: usize,
    /// Speech synthesis, every session of every local voice, ms.
    pub tts_ms: f64,
    /// Listening workers that heard it back (VAD, Smart Turn, Whisper).
    pub workers: usize,
    /// The listening pass, every worker, ms.
    pub listen_ms: f64,
    /// What the first worker heard (empty when no local voice could say the sentence).
    pub heard: String,
}

impl Brains {
    /// One real pass through every engine before the pod says it is ready, so that the first
    /// user's turn costs what later ones do: each session of each local voice says
    /// [`WARM_UP_TEXT`] (ONNX Runtime plans its first run, the phonemiser loads its data), and
    /// each listening worker runs the real listener over that speech (Silero VAD, Smart Turn,
    /// Whisper's first decode allocates its buffers). A remote speech endpoint is not called:
    /// it is not the pod's to warm, and a call may cost money. The OpenClaw gateway is warmed
    /// by the caller where it owns it (`voicebot-demo`'s local gateway).
    pub async fn warm_up(&self) -> anyhow::Result<WarmUp> {
        let mut report = WarmUp::default();
        let started = std::time::Instant::now();
        let mut voices: Vec<Voice> = Vec::new();
        for v in self
            .voice
            .iter()
            .chain(self.agents.values().filter_map(|p| p.voice.as_ref()))
        {
            if !voices.iter().any(|seen| seen.same_as(v)) {
                voices.push(v.clone());
            }
        }
        let mut sample: Option<(Vec<f32>, u32)> = None;
        for voice in &voices {
            let passes = match voice {
                Voice::Piper(pool) => pool.size(),
                Voice::Espeak { .. } => 1,
                Voice::Http(_) => continue,
            };
            let mut runs = tokio::task::JoinSet::new();
            for _ in 0..passes {
                let voice = voice.clone();
                runs.spawn(async move {
                    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
                    voice.speak(WARM_UP_TEXT.to_string(), &tx).await?;
                    drop(tx);
                    let mut audio = Vec::new();
                    while let Some(chunk) = rx.recv().await {
                        audio.extend(chunk);
                    }
                    Ok::<_, String>((audio, voice.sample_rate()))
                });
            }
            while let Some(done) = runs.join_next().await {
                let (audio, rate) = done
                    .map_err(|e| anyhow::anyhow!("warm-up: {e}"))?
                    .map_err(|e| anyhow::anyhow!("warm-up: speech synthesis: {e}"))?;
                report.voice_sessions += 1;
                if sample.is_none() && !audio.is_empty() {
                    sample = Some((audio, rate));
                }
            }
        }
        report.tts_ms = started.elapsed().as_secs_f64() * 1e3;
        let Some((audio, rate)) = sample else {
            return Ok(report);
        };
        let pool = self.pool.clone();
        let vads = self.vads.clone();
        let listener = self.room.listener;
        let listening = std::time::Instant::now();
        let (workers, heard) = tokio::task::spawn_blocking(move || {
            warm_listeners(&pool, &vads, listener, audio, rate)
        })
        .await??;
        report.workers = workers;
        report.heard = heard;
        report.listen_ms = listening.elapsed().as_secs_f64() * 1e3;
        Ok(report)
    }
}

/// Every worker of `pool` (held at once, so each one runs) hears `audio` through a fresh
/// listener: the real VAD → Smart Turn → Whisper path. Returns the workers and the first one's
/// transcript.
fn warm_listeners(
    pool: &EnginePool<Models>,
    vads: &VadSource,
    config: crate::listen::ListenerConfig,
    audio: Vec<f32>,
    rate: u32,
) -> anyhow::Result<(usize, String)> {
    let pcm = crate::audio::Pcm {
        sample_rate: rate,
        channels: 1,
        samples: audio,
    };
    let mut speech = vec![0.0; 8_000];
    speech.extend(crate::audio::to_pipeline_rate(&pcm)?);
    speech.extend(std::iter::repeat_n(0.0, 16_000));
    let mut leases = Vec::new();
    for _ in 0..pool.workers() {
        leases.push(pool.lease()?);
    }
    let mut heard = String::new();
    for lease in &mut leases {
        let mut listener = crate::listen::Listener::new(config, vads.make()?);
        let mut turns = Vec::new();
        for frame in speech.chunks(320) {
            turns.extend(listener.push(lease, frame)?);
        }
        turns.extend(listener.finish(lease)?);
        if heard.is_empty() {
            heard = turns
                .iter()
                .map(|u| u.transcript.as_str())
                .collect::<Vec<_>>()
                .join(" ");
        }
    }
    Ok((leases.len(), heard))
}

impl Rooms for Brains {
    fn open(&self, guild: u64, channel: u64, agents: &[String], sensitivity: Sensitivity) -> Room {
        let mut cast = self.cast(agents, guild, channel, sensitivity);
        if cast.is_empty() {
            // Not reached (a guild always has its agent), but a room needs one.
            cast.push(self.conversation("assistant", guild, channel, sensitivity));
        }
        Room::start_cast(self.room, cast, self.pool.clone(), self.vads.clone())
    }
}
