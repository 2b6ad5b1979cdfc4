//! The binds of a container in a pod with a user namespace (KEP-127): each
//! bind's source is seen through an idmapped clone made under the bundle
//! (`<bundle>/idmap/<n>`), so its files keep their on-disk owners inside
//! the pod's user namespace, as the rootfs does. libcontainer 0.7 refuses
//! OCI's `idmap` option, so crius makes the clones and points the spec's
//! binds at them; the container's rbind of a clone stays idmapped.

use std::io;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};
use oci_spec::runtime::Spec;

use crate::idmap::idmapped_bind;

/// The dir of the idmapped clones in a container's bundle.
fn clones_dir(bundle: &Path) -> PathBuf {
    bundle.join("idmap")
}

/// Makes an idmapped clone of every bind's source with the ID maps of the
/// user namespace at `userns`, and points the bind at it. Errors: the clone
/// that failed, naming its source; clones made stay for [`release`].
pub fn idmap_binds(spec: &mut Spec, bundle: &Path, userns: &Path) -> anyhow::Result<()> {
    let Some(mounts) = spec.mounts_mut() else {
        return Ok(());
    };
    let dir = clones_dir(bundle);
    for (i, m) in mounts.iter_mut().enumerate() {
        if m.typ().as_deref() != Some("bind") {
            continue;
        }
        let Some(source) = m.source().clone() else {
            continue;
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let clone = dir.join(i.to_string());
        // A bind's target is of its source's kind: a file over a file.
        let made = if source.is_dir() {
            std::fs::create_dir(&clone)
        } else {
            std::fs::File::create(&clone).map(drop)
        };
        made.with_context(|| format!("creating {}", clone.display()))?;
        idmapped_bind(&source, &clone, userns, true)
            .with_context(|| format!("idmapping the bind of {}", source.display()))?;
        m.set_source(Some(clone));
    }
    Ok(())
}

/// Unmounts and removes the idmapped clones under the bundle, before the
/// bundle itself goes (removing a dir with a clone still mounted would
/// reach into the host's source). Idempotent. Errors: an unmount or
/// removal failing, named: then nothing more is removed.
pub fn release(bundle: &Path) -> anyhow::Result<()> {
    let dir = clones_dir(bundle);
    let entries = match std::fs::read_dir(&dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other.with_context(|| format!("listing {}", dir.display()))?,
    };
    for entry in entries {
        let clone = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        loop {
            match umount2(&clone, MntFlags::MNT_DETACH) {
                Ok(()) => {}
                Err(Errno::EINVAL) | Err(Errno::ENOENT) => break,
                Err(e) => return Err(e).with_context(|| format!("unmounting {}", clone.display())),
            }
        }
        let removed = if clone.is_dir() {
            std::fs::remove_dir(&clone)
        } else {
            std::fs::remove_file(&clone)
        };
        removed.with_context(|| format!("removing {}", clone.display()))?;
    }
    std::fs::remove_dir(&dir).with_context(|| format!("removing {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{MountBuilder, SpecBuilder};

    fn mounted(path: &Path) -> bool {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| Path::new(l.split(' ').nth(4).unwrap()) == path)
    }

    /// Binds are pointed at idmapped clones (a dir and a file); other
    /// mounts are left alone; release unmounts and removes the clones and
    /// leaves the sources intact.
    #[test]
    fn binds_get_idmapped_clones_and_release_removes_them() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: idmapped mounts need root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let (dir_src, file_src) = (tmp.path().join("vol"), tmp.path().join("file"));
        std::fs::create_dir(&dir_src).unwrap();
        std::fs::write(dir_src.join("kept"), "x").unwrap();
        std::fs::write(&file_src, "y").unwrap();
        let bundle = tmp.path().join("bundle");
        std::fs::create_dir(&bundle).unwrap();
        let bind = |dest: &str, src: &Path| {
            MountBuilder::default()
                .destination(dest)
                .typ("bind")
                .source(src)
                .options(vec!["rbind".to_string()])
                .build()
                .unwrap()
        };
        let proc = MountBuilder::default()
            .destination("/proc")
            .typ("proc")
            .source("proc")
            .build()
            .unwrap();
        let mut spec = SpecBuilder::default()
            .mounts(vec![
                proc,
                bind("/vol", &dir_src),
                bind("/etc/f", &file_src),
            ])
            .build()
            .unwrap();
        let userns = crate::idmap::tests::pinned_userns(&tmp.path().join("ns"));
        idmap_binds(&mut spec, &bundle, &userns).unwrap_or_else(|e| panic!("{e:#}"));
        let sources: Vec<_> = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.source().clone().unwrap())
            .collect();
        assert_eq!(
            sources,
            [
                PathBuf::from("proc"),
                bundle.join("idmap/1"),
                bundle.join("idmap/2")
            ]
        );
        assert!(mounted(&bundle.join("idmap/1")) && mounted(&bundle.join("idmap/2")));
        assert!(bundle.join("idmap/1/kept").exists());
        release(&bundle).unwrap();
        assert!(!bundle.join("idmap").exists());
        assert!(dir_src.join("kept").exists() && file_src.exists());
        release(&bundle).unwrap();
        crate::namespaces::unpin(&tmp.path().join("ns")).unwrap();
    }
}
