//! CRI stats: what each container and pod uses (CPU, memory, swap,
//! processes from its cgroup; the writable layer's disk), as containerd
//! reports them.
//!
//! The cgroup driver says where a container's and a pod's cgroups are; the
//! `cgroups` module reads them. A pod's totals are its cgroup's. A cgroup already gone (an exited and
//! cleaned-up container) leaves CPU and memory out rather than failing.

mod rate;

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use crius_proto::cri;

use crate::cgroups::CgroupDriver;
use crate::cgroups::{CgroupError, CgroupLayout, CgroupUsage};
use crate::error::CriError;
use crate::image::snapshot::Snapshotter;
use crate::stamp::now_nanos;
use crate::state::container::ContainerRecord;
use crate::state::sandbox::{PodRecord, PodState};
use crate::state::table::Table;
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
            network: None,
            process: totals.process,
            containers,
            io: None,
        }),
        windows: None,
    })
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
}
