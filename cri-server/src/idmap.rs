//! Idmapped mounts (Linux 5.12, `mount_setattr(2)` with `MOUNT_ATTR_IDMAP`):
//! a clone of a mount through which a file whose on-disk owner is `n`
//! appears owned by host ID `host_id + n`, as a user namespace's ID maps
//! say, so by `n` again inside that namespace. A pod with a user namespace
//! sees its image's layers and its volumes through them (KEP-127): files
//! keep their on-disk owners inside (root's image files stay root's), and
//! what the container's root writes is on-disk root's. libcontainer 0.7 refuses
//! OCI's `idmap` mount option, so crius makes these mounts itself.
//!
//! Blocking; call from `spawn_blocking` in async code.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A user namespace that mounts are seen through: its pin, and the host
/// IDs its root (container ID 0) maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNamespace {
    pub path: PathBuf,
    pub root_uid: u32,
    pub root_gid: u32,
}

/// Mounts a clone of the tree at `source` (with its sub-mounts when
/// `recursive`), idmapped with the ID maps of the user namespace at
/// `userns` (a pin or `/proc/<pid>/ns/user`), onto `target`, which must
/// exist. Errors: the step that failed (opening, `open_tree`,
/// `mount_setattr` — EINVAL when the filesystem cannot be idmapped, as
/// overlayfs itself cannot: its layers can — or `move_mount`) with its
/// errno and path.
pub fn idmapped_bind(
    source: &Path,
    target: &Path,
    userns: &Path,
    recursive: bool,
) -> io::Result<()> {
    let recursive = if recursive { libc::AT_RECURSIVE } else { 0 };
    let userns = File::open(userns).map_err(context("opening", userns))?;
    let source_c = c_path(source)?;
    let target_c = c_path(target)?;
    // SAFETY: open_tree takes a dirfd, a NUL-terminated path that outlives
    // the call, and flags; it returns a new fd or -1.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source_c.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | recursive as libc::c_uint,
        )
    };
    if tree < 0 {
        return Err(context("open_tree", source)(io::Error::last_os_error()));
    }
    // SAFETY: the syscall returned a new fd that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as libc::c_int) };
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr reads `attr` (of the size passed), which
    // outlives the call; the empty path with AT_EMPTY_PATH names the fd.
    let set = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | recursive,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if set < 0 {
        return Err(context("idmapping (mount_setattr)", source)(
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: move_mount takes the detached tree's fd with an empty path
    // and a NUL-terminated target path that outlives the call.
    let moved = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target_c.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if moved < 0 {
        return Err(context("move_mount onto", target)(
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

fn context<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> io::Error + 'a {
    move |e| io::Error::new(e.kind(), format!("{op} {}: {e}", path.display()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    use nix::mount::{umount2, MntFlags};

    use crate::namespaces::{self, NamespaceKinds};
    use crate::state::sandbox::{IdMapping, UserMappings};

    /// A pinned user namespace mapping 0..65536 to 200000.. at `<dir>/user`
    /// (released with `crate::namespaces::unpin(dir)`).
    pub(crate) fn pinned_userns(dir: &Path) -> std::path::PathBuf {
        let ids = IdMapping {
            container_id: 0,
            host_id: 200000,
            length: 65536,
        };
        let maps = UserMappings {
            uids: ids,
            gids: ids,
        };
        let pinned = namespaces::pin(dir, NamespaceKinds::default(), None, Some(&maps)).unwrap();
        pinned.user.unwrap()
    }

    /// A file of on-disk uid 5 appears as host uid 200005 through the
    /// idmapped clone (so as 5 inside the namespace).
    #[test]
    fn a_bind_shows_the_maps_and_a_bad_userns_fails_naming_it() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: idmapped mounts need root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let (source, target) = (tmp.path().join("source"), tmp.path().join("target"));
        std::fs::create_dir_all(&source).unwrap();
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(source.join("mapped"), "").unwrap();
        std::os::unix::fs::chown(source.join("mapped"), Some(5), Some(7)).unwrap();
        let userns = pinned_userns(&tmp.path().join("ns"));
        idmapped_bind(&source, &target, &userns, true).unwrap();
        let meta = std::fs::metadata(target.join("mapped")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (200005, 200007));
        let original = std::fs::metadata(source.join("mapped")).unwrap();
        assert_eq!((original.uid(), original.gid()), (5, 7));
        umount2(&target, MntFlags::MNT_DETACH).unwrap();

        let err = idmapped_bind(&source, &target, &tmp.path().join("none"), true).unwrap_err();
        assert!(err.to_string().contains("opening"), "{err}");
        let err = idmapped_bind(&tmp.path().join("gone"), &target, &userns, true).unwrap_err();
        assert!(err.to_string().contains("open_tree"), "{err}");
        namespaces::unpin(&tmp.path().join("ns")).unwrap();
    }
}
