//! The VoiceBot operator: `VoiceBot` resources become shard StatefulSets (with their Service,
//! ConfigMap, PodDisruptionBudget and ServiceMonitor), status is written back, resharding never
//! runs two pods with the same shard, and a deleted bot's Redis keys are removed.
//!
//! `render` holds the pure resource → objects functions, `reconcile` the controller logic,
//! `leader` the Lease that lets one replica reconcile at a time, `metrics` and `http` the
//! operator's own metrics and health endpoints.

pub mod http;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod render;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use voicebot_crds::VoiceBot;

/// The controller: VoiceBots, the StatefulSets they own, and their shard pods (a pod that
/// goes or becomes ready triggers its bot at once: readiness, and the wait of a reshard).
pub fn controller(client: &Client, namespace: Option<&str>) -> Controller<VoiceBot> {
    let (bots, sets, pods) = match namespace {
        Some(ns) => (
            Api::<VoiceBot>::namespaced(client.clone(), ns),
            Api::<StatefulSet>::namespaced(client.clone(), ns),
            Api::<Pod>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    let shard_pods = watcher::Config::default()
        .labels("app.kubernetes.io/name=voicebot,app.kubernetes.io/component=shard");
    Controller::new(bots, watcher::Config::default())
        .owns(sets, watcher::Config::default())
        .watches(pods, shard_pods, |pod: Pod| {
            let bot = pod.labels().get("app.kubernetes.io/instance").cloned();
            let ns = pod.namespace();
            bot.map(|b| {
                let r = ObjectRef::<VoiceBot>::new(&b);
                match ns {
                    Some(ns) => r.within(&ns),
                    None => r,
                }
            })
        })
}
