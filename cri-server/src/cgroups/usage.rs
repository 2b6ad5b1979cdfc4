//! Usage reading: one cgroup's CPU time, memory, swap and process count,
//! from the v1 controller hierarchies (v1 and hybrid hosts) or the unified
//! v2 tree. Moved from `stats/cgroup.rs`; stats turns it into CRI messages.
//!
//! The files are read directly rather than through libcgroups: its per-
//! controller readers are private, and its managers fail outright when an
//! optional file (memsw, kmem) is absent.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::Path;

use super::{CgroupError, CgroupLayout, CgroupVersion};

/// Memory limits above this many bytes are "unlimited": the kernel rounds
/// v1's unlimited value down to a page multiple, so it is not `i64::MAX` (as
/// containerd and cAdvisor decide).
const UNLIMITED_FROM: u64 = 1 << 62;

/// What one cgroup has used. A part is `None` when its controller or file is
/// absent (a cgroup already removed, swap accounting off).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CgroupUsage {
    /// CPU time of all tasks, in nanoseconds.
    pub cpu_nanos: Option<u64>,
    pub memory: Option<MemoryUsage>,
    pub swap: Option<SwapUsage>,
    /// Live processes (tasks) in the cgroup and below.
    pub processes: Option<u64>,
}

/// Memory, all in bytes except the fault counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUsage {
    pub usage: u64,
    /// Usage less inactive file cache: what the kernel cannot simply drop.
    pub working_set: u64,
    /// `None`: unlimited.
    pub limit: Option<u64>,
    pub rss: u64,
    /// Page faults since the cgroup was made (a count).
    pub page_faults: u64,
    pub major_page_faults: u64,
}

impl MemoryUsage {
    /// Limit less working set, in bytes; `None` when unlimited.
    pub fn available(&self) -> Option<u64> {
        self.limit.map(|l| l.saturating_sub(self.working_set))
    }
}

/// Swap, in bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SwapUsage {
    pub usage: u64,
    /// `None`: unlimited.
    pub limit: Option<u64>,
}

impl SwapUsage {
    /// Limit less usage, in bytes; `None` when unlimited.
    pub fn available(&self) -> Option<u64> {
        self.limit.map(|l| l.saturating_sub(self.usage))
    }
}

impl CgroupLayout {
    /// What `cgroup` (a path relative to each hierarchy's root, such as
    /// `/crius/<pod>/<container>`) has used. A cgroup that is gone (or a
    /// path climbing out with `..`) reads as all `None`, not an error.
    /// Errors: a file unreadable for another reason, or with content that is
    /// not what the kernel writes, named. Reads only.
    pub fn usage(&self, cgroup: &str) -> Result<CgroupUsage, CgroupError> {
        match self.version() {
            CgroupVersion::V2 => match self.controller_dir("memory", cgroup) {
                Some(dir) => v2_usage(&dir),
                None => Ok(CgroupUsage::default()),
            },
            CgroupVersion::V1 | CgroupVersion::Hybrid => {
                let mut usage = CgroupUsage::default();
                if let Some(dir) = self.controller_dir("cpuacct", cgroup) {
                    usage.cpu_nanos = read_u64(&dir.join("cpuacct.usage"))?;
                }
                if let Some(dir) = self.controller_dir("memory", cgroup) {
                    usage.memory = v1_memory(&dir)?;
                    usage.swap = v1_swap(&dir)?;
                }
                if let Some(dir) = self.controller_dir("pids", cgroup) {
                    usage.processes = read_u64(&dir.join("pids.current"))?;
                }
                Ok(usage)
            }
        }
    }
}

/// The cgroup figures cAdvisor reports beyond [`CgroupUsage`], for
/// ListPodSandboxMetrics. A figure is `None` when its file is absent (a
/// controller not mounted, a cgroup already removed, a v1-only counter on
/// v2). Times in nanoseconds, sizes in bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CgroupDetail {
    /// CPU time in user mode.
    pub cpu_user_nanos: Option<u64>,
    /// CPU time in kernel mode.
    pub cpu_system_nanos: Option<u64>,
    /// CFS bandwidth: elapsed periods, throttled periods, throttled time.
    pub throttling: Option<Throttling>,
    /// Page cache (v1 `total_cache`, v2 `file`).
    pub memory_cache: Option<u64>,
    /// Memory-mapped files (v1 `total_mapped_file`, v2 `file_mapped`).
    pub memory_mapped_file: Option<u64>,
    /// Kernel memory (v1 `memory.kmem.usage_in_bytes`, v2 `kernel`).
    pub memory_kernel: Option<u64>,
    /// Peak usage (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`).
    pub memory_max_usage: Option<u64>,
    /// Times usage hit the limit (v1 `memory.failcnt`, v2 `max` of
    /// `memory.events`).
    pub memory_failcnt: Option<u64>,
    /// OOM kills inside the cgroup (`oom_kill` of v1 `memory.oom_control`,
    /// v2 `memory.events`).
    pub oom_kills: Option<u64>,
    /// The CFS period in microseconds.
    pub cpu_period: Option<u64>,
    /// The CFS quota in microseconds; `None` also when unlimited.
    pub cpu_quota: Option<u64>,
    /// CPU shares; on v2 from `cpu.weight` by the OCI mapping's inverse
    /// (runc's ConvertCPUSharesToCgroupV2Value), as cAdvisor reports it.
    pub cpu_shares: Option<u64>,
    /// Memory plus swap limit (v1 `memory.memsw.limit_in_bytes`) or swap
    /// limit (v2 `memory.swap.max`); `Some(None)`: unlimited.
    pub swap_limit: Option<Option<u64>>,
    /// `pids.max`; `Some(None)`: unlimited.
    pub pids_max: Option<Option<u64>>,
    /// Threads (tasks) in the cgroup itself.
    pub threads: Option<u64>,
    /// The processes (thread group ids) in the cgroup itself.
    pub pids: Vec<u32>,
    /// Block I/O by device (v1 `blkio.throttle.io_service*_recursive`, v2
    /// `io.stat`); empty when none was done or blkio is not mounted.
    pub block_io: Vec<BlockIo>,
}

/// One block device's I/O by a cgroup and its children.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlockIo {
    pub major: u64,
    pub minor: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub reads: u64,
    pub writes: u64,
}

/// CFS bandwidth counters (`cpu.stat`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Throttling {
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_nanos: u64,
}

/// `cpuacct.stat` counts USER_HZ ticks, 100 a second on Linux.
const NANOS_PER_TICK: u64 = 10_000_000;

impl CgroupLayout {
    /// cAdvisor's further figures of `cgroup` (as in [`Self::usage`]); a
    /// cgroup that is gone reads as all `None`. Errors: as `usage`. Reads
    /// only.
    pub fn detail(&self, cgroup: &str) -> Result<CgroupDetail, CgroupError> {
        match self.version() {
            CgroupVersion::V2 => match self.controller_dir("memory", cgroup) {
                Some(dir) => v2_detail(&dir),
                None => Ok(CgroupDetail::default()),
            },
            CgroupVersion::V1 | CgroupVersion::Hybrid => {
                let mut detail = CgroupDetail::default();
                if let Some(dir) = self.controller_dir("cpuacct", cgroup) {
                    if let Some(stat) = read_keyed(&dir.join("cpuacct.stat"))? {
                        let ticks = |k: &str| stat.get(k).map(|t| t.saturating_mul(NANOS_PER_TICK));
                        detail.cpu_user_nanos = ticks("user");
                        detail.cpu_system_nanos = ticks("system");
                    }
                }
                if let Some(dir) = self.controller_dir("cpu", cgroup) {
                    detail.throttling = read_keyed(&dir.join("cpu.stat"))?.map(|s| {
                        let key = |k: &str| s.get(k).copied().unwrap_or(0);
                        Throttling {
                            periods: key("nr_periods"),
                            throttled_periods: key("nr_throttled"),
                            throttled_nanos: key("throttled_time"),
                        }
                    });
                    detail.cpu_period = read_u64(&dir.join("cpu.cfs_period_us"))?;
                    detail.cpu_quota = read_quota(&dir.join("cpu.cfs_quota_us"))?;
                    detail.cpu_shares = read_u64(&dir.join("cpu.shares"))?;
                }
                if let Some(dir) = self.controller_dir("memory", cgroup) {
                    if let Some(stat) = read_keyed(&dir.join("memory.stat"))? {
                        detail.memory_cache = stat.get("total_cache").copied();
                        detail.memory_mapped_file = stat.get("total_mapped_file").copied();
                    }
                    detail.memory_kernel = read_u64(&dir.join("memory.kmem.usage_in_bytes"))?;
                    detail.memory_max_usage = read_u64(&dir.join("memory.max_usage_in_bytes"))?;
                    detail.memory_failcnt = read_u64(&dir.join("memory.failcnt"))?;
                    detail.oom_kills = read_keyed_lenient(&dir.join("memory.oom_control"))?
                        .map(|s| s.get("oom_kill").copied().unwrap_or(0));
                    detail.swap_limit = read_limit(&dir.join("memory.memsw.limit_in_bytes"))?;
                }
                if let Some(dir) = self.controller_dir("blkio", cgroup) {
                    detail.block_io = v1_block_io(&dir)?;
                }
                if let Some(dir) = self.controller_dir("pids", cgroup) {
                    detail.pids_max = read_limit(&dir.join("pids.max"))?;
                    detail.threads = read_ids(&dir.join("tasks"))?.map(|t| t.len() as u64);
                    detail.pids = read_ids(&dir.join("cgroup.procs"))?.unwrap_or_default();
                }
                Ok(detail)
            }
        }
    }
}

fn v2_detail(dir: &Path) -> Result<CgroupDetail, CgroupError> {
    let mut detail = CgroupDetail::default();
    if let Some(stat) = read_keyed(&dir.join("cpu.stat"))? {
        let usec = |k: &str| stat.get(k).map(|u| u.saturating_mul(1000));
        detail.cpu_user_nanos = usec("user_usec");
        detail.cpu_system_nanos = usec("system_usec");
        // The bandwidth keys appear with the cpu controller only.
        if let Some(&periods) = stat.get("nr_periods") {
            detail.throttling = Some(Throttling {
                periods,
                throttled_periods: stat.get("nr_throttled").copied().unwrap_or(0),
                throttled_nanos: usec("throttled_usec").unwrap_or(0),
            });
        }
    }
    if let Some(text) = read_text(&dir.join("cpu.max"))? {
        let path = dir.join("cpu.max");
        let (quota, period) = text
            .split_once(' ')
            .ok_or_else(|| parse_error(&path, &text))?;
        detail.cpu_period = Some(period.parse().map_err(|_| parse_error(&path, &text))?);
        detail.cpu_quota = match quota {
            "max" => None,
            q => Some(q.parse().map_err(|_| parse_error(&path, &text))?),
        };
    }
    detail.cpu_shares = read_u64(&dir.join("cpu.weight"))?.map(weight_to_shares);
    if let Some(stat) = read_keyed(&dir.join("memory.stat"))? {
        detail.memory_cache = stat.get("file").copied();
        detail.memory_mapped_file = stat.get("file_mapped").copied();
        detail.memory_kernel = stat.get("kernel").copied();
    }
    detail.memory_max_usage = read_u64(&dir.join("memory.peak"))?;
    if let Some(events) = read_keyed(&dir.join("memory.events"))? {
        detail.memory_failcnt = events.get("max").copied();
        detail.oom_kills = events.get("oom_kill").copied();
    }
    detail.swap_limit = read_limit(&dir.join("memory.swap.max"))?;
    detail.pids_max = read_limit(&dir.join("pids.max"))?;
    detail.threads = read_ids(&dir.join("cgroup.threads"))?.map(|t| t.len() as u64);
    detail.pids = read_ids(&dir.join("cgroup.procs"))?.unwrap_or_default();
    detail.block_io = v2_block_io(&dir.join("io.stat"))?;
    Ok(detail)
}

/// The device a `major:minor` names, as a map key.
fn device(path: &Path, text: &str, dev: &str) -> Result<(u64, u64), CgroupError> {
    let (major, minor) = dev.split_once(':').ok_or_else(|| parse_error(path, text))?;
    Ok((
        major.parse().map_err(|_| parse_error(path, text))?,
        minor.parse().map_err(|_| parse_error(path, text))?,
    ))
}

/// v1's `<major>:<minor> <Read|Write|Sync|Async|Discard|Total> <n>` files
/// (and a last `Total <n>` line), bytes and operations.
fn v1_block_io(dir: &Path) -> Result<Vec<BlockIo>, CgroupError> {
    let mut devices: std::collections::BTreeMap<(u64, u64), BlockIo> = Default::default();
    for (file, bytes) in [
        ("blkio.throttle.io_service_bytes_recursive", true),
        ("blkio.throttle.io_serviced_recursive", false),
    ] {
        let path = dir.join(file);
        let Some(text) = read_text(&path)? else {
            continue;
        };
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [dev, op, n] = fields[..] else {
                continue; // the closing "Total <n>"
            };
            let (major, minor) = device(&path, line, dev)?;
            let n: u64 = n.parse().map_err(|_| parse_error(&path, line))?;
            let entry = devices.entry((major, minor)).or_insert(BlockIo {
                major,
                minor,
                ..BlockIo::default()
            });
            match (op, bytes) {
                ("Read", true) => entry.read_bytes = n,
                ("Write", true) => entry.write_bytes = n,
                ("Read", false) => entry.reads = n,
                ("Write", false) => entry.writes = n,
                _ => {}
            }
        }
    }
    Ok(devices.into_values().collect())
}

/// v2's io.stat: `<major>:<minor> rbytes=.. wbytes=.. rios=.. wios=.. ...`.
fn v2_block_io(path: &Path) -> Result<Vec<BlockIo>, CgroupError> {
    let Some(text) = read_text(path)? else {
        return Ok(Vec::new());
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let mut fields = line.split_whitespace();
            let dev = fields.next().unwrap_or_default();
            let (major, minor) = device(path, line, dev)?;
            let mut io = BlockIo {
                major,
                minor,
                ..BlockIo::default()
            };
            for field in fields {
                let (key, n) = field
                    .split_once('=')
                    .ok_or_else(|| parse_error(path, line))?;
                let n: u64 = n.parse().map_err(|_| parse_error(path, line))?;
                match key {
                    "rbytes" => io.read_bytes = n,
                    "wbytes" => io.write_bytes = n,
                    "rios" => io.reads = n,
                    "wios" => io.writes = n,
                    _ => {}
                }
            }
            Ok(io)
        })
        .collect()
}

/// v2's cpu.weight (1..=10000) back to v1 shares (2..=262144): the inverse
/// of the OCI runtimes' `weight = 1 + ((shares - 2) * 9999) / 262142`.
fn weight_to_shares(weight: u64) -> u64 {
    2 + (weight.saturating_sub(1) * 262142) / 9999
}

/// v1's cpu.cfs_quota_us: `None` for -1 (no quota).
fn read_quota(path: &Path) -> Result<Option<u64>, CgroupError> {
    let Some(text) = read_text(path)? else {
        return Ok(None);
    };
    let quota: i64 = text.parse().map_err(|_| parse_error(path, &text))?;
    Ok(u64::try_from(quota).ok())
}

/// A list of ids a line (tasks, cgroup.procs, cgroup.threads).
fn read_ids(path: &Path) -> Result<Option<Vec<u32>>, CgroupError> {
    let Some(text) = read_text(path)? else {
        return Ok(None);
    };
    text.lines()
        .map(|line| line.trim().parse().map_err(|_| parse_error(path, line)))
        .collect::<Result<_, _>>()
        .map(Some)
}

/// A keyed file whose lines are not all numbers (v1's memory.oom_control
/// holds `oom_kill_disable 0`, `under_oom 0`, `oom_kill 3`); only numeric
/// values are kept.
fn read_keyed_lenient(path: &Path) -> Result<Option<HashMap<String, u64>>, CgroupError> {
    Ok(read_text(path)?.map(|text| {
        text.lines()
            .filter_map(|line| {
                let (key, value) = line.split_once(' ')?;
                Some((key.to_string(), value.trim().parse().ok()?))
            })
            .collect()
    }))
}

fn v1_memory(dir: &Path) -> Result<Option<MemoryUsage>, CgroupError> {
    let Some(usage) = read_u64(&dir.join("memory.usage_in_bytes"))? else {
        return Ok(None);
    };
    let Some(stat) = read_keyed(&dir.join("memory.stat"))? else {
        return Ok(None);
    };
    let limit = read_limit(&dir.join("memory.limit_in_bytes"))?.flatten();
    let key = |k: &str| stat.get(k).copied().unwrap_or(0);
    Ok(Some(MemoryUsage {
        usage,
        working_set: usage.saturating_sub(key("total_inactive_file")),
        limit,
        rss: key("total_rss"),
        page_faults: key("total_pgfault"),
        major_page_faults: key("total_pgmajfault"),
    }))
}

/// v1 counts memory and swap together (memsw); swap is the difference.
fn v1_swap(dir: &Path) -> Result<Option<SwapUsage>, CgroupError> {
    let (Some(both), Some(memory)) = (
        read_u64(&dir.join("memory.memsw.usage_in_bytes"))?,
        read_u64(&dir.join("memory.usage_in_bytes"))?,
    ) else {
        return Ok(None);
    };
    let both_limit = read_limit(&dir.join("memory.memsw.limit_in_bytes"))?.flatten();
    let memory_limit = read_limit(&dir.join("memory.limit_in_bytes"))?.flatten();
    Ok(Some(SwapUsage {
        usage: both.saturating_sub(memory),
        limit: both_limit
            .zip(memory_limit)
            .map(|(both, memory)| both.saturating_sub(memory)),
    }))
}

fn v2_usage(dir: &Path) -> Result<CgroupUsage, CgroupError> {
    let cpu_nanos = read_keyed(&dir.join("cpu.stat"))?
        .and_then(|s| s.get("usage_usec").copied())
        .map(|usec| usec.saturating_mul(1000));
    Ok(CgroupUsage {
        cpu_nanos,
        memory: v2_memory(dir)?,
        swap: v2_swap(dir)?,
        processes: read_u64(&dir.join("pids.current"))?,
    })
}

fn v2_memory(dir: &Path) -> Result<Option<MemoryUsage>, CgroupError> {
    let Some(usage) = read_u64(&dir.join("memory.current"))? else {
        return Ok(None);
    };
    let Some(stat) = read_keyed(&dir.join("memory.stat"))? else {
        return Ok(None);
    };
    let limit = read_limit(&dir.join("memory.max"))?.flatten();
    let key = |k: &str| stat.get(k).copied().unwrap_or(0);
    Ok(Some(MemoryUsage {
        usage,
        working_set: usage.saturating_sub(key("inactive_file")),
        limit,
        rss: key("anon"),
        page_faults: key("pgfault"),
        major_page_faults: key("pgmajfault"),
    }))
}

fn v2_swap(dir: &Path) -> Result<Option<SwapUsage>, CgroupError> {
    let Some(usage) = read_u64(&dir.join("memory.swap.current"))? else {
        return Ok(None);
    };
    Ok(Some(SwapUsage {
        usage,
        limit: read_limit(&dir.join("memory.swap.max"))?.flatten(),
    }))
}

/// The file's trimmed text; `None` when it (or its cgroup) is gone.
fn read_text(path: &Path) -> Result<Option<String>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_string())),
        // ENODEV: the cgroup was removed between open and read.
        Err(e) if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV) => {
            Ok(None)
        }
        Err(source) => Err(CgroupError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn parse_error(path: &Path, content: &str) -> CgroupError {
    CgroupError::Parse {
        path: path.to_path_buf(),
        content: content.to_string(),
    }
}

fn read_u64(path: &Path) -> Result<Option<u64>, CgroupError> {
    read_text(path)?
        .map(|t| t.parse().map_err(|_| parse_error(path, &t)))
        .transpose()
}

/// A limit file: `Some(None)` for unlimited (v2's "max", or v1's huge value).
fn read_limit(path: &Path) -> Result<Option<Option<u64>>, CgroupError> {
    let Some(text) = read_text(path)? else {
        return Ok(None);
    };
    if text == "max" {
        return Ok(Some(None));
    }
    let limit: u64 = text.parse().map_err(|_| parse_error(path, &text))?;
    Ok(Some((limit <= UNLIMITED_FROM).then_some(limit)))
}

/// A flat keyed file such as memory.stat or cpu.stat: `key value` lines.
fn read_keyed(path: &Path) -> Result<Option<HashMap<String, u64>>, CgroupError> {
    let Some(text) = read_text(path)? else {
        return Ok(None);
    };
    text.lines()
        .map(|line| {
            let (key, value) = line
                .split_once(' ')
                .ok_or_else(|| parse_error(path, line))?;
            let value = value.trim().parse().map_err(|_| parse_error(path, line))?;
            Ok((key.to_string(), value))
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::super::fixture::Host;
    use super::*;

    const V1_MEMORY_STAT: &str = "cache 4096\nrss 8192\ntotal_cache 409600\ntotal_rss 1048576\n\
        total_pgfault 300\ntotal_pgmajfault 2\ntotal_inactive_file 204800\n";

    /// `cgroup`'s v1 files: CPU in `cpu_hierarchy`, memory with swap, pids.
    fn v1_cgroup(host: &Host, cpu_hierarchy: &str, cgroup: &str) {
        host.write(
            &format!("sys/fs/cgroup/{cpu_hierarchy}/{cgroup}/cpuacct.usage"),
            "123456789\n",
        );
        host.write_all(
            &format!("sys/fs/cgroup/memory/{cgroup}"),
            &[
                ("memory.usage_in_bytes", "2097152\n"),
                ("memory.limit_in_bytes", "9223372036854771712\n"),
                ("memory.memsw.usage_in_bytes", "2101248\n"),
                ("memory.memsw.limit_in_bytes", "9223372036854771712\n"),
                ("memory.stat", V1_MEMORY_STAT),
            ],
        );
        host.write(&format!("sys/fs/cgroup/pids/{cgroup}/pids.current"), "3\n");
    }

    fn assert_v1_usage(usage: &CgroupUsage) {
        assert_eq!(usage.cpu_nanos, Some(123456789));
        assert_eq!(usage.processes, Some(3));
        let memory = usage.memory.unwrap();
        assert_eq!(memory.usage, 2097152);
        assert_eq!(memory.working_set, 2097152 - 204800);
        assert_eq!(memory.limit, None, "v1's page-rounded maximum is no limit");
        assert_eq!(memory.available(), None);
        assert_eq!(memory.rss, 1048576);
        assert_eq!(memory.page_faults, 300);
        assert_eq!(memory.major_page_faults, 2);
        let swap = usage.swap.unwrap();
        assert_eq!(swap.usage, 4096);
        assert_eq!(swap.limit, None);
    }

    #[test]
    fn reads_a_v1_cgroup() {
        let host = Host::v1();
        v1_cgroup(&host, "cpu,cpuacct", "crius/pod/ctr");
        assert_v1_usage(&host.layout().usage("/crius/pod/ctr").unwrap());
    }

    #[test]
    fn reads_a_hybrid_cgroup_from_the_v1_hierarchies() {
        let host = Host::hybrid();
        v1_cgroup(&host, "cpuacct", "crius/pod/ctr");
        // The unified mount holds nothing the stats read.
        host.mkdir("sys/fs/cgroup/unified/crius/pod/ctr");
        assert_v1_usage(&host.layout().usage("/crius/pod/ctr").unwrap());
    }

    #[test]
    fn v1_limits_and_no_swap_accounting() {
        let host = Host::v1();
        v1_cgroup(&host, "cpu,cpuacct", "c");
        host.write("sys/fs/cgroup/memory/c/memory.limit_in_bytes", "10485760\n");
        std::fs::remove_file(host.path("sys/fs/cgroup/memory/c/memory.memsw.usage_in_bytes"))
            .unwrap();
        let usage = host.layout().usage("c").unwrap();
        let memory = usage.memory.unwrap();
        assert_eq!(memory.limit, Some(10485760));
        assert_eq!(memory.available(), Some(10485760 - (2097152 - 204800)));
        assert_eq!(usage.swap, None);
    }

    #[test]
    fn a_removed_cgroup_has_no_usage() {
        for host in [Host::v1(), Host::hybrid(), Host::v2("cpu memory pids")] {
            let layout = host.layout();
            assert_eq!(layout.usage("/crius/gone").unwrap(), CgroupUsage::default());
            assert_eq!(layout.usage("/../../etc").unwrap(), CgroupUsage::default());
        }
    }

    #[test]
    fn reads_a_v2_cgroup() {
        let host = Host::v2("cpu memory pids");
        host.write_all(
            "sys/fs/cgroup/crius/pod/ctr",
            &[
                (
                    "cpu.stat",
                    "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_periods 0\n",
                ),
                ("memory.current", "3145728\n"),
                ("memory.max", "8388608\n"),
                (
                    "memory.stat",
                    "anon 1048576\nfile 2097152\ninactive_file 1048576\n\
                     active_file 1048576\npgfault 77\npgmajfault 1\n",
                ),
                ("memory.swap.current", "4096\n"),
                ("memory.swap.max", "max\n"),
                ("pids.current", "2\n"),
            ],
        );
        let usage = host.layout().usage("/crius/pod/ctr").unwrap();
        assert_eq!(usage.cpu_nanos, Some(2_500_000));
        assert_eq!(usage.processes, Some(2));
        let memory = usage.memory.unwrap();
        assert_eq!(memory.usage, 3145728);
        assert_eq!(memory.working_set, 2097152);
        assert_eq!(memory.limit, Some(8388608));
        assert_eq!(memory.available(), Some(8388608 - 2097152));
        assert_eq!(memory.rss, 1048576);
        assert_eq!(memory.page_faults, 77);
        assert_eq!(memory.major_page_faults, 1);
        assert_eq!(
            usage.swap,
            Some(SwapUsage {
                usage: 4096,
                limit: None
            })
        );
    }

    #[test]
    fn v2_unlimited_memory_and_no_swap() {
        let host = Host::v2("cpu memory");
        host.write_all(
            "sys/fs/cgroup/c",
            &[
                ("cpu.stat", "usage_usec 1\n"),
                ("memory.current", "100\n"),
                ("memory.max", "max\n"),
                ("memory.stat", "anon 50\n"),
            ],
        );
        let usage = host.layout().usage("c").unwrap();
        let memory = usage.memory.unwrap();
        assert_eq!(memory.limit, None);
        assert_eq!(memory.working_set, 100, "no inactive_file: all of it");
        assert_eq!(usage.swap, None);
        assert_eq!(usage.processes, None);
    }

    #[test]
    fn garbage_is_an_error_naming_the_file() {
        let host = Host::v2("cpu memory");
        host.write_all(
            "sys/fs/cgroup/c",
            &[("cpu.stat", "usage_usec lots\n"), ("memory.current", "1\n")],
        );
        let err = host.layout().usage("/c").unwrap_err();
        assert!(err.to_string().contains("cpu.stat"), "{err}");
    }

    #[test]
    fn reads_a_v1_cgroups_detail() {
        let host = Host::v1();
        host.write_all(
            "sys/fs/cgroup/cpu,cpuacct/c",
            &[
                ("cpuacct.stat", "user 250\nsystem 50\n"),
                (
                    "cpu.stat",
                    "nr_periods 40\nnr_throttled 3\nthrottled_time 1500000\n",
                ),
                ("cpu.cfs_period_us", "100000\n"),
                ("cpu.cfs_quota_us", "20000\n"),
                ("cpu.shares", "1024\n"),
            ],
        );
        host.write_all(
            "sys/fs/cgroup/memory/c",
            &[
                ("memory.stat", "total_cache 4096\ntotal_mapped_file 1024\n"),
                ("memory.kmem.usage_in_bytes", "65536\n"),
                ("memory.max_usage_in_bytes", "2097152\n"),
                ("memory.failcnt", "7\n"),
                (
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
                ),
                ("memory.memsw.limit_in_bytes", "67108864\n"),
            ],
        );
        host.write_all(
            "sys/fs/cgroup/blkio/c",
            &[
                (
                    "blkio.throttle.io_service_bytes_recursive",
                    "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Total 12288\nTotal 12288\n",
                ),
                (
                    "blkio.throttle.io_serviced_recursive",
                    "8:0 Read 1\n8:0 Write 2\n8:0 Total 3\nTotal 3\n",
                ),
            ],
        );
        host.write_all(
            "sys/fs/cgroup/pids/c",
            &[
                ("pids.max", "max\n"),
                ("tasks", "10\n11\n12\n"),
                ("cgroup.procs", "10\n12\n"),
            ],
        );
        let detail = host.layout().detail("/c").unwrap();
        assert_eq!(
            detail,
            CgroupDetail {
                cpu_user_nanos: Some(2_500_000_000),
                cpu_system_nanos: Some(500_000_000),
                throttling: Some(Throttling {
                    periods: 40,
                    throttled_periods: 3,
                    throttled_nanos: 1_500_000,
                }),
                memory_cache: Some(4096),
                memory_mapped_file: Some(1024),
                memory_kernel: Some(65536),
                memory_max_usage: Some(2097152),
                memory_failcnt: Some(7),
                oom_kills: Some(2),
                cpu_period: Some(100000),
                cpu_quota: Some(20000),
                cpu_shares: Some(1024),
                swap_limit: Some(Some(67108864)),
                pids_max: Some(None),
                threads: Some(3),
                pids: vec![10, 12],
                block_io: vec![BlockIo {
                    major: 8,
                    minor: 0,
                    read_bytes: 4096,
                    write_bytes: 8192,
                    reads: 1,
                    writes: 2,
                }],
            }
        );
        host.write("sys/fs/cgroup/cpu,cpuacct/c/cpu.cfs_quota_us", "-1\n");
        assert_eq!(
            host.layout().detail("/c").unwrap().cpu_quota,
            None,
            "no quota"
        );
    }

    #[test]
    fn reads_a_v2_cgroups_detail() {
        let host = Host::v2("cpu memory pids");
        host.write_all(
            "sys/fs/cgroup/c",
            &[
                (
                    "cpu.stat",
                    "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_periods 9\n\
                     nr_throttled 2\nthrottled_usec 300\n",
                ),
                ("cpu.max", "max 100000\n"),
                ("cpu.weight", "100\n"),
                (
                    "memory.stat",
                    "anon 1\nfile 8192\nfile_mapped 4096\nkernel 512\n",
                ),
                ("memory.peak", "1048576\n"),
                ("memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n"),
                ("memory.swap.max", "0\n"),
                ("pids.max", "64\n"),
                ("cgroup.threads", "5\n6\n"),
                ("cgroup.procs", "5\n"),
                (
                    "io.stat",
                    "259:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n",
                ),
            ],
        );
        let detail = host.layout().detail("/c").unwrap();
        assert_eq!(detail.cpu_user_nanos, Some(2_000_000));
        assert_eq!(detail.cpu_system_nanos, Some(500_000));
        assert_eq!(
            detail.throttling,
            Some(Throttling {
                periods: 9,
                throttled_periods: 2,
                throttled_nanos: 300_000
            })
        );
        assert_eq!((detail.cpu_period, detail.cpu_quota), (Some(100000), None));
        // weight 100 is what runc writes for shares 1024 (rounding down).
        assert_eq!(detail.cpu_shares, Some(2 + 99 * 262142 / 9999));
        assert_eq!(detail.memory_cache, Some(8192));
        assert_eq!(detail.memory_mapped_file, Some(4096));
        assert_eq!(detail.memory_kernel, Some(512));
        assert_eq!(detail.memory_max_usage, Some(1048576));
        assert_eq!(
            (detail.memory_failcnt, detail.oom_kills),
            (Some(4), Some(1))
        );
        assert_eq!(detail.swap_limit, Some(Some(0)));
        assert_eq!(detail.pids_max, Some(Some(64)));
        assert_eq!((detail.threads, detail.pids), (Some(2), vec![5]));
        assert_eq!(
            detail.block_io,
            [BlockIo {
                major: 259,
                minor: 0,
                read_bytes: 10,
                write_bytes: 20,
                reads: 1,
                writes: 2,
            }]
        );
    }

    #[test]
    fn a_removed_cgroup_has_no_detail() {
        for host in [Host::v1(), Host::hybrid(), Host::v2("cpu memory pids")] {
            assert_eq!(
                host.layout().detail("/crius/gone").unwrap(),
                CgroupDetail::default()
            );
        }
    }
}
