//! A daemon for unit tests of the pod's life cycle: real records in a temp
//! dir, fakes at every edge a pod touches (CNI, namespace pinning, the
//! cgroup driver), so no test needs root.

use std::path::PathBuf;
use std::sync::Arc;

use crius_proto::cri;

use crate::cgroups::fake::FakeCgroups;
use crate::config::Config;
use crate::namespaces::fake::{FakeNamespaces, NsCall};
use crate::network::fake::{FakeNetworking, NetCall};
use crate::Crius;

/// The daemon and its fakes, to inject failures and read what they saw.
pub(crate) struct PodFakes {
    pub crius: Arc<Crius>,
    pub net: Arc<FakeNetworking>,
    pub ns: Arc<FakeNamespaces>,
    pub cgroups: Arc<FakeCgroups>,
    /// Kept alive for the daemon's dirs.
    _tmp: tempfile::TempDir,
}

impl PodFakes {
    /// Records under `<tmp>/root/meta`, pods under `<tmp>/state/pods`, the
    /// host's resolv.conf at `<tmp>/resolv.conf`; `adjust` may change the
    /// daemon before it is shared.
    pub fn new(adjust: impl FnOnce(&mut Crius, &std::path::Path)) -> PodFakes {
        let tmp = tempfile::tempdir().unwrap();
        let config = Config {
            root: tmp.path().join("root"),
            state: tmp.path().join("state"),
            ..Default::default()
        };
        let net = Arc::new(FakeNetworking::default());
        let ns = Arc::new(FakeNamespaces::default());
        let cgroups = Arc::new(FakeCgroups::default());
        let mut crius =
            Crius::open(config)
                .unwrap()
                .with_pod_seams(net.clone(), ns.clone(), cgroups.clone());
        let resolv = tmp.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 10.0.0.10\n").unwrap();
        crius.host_resolv_conf = resolv;
        adjust(&mut crius, tmp.path());
        PodFakes {
            crius: Arc::new(crius),
            net,
            ns,
            cgroups,
            _tmp: tmp,
        }
    }

    /// Where the pods' dirs are.
    pub fn pods_dir(&self) -> PathBuf {
        self.crius.config.state.join("pods")
    }

    /// Where the pods' records are.
    pub fn records_dir(&self) -> PathBuf {
        self.crius.config.root.join("meta").join("pods")
    }

    /// The entries of `dir` (none when it is absent).
    pub fn entries(dir: &std::path::Path) -> Vec<PathBuf> {
        match std::fs::read_dir(dir) {
            Ok(d) => d.map(|e| e.unwrap().path()).collect(),
            Err(_) => vec![],
        }
    }

    /// Nothing of any pod is left: no pin held and each pin unpinned, each
    /// ADD followed by a DEL of the same pod and no network set up, no pod
    /// dir, no record (in the table or on disk).
    #[track_caller]
    pub fn assert_nothing_left(&self) {
        assert!(
            self.ns.pinned().is_empty(),
            "pins held: {:?}",
            self.ns.pinned()
        );
        let calls = self.ns.calls();
        for call in &calls {
            if let NsCall::Pin(path) = call {
                assert!(
                    calls.contains(&NsCall::Unpin(path.clone())),
                    "{path:?} never unpinned: {calls:?}"
                );
            }
        }
        let net = self.net.calls();
        for (i, call) in net.iter().enumerate() {
            if let NetCall::Add(id) = call {
                assert!(
                    net[i..]
                        .iter()
                        .any(|c| matches!(c, NetCall::Del { id: d, .. } if d == id)),
                    "no DEL after the ADD of {id}: {net:?}"
                );
            }
        }
        assert!(self.net.added().is_empty(), "{:?}", self.net.added());
        assert_eq!(Self::entries(&self.pods_dir()), Vec::<PathBuf>::new());
        assert!(self.crius.pods.list().is_empty());
        let records = Self::entries(&self.records_dir());
        assert!(
            records
                .iter()
                .all(|r| r.extension().is_none_or(|e| e != "json")),
            "records left: {records:?}"
        );
    }
}

/// A RunPodSandbox request of the pod `name` with its own network, IPC and
/// UTS namespaces.
pub(crate) fn run_request(name: &str) -> cri::RunPodSandboxRequest {
    cri::RunPodSandboxRequest {
        config: Some(cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                namespace: "ns".into(),
                uid: format!("uid-{name}"),
                attempt: 0,
            }),
            hostname: name.into(),
            ..Default::default()
        }),
        runtime_handler: String::new(),
    }
}
