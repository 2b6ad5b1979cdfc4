//! The process's working directory, made when the image lacks it.
//!
//! runc creates `process.cwd` (`mkdir -p`, mode 0755, as the container's root, before it drops
//! to the container's user) once the rootfs and mounts are in place; libcontainer only
//! `chdir`s, so a working directory missing from the image failed the create with "failed to
//! unix syscall". We make it before libcontainer runs, from outside the container: in the
//! rootfs, or, when the directory lies under a bind mount of the spec, in that mount's source
//! (which is where the container would see it). Every lookup resolves inside that root
//! ([`crate::in_root`]): a symlink in the image, absolute or climbing with `..`, never leads
//! out of it, so nothing is ever created on the host outside the container's root; one whose
//! target is missing is an error, as with runc. A directory under any other mount (a tmpfs,
//! /proc, …) is left to the runtime.

use std::io;
use std::path::Path;

use oci_spec::runtime::Spec;

use crate::in_root::{clean, Dangling, Leaf, Make, Owner};
use crate::mountpoint::in_container;

/// Makes `process.cwd` of `spec` if it is missing, `rootfs` being the container's root: see
/// the module docs. Expects the mount destinations resolved already
/// ([`crate::mountpoint::resolve_all`]), so that one met on the way is recognised. Errors
/// name the directory, the root it is made under, the path and the errno (a file or a
/// dangling symlink in the way, no `openat2`, …).
pub(crate) fn ensure(spec: &Spec, rootfs: &Path) -> io::Result<()> {
    let Some(process) = spec.process() else {
        return Ok(());
    };
    let cwd = clean(process.cwd());
    if cwd.as_os_str().is_empty() {
        return Ok(());
    }
    let make = Make {
        leaf: Leaf::Dir,
        dangling: Dangling::Refuse,
        owner: Owner::container_root(spec),
    };
    in_container(spec, rootfs, &cwd, Some(make))
        .map(drop)
        .map_err(|e| {
            let kind = io::Error::from(e.source.errno).kind();
            io::Error::new(
                kind,
                format!(
                    "working directory /{}: creating it under {}: {}",
                    cwd.display(),
                    e.root.display(),
                    e.source
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    use oci_spec::runtime::{MountBuilder, ProcessBuilder, SpecBuilder};

    use super::*;

    fn spec_with(cwd: &str, mounts: Vec<oci_spec::runtime::Mount>) -> Spec {
        SpecBuilder::default()
            .process(ProcessBuilder::default().cwd(cwd).build().unwrap())
            .mounts(mounts)
            .build()
            .unwrap()
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_missing_working_directory_is_made_with_mode_0755() {
        let rootfs = tempfile::tempdir().unwrap();
        let rootfs = rootfs.path();
        let spec = spec_with("/app/./work/../work", vec![]);
        ensure(&spec, rootfs).unwrap();
        let made = rootfs.join("app/work");
        assert!(made.is_dir());
        assert_eq!(mode(&made), 0o755);
        assert_eq!(mode(&rootfs.join("app")), 0o755);
        let meta = fs::metadata(&made).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw()
            )
        );
        // Present already: nothing changes, no error.
        fs::set_permissions(&made, fs::Permissions::from_mode(0o700)).unwrap();
        ensure(&spec, rootfs).unwrap();
        assert_eq!(mode(&made), 0o700);
    }

    #[test]
    fn symlinks_resolve_inside_the_rootfs() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        fs::create_dir(&rootfs).unwrap();
        // An absolute symlink naming a host directory that exists: inside the rootfs it is
        // the rootfs's own (missing) path, so nothing may appear on the host; a dangling
        // symlink is an error, as with runc.
        symlink(outside.path(), rootfs.join("abs")).unwrap();
        let err = ensure(&spec_with("/abs/work", vec![]), &rootfs).unwrap_err();
        assert!(
            err.to_string()
                .contains("resolve the symlink /abs: ENOENT: No such file or directory"),
            "{err}"
        );
        assert!(!outside.path().join("work").exists());

        // Climbing with `..` stops at the rootfs: /up/x is the rootfs's /x.
        symlink("../../../../..", rootfs.join("up")).unwrap();
        ensure(&spec_with("/up/x/y", vec![]), &rootfs).unwrap();
        assert!(rootfs.join("x/y").is_dir());
        assert!(!dir.path().join("x").exists());

        // An absolute symlink to a directory of the image is followed within it.
        fs::create_dir(rootfs.join("real")).unwrap();
        symlink("/real", rootfs.join("link")).unwrap();
        ensure(&spec_with("/link/deeper", vec![]), &rootfs).unwrap();
        assert!(rootfs.join("real/deeper").is_dir());
    }

    #[test]
    fn a_file_in_the_way_is_an_error_naming_it() {
        let rootfs = tempfile::tempdir().unwrap();
        fs::create_dir(rootfs.path().join("etc")).unwrap();
        fs::write(
            rootfs.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\n",
        )
        .unwrap();
        let err = ensure(&spec_with("/etc/passwd/x", vec![]), rootfs.path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("working directory /etc/passwd/x: creating it under "),
            "{msg}"
        );
        assert!(
            msg.ends_with("open /etc/passwd: ENOTDIR: Not a directory"),
            "{msg}"
        );
    }

    #[test]
    fn under_a_bind_mount_it_is_made_in_the_source_and_not_under_other_mounts() {
        let volume = tempfile::tempdir().unwrap();
        let bind = MountBuilder::default()
            .destination("/data")
            .typ("bind")
            .source(volume.path())
            .options(vec!["rbind".to_string(), "rw".to_string()])
            .build()
            .unwrap();
        let tmpfs = MountBuilder::default()
            .destination("/scratch")
            .typ("tmpfs")
            .source("tmpfs")
            .build()
            .unwrap();
        let rootfs = tempfile::tempdir().unwrap();
        let spec = spec_with("/data/sub/dir", vec![bind.clone(), tmpfs.clone()]);
        ensure(&spec, rootfs.path()).unwrap();
        assert!(volume.path().join("sub/dir").is_dir());
        assert!(!rootfs.path().join("data").exists());

        let spec = spec_with("/scratch/w", vec![bind.clone(), tmpfs]);
        ensure(&spec, rootfs.path()).unwrap();
        assert!(!rootfs.path().join("scratch").exists());

        // Reached through a symlink of the image to the (resolved) mount point: made in the
        // bind's source too, not in the image under the mount point.
        symlink("data/sub", rootfs.path().join("short")).unwrap();
        ensure(&spec_with("/short/other", vec![bind]), rootfs.path()).unwrap();
        assert!(volume.path().join("sub/other").is_dir());
        assert!(!rootfs.path().join("data").exists());
    }

    #[test]
    fn the_root_and_an_empty_cwd_need_nothing() {
        for cwd in ["/", ""] {
            let rootfs = tempfile::tempdir().unwrap();
            ensure(&spec_with(cwd, vec![]), rootfs.path()).unwrap();
            assert_eq!(fs::read_dir(rootfs.path()).unwrap().count(), 0);
        }
    }
}
