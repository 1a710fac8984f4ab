//! The `VoiceBot` custom resource: one Discord bot (an application and its token), the shard
//! pods that run it, their models and agents, and where they find Redis and the OpenClaw
//! gateway.
//!
//! The CRD YAML in `crds/` is generated from these types by `crdgen`
//! (`cargo run -p voicebot-crds --bin crdgen > crds/voicebot.yaml`); a test fails when the file
//! is stale. Field docs become the schema's descriptions (`kubectl explain voicebot.spec`);
//! validation lives in the schema (ranges, patterns, enums) because the oldest API server we
//! support (1.20) has no CEL rules.

pub mod fields;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
pub use voicebot_config::{
    AgentConfig, BotConfig, GatewayConfig, Invalid, LimitsConfig, ModelsConfig, RedisConfig,
    SecretKeyRef, Sensitivity, TtsBackend, TtsConfig, TurnConfig, VadConfig, WhisperModel,
};

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
    /// The shard image (default: `voicebot:<operator version>`, what
    /// `docker build -t voicebot:<version> .` produces).
    #[serde(default = "default_image")]
    #[schemars(length(min = 1))]
    pub image: String,
    /// When to pull the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// What each shard pod gets: GPUs, CPU, memory, where it may run.
    #[serde(default)]
    pub resources: ResourcesSpec,
    /// Where a shard pod finds its model weights.
    #[serde(default)]
    pub model_store: ModelStoreSpec,
    /// What the pods run: agents, models, speech, Redis, the gateway, limits. The operator
    /// renders exactly this into the pods' configuration file.
    #[serde(flatten)]
    pub config: BotConfig,
    /// Prometheus metrics.
    #[serde(default)]
    pub metrics: MetricsSpec,
}

/// The image the operator's own version builds.
pub fn default_image() -> String {
    format!("voicebot:{}", env!("CARGO_PKG_VERSION"))
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
    /// A REST proxy the pods send Discord's API calls to instead of discord.com, `host:port`,
    /// plain HTTP inside the cluster (a twilight-http-proxy that keeps the whole fleet's rate
    /// limits in one place; the project's Discord simulator in the end-to-end test). It sees the
    /// bot token: run it next to the pods, behind a NetworkPolicy. Default: discord.com.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9.-]+:[0-9]{1,5}$"))]
    pub api_proxy: Option<String>,
    /// A gateway the shards connect to instead of Discord's (`ws://` or `wss://`; a gateway
    /// proxy, or the simulator). A resume URL read back from Redis may point only here or at
    /// Discord. Default: Discord's gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^wss?://[^\s/?#]+(/[^\s?#]*)?$"))]
    pub gateway_url: Option<String>,
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

/// How the model weights reach a pod.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelSource {
    /// Baked into the image (`docker build --build-arg BAKE_MODELS=1`): nothing to mount.
    #[default]
    Image,
    /// An init container (`voicebot-models provision`, same image) fetches the pinned wheels of
    /// `models/manifest.tsv`, checks their sha256 and lays the models out in a volume: the
    /// claim or host path below (kept between pods: fetched once), else an emptyDir.
    Provision,
    /// A volume already laid out as `scripts/setup.sh` does (the claim or host path below).
    Volume,
}

/// Where a shard pod finds its model weights (mounted at `/models`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelStoreSpec {
    /// Image, provision or volume.
    #[serde(default)]
    pub source: ModelSource,
    /// A PersistentVolumeClaim for the models (`provision`: its cache; `volume`: read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub volume_claim: Option<String>,
    /// A directory on the node instead of a claim (single-node clusters, a node-local cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/"))]
    pub host_path: Option<String>,
    /// PyPI-compatible index the init container fetches from (`provision`; default PyPI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://"))]
    pub index_url: Option<String>,
}

impl ModelStoreSpec {
    /// What the schema cannot check.
    pub fn validate(&self) -> Result<(), Vec<Invalid>> {
        let mut bad = Vec::new();
        let both = self.volume_claim.is_some() && self.host_path.is_some();
        if both {
            bad.push(Invalid {
                field: "modelStore.hostPath".into(),
                reason: "set volumeClaim or hostPath, not both".into(),
            });
        }
        match self.source {
            ModelSource::Image => {
                for (set, field) in [
                    (self.volume_claim.is_some(), "modelStore.volumeClaim"),
                    (self.host_path.is_some(), "modelStore.hostPath"),
                    (self.index_url.is_some(), "modelStore.indexUrl"),
                ] {
                    if set {
                        bad.push(Invalid {
                            field: field.into(),
                            reason: "used only with source: provision or volume".into(),
                        });
                    }
                }
            }
            ModelSource::Volume => {
                if self.volume_claim.is_none() && self.host_path.is_none() {
                    bad.push(Invalid {
                        field: "modelStore.volumeClaim".into(),
                        reason: "source: volume needs volumeClaim or hostPath".into(),
                    });
                }
                if self.index_url.is_some() {
                    bad.push(Invalid {
                        field: "modelStore.indexUrl".into(),
                        reason: "used only with source: provision".into(),
                    });
                }
            }
            ModelSource::Provision => {}
        }
        if bad.is_empty() { Ok(()) } else { Err(bad) }
    }
}

impl VoiceBotSpec {
    /// Every field the pods could not honour, each named by its path in the spec.
    pub fn validate(&self) -> Result<(), Vec<Invalid>> {
        let mut bad = self.config.validate().err().unwrap_or_default();
        // `shards.perPod` above the count is honoured as one pod with every shard.
        bad.extend(self.model_store.validate().err().unwrap_or_default());
        if bad.is_empty() { Ok(()) } else { Err(bad) }
    }
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
            "agents": [{"name": "jarvis"}],
            "redis": {"url": "redis://redis:6379"},
            "gateway": {"url": "ws://openclaw:18789",
                        "tokenSecret": {"name": "openclaw", "key": "token"}}
        }))
        .unwrap();
        assert_eq!(vb.shards.per_pod, 1);
        assert_eq!(vb.config.models.whisper, WhisperModel::TinyEn);
        assert_eq!(vb.config.default_sensitivity, Sensitivity::Low);
        assert_eq!(vb.metrics.port, 9090);
        assert_eq!(vb.model_store.source, ModelSource::Image);
        assert!(vb.validate().is_ok());
        // The spec's configuration part is exactly the pods' file.
        let file = serde_json::to_value(&vb.config).unwrap();
        assert_eq!(file["agents"][0]["name"], "jarvis");
        assert!(file.get("discord").is_none() && file.get("image").is_none());
    }

    #[test]
    fn model_store_combinations_that_cannot_work_are_refused() {
        let store = |v: serde_json::Value| -> Vec<String> {
            let s: ModelStoreSpec = serde_json::from_value(v).unwrap();
            s.validate()
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(|i| i.field)
                .collect()
        };
        assert!(store(serde_json::json!({})).is_empty());
        assert!(
            store(serde_json::json!({"source": "provision"})).is_empty(),
            "an emptyDir cache"
        );
        assert_eq!(
            store(serde_json::json!({"source": "volume"})),
            ["modelStore.volumeClaim"]
        );
        assert_eq!(
            store(serde_json::json!({"source": "image", "hostPath": "/m"})),
            ["modelStore.hostPath"]
        );
        assert_eq!(
            store(
                serde_json::json!({"source": "volume", "volumeClaim": "w", "indexUrl": "http://x"})
            ),
            ["modelStore.indexUrl"]
        );
        assert!(
            store(serde_json::json!({"source": "provision", "volumeClaim": "w", "hostPath": "/m"}))
                .contains(&"modelStore.hostPath".to_string())
        );
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
