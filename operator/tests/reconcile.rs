//! The reconciler against an in-memory API server behind `tower-test`'s mock service: every
//! request the operator makes is answered from (and recorded in) a map of objects, so a test
//! can check what was written, and that an unchanged object causes no write at all. (The real
//! API server is in `apiserver.rs`.) Redis cleanup runs against a real `redis-server`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};
use voicebot_crds::VoiceBot;
use voicebot_operator::metrics::Metrics;
use voicebot_operator::reconcile::{
    CLEANUP_TIMEOUT, Capabilities, Context, FINALIZER, SKIP_CLEANUP, reconcile,
};

use common::Redis;

/// The fake API server's state.
#[derive(Default)]
struct Store {
    /// Objects by their path (`/apis/group/version/namespaces/ns/plural/name`).
    objects: BTreeMap<String, Value>,
    /// Write requests: (method, path).
    writes: Vec<(String, String)>,
    /// Paths that answer with this status code.
    fail: BTreeMap<String, u16>,
    version: u64,
}

type Shared = Arc<Mutex<Store>>;

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": reason, "reason": reason, "code": code})
}

fn labels_match(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        obj["metadata"]["labels"][k].as_str() == Some(v)
    })
}

fn answer(store: &Shared, req: Request<Vec<u8>>) -> (u16, Value) {
    let mut st = store.lock().unwrap();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    if let Some(code) = st.fail.get(&path) {
        return (*code, status(*code, "InternalError"));
    }
    let body: Value = serde_json::from_slice(req.body()).unwrap_or(Value::Null);
    match *req.method() {
        Method::GET => {
            if let Some(obj) = st.objects.get(&path) {
                return (200, obj.clone());
            }
            // A list: every object under the collection path, filtered by labels.
            let selector = query
                .split('&')
                .find_map(|p| p.strip_prefix("labelSelector="))
                .map(|s| {
                    s.replace("%3D", "=")
                        .replace("%2C", ",")
                        .replace("%2F", "/")
                })
                .unwrap_or_default();
            let prefix = format!("{path}/");
            let items: Vec<Value> = st
                .objects
                .iter()
                .filter(|(p, _)| p.starts_with(&prefix) && !p[prefix.len()..].contains('/'))
                .map(|(_, o)| o.clone())
                .filter(|o| labels_match(o, &selector))
                .collect();
            // A named object that is not there (collections end in their plural: `.../pods`).
            let collection = path
                .rsplit('/')
                .next()
                .is_some_and(|last| last.ends_with('s'))
                && !path.contains("jarvis");
            if !collection {
                return (404, status(404, "NotFound"));
            }
            (
                200,
                json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
            )
        }
        Method::PATCH => {
            st.version += 1;
            let version = st.version.to_string();
            st.writes.push(("PATCH".into(), path.clone()));
            let content_type = req
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            if let Some(object_path) = path.strip_suffix("/status") {
                let Some(obj) = st.objects.get_mut(object_path) else {
                    return (404, status(404, "NotFound"));
                };
                json_patch::merge(obj, &body);
                obj["metadata"]["resourceVersion"] = json!(version);
                return (200, obj.clone());
            }
            if content_type.contains("json-patch") {
                let Some(obj) = st.objects.get_mut(&path) else {
                    return (404, status(404, "NotFound"));
                };
                // The API server's JSON patch reads a missing field as null.
                if obj["metadata"].get("finalizers").is_none() {
                    obj["metadata"]["finalizers"] = Value::Null;
                }
                let patch: json_patch::Patch = serde_json::from_value(body).unwrap();
                if json_patch::patch(obj, &patch).is_err() {
                    return (422, status(422, "Invalid"));
                }
                obj["metadata"]["resourceVersion"] = json!(version);
                return (200, obj.clone());
            }
            // Server-side apply: we are the only manager, so the applied object is the object.
            let mut obj = body;
            obj["metadata"]["resourceVersion"] = json!(version);
            st.objects.insert(path, obj.clone());
            (200, obj)
        }
        Method::POST => {
            // A create (Events): stored under its name.
            st.version += 1;
            st.writes.push(("POST".into(), path.clone()));
            let Some(name) = body["metadata"]["name"].as_str().map(str::to_string) else {
                return (422, status(422, "Invalid"));
            };
            let mut obj = body;
            obj["metadata"]["resourceVersion"] = json!(st.version.to_string());
            st.objects.insert(format!("{path}/{name}"), obj.clone());
            (201, obj)
        }
        _ => (405, status(405, "MethodNotAllowed")),
    }
}

fn client(store: Shared) -> Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap().to_vec();
            let (code, value) = answer(&store, Request::from_parts(parts, bytes));
            let response = Response::builder()
                .status(StatusCode::from_u16(code).unwrap())
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&value).unwrap()))
                .unwrap();
            send.send_response(response);
        }
    });
    Client::new(service, "default")
}

const BOT: &str = "/apis/voicebot.dev/v1alpha1/namespaces/bots/voicebots/jarvis";
const STS: &str = "/apis/apps/v1/namespaces/bots/statefulsets/jarvis-shard";
const PODS: &str = "/api/v1/namespaces/bots/pods";

fn bot(count: u32) -> Value {
    json!({
        "apiVersion": "voicebot.dev/v1alpha1",
        "kind": "VoiceBot",
        "metadata": {"name": "jarvis", "namespace": "bots", "uid": "u-1", "generation": 1,
                     "resourceVersion": "1"},
        "spec": {
            "discord": {"applicationId": "123456789012345678",
                        "tokenSecret": {"name": "discord", "key": "token"}},
            "shards": {"count": count, "perPod": 2},
            "image": "voicebot:dev",
            "resources": {"gpu": 1},
            "agents": [{"name": "jarvis"}],
            "redis": {"url": "redis://127.0.0.1:1"},
            "gateway": {"url": "ws://openclaw:18789",
                        "tokenSecret": {"name": "openclaw", "key": "token"}}
        }
    })
}

struct Harness {
    store: Shared,
    ctx: Arc<Context>,
}

impl Harness {
    fn new(bot: Value) -> Self {
        let store: Shared = Arc::default();
        store.lock().unwrap().objects.insert(BOT.into(), bot);
        let client = client(store.clone());
        let ctx = Arc::new(Context {
            events: Some(Recorder::new(
                client.clone(),
                Reporter {
                    controller: "voicebot-operator".into(),
                    instance: Some("test".into()),
                },
            )),
            client,
            metrics: Metrics::new(),
            capabilities: Capabilities {
                pdb_api_version: Some("policy/v1".into()),
                service_monitors: false,
            },
            discord_api: "http://127.0.0.1:1".into(),
            http: reqwest::Client::new(),
        });
        Self { store, ctx }
    }

    fn get(&self, path: &str) -> Option<Value> {
        self.store.lock().unwrap().objects.get(path).cloned()
    }

    fn writes(&self) -> Vec<(String, String)> {
        std::mem::take(&mut self.store.lock().unwrap().writes)
    }

    /// Reconciles the VoiceBot as the store holds it now.
    async fn reconcile(&self) -> Result<(), String> {
        let vb: VoiceBot = serde_json::from_value(self.get(BOT).unwrap()).unwrap();
        reconcile(Arc::new(vb), self.ctx.clone())
            .await
            .map(|_| ())
            .map_err(|e| e.label().to_string())
    }

    fn edit_bot(&self, f: impl FnOnce(&mut Value)) {
        let mut st = self.store.lock().unwrap();
        let bot = st.objects.get_mut(BOT).unwrap();
        f(bot);
    }

    fn add_pod(&self, ordinal: u32, ready: bool) {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("jarvis-shard-{ordinal}"), "namespace": "bots",
                "labels": {"app.kubernetes.io/name": "voicebot",
                           "app.kubernetes.io/instance": "jarvis",
                           "app.kubernetes.io/component": "shard"}},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        });
        self.store
            .lock()
            .unwrap()
            .objects
            .insert(format!("{PODS}/jarvis-shard-{ordinal}"), pod);
    }

    fn remove_pods(&self) {
        self.store
            .lock()
            .unwrap()
            .objects
            .retain(|p, _| !p.starts_with(PODS));
    }

    fn status(&self) -> Value {
        self.get(BOT).unwrap()["status"].clone()
    }

    /// The Events published so far: (type, reason, note).
    fn events(&self) -> Vec<(String, String, String)> {
        let st = self.store.lock().unwrap();
        st.objects
            .iter()
            .filter(|(p, _)| p.starts_with("/apis/events.k8s.io/v1/namespaces/bots/events/"))
            .map(|(_, e)| {
                (
                    e["type"].as_str().unwrap_or_default().to_string(),
                    e["reason"].as_str().unwrap_or_default().to_string(),
                    e["note"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    fn finalizers(&self) -> Value {
        self.get(BOT).unwrap()["metadata"]["finalizers"].clone()
    }

    /// Marks the bot deleted, `ago` ago.
    fn delete(&self, ago: std::time::Duration) {
        let at = std::time::SystemTime::now() - ago;
        let secs = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let ts = k8s_openapi::jiff::Timestamp::from_second(secs).unwrap();
        self.edit_bot(|b| b["metadata"]["deletionTimestamp"] = json!(ts.to_string()));
    }
}

fn env_of(sts: &Value, name: &str) -> String {
    sts["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn condition(status: &Value, type_: &str) -> (String, String) {
    let c = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap();
    (
        c["status"].as_str().unwrap().to_string(),
        c["reason"].as_str().unwrap().to_string(),
    )
}

/// First reconcile adds the finalizer; the second creates the objects.
async fn created(count: u32) -> Harness {
    let h = Harness::new(bot(count));
    h.reconcile().await.unwrap();
    assert_eq!(h.get(BOT).unwrap()["metadata"]["finalizers"][0], FINALIZER);
    h.reconcile().await.unwrap();
    h
}

#[tokio::test]
async fn a_voicebot_becomes_its_objects_and_an_unchanged_one_writes_nothing() {
    let h = created(5).await;
    let sts = h.get(STS).expect("StatefulSet");
    assert_eq!(sts["spec"]["replicas"], 3);
    assert_eq!(env_of(&sts, "SHARD_COUNT"), "5");
    assert_eq!(
        sts["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"],
        "1"
    );
    assert_eq!(sts["metadata"]["ownerReferences"][0]["name"], "jarvis");
    assert!(
        h.get("/api/v1/namespaces/bots/services/jarvis-shard")
            .is_some()
    );
    assert!(
        h.get("/api/v1/namespaces/bots/configmaps/jarvis-config")
            .is_some()
    );
    assert!(
        h.get("/apis/policy/v1/namespaces/bots/poddisruptionbudgets/jarvis-shard")
            .is_some()
    );
    let status = h.status();
    assert_eq!(
        status["sharding"],
        json!({"shardCount": 5, "perPod": 2, "pods": 3})
    );
    assert_eq!(status["phase"], "Progressing");
    assert_eq!(condition(&status, "Ready").0, "False");
    assert_eq!(status["observedGeneration"], 1);

    h.writes();
    h.reconcile().await.unwrap();
    assert_eq!(h.writes(), vec![], "a second reconcile must write nothing");
}

#[tokio::test]
async fn ready_pods_make_the_bot_ready() {
    let h = created(5).await;
    for o in 0..3 {
        h.add_pod(o, o != 2);
    }
    h.reconcile().await.unwrap();
    assert_eq!(h.status()["shardsReady"], 4);
    assert_eq!(h.status()["phase"], "Progressing");
    h.add_pod(2, true);
    h.reconcile().await.unwrap();
    let status = h.status();
    assert_eq!(status["shardsReady"], 5);
    assert_eq!(status["phase"], "Ready");
    assert_eq!(
        condition(&status, "Ready"),
        ("True".into(), "AllShardsReady".into())
    );
    assert_eq!(condition(&status, "Progressing").0, "False");
}

#[tokio::test]
async fn a_reshard_stops_every_old_pod_before_the_new_layout_starts() {
    let h = created(5).await;
    for o in 0..3 {
        h.add_pod(o, true);
    }
    h.reconcile().await.unwrap();
    h.edit_bot(|b| {
        b["spec"]["shards"]["count"] = json!(8);
        b["metadata"]["generation"] = json!(2);
    });
    h.reconcile().await.unwrap();
    // Old pods still there: the set is scaled to zero with the OLD layout.
    let sts = h.get(STS).unwrap();
    assert_eq!(sts["spec"]["replicas"], 0);
    assert_eq!(env_of(&sts, "SHARD_COUNT"), "5");
    let status = h.status();
    assert_eq!(status["phase"], "Resharding");
    assert_eq!(status["pendingSharding"]["shardCount"], 8);
    assert_eq!(status["sharding"]["shardCount"], 5);
    assert_eq!(condition(&status, "Progressing").1, "Resharding");
    // Still waiting while any pod is left.
    h.remove_pods();
    h.add_pod(1, false);
    h.reconcile().await.unwrap();
    assert_eq!(h.get(STS).unwrap()["spec"]["replicas"], 0);
    // All gone: the new layout starts.
    h.remove_pods();
    h.reconcile().await.unwrap();
    let sts = h.get(STS).unwrap();
    assert_eq!(sts["spec"]["replicas"], 4);
    assert_eq!(env_of(&sts, "SHARD_COUNT"), "8");
    let status = h.status();
    assert_eq!(
        status["sharding"],
        json!({"shardCount": 8, "perPod": 2, "pods": 4})
    );
    assert!(status.get("pendingSharding").is_none() || status["pendingSharding"].is_null());
    assert_eq!(status["observedGeneration"], 2);
    // `kubectl describe voicebot` tells the story.
    let reasons: Vec<String> = h.events().into_iter().map(|e| e.1).collect();
    for reason in ["Progressing", "Resharding", "Resharded"] {
        assert!(reasons.iter().any(|r| r == reason), "{reason}: {reasons:?}");
    }
}

#[tokio::test]
async fn api_errors_are_reported_in_the_status_with_a_bounded_reason() {
    let h = Harness::new(bot(2));
    h.reconcile().await.unwrap();
    h.store.lock().unwrap().fail.insert(STS.into(), 500);
    let err = h.reconcile().await.unwrap_err();
    assert_eq!(err, "ApiError");
    let status = h.status();
    assert_eq!(status["phase"], "Degraded");
    assert_eq!(
        condition(&status, "Degraded"),
        ("True".into(), "ApiError".into())
    );
    assert!(
        h.ctx
            .metrics
            .render()
            .contains("voicebot_operator_reconcile_errors_total{reason=\"ApiError\"} 1")
    );
    // Fixed: the next reconcile clears it.
    h.store.lock().unwrap().fail.clear();
    h.reconcile().await.unwrap();
    assert_eq!(condition(&h.status(), "Degraded").0, "False");
}

#[tokio::test]
async fn without_a_count_the_token_secret_is_needed_and_its_absence_is_clear() {
    let mut b = bot(1);
    b["spec"]["shards"] = json!({"perPod": 1});
    let h = Harness::new(b);
    h.reconcile().await.unwrap();
    let err = h.reconcile().await.unwrap_err();
    assert_eq!(err, "SecretMissing");
    let (s, reason) = condition(&h.status(), "Degraded");
    assert_eq!((s.as_str(), reason.as_str()), ("True", "SecretMissing"));
    assert!(h.get(STS).is_none(), "nothing runs without a shard count");
}

#[tokio::test]
async fn deleting_a_bot_removes_its_redis_keys_and_only_its_own() {
    let redis = Redis::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for i in 0..1200 {
        let _: () = redis::cmd("SET")
            .arg(format!("voicebot:bots:jarvis:guild:{i}"))
            .arg("x")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("SET")
        .arg("voicebot:bots:sage:guild:1")
        .arg("keep")
        .query_async(&mut conn)
        .await
        .unwrap();

    // The test Redis has a password: its URL is in a Secret, as the README sets it up.
    let mut b = bot(1);
    b["spec"]["redis"] = json!({"urlSecret": {"name": "redis-url", "key": "url"}});
    let h = Harness::new(b);
    h.store.lock().unwrap().objects.insert(
        "/api/v1/namespaces/bots/secrets/redis-url".into(),
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "redis-url", "namespace": "bots"},
               "stringData": {"url": redis.url()}}),
    );
    h.reconcile().await.unwrap();
    h.reconcile().await.unwrap();
    // A pod still runs: the keys stay until it stops (it could write them back), and the
    // StatefulSet is scaled to 0 so that it does.
    h.add_pod(0, true);
    h.delete(std::time::Duration::from_secs(1));
    assert_eq!(h.reconcile().await.unwrap_err(), "CleanupWaiting");
    let sts = h.get(STS).unwrap();
    assert_eq!(sts["spec"]["replicas"], 0, "{sts}");
    let n: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert_eq!(n, 1201, "keys removed while a pod still ran");
    assert_eq!(h.finalizers()[0], FINALIZER);
    h.remove_pods();
    h.reconcile().await.unwrap();

    let left: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, vec!["voicebot:bots:sage:guild:1".to_string()]);
    let finalizers = h.finalizers();
    assert!(
        finalizers.as_array().is_none_or(|f| f.is_empty()),
        "{finalizers}"
    );
    let events = h.events();
    assert!(
        events
            .iter()
            .any(|(t, r, n)| t == "Normal" && r == "Cleaned" && n.contains("1200 Redis keys")),
        "{events:?}"
    );
}

#[tokio::test]
async fn an_unreachable_redis_keeps_the_finalizer_and_says_why() {
    let h = Harness::new(bot(1));
    h.reconcile().await.unwrap();
    h.delete(std::time::Duration::from_secs(1));
    let err = h.reconcile().await.unwrap_err();
    assert_eq!(err, "RedisUnavailable");
    assert_eq!(h.finalizers()[0], FINALIZER);
    let events = h.events();
    assert!(
        events
            .iter()
            .any(|(t, r, _)| t == "Warning" && r == "RedisUnavailable"),
        "{events:?}"
    );
}

/// A deletion cannot hang forever on a Redis that is gone: after the timeout the bot is
/// deleted, and a Warning Event says the keys may be left.
#[tokio::test]
async fn a_deletion_gives_up_on_redis_after_the_timeout_and_says_so() {
    let h = Harness::new(bot(1));
    h.reconcile().await.unwrap();
    h.delete(CLEANUP_TIMEOUT + std::time::Duration::from_secs(1));
    h.reconcile().await.unwrap();
    let finalizers = h.finalizers();
    assert!(
        finalizers.as_array().is_none_or(|f| f.is_empty()),
        "{finalizers}"
    );
    let events = h.events();
    assert!(
        events.iter().any(|(t, r, n)| t == "Warning"
            && r == "CleanupTimedOut"
            && n.contains("voicebot:bots:jarvis:")),
        "{events:?}"
    );
}

/// The escape hatch: an annotation deletes the bot at once, without Redis.
#[tokio::test]
async fn the_skip_cleanup_annotation_deletes_at_once() {
    let h = Harness::new(bot(1));
    h.reconcile().await.unwrap();
    h.edit_bot(|b| b["metadata"]["annotations"] = json!({ SKIP_CLEANUP: "true" }));
    h.delete(std::time::Duration::from_secs(1));
    h.reconcile().await.unwrap();
    let finalizers = h.finalizers();
    assert!(
        finalizers.as_array().is_none_or(|f| f.is_empty()),
        "{finalizers}"
    );
    assert!(
        h.events()
            .iter()
            .any(|(t, r, _)| t == "Warning" && r == "CleanupSkipped"),
        "{:?}",
        h.events()
    );
}
