//! Hostile VoiceBot specs, as a property test: the example resource with random parts replaced
//! by random JSON (wrong types, huge numbers, empty and odd strings, missing fields). What serde
//! accepts, the operator renders — ConfigMap, Service, StatefulSet, PodDisruptionBudget,
//! ServiceMonitor — without panicking; any sharding numbers give a sane layout.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use proptest::prelude::*;
use serde_json::{Value, json};
use voicebot_crds::{Sharding, VoiceBot};
use voicebot_operator::render;

fn example() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/voicebot.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let mut v: Value = serde_yaml::from_str(&text).unwrap();
    v["metadata"]["namespace"] = json!("default");
    v["metadata"]["uid"] = json!("0000-1111");
    v
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u32>().prop_map(|n| json!(n)),
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(u64::MAX)),
        ".{0,16}".prop_map(Value::String),
        Just(json!("")),
        Just(json!("1e9Gi")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every path to a value in the spec.
fn paths(v: &Value, at: Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let mut p = at.clone();
                p.push(k.clone());
                paths(v, p, out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                let mut p = at.clone();
                p.push(i.to_string());
                paths(v, p, out);
            }
        }
        _ => {}
    }
}

fn set(v: &mut Value, path: &[String], new: Value) {
    let mut cur = v;
    for k in path {
        cur = match cur {
            Value::Object(m) => m.entry(k.clone()).or_insert(Value::Null),
            Value::Array(a) => match k.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(x) => x,
                None => return,
            },
            _ => return,
        };
    }
    *cur = new;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn what_parses_renders(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any_json()), 1..4),
        remove in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let mut v = example();
        let mut all = Vec::new();
        paths(&v["spec"], vec!["spec".into()], &mut all);
        for (i, new) in edits {
            let path = i.get(&all).clone();
            set(&mut v, &path, new);
        }
        if let Some(i) = remove {
            let path = i.get(&all).clone();
            if let Some((last, parent)) = path.split_last()
                && let Some(Value::Object(m)) = parent
                    .iter()
                    .try_fold(&mut v, |cur, k| match cur {
                        Value::Object(m) => m.get_mut(k),
                        Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
                        _ => None,
                    })
            {
                m.remove(last);
            }
        }
        if let Ok(vb) = serde_json::from_value::<VoiceBot>(v) {
            let count = vb.spec.shards.count.unwrap_or(1);
            let sharding = Sharding::new(count, vb.spec.shards.per_pod);
            // What the pod parses is what the user wrote: the ConfigMap reads back as the spec.
            let cm = render::config_map(&vb);
            let text = cm.data.as_ref().and_then(|d| d.get("voicebot.json")).cloned().unwrap_or_default();
            let back: voicebot_config::BotConfig = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(&back, &vb.spec.config);
            let _ = serde_json::to_value(render::service(&vb)).unwrap();
            let sts = render::stateful_set(&vb, sharding, sharding.pods);
            prop_assert_eq!(sts.spec.replicas, Some(sharding.pods as i32));
            let pod = sts.spec.template.spec.as_ref().unwrap();
            let env = pod.containers[0].env.clone().unwrap_or_default();
            let var = |name: &str| env.iter().find(|e| e.name == name).cloned();
            prop_assert_eq!(
                var("SHARD_COUNT").and_then(|e| e.value),
                Some(sharding.shard_count.to_string())
            );
            // Secrets travel by reference only.
            for name in ["DISCORD_TOKEN", "OPENCLAW_GATEWAY_TOKEN", "REDIS_URL", "TTS_API_KEY", "VOICEBOT_STATE_KEY", "REDIS_CA"] {
                if let Some(e) = var(name) {
                    prop_assert!(e.value.is_none() && e.value_from.is_some(), "{name}: {e:?}");
                }
            }
            let _ = serde_json::to_value(sts).unwrap();
            let _ = render::pod_disruption_budget(&vb, "policy/v1");
            let _ = render::service_monitor(&vb);
        }
    }

    #[test]
    fn any_sharding_numbers_give_a_sane_layout(count in any::<u32>(), per_pod in any::<u32>(), ordinal in any::<u32>()) {
        let s = Sharding::new(count, per_pod);
        prop_assert!(s.shard_count >= 1 && s.per_pod >= 1 && s.per_pod <= s.shard_count);
        prop_assert!(u64::from(s.pods) * u64::from(s.per_pod) >= u64::from(s.shard_count));
        let shards = s.shards_of(ordinal);
        prop_assert!(shards.end <= s.shard_count && shards.start <= shards.end);
    }
}
