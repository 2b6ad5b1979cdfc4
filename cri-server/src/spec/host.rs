//! What this host can enforce, measured once at start-up, so that the spec
//! builder itself stays a pure function of its inputs.

use super::SpecError;
use crate::cgroups::CgroupLimits;

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
    /// The kernel has mount_setattr(2) (Linux 5.12), with which the runtime
    /// makes a bind read-only down to every sub-mount (KEP-3857's recursive
    /// read-only mounts, OCI's `rro` option).
    pub mount_setattr: bool,
    /// The kernel mounts overlayfs over idmapped layers (Linux 5.19, with
    /// mount_setattr): what a pod's user namespace needs for its
    /// containers' rootfs (KEP-127).
    pub idmapped_layers: bool,
}

impl HostCapabilities {
    /// This host's facts: the cgroup ones as `cgroups` (from
    /// [`crate::cgroups::CgroupLayout::limits`]) says, the rest read from
    /// /proc/self and /sys/module. Errors: /proc/self/oom_score_adj or
    /// /proc/self/status unreadable or malformed. Reads only; idempotent.
    pub fn detect(cgroups: CgroupLimits) -> Result<HostCapabilities, SpecError> {
        Ok(HostCapabilities {
            cgroup_v2: cgroups.v2,
            hugetlb: cgroups.hugetlb,
            memory_swap: cgroups.memory_swap,
            min_oom_score_adj: parse_proc_number("/proc/self/oom_score_adj")?,
            apparmor: std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
                .is_ok_and(|v| v.trim() == "Y"),
            own_capabilities: effective_capabilities(&read_proc("/proc/self/status")?)?,
            mount_setattr: has_mount_setattr(),
            idmapped_layers: has_mount_setattr()
                && kernel_release().is_some_and(|version| version >= (5, 19)),
        })
    }
}

#[cfg(test)]
impl HostCapabilities {
    /// A host that enforces nothing optional (cgroup v1 without hugetlb or
    /// swap, no AppArmor, no mount_setattr): tests turn on what they need.
    pub(crate) fn bare() -> HostCapabilities {
        HostCapabilities {
            cgroup_v2: false,
            hugetlb: false,
            memory_swap: false,
            min_oom_score_adj: -1000,
            apparmor: false,
            own_capabilities: 0,
            mount_setattr: false,
            idmapped_layers: false,
        }
    }
}

/// Whether this kernel has mount_setattr(2): a call with flags the kernel
/// rejects before it looks at anything else (EINVAL) fails with ENOSYS only
/// where the call is missing (or a seccomp filter denies it as missing, as
/// container runtimes' default profiles do). Changes nothing.
fn has_mount_setattr() -> bool {
    // SAFETY: no memory is passed (null path and attributes, size 0), and
    // the invalid flags make the kernel return before using any argument.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1,
            std::ptr::null::<libc::c_char>(),
            u32::MAX,
            std::ptr::null::<libc::c_void>(),
            0usize,
        )
    };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS)
}

/// This kernel's (major, minor) version.
fn kernel_release() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
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
    fn effective_capabilities_from_status() {
        let status = "Name:\tx\nCapPrm:\t000001fffeffffff\nCapEff:\t000001fffeffffff\n";
        assert_eq!(effective_capabilities(status).unwrap(), 0x1fffeffffff);
        assert!(effective_capabilities("Name:\tx\n").is_err());
    }

    #[test]
    fn detect_reads_this_host() {
        let cgroups = crate::cgroups::CgroupLayout::detect().unwrap().limits();
        let host = HostCapabilities::detect(cgroups).unwrap();
        assert_eq!(host.hugetlb, cgroups.hugetlb);
        // Every process that can run this test as root has CAP_SYS_ADMIN (21).
        if nix::unistd::geteuid().is_root() {
            assert_ne!(host.own_capabilities & (1 << 21), 0, "{host:?}");
        }
        assert!((-1000..=1000).contains(&host.min_oom_score_adj), "{host:?}");
        // mount_setattr came with Linux 5.12.
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut version = release.trim().split(['.', '-']);
        let major: u32 = version.next().unwrap().parse().unwrap();
        let minor: u32 = version.next().unwrap().parse().unwrap();
        assert_eq!(host.mount_setattr, (major, minor) >= (5, 12), "{host:?}");
        assert_eq!(kernel_release(), Some((major, minor)));
        assert_eq!(host.idmapped_layers, (major, minor) >= (5, 19), "{host:?}");
    }
}
