//! The process's working directory, made when the image lacks it.
//!
//! runc creates `process.cwd` (`mkdir -p`, mode 0755, as the container's root, before it drops
//! to the container's user) once the rootfs and mounts are in place; libcontainer only
//! `chdir`s, so a working directory missing from the image failed the create with "failed to
//! unix syscall". We make it before libcontainer runs, from outside the container: in the
//! rootfs, or, when the directory lies under a bind mount of the spec, in that mount's source
//! (which is where the container would see it). Every lookup resolves inside that root
//! (`openat2` with `RESOLVE_IN_ROOT`): a symlink in the image, absolute or climbing with `..`,
//! never leads out of it, so nothing is ever created on the host outside the container's
//! root. A directory under any other mount (a tmpfs, /proc, …) is left to the runtime.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmod, mkdirat, Mode};
use nix::unistd::{fchown, Gid, Uid};
use oci_spec::runtime::Spec;

/// The mode runc gives a working directory it creates.
const MODE: u32 = 0o755;

/// Makes the bundle's `process.cwd` if it is missing: see the module docs. Errors name the
/// path and the cause (a file or a dangling symlink in the way, no `openat2`, …).
pub(crate) fn ensure(bundle: &Path) -> io::Result<()> {
    let spec = Spec::load(bundle.join("config.json"))
        .map_err(|e| io::Error::other(format!("reading the bundle's config.json: {e}")))?;
    let Some(process) = spec.process() else {
        return Ok(());
    };
    let cwd = clean(process.cwd());
    if cwd.as_os_str().is_empty() {
        return Ok(());
    }
    let rootfs = spec
        .root()
        .as_ref()
        .map(|r| bundle.join(r.path()))
        .unwrap_or_else(|| bundle.join("rootfs"));
    let (root, rel) = match where_it_lives(&spec, &cwd) {
        Place::Rootfs => (rootfs, cwd.clone()),
        Place::Bind { source, rel } => (source, rel),
        Place::OtherMount => return Ok(()),
    };
    let (uid, gid) = container_root(&spec);
    mkdir_all_in_root(&root, &rel, uid, gid).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "working directory /{}: creating it under {}: {e}",
                cwd.display(),
                root.display()
            ),
        )
    })
}

/// Where a path of the container lies before its mounts are made.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// In the rootfs itself.
    Rootfs,
    /// Under the bind mount of `source`, at `rel` below it.
    Bind { source: PathBuf, rel: PathBuf },
    /// Under a mount that is no bind (a tmpfs, /proc, …): unknown until it is made.
    OtherMount,
}

/// The deepest mount of the spec at or above `cwd` (relative, clean), later mounts winning
/// at the same depth as they are mounted last.
pub(crate) fn where_it_lives(spec: &Spec, cwd: &Path) -> Place {
    let mut best: Option<(usize, Place)> = None;
    for m in spec.mounts().iter().flatten() {
        let dest = clean(m.destination());
        let Ok(rel) = cwd.strip_prefix(&dest) else {
            continue;
        };
        let depth = dest.components().count();
        if best.as_ref().is_some_and(|(d, _)| *d > depth) {
            continue;
        }
        let is_bind = m.typ().as_deref() == Some("bind")
            || m.options()
                .iter()
                .flatten()
                .any(|o| o == "bind" || o == "rbind");
        let place = match (is_bind, m.source()) {
            (true, Some(source)) => Place::Bind {
                source: source.clone(),
                rel: rel.to_path_buf(),
            },
            _ => Place::OtherMount,
        };
        best = Some((depth, place));
    }
    best.map_or(Place::Rootfs, |(_, p)| p)
}

/// The host ids of the container's root: itself unless the spec maps user ids.
fn container_root(spec: &Spec) -> (u32, u32) {
    let linux = spec.linux().as_ref();
    let map = |mappings: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>| {
        mappings
            .into_iter()
            .flatten()
            .find(|m| m.container_id() == 0 && m.size() > 0)
            .map_or(0, |m| m.host_id())
    };
    (
        map(linux.and_then(|l| l.uid_mappings().as_ref())),
        map(linux.and_then(|l| l.gid_mappings().as_ref())),
    )
}

/// `path` relative to the root, lexically cleaned as runc's `filepath.Clean("/" + path)`:
/// no `.`, and a `..` never climbs above the root.
pub(crate) fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Opens `rel` (relative, clean) as a directory, resolved with `root` as `/`.
pub(crate) fn open_in_root(root: &OwnedFd, rel: &Path) -> io::Result<OwnedFd> {
    let path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    loop {
        match openat2(root.as_raw_fd(), path, how) {
            // SAFETY: openat2 returned a new fd that nothing else owns.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            Err(Errno::ENOSYS) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "openat2 is not supported by this kernel (needs Linux 5.6)",
                ))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `mkdir -p` of `rel` under `root`, resolving every component inside `root`; each directory
/// made gets mode 0755 and the owner `uid:gid`. Existing directories are left as they are.
pub(crate) fn mkdir_all_in_root(root: &Path, rel: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let root = OwnedFd::from(File::open(root)?);
    let mut done = PathBuf::new();
    for c in clean(rel).components() {
        let Component::Normal(name) = c else { continue };
        let next = done.join(name);
        match open_in_root(&root, &next) {
            Ok(_) => {
                done = next;
                continue;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(in_path(&next, e)),
        }
        let parent = open_in_root(&root, &done).map_err(|e| in_path(&done, e))?;
        match mkdirat(
            Some(parent.as_raw_fd()),
            name,
            Mode::from_bits_truncate(MODE),
        ) {
            Ok(()) => {
                let dir = open_in_root(&root, &next).map_err(|e| in_path(&next, e))?;
                // Not left to the umask; the owner as runc's mkdir as the container's root.
                fchmod(dir.as_raw_fd(), Mode::from_bits_truncate(MODE))
                    .map_err(|e| in_path(&next, e.into()))?;
                if (uid, gid) != (0, 0) {
                    fchown(
                        dir.as_raw_fd(),
                        Some(Uid::from_raw(uid)),
                        Some(Gid::from_raw(gid)),
                    )
                    .map_err(|e| in_path(&next, e.into()))?;
                }
            }
            // Something is there that did not resolve: a symlink whose target is missing.
            Err(Errno::EEXIST) => {
                if open_in_root(&root, &next).is_err() {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("/{}: a symlink to a missing target", next.display()),
                    ));
                }
            }
            Err(e) => return Err(in_path(&next, e.into())),
        }
        done = next;
    }
    Ok(())
}

fn in_path(rel: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("/{}: {e}", rel.display()))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    use oci_spec::runtime::{MountBuilder, ProcessBuilder, RootBuilder, SpecBuilder};

    use super::*;

    fn bundle_with(cwd: &str, mounts: Vec<oci_spec::runtime::Mount>) -> tempfile::TempDir {
        let bundle = tempfile::tempdir().unwrap();
        fs::create_dir(bundle.path().join("rootfs")).unwrap();
        let spec = SpecBuilder::default()
            .root(RootBuilder::default().path("rootfs").build().unwrap())
            .process(ProcessBuilder::default().cwd(cwd).build().unwrap())
            .mounts(mounts)
            .build()
            .unwrap();
        spec.save(bundle.path().join("config.json")).unwrap();
        bundle
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_missing_working_directory_is_made_with_mode_0755() {
        let bundle = bundle_with("/app/./work/../work", vec![]);
        let rootfs = bundle.path().join("rootfs");
        ensure(bundle.path()).unwrap();
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
        ensure(bundle.path()).unwrap();
        assert_eq!(mode(&made), 0o700);
    }

    #[test]
    fn symlinks_resolve_inside_the_rootfs() {
        let outside = tempfile::tempdir().unwrap();
        let bundle = bundle_with("/abs/work", vec![]);
        let rootfs = bundle.path().join("rootfs");
        // An absolute symlink naming a host directory that exists: inside the rootfs it is
        // the rootfs's own (missing) path, so nothing may appear on the host.
        symlink(outside.path(), rootfs.join("abs")).unwrap();
        let err = ensure(bundle.path()).unwrap_err();
        assert!(err.to_string().contains("/abs"), "{err}");
        assert!(
            err.to_string().contains("a symlink to a missing target"),
            "{err}"
        );
        assert!(!outside.path().join("work").exists());

        // Climbing with `..` stops at the rootfs: /up/x is the rootfs's /x.
        symlink("../../../../..", rootfs.join("up")).unwrap();
        let bundle_root = bundle.path().to_path_buf();
        let spec = SpecBuilder::default()
            .root(RootBuilder::default().path("rootfs").build().unwrap())
            .process(ProcessBuilder::default().cwd("/up/x/y").build().unwrap())
            .build()
            .unwrap();
        spec.save(bundle_root.join("config.json")).unwrap();
        ensure(&bundle_root).unwrap();
        assert!(rootfs.join("x/y").is_dir());
        assert!(!bundle_root.join("x").exists());

        // An absolute symlink to a directory of the image is followed within it.
        fs::create_dir(rootfs.join("real")).unwrap();
        symlink("/real", rootfs.join("link")).unwrap();
        mkdir_all_in_root(&rootfs, Path::new("link/deeper"), 0, 0).unwrap();
        assert!(rootfs.join("real/deeper").is_dir());
    }

    #[test]
    fn a_file_in_the_way_is_an_error_naming_it() {
        let bundle = bundle_with("/etc/passwd/x", vec![]);
        let rootfs = bundle.path().join("rootfs");
        fs::create_dir(rootfs.join("etc")).unwrap();
        fs::write(rootfs.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        let err = ensure(bundle.path()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/etc/passwd"), "{msg}");
        assert!(msg.contains("working directory /etc/passwd/x"), "{msg}");
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
        let bundle = bundle_with("/data/sub/dir", vec![bind.clone(), tmpfs.clone()]);
        ensure(bundle.path()).unwrap();
        assert!(volume.path().join("sub/dir").is_dir());
        assert!(!bundle.path().join("rootfs/data").exists());

        let bundle = bundle_with("/scratch/w", vec![bind, tmpfs]);
        ensure(bundle.path()).unwrap();
        assert!(!bundle.path().join("rootfs/scratch").exists());
    }

    #[test]
    fn the_root_and_an_empty_cwd_need_nothing() {
        for cwd in ["/", ""] {
            let bundle = bundle_with(cwd, vec![]);
            ensure(bundle.path()).unwrap();
            assert_eq!(
                fs::read_dir(bundle.path().join("rootfs")).unwrap().count(),
                0
            );
        }
    }
}
