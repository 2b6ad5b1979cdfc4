//! Mount destinations resolved inside the rootfs and made there, as runc does.
//!
//! runc resolves each mount's destination inside the rootfs (filepath-securejoin's
//! `SecureJoin`: an absolute symlink starts at the rootfs, `..` stops at it, the missing part
//! of a dangling symlink's target is kept), makes what is missing there (`createIfNotExists`:
//! directories, and an empty file when a bind's source is not a directory) and mounts on the
//! result. libcontainer 0.7 makes a mount point only where no dangling symlink is in the way,
//! so an image with `/etc/localtime -> /usr/share/zoneinfo/…` (missing) and a bind at
//! `/etc/localtime` failed the create with "failed to prepare rootfs". Before libcontainer
//! runs, [`resolve_all`] resolves every destination with [`in_root::resolve`] and replaces it
//! by the resolved path, which has no symlink left for libcontainer to trip on.
//!
//! - In the spec's order, as they are mounted: a destination that reaches an earlier mount's
//!   (resolved) destination is resolved down to that mount point only; the rest lies in a
//!   filesystem mounted there first (the tmpfs at /dev, a bind's source), where libcontainer
//!   resolves it, inside the rootfs too, when it mounts.
//! - proc and sysfs mounts are left as they are: libcontainer, as runc, mounts them only on a
//!   plain directory of the image (runc's GHSA-fh74-hm69-rqjw).
//! - A destination that a symlink leads onto or below a proc or sysfs mount is refused, as
//!   runc's `checkProcMount` refuses one resolved under /proc: a mount there could hide
//!   /proc/self/attr from the container's LSM setup (runc's CVE-2019-16884).

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use oci_spec::runtime::{Mount, Spec};

use crate::in_root::{self, clean, Dangling, InRootError, Leaf, Make, Owner};

/// A mount destination that cannot be resolved or made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MountpointError {
    /// The bind's source cannot be looked at (to tell a file from a directory).
    #[error("mount at {}: source {}: {errno}", destination.display(), source_path.display())]
    Source {
        destination: PathBuf,
        source_path: PathBuf,
        errno: Errno,
    },
    /// A step of the walk inside the rootfs failed; the cause names the step, the resolved
    /// path and the errno.
    #[error("mount at {}", destination.display())]
    Resolve {
        destination: PathBuf,
        #[source]
        source: InRootError,
    },
    /// A symlink of the image leads the mount into the kernel's own filesystem.
    #[error(
        "mount at {}: a symlink leads it to {}, inside the {typ} mount at {}, where only \
         the spec's own mounts may go",
        destination.display(), resolved.display(), kernel_mount.display()
    )]
    IntoKernelFs {
        destination: PathBuf,
        resolved: PathBuf,
        typ: String,
        kernel_mount: PathBuf,
    },
}

impl From<MountpointError> for std::io::Error {
    fn from(e: MountpointError) -> Self {
        let errno = match &e {
            MountpointError::Source { errno, .. } => *errno,
            MountpointError::Resolve { source, .. } => source.errno,
            MountpointError::IntoKernelFs { .. } => Errno::EPERM,
        };
        std::io::Error::new(std::io::Error::from(errno).kind(), e)
    }
}

/// Whether `m` is a bind mount: type "bind", or a "bind"/"rbind" option (runc takes both).
pub(crate) fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

/// Replaces the destination of every mount of `spec` (but proc and sysfs ones) by its path
/// resolved inside `rootfs`, absolute and free of symlinks, and makes it exist there (see
/// the module docs), owned by the container's root. Stops at the first mount that fails.
pub(crate) fn resolve_all(spec: &mut Spec, rootfs: &Path) -> Result<(), MountpointError> {
    let owner = Owner::container_root(spec);
    let Some(mounts) = spec.mounts_mut() else {
        return Ok(());
    };
    // The (resolved, relative) destinations mounted so far, with the kernel filesystems'
    // types.
    let mut earlier: Vec<(PathBuf, Option<String>)> = Vec::with_capacity(mounts.len());
    for m in mounts.iter_mut() {
        let destination = m.destination().clone();
        let lexical = clean(&destination);
        let kernel_fs = matches!(m.typ().as_deref(), Some("proc" | "sysfs"));
        if kernel_fs {
            earlier.push((lexical, m.typ().clone()));
            continue;
        }
        let leaf = leaf(m).map_err(|(source_path, errno)| MountpointError::Source {
            destination: destination.clone(),
            source_path,
            errno,
        })?;
        let make = Make {
            leaf,
            dangling: Dangling::Follow,
            owner,
        };
        let resolved = in_root::resolve(rootfs, &lexical, Some(make), |p| {
            earlier.iter().any(|(d, _)| d == p)
        })
        .map_err(|source| MountpointError::Resolve {
            destination: destination.clone(),
            source,
        })?
        .path();
        if resolved != lexical {
            let kernel = earlier.iter().find_map(|(d, typ)| {
                typ.as_ref()
                    .filter(|_| resolved.starts_with(d))
                    .map(|t| (d, t))
            });
            if let Some((kernel_mount, typ)) = kernel {
                return Err(MountpointError::IntoKernelFs {
                    destination,
                    resolved: Path::new("/").join(&resolved),
                    typ: typ.clone(),
                    kernel_mount: Path::new("/").join(kernel_mount),
                });
            }
            tracing::info!(
                destination = %destination.display(),
                resolved = %Path::new("/").join(&resolved).display(),
                "mount destination resolved through symlinks of the rootfs"
            );
        }
        m.set_destination(Path::new("/").join(&resolved));
        earlier.push((resolved, None));
    }
    Ok(())
}

/// What a missing mount point becomes: a file for a bind of anything but a directory (its
/// source followed, as the kernel's bind does), else a directory. Errors: the source's path
/// and errno.
fn leaf(m: &Mount) -> Result<Leaf, (PathBuf, Errno)> {
    if !is_bind(m) {
        return Ok(Leaf::Dir);
    }
    let source = m.source().clone().unwrap_or_default();
    match std::fs::metadata(&source) {
        Ok(meta) if meta.is_dir() => Ok(Leaf::Dir),
        Ok(_) => Ok(Leaf::File),
        Err(e) => Err((
            source,
            Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        )),
    }
}

/// Where a container path lies before the spec's mounts are made.
#[derive(Debug, PartialEq, Eq)]
enum Place {
    /// In the rootfs itself.
    Rootfs,
    /// Under the bind mount of `source`, at `rel` below it.
    Bind { source: PathBuf, rel: PathBuf },
    /// Under a mount that is no bind (a tmpfs, /proc, …): unknown until it is made.
    OtherMount,
}

/// The deepest mount of the spec at or above `path` (relative, clean), later mounts winning
/// at the same depth as they are mounted last.
fn where_it_lives(spec: &Spec, path: &Path) -> Place {
    let mut best: Option<(usize, Place)> = None;
    for m in spec.mounts().iter().flatten() {
        let dest = clean(m.destination());
        let Ok(rel) = path.strip_prefix(&dest) else {
            continue;
        };
        let depth = dest.components().count();
        if best.as_ref().is_some_and(|(d, _)| *d > depth) {
            continue;
        }
        let place = match (is_bind(m), m.source()) {
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

/// Where a container path leads before the spec's mounts are made (see [`in_container`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InContainer {
    /// At `path` (relative, free of symlinks, existing) inside `root`: the rootfs or the
    /// source of the bind mount it lies under.
    At { root: PathBuf, path: PathBuf },
    /// Under a mount that is no bind (a tmpfs, /proc, …): unknown until it is made.
    OtherMount,
}

/// A failed [`in_container`]: the root walked in (the rootfs or a bind's source) and why.
#[derive(Debug, thiserror::Error)]
#[error("under {}: {source}", root.display())]
pub(crate) struct InContainerError {
    /// The rootfs, or the source of the bind the path lies under.
    pub root: PathBuf,
    #[source]
    pub source: InRootError,
}

/// Resolves the container path `path` as the container will see it, from outside before its
/// mounts are made: in `rootfs` up to the first mount point of `spec` met (destinations
/// already resolved, [`resolve_all`]), then, under a bind mount, in its source; every walk
/// with [`in_root::resolve`], making what is missing as `make` says (None: only looking).
/// A symlink never leads out of the root it is met in.
pub(crate) fn in_container(
    spec: &Spec,
    rootfs: &Path,
    path: &Path,
    make: Option<Make>,
) -> Result<InContainer, InContainerError> {
    let destinations: Vec<PathBuf> = spec
        .mounts()
        .iter()
        .flatten()
        .map(|m| clean(m.destination()))
        .collect();
    let error = |root: &Path| {
        let root = root.to_path_buf();
        move |source| InContainerError { root, source }
    };
    let in_rootfs = in_root::resolve(rootfs, path, make, |p| destinations.iter().any(|d| d == p))
        .map_err(error(rootfs))?;
    if in_rootfs.below_mount.as_os_str().is_empty() {
        return Ok(InContainer::At {
            root: rootfs.to_path_buf(),
            path: in_rootfs.made,
        });
    }
    match where_it_lives(spec, &in_rootfs.path()) {
        Place::Bind { source, rel } => {
            let made = in_root::resolve(&source, &rel, make, |_| false)
                .map_err(error(&source))?
                .made;
            Ok(InContainer::At {
                root: source,
                path: made,
            })
        }
        // A mount point was met, so the path lies under a mount.
        Place::Rootfs | Place::OtherMount => Ok(InContainer::OtherMount),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    use oci_spec::runtime::{MountBuilder, SpecBuilder};

    use super::*;

    struct Fixture {
        /// Holds the rootfs and, beside it, what must stay untouched outside it.
        dir: tempfile::TempDir,
        file: PathBuf,
        volume: PathBuf,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir(dir.path().join("rootfs")).unwrap();
            let file = dir.path().join("host-file");
            fs::write(&file, "from the host\n").unwrap();
            let volume = dir.path().join("host-dir");
            fs::create_dir(&volume).unwrap();
            Fixture { dir, file, volume }
        }

        fn rootfs(&self) -> PathBuf {
            self.dir.path().join("rootfs")
        }

        fn link(&self, path: &str, target: impl AsRef<Path>) {
            let path = self.rootfs().join(path.trim_start_matches('/'));
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            symlink(target, path).unwrap();
        }

        /// The destinations after [`resolve_all`] of `mounts`.
        fn resolve(&self, mounts: Vec<Mount>) -> Result<Vec<PathBuf>, MountpointError> {
            let mut spec = SpecBuilder::default().mounts(mounts).build().unwrap();
            resolve_all(&mut spec, &self.rootfs())?;
            let dests: Vec<PathBuf> = spec
                .mounts()
                .iter()
                .flatten()
                .map(|m| m.destination().clone())
                .collect();
            // Compared as strings too: `PathBuf`'s `==` ignores a trailing `/`, which would
            // make libcontainer take a file's mount point for a directory.
            for d in &dests {
                let d = d.to_str().unwrap();
                assert!(d == "/" || !d.ends_with('/'), "{d}");
            }
            Ok(dests)
        }

        /// The names beside the rootfs: nothing may be made there.
        fn outside(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(self.dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    fn bind(destination: &str, source: &Path) -> Mount {
        MountBuilder::default()
            .destination(destination)
            .typ("bind")
            .source(source)
            .options(vec!["rbind".to_string(), "ro".to_string()])
            .build()
            .unwrap()
    }

    fn kernel(destination: &str, typ: &str) -> Mount {
        MountBuilder::default()
            .destination(destination)
            .typ(typ)
            .source(typ)
            .build()
            .unwrap()
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    const UNTOUCHED: [&str; 3] = ["host-dir", "host-file", "rootfs"];

    #[test]
    fn a_dangling_absolute_symlink_gets_an_empty_file_for_a_file_bind() {
        let f = Fixture::new();
        f.link("/etc/localtime", "/usr/share/zoneinfo/Crius/Nowhere");
        let dests = f.resolve(vec![bind("/etc/localtime", &f.file)]).unwrap();
        assert_eq!(dests, [PathBuf::from("/usr/share/zoneinfo/Crius/Nowhere")]);
        let made = f.rootfs().join("usr/share/zoneinfo/Crius/Nowhere");
        let meta = fs::symlink_metadata(&made).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.len(), 0);
        assert_eq!(mode(&made), 0o644);
        assert_eq!(mode(&f.rootfs().join("usr/share/zoneinfo/Crius")), 0o755);
        assert!(!Path::new("/usr/share/zoneinfo/Crius").exists());
        assert_eq!(f.outside(), UNTOUCHED);
        // A second create finds it made: the same answer, the file untouched.
        fs::write(&made, "kept").unwrap();
        let dests = f.resolve(vec![bind("/etc/localtime", &f.file)]).unwrap();
        assert_eq!(dests, [PathBuf::from("/usr/share/zoneinfo/Crius/Nowhere")]);
        assert_eq!(fs::read_to_string(&made).unwrap(), "kept");
    }

    #[test]
    fn a_dangling_symlink_gets_a_directory_for_a_directory_bind() {
        let f = Fixture::new();
        f.link("/data", "/missing");
        let dests = f.resolve(vec![bind("/data", &f.volume)]).unwrap();
        assert_eq!(dests, [PathBuf::from("/missing")]);
        assert!(fs::symlink_metadata(f.rootfs().join("missing"))
            .unwrap()
            .is_dir());
        assert_eq!(mode(&f.rootfs().join("missing")), 0o755);
        assert_eq!(f.outside(), UNTOUCHED);
    }

    #[test]
    fn relative_symlinks_climb_no_higher_than_the_rootfs() {
        let f = Fixture::new();
        f.link("/opt/app/logs", "../../var/log/app");
        f.link("/opt/app/escape", "../../../../../../../host-dir/made");
        let dests = f
            .resolve(vec![
                bind("/opt/app/logs", &f.volume),
                bind("/opt/app/escape", &f.file),
            ])
            .unwrap();
        assert_eq!(
            dests,
            [
                PathBuf::from("/var/log/app"),
                PathBuf::from("/host-dir/made")
            ]
        );
        assert!(f.rootfs().join("var/log/app").is_dir());
        assert!(f.rootfs().join("host-dir/made").is_file());
        // `host-dir` beside the rootfs is where the climb would land outside it.
        assert_eq!(fs::read_dir(&f.volume).unwrap().count(), 0);
        assert_eq!(f.outside(), UNTOUCHED);
    }

    #[test]
    fn a_chain_of_symlinks_is_followed_to_a_directory_or_a_file() {
        let f = Fixture::new();
        fs::create_dir(f.rootfs().join("real")).unwrap();
        f.link("/c", "/real");
        f.link("/b", "/c/d");
        f.link("/a", "b");
        fs::create_dir_all(f.rootfs().join("usr/share/zoneinfo")).unwrap();
        fs::write(f.rootfs().join("usr/share/zoneinfo/UTC"), "TZif").unwrap();
        f.link("/etc/localtime", "../usr/share/zoneinfo/UTC");
        f.link("/etc/tz", "localtime");
        let dests = f
            .resolve(vec![bind("/a/x", &f.volume), bind("/etc/tz", &f.file)])
            .unwrap();
        assert_eq!(
            dests,
            [
                PathBuf::from("/real/d/x"),
                PathBuf::from("/usr/share/zoneinfo/UTC")
            ]
        );
        assert!(f.rootfs().join("real/d/x").is_dir());
        assert_eq!(
            fs::read_to_string(f.rootfs().join("usr/share/zoneinfo/UTC")).unwrap(),
            "TZif"
        );
        assert_eq!(f.outside(), UNTOUCHED);
    }

    #[test]
    fn a_symlink_to_a_host_path_stays_inside_the_rootfs() {
        let f = Fixture::new();
        // Both exist on the host; inside the rootfs they name the rootfs's own paths.
        f.link("/data", &f.volume);
        f.link("/etc/hosts", &f.file);
        let dests = f
            .resolve(vec![bind("/data", &f.volume), bind("/etc/hosts", &f.file)])
            .unwrap();
        let inside = |p: &Path| Path::new("/").join(p.strip_prefix("/").unwrap());
        assert_eq!(dests, [inside(&f.volume), inside(&f.file)]);
        let rootfs = f.rootfs();
        assert!(rootfs.join(f.volume.strip_prefix("/").unwrap()).is_dir());
        assert!(rootfs.join(f.file.strip_prefix("/").unwrap()).is_file());
        assert_eq!(fs::read_dir(&f.volume).unwrap().count(), 0);
        assert_eq!(fs::read_to_string(&f.file).unwrap(), "from the host\n");
        assert_eq!(f.outside(), UNTOUCHED);
    }

    #[test]
    fn below_an_earlier_mount_only_the_mount_point_is_resolved() {
        let f = Fixture::new();
        f.link("/dev/shm", "/run/shm");
        f.link("/data", "/missing");
        f.link("/proc", "/elsewhere");
        let dests = f
            .resolve(vec![
                kernel("/proc", "proc"),
                kernel("/dev", "tmpfs"),
                bind("/dev/shm", &f.volume),
                bind("/data", &f.volume),
                bind("/data/sub/../deeper", &f.file),
            ])
            .unwrap();
        assert_eq!(
            dests,
            [
                PathBuf::from("/proc"),
                PathBuf::from("/dev"),
                PathBuf::from("/dev/shm"),
                PathBuf::from("/missing"),
                PathBuf::from("/missing/deeper"),
            ]
        );
        // /proc is libcontainer's to refuse; /dev/shm lies in /dev's tmpfs and /deeper in
        // the volume: nothing of theirs is made in the image.
        assert!(fs::symlink_metadata(f.rootfs().join("proc"))
            .unwrap()
            .is_symlink());
        assert!(!f.rootfs().join("elsewhere").exists());
        assert!(!f.rootfs().join("run").exists());
        assert!(!f.rootfs().join("missing/deeper").exists());
        assert_eq!(fs::read_dir(&f.volume).unwrap().count(), 0);
    }

    #[test]
    fn a_symlink_into_proc_or_sys_is_refused() {
        for (link, typ) in [
            ("/proc/self/attr/current", "proc"),
            ("/sys/kernel", "sysfs"),
        ] {
            let f = Fixture::new();
            f.link("/etc/hosts", link);
            let kernel_mount = format!(
                "/{}",
                clean(Path::new(link))
                    .iter()
                    .next()
                    .unwrap()
                    .to_string_lossy()
            );
            let err = f
                .resolve(vec![
                    kernel(&kernel_mount, typ),
                    bind("/etc/hosts", &f.file),
                ])
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "mount at /etc/hosts: a symlink leads it to {link}, inside the {typ} mount \
                     at {kernel_mount}, where only the spec's own mounts may go"
                )
            );
            assert_eq!(
                std::io::Error::from(err).kind(),
                std::io::ErrorKind::PermissionDenied
            );
        }
    }

    #[test]
    fn errors_name_the_destination_the_resolved_path_and_the_errno() {
        use std::error::Error;

        let f = Fixture::new();
        f.link("/etc/localtime", "/usr/share/zoneinfo/UTC");
        fs::write(f.rootfs().join("usr"), "a file").unwrap();
        let err = f
            .resolve(vec![bind("/etc/localtime", &f.file)])
            .unwrap_err();
        assert_eq!(err.to_string(), "mount at /etc/localtime");
        assert_eq!(
            err.source().unwrap().to_string(),
            "open /usr: ENOTDIR: Not a directory"
        );
        // As the runtime's error carries it: the chain kept behind the io::Error.
        let err = std::io::Error::from(err);
        assert_eq!(err.kind(), std::io::ErrorKind::NotADirectory);
        assert_eq!(err.to_string(), "mount at /etc/localtime");
        assert_eq!(
            err.source().unwrap().to_string(),
            "open /usr: ENOTDIR: Not a directory"
        );

        f.link("/loop/a", "b");
        f.link("/loop/b", "a");
        let err = f.resolve(vec![bind("/loop/a", &f.file)]).unwrap_err();
        assert_eq!(
            err.source().unwrap().to_string(),
            "resolve /loop/a: ELOOP: Too many symbolic links encountered"
        );

        let missing = f.dir.path().join("no-such-source");
        let err = f.resolve(vec![bind("/mnt", &missing)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "mount at /mnt: source {}: ENOENT: No such file or directory",
                missing.display()
            )
        );
        assert_eq!(
            std::io::Error::from(err).kind(),
            std::io::ErrorKind::NotFound
        );
    }
}
