//! crius: the CRI server. `criusd` is a thin binary over this library.

pub mod cgroups;
pub mod config;
pub mod container;
mod deadline;
pub mod error;
pub mod events;
mod fs_usage;
pub mod idmap;
pub mod image;
pub mod image_service;
mod instrument;
pub mod namespaces;
pub mod network;
pub mod pod;
pub mod runtime_handlers;
pub mod runtime_service;
pub mod server;
pub mod shim_client;
pub mod spec;
pub mod stamp;
pub mod state;
pub mod stats;
pub mod streaming;
pub(crate) mod task;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use config::Config;
use network::cni::Cni;
use runtime_handlers::RuntimeHandlers;
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
    pub images: Arc<image::ImageStore>,
    pub pods: Arc<Table<PodRecord>>,
    pub containers: Arc<Table<ContainerRecord>>,
    /// Pod networking (CNI ADD/DEL/CHECK): [`network::Cni`] for real.
    pub cni: Arc<dyn network::PodNetworking>,
    /// Pinning the pods' namespaces: [`namespaces::HostNamespaces`] for real.
    pub namespaces: Arc<dyn namespaces::NamespacePinner>,
    /// The host's resolv.conf, copied for pods without a DNS config
    /// (`/etc/resolv.conf`).
    pub host_resolv_conf: PathBuf,
    /// The containers' and pause processes' shims: spawned through
    /// [`shim_client::ProcessShims`] (`crius-shim`, installed beside
    /// `criusd`) for real.
    pub shims: Arc<Shims>,
    /// Containers' root filesystems and the layers they hold:
    /// [`image::snapshot::OverlaySnapshotter`] for real.
    pub snapshotter: Arc<dyn image::snapshot::Snapshotter>,
    /// What this host's cgroups can enforce, measured once.
    pub host: Arc<HostCapabilities>,
    /// The runtime handlers pods may name: the in-process default and the
    /// config's `[runtimes.<name>]`.
    pub handlers: Arc<RuntimeHandlers>,
    /// The cgroup driver: names, places and removes pod and container cgroups.
    pub cgroups: Arc<dyn cgroups::CgroupDriver>,
    /// The cgroup layout and each cgroup's previous CPU sample, for stats.
    pub stats: Arc<stats::Sampler>,
    /// The stop deadline each container's concurrent stops share.
    pub container_stops: Arc<container::StopDeadlines>,
    /// Container and pod events for GetContainerEvents' subscribers.
    pub events: Arc<events::Events>,
    /// The streaming server's bound port and its pending requests
    /// (`[streaming]` in the config).
    pub streaming: Arc<streaming::Streaming>,
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
        // Each may be a filesystem of its own (KEP-4191); neither is made
        // later, so one that cannot be made stops criusd here.
        for (key, dir) in [
            ("storage.image_dir", config.image_dir()),
            ("storage.container_dir", config.container_dir()),
        ] {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("config key {key}: creating {}", dir.display()))?;
        }
        let snapshotter: Arc<dyn image::snapshot::Snapshotter> = Arc::new(
            image::snapshot::OverlaySnapshotter::new(config.container_dir()),
        );
        let images = image::ImageStore::open(&config, store.clone(), snapshotter.clone())
            .with_context(|| {
                format!(
                    "opening the image store under {}",
                    config.image_dir().display()
                )
            })?;
        let cgroup_layout =
            cgroups::CgroupLayout::detect().context("detecting the host's cgroups")?;
        let host = HostCapabilities::detect(cgroup_layout.limits())
            .context("probing the host's capabilities")?;
        // libcontainer's state of every container of the default handler,
        // shared by the shims.
        let handlers = RuntimeHandlers::from_config(&config, &host)
            .context("resolving the runtime handlers")?;
        // A pod record an older criusd wrote gets what RunPodSandbox resolves today.
        let pods = Arc::new(
            Table::load_upgrading(store.clone(), pod::upgrade_record).context("loading pods")?,
        );
        let containers = Arc::new(Table::load(store.clone()).context("loading containers")?);
        let images = Arc::new(images);
        Ok(Crius {
            events: Arc::new(
                events::Events::new(pods.clone(), containers.clone()).with_images(images.clone()),
            ),
            images,
            pods,
            containers,
            cni: Arc::new(Cni::from_config(&config)),
            namespaces: Arc::new(namespaces::HostNamespaces),
            host_resolv_conf: PathBuf::from("/etc/resolv.conf"),
            shims: Arc::new(Shims::new(Arc::new(shim_client::ProcessShims::new(
                shim_bin,
            )))),
            snapshotter,
            host: Arc::new(host),
            handlers: Arc::new(handlers),
            cgroups: Arc::new(cgroups::Cgroupfs::new(
                cgroup_layout.clone(),
                &config.cgroup_parent,
            )),
            stats: Arc::new(stats::Sampler::new(cgroup_layout)),
            container_stops: Arc::default(),
            streaming: Arc::new(streaming::Streaming::bind(&config.streaming)?),
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
        self.shims = Arc::new(Shims::new(launcher));
        self
    }

    /// Wires `snapshotter` for containers' root filesystems and image
    /// garbage collection instead of the real one (a test's fake). Call it
    /// before any deps are built (panics if the image store is shared).
    pub fn with_snapshotter(mut self, snapshotter: Arc<dyn image::snapshot::Snapshotter>) -> Crius {
        Arc::get_mut(&mut self.images)
            .expect("with_snapshotter before the image store is shared")
            .set_snapshotter(snapshotter.clone());
        self.snapshotter = snapshotter;
        self
    }

    pub fn pod_cidr(&self) -> String {
        self.pod_cidr.read().expect("pod_cidr lock").clone()
    }

    pub fn set_pod_cidr(&self, cidr: String) {
        *self.pod_cidr.write().expect("pod_cidr lock") = cidr;
    }

    /// What the pod concern uses: the pods' table, its seams (CNI, namespace
    /// pinning, cgroup driver) and where pods' dirs and the host's
    /// resolv.conf are. Cheap (clones of `Arc`s and two paths).
    pub fn pod_deps(&self) -> pod::PodDeps {
        pod::PodDeps {
            pods: self.pods.clone(),
            cni: self.cni.clone(),
            namespaces: self.namespaces.clone(),
            cgroups: self.cgroups.clone(),
            pods_dir: self.config.state.join("pods"),
            host_resolv_conf: self.host_resolv_conf.clone(),
            shims: self.shims.clone(),
            bundles_dir: self.config.state.join("p"),
            host: self.host.clone(),
            handlers: self.handlers.clone(),
            events: self.events.clone(),
        }
    }

    /// What the container concern uses: the containers' table, the images,
    /// the shims, the snapshotter, the cgroup driver, the host's
    /// capabilities and where bundles go. Cheap (clones of `Arc`s and a path).
    pub fn container_deps(&self) -> container::ContainerDeps {
        container::ContainerDeps {
            containers: self.containers.clone(),
            images: self.images.clone(),
            shims: self.shims.clone(),
            snapshotter: self.snapshotter.clone(),
            cgroups: self.cgroups.clone(),
            host: self.host.clone(),
            bundles_dir: self.config.state.join("c"),
            protected_host_dirs: vec![
                self.config.root.clone(),
                self.config.state.clone(),
                self.config.image_dir(),
                self.config.container_dir(),
            ],
            stops: self.container_stops.clone(),
            handlers: self.handlers.clone(),
            events: self.events.clone(),
        }
    }

    /// What stats read: both tables, the cgroup driver, the snapshotter, the
    /// CPU sampler and the writable layers' mountpoint. Cheap.
    pub fn stats_deps(&self) -> stats::StatsDeps {
        stats::StatsDeps {
            pods: self.pods.clone(),
            containers: self.containers.clone(),
            cgroups: self.cgroups.clone(),
            snapshotter: self.snapshotter.clone(),
            sampler: self.stats.clone(),
            layers_mountpoint: self.config.container_dir(),
        }
    }
}
