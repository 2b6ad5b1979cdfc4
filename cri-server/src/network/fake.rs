//! A [`PodNetworking`] for unit tests: no plugins, no host access; an
//! in-memory cache of the pods added, a log of every call, and a failure to
//! inject.

use std::collections::BTreeMap;
use std::sync::Mutex;

use futures_util::future::BoxFuture;

use super::{CniError, NetworkStatus, PodNetwork, PodNetworking};

/// A step of [`FakeNetworking`] that can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeStep {
    Add,
    Del,
    Check,
}

/// One call the fake saw, with the pod id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetCall {
    Add(String),
    /// `had_network`: the pod was in the cache, so this DEL released it
    /// (false: the idempotent no-op of a pod already deleted or never added).
    Del {
        id: String,
        had_network: bool,
    },
    Check(String),
}

#[derive(Debug, Default)]
pub struct FakeNetworking {
    fail: Mutex<Option<FakeStep>>,
    calls: Mutex<Vec<NetCall>>,
    /// Pod id → its status: what the real one keeps in its cache dir.
    cache: Mutex<BTreeMap<String, NetworkStatus>>,
}

impl FakeNetworking {
    /// Makes every later call of `step` fail (`None`: none fails).
    pub fn fail_at(&self, step: Option<FakeStep>) {
        *self.fail.lock().unwrap() = step;
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<NetCall> {
        self.calls.lock().unwrap().clone()
    }

    /// The ids of the pods whose network is set up now.
    pub fn added(&self) -> Vec<String> {
        self.cache.lock().unwrap().keys().cloned().collect()
    }

    fn check_fail(&self, step: FakeStep) -> Result<(), CniError> {
        if *self.fail.lock().unwrap() == Some(step) {
            return Err(CniError::Injected(format!("CNI {step:?}")));
        }
        Ok(())
    }
}

impl PodNetworking for FakeNetworking {
    fn add<'a>(&'a self, pod: &'a PodNetwork) -> BoxFuture<'a, Result<NetworkStatus, CniError>> {
        Box::pin(async move {
            self.calls
                .lock()
                .unwrap()
                .push(NetCall::Add(pod.id.clone()));
            // All or nothing, as the real one: a failed ADD leaves no cache entry.
            self.check_fail(FakeStep::Add)?;
            let mut cache = self.cache.lock().unwrap();
            let status = NetworkStatus {
                ip: format!("10.88.0.{}", cache.len() + 2),
                additional_ips: vec![],
                interface: super::cni::IFNAME.to_string(),
            };
            cache.insert(pod.id.clone(), status.clone());
            Ok(status)
        })
    }

    fn del<'a>(&'a self, pod: &'a PodNetwork) -> BoxFuture<'a, Result<(), CniError>> {
        Box::pin(async move {
            let had_network = self.cache.lock().unwrap().contains_key(&pod.id);
            self.calls.lock().unwrap().push(NetCall::Del {
                id: pod.id.clone(),
                had_network,
            });
            // A failed DEL keeps the cache entry for a retry, as the real one.
            self.check_fail(FakeStep::Del)?;
            self.cache.lock().unwrap().remove(&pod.id);
            Ok(())
        })
    }

    fn check<'a>(&'a self, pod: &'a PodNetwork) -> BoxFuture<'a, Result<(), CniError>> {
        Box::pin(async move {
            self.calls
                .lock()
                .unwrap()
                .push(NetCall::Check(pod.id.clone()));
            self.check_fail(FakeStep::Check)?;
            if !self.cache.lock().unwrap().contains_key(&pod.id) {
                return Err(CniError::NotAdded(pod.id.clone()));
            }
            Ok(())
        })
    }

    /// A CNI 1.0 result holding the pod's address (no call logged: a read).
    fn cached_result<'a>(
        &'a self,
        pod_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<serde_json::Value>, CniError>> {
        Box::pin(async move {
            let cache = self.cache.lock().unwrap();
            Ok(cache.get(pod_id).map(|s| {
                serde_json::json!({
                    "cniVersion": "1.0.0",
                    "interfaces": [{"name": s.interface}],
                    "ips": [{"address": format!("{}/16", s.ip), "interface": 0}],
                })
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(id: &str) -> PodNetwork {
        PodNetwork {
            id: id.into(),
            name: "web".into(),
            namespace: "ns".into(),
            uid: "u".into(),
            netns: "/fake/ns/net".into(),
            port_mappings: vec![],
        }
    }

    #[tokio::test]
    async fn the_fake_caches_logs_and_fails_on_demand() {
        let fake = FakeNetworking::default();
        assert!(matches!(
            fake.check(&pod("p1")).await,
            Err(CniError::NotAdded(_))
        ));
        let status = fake.add(&pod("p1")).await.unwrap();
        assert_eq!(status.interface, "eth0");
        fake.check(&pod("p1")).await.unwrap();
        assert_eq!(fake.added(), ["p1"]);
        fake.del(&pod("p1")).await.unwrap();
        fake.del(&pod("p1")).await.unwrap();
        assert!(fake.added().is_empty());
        fake.fail_at(Some(FakeStep::Add));
        assert!(matches!(
            fake.add(&pod("p2")).await,
            Err(CniError::Injected(_))
        ));
        assert!(fake.added().is_empty());
        assert_eq!(
            fake.calls(),
            [
                NetCall::Check("p1".into()),
                NetCall::Add("p1".into()),
                NetCall::Check("p1".into()),
                NetCall::Del {
                    id: "p1".into(),
                    had_network: true
                },
                NetCall::Del {
                    id: "p1".into(),
                    had_network: false
                },
                NetCall::Add("p2".into()),
            ]
        );
    }
}
