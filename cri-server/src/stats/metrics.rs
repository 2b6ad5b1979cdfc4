//! CRI metrics (ListMetricDescriptors, ListPodSandboxMetrics): cAdvisor's
//! Prometheus names, help texts, kinds and labels, so that kubelet's
//! `/metrics/cadvisor` reads the same with PodAndContainerStatsFromCRI on.
//!
//! Names and help as cAdvisor's `metrics/prometheus.go` (and CRI-O's and
//! containerd's descriptor lists); the set is the one critest v1.37 checks
//! (`pkg/validate/pod.go`, `expectedMetricDescriptorNames`) less PSI and
//! hugetlb, which crius does not read yet, and ulimits and the memory
//! reservation, which it does not set. Block I/O is served when the kernel
//! accounts any (not for overlay on a virtual disk without per-device stats). Every metric carries kubelet's
//! cAdvisor labels (`container`, `id`, `image`, `name`, `namespace`, `pod`),
//! which kubelet passes through unchanged; a pod's own metrics (its network)
//! are those of the `POD` container, as cAdvisor names the sandbox.
//! CRI values are whole numbers (`UInt64Value`): seconds are truncated, as
//! CRI-O does.

use crius_proto::cri;

use super::network::InterfaceStats;
use crate::cgroups::{BlockIo, CgroupDetail, CgroupUsage};

/// The labels of every metric, in order (kubelet's cAdvisor labels).
pub const BASE_LABELS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

/// The `container` label of a pod's own metrics, as cAdvisor names a pod's
/// sandbox.
pub const POD_CONTAINER: &str = "POD";

/// One metric crius serves: its Prometheus name, help, the labels after
/// [`BASE_LABELS`], and its kind.
#[derive(Debug, Clone, Copy)]
pub struct Descriptor {
    pub name: &'static str,
    pub help: &'static str,
    pub extra_labels: &'static [&'static str],
    pub kind: cri::MetricType,
}

const fn counter(name: &'static str, help: &'static str) -> Descriptor {
    Descriptor {
        name,
        help,
        extra_labels: &[],
        kind: cri::MetricType::Counter,
    }
}

const fn gauge(name: &'static str, help: &'static str) -> Descriptor {
    Descriptor {
        name,
        help,
        extra_labels: &[],
        kind: cri::MetricType::Gauge,
    }
}

const fn with_labels(d: Descriptor, extra_labels: &'static [&'static str]) -> Descriptor {
    Descriptor { extra_labels, ..d }
}

const INTERFACE: &[&str] = &["interface"];
const DEVICE: &[&str] = &["device"];

/// Every metric crius serves.
pub const DESCRIPTORS: &[Descriptor] = &[
    gauge(
        "container_last_seen",
        "Last time a container was seen by the exporter",
    ),
    gauge(
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
    ),
    // CPU.
    counter(
        "container_cpu_user_seconds_total",
        "Cumulative user cpu time consumed in seconds.",
    ),
    counter(
        "container_cpu_system_seconds_total",
        "Cumulative system cpu time consumed in seconds.",
    ),
    with_labels(
        counter(
            "container_cpu_usage_seconds_total",
            "Cumulative cpu time consumed in seconds.",
        ),
        &["cpu"],
    ),
    counter(
        "container_cpu_cfs_periods_total",
        "Number of elapsed enforcement period intervals.",
    ),
    counter(
        "container_cpu_cfs_throttled_periods_total",
        "Number of throttled period intervals.",
    ),
    counter(
        "container_cpu_cfs_throttled_seconds_total",
        "Total time duration the container has been throttled.",
    ),
    // Memory.
    gauge(
        "container_memory_cache",
        "Number of bytes of page cache memory.",
    ),
    gauge("container_memory_rss", "Size of RSS in bytes."),
    gauge(
        "container_memory_kernel_usage",
        "Size of kernel memory allocated in bytes.",
    ),
    gauge(
        "container_memory_mapped_file",
        "Size of memory mapped files in bytes.",
    ),
    gauge("container_memory_swap", "Container swap usage in bytes."),
    counter(
        "container_memory_failcnt",
        "Number of memory usage hits limits",
    ),
    gauge(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
    ),
    gauge(
        "container_memory_max_usage_bytes",
        "Maximum memory usage recorded in bytes",
    ),
    gauge(
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
    ),
    with_labels(
        counter(
            "container_memory_failures_total",
            "Cumulative count of memory allocation failures.",
        ),
        &["failure_type", "scope"],
    ),
    counter(
        "container_oom_events_total",
        "Count of out of memory events observed for the container",
    ),
    // Processes.
    gauge(
        "container_processes",
        "Number of processes running inside the container.",
    ),
    gauge(
        "container_threads",
        "Number of threads running inside the container",
    ),
    gauge(
        "container_threads_max",
        "Maximum number of threads allowed inside the container, infinity if value is zero",
    ),
    gauge(
        "container_file_descriptors",
        "Number of open file descriptors for the container.",
    ),
    gauge(
        "container_sockets",
        "Number of open sockets for the container.",
    ),
    // Spec.
    gauge("container_spec_cpu_period", "CPU period of the container."),
    gauge("container_spec_cpu_quota", "CPU quota of the container."),
    gauge("container_spec_cpu_shares", "CPU share of the container."),
    gauge(
        "container_spec_memory_limit_bytes",
        "Memory limit for the container.",
    ),
    gauge(
        "container_spec_memory_swap_limit_bytes",
        "Memory swap limit for the container.",
    ),
    // The writable layer's filesystem.
    gauge(
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem.",
    ),
    gauge(
        "container_fs_limit_bytes",
        "Number of bytes that can be consumed by the container on this filesystem.",
    ),
    gauge("container_fs_inodes_free", "Number of available Inodes"),
    gauge("container_fs_inodes_total", "Number of Inodes"),
    // Block I/O, by device.
    with_labels(
        counter(
            "container_fs_reads_bytes_total",
            "Cumulative count of bytes read",
        ),
        DEVICE,
    ),
    with_labels(
        counter(
            "container_fs_reads_total",
            "Cumulative count of reads completed",
        ),
        DEVICE,
    ),
    with_labels(
        counter(
            "container_fs_writes_bytes_total",
            "Cumulative count of bytes written",
        ),
        DEVICE,
    ),
    with_labels(
        counter(
            "container_fs_writes_total",
            "Cumulative count of writes completed",
        ),
        DEVICE,
    ),
    with_labels(
        counter(
            "container_blkio_device_usage_total",
            "Blkio device bytes usage",
        ),
        &["device", "major", "minor", "operation"],
    ),
    // Network, of the pod.
    with_labels(
        counter(
            "container_network_receive_bytes_total",
            "Cumulative count of bytes received",
        ),
        INTERFACE,
    ),
    with_labels(
        counter(
            "container_network_receive_packets_total",
            "Cumulative count of packets received",
        ),
        INTERFACE,
    ),
    with_labels(
        counter(
            "container_network_receive_packets_dropped_total",
            "Cumulative count of packets dropped while receiving",
        ),
        INTERFACE,
    ),
    with_labels(
        counter(
            "container_network_receive_errors_total",
            "Cumulative count of errors encountered while receiving",
        ),
        INTERFACE,
    ),
    with_labels(
        counter(
            "container_network_transmit_bytes_total",
            "Cumulative count of bytes transmitted",
        ),
        INTERFACE,
    ),
    with_labels(
        counter(
            "container_network_transmit_packets_total",
            "Cumulative count of packets transmitted",
        ),
        INTERFACE,
    ),
    with_labels(
        counter(
            "container_network_transmit_packets_dropped_total",
            "Cumulative count of packets dropped while transmitting",
        ),
        INTERFACE,
    ),
    with_labels(
        counter(
            "container_network_transmit_errors_total",
            "Cumulative count of errors encountered while transmitting",
        ),
        INTERFACE,
    ),
];

/// ListMetricDescriptors' answer: [`DESCRIPTORS`] with their full label
/// keys.
pub fn descriptors() -> Vec<cri::MetricDescriptor> {
    DESCRIPTORS
        .iter()
        .map(|d| cri::MetricDescriptor {
            name: d.name.to_string(),
            help: d.help.to_string(),
            label_keys: BASE_LABELS
                .iter()
                .chain(d.extra_labels)
                .map(|k| k.to_string())
                .collect(),
        })
        .collect()
}

/// The values of [`BASE_LABELS`] for one container (or a pod's `POD`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    /// The container's CRI name; [`POD_CONTAINER`] for the pod's own.
    pub container: String,
    /// The cgroup, as cAdvisor's `id`.
    pub id: String,
    /// The image the container was created from; empty for a pod (crius
    /// runs no pause image).
    pub image: String,
    /// The container's (or pod's) id, as cAdvisor's runtime name.
    pub name: String,
    pub namespace: String,
    pub pod: String,
}

impl Labels {
    fn values(&self) -> [&str; 6] {
        [
            &self.container,
            &self.id,
            &self.image,
            &self.name,
            &self.namespace,
            &self.pod,
        ]
    }
}

/// The filesystem of a container's writable layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsSample {
    /// Bytes the writable layer uses.
    pub usage_bytes: u64,
    /// The filesystem's size, in bytes.
    pub limit_bytes: u64,
    pub inodes_total: u64,
    pub inodes_free: u64,
}

/// What a container's processes hold open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenFiles {
    pub file_descriptors: u64,
    pub sockets: u64,
}

/// Everything read of one container at one time.
#[derive(Debug, Clone, Default)]
pub struct ContainerSample {
    pub usage: CgroupUsage,
    pub detail: CgroupDetail,
    pub open_files: Option<OpenFiles>,
    pub fs: Option<FsSample>,
    /// When it started, in unix nanoseconds; 0: not started.
    pub started_at: i64,
    /// Block I/O by device, each with its name (`/dev/sda`).
    pub block_io: Vec<(String, BlockIo)>,
}

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Collects metrics with one set of base labels and one timestamp.
struct Metrics<'a> {
    labels: &'a Labels,
    timestamp: i64,
    out: Vec<cri::Metric>,
}

impl Metrics<'_> {
    /// Adds `name` with `extra` label values when there is a value.
    fn add(&mut self, name: &'static str, extra: &[&str], value: Option<u64>) {
        let Some(value) = value else { return };
        let kind = DESCRIPTORS
            .iter()
            .find(|d| d.name == name)
            .map_or(cri::MetricType::Gauge, |d| d.kind);
        self.out.push(cri::Metric {
            name: name.to_string(),
            timestamp: self.timestamp,
            metric_type: kind as i32,
            label_values: self
                .labels
                .values()
                .into_iter()
                .chain(extra.iter().copied())
                .map(str::to_string)
                .collect(),
            value: Some(cri::UInt64Value { value }),
        });
    }
}

/// A container's metrics at `timestamp` (unix nanoseconds): those whose
/// figure was read; a cgroup already gone leaves only the last-seen time
/// and what does not come from it.
pub fn container_metrics(
    labels: &Labels,
    sample: &ContainerSample,
    timestamp: i64,
) -> Vec<cri::Metric> {
    let mut m = Metrics {
        labels,
        timestamp,
        out: Vec::new(),
    };
    let seconds = |nanos: Option<u64>| nanos.map(|n| n / NANOS_PER_SECOND);
    let (usage, detail) = (&sample.usage, &sample.detail);
    m.add(
        "container_last_seen",
        &[],
        Some(u64::try_from(timestamp).unwrap_or(0) / NANOS_PER_SECOND),
    );
    m.add(
        "container_start_time_seconds",
        &[],
        u64::try_from(sample.started_at)
            .ok()
            .filter(|&t| t > 0)
            .map(|t| t / NANOS_PER_SECOND),
    );
    m.add(
        "container_cpu_user_seconds_total",
        &[],
        seconds(detail.cpu_user_nanos),
    );
    m.add(
        "container_cpu_system_seconds_total",
        &[],
        seconds(detail.cpu_system_nanos),
    );
    m.add(
        "container_cpu_usage_seconds_total",
        &["total"],
        seconds(usage.cpu_nanos),
    );
    if let Some(t) = detail.throttling {
        m.add("container_cpu_cfs_periods_total", &[], Some(t.periods));
        m.add(
            "container_cpu_cfs_throttled_periods_total",
            &[],
            Some(t.throttled_periods),
        );
        m.add(
            "container_cpu_cfs_throttled_seconds_total",
            &[],
            seconds(Some(t.throttled_nanos)),
        );
    }
    if let Some(memory) = usage.memory {
        m.add("container_memory_usage_bytes", &[], Some(memory.usage));
        m.add(
            "container_memory_working_set_bytes",
            &[],
            Some(memory.working_set),
        );
        m.add("container_memory_rss", &[], Some(memory.rss));
        // The cgroup's own and its children's faults together (v1's
        // total_ counters, v2's recursive stat).
        m.add(
            "container_memory_failures_total",
            &["pgfault", "hierarchy"],
            Some(memory.page_faults),
        );
        m.add(
            "container_memory_failures_total",
            &["pgmajfault", "hierarchy"],
            Some(memory.major_page_faults),
        );
        // cAdvisor reports an unlimited limit as 0.
        m.add(
            "container_spec_memory_limit_bytes",
            &[],
            Some(memory.limit.unwrap_or(0)),
        );
    }
    m.add(
        "container_memory_swap",
        &[],
        usage.swap.map(|swap| swap.usage),
    );
    m.add("container_memory_cache", &[], detail.memory_cache);
    m.add(
        "container_memory_mapped_file",
        &[],
        detail.memory_mapped_file,
    );
    m.add("container_memory_kernel_usage", &[], detail.memory_kernel);
    m.add(
        "container_memory_max_usage_bytes",
        &[],
        detail.memory_max_usage,
    );
    m.add("container_memory_failcnt", &[], detail.memory_failcnt);
    m.add("container_oom_events_total", &[], detail.oom_kills);
    m.add("container_processes", &[], usage.processes);
    m.add("container_threads", &[], detail.threads);
    // Zero is "no limit" here, as cAdvisor.
    m.add(
        "container_threads_max",
        &[],
        detail.pids_max.map(|max| max.unwrap_or(0)),
    );
    if let Some(open) = sample.open_files {
        m.add(
            "container_file_descriptors",
            &[],
            Some(open.file_descriptors),
        );
        m.add("container_sockets", &[], Some(open.sockets));
    }
    m.add("container_spec_cpu_period", &[], detail.cpu_period);
    m.add("container_spec_cpu_quota", &[], detail.cpu_quota);
    m.add("container_spec_cpu_shares", &[], detail.cpu_shares);
    m.add(
        "container_spec_memory_swap_limit_bytes",
        &[],
        detail.swap_limit.map(|limit| limit.unwrap_or(0)),
    );
    for (device, io) in &sample.block_io {
        let dev = [device.as_str()];
        m.add("container_fs_reads_bytes_total", &dev, Some(io.read_bytes));
        m.add("container_fs_reads_total", &dev, Some(io.reads));
        m.add(
            "container_fs_writes_bytes_total",
            &dev,
            Some(io.write_bytes),
        );
        m.add("container_fs_writes_total", &dev, Some(io.writes));
        let (major, minor) = (io.major.to_string(), io.minor.to_string());
        for (operation, bytes) in [("Read", io.read_bytes), ("Write", io.write_bytes)] {
            m.add(
                "container_blkio_device_usage_total",
                &[device, &major, &minor, operation],
                Some(bytes),
            );
        }
    }
    if let Some(fs) = sample.fs {
        m.add("container_fs_usage_bytes", &[], Some(fs.usage_bytes));
        m.add("container_fs_limit_bytes", &[], Some(fs.limit_bytes));
        m.add("container_fs_inodes_total", &[], Some(fs.inodes_total));
        m.add("container_fs_inodes_free", &[], Some(fs.inodes_free));
    }
    m.out
}

/// A pod's own metrics at `timestamp`: its interfaces' counters, labelled
/// with `labels` (the pod's `POD`) and the interface.
pub fn pod_network_metrics(
    labels: &Labels,
    interfaces: &[InterfaceStats],
    timestamp: i64,
) -> Vec<cri::Metric> {
    let mut m = Metrics {
        labels,
        timestamp,
        out: Vec::new(),
    };
    for i in interfaces {
        let name = [i.name.as_str()];
        for (metric, value) in [
            ("container_network_receive_bytes_total", i.rx_bytes),
            ("container_network_receive_packets_total", i.rx_packets),
            ("container_network_receive_errors_total", i.rx_errors),
            (
                "container_network_receive_packets_dropped_total",
                i.rx_dropped,
            ),
            ("container_network_transmit_bytes_total", i.tx_bytes),
            ("container_network_transmit_packets_total", i.tx_packets),
            ("container_network_transmit_errors_total", i.tx_errors),
            (
                "container_network_transmit_packets_dropped_total",
                i.tx_dropped,
            ),
        ] {
            m.add(metric, &name, Some(value));
        }
    }
    m.out
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::cgroups::{MemoryUsage, SwapUsage, Throttling};

    /// critest v1.37's expectedMetricDescriptorNames less its
    /// unimplementedMetricDescriptors.
    const CRITEST_REQUIRED: &[&str] = &[
        "container_blkio_device_usage_total",
        "container_fs_reads_bytes_total",
        "container_fs_reads_total",
        "container_fs_writes_bytes_total",
        "container_fs_writes_total",
        "container_cpu_cfs_periods_total",
        "container_cpu_cfs_throttled_periods_total",
        "container_cpu_cfs_throttled_seconds_total",
        "container_cpu_system_seconds_total",
        "container_cpu_usage_seconds_total",
        "container_cpu_user_seconds_total",
        "container_file_descriptors",
        "container_fs_inodes_free",
        "container_fs_inodes_total",
        "container_fs_limit_bytes",
        "container_fs_usage_bytes",
        "container_last_seen",
        "container_memory_cache",
        "container_memory_failcnt",
        "container_memory_failures_total",
        "container_memory_kernel_usage",
        "container_memory_mapped_file",
        "container_memory_max_usage_bytes",
        "container_memory_rss",
        "container_memory_swap",
        "container_memory_usage_bytes",
        "container_memory_working_set_bytes",
        "container_network_receive_bytes_total",
        "container_network_receive_errors_total",
        "container_network_receive_packets_dropped_total",
        "container_network_receive_packets_total",
        "container_network_transmit_bytes_total",
        "container_network_transmit_errors_total",
        "container_network_transmit_packets_dropped_total",
        "container_network_transmit_packets_total",
        "container_oom_events_total",
        "container_processes",
        "container_sockets",
        "container_spec_cpu_period",
        "container_spec_cpu_shares",
        "container_spec_memory_limit_bytes",
        "container_spec_memory_swap_limit_bytes",
        "container_start_time_seconds",
        "container_threads",
        "container_threads_max",
    ];

    fn labels() -> Labels {
        Labels {
            container: "web".into(),
            id: "/crius/pod1/c1".into(),
            image: "busybox".into(),
            name: "c1".into(),
            namespace: "ns".into(),
            pod: "p".into(),
        }
    }

    /// A running container's figures, every part read.
    fn full_sample() -> ContainerSample {
        ContainerSample {
            usage: CgroupUsage {
                cpu_nanos: Some(3_700_000_000),
                memory: Some(MemoryUsage {
                    usage: 3000,
                    working_set: 2000,
                    limit: Some(64 << 20),
                    rss: 1500,
                    page_faults: 90,
                    major_page_faults: 1,
                }),
                swap: Some(SwapUsage {
                    usage: 0,
                    limit: None,
                }),
                processes: Some(2),
            },
            detail: CgroupDetail {
                cpu_user_nanos: Some(2_000_000_000),
                cpu_system_nanos: Some(1_500_000_000),
                throttling: Some(Throttling {
                    periods: 50,
                    throttled_periods: 4,
                    throttled_nanos: 2_100_000_000,
                }),
                memory_cache: Some(4096),
                memory_mapped_file: Some(1024),
                memory_kernel: Some(512),
                memory_max_usage: Some(5000),
                memory_failcnt: Some(0),
                oom_kills: Some(0),
                cpu_period: Some(100_000),
                cpu_quota: Some(20_000),
                cpu_shares: Some(1024),
                swap_limit: Some(Some(64 << 20)),
                pids_max: Some(None),
                threads: Some(3),
                pids: vec![10, 11],
                block_io: Vec::new(),
            },
            open_files: Some(OpenFiles {
                file_descriptors: 7,
                sockets: 1,
            }),
            fs: Some(FsSample {
                usage_bytes: 8192,
                limit_bytes: 1 << 30,
                inodes_total: 1000,
                inodes_free: 600,
            }),
            started_at: 1_700_000_000_500_000_000,
            block_io: vec![(
                "/dev/sda".into(),
                BlockIo {
                    major: 8,
                    minor: 0,
                    read_bytes: 4096,
                    write_bytes: 8192,
                    reads: 1,
                    writes: 2,
                },
            )],
        }
    }

    fn interface() -> InterfaceStats {
        InterfaceStats {
            name: "eth0".into(),
            rx_bytes: 1500,
            rx_packets: 12,
            rx_errors: 1,
            rx_dropped: 2,
            tx_bytes: 980,
            tx_packets: 9,
            tx_errors: 3,
            tx_dropped: 4,
        }
    }

    fn by_name(metrics: &[cri::Metric]) -> HashMap<&str, Vec<&cri::Metric>> {
        let mut map: HashMap<&str, Vec<&cri::Metric>> = HashMap::new();
        for m in metrics {
            map.entry(m.name.as_str()).or_default().push(m);
        }
        map
    }

    fn value_of(metrics: &[cri::Metric], name: &str) -> u64 {
        let found = by_name(metrics);
        let all = found.get(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(all.len(), 1, "{name}");
        all[0].value.as_ref().unwrap().value
    }

    #[test]
    fn descriptors_are_unique_with_help_and_the_base_labels() {
        let descs = descriptors();
        let names: HashSet<_> = descs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names.len(), descs.len(), "no name twice");
        for d in &descs {
            assert!(!d.help.is_empty(), "{}", d.name);
            assert_eq!(
                d.label_keys[..6],
                BASE_LABELS.map(String::from),
                "{}",
                d.name
            );
        }
        let cpu = descs
            .iter()
            .find(|d| d.name == "container_cpu_usage_seconds_total")
            .unwrap();
        assert_eq!(cpu.label_keys.last().unwrap(), "cpu");
    }

    #[test]
    fn every_metric_critest_requires_is_described_and_produced() {
        let names: HashSet<_> = DESCRIPTORS.iter().map(|d| d.name).collect();
        let mut produced = container_metrics(&labels(), &full_sample(), 1);
        produced.extend(pod_network_metrics(&labels(), &[interface()], 1));
        let produced = by_name(&produced);
        for name in CRITEST_REQUIRED {
            assert!(names.contains(name), "{name} has no descriptor");
            assert!(produced.contains_key(name), "{name} is not produced");
        }
        // And nothing is described that a full sample does not produce, so
        // critest's check of described against served labels holds.
        for d in DESCRIPTORS {
            if d.name != "container_spec_cpu_quota" {
                assert!(
                    produced.contains_key(d.name),
                    "{} is never produced",
                    d.name
                );
            }
        }
    }

    #[test]
    fn each_metric_has_its_descriptors_labels_and_kind() {
        let descs: HashMap<_, _> = DESCRIPTORS.iter().map(|d| (d.name, d)).collect();
        let mut produced = container_metrics(&labels(), &full_sample(), 42);
        produced.extend(pod_network_metrics(&labels(), &[interface()], 42));
        for m in &produced {
            let d = descs
                .get(m.name.as_str())
                .unwrap_or_else(|| panic!("{} has no descriptor", m.name));
            assert_eq!(m.label_values.len(), 6 + d.extra_labels.len(), "{}", m.name);
            assert_eq!(
                m.label_values[..6],
                ["web", "/crius/pod1/c1", "busybox", "c1", "ns", "p"]
            );
            assert_eq!(m.metric_type, d.kind as i32, "{}", m.name);
            assert_eq!(m.timestamp, 42, "{}", m.name);
            let counter = (m.name.ends_with("_total") && m.name != "container_fs_inodes_total")
                || m.name == "container_memory_failcnt";
            assert_eq!(counter, d.kind == cri::MetricType::Counter, "{}", m.name);
        }
    }

    #[test]
    fn usage_maps_to_cadvisors_units() {
        let now = 1_700_000_100_900_000_000;
        let m = container_metrics(&labels(), &full_sample(), now);
        assert_eq!(value_of(&m, "container_last_seen"), 1_700_000_100);
        assert_eq!(value_of(&m, "container_start_time_seconds"), 1_700_000_000);
        assert_eq!(value_of(&m, "container_cpu_usage_seconds_total"), 3);
        assert_eq!(value_of(&m, "container_cpu_user_seconds_total"), 2);
        assert_eq!(value_of(&m, "container_cpu_system_seconds_total"), 1);
        assert_eq!(value_of(&m, "container_cpu_cfs_periods_total"), 50);
        assert_eq!(value_of(&m, "container_cpu_cfs_throttled_periods_total"), 4);
        assert_eq!(value_of(&m, "container_cpu_cfs_throttled_seconds_total"), 2);
        assert_eq!(value_of(&m, "container_memory_usage_bytes"), 3000);
        assert_eq!(value_of(&m, "container_memory_working_set_bytes"), 2000);
        assert_eq!(value_of(&m, "container_memory_rss"), 1500);
        assert_eq!(value_of(&m, "container_memory_cache"), 4096);
        assert_eq!(value_of(&m, "container_spec_memory_limit_bytes"), 64 << 20);
        assert_eq!(
            value_of(&m, "container_spec_memory_swap_limit_bytes"),
            64 << 20
        );
        assert_eq!(value_of(&m, "container_spec_cpu_quota"), 20_000);
        assert_eq!(value_of(&m, "container_spec_cpu_shares"), 1024);
        assert_eq!(value_of(&m, "container_threads_max"), 0, "no pids limit");
        assert_eq!(value_of(&m, "container_threads"), 3);
        assert_eq!(value_of(&m, "container_processes"), 2);
        assert_eq!(value_of(&m, "container_file_descriptors"), 7);
        assert_eq!(value_of(&m, "container_sockets"), 1);
        assert_eq!(value_of(&m, "container_fs_usage_bytes"), 8192);
        assert_eq!(value_of(&m, "container_fs_inodes_free"), 600);
        assert_eq!(value_of(&m, "container_fs_reads_bytes_total"), 4096);
        assert_eq!(value_of(&m, "container_fs_writes_total"), 2);
        let blkio: Vec<_> = by_name(&m)["container_blkio_device_usage_total"]
            .iter()
            .map(|b| {
                (
                    b.label_values[6..].to_vec(),
                    b.value.as_ref().unwrap().value,
                )
            })
            .collect();
        assert_eq!(
            blkio,
            [
                (
                    vec![
                        "/dev/sda".to_string(),
                        "8".into(),
                        "0".into(),
                        "Read".into()
                    ],
                    4096
                ),
                (
                    vec![
                        "/dev/sda".to_string(),
                        "8".into(),
                        "0".into(),
                        "Write".into()
                    ],
                    8192
                ),
            ]
        );
        let cpu = by_name(&m)["container_cpu_usage_seconds_total"][0].clone();
        assert_eq!(cpu.label_values.last().unwrap(), "total");
        let faults = &by_name(&m)["container_memory_failures_total"];
        let kinds: Vec<_> = faults
            .iter()
            .map(|f| (f.label_values[6].as_str(), f.value.as_ref().unwrap().value))
            .collect();
        assert_eq!(kinds, [("pgfault", 90), ("pgmajfault", 1)]);
    }

    #[test]
    fn a_gone_cgroup_leaves_only_what_does_not_come_from_it() {
        let sample = ContainerSample {
            started_at: 0,
            ..ContainerSample::default()
        };
        let m = container_metrics(&labels(), &sample, 5_000_000_000);
        let names: Vec<_> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["container_last_seen"]);
        assert_eq!(value_of(&m, "container_last_seen"), 5);
    }

    #[test]
    fn network_counters_per_interface() {
        let mut pod = labels();
        pod.container = POD_CONTAINER.into();
        let mut eth1 = interface();
        eth1.name = "eth1".into();
        eth1.rx_bytes = 7;
        let m = pod_network_metrics(&pod, &[interface(), eth1], 9);
        assert_eq!(m.len(), 16);
        let rx = &by_name(&m)["container_network_receive_bytes_total"];
        let rx: Vec<_> = rx
            .iter()
            .map(|r| (r.label_values[6].as_str(), r.value.as_ref().unwrap().value))
            .collect();
        assert_eq!(rx, [("eth0", 1500), ("eth1", 7)]);
        assert!(m.iter().all(|m| m.label_values[0] == "POD"));
        let eth0 = |name| {
            by_name(&m)[name]
                .iter()
                .find(|r| r.label_values[6] == "eth0")
                .unwrap()
                .value
                .as_ref()
                .unwrap()
                .value
        };
        assert_eq!(eth0("container_network_receive_packets_total"), 12);
        assert_eq!(eth0("container_network_receive_errors_total"), 1);
        assert_eq!(eth0("container_network_receive_packets_dropped_total"), 2);
        assert_eq!(eth0("container_network_transmit_bytes_total"), 980);
        assert_eq!(eth0("container_network_transmit_packets_total"), 9);
        assert_eq!(eth0("container_network_transmit_errors_total"), 3);
        assert_eq!(eth0("container_network_transmit_packets_dropped_total"), 4);
    }
}
