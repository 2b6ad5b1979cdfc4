//! One cgroup's CPU time, memory, swap and process count, read from the v1
//! controller hierarchies or from the unified v2 tree.
//!
//! The files are read directly rather than through libcgroups: its per-
//! controller readers are private, and its managers find v1 mounts through
//! /proc and fail outright when an optional file (memsw, kmem) is absent.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// Memory limits above this are "unlimited": the kernel rounds v1's
/// unlimited value down to a page multiple, so it is not `i64::MAX` (as
/// containerd and cAdvisor decide).
const UNLIMITED_FROM: u64 = 1 << 62;

#[derive(Debug, thiserror::Error)]
pub enum CgroupReadError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: unexpected content {content:?}")]
    Parse { path: PathBuf, content: String },
}

/// Where this host's cgroups are, and which version holds CPU and memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupFs {
    /// One hierarchy per controller under `root` (`root/memory/...`); a hybrid
    /// host's `root/unified` holds no CPU or memory controller.
    V1 { root: PathBuf },
    /// The unified tree at `root`.
    V2 { root: PathBuf },
}

/// What one cgroup has used. A part is `None` when its controller or file is
/// absent (a cgroup already removed, swap accounting off).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CgroupUsage {
    /// CPU time of all tasks, in nanoseconds.
    pub cpu_nanos: Option<u64>,
    pub memory: Option<MemoryUsage>,
    pub swap: Option<SwapUsage>,
    pub processes: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUsage {
    pub usage: u64,
    /// Usage less inactive file cache: what the kernel cannot simply drop.
    pub working_set: u64,
    /// `None`: unlimited.
    pub limit: Option<u64>,
    pub rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
}

impl MemoryUsage {
    /// Limit less working set; `None` when unlimited.
    pub fn available(&self) -> Option<u64> {
        self.limit.map(|l| l.saturating_sub(self.working_set))
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SwapUsage {
    pub usage: u64,
    /// `None`: unlimited.
    pub limit: Option<u64>,
}

impl SwapUsage {
    pub fn available(&self) -> Option<u64> {
        self.limit.map(|l| l.saturating_sub(self.usage))
    }
}

impl CgroupFs {
    /// This host's layout under /sys/fs/cgroup.
    pub fn detect() -> CgroupFs {
        CgroupFs::detect_at(Path::new("/sys/fs/cgroup"))
    }

    fn detect_at(root: &Path) -> CgroupFs {
        let root = root.to_path_buf();
        if root.join("cgroup.controllers").exists() {
            CgroupFs::V2 { root }
        } else {
            CgroupFs::V1 { root }
        }
    }

    /// Reads what `cgroup` (a path like `/crius/<pod>/<container>`) has used.
    pub fn usage(&self, cgroup: &str) -> Result<CgroupUsage, CgroupReadError> {
        let relative = cgroup.trim_start_matches('/');
        match self {
            CgroupFs::V1 { root } => v1_usage(root, relative),
            CgroupFs::V2 { root } => v2_usage(&root.join(relative)),
        }
    }
}

fn v1_usage(root: &Path, relative: &str) -> Result<CgroupUsage, CgroupReadError> {
    let hierarchy = |names: &[&str]| {
        names
            .iter()
            .map(|n| root.join(n))
            .find(|p| p.exists())
            .map(|p| p.join(relative))
    };
    let mut usage = CgroupUsage::default();
    if let Some(dir) = hierarchy(&["cpuacct", "cpu,cpuacct", "cpuacct,cpu"]) {
        usage.cpu_nanos = read_u64(&dir.join("cpuacct.usage"))?;
    }
    if let Some(dir) = hierarchy(&["memory"]) {
        usage.memory = v1_memory(&dir)?;
        usage.swap = v1_swap(&dir)?;
    }
    if let Some(dir) = hierarchy(&["pids"]) {
        usage.processes = read_u64(&dir.join("pids.current"))?;
    }
    Ok(usage)
}

fn v1_memory(dir: &Path) -> Result<Option<MemoryUsage>, CgroupReadError> {
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
fn v1_swap(dir: &Path) -> Result<Option<SwapUsage>, CgroupReadError> {
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

fn v2_usage(dir: &Path) -> Result<CgroupUsage, CgroupReadError> {
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

fn v2_memory(dir: &Path) -> Result<Option<MemoryUsage>, CgroupReadError> {
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

fn v2_swap(dir: &Path) -> Result<Option<SwapUsage>, CgroupReadError> {
    let Some(usage) = read_u64(&dir.join("memory.swap.current"))? else {
        return Ok(None);
    };
    Ok(Some(SwapUsage {
        usage,
        limit: read_limit(&dir.join("memory.swap.max"))?.flatten(),
    }))
}

/// The file's trimmed text; `None` when it (or its cgroup) is gone.
fn read_text(path: &Path) -> Result<Option<String>, CgroupReadError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_string())),
        // ENODEV: the cgroup was removed between open and read.
        Err(e) if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV) => {
            Ok(None)
        }
        Err(source) => Err(CgroupReadError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn parse_error(path: &Path, content: &str) -> CgroupReadError {
    CgroupReadError::Parse {
        path: path.to_path_buf(),
        content: content.to_string(),
    }
}

fn read_u64(path: &Path) -> Result<Option<u64>, CgroupReadError> {
    read_text(path)?
        .map(|t| t.parse().map_err(|_| parse_error(path, &t)))
        .transpose()
}

/// A limit file: `Some(None)` for unlimited (v2's "max", or v1's huge value).
fn read_limit(path: &Path) -> Result<Option<Option<u64>>, CgroupReadError> {
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
fn read_keyed(path: &Path) -> Result<Option<HashMap<String, u64>>, CgroupReadError> {
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
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        for (name, content) in files {
            std::fs::write(dir.join(name), content).unwrap();
        }
    }

    const V1_MEMORY_STAT: &str = "cache 4096\nrss 8192\ntotal_cache 409600\ntotal_rss 1048576\n\
        total_pgfault 300\ntotal_pgmajfault 2\ntotal_inactive_file 204800\n";

    /// A v1 host as this one: cpu,cpuacct with a cpuacct symlink, memory, pids.
    fn v1_tree(root: &Path, cgroup: &str) {
        std::fs::create_dir_all(root.join("cpu,cpuacct")).unwrap();
        std::os::unix::fs::symlink("cpu,cpuacct", root.join("cpuacct")).unwrap();
        write(
            &root.join("cpu,cpuacct").join(cgroup),
            &[("cpuacct.usage", "123456789\n")],
        );
        write(
            &root.join("memory").join(cgroup),
            &[
                ("memory.usage_in_bytes", "2097152\n"),
                ("memory.limit_in_bytes", "9223372036854771712\n"),
                ("memory.memsw.usage_in_bytes", "2101248\n"),
                ("memory.memsw.limit_in_bytes", "9223372036854771712\n"),
                ("memory.stat", V1_MEMORY_STAT),
            ],
        );
        write(&root.join("pids").join(cgroup), &[("pids.current", "3\n")]);
    }

    #[test]
    fn detects_the_version() {
        let root = tempfile::tempdir().unwrap();
        assert!(matches!(
            CgroupFs::detect_at(root.path()),
            CgroupFs::V1 { .. }
        ));
        write(root.path(), &[("cgroup.controllers", "cpu memory pids\n")]);
        assert!(matches!(
            CgroupFs::detect_at(root.path()),
            CgroupFs::V2 { .. }
        ));
    }

    #[test]
    fn reads_a_v1_cgroup() {
        let root = tempfile::tempdir().unwrap();
        v1_tree(root.path(), "crius/pod/ctr");
        let fs = CgroupFs::V1 {
            root: root.path().to_path_buf(),
        };
        let usage = fs.usage("/crius/pod/ctr").unwrap();
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
    fn v1_limits_and_no_swap_accounting() {
        let root = tempfile::tempdir().unwrap();
        v1_tree(root.path(), "c");
        let memory = root.path().join("memory/c");
        std::fs::write(memory.join("memory.limit_in_bytes"), "10485760\n").unwrap();
        std::fs::remove_file(memory.join("memory.memsw.usage_in_bytes")).unwrap();
        let fs = CgroupFs::V1 {
            root: root.path().to_path_buf(),
        };
        let usage = fs.usage("c").unwrap();
        let memory = usage.memory.unwrap();
        assert_eq!(memory.limit, Some(10485760));
        assert_eq!(memory.available(), Some(10485760 - (2097152 - 204800)));
        assert_eq!(usage.swap, None);
    }

    #[test]
    fn a_removed_cgroup_has_no_usage() {
        let root = tempfile::tempdir().unwrap();
        v1_tree(root.path(), "other");
        let v1 = CgroupFs::V1 {
            root: root.path().to_path_buf(),
        };
        assert_eq!(v1.usage("/crius/gone").unwrap(), CgroupUsage::default());
        let v2 = CgroupFs::V2 {
            root: root.path().to_path_buf(),
        };
        assert_eq!(v2.usage("/crius/gone").unwrap(), CgroupUsage::default());
    }

    #[test]
    fn reads_a_v2_cgroup() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), &[("cgroup.controllers", "cpu memory pids\n")]);
        write(
            &root.path().join("crius/pod/ctr"),
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
        let fs = CgroupFs::detect_at(root.path());
        let usage = fs.usage("/crius/pod/ctr").unwrap();
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
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("c");
        write(
            &dir,
            &[
                ("cpu.stat", "usage_usec 1\n"),
                ("memory.current", "100\n"),
                ("memory.max", "max\n"),
                ("memory.stat", "anon 50\n"),
            ],
        );
        let usage = v2_usage(&dir).unwrap();
        let memory = usage.memory.unwrap();
        assert_eq!(memory.limit, None);
        assert_eq!(memory.working_set, 100, "no inactive_file: all of it");
        assert_eq!(usage.swap, None);
        assert_eq!(usage.processes, None);
    }

    #[test]
    fn garbage_is_an_error_naming_the_file() {
        let root = tempfile::tempdir().unwrap();
        write(
            &root.path().join("c"),
            &[("cpu.stat", "usage_usec lots\n"), ("memory.current", "1\n")],
        );
        let err = v2_usage(&root.path().join("c")).unwrap_err();
        assert!(err.to_string().contains("cpu.stat"), "{err}");
    }
}
