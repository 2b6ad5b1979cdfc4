//! A pod concern for unit tests of the pod's life cycle: real records in a
//! temp dir, fakes at every edge a pod touches (CNI, namespace pinning, the
//! cgroup driver), so no test needs root.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crius_proto::cri;

use super::PodDeps;
use crate::cgroups::fake::FakeCgroups;
use crate::config::Config;
use crate::events::Events;
use crate::namespaces::fake::{FakeNamespaces, NsCall};
use crate::network::fake::{FakeNetworking, NetCall};
use crate::runtime_handlers::RuntimeHandlers;
use crate::shim_client::fake::FakeShims;
use crate::shim_client::Shims;
use crate::spec::HostCapabilities;
use crate::state::table::Table;
use crate::state::Store;

/// The pod concern's deps and their fakes, to inject failures and read
/// what they saw.
pub(crate) struct PodFakes {
    pub deps: PodDeps,
    pub net: Arc<FakeNetworking>,
    pub ns: Arc<FakeNamespaces>,
    pub cgroups: Arc<FakeCgroups>,
    /// The pause processes' shims.
    pub shims: FakeShims,
    /// The dirs: records under `root/meta`, pods under `state/pods`,
    /// pause bundles under `state/p`.
    pub config: Config,
    /// Kept alive for the dirs.
    _tmp: tempfile::TempDir,
}

/// What [`PodFakes::with`] hands its builder: the config of a temp dir,
/// the fakes, and the host's resolv.conf to use.
pub(crate) struct PodSeams {
    pub config: Config,
    pub net: Arc<FakeNetworking>,
    pub ns: Arc<FakeNamespaces>,
    pub cgroups: Arc<FakeCgroups>,
    pub shims: FakeShims,
    pub host_resolv_conf: PathBuf,
}

impl PodFakes {
    /// Deps of their own: the pods' table under `<tmp>/root/meta`, pods
    /// under `<tmp>/state/pods`, the host's resolv.conf at
    /// `<tmp>/resolv.conf`; `adjust` may change the deps before use.
    pub fn new(adjust: impl FnOnce(&mut PodDeps, &Path)) -> PodFakes {
        let (fakes, ()) = PodFakes::with(|seams, tmp| {
            let store = Store::open(seams.config.root.join("meta")).unwrap();
            let pods =
                Arc::new(Table::load_upgrading(store.clone(), super::upgrade_record).unwrap());
            // No containers: the pod's events report none.
            let containers = Arc::new(Table::load(store).unwrap());
            let mut deps = PodDeps {
                events: Arc::new(Events::new(pods.clone(), containers)),
                pods,
                cni: seams.net.clone(),
                namespaces: seams.ns.clone(),
                cgroups: seams.cgroups.clone(),
                pods_dir: seams.config.state.join("pods"),
                host_resolv_conf: seams.host_resolv_conf.clone(),
                shims: Arc::new(Shims::new(Arc::new(seams.shims.clone()))),
                bundles_dir: seams.config.state.join("p"),
                host: Arc::new(HostCapabilities::bare()),
                // The default handler of a kernel with idmapped overlay layers.
                handlers: Arc::new(RuntimeHandlers::in_process(
                    seams.config.state.join("runtime"),
                    &HostCapabilities {
                        mount_setattr: true,
                        idmapped_layers: true,
                        ..HostCapabilities::bare()
                    },
                )),
            };
            adjust(&mut deps, tmp);
            (deps, ())
        });
        fakes
    }

    /// Fakes in a temp dir, and deps that `build` wires around them (with
    /// whatever else it makes, e.g. a whole daemon for a service's test).
    pub fn with<T>(build: impl FnOnce(&PodSeams, &Path) -> (PodDeps, T)) -> (PodFakes, T) {
        let tmp = tempfile::tempdir().unwrap();
        let resolv = tmp.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 10.0.0.10\n").unwrap();
        let seams = PodSeams {
            config: Config {
                root: tmp.path().join("root"),
                state: tmp.path().join("state"),
                ..Default::default()
            },
            net: Arc::new(FakeNetworking::default()),
            ns: Arc::new(FakeNamespaces::default()),
            cgroups: Arc::new(FakeCgroups::default()),
            shims: FakeShims::default(),
            host_resolv_conf: resolv,
        };
        let (deps, made) = build(&seams, tmp.path());
        let fakes = PodFakes {
            deps,
            net: seams.net,
            ns: seams.ns,
            cgroups: seams.cgroups,
            shims: seams.shims,
            config: seams.config,
            _tmp: tmp,
        };
        (fakes, made)
    }

    /// Where the pods' dirs are.
    pub fn pods_dir(&self) -> PathBuf {
        self.config.state.join("pods")
    }

    /// Where the pods' records are.
    pub fn records_dir(&self) -> PathBuf {
        self.config.root.join("meta").join("pods")
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
        let bundles = self.config.state.join("p");
        assert_eq!(Self::entries(&bundles), Vec::<PathBuf>::new());
        assert!(
            self.shims.up().is_empty(),
            "shims up: {:?}",
            self.shims.up()
        );
        assert!(self.deps.pods.list().is_empty());
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
