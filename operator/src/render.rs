//! What a `VoiceBot` becomes: pure functions from the resource (and the sharding in force) to
//! the objects the operator applies. No I/O here, so every field is unit-tested.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, HostPathVolumeSource, ObjectFieldSelector,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecurityContext, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use serde_json::json;
use sha2::{Digest, Sha256};
use voicebot_config::env as secret_vars;
use voicebot_crds::{ModelSource, SecretKeyRef, Sharding, VoiceBot};

/// Field manager for server-side apply.
pub const MANAGER: &str = "voicebot-operator";
/// Annotation holding the hash of what the operator last applied (skip unchanged applies).
pub const APPLIED_HASH: &str = "voicebot.dev/applied-hash";
/// Annotation on the pod template: the sharding its pods run.
pub const SHARDING: &str = "voicebot.dev/sharding";
/// Annotation on the pod template: hash of the ConfigMap (a config change rolls the pods).
pub const CONFIG_HASH: &str = "voicebot.dev/config-hash";
/// Where the shard pods read their configuration.
pub const CONFIG_PATH: &str = "/etc/voicebot/voicebot.json";
/// Where the shard pods find their models.
pub const MODELS_DIR: &str = "/models";
/// The model manifest inside the image (what `source: provision` fetches).
pub const IMAGE_MANIFEST: &str = "/usr/share/voicebot/manifest.tsv";

/// Names and labels shared by a bot's objects.
#[derive(Debug, Clone)]
pub struct Names {
    /// The VoiceBot's name.
    pub bot: String,
    /// Its namespace.
    pub namespace: String,
}

impl Names {
    /// Names for `vb`.
    pub fn of(vb: &VoiceBot) -> Self {
        Self {
            bot: vb.meta().name.clone().unwrap_or_default(),
            namespace: vb
                .meta()
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
        }
    }

    /// StatefulSet, Service, PDB and ServiceMonitor name.
    pub fn shard(&self) -> String {
        format!("{}-shard", self.bot)
    }

    /// ConfigMap name.
    pub fn config(&self) -> String {
        format!("{}-config", self.bot)
    }

    /// The prefix of every Redis key of this bot (removed when the bot is deleted).
    pub fn redis_prefix(&self) -> String {
        format!("voicebot:{}:{}:", self.namespace, self.bot)
    }

    /// Labels that select the shard pods.
    pub fn selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".into(), "voicebot".into()),
            ("app.kubernetes.io/instance".into(), self.bot.clone()),
            ("app.kubernetes.io/component".into(), "shard".into()),
        ])
    }

    /// `k=v,k=v` for list calls.
    pub fn selector_string(&self) -> String {
        self.selector()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// All labels of the bot's objects.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut l = self.selector();
        l.insert("app.kubernetes.io/managed-by".into(), MANAGER.into());
        l
    }
}

fn owner(vb: &VoiceBot) -> Vec<OwnerReference> {
    vb.controller_owner_ref(&()).into_iter().collect()
}

fn meta(vb: &VoiceBot, names: &Names, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(names.namespace.clone()),
        labels: Some(names.labels()),
        owner_references: Some(owner(vb)),
        ..ObjectMeta::default()
    }
}

/// A short, stable hash of a JSON value.
pub fn hash(value: &serde_json::Value) -> String {
    let digest = Sha256::digest(value.to_string().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Stamps `APPLIED_HASH` (the hash of the object without it) into the object's annotations.
pub fn stamp(mut obj: serde_json::Value) -> serde_json::Value {
    let h = hash(&obj);
    if let Some(m) = obj.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        let annotations = m.entry("annotations").or_insert_with(|| json!({}));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(APPLIED_HASH.into(), json!(h));
        }
    }
    obj
}

/// The configuration file the pods read: the spec's [`voicebot_crds::BotConfig`], exactly as
/// written (the shard parses the same type).
pub fn config_map(vb: &VoiceBot) -> ConfigMap {
    let names = Names::of(vb);
    let text = serde_json::to_string_pretty(&vb.spec.config).unwrap_or_default();
    ConfigMap {
        metadata: meta(vb, &names, names.config()),
        data: Some(BTreeMap::from([("voicebot.json".into(), text)])),
        ..ConfigMap::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn secret_env(name: &str, r: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: r.name.clone(),
                key: r.key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// The shard pods. `sharding` is what the pods must run; `replicas` is normally
/// `sharding.pods`, and 0 while a reshard waits for the old pods to go.
pub fn stateful_set(vb: &VoiceBot, sharding: Sharding, replicas: u32) -> StatefulSet {
    let names = Names::of(vb);
    let spec = &vb.spec;
    let config = &spec.config;
    let port = i32::from(spec.metrics.port);
    let mut env = vec![
        env("VOICEBOT_NAME", names.bot.clone()),
        env("VOICEBOT_NAMESPACE", names.namespace.clone()),
        EnvVar {
            name: "POD_NAME".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
        },
        // The pod's shards are [ordinal × per pod, +per pod) of the count; the ordinal is the
        // suffix of POD_NAME (1.20 has no pod-index label).
        env("SHARD_COUNT", sharding.shard_count.to_string()),
        env("SHARDS_PER_POD", sharding.per_pod.to_string()),
        env(
            "DISCORD_APPLICATION_ID",
            spec.discord.application_id.clone(),
        ),
        secret_env(secret_vars::DISCORD_TOKEN, &spec.discord.token_secret),
        secret_env(secret_vars::GATEWAY_TOKEN, &config.gateway.token_secret),
        env("VOICEBOT_REDIS_PREFIX", names.redis_prefix()),
        env("VOICEBOT_CONFIG", CONFIG_PATH),
        env("VOICEBOT_MODELS_DIR", MODELS_DIR),
        env("METRICS_ADDR", format!("0.0.0.0:{port}")),
    ];
    // Discord's addresses, when the VoiceBot names a proxy (or the simulator) instead.
    if let Some(proxy) = &spec.discord.api_proxy {
        env.push(self::env("DISCORD_API_PROXY", proxy.clone()));
    }
    if let Some(url) = &spec.discord.gateway_url {
        env.push(self::env("DISCORD_GATEWAY_URL", url.clone()));
    }
    // Everything else the pod does comes from the configuration file; only secret values
    // travel in the environment, as references.
    if let Some(secret) = &config.redis.url_secret {
        env.push(secret_env(secret_vars::REDIS_URL, secret));
    }
    if let Some(key) = &config.models.tts.api_key_secret {
        env.push(secret_env(secret_vars::TTS_API_KEY, key));
    }
    if let Some(key) = &config.redis.seal_key_secret {
        env.push(secret_env(secret_vars::STATE_KEY, key));
    }
    if let Some(ca) = &config.redis.ca_secret {
        env.push(secret_env(secret_vars::REDIS_CA, ca));
    }

    let mut limits = BTreeMap::new();
    let mut requests = BTreeMap::new();
    if spec.resources.gpu > 0 {
        limits.insert(
            "nvidia.com/gpu".into(),
            Quantity(spec.resources.gpu.to_string()),
        );
    }
    for (key, value) in [
        ("cpu", &spec.resources.cpu),
        ("memory", &spec.resources.memory),
    ] {
        if let Some(v) = value {
            limits.insert(key.into(), Quantity(v.clone()));
            requests.insert(key.into(), Quantity(v.clone()));
        }
    }

    let mut mounts = vec![VolumeMount {
        name: "config".into(),
        mount_path: "/etc/voicebot".into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    let mut volumes = vec![Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: names.config(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    // The root filesystem is read-only: scratch space (and the device file when there is no
    // Redis) lives in an emptyDir.
    mounts.push(VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..VolumeMount::default()
    });
    volumes.push(Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    });
    let security = SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    };
    let store = &spec.model_store;
    let mut init_containers = Vec::new();
    if store.source != ModelSource::Image {
        let provision = store.source == ModelSource::Provision;
        mounts.push(VolumeMount {
            name: "models".into(),
            mount_path: MODELS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(models_volume(store, provision));
        if provision {
            let mut args = vec![
                "provision".to_string(),
                "--manifest".into(),
                IMAGE_MANIFEST.into(),
                "--dest".into(),
                MODELS_DIR.into(),
                "--whisper".into(),
                whisper_name(config.models.whisper).into(),
                // The image carries ONNX Runtime outside /models.
                "--skip".into(),
                "onnxruntime/".into(),
            ];
            if let Some(index) = &store.index_url {
                args.extend(["--index-url".into(), index.clone()]);
            }
            init_containers.push(Container {
                name: "models".into(),
                image: Some(spec.image.clone()),
                image_pull_policy: spec.image_pull_policy.map(|p| format!("{p:?}")),
                command: Some(vec!["/usr/local/bin/voicebot-models".into()]),
                args: Some(args),
                volume_mounts: Some(vec![
                    VolumeMount {
                        name: "models".into(),
                        mount_path: MODELS_DIR.into(),
                        ..VolumeMount::default()
                    },
                    VolumeMount {
                        name: "tmp".into(),
                        mount_path: "/tmp".into(),
                        ..VolumeMount::default()
                    },
                ]),
                security_context: Some(security.clone()),
                ..Container::default()
            });
        }
    }
    let probe = |path: &str, delay: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("metrics".into()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(delay),
        period_seconds: Some(10),
        ..Probe::default()
    };
    let config_hash = hash(&serde_json::to_value(config_map(vb).data).unwrap_or_default());
    let container = Container {
        name: "shard".into(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(|p| format!("{p:?}")),
        args: Some(vec!["run".into()]),
        env: Some(env),
        // Server-side apply on older API servers needs the list keys spelled out (protocol).
        ports: Some(vec![ContainerPort {
            name: Some("metrics".into()),
            container_port: port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe("/readyz", 5)),
        liveness_probe: Some(probe("/healthz", 30)),
        resources: Some(ResourceRequirements {
            limits: (!limits.is_empty()).then_some(limits),
            requests: (!requests.is_empty()).then_some(requests),
            ..ResourceRequirements::default()
        }),
        volume_mounts: Some(mounts),
        security_context: Some(security),
        ..Container::default()
    };
    let mut template_labels = names.selector();
    template_labels.insert("app.kubernetes.io/managed-by".into(), MANAGER.into());
    StatefulSet {
        metadata: meta(vb, &names, names.shard()),
        spec: StatefulSetSpec {
            replicas: Some(replicas as i32),
            service_name: Some(names.shard()),
            // Shards find each other through Redis, not through start order.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(names.selector()),
                ..LabelSelector::default()
            },
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(template_labels),
                    annotations: Some(BTreeMap::from([
                        (
                            SHARDING.into(),
                            format!("{}/{}", sharding.shard_count, sharding.per_pod),
                        ),
                        (CONFIG_HASH.into(), config_hash),
                    ])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    init_containers: (!init_containers.is_empty()).then_some(init_containers),
                    volumes: Some(volumes),
                    node_selector: (!spec.resources.node_selector.is_empty())
                        .then(|| spec.resources.node_selector.clone()),
                    tolerations: (!spec.resources.tolerations.is_empty())
                        .then(|| spec.resources.tolerations.clone()),
                    termination_grace_period_seconds: Some(30),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(10001),
                        run_as_group: Some(10001),
                        fs_group: Some(10001),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    ..PodSpec::default()
                }),
            },
            ..StatefulSetSpec::default()
        },
        status: None,
    }
}

/// The volume at `/models`: the claim, the host directory, or (provision only) an emptyDir.
fn models_volume(store: &voicebot_crds::ModelStoreSpec, provision: bool) -> Volume {
    let mut volume = Volume {
        name: "models".into(),
        ..Volume::default()
    };
    if let Some(claim) = &store.volume_claim {
        volume.persistent_volume_claim = Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.clone(),
            read_only: Some(!provision),
        });
    } else if let Some(path) = &store.host_path {
        volume.host_path = Some(HostPathVolumeSource {
            path: path.clone(),
            type_: Some(
                if provision {
                    "DirectoryOrCreate"
                } else {
                    "Directory"
                }
                .into(),
            ),
        });
    } else {
        volume.empty_dir = Some(EmptyDirVolumeSource::default());
    }
    volume
}

/// The name `voicebot-models provision --whisper` takes.
fn whisper_name(model: voicebot_crds::WhisperModel) -> &'static str {
    match model {
        voicebot_crds::WhisperModel::TinyEn => "tiny.en",
        voicebot_crds::WhisperModel::Base => "base",
    }
}

/// The headless Service of the shard pods (stable DNS, metrics scraping).
pub fn service(vb: &VoiceBot) -> Service {
    let names = Names::of(vb);
    Service {
        metadata: meta(vb, &names, names.shard()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(names.selector()),
            ports: Some(vec![ServicePort {
                name: Some("metrics".into()),
                port: i32::from(vb.spec.metrics.port),
                protocol: Some("TCP".into()),
                target_port: Some(IntOrString::String("metrics".into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// A PodDisruptionBudget (one shard pod down at a time) as JSON, for `policy/v1` or, on API
/// servers before 1.21, `policy/v1beta1` (same fields for what we use).
pub fn pod_disruption_budget(vb: &VoiceBot, api_version: &str) -> serde_json::Value {
    let names = Names::of(vb);
    json!({
        "apiVersion": api_version,
        "kind": "PodDisruptionBudget",
        "metadata": meta(vb, &names, names.shard()),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": names.selector()},
        },
    })
}

/// Everything the operator applies for `vb` with this layout, as `voicebot-operator render`
/// prints it (the ServiceMonitor only with `metrics.serviceMonitor`).
pub fn documents(vb: &VoiceBot, sharding: Sharding) -> Vec<serde_json::Value> {
    let typed = |v: serde_json::Value, api: &str, kind: &str| {
        let mut v = v;
        if let Some(o) = v.as_object_mut() {
            o.insert("apiVersion".into(), api.into());
            o.insert("kind".into(), kind.into());
        }
        v
    };
    let mut docs = vec![
        typed(
            serde_json::to_value(config_map(vb)).unwrap_or_default(),
            "v1",
            "ConfigMap",
        ),
        typed(
            serde_json::to_value(service(vb)).unwrap_or_default(),
            "v1",
            "Service",
        ),
        typed(
            serde_json::to_value(stateful_set(vb, sharding, sharding.pods)).unwrap_or_default(),
            "apps/v1",
            "StatefulSet",
        ),
        pod_disruption_budget(vb, "policy/v1"),
    ];
    if vb.spec.metrics.service_monitor {
        docs.push(service_monitor(vb));
    }
    docs
}

/// A Prometheus Operator ServiceMonitor for the shard pods.
pub fn service_monitor(vb: &VoiceBot) -> serde_json::Value {
    let names = Names::of(vb);
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta(vb, &names, names.shard()),
        "spec": {
            "selector": {"matchLabels": names.selector()},
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn bot() -> VoiceBot {
        let mut vb: VoiceBot = serde_json::from_value(json!({
            "apiVersion": "voicebot.dev/v1alpha1",
            "kind": "VoiceBot",
            "metadata": {"name": "jarvis", "namespace": "bots", "uid": "u-1", "generation": 1},
            "spec": {
                "discord": {"applicationId": "123456789012345678",
                            "tokenSecret": {"name": "discord", "key": "token"}},
                "shards": {"count": 5, "perPod": 2},
                "image": "voicebot:dev",
                "resources": {"gpu": 1, "memory": "4Gi", "nodeSelector": {"gpu": "yes"}},
                "agents": [{"name": "jarvis", "aliases": ["jarv"]}],
                "redis": {"urlSecret": {"name": "redis", "key": "url"}},
                "gateway": {"url": "ws://openclaw:18789",
                            "tokenSecret": {"name": "openclaw", "key": "token"}}
            }
        }))
        .unwrap();
        vb.meta_mut().namespace = Some("bots".into());
        vb
    }

    fn env_of(sts: &StatefulSet) -> BTreeMap<String, EnvVar> {
        let pod = sts.spec.template.spec.as_ref().unwrap();
        pod.containers[0]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect()
    }

    #[test]
    fn discord_proxies_reach_the_pods_only_when_the_voicebot_names_them() {
        let vb = bot();
        let env = env_of(&stateful_set(&vb, Sharding::new(5, 2), 3));
        assert!(!env.contains_key("DISCORD_API_PROXY"));
        assert!(!env.contains_key("DISCORD_GATEWAY_URL"));

        let mut vb = bot();
        vb.spec.discord.api_proxy = Some("http-proxy.bots:8080".into());
        vb.spec.discord.gateway_url = Some("ws://gateway-proxy.bots:7878".into());
        let env = env_of(&stateful_set(&vb, Sharding::new(5, 2), 3));
        assert_eq!(
            env["DISCORD_API_PROXY"].value.as_deref(),
            Some("http-proxy.bots:8080")
        );
        assert_eq!(
            env["DISCORD_GATEWAY_URL"].value.as_deref(),
            Some("ws://gateway-proxy.bots:7878")
        );
    }

    #[test]
    fn the_stateful_set_carries_the_sharding_the_secrets_and_the_gpu() {
        let vb = bot();
        let sts = stateful_set(&vb, Sharding::new(5, 2), 3);
        let spec = &sts.spec;
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(sts.metadata.name.as_deref(), Some("jarvis-shard"));
        assert_eq!(
            sts.metadata.owner_references.as_ref().unwrap()[0].kind,
            "VoiceBot"
        );
        let env = env_of(&sts);
        assert_eq!(env["SHARD_COUNT"].value.as_deref(), Some("5"));
        assert_eq!(env["SHARDS_PER_POD"].value.as_deref(), Some("2"));
        // Secrets are references, never values.
        let token = env["DISCORD_TOKEN"].value_from.as_ref().unwrap();
        assert_eq!(token.secret_key_ref.as_ref().unwrap().name, "discord");
        assert!(env["DISCORD_TOKEN"].value.is_none());
        assert!(env["REDIS_URL"].value_from.is_some());
        assert_eq!(
            env["VOICEBOT_REDIS_PREFIX"].value.as_deref(),
            Some("voicebot:bots:jarvis:")
        );
        let pod = spec.template.spec.as_ref().unwrap();
        let res = pod.containers[0].resources.as_ref().unwrap();
        assert_eq!(
            res.limits.as_ref().unwrap()["nvidia.com/gpu"],
            Quantity("1".into())
        );
        assert_eq!(pod.node_selector.as_ref().unwrap()["gpu"], "yes");
        assert_eq!(
            pod.security_context.as_ref().unwrap().run_as_non_root,
            Some(true)
        );
        let sc = pod.containers[0].security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        assert!(sc.capabilities.as_ref().unwrap().add.is_none());
        let annotations = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref();
        assert_eq!(annotations.unwrap()[SHARDING], "5/2");
    }

    /// `bot()` with `patch` merged into its spec.
    fn bot_with(patch: serde_json::Value) -> VoiceBot {
        let mut v = serde_json::to_value(bot()).unwrap();
        for (k, val) in patch.as_object().unwrap() {
            v["spec"][k] = val.clone();
        }
        let vb: VoiceBot = serde_json::from_value(v).unwrap();
        vb.spec.validate().unwrap();
        vb
    }

    fn pod_of(vb: &VoiceBot) -> k8s_openapi::api::core::v1::PodSpec {
        stateful_set(vb, Sharding::new(5, 2), 3)
            .spec
            .template
            .spec
            .unwrap()
    }

    fn models_volume_of(pod: &k8s_openapi::api::core::v1::PodSpec) -> Volume {
        pod.volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "models")
            .cloned()
            .unwrap()
    }

    #[test]
    fn the_model_store_decides_the_models_volume_and_the_init_container() {
        // image: the weights baked into the image; nothing mounted over /models.
        let pod = pod_of(&bot());
        assert!(pod.init_containers.is_none());
        assert!(
            pod.volumes
                .as_ref()
                .unwrap()
                .iter()
                .all(|v| v.name != "models")
        );
        // provision onto a node directory: the init container fills it for the configured
        // Whisper size and the main container reads it.
        let vb = bot_with(json!({
            "modelStore": {"source": "provision", "hostPath": "/var/cache/vb",
                           "indexUrl": "http://pypi.local/"},
            "models": {"whisper": "base"},
        }));
        let pod = pod_of(&vb);
        let init = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(
            init.image.as_deref(),
            Some("voicebot:dev"),
            "the same image"
        );
        let args = init.args.clone().unwrap().join(" ");
        assert!(
            args.starts_with(
                "provision --manifest /usr/share/voicebot/manifest.tsv --dest /models"
            ),
            "{args}"
        );
        assert!(args.contains("--whisper base"), "{args}");
        assert!(args.contains("--index-url http://pypi.local/"), "{args}");
        let models = models_volume_of(&pod);
        assert_eq!(models.host_path.as_ref().unwrap().path, "/var/cache/vb");
        let mount = |c: &Container| {
            c.volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .find(|m| m.name == "models")
                .cloned()
                .unwrap()
        };
        assert_eq!(mount(init).read_only, None, "the init container writes");
        assert_eq!(mount(&pod.containers[0]).read_only, Some(true));
        // volume from a claim: read-only, no init container.
        let vb = bot_with(json!({"modelStore": {"source": "volume", "volumeClaim": "weights"}}));
        let pod = pod_of(&vb);
        assert!(pod.init_containers.is_none());
        let models = models_volume_of(&pod);
        let claim = models.persistent_volume_claim.as_ref().unwrap();
        assert_eq!(
            (claim.claim_name.as_str(), claim.read_only),
            ("weights", Some(true))
        );
    }

    #[test]
    fn image_resources_metrics_and_the_tts_key_reach_the_pod() {
        let vb = bot_with(json!({
            "image": "registry.local/voicebot:9.9",
            "imagePullPolicy": "Always",
            "resources": {"gpu": 0, "cpu": "3", "memory": "6Gi",
                          "tolerations": [{"key": "dedicated", "operator": "Equal",
                                           "value": "voice", "effect": "NoSchedule"}]},
            "metrics": {"port": 9400, "serviceMonitor": false},
            "models": {"tts": {"backend": "http", "url": "http://tts:8000/v1",
                               "apiKeySecret": {"name": "tts", "key": "apiKey"}}},
            "redis": {"urlSecret": {"name": "redis", "key": "url"},
                      "sealKeySecret": {"name": "voicebot-state", "key": "key"},
                      "caSecret": {"name": "redis-tls", "key": "ca.crt"}},
        }));
        let pod = pod_of(&vb);
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("registry.local/voicebot:9.9"));
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
        let limits = c.resources.as_ref().unwrap().limits.clone().unwrap();
        assert_eq!(limits["cpu"], Quantity("3".into()));
        assert_eq!(limits["memory"], Quantity("6Gi".into()));
        assert!(!limits.contains_key("nvidia.com/gpu"));
        assert_eq!(
            pod.tolerations.as_ref().unwrap()[0].value.as_deref(),
            Some("voice")
        );
        let env: BTreeMap<String, EnvVar> = c
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect();
        assert_eq!(env["METRICS_ADDR"].value.as_deref(), Some("0.0.0.0:9400"));
        assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 9400);
        let key = env["TTS_API_KEY"].value_from.as_ref().unwrap();
        let key = key.secret_key_ref.as_ref().unwrap();
        assert_eq!((key.name.as_str(), key.key.as_str()), ("tts", "apiKey"));
        let seal = env["VOICEBOT_STATE_KEY"].value_from.as_ref().unwrap();
        let seal = seal.secret_key_ref.as_ref().unwrap();
        assert_eq!(
            (seal.name.as_str(), seal.key.as_str()),
            ("voicebot-state", "key")
        );
        assert!(
            env["VOICEBOT_STATE_KEY"].value.is_none(),
            "the key travels by reference only"
        );
        let ca = env["REDIS_CA"].value_from.as_ref().unwrap();
        let ca = ca.secret_key_ref.as_ref().unwrap();
        assert_eq!((ca.name.as_str(), ca.key.as_str()), ("redis-tls", "ca.crt"));
        assert_eq!(service(&vb).spec.unwrap().ports.unwrap()[0].port, 9400);
        // The endpoint and the model are configuration, in the ConfigMap the shard parses.
        let text = config_map(&vb).data.unwrap()["voicebot.json"].clone();
        let parsed = voicebot_config::BotConfig::from_json(&text).unwrap();
        assert_eq!(
            parsed, vb.spec.config,
            "the pod reads exactly the spec's configuration"
        );
        let kinds: Vec<String> = documents(&vb, Sharding::new(5, 2))
            .iter()
            .map(|d| d["kind"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            kinds,
            ["ConfigMap", "Service", "StatefulSet", "PodDisruptionBudget"],
            "serviceMonitor: false renders none"
        );
        let kinds = documents(&bot(), Sharding::new(5, 2));
        assert_eq!(kinds.last().unwrap()["kind"], "ServiceMonitor");
    }

    #[test]
    fn a_config_change_changes_the_pod_template() {
        let vb = bot();
        let a = stateful_set(&vb, Sharding::new(5, 2), 3);
        let mut changed = vb.clone();
        changed.spec.config.agents[0].aliases.push("jeeves".into());
        let b = stateful_set(&changed, Sharding::new(5, 2), 3);
        let hash_of = |s: &StatefulSet| {
            s.spec
                .template
                .metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap()[CONFIG_HASH]
                .clone()
        };
        assert_ne!(hash_of(&a), hash_of(&b));
        assert!(config_map(&changed).data.unwrap()["voicebot.json"].contains("jeeves"));
    }

    #[test]
    fn the_applied_hash_is_stable_and_tracks_content() {
        let vb = bot();
        let a = stamp(serde_json::to_value(service(&vb)).unwrap());
        let b = stamp(serde_json::to_value(service(&vb)).unwrap());
        assert_eq!(a, b);
        let mut other = vb.clone();
        other.spec.metrics.port = 9100;
        let c = stamp(serde_json::to_value(service(&other)).unwrap());
        assert_ne!(
            a["metadata"]["annotations"][APPLIED_HASH],
            c["metadata"]["annotations"][APPLIED_HASH]
        );
    }

    #[test]
    fn the_service_is_headless_and_the_budget_allows_one_pod_down() {
        let vb = bot();
        let svc = service(&vb);
        assert_eq!(svc.spec.unwrap().cluster_ip.as_deref(), Some("None"));
        let pdb = pod_disruption_budget(&vb, "policy/v1beta1");
        assert_eq!(pdb["apiVersion"], "policy/v1beta1");
        assert_eq!(pdb["spec"]["maxUnavailable"], 1);
        let sm = service_monitor(&vb);
        assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    }
}
