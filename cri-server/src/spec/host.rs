//! What this host can enforce, measured once at start-up, so that the spec
//! builder itself stays a pure function of its inputs.

use std::path::Path;

use super::SpecError;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCapabilities {
    /// /sys/fs/cgroup is one cgroup2 hierarchy (not v1, not hybrid).
    pub cgroup_v2: bool,
    /// The hierarchy the runtime manages has a hugetlb controller. On a hybrid
    /// host whose hugetlb lives only on the cgroup2 mount beside the v1
    /// hierarchies it has not: hugepage limits are then left out, as
    /// containerd's `tolerate_missing_hugetlb_controller` does.
    pub hugetlb: bool,
    /// Swap can be limited (v1 `memory.memsw.*`, v2 `memory.swap.max`).
    pub memory_swap: bool,
    /// The daemon's own oom_score_adj: no container gets a lower one, as the
    /// kernel may refuse it (containerd's `restrict_oom_score_adj`).
    pub min_oom_score_adj: i32,
    /// The kernel enforces AppArmor profiles.
    pub apparmor: bool,
    /// The daemon's own effective capabilities (bit n = capability n): what
    /// "all capabilities" means, since a runtime cannot grant more (here,
    /// CAP_SYS_RESOURCE is missing from the host's bounding set).
    pub own_capabilities: u64,
}

impl HostCapabilities {
    pub fn detect() -> Result<HostCapabilities, SpecError> {
        let root = Path::new(CGROUP_ROOT);
        let cgroup_v2 = nix::sys::statfs::statfs(root)
            .map_err(|e| SpecError::Io {
                path: root.to_path_buf(),
                source: e.into(),
            })?
            .filesystem_type()
            == nix::sys::statfs::CGROUP2_SUPER_MAGIC;
        let own_cgroup = if cgroup_v2 {
            unified_cgroup(&read_proc("/proc/self/cgroup")?)
        } else {
            String::new()
        };
        let (hugetlb, memory_swap) = cgroup_features(root, cgroup_v2, &own_cgroup);
        Ok(HostCapabilities {
            cgroup_v2,
            hugetlb,
            memory_swap,
            min_oom_score_adj: parse_proc_number("/proc/self/oom_score_adj")?,
            apparmor: std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
                .is_ok_and(|v| v.trim() == "Y"),
            own_capabilities: effective_capabilities(&read_proc("/proc/self/status")?)?,
        })
    }
}

/// (hugetlb, memory swap) as containerd probes them. `own_cgroup` is the
/// daemon's cgroup on a v2 host: `memory.swap.max` exists only below the root.
fn cgroup_features(root: &Path, cgroup_v2: bool, own_cgroup: &str) -> (bool, bool) {
    if cgroup_v2 {
        let controllers =
            std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        let hugetlb = controllers.split_whitespace().any(|c| c == "hugetlb");
        let own = root.join(own_cgroup.trim_start_matches('/'));
        (hugetlb, own.join("memory.swap.max").exists())
    } else {
        (
            root.join("hugetlb").is_dir(),
            root.join("memory/memory.memsw.limit_in_bytes").exists(),
        )
    }
}

/// The path of the `0::` line of /proc/self/cgroup.
fn unified_cgroup(proc_self_cgroup: &str) -> String {
    proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/")
        .to_string()
}

/// The `CapEff` mask of a /proc/<pid>/status text.
fn effective_capabilities(status: &str) -> Result<u64, SpecError> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or_else(|| SpecError::Io {
            path: "/proc/self/status".into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no CapEff line"),
        })
}

fn read_proc(path: &str) -> Result<String, SpecError> {
    std::fs::read_to_string(path).map_err(|source| SpecError::Io {
        path: path.into(),
        source,
    })
}

fn parse_proc_number<T: std::str::FromStr>(path: &str) -> Result<T, SpecError> {
    read_proc(path)?.trim().parse().map_err(|_| SpecError::Io {
        path: path.into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a number"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_host_with_hugetlb_only_on_cgroup2_has_no_hugetlb() {
        let root = tempfile::tempdir().unwrap();
        for d in ["memory", "cpu", "unified"] {
            std::fs::create_dir(root.path().join(d)).unwrap();
        }
        std::fs::write(root.path().join("unified/cgroup.controllers"), "hugetlb\n").unwrap();
        std::fs::write(root.path().join("memory/memory.memsw.limit_in_bytes"), "").unwrap();
        assert_eq!(cgroup_features(root.path(), false, ""), (false, true));
        std::fs::create_dir(root.path().join("hugetlb")).unwrap();
        assert_eq!(cgroup_features(root.path(), false, ""), (true, true));
    }

    #[test]
    fn unified_host_reads_its_controllers() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("cgroup.controllers"),
            "cpu memory hugetlb pids\n",
        )
        .unwrap();
        std::fs::create_dir_all(root.path().join("system.slice/crius.service")).unwrap();
        assert_eq!(
            cgroup_features(root.path(), true, "/system.slice/crius.service"),
            (true, false)
        );
        std::fs::write(
            root.path()
                .join("system.slice/crius.service/memory.swap.max"),
            "max",
        )
        .unwrap();
        assert_eq!(
            cgroup_features(root.path(), true, "/system.slice/crius.service"),
            (true, true)
        );
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        assert!(!cgroup_features(root.path(), true, "/").0);
    }

    #[test]
    fn effective_capabilities_from_status() {
        let status = "Name:\tx\nCapPrm:\t000001fffeffffff\nCapEff:\t000001fffeffffff\n";
        assert_eq!(effective_capabilities(status).unwrap(), 0x1fffeffffff);
        assert!(effective_capabilities("Name:\tx\n").is_err());
    }

    #[test]
    fn own_unified_cgroup() {
        assert_eq!(
            unified_cgroup("12:pids:/x\n0::/system.slice/a.service\n"),
            "/system.slice/a.service"
        );
        assert_eq!(unified_cgroup("1:cpu:/x\n"), "/");
    }

    #[test]
    fn detect_reads_this_host() {
        let host = HostCapabilities::detect().unwrap();
        // Every process that can run this test as root has CAP_SYS_ADMIN (21).
        if nix::unistd::geteuid().is_root() {
            assert_ne!(host.own_capabilities & (1 << 21), 0, "{host:?}");
        }
        assert!((-1000..=1000).contains(&host.min_oom_score_adj), "{host:?}");
    }
}
