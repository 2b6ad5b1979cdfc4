//! CRI stats: what each container and pod uses (CPU, memory, swap,
//! processes from its cgroup; the writable layer's disk; the pod's network
//! from its network namespace), as containerd reports them, and the same
//! figures as cAdvisor's Prometheus metrics (`metrics`).
//!
//! The cgroup driver says where a container's and a pod's cgroups are; the
//! `cgroups` module reads them. A pod's totals are its cgroup's. A cgroup already gone (an exited and
//! cleaned-up container) leaves CPU and memory out rather than failing.

pub mod metrics;
pub mod network;
mod rate;

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use crius_proto::cri;

use crate::cgroups::CgroupDriver;
use crate::cgroups::{CgroupDetail, CgroupError, CgroupLayout, CgroupUsage};
use crate::error::CriError;
use crate::image::snapshot::Snapshotter;
use crate::stamp::now_nanos;
use crate::state::container::ContainerRecord;
use crate::state::sandbox::{PodRecord, PodState};
use crate::state::table::Table;
use metrics::{ContainerSample, FsSample, Labels, OpenFiles};
use network::InterfaceStats;
use rate::CpuRates;

/// What stats read, and nothing else: built by the composition root
/// (`Crius::stats_deps`). Cheap to clone; a blocking task holds its own.
#[derive(Clone)]
pub struct StatsDeps {
    /// The pods' records (their cgroup parents).
    pub pods: Arc<Table<PodRecord>>,
    /// The containers' records.
    pub containers: Arc<Table<ContainerRecord>>,
    /// Where each pod's and container's cgroup is.
    pub cgroups: Arc<dyn CgroupDriver>,
    /// The writable layers' disk usage.
    pub snapshotter: Arc<dyn Snapshotter>,
    /// Each cgroup's previous CPU sample.
    pub sampler: Arc<Sampler>,
    /// The writable layers' mountpoint, as reported in `fs_id`.
    pub layers_mountpoint: std::path::PathBuf,
}

/// The host's cgroup layout and the previous CPU sample of each cgroup,
/// from which usage_nano_cores is computed.
#[derive(Debug)]
pub struct Sampler {
    cgroups: CgroupLayout,
    rates: CpuRates,
}

impl Sampler {
    /// A sampler reading `cgroups`, with no previous samples. Pure.
    pub fn new(cgroups: CgroupLayout) -> Sampler {
        Sampler {
            cgroups,
            rates: CpuRates::default(),
        }
    }

    /// `cgroup`'s usage now, as CRI messages.
    fn sample(&self, cgroup: &str) -> Result<CgroupStats, CgroupError> {
        let usage = self.cgroups.usage(cgroup)?;
        let at = now_nanos();
        let nano_cores = usage
            .cpu_nanos
            .map(|cpu| self.rates.nano_cores(cgroup, at, cpu));
        Ok(CgroupStats::new(&usage, at, nano_cores))
    }

    /// `cgroup`'s usage and cAdvisor's further figures, raw.
    fn read_all(&self, cgroup: &str) -> Result<(CgroupUsage, CgroupDetail), CgroupError> {
        Ok((self.cgroups.usage(cgroup)?, self.cgroups.detail(cgroup)?))
    }
}

/// One cgroup's usage in CRI's terms.
#[derive(Debug, Default, Clone, PartialEq)]
struct CgroupStats {
    cpu: Option<cri::CpuUsage>,
    memory: Option<cri::MemoryUsage>,
    swap: Option<cri::SwapUsage>,
    process: Option<cri::ProcessUsage>,
}

fn value(value: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value })
}

impl CgroupStats {
    fn new(usage: &CgroupUsage, timestamp: i64, nano_cores: Option<u64>) -> CgroupStats {
        CgroupStats {
            cpu: usage.cpu_nanos.map(|nanos| cri::CpuUsage {
                timestamp,
                usage_core_nano_seconds: value(nanos),
                usage_nano_cores: nano_cores.and_then(value),
                psi: None,
            }),
            memory: usage.memory.map(|m| cri::MemoryUsage {
                timestamp,
                working_set_bytes: value(m.working_set),
                available_bytes: m.available().and_then(value),
                usage_bytes: value(m.usage),
                rss_bytes: value(m.rss),
                page_faults: value(m.page_faults),
                major_page_faults: value(m.major_page_faults),
                psi: None,
            }),
            swap: usage.swap.map(|s| cri::SwapUsage {
                timestamp,
                swap_available_bytes: s.available().and_then(value),
                swap_usage_bytes: value(s.usage),
            }),
            process: usage.processes.map(|count| cri::ProcessUsage {
                timestamp,
                process_count: value(count),
            }),
        }
    }
}

/// ContainerStats of one container; unknown ids are NotFound.
pub async fn container_stats(deps: &StatsDeps, id: &str) -> Result<cri::ContainerStats, CriError> {
    let record = deps.containers.find(id)?.snapshot();
    blocking(deps, move |deps| {
        let parents = cgroup_parents(deps);
        one_container(deps, &parents, &record)
    })
    .await
}

/// ListContainerStats: every container the filter selects, created and
/// exited ones too.
pub async fn list_container_stats(
    deps: &StatsDeps,
    filter: cri::ContainerStatsFilter,
) -> Result<Vec<cri::ContainerStats>, CriError> {
    let filter = cri::ContainerFilter {
        id: filter.id,
        pod_sandbox_id: filter.pod_sandbox_id,
        label_selector: filter.label_selector,
        state: None,
    };
    blocking(deps, move |deps| {
        let parents = cgroup_parents(deps);
        let selected = deps.containers.select(|c| c.matches(&filter));
        selected
            .iter()
            .map(|c| one_container(deps, &parents, c))
            .collect()
    })
    .await
}

/// PodSandboxStats of one ready pod; unknown ids are NotFound, a stopped
/// pod (whose containers and network are gone) FailedPrecondition.
pub async fn pod_sandbox_stats(
    deps: &StatsDeps,
    id: &str,
) -> Result<cri::PodSandboxStats, CriError> {
    let pod = deps.pods.find(id)?.snapshot();
    if pod.state != PodState::Ready {
        return Err(CriError::FailedPrecondition(format!(
            "pod sandbox {:?} is not ready",
            pod.id
        )));
    }
    blocking(deps, move |deps| {
        let containers = deps.containers.list();
        one_pod(deps, &pod, &containers)
    })
    .await
}

/// ListPodSandboxStats: every ready pod the filter selects.
pub async fn list_pod_sandbox_stats(
    deps: &StatsDeps,
    filter: cri::PodSandboxStatsFilter,
) -> Result<Vec<cri::PodSandboxStats>, CriError> {
    let filter = cri::PodSandboxFilter {
        id: filter.id,
        label_selector: filter.label_selector,
        state: Some(cri::PodSandboxStateValue {
            state: cri::PodSandboxState::SandboxReady as i32,
        }),
    };
    blocking(deps, move |deps| {
        let containers = deps.containers.list();
        let selected = deps.pods.select(|p| p.matches(&filter));
        selected
            .iter()
            .map(|p| one_pod(deps, p, &containers))
            .collect()
    })
    .await
}

/// Reading cgroup files and walking a writable layer block: off the runtime.
async fn blocking<T: Send + 'static>(
    deps: &StatsDeps,
    work: impl FnOnce(&StatsDeps) -> Result<T, CriError> + Send + 'static,
) -> Result<T, CriError> {
    let deps = deps.clone();
    tokio::task::spawn_blocking(move || work(&deps))
        .await
        .context("stats task")?
}

/// Each pod's cgroup parent, by pod id.
fn cgroup_parents(deps: &StatsDeps) -> HashMap<String, String> {
    deps.pods
        .list()
        .into_iter()
        .map(|p| (p.id, p.cgroup_parent))
        .collect()
}

fn one_container(
    deps: &StatsDeps,
    cgroup_parents: &HashMap<String, String>,
    record: &ContainerRecord,
) -> Result<cri::ContainerStats, CriError> {
    let usage = match cgroup_parents.get(&record.pod_id) {
        Some(parent) => deps
            .cgroups
            .container_dir(parent, &record.id)
            .and_then(|dir| deps.sampler.sample(&dir))
            .with_context(|| format!("stats of container {}", record.id))?,
        // Its pod is being removed: no cgroup to read.
        None => CgroupStats::default(),
    };
    let layer = deps
        .snapshotter
        .usage(&record.layer_dir)
        .with_context(|| format!("disk usage of container {}'s writable layer", record.id))?;
    Ok(cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: record.id.clone(),
            metadata: record.config.metadata.clone(),
            labels: record.config.labels.clone(),
            annotations: record.config.annotations.clone(),
        }),
        cpu: usage.cpu,
        memory: usage.memory,
        swap: usage.swap,
        io: None,
        writable_layer: Some(cri::FilesystemUsage {
            timestamp: now_nanos(),
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: deps.layers_mountpoint.display().to_string(),
            }),
            used_bytes: value(layer.bytes),
            inodes_used: value(layer.inodes),
        }),
    })
}

fn one_pod(
    deps: &StatsDeps,
    pod: &PodRecord,
    containers: &[ContainerRecord],
) -> Result<cri::PodSandboxStats, CriError> {
    let totals = deps
        .cgroups
        .pod_dir(&pod.cgroup_parent)
        .and_then(|dir| deps.sampler.sample(&dir))
        .with_context(|| format!("stats of pod sandbox {}", pod.id))?;
    let parents = HashMap::from([(pod.id.clone(), pod.cgroup_parent.clone())]);
    let containers = containers
        .iter()
        .filter(|c| c.pod_id == pod.id)
        .map(|c| one_container(deps, &parents, c))
        .collect::<Result<_, _>>()?;
    Ok(cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: pod.id.clone(),
            metadata: pod.config.metadata.clone(),
            labels: pod.config.labels.clone(),
            annotations: pod.config.annotations.clone(),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu: totals.cpu,
            memory: totals.memory,
            network: pod_interfaces(pod).map(|i| network_usage(&i, now_nanos())),
            process: totals.process,
            containers,
            io: None,
        }),
        windows: None,
    })
}

/// The pod's interfaces but loopback; `None` for a pod without a network
/// namespace of its own (host network) or whose namespace cannot be read
/// (torn down meanwhile: logged, as the rest of its stats still hold).
fn pod_interfaces(pod: &PodRecord) -> Option<Vec<InterfaceStats>> {
    let netns = pod.netns.as_deref()?;
    network::read_netns(netns)
        .inspect_err(|e| tracing::warn!(pod = %pod.id, "network stats: {e:#}"))
        .ok()
}

/// CRI's NetworkUsage: eth0 as the default interface, the others listed.
fn network_usage(interfaces: &[InterfaceStats], timestamp: i64) -> cri::NetworkUsage {
    let usage = |i: &InterfaceStats| cri::NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: value(i.rx_bytes),
        rx_errors: value(i.rx_errors),
        tx_bytes: value(i.tx_bytes),
        tx_errors: value(i.tx_errors),
    };
    cri::NetworkUsage {
        timestamp,
        default_interface: interfaces
            .iter()
            .find(|i| i.name == network::DEFAULT_INTERFACE)
            .map(usage),
        interfaces: interfaces
            .iter()
            .filter(|i| i.name != network::DEFAULT_INTERFACE)
            .map(usage)
            .collect(),
    }
}

/// ListMetricDescriptors: every metric [`list_pod_sandbox_metrics`] serves.
pub fn list_metric_descriptors() -> Vec<cri::MetricDescriptor> {
    metrics::descriptors()
}

/// ListPodSandboxMetrics: each ready pod's network metrics and each of its
/// containers' cgroup, process and filesystem metrics, in cAdvisor's terms.
/// Errors: a cgroup or the writable layers' filesystem unreadable for
/// another reason than being gone, named.
pub async fn list_pod_sandbox_metrics(
    deps: &StatsDeps,
) -> Result<Vec<cri::PodSandboxMetrics>, CriError> {
    blocking(deps, |deps| {
        let containers = deps.containers.list();
        deps.pods
            .select(|p| p.state == PodState::Ready)
            .iter()
            .map(|pod| pod_metrics(deps, pod, &containers))
            .collect()
    })
    .await
}

/// The filesystem holding `dir` (a writable layer): its size and inodes,
/// with `usage_bytes` what the layer uses; `None` when the dir is gone (a
/// container removed meanwhile).
fn layer_filesystem(dir: &std::path::Path, usage_bytes: u64) -> Result<Option<FsSample>, CriError> {
    let fs = match nix::sys::statvfs::statvfs(dir) {
        Ok(fs) => fs,
        Err(nix::errno::Errno::ENOENT) => return Ok(None),
        Err(e) => Err(e).with_context(|| format!("statvfs of {}", dir.display()))?,
    };
    Ok(Some(FsSample {
        usage_bytes,
        limit_bytes: fs.blocks() as u64 * fs.fragment_size() as u64,
        inodes_total: fs.files() as u64,
        inodes_free: fs.files_free() as u64,
    }))
}

fn pod_metrics(
    deps: &StatsDeps,
    pod: &PodRecord,
    containers: &[ContainerRecord],
) -> Result<cri::PodSandboxMetrics, CriError> {
    let metadata = pod.config.metadata.clone().unwrap_or_default();
    let pod_labels = Labels {
        container: metrics::POD_CONTAINER.to_string(),
        id: deps.cgroups.pod_dir(&pod.cgroup_parent).unwrap_or_default(),
        image: String::new(),
        name: pod.id.clone(),
        namespace: metadata.namespace.clone(),
        pod: metadata.name.clone(),
    };
    let now = now_nanos();
    let network = pod_interfaces(pod).unwrap_or_default();
    let container_metrics = containers
        .iter()
        .filter(|c| c.pod_id == pod.id)
        .map(|c| {
            let cgroup = deps
                .cgroups
                .container_dir(&pod.cgroup_parent, &c.id)
                .with_context(|| format!("cgroup of container {}", c.id))?;
            let sample = container_sample(deps, c, &cgroup)?;
            let labels = Labels {
                container: c
                    .config
                    .metadata
                    .as_ref()
                    .map(|m| m.name.clone())
                    .unwrap_or_default(),
                id: cgroup,
                image: c
                    .config
                    .image
                    .as_ref()
                    .map(|i| i.image.clone())
                    .unwrap_or_default(),
                name: c.id.clone(),
                ..pod_labels.clone()
            };
            Ok(cri::ContainerMetrics {
                container_id: c.id.clone(),
                metrics: metrics::container_metrics(&labels, &sample, now),
            })
        })
        .collect::<Result<_, CriError>>()?;
    Ok(cri::PodSandboxMetrics {
        pod_sandbox_id: pod.id.clone(),
        metrics: metrics::pod_network_metrics(&pod_labels, &network, now),
        container_metrics,
    })
}

fn container_sample(
    deps: &StatsDeps,
    record: &ContainerRecord,
    cgroup: &str,
) -> Result<ContainerSample, CriError> {
    let (usage, detail) = deps
        .sampler
        .read_all(cgroup)
        .with_context(|| format!("metrics of container {}", record.id))?;
    let layer = deps
        .snapshotter
        .usage(&record.layer_dir)
        .with_context(|| format!("disk usage of container {}'s writable layer", record.id))?;
    let open_files = (!detail.pids.is_empty()).then(|| open_files(&detail.pids));
    let block_io = detail
        .block_io
        .iter()
        .map(|io| (device_name(io.major, io.minor), *io))
        .collect();
    Ok(ContainerSample {
        block_io,
        usage,
        open_files,
        detail,
        fs: layer_filesystem(&record.layer_dir, layer.bytes)?,
        started_at: record.started_at,
    })
}

/// A block device's node (`/dev/sda`) from sysfs' `/sys/dev/block/M:m`
/// link, as cAdvisor names it; `M:m` when sysfs does not know it.
fn device_name(major: u64, minor: u64) -> String {
    std::fs::read_link(format!("/sys/dev/block/{major}:{minor}"))
        .ok()
        .and_then(|target| Some(format!("/dev/{}", target.file_name()?.to_str()?)))
        .unwrap_or_else(|| format!("{major}:{minor}"))
}

/// The descriptors and sockets `pids` hold open (`/proc/<pid>/fd`), as
/// cAdvisor counts them; a process gone meanwhile counts nothing.
fn open_files(pids: &[u32]) -> OpenFiles {
    let mut open = OpenFiles::default();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            open.file_descriptors += 1;
            if std::fs::read_link(fd.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
            {
                open.sockets += 1;
            }
        }
    }
    open
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::{MemoryUsage, SwapUsage};

    #[test]
    fn usage_becomes_cri_messages() {
        let usage = CgroupUsage {
            cpu_nanos: Some(5_000),
            memory: Some(MemoryUsage {
                usage: 300,
                working_set: 200,
                limit: Some(1000),
                rss: 150,
                page_faults: 9,
                major_page_faults: 1,
            }),
            swap: Some(SwapUsage {
                usage: 10,
                limit: None,
            }),
            processes: Some(4),
        };
        let stats = CgroupStats::new(&usage, 77, Some(0));
        let cpu = stats.cpu.unwrap();
        assert_eq!(cpu.timestamp, 77);
        assert_eq!(cpu.usage_core_nano_seconds, value(5_000));
        assert_eq!(cpu.usage_nano_cores, value(0));
        let memory = stats.memory.unwrap();
        assert_eq!(memory.timestamp, 77);
        assert_eq!(memory.working_set_bytes, value(200));
        assert_eq!(memory.available_bytes, value(800));
        assert_eq!(memory.usage_bytes, value(300));
        assert_eq!(memory.rss_bytes, value(150));
        assert_eq!(memory.page_faults, value(9));
        assert_eq!(memory.major_page_faults, value(1));
        let swap = stats.swap.unwrap();
        assert_eq!(swap.swap_usage_bytes, value(10));
        assert_eq!(swap.swap_available_bytes, None, "unlimited");
        assert_eq!(stats.process.unwrap().process_count, value(4));
    }

    #[test]
    fn an_absent_cgroup_reports_nothing() {
        assert_eq!(
            CgroupStats::new(&CgroupUsage::default(), 1, None),
            CgroupStats::default()
        );
    }

    #[test]
    fn samples_give_a_rate_from_the_second_on() {
        let host = crate::cgroups::fixture::Host::v2("cpu memory");
        let stat = "sys/fs/cgroup/pod/ctr/cpu.stat";
        host.write(stat, "usage_usec 1000\n");
        let sampler = Sampler::new(host.layout());
        let first = sampler.sample("/pod/ctr").unwrap().cpu.unwrap();
        assert_eq!(first.usage_core_nano_seconds, value(1_000_000));
        assert_eq!(first.usage_nano_cores, value(0));
        std::thread::sleep(std::time::Duration::from_millis(20));
        host.write(stat, "usage_usec 6000\n");
        let second = sampler.sample("/pod/ctr").unwrap().cpu.unwrap();
        let rate = second.usage_nano_cores.unwrap().value;
        // 5 ms of CPU over a bit more than 20 ms: under a quarter core.
        assert!(rate > 0 && rate <= 250_000_000, "{rate}");
        assert!(sampler.sample("/pod/ctr").unwrap().memory.is_none());
    }

    #[test]
    fn network_usage_puts_eth0_first() {
        let iface = |name: &str, rx| InterfaceStats {
            name: name.into(),
            rx_bytes: rx,
            tx_errors: 1,
            ..InterfaceStats::default()
        };
        let usage = network_usage(&[iface("net1", 5), iface("eth0", 9)], 3);
        assert_eq!(usage.timestamp, 3);
        let default = usage.default_interface.unwrap();
        assert_eq!(default.name, "eth0");
        assert_eq!(default.rx_bytes, value(9));
        assert_eq!(default.tx_errors, value(1));
        let others: Vec<_> = usage.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(others, ["net1"]);
    }

    #[test]
    fn open_files_counts_this_process_and_its_sockets() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let open = open_files(&[std::process::id()]);
        assert!(open.sockets >= 1, "{open:?}");
        // stdin, stdout and stderr at least are no sockets.
        assert!(open.file_descriptors >= open.sockets + 3, "{open:?}");
        drop(socket);
        assert_eq!(
            open_files(&[u32::MAX]),
            OpenFiles::default(),
            "no such process"
        );
    }
}
