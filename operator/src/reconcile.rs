//! The reconciler: a `VoiceBot` in, its objects applied (server-side, skipped when unchanged),
//! its status written back (only when it changed), its Redis keys removed on delete.
//!
//! ## Resharding
//! A Discord session belongs to one `[shard id, shard count]`: when the count changes every
//! shard must identify again, so there is no way to keep old sessions across a reshard. The
//! operator therefore reshards stop-the-world, in three steps that never let two pods own the
//! same shard:
//! 1. the new layout is recorded as `status.pendingSharding` (phase `Resharding`);
//! 2. the StatefulSet is scaled to 0 *with the old layout* (pods never see a mixed layout);
//! 3. once no pod of the bot is left (terminated, not just terminating), the StatefulSet gets
//!    the new layout and replica count, and `status.sharding` becomes the new layout.
//!
//! Other changes (image, config, resources) roll out pod by pod: a StatefulSet never runs two
//! pods with the same ordinal, and a pod's shards are a function of its ordinal and the layout,
//! so a rolling update never overlaps shards either. (The shards also hold a per-shard lease in
//! Redis, a second line of defence for pods that hang in `Terminating` on a lost node.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use voicebot_crds::{Condition, SecretKeyRef, Sharding, VoiceBot, VoiceBotStatus};

use crate::metrics::Metrics;
use crate::render::{self, APPLIED_HASH, MANAGER, Names};

/// Finalizer that removes the bot's Redis keys.
pub const FINALIZER: &str = "voicebot.dev/cleanup";

/// Annotation that lets a bot be deleted without its Redis cleanup (`"true"`): the escape
/// hatch for a Redis that is gone for good. Its keys are left (and named in an Event).
pub const SKIP_CLEANUP: &str = "voicebot.dev/skip-cleanup";

/// How long a deletion waits for the pods to stop and Redis to answer; after it the bot is
/// deleted anyway, and a Warning Event says what was left.
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(300);

/// Everything a reconcile can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A Secret or one of its keys is missing.
    #[error("secret {name}/{key} is missing or empty")]
    Secret {
        /// Secret name.
        name: String,
        /// Key.
        key: String,
    },
    /// Discord did not tell us the recommended shard count.
    #[error("Discord /gateway/bot: {0}")]
    Discord(String),
    /// Redis could not be cleaned.
    #[error("redis cleanup: {0}")]
    Redis(String),
    /// The finalizer itself failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// A deletion waits for the bot's pods to stop before its Redis keys go (not a failure).
    #[error("deleting: waiting for {0} pod(s) to stop before removing the Redis keys")]
    CleanupWaiting(usize),
    /// Fields of the spec that the pods could not honour (nothing is applied until fixed).
    #[error("the spec cannot be run as written: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidSpec(Vec<voicebot_crds::Invalid>),
}

impl Error {
    /// Every value of [`Error::label`].
    pub const LABELS: &'static [&'static str] = &[
        "Forbidden",
        "Conflict",
        "Invalid",
        "ApiError",
        "ApiUnreachable",
        "SecretMissing",
        "DiscordUnavailable",
        "RedisUnavailable",
        "FinalizerFailed",
        "CleanupWaiting",
        "InvalidSpec",
    ];

    /// A bounded label for metrics and the Degraded condition's reason.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(e)) if e.code == 403 => "Forbidden",
            Self::Kube(kube::Error::Api(e)) if e.code == 409 => "Conflict",
            Self::Kube(kube::Error::Api(e)) if e.code == 422 => "Invalid",
            Self::Kube(kube::Error::Api(_)) => "ApiError",
            Self::Kube(_) => "ApiUnreachable",
            Self::Secret { .. } => "SecretMissing",
            Self::Discord(_) => "DiscordUnavailable",
            Self::Redis(_) => "RedisUnavailable",
            Self::Finalizer(_) => "FinalizerFailed",
            Self::CleanupWaiting(_) => "CleanupWaiting",
            Self::InvalidSpec(_) => "InvalidSpec",
        }
    }
}

/// What the API server offers, found once at start.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    /// `policy/v1` (1.21+), `policy/v1beta1` (older), or none.
    pub pdb_api_version: Option<String>,
    /// Whether the Prometheus Operator's ServiceMonitor CRD is installed.
    pub service_monitors: bool,
}

impl Capabilities {
    /// Asks the API server.
    pub async fn discover(client: &Client) -> Self {
        let served = |gv: &'static str, plural: &'static str| {
            let client = client.clone();
            async move {
                client
                    .list_api_group_resources(gv)
                    .await
                    .is_ok_and(|l| l.resources.iter().any(|r| r.name == plural))
            }
        };
        let pdb_api_version = if served("policy/v1", "poddisruptionbudgets").await {
            Some("policy/v1".into())
        } else if served("policy/v1beta1", "poddisruptionbudgets").await {
            Some("policy/v1beta1".into())
        } else {
            None
        };
        let service_monitors = served("monitoring.coreos.com/v1", "servicemonitors").await;
        tracing::info!(
            ?pdb_api_version,
            service_monitors,
            "API server capabilities"
        );
        Self {
            pdb_api_version,
            service_monitors,
        }
    }
}

/// Shared by all reconciles.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// The operator's metrics.
    pub metrics: Metrics,
    /// What the API server offers.
    pub capabilities: Capabilities,
    /// Discord's REST base (`https://discord.com/api/v10`; the simulator's in tests).
    pub discord_api: String,
    /// For Discord.
    pub http: reqwest::Client,
    /// Where reconcile outcomes go as Kubernetes Events on the VoiceBot (phase changes,
    /// failures, reshards, cleanup); `None`: not published.
    pub events: Option<Recorder>,
}

impl Context {
    /// Publishes an Event on `vb` (best effort: a refused Event is logged, never fatal).
    async fn event(&self, vb: &VoiceBot, warning: bool, reason: &str, action: &str, note: &str) {
        let Some(recorder) = &self.events else { return };
        let mut note = note.to_string();
        if note.len() > 1000 {
            let mut end = 1000;
            while !note.is_char_boundary(end) {
                end -= 1;
            }
            note.truncate(end);
        }
        let event = KubeEvent {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &vb.object_ref(&())).await {
            tracing::debug!(error = %e, reason, "publishing an event failed");
        }
    }
}

/// Reconciles one VoiceBot (the controller's callback).
pub async fn reconcile(vb: Arc<VoiceBot>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = vb.namespace().unwrap_or_else(|| "default".into());
    let api: Api<VoiceBot> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, vb, |event| async {
        match event {
            Event::Apply(vb) => apply(&vb, &ctx).await,
            Event::Cleanup(vb) => {
                let result = cleanup(&vb, &ctx).await;
                if let Err(e) = &result
                    && !matches!(e, Error::CleanupWaiting(_))
                {
                    let note = format!(
                        "deleting: {e}; retrying (after {} s the bot is deleted anyway)",
                        CLEANUP_TIMEOUT.as_secs()
                    );
                    ctx.event(&vb, true, e.label(), "Delete", &note).await;
                }
                result
            }
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    });
    ctx.metrics
        .observe(started.elapsed(), result.as_ref().err());
    result
}

/// Retry with a delay when a reconcile failed (soon, when a deletion waits for its pods).
pub fn error_policy(_vb: Arc<VoiceBot>, error: &Error, _ctx: Arc<Context>) -> Action {
    if let Error::CleanupWaiting(_) = error {
        tracing::info!("{error}");
        return Action::requeue(Duration::from_secs(2));
    }
    tracing::warn!(reason = error.label(), "reconcile failed: {error}");
    Action::requeue(Duration::from_secs(15))
}

async fn apply(vb: &VoiceBot, ctx: &Context) -> Result<Action, Error> {
    match apply_inner(vb, ctx).await {
        Ok(action) => Ok(action),
        Err(e) => {
            // Say so in the status (best effort), then let the controller retry.
            let mut status = vb.status.clone().unwrap_or_default();
            set_condition(
                &mut status,
                "Degraded",
                true,
                e.label(),
                &e.to_string(),
                vb.meta().generation,
            );
            status.phase = Some("Degraded".into());
            let _ = write_status(vb, ctx, status).await;
            ctx.event(vb, true, e.label(), "Reconcile", &e.to_string())
                .await;
            Err(e)
        }
    }
}

async fn apply_inner(vb: &VoiceBot, ctx: &Context) -> Result<Action, Error> {
    // A field the pods cannot honour is refused here, by name, before anything changes.
    vb.spec.validate().map_err(Error::InvalidSpec)?;
    let names = Names::of(vb);
    let mut status = vb.status.clone().unwrap_or_default();
    let desired = desired_sharding(vb, ctx, status.sharding).await?;
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let pods = || async {
        pods_api
            .list(&ListParams::default().labels(&names.selector_string()))
            .await
    };

    apply_object::<ConfigMap>(ctx, &names, &render::config_map(vb)).await?;
    apply_object::<Service>(ctx, &names, &render::service(vb)).await?;
    if let Some(version) = &ctx.capabilities.pdb_api_version {
        let pdb = render::pod_disruption_budget(vb, version);
        apply_dynamic(ctx, &names, pdb, "policy", version, "PodDisruptionBudget").await?;
    }
    if ctx.capabilities.service_monitors && vb.spec.metrics.service_monitor {
        let sm = render::service_monitor(vb);
        let v = "monitoring.coreos.com/v1";
        apply_dynamic(
            ctx,
            &names,
            sm,
            "monitoring.coreos.com",
            v,
            "ServiceMonitor",
        )
        .await?;
    }

    let mut resharding = false;
    match status.sharding {
        Some(running) if running != desired => {
            // Step 1: record the plan. Step 2: stop every pod with the old layout.
            if status.pending_sharding != Some(desired) {
                status.pending_sharding = Some(desired);
                status.phase = Some("Resharding".into());
                write_status(vb, ctx, status.clone()).await?;
            }
            apply_object::<StatefulSet>(ctx, &names, &render::stateful_set(vb, running, 0)).await?;
            let left = pods().await?.items.len();
            if left == 0 {
                // Step 3: nobody owns a shard any more; start the new layout.
                apply_object::<StatefulSet>(
                    ctx,
                    &names,
                    &render::stateful_set(vb, desired, desired.pods),
                )
                .await?;
                tracing::info!(
                    bot = names.bot,
                    from = running.shard_count,
                    to = desired.shard_count,
                    "resharded"
                );
                let note = format!(
                    "{} → {} shards: every old pod stopped before the new layout started",
                    running.shard_count, desired.shard_count
                );
                ctx.event(vb, false, "Resharded", "Reshard", &note).await;
                status.sharding = Some(desired);
                status.pending_sharding = None;
            } else {
                tracing::info!(
                    bot = names.bot,
                    pods = left,
                    "resharding: waiting for the old pods to stop"
                );
                resharding = true;
            }
        }
        _ => {
            apply_object::<StatefulSet>(
                ctx,
                &names,
                &render::stateful_set(vb, desired, desired.pods),
            )
            .await?;
            status.sharding = Some(desired);
            status.pending_sharding = None;
        }
    }

    // Readiness from the pods (a pod's shards follow from its ordinal).
    let sharding = status.sharding.unwrap_or(desired);
    let ready_shards: u32 = if resharding {
        0
    } else {
        pods()
            .await?
            .items
            .iter()
            .filter(|p| pod_ready(p))
            .filter_map(|p| ordinal(&p.name_any()))
            .filter(|o| *o < sharding.pods)
            .map(|o| sharding.shards_of(o).len() as u32)
            .sum()
    };
    status.shards_ready = ready_shards;
    let all_ready = !resharding && ready_shards == sharding.shard_count;
    let generation = vb.meta().generation;
    status.observed_generation = generation;
    set_condition(
        &mut status,
        "Ready",
        all_ready,
        if all_ready {
            "AllShardsReady"
        } else {
            "ShardsNotReady"
        },
        &format!("{ready_shards}/{} shards ready", sharding.shard_count),
        generation,
    );
    set_condition(
        &mut status,
        "Progressing",
        !all_ready,
        if resharding {
            "Resharding"
        } else if all_ready {
            "RolloutComplete"
        } else {
            "PodsStarting"
        },
        "",
        generation,
    );
    set_condition(&mut status, "Degraded", false, "Reconciled", "", generation);
    status.phase = Some(
        if resharding {
            "Resharding"
        } else if all_ready {
            "Ready"
        } else {
            "Progressing"
        }
        .into(),
    );
    write_status(vb, ctx, status).await?;
    Ok(Action::requeue(if all_ready {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(5)
    }))
}

/// The layout to run: the spec's count, else the one in force (a bot is not resharded because
/// Discord's recommendation moved), else Discord's recommendation.
async fn desired_sharding(
    vb: &VoiceBot,
    ctx: &Context,
    running: Option<Sharding>,
) -> Result<Sharding, Error> {
    let per_pod = vb.spec.shards.per_pod;
    if let Some(count) = vb.spec.shards.count {
        return Ok(Sharding::new(count, per_pod));
    }
    if let Some(r) = running {
        return Ok(Sharding::new(r.shard_count, per_pod));
    }
    let ns = vb.namespace().unwrap_or_else(|| "default".into());
    let token = secret_value(ctx, &ns, &vb.spec.discord.token_secret).await?;
    let resp = ctx
        .http
        .get(format!(
            "{}/gateway/bot",
            ctx.discord_api.trim_end_matches('/')
        ))
        .header("Authorization", format!("Bot {token}"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| Error::Discord(e.without_url().to_string()))?;
    if !resp.status().is_success() {
        return Err(Error::Discord(format!("HTTP {}", resp.status())));
    }
    let body: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| Error::Discord(e.without_url().to_string()))?;
    let shards = body["shards"]
        .as_u64()
        .ok_or_else(|| Error::Discord("no shard count in the answer".into()))?;
    Ok(Sharding::new(shards.clamp(1, 4096) as u32, per_pod))
}

async fn secret_value(ctx: &Context, ns: &str, r: &SecretKeyRef) -> Result<String, Error> {
    let missing = || Error::Secret {
        name: r.name.clone(),
        key: r.key.clone(),
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret = api.get_opt(&r.name).await?.ok_or_else(missing)?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(&r.key))
                .map(|s| s.clone().into_bytes())
        })
        .ok_or_else(missing)?;
    let value = String::from_utf8(bytes).map_err(|_| missing())?;
    let value = value.trim().to_string();
    if value.is_empty() {
        return Err(missing());
    }
    Ok(value)
}

/// Applies a typed object (server-side, forced), unless what is there carries the same hash.
async fn apply_object<K>(ctx: &Context, names: &Names, obj: &K) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()> + serde::Serialize,
{
    let ar = ApiResource::erase::<K>(&());
    let value = serde_json::to_value(obj).map_err(|e| Error::Finalizer(e.to_string()))?;
    let mut value = value;
    if let Some(o) = value.as_object_mut() {
        o.insert("apiVersion".into(), json!(ar.api_version));
        o.insert("kind".into(), json!(ar.kind));
    }
    apply_value(ctx, names, value, &ar).await
}

async fn apply_dynamic(
    ctx: &Context,
    names: &Names,
    value: serde_json::Value,
    group: &str,
    api_version: &str,
    kind: &str,
) -> Result<bool, Error> {
    let version = api_version.rsplit('/').next().unwrap_or(api_version);
    let ar = ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: api_version.into(),
        kind: kind.into(),
        plural: format!("{}s", kind.to_lowercase()),
    };
    apply_value(ctx, names, value, &ar).await
}

async fn apply_value(
    ctx: &Context,
    names: &Names,
    value: serde_json::Value,
    ar: &ApiResource,
) -> Result<bool, Error> {
    let value = render::stamp(value);
    let name = value["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let want = value["metadata"]["annotations"][APPLIED_HASH]
        .as_str()
        .map(str::to_string);
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &names.namespace, ar);
    if let Some(current) = api.get_opt(&name).await?
        && current.annotations().get(APPLIED_HASH) == want.as_ref()
    {
        return Ok(false);
    }
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&value),
    )
    .await?;
    ctx.metrics.applied(&ar.kind);
    tracing::debug!(kind = ar.kind, name, "applied");
    Ok(true)
}

async fn write_status(vb: &VoiceBot, ctx: &Context, status: VoiceBotStatus) -> Result<(), Error> {
    if vb.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let names = Names::of(vb);
    let api: Api<VoiceBot> = Api::namespaced(ctx.client.clone(), &names.namespace);
    // A merge patch keeps fields it does not mention: clear the optional ones explicitly.
    let mut value = serde_json::to_value(&status).map_err(|e| Error::Finalizer(e.to_string()))?;
    if let Some(fields) = value.as_object_mut() {
        for key in ["observedGeneration", "phase", "sharding", "pendingSharding"] {
            fields.entry(key).or_insert(serde_json::Value::Null);
        }
    }
    api.patch_status(
        &names.bot,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": value })),
    )
    .await?;
    ctx.metrics.applied("VoiceBotStatus");
    let before = vb.status.as_ref().and_then(|s| s.phase.as_deref());
    if let Some(phase) = status.phase.as_deref()
        && before != Some(phase)
        && phase != "Degraded"
    {
        // Degraded has its own Event, with the reason of the failure.
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.message.clone())
            .unwrap_or_default();
        ctx.event(
            vb,
            false,
            phase,
            "Reconcile",
            ready.as_deref().unwrap_or_default(),
        )
        .await;
    }
    Ok(())
}

fn set_condition(
    status: &mut VoiceBotStatus,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let value = if value { "True" } else { "False" };
    let previous = status.conditions.iter().find(|c| c.type_ == type_);
    let since = match previous {
        Some(c) if c.status == value => c.last_transition_time.clone(),
        _ => Some(now()),
    };
    let condition = Condition {
        type_: type_.into(),
        status: value.into(),
        reason: reason.into(),
        message: (!message.is_empty()).then(|| message.to_string()),
        last_transition_time: since,
        observed_generation: generation,
    };
    match status.conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => *c = condition,
        None => status.conditions.push(condition),
    }
}

fn now() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The ordinal of a StatefulSet pod from its name (`<set>-<ordinal>`).
pub fn ordinal(pod_name: &str) -> Option<u32> {
    pod_name.rsplit('-').next()?.parse().ok()
}

/// A deleted bot: its pods are stopped first (the StatefulSet scaled to 0), then every Redis
/// key of the bot (`voicebot:<namespace>:<name>:*`) is removed, so no pod writes a key back
/// after the cleanup. After [`CLEANUP_TIMEOUT`] (pods stuck, Redis gone) the bot is deleted
/// anyway and a Warning Event says what was left; [`SKIP_CLEANUP`] skips the Redis part.
async fn cleanup(vb: &VoiceBot, ctx: &Context) -> Result<Action, Error> {
    let names = Names::of(vb);
    let prefix = names.redis_prefix();
    if vb
        .annotations()
        .get(SKIP_CLEANUP)
        .is_some_and(|v| v == "true")
    {
        let note = format!("{SKIP_CLEANUP}: the Redis keys under {prefix} are left");
        tracing::warn!(bot = names.bot, "{note}");
        ctx.event(vb, true, "CleanupSkipped", "Delete", &note).await;
        return Ok(Action::await_change());
    }
    let waited = vb
        .meta()
        .deletion_timestamp
        .as_ref()
        .map_or(Duration::ZERO, |t| {
            let since = k8s_openapi::jiff::Timestamp::now() - t.0;
            Duration::try_from(since).unwrap_or(Duration::ZERO)
        });
    let timed_out = waited >= CLEANUP_TIMEOUT;

    // 1. The pods stop: the StatefulSet (still ours until the bot is gone) goes to 0.
    if let Some(sharding) = vb.status.as_ref().and_then(|s| s.sharding) {
        apply_object::<StatefulSet>(ctx, &names, &render::stateful_set(vb, sharding, 0)).await?;
    }
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let left = pods_api
        .list(&ListParams::default().labels(&names.selector_string()))
        .await?
        .items
        .len();
    if left > 0 && !timed_out {
        return Err(Error::CleanupWaiting(left));
    }

    // 2. The keys.
    let url = match (&vb.spec.config.redis.url_secret, &vb.spec.config.redis.url) {
        (Some(secret), _) => match secret_value(ctx, &names.namespace, secret).await {
            Ok(url) => Some(url),
            Err(e) if timed_out => return give_up(vb, ctx, &prefix, left, &e).await,
            Err(e) => return Err(e),
        },
        (None, Some(url)) => Some(url.clone()),
        (None, None) => None,
    };
    let ca = match &vb.spec.config.redis.ca_secret {
        Some(secret) => match secret_value(ctx, &names.namespace, secret).await {
            Ok(pem) => Some(pem.into_bytes()),
            Err(e) if timed_out => return give_up(vb, ctx, &prefix, left, &e).await,
            Err(e) => return Err(e),
        },
        None => None,
    };
    if let Some(url) = url {
        match delete_keys(&url, ca.as_deref(), &prefix).await {
            Ok(removed) => {
                tracing::info!(bot = names.bot, removed, "removed the bot's Redis keys");
                let note = format!("the pods stopped; {removed} Redis keys under {prefix} removed");
                ctx.event(vb, false, "Cleaned", "Delete", &note).await;
            }
            Err(e) if timed_out => return give_up(vb, ctx, &prefix, left, &e).await,
            Err(e) => return Err(e),
        }
    }
    if left > 0 {
        return give_up(vb, ctx, &prefix, left, &Error::CleanupWaiting(left)).await;
    }
    Ok(Action::await_change())
}

/// The deletion has waited [`CLEANUP_TIMEOUT`]: the bot goes, and an Event says what is left.
async fn give_up(
    vb: &VoiceBot,
    ctx: &Context,
    prefix: &str,
    pods_left: usize,
    why: &Error,
) -> Result<Action, Error> {
    let note = format!(
        "deleted after {} s without a full cleanup ({why}); {pods_left} pod(s) still running; Redis keys under {prefix} may be left",
        CLEANUP_TIMEOUT.as_secs()
    );
    tracing::warn!(bot = vb.name_any(), "{note}");
    ctx.event(vb, true, "CleanupTimedOut", "Delete", &note)
        .await;
    Ok(Action::await_change())
}

/// Deletes the keys under `prefix` (SCAN + DEL in batches); the count removed.
/// `ca`: the PEM CA of Redis's TLS certificate (`rediss://`), else the system's roots.
pub async fn delete_keys(url: &str, ca: Option<&[u8]>, prefix: &str) -> Result<u64, Error> {
    // Redis errors can quote the URL, password included: keep only the kind.
    let redis_err = |e: redis::RedisError| Error::Redis(format!("{:?}", e.kind()));
    let client = match ca {
        Some(ca) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.to_vec()),
            },
        ),
        None => redis::Client::open(url),
    }
    .map_err(redis_err)?;
    let mut conn = tokio::time::timeout(
        Duration::from_secs(10),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| Error::Redis("connect timed out".into()))?
    .map_err(redis_err)?;
    let pattern = format!("{}*", escape_glob(prefix));
    let mut cursor: u64 = 0;
    let mut removed = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(500)
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        if !keys.is_empty() {
            let n: u64 = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            removed += n;
        }
        if next == 0 {
            return Ok(removed);
        }
        cursor = next;
    }
}

fn escape_glob(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_come_from_pod_names() {
        assert_eq!(ordinal("jarvis-shard-0"), Some(0));
        assert_eq!(ordinal("jarvis-shard-12"), Some(12));
        assert_eq!(ordinal("jarvis-shard"), None);
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_unchanged() {
        let mut s = VoiceBotStatus::default();
        set_condition(&mut s, "Ready", false, "ShardsNotReady", "", Some(1));
        s.conditions[0].last_transition_time = Some("2020-01-01T00:00:00Z".into());
        set_condition(&mut s, "Ready", false, "ShardsNotReady", "0/2", Some(2));
        assert_eq!(
            s.conditions[0].last_transition_time.as_deref(),
            Some("2020-01-01T00:00:00Z")
        );
        set_condition(&mut s, "Ready", true, "AllShardsReady", "", Some(2));
        assert_ne!(
            s.conditions[0].last_transition_time.as_deref(),
            Some("2020-01-01T00:00:00Z")
        );
        assert_eq!(s.conditions.len(), 1);
    }

    #[test]
    fn glob_characters_in_names_are_escaped() {
        assert_eq!(escape_glob("voicebot:a*b:"), "voicebot:a\\*b:");
    }
}
