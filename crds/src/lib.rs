//! The `VoiceBot` custom resource: one Discord bot (an application and its token), the shard
//! pods that run it, their models and agents, and where they find Redis and the OpenClaw
//! gateway.
//!
//! The CRD YAML in `crds/` is generated from these types by `crdgen`
//! (`cargo run -p voicebot-crds --bin crdgen > crds/voicebot.yaml`); a test fails when the file
//! is stale. Field docs become the schema's descriptions (`kubectl explain voicebot.spec`);
//! validation lives in the schema (ranges, patterns, enums) because the oldest API server we
//! support (1.20) has no CEL rules.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the `VoiceBot` resource.
pub const GROUP: &str = "voicebot.dev";
/// API version served.
pub const VERSION: &str = "v1alpha1";
/// Kind.
pub const KIND: &str = "VoiceBot";

/// `group/version`, as in an object's `apiVersion`.
pub fn api_version() -> String {
    format!("{GROUP}/{VERSION}")
}

/// A voice-assistant bot for Discord: its shards, models, agents and peers.
// Several printer columns share a type: the derive's attribute list, not a mistake.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "voicebot.dev",
    version = "v1alpha1",
    kind = "VoiceBot",
    namespaced,
    status = "VoiceBotStatus",
    shortname = "vb",
    category = "voicebot",
    printcolumn(
        name = "Shards",
        type_ = "integer",
        json_path = ".status.sharding.shardCount",
        description = "Shards in force"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.shardsReady",
        description = "Shards whose pod is ready"
    ),
    printcolumn(
        name = "Pods",
        type_ = "integer",
        json_path = ".status.sharding.pods",
        description = "Shard pods"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.phase",
        description = "Ready, Progressing, Resharding or Degraded"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct VoiceBotSpec {
    /// The Discord application and its bot token.
    pub discord: DiscordSpec,
    /// How many gateway shards, and how many run in one pod.
    #[serde(default)]
    pub shards: ShardingSpec,
    /// The shard image.
    pub image: String,
    /// When to pull the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// What each shard pod gets: GPUs, CPU, memory, where it may run.
    #[serde(default)]
    pub resources: ResourcesSpec,
    /// The models every pod runs.
    #[serde(default)]
    pub models: ModelsSpec,
    /// The agents a guild can pick (the first is the default).
    #[schemars(length(min = 1))]
    pub agents: Vec<AgentSpec>,
    /// Sensitivity for guilds that have not chosen one.
    #[serde(default)]
    pub default_sensitivity: Sensitivity,
    /// Where fleet state lives.
    pub redis: RedisSpec,
    /// The OpenClaw gateway the agents run on.
    pub gateway: GatewaySpec,
    /// Prometheus metrics.
    #[serde(default)]
    pub metrics: MetricsSpec,
}

/// A key of a Secret in the VoiceBot's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// The Discord side.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiscordSpec {
    /// Application (client) id, a Discord snowflake.
    #[schemars(regex(pattern = r"^[0-9]{15,21}$"))]
    pub application_id: String,
    /// The Secret key holding the bot token.
    pub token_secret: SecretKeyRef,
}

/// Sharding.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardingSpec {
    /// Total gateway shards; omit to use the count Discord recommends (`GET /gateway/bot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4096))]
    pub count: Option<u32>,
    /// Shards run by one pod.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    pub per_pod: u32,
}

fn one() -> u32 {
    1
}

impl Default for ShardingSpec {
    fn default() -> Self {
        Self {
            count: None,
            per_pod: 1,
        }
    }
}

/// Image pull policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    /// Always pull.
    Always,
    /// Pull when not present on the node.
    IfNotPresent,
    /// Never pull.
    Never,
}

/// Pod resources and placement.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesSpec {
    /// NVIDIA GPUs per pod (`nvidia.com/gpu`); 0 runs everything on the CPU.
    #[serde(default)]
    #[schemars(range(max = 8))]
    pub gpu: u32,
    /// CPU request and limit per pod, a Kubernetes quantity ("2", "1500m").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?m?$"))]
    pub cpu: Option<String>,
    /// Memory request and limit per pod, a Kubernetes quantity ("4Gi").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?([EPTGMK]i?|[mk])?$"))]
    pub memory: Option<String>,
    /// Node labels the pods must run on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate (GPU nodes are often tainted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

/// Whisper model size.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum WhisperModel {
    /// tiny.en: fastest, English only.
    #[default]
    #[serde(rename = "tiny.en")]
    TinyEn,
    /// base: multilingual, more accurate, ~2x slower.
    #[serde(rename = "base")]
    Base,
}

/// Speech synthesis backend.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TtsBackend {
    /// Piper voices in the pod.
    #[default]
    Piper,
    /// An OpenAI-compatible `/v1/audio/speech` endpoint.
    Http,
}

/// Models.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelsSpec {
    /// Whisper size.
    #[serde(default)]
    pub whisper: WhisperModel,
    /// Voice activity model file (under the models directory).
    #[serde(default = "default_vad")]
    pub vad: String,
    /// End-of-turn model file.
    #[serde(default = "default_turn")]
    pub turn: String,
    /// Speech synthesis.
    #[serde(default)]
    pub tts: TtsSpec,
    /// A PersistentVolumeClaim holding the models (as `scripts/setup.sh` lays them out);
    /// without it the image must have them baked in (`BAKE_MODELS=1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_claim: Option<String>,
}

fn default_vad() -> String {
    "silero_vad.onnx".into()
}

fn default_turn() -> String {
    "smart-turn-v3.2-cpu.onnx".into()
}

impl Default for ModelsSpec {
    fn default() -> Self {
        Self {
            whisper: WhisperModel::default(),
            vad: default_vad(),
            turn: default_turn(),
            tts: TtsSpec::default(),
            volume_claim: None,
        }
    }
}

/// Speech synthesis settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TtsSpec {
    /// Backend.
    #[serde(default)]
    pub backend: TtsBackend,
    /// Endpoint for the `http` backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// API key for the `http` backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret: Option<SecretKeyRef>,
    /// Voice of agents that do not name one.
    #[serde(default = "default_voice")]
    pub default_voice: String,
}

fn default_voice() -> String {
    "en_US-joe-medium".into()
}

impl Default for TtsSpec {
    fn default() -> Self {
        Self {
            backend: TtsBackend::default(),
            url: None,
            api_key_secret: None,
            default_voice: default_voice(),
        }
    }
}

/// An agent a guild can talk to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentSpec {
    /// The OpenClaw agent id, also the name people call it by ("jarvis").
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_-]{0,31}$"))]
    pub name: String,
    /// Other names it answers to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// A persona line sent with its turns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persona: Option<String>,
    /// Its voice (a Piper voice name, or the HTTP backend's voice id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
}

/// How readily the bot answers turns that do not name it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Sensitivity {
    /// Only when named (or in solo mode / a follow-up).
    #[default]
    Low,
    /// Also when a classifier is fairly sure it is for the bot.
    Medium,
    /// Also when a classifier thinks it may be.
    High,
}

/// Redis.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// `redis://host:port/db` (no password here: use `urlSecret` for one that has it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^rediss?://"))]
    pub url: Option<String>,
    /// A Secret key holding the whole URL (takes precedence over `url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret: Option<SecretKeyRef>,
}

/// The OpenClaw gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// WebSocket URL (`ws://` or `wss://`).
    #[schemars(regex(pattern = r"^wss?://"))]
    pub url: String,
    /// The Secret key holding the gateway token.
    pub token_secret: SecretKeyRef,
}

/// Metrics.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSpec {
    /// Port of the pods' `/metrics`.
    #[serde(default = "default_metrics_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub port: u16,
    /// Create a Prometheus Operator ServiceMonitor (when that CRD is installed).
    #[serde(default = "yes")]
    pub service_monitor: bool,
}

fn default_metrics_port() -> u16 {
    9090
}

fn yes() -> bool {
    true
}

impl Default for MetricsSpec {
    fn default() -> Self {
        Self {
            port: default_metrics_port(),
            service_monitor: true,
        }
    }
}

/// What the operator observed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VoiceBotStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// A one-word summary: Ready, Progressing, Resharding or Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Ready, Progressing and Degraded conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Shards whose pod is ready.
    #[serde(default)]
    pub shards_ready: u32,
    /// The sharding the running pods use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharding: Option<Sharding>,
    /// A reshard waiting for the old pods to stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_sharding: Option<Sharding>,
}

/// A sharding layout.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sharding {
    /// Total shards.
    pub shard_count: u32,
    /// Shards per pod.
    pub per_pod: u32,
    /// Pods (`ceil(shardCount / perPod)`).
    pub pods: u32,
}

impl Sharding {
    /// The layout for `shard_count` shards, `per_pod` to a pod.
    pub fn new(shard_count: u32, per_pod: u32) -> Self {
        let shard_count = shard_count.max(1);
        let per_pod = per_pod.clamp(1, shard_count);
        Self {
            shard_count,
            per_pod,
            pods: shard_count.div_ceil(per_pod),
        }
    }

    /// The shards pod `ordinal` runs.
    pub fn shards_of(&self, ordinal: u32) -> std::ops::Range<u32> {
        let start = (ordinal.saturating_mul(self.per_pod)).min(self.shard_count);
        start..start.saturating_add(self.per_pod).min(self.shard_count)
    }
}

/// A status condition (the usual Kubernetes shape).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Ready, Progressing or Degraded.
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    /// A CamelCase reason.
    pub reason: String,
    /// Details for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the status last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// The generation it was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The CRD as YAML, as `crdgen` writes it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    let yaml = serde_yaml::to_string(&VoiceBot::crd())?;
    Ok(format!(
        "# Generated by `cargo run -p voicebot-crds --bin crdgen`; do not edit.\n{yaml}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_version_is_group_slash_version() {
        assert_eq!(super::api_version(), "voicebot.dev/v1alpha1");
    }

    #[test]
    fn shards_are_split_between_pods_without_overlap() {
        let s = Sharding::new(10, 4);
        assert_eq!(s.pods, 3);
        assert_eq!(s.shards_of(0), 0..4);
        assert_eq!(s.shards_of(2), 8..10);
        assert!(s.shards_of(3).is_empty());
        let mut all: Vec<u32> = (0..s.pods).flat_map(|p| s.shards_of(p)).collect();
        all.dedup();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(Sharding::new(0, 0), Sharding::new(1, 1));
    }

    #[test]
    fn a_minimal_spec_takes_the_defaults() {
        let vb: VoiceBotSpec = serde_json::from_value(serde_json::json!({
            "discord": {"applicationId": "123456789012345678",
                        "tokenSecret": {"name": "discord", "key": "token"}},
            "image": "voicebot:dev",
            "agents": [{"name": "jarvis"}],
            "redis": {"url": "redis://redis:6379"},
            "gateway": {"url": "ws://openclaw:18789",
                        "tokenSecret": {"name": "openclaw", "key": "token"}}
        }))
        .unwrap();
        assert_eq!(vb.shards.per_pod, 1);
        assert_eq!(vb.models.whisper, WhisperModel::TinyEn);
        assert_eq!(vb.default_sensitivity, Sensitivity::Low);
        assert_eq!(vb.metrics.port, 9090);
    }

    #[test]
    fn the_committed_crd_yaml_is_current() {
        let current = crd_yaml().unwrap();
        for path in ["voicebot.yaml", "../charts/voicebot/crds/voicebot.yaml"] {
            let path = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == current,
                "{path} is stale: run `cargo run -p voicebot-crds --bin crdgen > crds/voicebot.yaml` \
                 and copy it to charts/voicebot/crds/"
            );
        }
    }
}
