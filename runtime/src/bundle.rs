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
    crate::mountpoint::resolve_all(&mut spec, &rootfs)
        .map_err(|e| io("resolve the mount destinations in the rootfs", e.into()))?;
    let resolved = destinations(&spec) != before;
    crate::cwd::ensure(&spec, &rootfs).map_err(|e| io("prepare the working directory", e))?;
    if let Some(root) = spec.root_mut() {
        root.set_path(rootfs.clone());
    }
    Ok(Prepared {
        spec,
        rootfs,
        resolved,
    })
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
