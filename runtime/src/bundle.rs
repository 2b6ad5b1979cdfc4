//! The bundle handed to libcontainer: the caller's, with the rootfs made ready as runc would.

use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::error::{RuntimeError, Step};

/// The directory under the caller's bundle that holds the config.json libcontainer runs.
const RESOLVED: &str = "resolved";

/// A bundle's spec made ready for libcontainer by [`prepare`].
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The caller's spec with the mount destinations resolved and the rootfs absolute.
    pub spec: Spec,
    /// The rootfs, absolute and canonical.
    pub rootfs: PathBuf,
    /// Whether a mount destination changed: only then does libcontainer need
    /// the resolved copy ([`write`]); else it runs the caller's config.json.
    pub resolved: bool,
}

/// Prepares the rootfs of `bundle`, whose config.json is `spec`, for libcontainer, which does
/// less there than runc: every mount destination resolved inside the rootfs and made
/// ([`crate::mountpoint`]), then the working directory made ([`crate::cwd`]). Errors name the
/// step; the cause names the path and the errno.
pub(crate) fn prepare(id: &str, bundle: &Path, mut spec: Spec) -> Result<Prepared, RuntimeError> {
    let io = |what, e| RuntimeError::io(id, Step::Create, what, e);
    let root = spec
        .root()
        .as_ref()
        .map_or_else(|| PathBuf::from("rootfs"), |r| r.path().clone());
    let rootfs = fs::canonicalize(bundle.join(root)).map_err(|e| io("find the rootfs", e))?;
    let destinations = |spec: &Spec| -> Vec<PathBuf> {
        (spec.mounts().iter().flatten())
            .map(|m| m.destination().clone())
            .collect()
    };
    let before = destinations(&spec);
    let make_mount_points = |spec: &mut Spec| {
        crate::mountpoint::resolve_all(spec, &rootfs)
            .map_err(|e| io("resolve the mount destinations in the rootfs", e.into()))?;
        crate::cwd::ensure(spec, &rootfs).map_err(|e| io("prepare the working directory", e))
    };
    match user_namespace_root(&spec) {
        None => make_mount_points(&mut spec)?,
        // On a thread of its own: filesystem IDs and capabilities are per thread.
        Some((uid, gid)) => std::thread::scope(|s| {
            s.spawn(|| {
                as_namespace_root(uid, gid)
                    .map_err(|e| io("take the user namespace's root IDs", e))?;
                make_mount_points(&mut spec)
            })
            .join()
            .unwrap_or_else(|_| {
                Err(io(
                    "prepare the rootfs",
                    std::io::Error::other("the thread panicked"),
                ))
            })
        })?,
    }
    let resolved = destinations(&spec) != before;
    if let Some(root) = spec.root_mut() {
        root.set_path(rootfs.clone());
    }
    Ok(Prepared {
        spec,
        rootfs,
        resolved,
    })
}

/// The host IDs that container IDs 0 map to, when the spec has a user
/// namespace with ID maps (created, or joined: crius gives a pod's
/// containers the pod's maps with its namespace's path).
fn user_namespace_root(spec: &Spec) -> Option<(u32, u32)> {
    let linux = spec.linux().as_ref()?;
    let has_userns = (linux.namespaces().iter().flatten())
        .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User);
    let root = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        (maps.iter().flatten())
            .find(|m| m.container_id() == 0)
            .map(|m| m.host_id())
    };
    has_userns
        .then(|| Some((root(linux.uid_mappings())?, root(linux.gid_mappings())?)))
        .flatten()
}

/// Makes the calling thread's filesystem IDs the user namespace's root
/// (capabilities kept): a rootfs seen through idmapped layers takes only
/// IDs its maps hold (EOVERFLOW else), and what this thread makes there is
/// the container root's. Filesystem IDs and capabilities are the thread's own.
fn as_namespace_root(uid: u32, gid: u32) -> std::io::Result<()> {
    // SAFETY: setfsgid and setfsuid change only this thread's credentials.
    unsafe {
        libc::setfsgid(gid);
        libc::setfsuid(uid);
    }
    // Changing the fsuid from 0 clears the file capabilities from the
    // effective set; the permitted set keeps them.
    let permitted = caps::read(None, caps::CapSet::Permitted).map_err(std::io::Error::other)?;
    caps::set(None, caps::CapSet::Effective, &permitted).map_err(std::io::Error::other)
}

/// Writes `spec` to `<bundle>/resolved/config.json`, leaving the caller's config.json as
/// written; returns `<bundle>/resolved`, the bundle to hand to libcontainer.
pub(crate) fn write(id: &str, bundle: &Path, spec: &Spec) -> Result<PathBuf, RuntimeError> {
    let io = |e| RuntimeError::io(id, Step::Create, "write the resolved config.json", e);
    let resolved = bundle.join(RESOLVED);
    fs::create_dir_all(&resolved).map_err(io)?;
    spec.save(resolved.join("config.json"))
        .map_err(|e| io(std::io::Error::other(e)))?;
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxBuilder, LinuxIdMappingBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, SpecBuilder,
    };

    fn spec(user: bool, host_id: Option<u32>) -> Spec {
        let mut namespaces = vec![LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Mount)
            .build()
            .unwrap()];
        if user {
            namespaces.push(
                LinuxNamespaceBuilder::default()
                    .typ(LinuxNamespaceType::User)
                    .path("/run/crius/pods/p/ns/user")
                    .build()
                    .unwrap(),
            );
        }
        let mut linux = LinuxBuilder::default().namespaces(namespaces);
        if let Some(host_id) = host_id {
            let map = |host_id| {
                vec![LinuxIdMappingBuilder::default()
                    .container_id(0u32)
                    .host_id(host_id)
                    .size(65536u32)
                    .build()
                    .unwrap()]
            };
            linux = linux
                .uid_mappings(map(host_id))
                .gid_mappings(map(host_id + 1));
        }
        SpecBuilder::default()
            .linux(linux.build().unwrap())
            .build()
            .unwrap()
    }

    /// Mount points are made as the namespace's root only for a spec with a
    /// user namespace and its maps.
    #[test]
    fn the_namespace_root_comes_from_the_maps_of_a_user_namespace() {
        assert_eq!(
            user_namespace_root(&spec(true, Some(200000))),
            Some((200000, 200001))
        );
        assert_eq!(user_namespace_root(&spec(true, None)), None);
        assert_eq!(user_namespace_root(&spec(false, Some(200000))), None);
    }
}
