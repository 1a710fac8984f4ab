//! The operator against a real kube-apiserver 1.20 + etcd on loopback (built from Debian's
//! source package by `scripts/setup-apiserver.sh`). There is no kubelet and no
//! controller-manager: StatefulSets create no pods, so the test creates the pods and marks them
//! ready itself, and garbage collection is checked through owner references.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Config, ResourceExt};
use serde_json::json;
use voicebot_crds::VoiceBot;
use voicebot_operator::metrics::Metrics;
use voicebot_operator::reconcile::{self, Capabilities, Context};

use common::{Redis, free_port};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// etcd + kube-apiserver, killed when dropped.
struct Cluster {
    children: Vec<Child>,
    url: String,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const TOKEN: &str = "voicebot-test-admin-token";

impl Cluster {
    fn start() -> Self {
        let apiserver = root().join(".cache/k8s/bin/kube-apiserver");
        assert!(
            apiserver.is_file(),
            "{} is missing: run scripts/setup.sh (it builds kube-apiserver from Debian's source)",
            apiserver.display()
        );
        // One directory per cluster: the tests of this file run at once, in one process.
        let dir = std::env::temp_dir().join(format!(
            "voicebot-apiserver-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let dir = TempDir(dir);
        let d = &dir.0;
        let (client_port, peer_port, secure_port) = (free_port(), free_port(), free_port());
        let etcd = Command::new("etcd")
            .args([
                "--data-dir",
                d.join("etcd").to_str().unwrap(),
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client_port}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{client_port}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("etcd.log")).unwrap())
            .spawn()
            .expect("etcd (scripts/setup.sh installs etcd-server)");
        let key = d.join("sa.key");
        let ok = Command::new("openssl")
            .args(["genrsa", "-out", key.to_str().unwrap(), "2048"])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl genrsa failed");
        std::fs::write(
            d.join("tokens.csv"),
            format!("{TOKEN},admin,admin,\"system:masters\"\n"),
        )
        .unwrap();
        let apiserver = Command::new(apiserver)
            .args([
                &format!("--etcd-servers=http://127.0.0.1:{client_port}"),
                &format!("--secure-port={secure_port}"),
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--insecure-port=0",
                &format!("--cert-dir={}", d.join("certs").display()),
                &format!("--token-auth-file={}", d.join("tokens.csv").display()),
                "--authorization-mode=RBAC",
                &format!("--service-account-key-file={}", key.display()),
                &format!("--service-account-signing-key-file={}", key.display()),
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-cluster-ip-range=10.0.0.0/24",
                // No controller-manager makes the namespaces' default ServiceAccounts.
                "--disable-admission-plugins=ServiceAccount",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("apiserver.log")).unwrap())
            .spawn()
            .unwrap();
        Self {
            children: vec![apiserver, etcd],
            url: format!("https://127.0.0.1:{secure_port}"),
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        let log = std::fs::read_to_string(self._dir.0.join("apiserver.log")).unwrap_or_default();
        log.lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn client(&self) -> Client {
        let mut config = Config::new(self.url.parse().unwrap());
        config.accept_invalid_certs = true;
        config.auth_info.token = Some(TOKEN.to_string().into());
        let client = Client::try_from(config).unwrap();
        let start = Instant::now();
        loop {
            if client.apiserver_version().await.is_ok()
                && Api::<Namespace>::all(client.clone())
                    .get_opt("default")
                    .await
                    .ok()
                    .flatten()
                    .is_some()
            {
                return client;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the API server did not come up:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn env_of(sts: &StatefulSet, name: &str) -> String {
    let pod = sts.spec.template.spec.as_ref().unwrap();
    pod.containers[0]
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
        .unwrap_or_default()
}

async fn add_pod(pods: &Api<Pod>, ordinal: u32) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": format!("jarvis-shard-{ordinal}"),
            "labels": {"app.kubernetes.io/name": "voicebot",
                       "app.kubernetes.io/instance": "jarvis",
                       "app.kubernetes.io/component": "shard"}},
        "spec": {"containers": [{"name": "shard", "image": "voicebot:test"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    // No kubelet: say it is ready ourselves.
    let status = json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-25T00:00:00Z"}]}});
    pods.patch_status(
        &format!("jarvis-shard-{ordinal}"),
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_runs_a_voicebot_on_a_real_api_server() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = Cluster::start();
    let client = cluster.client().await;
    let version = client.apiserver_version().await.unwrap();
    eprintln!("kube-apiserver {}.{}", version.major, version.minor);

    // The CRD as generated, applied like `kubectl apply --server-side`.
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&std::fs::read_to_string(root().join("crds/voicebot.yaml")).unwrap())
            .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "voicebots.voicebot.dev",
        &PatchParams::apply("test").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap_or_else(|e| panic!("the API server refused the CRD: {e}\n{}", cluster.log()));
    eventually("the CRD to be established", || async {
        let c = crds.get("voicebots.voicebot.dev").await.ok()?;
        c.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;

    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "bots"}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();

    // The operator, as `voicebot-operator` runs it.
    let capabilities = Capabilities::discover(&client).await;
    assert_eq!(
        capabilities.pdb_api_version.as_deref(),
        Some("policy/v1beta1"),
        "1.20 serves PodDisruptionBudgets only as v1beta1"
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        metrics: Metrics::new(),
        capabilities,
        discord_api: "http://127.0.0.1:1".into(),
        http: reqwest::Client::new(),
        events: Some(kube::runtime::events::Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: "voicebot-operator".into(),
                instance: Some("test".into()),
            },
        )),
    });
    let operator = tokio::spawn(
        voicebot_operator::controller(&client, None)
            .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
            .for_each(|r| async move {
                if let Err(e) = r {
                    eprintln!("reconcile: {e:?}");
                }
            }),
    );

    // The example bot, with a real Redis.
    let redis = Redis::start();
    let redis_url = redis.url();
    let example: serde_json::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("examples/voicebot.yaml")).unwrap(),
    )
    .unwrap();
    // The README's way: the whole URL, password included, in a Secret the bot names.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "bots");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "voicebot-redis"},
                "stringData": {"url": redis_url},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        example["spec"]["redis"]["urlSecret"]["name"], "voicebot-redis",
        "the example reads its Redis URL from the Secret the README creates"
    );
    let bots: Api<VoiceBot> = Api::namespaced(client.clone(), "bots");
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "bots");

    // A bot the pods cannot honour is accepted by the schema but refused by the operator,
    // with the fields named in its status; nothing is rendered for it.
    let mut bad = example.clone();
    bad["metadata"]["name"] = json!("refused");
    bad["spec"]["agents"][1]["voice"] = json!("en_GB-nobody");
    bad["spec"]["models"]["tts"]["url"] = json!("http://tts:8000/v1");
    bots.patch("refused", &PatchParams::apply("test"), &Patch::Apply(&bad))
        .await
        .unwrap();
    let degraded = eventually("the refusal in the status", || async {
        let s = bots.get("refused").await.ok()?.status?;
        s.conditions.into_iter().find(|c| c.type_ == "Degraded")
    })
    .await;
    assert_eq!(degraded.reason, "InvalidSpec");
    let message = degraded.message.unwrap_or_default();
    for field in ["agents[1].voice", "models.tts.url"] {
        assert!(message.contains(field), "{message}");
    }
    assert!(sets.get_opt("refused-shard").await.unwrap().is_none());
    bots.delete("refused", &DeleteParams::default())
        .await
        .unwrap();

    bots.patch(
        "jarvis",
        &PatchParams::apply("test"),
        &Patch::Apply(&example),
    )
    .await
    .unwrap_or_else(|e| panic!("the example VoiceBot was refused: {e}"));

    // Its objects appear with the right contents.
    let sts = eventually("the StatefulSet", || async {
        sets.get_opt("jarvis-shard").await.ok().flatten()
    })
    .await;
    assert_eq!(sts.spec.replicas, Some(2), "4 shards, 2 per pod");
    assert_eq!(env_of(&sts, "SHARD_COUNT"), "4");
    assert_eq!(env_of(&sts, "SHARDS_PER_POD"), "2");
    let redis_env = sts.spec.template.spec.as_ref().unwrap().containers[0]
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "REDIS_URL")
        .and_then(|e| e.value_from.as_ref()?.secret_key_ref.clone())
        .expect("REDIS_URL from the Secret");
    assert_eq!(
        (redis_env.name.as_str(), redis_env.key.as_str()),
        ("voicebot-redis", "url")
    );
    let pod = sts.spec.template.spec.as_ref().unwrap();
    let limits = pod.containers[0]
        .resources
        .as_ref()
        .unwrap()
        .limits
        .as_ref()
        .unwrap();
    assert_eq!(limits["nvidia.com/gpu"].0, "1");
    let bot = bots.get("jarvis").await.unwrap();
    let owner = &sts.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("VoiceBot", bot.uid().unwrap().as_str()),
        "garbage collection removes the set with its bot"
    );
    let svc = Api::<Service>::namespaced(client.clone(), "bots")
        .get("jarvis-shard")
        .await
        .unwrap();
    assert_eq!(svc.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    let cm = Api::<ConfigMap>::namespaced(client.clone(), "bots")
        .get("jarvis-config")
        .await
        .unwrap();
    assert!(cm.data.unwrap()["voicebot.json"].contains("sage"));
    let pdb_api = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "policy",
        "v1beta1",
        "PodDisruptionBudget",
    ));
    let pdb = Api::<DynamicObject>::namespaced_with(client.clone(), "bots", &pdb_api)
        .get("jarvis-shard")
        .await
        .unwrap();
    assert_eq!(pdb.data["spec"]["maxUnavailable"], 1);

    // Nothing ready yet: Progressing; and reconciles of the unchanged bot write nothing.
    let status = eventually("a status", || async {
        bots.get("jarvis").await.ok()?.status
    })
    .await;
    assert_eq!(status.phase.as_deref(), Some("Progressing"));
    let versions = || async {
        (
            sets.get("jarvis-shard").await.unwrap().resource_version(),
            bots.get("jarvis").await.unwrap().resource_version(),
        )
    };
    let before = versions().await;
    let writes = ctx.metrics.writes();
    tokio::time::sleep(Duration::from_secs(12)).await; // two 5 s requeues
    assert_eq!(versions().await, before, "an unchanged bot was written");
    assert_eq!(ctx.metrics.writes(), writes);

    // Pods ready (no kubelet: the test plays it) → Ready.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "bots");
    add_pod(&pods, 0).await;
    add_pod(&pods, 1).await;
    let status = eventually("Ready", || async {
        let s = bots.get("jarvis").await.ok()?.status?;
        (s.phase.as_deref() == Some("Ready")).then_some(s)
    })
    .await;
    assert_eq!(status.shards_ready, 4);
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");

    // Reshard 4 → 6: the old pods are stopped first, with the old layout.
    let started = Instant::now();
    bots.patch(
        "jarvis",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"shards": {"count": 6}}})),
    )
    .await
    .unwrap();
    let sts = eventually("the scale-down", || async {
        let s = sets.get("jarvis-shard").await.ok()?;
        (s.spec.replicas == Some(0)).then_some(s)
    })
    .await;
    assert_eq!(
        env_of(&sts, "SHARD_COUNT"),
        "4",
        "stopped with the old layout"
    );
    let s = bots.get("jarvis").await.unwrap().status.unwrap();
    assert_eq!(s.phase.as_deref(), Some("Resharding"));
    assert_eq!(s.pending_sharding.unwrap().shard_count, 6);
    // The StatefulSet controller would now delete the pods; here the test does.
    for o in 0..2 {
        pods.delete(
            &format!("jarvis-shard-{o}"),
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            },
        )
        .await
        .unwrap();
    }
    let sts = eventually("the new layout", || async {
        let s = sets.get("jarvis-shard").await.ok()?;
        (s.spec.replicas == Some(3)).then_some(s)
    })
    .await;
    assert_eq!(env_of(&sts, "SHARD_COUNT"), "6");
    eprintln!(
        "reshard: count changed → new layout applied in {:?} (pods deleted by the test in between)",
        started.elapsed()
    );
    let s = eventually("the status of the new layout", || async {
        let s = bots.get("jarvis").await.ok()?.status?;
        (s.sharding?.shard_count == 6 && s.pending_sharding.is_none()).then_some(s)
    })
    .await;
    assert_eq!(s.sharding.unwrap().pods, 3);
    assert_eq!(
        s.observed_generation,
        bots.get("jarvis").await.unwrap().metadata.generation
    );

    // Delete: the finalizer removes the bot's Redis keys, then the bot goes.
    let redis_client = redis::Client::open(redis_url.as_str()).unwrap();
    let mut conn = redis_client
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("voicebot:bots:jarvis:guild:1:agent")
        .arg("jarvis")
        .query_async(&mut conn)
        .await
        .unwrap();
    // A pod of the new layout runs: the finalizer stops it before it touches Redis.
    add_pod(&pods, 0).await;
    bots.delete("jarvis", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the scale-down before the cleanup", || async {
        let s = sets.get("jarvis-shard").await.ok()?;
        (s.spec.replicas == Some(0)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let kept: Vec<String> = redis::cmd("KEYS")
        .arg("voicebot:bots:jarvis:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(kept.len(), 1, "keys removed while a pod still ran");
    pods.delete(
        "jarvis-shard-0",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
    )
    .await
    .unwrap();
    eventually("the bot to be gone", || async {
        bots.get_opt("jarvis")
            .await
            .ok()
            .and_then(|b| b.is_none().then_some(()))
    })
    .await;
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("voicebot:bots:jarvis:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
    // What happened is in the bot's Events (events.k8s.io/v1, as `kubectl describe` shows).
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "bots");
    let reasons: Vec<String> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    for reason in ["Ready", "Resharded", "Cleaned"] {
        assert!(reasons.iter().any(|r| r == reason), "{reason}: {reasons:?}");
    }
    operator.abort();
}

/// Leader election on a real API server: one replica leads; a second waits while the lease
/// is renewed, and takes it at once when the leader releases it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_operator_replica_leads_at_a_time() {
    use voicebot_operator::leader::Election;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = Cluster::start();
    let client = cluster.client().await;
    let a = Election::new("default", "voicebot-operator", "a", Duration::from_secs(3));
    let b = Election::new("default", "voicebot-operator", "b", Duration::from_secs(3));
    let mut leader = a
        .try_acquire(&client)
        .await
        .unwrap()
        .expect("a free lease is taken");
    assert!(
        b.try_acquire(&client).await.unwrap().is_none(),
        "a holds it"
    );
    // a keeps renewing: b still cannot take it after a whole lease duration.
    let keep = tokio::spawn(async move {
        tokio::select! {
            () = leader.keep() => None,
            () = tokio::time::sleep(Duration::from_secs(5)) => Some(leader),
        }
    });
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        b.try_acquire(&client).await.unwrap().is_none(),
        "a renews, so the lease stays a's"
    );
    let leader = keep.await.unwrap().expect("a kept the lease");
    let released = Instant::now();
    leader.release().await;
    let b_leads = b.acquire(&client).await;
    eprintln!(
        "lease released → the next replica leads in {:?}",
        released.elapsed()
    );
    assert_eq!(b_leads.identity(), "b");
    assert!(released.elapsed() < Duration::from_secs(3));
    // A leader that stops renewing (killed) loses the lease once it expires.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        a.try_acquire(&client).await.unwrap().is_some(),
        "an expired lease is taken"
    );
}
