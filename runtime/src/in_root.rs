//! Paths resolved inside a root directory, with what is missing made there.
//!
//! A container's paths (a mount's destination, the working directory) name places in its root
//! filesystem, where the image's symlinks may point anywhere: inside the container an absolute
//! target starts at its `/`, and `..` at the `/` stays there. runc resolves such a path
//! the same way from outside the container (filepath-securejoin's `SecureJoin`, then
//! `MkdirAllInRoot`), as `openat2` does with `RESOLVE_IN_ROOT`. [`resolve`] walks the path one
//! component at a time: each step opens the directory resolved so far with `RESOLVE_IN_ROOT`
//! (so nothing, not even a symlink swapped in meanwhile, leads it out of the root), follows a
//! symlink by splicing its target into the rest of the path, and makes a missing component
//! inside the root. Nothing is ever created outside the root.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, readlinkat, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmod, fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{fchown, Gid, Uid};
use oci_spec::runtime::{LinuxIdMapping, Spec};

/// Symlinks followed in one walk before it gives up with ELOOP: Linux's `MAXSYMLINKS`.
const MAX_SYMLINKS: u32 = 40;

/// What a missing last component becomes; every missing component before it is a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leaf {
    /// A directory, mode 0755 (runc's mode for a mount point or a working directory).
    Dir,
    /// An empty file, mode 0644 (the mount point of a bind whose source is a file).
    File,
}

/// What the walk does at a symlink whose target is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dangling {
    /// Follow it and make its target, as runc does for a mount destination (`SecureJoin`
    /// keeps the missing part of a target, `createIfNotExists` makes it).
    Follow,
    /// Fail with ENOENT, as runc's `os.MkdirAll` of the working directory does.
    Refuse,
}

/// The host ids that own what the walk makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    /// The host ids of the container's root: root itself unless the spec maps user ids. runc
    /// makes mount points and the working directory as that user.
    pub(crate) fn container_root(spec: &Spec) -> Owner {
        let linux = spec.linux().as_ref();
        let map = |mappings: Option<&Vec<LinuxIdMapping>>| {
            mappings
                .into_iter()
                .flatten()
                .find(|m| m.container_id() == 0 && m.size() > 0)
                .map_or(0, |m| m.host_id())
        };
        Owner {
            uid: map(linux.and_then(|l| l.uid_mappings().as_ref())),
            gid: map(linux.and_then(|l| l.gid_mappings().as_ref())),
        }
    }
}

/// How [`resolve`] makes what is missing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Make {
    pub leaf: Leaf,
    pub dangling: Dangling,
    pub owner: Owner,
}

/// Where a path leads inside a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The part inside the root's own filesystem: relative to the root, free of symlinks,
    /// existing.
    pub made: PathBuf,
    /// The rest, from the first mount point met on: lexical, as that filesystem is not
    /// mounted yet (empty when no mount point was met).
    pub below_mount: PathBuf,
}

impl Resolved {
    /// The whole resolved path, relative to the root.
    pub(crate) fn path(&self) -> PathBuf {
        // Not `join` of an empty path, which would add a trailing `/` (a directory's name).
        let mut path = self.made.clone();
        path.extend(self.below_mount.iter());
        path
    }
}

/// A failed step of the walk: the operation, the path inside the root (resolved as far as the
/// walk got) and the errno.
#[derive(Debug, thiserror::Error)]
#[error("{op} /{}: {errno}", path.display())]
pub(crate) struct InRootError {
    /// What failed, e.g. `open` or `mkdir`.
    pub op: &'static str,
    /// The path inside the root, as far as the walk resolved it.
    pub path: PathBuf,
    pub errno: Errno,
}

impl InRootError {
    fn new(op: &'static str, path: &Path, errno: Errno) -> InRootError {
        // A kernel without openat2 is worth naming as such.
        let op = if errno == Errno::ENOSYS {
            "open (openat2 needs Linux 5.6)"
        } else {
            op
        };
        InRootError {
            op,
            path: path.to_path_buf(),
            errno,
        }
    }
}

impl From<InRootError> for std::io::Error {
    fn from(e: InRootError) -> Self {
        std::io::Error::new(std::io::Error::from(e.errno).kind(), e)
    }
}

/// Resolves `path` inside `root` (see the module docs) and makes what is missing as `make`
/// says, the owner `make.owner`; with no `make`, only looks (a missing component is ENOENT). A component for which `is_mount_point` (given the resolved
/// path so far, relative) is true ends the walk inside the root: it and the rest lie in a
/// filesystem mounted there later, and are kept lexically in [`Resolved::below_mount`].
/// Existing entries are left as they are.
///
/// Errors ([`InRootError`]) name the operation, the path and the errno: the root or a
/// component cannot be opened or made (EACCES, EROFS, …), a file where a directory is needed
/// (ENOTDIR), a symlink loop (ELOOP), a dangling symlink with [`Dangling::Refuse`] (ENOENT).
pub(crate) fn resolve(
    root: &Path,
    path: &Path,
    make: Option<Make>,
    is_mount_point: impl Fn(&Path) -> bool,
) -> Result<Resolved, InRootError> {
    let root = File::open(root).map(OwnedFd::from).map_err(|e| {
        let errno = Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
        InRootError::new("open the root", Path::new(""), errno)
    })?;
    let mut todo: VecDeque<OsString> = components(path).collect();
    let mut made = PathBuf::new();
    let mut below_mount = PathBuf::new();
    let mut symlinks = 0;
    // While the walk is inside a symlink's target: the length `todo` gets back to when it
    // leaves, and the (outermost) symlink's path.
    let mut in_symlink: Option<(usize, PathBuf)> = None;
    while let Some(name) = todo.pop_front() {
        if in_symlink
            .as_ref()
            .is_some_and(|(rest, _)| todo.len() < *rest)
        {
            in_symlink = None;
        }
        if name == ".." {
            // At the root, `made` stays empty: `..` never climbs out.
            if !below_mount.pop() {
                made.pop();
            }
            continue;
        }
        let next = made.join(&name);
        if !below_mount.as_os_str().is_empty() || is_mount_point(&next) {
            below_mount.push(&name);
            continue;
        }
        let parent = open_in_root(&root, &made).map_err(|e| InRootError::new("open", &made, e))?;
        match fstatat(
            Some(parent.as_raw_fd()),
            name.as_os_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(stat)
                if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK =>
            {
                symlinks += 1;
                if symlinks > MAX_SYMLINKS {
                    return Err(InRootError::new("resolve", &next, Errno::ELOOP));
                }
                if in_symlink.is_none() {
                    in_symlink = Some((todo.len(), next.clone()));
                }
                let target = readlinkat(Some(parent.as_raw_fd()), name.as_os_str())
                    .map_err(|e| InRootError::new("readlink", &next, e))?;
                if Path::new(&target).is_absolute() {
                    made = PathBuf::new();
                }
                for c in components(Path::new(&target))
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                {
                    todo.push_front(c);
                }
            }
            Ok(_) => made = next,
            Err(Errno::ENOENT) => {
                let Some(make) = make else {
                    return Err(InRootError::new("stat", &next, Errno::ENOENT));
                };
                if let (Dangling::Refuse, Some((_, symlink))) = (make.dangling, &in_symlink) {
                    return Err(InRootError::new(
                        "resolve the symlink",
                        symlink,
                        Errno::ENOENT,
                    ));
                }
                let leaf = if todo.is_empty() {
                    make.leaf
                } else {
                    Leaf::Dir
                };
                match create(&root, &parent, &name, &next, leaf, make.owner) {
                    Ok(()) => made = next,
                    // Made meanwhile by someone else: look again.
                    Err(e) if e.errno == Errno::EEXIST => todo.push_front(name),
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(InRootError::new("stat", &next, e)),
        }
    }
    Ok(Resolved { made, below_mount })
}

/// The names of `path` to walk, `..` kept: the root and `.` are no steps.
fn components(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(name) => Some(name.to_owned()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

/// Makes `name` in `parent` (which is `next`'s parent inside `root`) with runc's mode for
/// `leaf`, not left to the umask, owned by `owner`.
fn create(
    root: &OwnedFd,
    parent: &OwnedFd,
    name: &OsStr,
    next: &Path,
    leaf: Leaf,
    owner: Owner,
) -> Result<(), InRootError> {
    let (made, mode) = match leaf {
        Leaf::Dir => {
            let mode = Mode::from_bits_truncate(0o755);
            mkdirat(Some(parent.as_raw_fd()), name, mode)
                .map_err(|e| InRootError::new("mkdir", next, e))?;
            let dir = open_in_root(root, next).map_err(|e| InRootError::new("open", next, e))?;
            (dir, mode)
        }
        Leaf::File => {
            let mode = Mode::from_bits_truncate(0o644);
            let fd = openat(
                Some(parent.as_raw_fd()),
                name,
                OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                mode,
            )
            .map_err(|e| InRootError::new("create", next, e))?;
            // SAFETY: openat returned a new fd that nothing else owns.
            (unsafe { OwnedFd::from_raw_fd(fd) }, mode)
        }
    };
    fchmod(made.as_raw_fd(), mode).map_err(|e| InRootError::new("chmod", next, e))?;
    if (owner.uid, owner.gid) != (0, 0) {
        fchown(
            made.as_raw_fd(),
            Some(Uid::from_raw(owner.uid)),
            Some(Gid::from_raw(owner.gid)),
        )
        .map_err(|e| InRootError::new("chown", next, e))?;
    }
    Ok(())
}

/// Opens `rel` (relative to the root) as a directory, resolved with `root` as `/`.
pub(crate) fn open_in_root(root: &OwnedFd, rel: &Path) -> Result<OwnedFd, Errno> {
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
            Err(e) => return Err(e),
        }
    }
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
