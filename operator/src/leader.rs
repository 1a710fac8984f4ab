//! Leader election on a `coordination.k8s.io/v1` Lease, so that only one operator replica
//! reconciles at a time (two would fight over the StatefulSet during a reshard).
//!
//! The protocol is client-go's: the Lease names its holder and when it last renewed; a
//! candidate takes it when it is free, released, or not renewed for `leaseDurationSeconds`;
//! every write carries the `resourceVersion` it read, so two candidates cannot both win. The
//! leader renews every `renew`; if it cannot renew before its lease would expire it stops
//! leading (the process exits and Kubernetes restarts it as a candidate). A leader that stops
//! cleanly releases the Lease, so the next one takes over at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, Error};

/// Who competes for which Lease, and how fast.
#[derive(Debug, Clone)]
pub struct Election {
    /// The Lease's namespace (the operator's own).
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This candidate (its pod name).
    pub identity: String,
    /// How long a lease lasts without renewal.
    pub duration: Duration,
    /// How often the leader renews.
    pub renew: Duration,
}

impl Election {
    /// A lease of `duration`, renewed every third of it (client-go: 15 s, renewed well within).
    pub fn new(namespace: &str, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
            renew: duration / 3,
        }
    }
}

/// The Lease, held.
pub struct Leader {
    api: Api<Lease>,
    election: Election,
    lease: Lease,
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// Whether `lease` may be taken by `me` at `at`.
fn takeable(lease: &Lease, me: &str, at: Timestamp) -> bool {
    let Some(spec) = &lease.spec else { return true };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() || holder == me {
        return true;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    match &spec.renew_time {
        Some(MicroTime(renewed)) => *renewed + duration < at,
        None => true,
    }
}

impl Election {
    fn spec(&self, previous: Option<&LeaseSpec>) -> LeaseSpec {
        let mine = previous
            .and_then(|p| p.holder_identity.as_deref())
            .is_some_and(|h| h == self.identity);
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
            acquire_time: if mine {
                previous.and_then(|p| p.acquire_time.clone())
            } else {
                Some(now())
            },
            renew_time: Some(now()),
            lease_transitions: Some(if mine || previous.is_none() {
                transitions
            } else {
                transitions + 1
            }),
            ..LeaseSpec::default()
        }
    }

    /// One attempt: the Lease if this candidate holds it now.
    pub async fn try_acquire(&self, client: &Client) -> Result<Option<Leader>, Error> {
        let api: Api<Lease> = Api::namespaced(client.clone(), &self.namespace);
        let lease = match api.get_opt(&self.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(self.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(None)),
                };
                match api.create(&PostParams::default(), &lease).await {
                    Ok(l) => l,
                    // Another candidate created it first.
                    Err(Error::Api(e)) if e.code == 409 => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
            Some(current) => {
                if !takeable(&current, &self.identity, Timestamp::now()) {
                    return Ok(None);
                }
                let mut next = current.clone();
                next.spec = Some(self.spec(current.spec.as_ref()));
                match api.replace(&self.name, &PostParams::default(), &next).await {
                    Ok(l) => l,
                    // Someone wrote it since we read it (resourceVersion): not ours.
                    Err(Error::Api(e)) if e.code == 409 => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
        };
        Ok(Some(Leader {
            api,
            election: self.clone(),
            lease,
        }))
    }

    /// Waits until this candidate leads.
    pub async fn acquire(&self, client: &Client) -> Leader {
        let mut said = false;
        loop {
            match self.try_acquire(client).await {
                Ok(Some(leader)) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "leading");
                    return leader;
                }
                Ok(None) if !said => {
                    tracing::info!(lease = %self.name, "another replica leads; standing by");
                    said = true;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %e, "the lease could not be read")
                }
            }
            tokio::time::sleep(self.renew).await;
        }
    }
}

impl Leader {
    /// Who holds the Lease (this candidate, until [`Leader::keep`] returns).
    pub fn identity(&self) -> &str {
        &self.election.identity
    }

    /// Renews the Lease until it cannot be renewed in time (another replica took it, or the
    /// API server was unreachable for a whole lease): returns then, and the caller must stop
    /// acting as the leader.
    pub async fn keep(&mut self) {
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.election.renew).await;
            match self.renew().await {
                Ok(true) => last = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = %self.election.name, "another replica holds the lease now");
                    return;
                }
                Err(e) if last.elapsed() + self.election.renew < self.election.duration => {
                    tracing::warn!(lease = %self.election.name, error = %e, "renewing the lease failed; retrying");
                }
                Err(e) => {
                    tracing::error!(lease = %self.election.name, error = %e, "the lease could not be renewed in time");
                    return;
                }
            }
        }
    }

    async fn renew(&mut self) -> Result<bool, Error> {
        let current = self.api.get(&self.election.name).await?;
        let holder = current
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref());
        if holder != Some(self.election.identity.as_str()) {
            return Ok(false);
        }
        let mut next = current.clone();
        next.spec = Some(self.election.spec(current.spec.as_ref()));
        match self
            .api
            .replace(&self.election.name, &PostParams::default(), &next)
            .await
        {
            Ok(l) => {
                self.lease = l;
                Ok(true)
            }
            Err(Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (a clean stop): the next candidate takes it without waiting for it
    /// to expire.
    pub async fn release(mut self) {
        let mut next = self.lease.clone();
        if let Some(spec) = next.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(now());
        }
        match self
            .api
            .replace(&self.election.name, &PostParams::default(), &next)
            .await
        {
            Ok(l) => {
                self.lease = l;
                tracing::info!(lease = %self.election.name, "lease released");
            }
            Err(e) => {
                tracing::warn!(lease = %self.election.name, error = %e, "releasing the lease failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed_secs_ago: i64) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(
                    Timestamp::now() - SignedDuration::from_secs(renewed_secs_ago),
                )),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn a_lease_is_taken_only_when_free_released_or_expired() {
        let at = Timestamp::now();
        assert!(takeable(&lease(None, 1), "b", at), "released");
        assert!(takeable(&lease(Some("b"), 1), "b", at), "already mine");
        assert!(!takeable(&lease(Some("a"), 1), "b", at), "held and fresh");
        assert!(
            takeable(&lease(Some("a"), 16), "b", at),
            "not renewed in time"
        );
        let election = Election::new("ns", "voicebot-operator", "b", Duration::from_secs(15));
        let next = election.spec(lease(Some("a"), 16).spec.as_ref());
        assert_eq!(next.holder_identity.as_deref(), Some("b"));
        assert_eq!(next.lease_transitions, Some(1));
        let renewed = election.spec(Some(&next));
        assert_eq!(
            renewed.lease_transitions,
            Some(1),
            "a renewal is no transition"
        );
    }
}
