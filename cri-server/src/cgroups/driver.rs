//! The driver seam: how the daemon names, places and removes the cgroups of
//! pods and containers. [`Cgroupfs`] is the real one today; the systemd
//! driver (its names are in [`super::naming::systemd`]) comes with the
//! resources issue. [`super::fake::FakeCgroups`] serves unit tests.

use std::fmt;
use std::path::Path;

use super::naming::{cgroupfs, PodCgroup};
use super::{CgroupError, CgroupLayout};

/// Names, places and removes cgroups. No `create`: the runtime makes each
/// container's cgroup with its missing parents at create (cgroupfs: every
/// directory down the path; systemd: starting the scope realizes its
/// slices), and kubelet makes the pod cgroups it names.
pub trait CgroupDriver: Send + Sync + fmt::Debug {
    /// The pod's cgroup for RunPodSandbox to record: kubelet's
    /// `cgroup_parent` when not empty, else one the driver names for
    /// `pod_id` (owned). Errors: an invalid `kubelet_parent`. Pure.
    fn pod_cgroup(&self, pod_id: &str, kubelet_parent: &str) -> Result<PodCgroup, CgroupError>;

    /// The container's OCI `linux.cgroupsPath` in the pod whose recorded
    /// cgroup is `pod_cgroup`. Pure.
    fn container_cgroups_path(&self, pod_cgroup: &str, container_id: &str) -> String;

    /// Where the pod's cgroup is, relative to each hierarchy's root (what
    /// [`CgroupLayout::usage`] reads). Errors: a `pod_cgroup` this driver
    /// cannot have named. Pure.
    fn pod_dir(&self, pod_cgroup: &str) -> Result<String, CgroupError>;

    /// Where the container's cgroup is, relative to each hierarchy's root.
    /// Errors as [`Self::pod_dir`]. Pure.
    fn container_dir(&self, pod_cgroup: &str, container_id: &str) -> Result<String, CgroupError>;

    /// Removes the pod's cgroup and its (empty) children in every
    /// hierarchy; call it only for an owned cgroup. Idempotent: absent is
    /// success. Errors: a cgroup that still has processes (EBUSY), named.
    fn remove(&self, pod_cgroup: &str) -> Result<(), CgroupError>;
}

/// The cgroupfs driver: plain directories under each hierarchy.
#[derive(Debug, Clone)]
pub struct Cgroupfs {
    layout: CgroupLayout,
    /// The configured parent of owned pod cgroups (config `cgroup_parent`).
    parent: String,
}

impl Cgroupfs {
    /// The driver over `layout`, naming owned pod cgroups `/<parent>/<pod id>`.
    /// Pure.
    pub fn new(layout: CgroupLayout, parent: &str) -> Cgroupfs {
        Cgroupfs {
            layout,
            parent: parent.to_string(),
        }
    }
}

impl CgroupDriver for Cgroupfs {
    fn pod_cgroup(&self, pod_id: &str, kubelet_parent: &str) -> Result<PodCgroup, CgroupError> {
        cgroupfs::pod_cgroup(&self.parent, pod_id, kubelet_parent)
    }

    fn container_cgroups_path(&self, pod_cgroup: &str, container_id: &str) -> String {
        cgroupfs::container_cgroup(pod_cgroup, container_id)
    }

    fn pod_dir(&self, pod_cgroup: &str) -> Result<String, CgroupError> {
        Ok(pod_cgroup.to_string())
    }

    fn container_dir(&self, pod_cgroup: &str, container_id: &str) -> Result<String, CgroupError> {
        Ok(cgroupfs::container_cgroup(pod_cgroup, container_id))
    }

    fn remove(&self, pod_cgroup: &str) -> Result<(), CgroupError> {
        remove_everywhere(&self.layout, pod_cgroup)
    }
}

/// Removes `cgroup` and its children in every hierarchy of `layout`.
/// Idempotent. Errors: [`CgroupError::Remove`] naming the directory.
pub fn remove_everywhere(layout: &CgroupLayout, cgroup: &str) -> Result<(), CgroupError> {
    for dir in layout.existing_dirs(cgroup) {
        remove_tree(&dir)?;
    }
    Ok(())
}

/// Children first: a cgroup directory goes only when empty of cgroups (its
/// control files are not real files and go with it).
fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    let removal = |source| CgroupError::Remove {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(removal(e)),
    };
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(removal(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::Host;
    use super::*;

    #[test]
    fn cgroupfs_names_pods_and_containers() {
        let host = Host::v1();
        let driver = Cgroupfs::new(host.layout(), "crius");
        let pod = driver.pod_cgroup("p1", "").unwrap();
        assert_eq!(pod.name, "/crius/p1");
        assert!(pod.owned);
        assert_eq!(
            driver.container_cgroups_path(&pod.name, "c1"),
            "/crius/p1/c1"
        );
        assert_eq!(driver.pod_dir(&pod.name).unwrap(), "/crius/p1");
        assert_eq!(
            driver.container_dir(&pod.name, "c1").unwrap(),
            "/crius/p1/c1"
        );
        let kubelets = driver.pod_cgroup("p1", "/kubepods/podu").unwrap();
        assert!(!kubelets.owned);
        assert_eq!(
            driver.container_cgroups_path(&kubelets.name, "c1"),
            "/kubepods/podu/c1"
        );
    }

    #[test]
    fn removes_in_every_hierarchy_of_a_hybrid_host() {
        let host = Host::hybrid();
        for h in ["memory", "cpu", "cpuacct", "pids", "systemd", "unified"] {
            host.mkdir(&format!("sys/fs/cgroup/{h}/crius/p1/c1"));
        }
        host.mkdir("sys/fs/cgroup/memory/crius/p2");
        let driver = Cgroupfs::new(host.layout(), "crius");
        driver.remove("/crius/p1").unwrap();
        assert!(host.layout().existing_dirs("/crius/p1").is_empty());
        assert_eq!(host.layout().existing_dirs("/crius/p2").len(), 1);
        assert!(host.path("sys/fs/cgroup/memory/crius").is_dir());
        // Idempotent.
        driver.remove("/crius/p1").unwrap();
    }

    #[test]
    fn removes_on_v1_and_v2() {
        let v1 = Host::v1();
        for h in ["memory", "cpu,cpuacct", "pids", "hugetlb", "systemd"] {
            v1.mkdir(&format!("sys/fs/cgroup/{h}/crius/p1"));
        }
        let layout = v1.layout();
        assert_eq!(layout.existing_dirs("/crius/p1").len(), 5);
        remove_everywhere(&layout, "/crius/p1").unwrap();
        assert!(layout.existing_dirs("/crius/p1").is_empty());

        let v2 = Host::v2("cpu memory");
        v2.mkdir("sys/fs/cgroup/crius/p1/c1");
        remove_everywhere(&v2.layout(), "crius/p1").unwrap();
        assert!(!v2.path("sys/fs/cgroup/crius/p1").exists());
        assert!(v2.path("sys/fs/cgroup/crius").is_dir());
    }

    #[test]
    fn a_cgroup_that_cannot_go_is_named() {
        let host = Host::v2("cpu memory");
        // A plain file stands for a control file the kernel would not let go.
        host.write("sys/fs/cgroup/crius/p1/cgroup.procs", "42\n");
        let err = remove_everywhere(&host.layout(), "/crius/p1").unwrap_err();
        assert!(err.to_string().contains("crius/p1"), "{err}");
    }
}
