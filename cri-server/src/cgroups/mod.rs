//! The daemon's one cgroup module: which cgroups this host has and how they
//! are named, read and removed. Nothing else in cri-server detects the
//! cgroup version or writes the cgroup path rule.
//!
//! - [`layout`]: detection — v1, hybrid or v2, and where each hierarchy is
//!   mounted, from /proc/self/mountinfo with libcgroups' rule (so the daemon
//!   and the runtime agree); the limits-relevant host facts
//!   ([`CgroupLimits`]: v2, hugetlb, swap) the spec builder needs.
//! - [`naming`]: the path rule of the cgroupfs driver and the names of the
//!   systemd driver (`kubepods-burstable-pod<uid>.slice`,
//!   `crius-<id>.scope`).
//! - [`driver`]: the seam, [`CgroupDriver`] (pod cgroup, container
//!   `cgroupsPath`, directories, removal), with [`Cgroupfs`]; unit tests use
//!   `fake::FakeCgroups`.
//! - [`usage`]: CPU, memory, swap and process counts of one cgroup, for stats.
//!
//! The module never mounts, unmounts or remounts a hierarchy, and creates no
//! cgroup: the runtime makes each container's at create.
//!
//! **Where OOM counting lives: the shim.** It is init's parent and reaper,
//! outlives daemon restarts, and reads the `oom_kill` counter
//! (`memory.oom_control` on v1 and hybrid, `memory.events` on v2) when init
//! has exited and before Delete removes the cgroup; the daemon learns the
//! result from the exit record. The shim keeps its own few lines of reading
//! (`shim/src/oom.rs`) rather than import this module, which would pull the
//! whole daemon crate (tonic, the image store, CNI) into every container's
//! monitor; it finds the hierarchy with libcgroups' `get_cgroup_setup`, the
//! rule [`layout`] follows, and `detection_agrees_with_libcgroups_on_this_host`
//! holds the two to one answer.
//!
//! **Where live updates live (UpdateContainerResources, with the resources
//! issue): computed here, applied in the shim.** The daemon validates the
//! request and builds the new `linux.resources` with the same pure spec code
//! and [`CgroupLimits`] as at create; the shim applies it through
//! crius-runtime (libcgroups), over the shim API's reserved `Update` call.
//! The runtime made the cgroup and, under the systemd driver, limits must be
//! set as properties of the scope over D-Bus rather than written to files,
//! which only libcgroups' systemd manager does. So this module reads and
//! removes cgroups but writes no limit.

pub mod driver;
#[cfg(test)]
pub mod fake;
#[cfg(test)]
pub(crate) mod fixture;
pub mod layout;
pub mod naming;
pub mod usage;

use std::path::PathBuf;

use crate::error::CriError;

pub use driver::{CgroupDriver, Cgroupfs};
pub use layout::{CgroupLayout, CgroupLimits, CgroupVersion};
pub use naming::PodCgroup;
pub use usage::{BlockIo, CgroupDetail, CgroupUsage, MemoryUsage, SwapUsage, Throttling};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: unexpected content {content:?}")]
    Parse { path: PathBuf, content: String },
    #[error("no cgroup filesystem is mounted (none in /proc/self/mountinfo)")]
    NoCgroups,
    #[error("cgroup name {name:?} is invalid: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("removing cgroup {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A failure a test injected through `fake::FakeCgroups`.
    #[cfg(test)]
    #[error("injected failure at {0}")]
    Injected(String),
}

/// The CRI field a cgroup name comes from: the only names the driver
/// validates are kubelet's pod `cgroup_parent` (and what was recorded from it).
pub const CGROUP_PARENT_FIELD: &str = "config.linux.cgroup_parent";

/// The one mapping of cgroup errors to CRI codes: an invalid name (a
/// kubelet `cgroup_parent` with `..`, a slice systemd would refuse) is
/// InvalidArgument naming `config.linux.cgroup_parent`; reading, parsing,
/// a missing hierarchy and removal are Internal with the cause chain.
impl From<CgroupError> for CriError {
    fn from(e: CgroupError) -> CriError {
        match e {
            CgroupError::InvalidName { .. } => {
                CriError::invalid(CGROUP_PARENT_FIELD, e.to_string())
            }
            other => CriError::Internal(anyhow::Error::new(other)),
        }
    }
}

impl CgroupError {
    fn invalid(name: &str, reason: &'static str) -> CgroupError {
        CgroupError::InvalidName {
            name: name.to_string(),
            reason,
        }
    }
}

#[cfg(test)]
mod error_tests {
    use super::*;
    use tonic::{Code, Status};

    fn status_of(e: CgroupError) -> Status {
        CriError::from(e).into()
    }

    #[test]
    fn a_climbing_cgroup_parent_is_invalid_argument_naming_the_field() {
        let e = naming::cgroupfs::pod_cgroup("crius", "p1", "/kubepods/../../etc").unwrap_err();
        let s = status_of(e);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(
            s.message().starts_with("config.linux.cgroup_parent: ")
                && s.message().contains("/kubepods/../../etc"),
            "{}",
            s.message()
        );
        let e = naming::systemd::pod_slice("kubepods.slice", "p1", "bad--.slice").unwrap_err();
        assert_eq!(status_of(e).code(), Code::InvalidArgument);
    }

    #[test]
    fn host_faults_are_internal_naming_the_path() {
        let io = || std::io::Error::from_raw_os_error(libc::EBUSY);
        for (e, named) in [
            (
                CgroupError::Io {
                    path: "/sys/fs/cgroup/memory/x/memory.stat".into(),
                    source: io(),
                },
                "memory.stat",
            ),
            (
                CgroupError::Parse {
                    path: "/sys/fs/cgroup/cpu.max".into(),
                    content: "x".into(),
                },
                "cpu.max",
            ),
            (CgroupError::NoCgroups, "no cgroup filesystem"),
            (
                CgroupError::Remove {
                    path: "/sys/fs/cgroup/pids/crius/p1".into(),
                    source: io(),
                },
                "crius/p1",
            ),
            (CgroupError::Injected("remove".into()), "remove"),
        ] {
            let s = status_of(e);
            assert_eq!(s.code(), Code::Internal);
            assert!(s.message().contains(named), "{}", s.message());
        }
    }
}
