//! Detection: which cgroup version this host runs and where each hierarchy is
//! mounted, read from `/proc/self/mountinfo` (never by mounting anything).
//!
//! The rule is libcgroups' `get_cgroup_setup`, which the runtime (and so the
//! shim) uses to place every container's cgroup, so the daemon reads and
//! removes exactly what the runtime made:
//! - `/sys/fs/cgroup` is a cgroup2 mount → [`CgroupVersion::V2`];
//! - otherwise there are v1 (`cgroup`) mounts: with a cgroup2 mount at
//!   `/sys/fs/cgroup/unified` → [`CgroupVersion::Hybrid`] (the controllers
//!   are still v1; the unified mount holds only what the v1 hierarchies do
//!   not, on this machine hugetlb), else [`CgroupVersion::V1`];
//! - neither: no cgroups, an error.
//!
//! The test `detection_agrees_with_libcgroups_on_this_host` holds the two to
//! the same answer.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use super::CgroupError;

/// Where cgroup filesystems are mounted on every host crius supports.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// A hybrid host's cgroup2 mount.
const HYBRID_UNIFIED: &str = "/sys/fs/cgroup/unified";

/// The v1 controllers the kernel knows; any other super option of a v1 mount
/// (`rw`, `clone_children`, `release_agent=…`) is not one.
const V1_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

/// Which cgroup version holds the controllers the runtime manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// One hierarchy per controller (or group of them) under /sys/fs/cgroup.
    V1,
    /// v1 hierarchies plus a cgroup2 mount at /sys/fs/cgroup/unified. Limits
    /// and usage live in the v1 hierarchies; removal covers both.
    Hybrid,
    /// One unified hierarchy at /sys/fs/cgroup.
    V2,
}

/// What this host's cgroups can enforce, as the spec builder needs it
/// (containerd probes the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    /// The controllers are v2 (not v1, not hybrid): `unified` settings and a
    /// private cgroup namespace are possible.
    pub v2: bool,
    /// The hierarchy the runtime manages has a hugetlb controller. A hybrid
    /// host whose hugetlb lives only on its cgroup2 mount has not: hugepage
    /// limits are then left out (containerd's
    /// `tolerate_missing_hugetlb_controller`).
    pub hugetlb: bool,
    /// Swap can be limited: v1 `memory.memsw.limit_in_bytes` at the memory
    /// hierarchy's root, v2 `memory.swap.max` in the daemon's own cgroup
    /// (the file exists only below the root).
    pub memory_swap: bool,
}

/// The cgroup hierarchies of one host. Paths are host paths, prefixed with
/// the directory the host was read from (`/` for the real one, a temp dir in
/// tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLayout {
    version: CgroupVersion,
    /// v1 hierarchies: controller (or `name=<name>`) → mount directory.
    v1: BTreeMap<String, PathBuf>,
    /// The cgroup2 mount: /sys/fs/cgroup on v2, /sys/fs/cgroup/unified on a
    /// hybrid host, `None` on pure v1.
    unified: Option<PathBuf>,
    /// The daemon's own cgroup in the unified hierarchy (the `0::` line of
    /// /proc/self/cgroup), `/` without one.
    own_unified: String,
}

/// One line of /proc/self/mountinfo, the parts detection needs.
struct Mount {
    mount_point: PathBuf,
    fs_type: String,
    super_options: String,
}

impl CgroupLayout {
    /// This host's layout, from /proc/self/mountinfo and /proc/self/cgroup.
    /// Errors: either file unreadable, or no cgroup filesystem mounted.
    /// Reads only; calling it again gives the same answer.
    pub fn detect() -> Result<CgroupLayout, CgroupError> {
        CgroupLayout::detect_under(Path::new("/"))
    }

    /// The layout of a host whose root is `host`: reads
    /// `<host>/proc/self/mountinfo` and `<host>/proc/self/cgroup`, and
    /// prefixes every mount point with `host`. Errors as [`Self::detect`].
    pub fn detect_under(host: &Path) -> Result<CgroupLayout, CgroupError> {
        let read = |relative: &str| {
            let path = host.join(relative);
            std::fs::read_to_string(&path).map_err(|source| CgroupError::Io { path, source })
        };
        CgroupLayout::from_proc(
            host,
            &read("proc/self/mountinfo")?,
            &read("proc/self/cgroup")?,
        )
    }

    /// The layout described by a mountinfo and a /proc/<pid>/cgroup text.
    /// Errors: [`CgroupError::NoCgroups`] when nothing is mounted.
    pub fn from_proc(
        host: &Path,
        mountinfo: &str,
        proc_cgroup: &str,
    ) -> Result<CgroupLayout, CgroupError> {
        let mounts: Vec<Mount> = mountinfo.lines().filter_map(parse_mount).collect();
        // The last mount at a path is the one visible there.
        let fs_at = |at: &str| {
            mounts
                .iter()
                .rev()
                .find(|m| m.mount_point == Path::new(at))
                .map(|m| m.fs_type.as_str())
        };
        let on_host = |p: &Path| host.join(p.strip_prefix("/").unwrap_or(p));
        let own_unified = proc_cgroup
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or("/")
            .to_string();
        if fs_at(CGROUP_ROOT) == Some("cgroup2") {
            return Ok(CgroupLayout {
                version: CgroupVersion::V2,
                v1: BTreeMap::new(),
                unified: Some(on_host(Path::new(CGROUP_ROOT))),
                own_unified,
            });
        }
        let mut v1 = BTreeMap::new();
        for mount in mounts.iter().filter(|m| m.fs_type == "cgroup") {
            for option in mount.super_options.split(',') {
                if V1_CONTROLLERS.contains(&option) || option.starts_with("name=") {
                    // The first mount of a hierarchy wins, as libcgroups decides.
                    v1.entry(option.to_string())
                        .or_insert_with(|| on_host(&mount.mount_point));
                }
            }
        }
        if v1.is_empty() {
            return Err(CgroupError::NoCgroups);
        }
        let (version, unified) = if fs_at(HYBRID_UNIFIED) == Some("cgroup2") {
            (
                CgroupVersion::Hybrid,
                Some(on_host(Path::new(HYBRID_UNIFIED))),
            )
        } else {
            (CgroupVersion::V1, None)
        };
        Ok(CgroupLayout {
            version,
            v1,
            unified,
            own_unified,
        })
    }

    /// Which version holds the controllers (fixed at detection).
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// What the host can enforce. Reads a few files at the hierarchies'
    /// roots; a missing file means "cannot". Idempotent.
    pub fn limits(&self) -> CgroupLimits {
        match (self.version, &self.unified) {
            (CgroupVersion::V2, Some(unified)) => {
                let controllers =
                    std::fs::read_to_string(unified.join("cgroup.controllers")).unwrap_or_default();
                let own = unified.join(self.own_unified.trim_start_matches('/'));
                CgroupLimits {
                    v2: true,
                    hugetlb: controllers.split_whitespace().any(|c| c == "hugetlb"),
                    memory_swap: own.join("memory.swap.max").exists(),
                }
            }
            _ => CgroupLimits {
                v2: false,
                hugetlb: self.v1.contains_key("hugetlb"),
                memory_swap: self
                    .v1
                    .get("memory")
                    .is_some_and(|m| m.join("memory.memsw.limit_in_bytes").exists()),
            },
        }
    }

    /// The directory holding `controller`'s files of `cgroup` (a path
    /// relative to each hierarchy's root, such as `/crius/<pod>`): on v2 the
    /// one unified directory, on v1 and hybrid that controller's hierarchy.
    /// `None`: the controller is not mounted, or `cgroup` climbs out of its
    /// hierarchy (`..`). Pure: the directory may not exist.
    pub fn controller_dir(&self, controller: &str, cgroup: &str) -> Option<PathBuf> {
        let relative = relative(cgroup)?;
        match self.version {
            CgroupVersion::V2 => self.unified.as_ref().map(|u| u.join(relative)),
            CgroupVersion::V1 | CgroupVersion::Hybrid => {
                self.v1.get(controller).map(|h| h.join(relative))
            }
        }
    }

    /// Every mounted hierarchy's directory (v1 hierarchies shared by several
    /// controllers once, and the cgroup2 mount), sorted.
    pub fn hierarchies(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.v1.values().cloned().collect();
        dirs.extend(self.unified.clone());
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// The existing directories of `cgroup` in every hierarchy, sorted;
    /// empty when `cgroup` is nowhere or climbs out (`..`). Reads only.
    pub fn existing_dirs(&self, cgroup: &str) -> Vec<PathBuf> {
        let Some(relative) = relative(cgroup) else {
            return Vec::new();
        };
        self.hierarchies()
            .into_iter()
            .map(|h| h.join(&relative))
            .filter(|d| d.is_dir())
            .collect()
    }
}

/// `cgroup` without its leading `/`; `None` when a component is `..`.
fn relative(cgroup: &str) -> Option<PathBuf> {
    let path = Path::new(cgroup.trim_start_matches('/'));
    path.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        .then(|| path.to_path_buf())
}

/// A mountinfo line: `id parent major:minor root mount-point options
/// [optional fields] - fs-type source super-options` (proc(5)).
fn parse_mount(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let mount_point = left.split(' ').nth(4)?;
    let mut right = right.split(' ');
    let fs_type = right.next()?.to_string();
    let _source = right.next()?;
    Some(Mount {
        mount_point: PathBuf::from(unescape(mount_point)),
        fs_type,
        super_options: right.next().unwrap_or_default().to_string(),
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|o| {
            std::str::from_utf8(o)
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{self, Host};
    use super::*;

    #[test]
    fn detects_v1() {
        let host = Host::v1();
        let layout = host.layout();
        assert_eq!(layout.version(), CgroupVersion::V1);
        assert_eq!(
            layout.controller_dir("memory", "/crius/p"),
            Some(host.cgroup_root().join("memory/crius/p"))
        );
        // cpu and cpuacct share one hierarchy, mounted once.
        assert_eq!(
            layout.controller_dir("cpuacct", "crius/p"),
            Some(host.cgroup_root().join("cpu,cpuacct/crius/p"))
        );
        assert_eq!(layout.controller_dir("rdma", "/crius/p"), None);
        assert!(!layout.hierarchies().iter().any(|h| h.ends_with("unified")));
        assert_eq!(
            layout.limits(),
            CgroupLimits {
                v2: false,
                hugetlb: true,
                memory_swap: true
            }
        );
    }

    #[test]
    fn detects_this_machines_hybrid_layout() {
        let host = Host::hybrid();
        let layout = host.layout();
        assert_eq!(layout.version(), CgroupVersion::Hybrid);
        // Controllers come from the v1 hierarchies; cpu and cpuacct are apart.
        assert_eq!(
            layout.controller_dir("cpuacct", "/crius/p"),
            Some(host.cgroup_root().join("cpuacct/crius/p"))
        );
        assert!(layout
            .hierarchies()
            .contains(&host.cgroup_root().join("unified")));
        assert!(layout
            .hierarchies()
            .contains(&host.cgroup_root().join("systemd")));
        // hugetlb only on the cgroup2 mount: not enforceable.
        assert_eq!(
            layout.limits(),
            CgroupLimits {
                v2: false,
                hugetlb: false,
                memory_swap: false
            }
        );
        host.write("sys/fs/cgroup/memory/memory.memsw.limit_in_bytes", "0\n");
        assert!(layout.limits().memory_swap);
    }

    #[test]
    fn detects_v2() {
        let host = Host::v2("cpu memory pids hugetlb");
        let layout = host.layout();
        assert_eq!(layout.version(), CgroupVersion::V2);
        assert_eq!(
            layout.controller_dir("memory", "/crius/p"),
            Some(host.cgroup_root().join("crius/p"))
        );
        assert_eq!(layout.hierarchies(), vec![host.cgroup_root()]);
        // memory.swap.max exists only below the root: in the daemon's own cgroup.
        assert_eq!(
            layout.limits(),
            CgroupLimits {
                v2: true,
                hugetlb: true,
                memory_swap: false
            }
        );
        host.write(
            &format!("sys/fs/cgroup{}/memory.swap.max", fixture::OWN_CGROUP),
            "max\n",
        );
        assert!(layout.limits().memory_swap);
        let no_hugetlb = Host::v2("cpu memory");
        assert!(!no_hugetlb.layout().limits().hugetlb);
    }

    #[test]
    fn a_v1_looking_tmpfs_over_a_v2_root_is_v2() {
        // Two mounts at /sys/fs/cgroup: the last is the visible one.
        let mountinfo = "24 1 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                         25 24 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let layout = CgroupLayout::from_proc(Path::new("/"), mountinfo, "0::/\n").unwrap();
        assert_eq!(layout.version(), CgroupVersion::V2);
    }

    #[test]
    fn no_cgroups_is_an_error() {
        let mountinfo = "22 1 0:21 / / rw - ext4 /dev/sda1 rw\n";
        assert!(matches!(
            CgroupLayout::from_proc(Path::new("/"), mountinfo, ""),
            Err(CgroupError::NoCgroups)
        ));
        let empty = tempfile::tempdir().unwrap();
        let err = CgroupLayout::detect_under(empty.path()).unwrap_err();
        assert!(err.to_string().contains("mountinfo"), "{err}");
    }

    #[test]
    fn mount_points_are_unescaped() {
        let mountinfo = "32 31 0:29 / /sys/fs/cgroup/my\\040memory rw - cgroup cgroup rw,memory\n";
        let layout = CgroupLayout::from_proc(Path::new("/"), mountinfo, "").unwrap();
        assert_eq!(
            layout.controller_dir("memory", "x"),
            Some(PathBuf::from("/sys/fs/cgroup/my memory/x"))
        );
    }

    #[test]
    fn a_path_climbing_out_has_no_dirs() {
        let host = Host::v1();
        let layout = host.layout();
        assert_eq!(layout.controller_dir("memory", "/crius/../../etc"), None);
        assert!(layout.existing_dirs("/../..").is_empty());
    }

    #[test]
    fn existing_dirs_cover_every_hierarchy() {
        let host = Host::hybrid();
        for h in ["memory", "pids", "cpuacct", "unified", "systemd"] {
            host.mkdir(&format!("sys/fs/cgroup/{h}/crius/p1"));
        }
        let dirs = host.layout().existing_dirs("/crius/p1");
        assert_eq!(dirs.len(), 5, "{dirs:?}");
        assert!(dirs.iter().all(|d| d.ends_with("crius/p1")));
    }

    /// The daemon's rule and the runtime's (libcgroups, which places every
    /// container's cgroup) give one answer on this host.
    #[test]
    fn detection_agrees_with_libcgroups_on_this_host() {
        use libcgroups::common::{get_cgroup_setup, CgroupSetup};
        let layout = CgroupLayout::detect().unwrap();
        let expected = match get_cgroup_setup().unwrap() {
            CgroupSetup::Legacy => CgroupVersion::V1,
            CgroupSetup::Hybrid => CgroupVersion::Hybrid,
            CgroupSetup::Unified => CgroupVersion::V2,
        };
        assert_eq!(layout.version(), expected);
        if expected != CgroupVersion::V2 {
            let memory = libcgroups::v1::util::get_subsystem_mount_point(
                &libcgroups::v1::ControllerType::Memory,
            )
            .unwrap();
            assert_eq!(layout.controller_dir("memory", "/"), Some(memory));
        }
    }
}
