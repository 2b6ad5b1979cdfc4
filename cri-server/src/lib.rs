//! crius: the CRI server. `criusd` is a thin binary over this library.

pub mod cgroups;
pub mod config;
pub mod container;
mod deadline;
pub mod error;
mod fs_usage;
pub mod image;
pub mod image_service;
mod instrument;
pub mod namespaces;
pub mod network;
pub mod pod;
pub mod runtime_service;
pub mod server;
pub mod shim_client;
pub mod spec;
pub mod state;
pub mod stats;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use config::Config;
use network::cni::Cni;
use shim_client::Shims;
use spec::HostCapabilities;
use state::container::ContainerRecord;
use state::sandbox::PodRecord;
use state::table::Table;
use state::Store;

/// What every service shares: the effective config, the state store, the
/// pods and containers, the network, the shims, and the runtime settings
/// kubelet pushes.
pub struct Crius {
    pub config: Config,
    pub store: Store,
    /// Pulled images: content, unpacked layers and the index.
    pub images: image::ImageStore,
    pub pods: Table<PodRecord>,
    pub containers: Table<ContainerRecord>,
    /// Pod networking (CNI ADD/DEL/CHECK): [`network::Cni`] for real.
    pub cni: Arc<dyn network::PodNetworking>,
    /// Pinning the pods' namespaces: [`namespaces::HostNamespaces`] for real.
    pub namespaces: Arc<dyn namespaces::NamespacePinner>,
    /// The host's resolv.conf, copied for pods without a DNS config
    /// (`/etc/resolv.conf`).
    pub host_resolv_conf: PathBuf,
    /// The containers' shims: spawned through [`shim_client::ProcessShims`]
    /// (`crius-shim`, installed beside `criusd`) for real.
    pub shims: Shims,
    /// Containers' root filesystems and the layers they hold:
    /// [`image::snapshot::OverlaySnapshotter`] for real.
    pub snapshotter: Arc<dyn image::snapshot::Snapshotter>,
    /// What this host's cgroups can enforce, measured once.
    pub host: HostCapabilities,
    /// The cgroup driver: names, places and removes pod and container cgroups.
    pub cgroups: Arc<dyn cgroups::CgroupDriver>,
    /// The cgroup layout and each cgroup's previous CPU sample, for stats.
    pub stats: stats::Sampler,
    pod_cidr: RwLock<String>,
}

impl Crius {
    pub fn open(config: Config) -> anyhow::Result<Crius> {
        use anyhow::Context;
        let meta = config.root.join("meta");
        let store = Store::open(&meta)
            .with_context(|| format!("opening state store {}", meta.display()))?;
        std::fs::create_dir_all(&config.state)
            .with_context(|| format!("creating state dir {}", config.state.display()))?;
        let shim_bin = std::env::current_exe()
            .context("locating criusd's own binary")?
            .with_file_name("crius-shim");
        let snapshotter: Arc<dyn image::snapshot::Snapshotter> = Arc::new(
            image::snapshot::OverlaySnapshotter::new(config.root.join("containers")),
        );
        let images = image::ImageStore::open(&config, store.clone(), snapshotter.clone())
            .with_context(|| format!("opening the image store under {}", config.root.display()))?;
        let cgroup_layout =
            cgroups::CgroupLayout::detect().context("detecting the host's cgroups")?;
        Ok(Crius {
            images,
            // A pod record an older criusd wrote gets what RunPodSandbox resolves today.
            pods: Table::load_upgrading(store.clone(), pod::upgrade_record)
                .context("loading pods")?,
            containers: Table::load(store.clone()).context("loading containers")?,
            cni: Arc::new(Cni::from_config(&config)),
            namespaces: Arc::new(namespaces::HostNamespaces),
            host_resolv_conf: PathBuf::from("/etc/resolv.conf"),
            // libcontainer's state of every container, shared by the shims.
            shims: Shims::new(Arc::new(shim_client::ProcessShims::new(
                shim_bin,
                config.state.join("runtime"),
            ))),
            snapshotter,
            host: HostCapabilities::detect(cgroup_layout.limits())
                .context("probing the host's capabilities")?,
            cgroups: Arc::new(cgroups::Cgroupfs::new(
                cgroup_layout.clone(),
                &config.cgroup_parent,
            )),
            stats: stats::Sampler::new(cgroup_layout),
            config,
            store,
            pod_cidr: RwLock::new(String::new()),
        })
    }

    /// The same daemon with the pod's seams replaced (unit tests wire fakes
    /// here: `network::fake`, `namespaces::fake`, `cgroups::fake`).
    pub fn with_pod_seams(
        self,
        cni: Arc<dyn network::PodNetworking>,
        namespaces: Arc<dyn namespaces::NamespacePinner>,
        cgroups: Arc<dyn cgroups::CgroupDriver>,
    ) -> Crius {
        Crius {
            cni,
            namespaces,
            cgroups,
            ..self
        }
    }

    /// Wires `launcher` for the shims instead of the real one (a test's fake).
    pub fn with_shims(mut self, launcher: Arc<dyn shim_client::ShimLauncher>) -> Crius {
        self.shims = Shims::new(launcher);
        self
    }

    /// Wires `snapshotter` for containers' root filesystems and image
    /// garbage collection instead of the real one (a test's fake).
    pub fn with_snapshotter(mut self, snapshotter: Arc<dyn image::snapshot::Snapshotter>) -> Crius {
        self.images.set_snapshotter(snapshotter.clone());
        self.snapshotter = snapshotter;
        self
    }

    pub fn pod_cidr(&self) -> String {
        self.pod_cidr.read().expect("pod_cidr lock").clone()
    }

    pub fn set_pod_cidr(&self, cidr: String) {
        *self.pod_cidr.write().expect("pod_cidr lock") = cidr;
    }
}

/// Runs a state-changing call in its own task, so that it finishes (and
/// rolls back) even when the caller's request is dropped at its deadline.
pub(crate) async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, error::CriError>> + Send + 'static,
) -> Result<T, error::CriError> {
    use anyhow::Context;
    tokio::spawn(work).await.context("lifecycle task")?
}

/// A new pod or container id: 64 hex digits, as containerd's.
pub fn new_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Now, in unix nanoseconds (CRI's timestamps).
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
