//! Which gateway shards this pod runs.
//!
//! The operator sets `SHARD_COUNT` and `SHARDS_PER_POD`; the pod's index is the StatefulSet
//! ordinal at the end of its name (`POD_NAME`, else `HOSTNAME`: `jarvis-shard-2` → 2). Pod `i`
//! runs shards `[i × per_pod, min((i + 1) × per_pod, count))`.

use std::ops::Range;

/// The shards of this pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPlan {
    /// Total shards of the bot.
    pub count: u32,
    /// Shards per pod.
    pub per_pod: u32,
    /// This pod's index.
    pub ordinal: u32,
}

/// A plan that cannot be used, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A variable is missing or not a number.
    #[error("{name} must be a positive integer (got {value:?}); the operator sets it")]
    Invalid {
        /// Variable name.
        name: &'static str,
        /// What it held.
        value: Option<String>,
    },
    /// The pod name has no ordinal.
    #[error(
        "cannot find the pod ordinal in {0:?} (expected a StatefulSet pod name like jarvis-shard-0)"
    )]
    NoOrdinal(String),
    /// The ordinal is beyond the shards.
    #[error(
        "pod {ordinal} has no shards: {count} shards at {per_pod} per pod need only {pods} pods"
    )]
    Idle {
        /// This pod.
        ordinal: u32,
        /// Shards.
        count: u32,
        /// Per pod.
        per_pod: u32,
        /// Pods needed.
        pods: u32,
    },
}

impl ShardPlan {
    /// From the environment the operator gives the pod.
    pub fn from_env() -> Result<Self, PlanError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// From any variable lookup (tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, PlanError> {
        let number = |name: &'static str, default: Option<u32>| -> Result<u32, PlanError> {
            match get(name) {
                None if default.is_some() => Ok(default.unwrap_or(1)),
                value => value
                    .as_deref()
                    .map(str::trim)
                    .and_then(|v| v.parse::<u32>().ok())
                    .filter(|v| *v > 0)
                    .ok_or(PlanError::Invalid { name, value }),
            }
        };
        let count = number("SHARD_COUNT", Some(1))?;
        let per_pod = number("SHARDS_PER_POD", Some(1))?;
        let ordinal = match get("POD_NAME").or_else(|| get("HOSTNAME")) {
            // Outside Kubernetes (a laptop, the demo): one pod runs everything.
            None => 0,
            Some(name) => ordinal(&name).ok_or(PlanError::NoOrdinal(name))?,
        };
        let plan = Self {
            count,
            per_pod: per_pod.min(count),
            ordinal,
        };
        if plan.shards().is_empty() {
            return Err(PlanError::Idle {
                ordinal,
                count,
                per_pod: plan.per_pod,
                pods: count.div_ceil(plan.per_pod),
            });
        }
        Ok(plan)
    }

    /// The shard ids this pod runs.
    pub fn shards(&self) -> Range<u32> {
        let start = self.ordinal.saturating_mul(self.per_pod).min(self.count);
        start..start.saturating_add(self.per_pod).min(self.count)
    }

    /// The shard that serves `guild` (Discord's rule: `(guild_id >> 22) % shard_count`).
    pub fn shard_of(&self, guild: u64) -> u32 {
        shard_of(guild, self.count)
    }
}

/// The shard of `guild` among `count` shards.
pub fn shard_of(guild: u64, count: u32) -> u32 {
    ((guild >> 22) % u64::from(count.max(1))) as u32
}

/// The ordinal of a StatefulSet pod name (`name-<n>`); a plain host name has none.
fn ordinal(pod_name: &str) -> Option<u32> {
    let (_, n) = pod_name.rsplit_once('-')?;
    n.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(vars: &[(&str, &str)]) -> Result<ShardPlan, PlanError> {
        ShardPlan::from_lookup(|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn each_pod_runs_its_slice_of_the_shards() {
        let p = |pod: &str| {
            plan(&[
                ("SHARD_COUNT", "5"),
                ("SHARDS_PER_POD", "2"),
                ("POD_NAME", pod),
            ])
            .unwrap()
            .shards()
        };
        assert_eq!(p("jarvis-shard-0"), 0..2);
        assert_eq!(p("jarvis-shard-1"), 2..4);
        assert_eq!(p("jarvis-shard-2"), 4..5);
        // HOSTNAME when POD_NAME is absent.
        let h = plan(&[("SHARD_COUNT", "4"), ("HOSTNAME", "sage-shard-3")]).unwrap();
        assert_eq!(h.shards(), 3..4);
    }

    #[test]
    fn outside_kubernetes_one_process_runs_everything() {
        let p = plan(&[("SHARD_COUNT", "2"), ("SHARDS_PER_POD", "2")]).unwrap();
        assert_eq!(p.shards(), 0..2);
        assert_eq!(plan(&[]).unwrap().shards(), 0..1);
    }

    #[test]
    fn bad_settings_are_explained() {
        let e = plan(&[("SHARD_COUNT", "zero")]).unwrap_err();
        assert!(e.to_string().contains("SHARD_COUNT"), "{e}");
        assert!(matches!(
            plan(&[("SHARD_COUNT", "0")]),
            Err(PlanError::Invalid { .. })
        ));
        assert!(matches!(
            plan(&[("POD_NAME", "laptop")]),
            Err(PlanError::NoOrdinal(_))
        ));
        let idle = plan(&[("SHARD_COUNT", "2"), ("POD_NAME", "x-shard-5")]).unwrap_err();
        assert!(idle.to_string().contains("need only 2 pods"), "{idle}");
    }
}
