//! Whether the kernel's OOM killer struck the container: the memory
//! controller's `oom_kill` counter of the container's cgroup, read when init
//! has exited and before Delete removes the cgroup. The cgroup is the
//! container's own, made at create, so it starts at zero. The kernel counts a
//! kill in the victim's own cgroup (also when a parent's limit was hit) and
//! before it sends the SIGKILL, so the count is in place when init is reaped.
//!
//! cgroup v1 keeps the counter in `memory.oom_control` (kernel ≥ 4.13), v2 in
//! `memory.events`; both files are `<key> <value>` lines.
//!
//! OOM counting lives here, not in the daemon (see the daemon's `cgroups`
//! module doc): the shim outlives daemon restarts and reaps init. The hierarchy
//! is found with libcgroups, the runtime's own rule (v2 when /sys/fs/cgroup is
//! cgroup2, else the v1 memory hierarchy, also on a hybrid host); the daemon's
//! `cgroups::layout` follows the same rule and a test there holds the two to
//! one answer. The shim does not import the daemon crate for these few lines.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use libcgroups::common::{get_cgroup_setup, CgroupSetup};
use libcgroups::v1::ControllerType;

const V1_FILE: &str = "memory.oom_control";
const V2_FILE: &str = "memory.events";
const OOM_KILL_KEY: &str = "oom_kill";

#[derive(Debug, thiserror::Error)]
pub enum OomError {
    #[error("find the memory cgroup mount: {0}")]
    Mount(String),
    #[error("read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} has no `{OOM_KILL_KEY}` counter (kernel before 4.13?)")]
    NoCounter { path: PathBuf },
}

/// The file that counts the OOM kills of one cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomCounter {
    path: PathBuf,
}

impl OomCounter {
    /// The counter of `cgroups_path` (config.json's `linux.cgroupsPath`,
    /// relative to the memory hierarchy's root) on this host.
    pub fn locate(cgroups_path: &Path) -> Result<OomCounter, OomError> {
        let mount_err = |e: &dyn std::fmt::Display| OomError::Mount(e.to_string());
        let setup = get_cgroup_setup().map_err(|e| mount_err(&e))?;
        let (hierarchy, file) = match setup {
            CgroupSetup::Unified => (
                libcgroups::v2::util::get_unified_mount_point().map_err(|e| mount_err(&e))?,
                V2_FILE,
            ),
            // Hybrid: the memory controller is still a v1 hierarchy.
            CgroupSetup::Legacy | CgroupSetup::Hybrid => (
                libcgroups::v1::util::get_subsystem_mount_point(&ControllerType::Memory)
                    .map_err(|e| mount_err(&e))?,
                V1_FILE,
            ),
        };
        Ok(OomCounter::in_hierarchy(&hierarchy, cgroups_path, file))
    }

    fn in_hierarchy(hierarchy: &Path, cgroups_path: &Path, file: &str) -> OomCounter {
        let relative = cgroups_path.strip_prefix("/").unwrap_or(cgroups_path);
        OomCounter {
            path: hierarchy.join(relative).join(file),
        }
    }

    /// How many processes of the cgroup the OOM killer has killed.
    pub fn kills(&self) -> Result<u64, OomError> {
        let content = fs::read_to_string(&self.path).map_err(|source| OomError::Read {
            path: self.path.clone(),
            source,
        })?;
        oom_kills(&content).ok_or_else(|| OomError::NoCounter {
            path: self.path.clone(),
        })
    }
}

/// The `oom_kill` counter of a `memory.oom_control` or `memory.events` file.
fn oom_kills(content: &str) -> Option<u64> {
    content.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        if key != OOM_KILL_KEY {
            return None;
        }
        value.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_OOM_CONTROL: &str = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
    const V2_MEMORY_EVENTS: &str =
        "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\nsock_throttled 0\n";

    #[test]
    fn reads_the_v1_counter() {
        assert_eq!(oom_kills(V1_OOM_CONTROL), Some(2));
        assert_eq!(
            oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"),
            Some(0)
        );
    }

    #[test]
    fn reads_the_v2_counter_not_its_neighbours() {
        assert_eq!(oom_kills(V2_MEMORY_EVENTS), Some(1));
        assert_eq!(oom_kills("oom 3\noom_group_kill 5\noom_kill 0\n"), Some(0));
    }

    #[test]
    fn an_old_kernel_has_no_counter() {
        assert_eq!(oom_kills("oom_kill_disable 0\nunder_oom 0\n"), None);
        assert_eq!(oom_kills("oom_kill x\n"), None);
    }

    #[test]
    fn the_cgroups_path_is_relative_to_the_hierarchy() {
        let hierarchy = Path::new("/sys/fs/cgroup/memory");
        assert_eq!(
            OomCounter::in_hierarchy(hierarchy, Path::new("/crius/p1/c1"), V1_FILE).path,
            Path::new("/sys/fs/cgroup/memory/crius/p1/c1/memory.oom_control")
        );
        assert_eq!(
            OomCounter::in_hierarchy(
                Path::new("/sys/fs/cgroup"),
                Path::new("kubepods/c1"),
                V2_FILE
            )
            .path,
            Path::new("/sys/fs/cgroup/kubepods/c1/memory.events")
        );
    }

    #[test]
    fn counts_from_the_cgroup_files() {
        let dir = tempfile::tempdir().unwrap();
        let cgroup = dir.path().join("crius/c1");
        fs::create_dir_all(&cgroup).unwrap();
        fs::write(cgroup.join(V2_FILE), V2_MEMORY_EVENTS).unwrap();
        let counter = OomCounter::in_hierarchy(dir.path(), Path::new("/crius/c1"), V2_FILE);
        assert_eq!(counter.kills().unwrap(), 1);

        let gone = OomCounter::in_hierarchy(dir.path(), Path::new("/crius/c2"), V2_FILE);
        assert!(matches!(gone.kills(), Err(OomError::Read { .. })));
        fs::write(cgroup.join(V1_FILE), "under_oom 0\n").unwrap();
        let old = OomCounter::in_hierarchy(dir.path(), Path::new("/crius/c1"), V1_FILE);
        assert!(matches!(old.kills(), Err(OomError::NoCounter { .. })));
    }
}
