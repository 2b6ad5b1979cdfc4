//! Path naming: what a pod's and a container's cgroup are called under each
//! driver, and where that puts them in the hierarchies. Pure functions.
//!
//! - cgroupfs: a pod's cgroup is kubelet's `cgroup_parent` as given (e.g.
//!   `/kubepods/burstable/pod<uid>`), or `/<configured parent>/<pod id>`
//!   when kubelet gives none (crius then owns and removes it); a container's
//!   is `<pod cgroup>/<container id>`, and that string is also its OCI
//!   `linux.cgroupsPath`.
//! - systemd: a pod's cgroup is a slice, kubelet's (`kubepods-burstable-
//!   pod<uid>.slice`; a cgroupfs-style parent is converted by kubelet's own
//!   rule) or `<configured parent>-pod<pod id>.slice`; a container is the
//!   scope `crius-<id>.scope` in it, named to the runtime as
//!   `<pod slice>:crius:<id>` (runc's and youki's `slice:prefix:name`). A
//!   slice `a-b-c.slice` lives at `/a.slice/a-b.slice/a-b-c.slice`.

use super::CgroupError;

/// The prefix of every container scope: `crius-<id>.scope`.
pub const SCOPE_PREFIX: &str = "crius";

/// A pod's cgroup as RunPodSandbox records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCgroup {
    /// The driver's name for it: a cgroupfs path or a systemd slice name.
    pub name: String,
    /// crius named it (kubelet gave no `cgroup_parent`), so crius removes it.
    pub owned: bool,
}

/// The cgroupfs driver's names.
pub mod cgroupfs {
    use super::{CgroupError, PodCgroup};

    /// The pod's cgroup: `kubelet_parent` when not empty, else
    /// `/<parent>/<pod_id>` (owned). Errors: a `..` component in
    /// `kubelet_parent` (it would climb out of the hierarchies).
    pub fn pod_cgroup(
        parent: &str,
        pod_id: &str,
        kubelet_parent: &str,
    ) -> Result<PodCgroup, CgroupError> {
        if kubelet_parent.is_empty() {
            return Ok(PodCgroup {
                name: format!("/{}/{pod_id}", parent.trim_matches('/')),
                owned: true,
            });
        }
        if kubelet_parent.split('/').any(|c| c == "..") {
            return Err(CgroupError::invalid(kubelet_parent, "it contains \"..\""));
        }
        Ok(PodCgroup {
            name: kubelet_parent.to_string(),
            owned: false,
        })
    }

    /// A container's cgroup, which is also its `linux.cgroupsPath`:
    /// `<pod_cgroup>/<container_id>`.
    pub fn container_cgroup(pod_cgroup: &str, container_id: &str) -> String {
        format!("{}/{container_id}", pod_cgroup.trim_end_matches('/'))
    }
}

/// The systemd driver's names (the driver itself comes with the resources
/// issue; the config refuses `cgroup_driver = "systemd"` until then).
pub mod systemd {
    use super::{CgroupError, PodCgroup, SCOPE_PREFIX};

    const SLICE: &str = ".slice";

    /// The pod's slice. `kubelet_parent` is a slice name (kubelet's systemd
    /// driver sends `kubepods-burstable-pod<uid>.slice`), or a cgroupfs path
    /// converted as kubelet does (`/kubepods/burstable/pod1-2` →
    /// `kubepods-burstable-pod1_2.slice`); empty: `<parent>-pod<pod id>.slice`
    /// (owned). Errors: a name systemd would refuse.
    pub fn pod_slice(
        parent: &str,
        pod_id: &str,
        kubelet_parent: &str,
    ) -> Result<PodCgroup, CgroupError> {
        let (name, owned) = if kubelet_parent.is_empty() {
            let parent = parent.strip_suffix(SLICE).unwrap_or(parent);
            (format!("{parent}-pod{}{SLICE}", escape(pod_id)), true)
        } else if kubelet_parent.ends_with(SLICE) && !kubelet_parent.contains('/') {
            (kubelet_parent.to_string(), false)
        } else {
            (slice_of_cgroupfs_path(kubelet_parent)?, false)
        };
        expand_slice(&name)?;
        Ok(PodCgroup { name, owned })
    }

    /// kubelet's conversion of a cgroupfs-style name to a slice: each
    /// component escaped, joined by `-`. Errors: an empty path or a `..`.
    pub fn slice_of_cgroupfs_path(path: &str) -> Result<String, CgroupError> {
        let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        if parts.is_empty() || parts.contains(&"..") {
            return Err(CgroupError::invalid(path, "not a cgroup path"));
        }
        let parts: Vec<String> = parts.iter().map(|p| escape(p)).collect();
        Ok(format!("{}{SLICE}", parts.join("-")))
    }

    /// `-` separates a slice name's levels, so a component keeps none:
    /// kubelet writes a pod uid's dashes as `_`.
    pub fn escape(component: &str) -> String {
        component.replace('-', "_")
    }

    /// The container's scope unit: `crius-<id>.scope`.
    pub fn scope(container_id: &str) -> String {
        format!("{SCOPE_PREFIX}-{container_id}.scope")
    }

    /// The container's `linux.cgroupsPath` for a runtime in systemd mode:
    /// `<pod slice>:crius:<id>`.
    pub fn container_cgroups_path(pod_slice: &str, container_id: &str) -> String {
        format!("{pod_slice}:{SCOPE_PREFIX}:{container_id}")
    }

    /// Where a slice is in the hierarchies, as systemd places it:
    /// `a-b-c.slice` → `/a.slice/a-b.slice/a-b-c.slice`, the root `-.slice`
    /// → `/`. Errors: not ending in `.slice`, a `/`, or an empty level
    /// (`a--b.slice`, `-a.slice`, `a-.slice`).
    pub fn expand_slice(slice: &str) -> Result<String, CgroupError> {
        if slice == "-.slice" {
            return Ok("/".to_string());
        }
        let stem = slice
            .strip_suffix(SLICE)
            .ok_or_else(|| CgroupError::invalid(slice, "a slice name ends in .slice"))?;
        if stem.is_empty() || slice.contains('/') {
            return Err(CgroupError::invalid(slice, "not a slice name"));
        }
        let mut path = String::new();
        let mut prefix = String::new();
        for level in stem.split('-') {
            if level.is_empty() {
                return Err(CgroupError::invalid(slice, "a slice level is empty"));
            }
            if !prefix.is_empty() {
                prefix.push('-');
            }
            prefix.push_str(level);
            path.push('/');
            path.push_str(&prefix);
            path.push_str(SLICE);
        }
        Ok(path)
    }

    /// A container's cgroup in the hierarchies:
    /// `<expanded pod slice>/crius-<id>.scope`. Errors as [`expand_slice`].
    pub fn container_cgroup(pod_slice: &str, container_id: &str) -> Result<String, CgroupError> {
        let slice = expand_slice(pod_slice)?;
        Ok(format!(
            "{}/{}",
            slice.trim_end_matches('/'),
            scope(container_id)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroupfs_pod_cgroup_owned_or_kubelets() {
        assert_eq!(
            cgroupfs::pod_cgroup("crius", "p1", "").unwrap(),
            PodCgroup {
                name: "/crius/p1".into(),
                owned: true
            }
        );
        assert_eq!(
            cgroupfs::pod_cgroup("/crius/", "p1", "").unwrap().name,
            "/crius/p1"
        );
        assert_eq!(
            cgroupfs::pod_cgroup("crius", "p1", "/kubepods/burstable/pod1-2").unwrap(),
            PodCgroup {
                name: "/kubepods/burstable/pod1-2".into(),
                owned: false
            }
        );
        assert!(cgroupfs::pod_cgroup("crius", "p1", "/kubepods/../../etc").is_err());
    }

    #[test]
    fn cgroupfs_container_cgroup() {
        assert_eq!(
            cgroupfs::container_cgroup("/crius/p1", "c1"),
            "/crius/p1/c1"
        );
        assert_eq!(
            cgroupfs::container_cgroup("/kubepods/pod1/", "c1"),
            "/kubepods/pod1/c1"
        );
    }

    #[test]
    fn systemd_slices_expand_by_level() {
        assert_eq!(
            systemd::expand_slice("kubepods-burstable-pod1_2.slice").unwrap(),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1_2.slice"
        );
        assert_eq!(
            systemd::expand_slice("system.slice").unwrap(),
            "/system.slice"
        );
        assert_eq!(systemd::expand_slice("-.slice").unwrap(), "/");
        for bad in [
            "kubepods",
            ".slice",
            "a--b.slice",
            "-a.slice",
            "a-.slice",
            "a/b.slice",
        ] {
            assert!(systemd::expand_slice(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn systemd_pod_slice_from_kubelet() {
        let given = "kubepods-burstable-pod0c8f_1a2b.slice";
        assert_eq!(
            systemd::pod_slice("crius", "p1", given).unwrap(),
            PodCgroup {
                name: given.into(),
                owned: false
            }
        );
        // A cgroupfs-style parent: kubelet's own conversion, uid dashes escaped.
        assert_eq!(
            systemd::pod_slice("crius", "p1", "/kubepods/burstable/pod0c8f-1a2b")
                .unwrap()
                .name,
            given
        );
        assert_eq!(
            systemd::pod_slice("crius", "p1", "/kubepods/besteffort/podx")
                .unwrap()
                .name,
            "kubepods-besteffort-podx.slice"
        );
        assert!(systemd::pod_slice("crius", "p1", "a--b.slice").is_err());
        assert!(systemd::pod_slice("crius", "p1", "/kubepods/../x").is_err());
    }

    #[test]
    fn systemd_owned_pod_slice() {
        let pod = systemd::pod_slice("crius", "0123abcd", "").unwrap();
        assert_eq!(
            pod,
            PodCgroup {
                name: "crius-pod0123abcd.slice".into(),
                owned: true
            }
        );
        assert_eq!(
            systemd::pod_slice("crius.slice", "0123abcd", "")
                .unwrap()
                .name,
            "crius-pod0123abcd.slice"
        );
        assert_eq!(
            systemd::expand_slice(&pod.name).unwrap(),
            "/crius.slice/crius-pod0123abcd.slice"
        );
    }

    #[test]
    fn systemd_container_scope() {
        let slice = "kubepods-burstable-pod1_2.slice";
        assert_eq!(systemd::scope("c1"), "crius-c1.scope");
        assert_eq!(
            systemd::container_cgroups_path(slice, "c1"),
            "kubepods-burstable-pod1_2.slice:crius:c1"
        );
        assert_eq!(
            systemd::container_cgroup(slice, "c1").unwrap(),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1_2.slice/crius-c1.scope"
        );
        assert_eq!(
            systemd::container_cgroup("-.slice", "c1").unwrap(),
            "/crius-c1.scope"
        );
        assert!(systemd::container_cgroup("nope", "c1").is_err());
    }
}
