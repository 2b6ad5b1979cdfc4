//! A layer tarball → a directory that overlayfs can use as a lower layer.
//!
//! OCI whiteouts become overlayfs's: `.wh.<name>` a 0/0 character device
//! `<name>`, `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its
//! directory. Owners, modes (setuid bits too), mtimes, xattrs, hard links and
//! symlinks are kept.
//!
//! A whiteout hides only what the LOWER layers have: entries of its own layer
//! stay, wherever they come in the tar, before or after it (OCI image spec,
//! "Whiteouts"). So whiteouts are applied once the whole tar is unpacked, to
//! what this layer holds at that path by then: nothing → the 0/0 device; a
//! directory (the layer re-creates it) → the directory made opaque, so that
//! only this layer's content shows; anything else (a file, symlink, … of this
//! layer) → left as is, it hides the lower path by itself. An opaque marker
//! marks its directory opaque if the directory is still one at the end.
//!
//! Safety: the archive is untrusted. A path with `..` is refused, and no
//! symlink is ever followed: every parent of an entry must be a real directory
//! of this layer (`a -> /etc` then `a/passwd` is refused), and the entry itself
//! is created with no-follow calls. Needs root (mknod, chown, trusted xattrs).

use std::ffi::{CString, OsStr};
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{lchown, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use sha2::{Digest, Sha256};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
/// aufs keeps its own metadata under `.wh..wh.` names; overlayfs has no use for it.
const AUFS_META_PREFIX: &str = ".wh..wh.";
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {entry:?} refused: {reason}")]
    Unsafe { entry: String, reason: String },
    #[error("layer entry {entry:?}: {source}")]
    Entry { entry: String, source: io::Error },
    #[error("reading the layer archive: {0}")]
    Read(io::Error),
}

fn entry_err(entry: &Path) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Entry {
        entry: entry.display().to_string(),
        source,
    }
}

fn errno_err(entry: &Path) -> impl FnOnce(nix::errno::Errno) -> UnpackError + '_ {
    move |errno| UnpackError::Entry {
        entry: entry.display().to_string(),
        source: io::Error::from(errno),
    }
}

/// Unpacks a layer blob (gzip, zstd or plain tar, told apart by their magic
/// bytes) read from `blob` as it arrives into `dest` and returns the digest
/// of the uncompressed tar, the layer's diff ID (`sha256:…`), for the caller
/// to check against the config. Reads `blob` to its end.
pub fn unpack_layer_stream(blob: impl Read, dest: &Path) -> Result<String, UnpackError> {
    let mut buffered = BufReader::with_capacity(256 * 1024, blob);
    let head = buffered.fill_buf().map_err(UnpackError::Read)?;
    let tar: Box<dyn Read> = if head.starts_with(GZIP_MAGIC) {
        Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
    } else if head.starts_with(ZSTD_MAGIC) {
        Box::new(zstd::stream::read::Decoder::with_buffer(buffered).map_err(UnpackError::Read)?)
    } else {
        Box::new(buffered)
    };
    let mut hashing = HashingReader {
        inner: tar,
        hasher: Sha256::new(),
    };
    unpack(&mut hashing, dest)?;
    // The tar may end before the stream does (end-of-archive blocks, padding):
    // the diff ID covers every byte.
    io::copy(&mut hashing, &mut io::sink()).map_err(UnpackError::Read)?;
    Ok(format!("sha256:{}", hex::encode(hashing.hasher.finalize())))
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Unpacks a tar stream into `dest`, which must exist.
pub fn unpack(reader: impl Read, dest: &Path) -> Result<(), UnpackError> {
    let mut archive = tar::Archive::new(reader);
    // Directory mtimes change as entries land in them: set them last, deepest first.
    let mut dir_mtimes: Vec<(PathBuf, i64)> = Vec::new();
    // Whiteouts wait for the whole layer: they must not touch its own entries.
    let mut whiteouts: Vec<(PathBuf, Whiteout)> = Vec::new();
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        let rel = layer_path(&entry.path_bytes())?;
        match unpack_entry(&mut entry, &rel, dest)? {
            Unpacked::Dir(mtime) => dir_mtimes.push((rel, mtime)),
            Unpacked::Whiteout(whiteout) => whiteouts.push(whiteout),
            Unpacked::Other => {}
        }
    }
    for (rel, whiteout) in &whiteouts {
        apply_whiteout(dest, rel, *whiteout)?;
    }
    for (rel, mtime) in dir_mtimes.iter().rev() {
        set_mtime(&dest.join(rel), *mtime).map_err(errno_err(rel))?;
    }
    Ok(())
}

/// An archive path made relative to the layer root; `..` anywhere is refused.
fn layer_path(raw: &[u8]) -> Result<PathBuf, UnpackError> {
    let path = Path::new(OsStr::from_bytes(raw));
    let mut rel = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(c) => rel.push(c),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(UnpackError::Unsafe {
                    entry: path.display().to_string(),
                    reason: "the path leaves the layer through \"..\"".into(),
                })
            }
        }
    }
    Ok(rel)
}

/// How a whiteout hides the lower layers' path it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Whiteout {
    /// `.wh.<name>`: the path itself.
    Path,
    /// `.wh..wh..opq`: everything in this directory.
    Opaque,
}

/// What an entry left to do once the whole layer is unpacked.
enum Unpacked {
    /// A directory's mtime, set at the very end.
    Dir(i64),
    /// A whiteout of the path (relative to the layer) applied after every entry.
    Whiteout((PathBuf, Whiteout)),
    Other,
}

/// Hides the lower layers' `rel` by what this layer holds there once all of
/// its entries are unpacked (see the module doc). A parent that is no longer
/// a real directory of this layer (a later entry replaced it by a file or a
/// symlink) already hides everything below it: the whiteout has nothing left
/// to do, and no symlink is followed to do it.
fn apply_whiteout(dest: &Path, rel: &Path, whiteout: Whiteout) -> Result<(), UnpackError> {
    let mut dir = dest.to_path_buf();
    let parents = match whiteout {
        Whiteout::Path => rel.parent().unwrap_or(Path::new("")),
        Whiteout::Opaque => rel,
    };
    for component in parents.components() {
        dir.push(component);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_dir() => {}
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(entry_err(rel)(e)),
        }
    }
    if whiteout == Whiteout::Opaque {
        return set_xattr(&dir, OVERLAY_OPAQUE_XATTR, b"y").map_err(entry_err(rel));
    }
    let target = dest.join(rel);
    match fs::symlink_metadata(&target) {
        // Re-created by this layer: only its own content may show.
        Ok(meta) if meta.file_type().is_dir() => {
            set_xattr(&target, OVERLAY_OPAQUE_XATTR, b"y").map_err(entry_err(rel))
        }
        // A file, symlink, … of this layer hides the lower path by itself.
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            mknod(&target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).map_err(errno_err(rel))
        }
        Err(e) => Err(entry_err(rel)(e)),
    }
}

/// Creates the entry, or records the whiteout it is.
fn unpack_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    rel: &Path,
    dest: &Path,
) -> Result<Unpacked, UnpackError> {
    let header = entry.header();
    let kind = header.entry_type();
    if matches!(
        kind,
        tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink
    ) {
        // Metadata for other entries (the tar crate applies the per-entry
        // kinds itself); `git archive` writes a global one.
        return Ok(Unpacked::Other);
    }
    let mode = header.mode().map_err(entry_err(rel))? & 0o7777;
    let uid = header.uid().map_err(entry_err(rel))? as u32;
    let gid = header.gid().map_err(entry_err(rel))? as u32;
    let mtime = header.mtime().map_err(entry_err(rel))? as i64;
    let (dev_major, dev_minor) = (
        header.device_major().ok().flatten().unwrap_or(0),
        header.device_minor().ok().flatten().unwrap_or(0),
    );

    if rel.as_os_str().is_empty() {
        // The layer root itself ("./"): only its metadata can be taken.
        if !kind.is_dir() {
            return Err(UnpackError::Unsafe {
                entry: "/".into(),
                reason: "the layer root must be a directory".into(),
            });
        }
        apply_owner_mode(dest, rel, uid, gid, mode)?;
        return Ok(Unpacked::Dir(mtime));
    }

    create_parents(dest, rel)?;
    let target = dest.join(rel);
    let name = rel.file_name().unwrap_or_default().to_string_lossy();

    if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
        let parent = rel.parent().unwrap_or(Path::new(""));
        if name == OPAQUE_WHITEOUT {
            return Ok(Unpacked::Whiteout((parent.to_path_buf(), Whiteout::Opaque)));
        }
        if name.starts_with(AUFS_META_PREFIX) || hidden.is_empty() {
            return Ok(Unpacked::Other);
        }
        if hidden == "." || hidden == ".." {
            return Err(unsafe_entry(rel, "a whiteout of \".\" or \"..\""));
        }
        return Ok(Unpacked::Whiteout((parent.join(hidden), Whiteout::Path)));
    }

    remove_existing(&target, kind.is_dir()).map_err(entry_err(rel))?;
    let mut dir_mtime = None;
    match kind {
        tar::EntryType::Directory => {
            if let Err(e) = fs::create_dir(&target) {
                if e.kind() != io::ErrorKind::AlreadyExists {
                    return Err(entry_err(rel)(e));
                }
            }
            apply_owner_mode(&target, rel, uid, gid, mode)?;
            dir_mtime = Some(mtime);
        }
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&target)
                .map_err(entry_err(rel))?;
            io::copy(entry, &mut file).map_err(entry_err(rel))?;
            drop(file);
            apply_owner_mode(&target, rel, uid, gid, mode)?;
        }
        tar::EntryType::Symlink => {
            let link = entry
                .link_name_bytes()
                .ok_or_else(|| unsafe_entry(rel, "a symlink without a target"))?;
            // The target is stored as given: it is resolved inside the
            // container's root at run time, never here.
            std::os::unix::fs::symlink(OsStr::from_bytes(&link), &target)
                .map_err(entry_err(rel))?;
            lchown(&target, Some(uid), Some(gid)).map_err(entry_err(rel))?;
        }
        tar::EntryType::Link => {
            let link = entry
                .link_name_bytes()
                .ok_or_else(|| unsafe_entry(rel, "a hard link without a target"))?;
            let source_rel = layer_path(&link)?;
            check_parents(dest, &source_rel)?;
            let source = dest.join(&source_rel);
            // linkat without AT_SYMLINK_FOLLOW: a link to a symlink links the
            // symlink itself, never what it points to.
            fs::hard_link(&source, &target).map_err(entry_err(rel))?;
            // The inode's metadata came with its first name.
            return Ok(Unpacked::Other);
        }
        tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
            let flag = match kind {
                tar::EntryType::Char => SFlag::S_IFCHR,
                tar::EntryType::Block => SFlag::S_IFBLK,
                _ => SFlag::S_IFIFO,
            };
            let dev = makedev(u64::from(dev_major), u64::from(dev_minor));
            mknod(&target, flag, Mode::empty(), dev).map_err(errno_err(rel))?;
            apply_owner_mode(&target, rel, uid, gid, mode)?;
        }
        other => {
            tracing::debug!(entry = %rel.display(), kind = ?other, "layer entry type skipped");
            return Ok(Unpacked::Other);
        }
    }
    apply_xattrs(entry, &target, rel)?;
    match dir_mtime {
        Some(mtime) => Ok(Unpacked::Dir(mtime)),
        None => {
            set_mtime(&target, mtime).map_err(errno_err(rel))?;
            Ok(Unpacked::Other)
        }
    }
}

fn unsafe_entry(rel: &Path, reason: &str) -> UnpackError {
    UnpackError::Unsafe {
        entry: rel.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Owner first: chown clears setuid and setgid bits, so the mode follows it.
fn apply_owner_mode(
    path: &Path,
    rel: &Path,
    uid: u32,
    gid: u32,
    mode: u32,
) -> Result<(), UnpackError> {
    lchown(path, Some(uid), Some(gid)).map_err(entry_err(rel))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(entry_err(rel))
}

/// Makes every missing parent of `rel` a directory (root-owned, 0755, as
/// docker does) and refuses a parent that exists as anything but a real
/// directory: following a symlink there could write outside the layer.
fn create_parents(dest: &Path, rel: &Path) -> Result<(), UnpackError> {
    walk_parents(dest, rel, true)
}

/// As `create_parents`, for a path that must already exist (a hard link's source).
fn check_parents(dest: &Path, rel: &Path) -> Result<(), UnpackError> {
    walk_parents(dest, rel, false)
}

fn walk_parents(dest: &Path, rel: &Path, create: bool) -> Result<(), UnpackError> {
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    let mut dir = dest.to_path_buf();
    for component in parent.components() {
        dir.push(component);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_dir() => {}
            Ok(_) => {
                return Err(unsafe_entry(
                    rel,
                    &format!(
                    "its parent {} is not a directory of this layer (a symlink is never followed)",
                    dir.strip_prefix(dest).unwrap_or(&dir).display()
                ),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                fs::create_dir(&dir).map_err(entry_err(rel))?;
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                    .map_err(entry_err(rel))?;
            }
            Err(e) => return Err(entry_err(rel)(e)),
        }
    }
    Ok(())
}

/// A later entry replaces an earlier one at the same path; a directory stays
/// when a directory replaces it (its metadata is updated).
fn remove_existing(path: &Path, keep_dir: bool) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_dir() => {
            if keep_dir {
                Ok(())
            } else {
                fs::remove_dir_all(path)
            }
        }
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn apply_xattrs<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    target: &Path,
    rel: &Path,
) -> Result<(), UnpackError> {
    let Some(extensions) = entry.pax_extensions().map_err(entry_err(rel))? else {
        return Ok(());
    };
    for extension in extensions {
        let extension = extension.map_err(entry_err(rel))?;
        let Ok(key) = extension.key() else { continue };
        if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
            match set_xattr(target, name, extension.value_bytes()) {
                Ok(()) => {}
                // As containerd: a file system without this xattr namespace
                // (or xattrs at all) does not fail the layer.
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    let entry = rel.display();
                    tracing::warn!(%entry, xattr = name, "xattr not supported here: skipped");
                }
                Err(e) => return Err(entry_err(rel)(e)),
            }
        }
    }
    Ok(())
}

/// lsetxattr: on the path itself, never through a symlink.
fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let path = CString::new(path.as_os_str().as_bytes())?;
    let name = CString::new(name)?;
    // SAFETY: both strings are NUL-terminated and outlive the call; value is a
    // valid slice of value.len() bytes.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_mtime(path: &Path, mtime: i64) -> nix::Result<()> {
    let time = TimeSpec::new(mtime, 0);
    utimensat(None, path, &time, &time, UtimensatFlags::NoFollowSymlink)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    use super::*;

    fn is_root() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        eprintln!("skipping: unpacking layers needs root (mknod, chown, trusted xattrs)");
        false
    }

    /// A tarball built entry by entry, with raw names so that hostile paths
    /// (which the tar crate's own setters refuse) can be written too.
    struct Tarball(tar::Builder<Vec<u8>>);

    impl Tarball {
        fn new() -> Tarball {
            Tarball(tar::Builder::new(Vec::new()))
        }

        fn entry(
            &mut self,
            kind: tar::EntryType,
            path: &str,
            mode: u32,
            data: &[u8],
        ) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            h.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_000_000);
            h.set_size(data.len() as u64);
            h
        }

        fn add(&mut self, mut h: tar::Header, data: &[u8]) -> &mut Tarball {
            h.set_cksum();
            self.0.append(&h, data).unwrap();
            self
        }

        fn dir(&mut self, path: &str, mode: u32) -> &mut Tarball {
            let h = self.entry(tar::EntryType::Directory, path, mode, b"");
            self.add(h, b"")
        }

        fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> &mut Tarball {
            let h = self.entry(tar::EntryType::Regular, path, mode, data);
            self.add(h, data)
        }

        fn link(&mut self, kind: tar::EntryType, path: &str, target: &str) -> &mut Tarball {
            let mut h = self.entry(kind, path, 0o777, b"");
            h.as_gnu_mut().unwrap().linkname[..target.len()].copy_from_slice(target.as_bytes());
            self.add(h, b"")
        }

        fn finish(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
    }

    fn unpack_into(tar: &[u8]) -> (tempfile::TempDir, Result<(), UnpackError>) {
        let dir = tempfile::tempdir().unwrap();
        let result = unpack(tar, dir.path());
        (dir, result)
    }

    #[test]
    fn files_dirs_owners_modes_and_mtimes() {
        if !is_root() {
            return;
        }
        let mut t = Tarball::new();
        t.dir("etc/", 0o750);
        let mut h = t.entry(tar::EntryType::Regular, "bin/su", 0o4755, b"elf");
        h.set_uid(1000);
        h.set_gid(1001);
        h.set_mtime(1234);
        t.add(h, b"elf");
        t.file("etc/passwd", 0o644, b"root:x:0:0::/root:/bin/sh\n");
        let (dir, result) = unpack_into(&t.finish());
        result.unwrap();
        let root = dir.path();
        let su = fs::symlink_metadata(root.join("bin/su")).unwrap();
        assert_eq!((su.uid(), su.gid()), (1000, 1001));
        assert_eq!(su.mode() & 0o7777, 0o4755, "setuid survives the chown");
        assert_eq!(su.mtime(), 1234);
        let etc = fs::symlink_metadata(root.join("etc")).unwrap();
        assert_eq!(etc.mode() & 0o7777, 0o750);
        assert_eq!(
            etc.mtime(),
            1_000_000,
            "directory mtime set after its children"
        );
        assert_eq!(
            fs::symlink_metadata(root.join("bin")).unwrap().mode() & 0o7777,
            0o755,
            "implicit parent"
        );
        assert_eq!(
            fs::read_to_string(root.join("etc/passwd")).unwrap(),
            "root:x:0:0::/root:/bin/sh\n"
        );
    }

    #[test]
    fn whiteouts_become_overlay_form() {
        if !is_root() {
            return;
        }
        let mut t = Tarball::new();
        t.file("data/.wh.removed.txt", 0o644, b"")
            .dir("data/opaque/", 0o755)
            .file("data/opaque/.wh..wh..opq", 0o644, b"")
            .file("data/opaque/new.txt", 0o644, b"new")
            .file(".wh..wh.plnk", 0o644, b"");
        let h = t.entry(
            tar::EntryType::XGlobalHeader,
            "pax_global_header",
            0o644,
            b"",
        );
        t.add(h, b"");
        let (dir, result) = unpack_into(&t.finish());
        result.unwrap();
        let root = dir.path();
        let whiteout = fs::symlink_metadata(root.join("data/removed.txt")).unwrap();
        assert!(whiteout.file_type().is_char_device());
        assert_eq!(whiteout.rdev(), 0);
        assert!(!root.join("data/.wh.removed.txt").exists());
        assert!(!root.join("data/opaque/.wh..wh..opq").exists());
        assert!(!root.join(".wh..wh.plnk").exists());
        assert!(!root.join("pax_global_header").exists());
        let mut value = [0u8; 4];
        let path = CString::new(root.join("data/opaque").as_os_str().as_bytes()).unwrap();
        let name = CString::new(OVERLAY_OPAQUE_XATTR).unwrap();
        // SAFETY: valid NUL-terminated strings and a 4-byte buffer.
        let n = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                name.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        assert_eq!(n, 1, "opaque xattr set");
        assert_eq!(value[0], b'y');
    }

    fn opaque(path: &Path) -> Option<Vec<u8>> {
        let path = CString::new(path.as_os_str().as_bytes()).unwrap();
        let name = CString::new(OVERLAY_OPAQUE_XATTR).unwrap();
        let mut value = [0u8; 8];
        // SAFETY: valid NUL-terminated strings and an 8-byte buffer.
        let n = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                name.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        (n >= 0).then(|| value[..n as usize].to_vec())
    }

    fn is_whiteout_device(path: &Path) -> bool {
        fs::symlink_metadata(path)
            .map(|m| m.file_type().is_char_device() && m.rdev() == 0)
            .unwrap_or(false)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// One layer's tar from `(path, kind)` steps in the given order: a path
    /// ending in `/` is a directory, `->` a symlink, anything else a file
    /// holding its own path.
    fn layer(steps: &[&str]) -> Vec<u8> {
        let mut t = Tarball::new();
        for step in steps {
            if step.ends_with('/') {
                t.dir(step, 0o755);
            } else if let Some((path, target)) = step.split_once(" -> ") {
                t.link(tar::EntryType::Symlink, path, target);
            } else {
                t.file(step, 0o644, step.as_bytes());
            }
        }
        t.finish()
    }

    /// The entries in both orders: the whiteouts (names holding `.wh.`)
    /// first, then last.
    fn both_orders<'a>(steps: &[&'a str]) -> [Vec<&'a str>; 2] {
        let (whiteouts, others): (Vec<&str>, Vec<&str>) =
            steps.iter().partition(|s| s.contains(WHITEOUT_PREFIX));
        [
            whiteouts.iter().chain(&others).copied().collect(),
            others.iter().chain(&whiteouts).copied().collect(),
        ]
    }

    /// What overlayfs shows of `upper` stacked on `lower` (read-only mount),
    /// as sorted `path` / `path=content` / `path->target` lines.
    fn merged_view(lower: &Path, upper: &Path) -> Vec<String> {
        fn walk(root: &Path, rel: &Path, out: &mut Vec<String>) {
            for name in names(&root.join(rel)) {
                let rel = rel.join(&name);
                let path = root.join(&rel);
                let meta = fs::symlink_metadata(&path).unwrap();
                if meta.is_dir() {
                    out.push(format!("{}/", rel.display()));
                    walk(root, &rel, out);
                } else if meta.file_type().is_symlink() {
                    let target = fs::read_link(&path).unwrap();
                    out.push(format!("{} -> {}", rel.display(), target.display()));
                } else {
                    let content = fs::read_to_string(&path).unwrap();
                    out.push(format!("{}={content}", rel.display()));
                }
            }
        }
        let target = tempfile::tempdir().unwrap();
        let options = format!("lowerdir={}:{}", upper.display(), lower.display());
        nix::mount::mount(
            Some("overlay"),
            target.path(),
            Some("overlay"),
            nix::mount::MsFlags::MS_RDONLY,
            Some(options.as_str()),
        )
        .expect("overlay mount of the two layers");
        let view = std::panic::catch_unwind(|| {
            let mut out = Vec::new();
            walk(target.path(), Path::new(""), &mut out);
            out
        });
        nix::mount::umount2(target.path(), nix::mount::MntFlags::MNT_DETACH).unwrap();
        view.unwrap()
    }

    /// Unpacks `lower`, then `upper` in both orders of its whiteouts; checks
    /// the upper layer dir with `check` and the overlay of the two against
    /// `expected`.
    fn stack_in_both_orders(
        lower: &[&str],
        upper: &[&str],
        expected: &[&str],
        check: impl Fn(&Path, &str),
    ) {
        let lower_tar = layer(lower);
        for (order, steps) in ["whiteouts first", "whiteouts last"]
            .into_iter()
            .zip(both_orders(upper))
        {
            let lower_dir = tempfile::tempdir().unwrap();
            unpack(&lower_tar[..], lower_dir.path()).unwrap();
            let (upper_dir, result) = unpack_into(&layer(&steps));
            result.unwrap_or_else(|e| panic!("{order} {steps:?}: {e}"));
            check(upper_dir.path(), order);
            assert_eq!(
                merged_view(lower_dir.path(), upper_dir.path()),
                expected,
                "{order}: {steps:?}"
            );
        }
    }

    #[test]
    fn whiteout_of_a_dir_recreated_in_the_same_layer_hides_only_the_lower_one() {
        if !is_root() {
            return;
        }
        let lower = ["a1/", "a1/old", "keep"];
        let expected = ["a1/", "a1/newfile=a1/newfile", "keep=keep"];
        let check = |upper: &Path, order: &str| {
            let a1 = upper.join("a1");
            assert!(fs::symlink_metadata(&a1).unwrap().is_dir(), "{order}");
            assert_eq!(opaque(&a1).as_deref(), Some(&b"y"[..]), "{order}");
            assert_eq!(names(&a1), ["newfile"], "{order}");
            assert!(!upper.join(".wh.a1").exists(), "{order}");
        };
        // With the directory's own entry, and with it only implied by its file.
        stack_in_both_orders(&lower, &[".wh.a1", "a1/", "a1/newfile"], &expected, check);
        stack_in_both_orders(&lower, &[".wh.a1", "a1/newfile"], &expected, check);
        // Deeper: the re-created directory's own subdirectory.
        stack_in_both_orders(
            &["d/", "d/a1/", "d/a1/old/", "d/a1/old/x"],
            &["d/.wh.a1", "d/a1/sub/newfile"],
            &[
                "d/",
                "d/a1/",
                "d/a1/sub/",
                "d/a1/sub/newfile=d/a1/sub/newfile",
            ],
            |upper, order| {
                assert_eq!(
                    opaque(&upper.join("d/a1")).as_deref(),
                    Some(&b"y"[..]),
                    "{order}"
                );
                assert_eq!(
                    opaque(&upper.join("d")),
                    None,
                    "{order}: only the whited-out dir"
                );
            },
        );
    }

    #[test]
    fn opaque_marker_keeps_the_same_layers_entries_in_either_order() {
        if !is_root() {
            return;
        }
        let lower = ["d/", "d/old", "d/old-dir/deep"];
        let expected = ["d/", "d/new=d/new", "d/sub/", "d/sub/x=d/sub/x"];
        let check = |upper: &Path, order: &str| {
            let d = upper.join("d");
            assert_eq!(opaque(&d).as_deref(), Some(&b"y"[..]), "{order}");
            assert_eq!(names(&d), ["new", "sub"], "{order}");
        };
        stack_in_both_orders(
            &lower,
            &["d/.wh..wh..opq", "d/", "d/new", "d/sub/x"],
            &expected,
            check,
        );
        stack_in_both_orders(
            &lower,
            &["d/.wh..wh..opq", "d/new", "d/sub/x"],
            &expected,
            check,
        );
    }

    #[test]
    fn whiteout_of_a_file_recreated_in_the_same_layer_keeps_the_new_file() {
        if !is_root() {
            return;
        }
        stack_in_both_orders(
            &["f", "g/", "g/old"],
            &[".wh.f", "f", ".wh.g", "g"],
            &["f=f", "g=g"],
            |upper, order| {
                for name in ["f", "g"] {
                    let meta = fs::symlink_metadata(upper.join(name)).unwrap();
                    assert!(meta.is_file(), "{order}: {name} is this layer's file");
                    assert_eq!(fs::read(upper.join(name)).unwrap(), name.as_bytes());
                }
            },
        );
    }

    #[test]
    fn whiteout_of_a_name_the_same_layer_adds_later_keeps_it() {
        if !is_root() {
            return;
        }
        // A symlink replacing a lower directory, a new directory over a
        // lower file, and a plain whiteout beside them.
        stack_in_both_orders(
            &["s/", "s/old", "t", "gone", "keep"],
            &[".wh.s", "s -> keep", ".wh.t", "t/", "t/inner", ".wh.gone"],
            &["keep=keep", "s -> keep", "t/", "t/inner=t/inner"],
            |upper, order| {
                assert!(fs::symlink_metadata(upper.join("s")).unwrap().is_symlink());
                assert_eq!(
                    opaque(&upper.join("t")).as_deref(),
                    Some(&b"y"[..]),
                    "{order}"
                );
                assert!(is_whiteout_device(&upper.join("gone")), "{order}");
                assert!(!is_whiteout_device(&upper.join("s")), "{order}");
            },
        );
    }

    #[test]
    fn whiteout_under_a_parent_the_layer_replaces_is_moot_and_dot_names_are_refused() {
        if !is_root() {
            return;
        }
        // The parent becomes a symlink after the whiteout: nothing is
        // followed, nothing is created through it.
        let outside = tempfile::tempdir().unwrap();
        let link = format!("d -> {}", outside.path().display());
        for steps in [vec!["d/.wh.x", "d", link.as_str()], vec!["d/.wh.x", "d"]] {
            let (dir, result) = unpack_into(&layer(&steps));
            result.unwrap_or_else(|e| panic!("{steps:?}: {e}"));
            assert!(!fs::symlink_metadata(dir.path().join("d")).unwrap().is_dir());
            assert!(names(outside.path()).is_empty(), "{steps:?}");
        }
        for name in [".wh..", ".wh..."] {
            let (_dir, result) = unpack_into(&layer(&[&format!("sub/{name}")]));
            assert!(
                matches!(result, Err(UnpackError::Unsafe { .. })),
                "{name}: {result:?}"
            );
        }
    }

    #[test]
    fn hardlinks_and_symlinks() {
        if !is_root() {
            return;
        }
        let mut t = Tarball::new();
        t.file("links/original.txt", 0o644, b"linked\n")
            .link(
                tar::EntryType::Link,
                "links/hardlink.txt",
                "links/original.txt",
            )
            .link(tar::EntryType::Symlink, "links/symlink.txt", "original.txt")
            .link(tar::EntryType::Symlink, "links/abs", "/etc/shadow");
        let (dir, result) = unpack_into(&t.finish());
        result.unwrap();
        let root = dir.path();
        let original = fs::metadata(root.join("links/original.txt")).unwrap();
        let hard = fs::metadata(root.join("links/hardlink.txt")).unwrap();
        assert_eq!(original.ino(), hard.ino());
        assert_eq!(original.nlink(), 2);
        assert_eq!(
            fs::read_link(root.join("links/symlink.txt")).unwrap(),
            Path::new("original.txt")
        );
        assert_eq!(
            fs::read_link(root.join("links/abs")).unwrap(),
            Path::new("/etc/shadow")
        );
    }

    #[test]
    fn escaping_paths_are_refused() {
        if !is_root() {
            return;
        }
        let outside = tempfile::tempdir().unwrap();
        let outside_str = outside.path().to_str().unwrap();

        let mut t = Tarball::new();
        t.file("../evil", 0o644, b"x");
        let (_dir, result) = unpack_into(&t.finish());
        assert!(
            matches!(result, Err(UnpackError::Unsafe { .. })),
            "{result:?}"
        );

        // A symlink to a directory outside, then a file through it.
        let mut t = Tarball::new();
        t.link(tar::EntryType::Symlink, "esc", outside_str)
            .file("esc/evil", 0o644, b"x");
        let (_dir, result) = unpack_into(&t.finish());
        let err = result.unwrap_err().to_string();
        assert!(err.contains("esc/evil") && err.contains("symlink"), "{err}");
        assert!(!outside.path().join("evil").exists());

        // A hard link to a file outside.
        let mut t = Tarball::new();
        t.link(tar::EntryType::Link, "steal", "../../etc/passwd");
        let (_dir, result) = unpack_into(&t.finish());
        assert!(
            matches!(result, Err(UnpackError::Unsafe { .. })),
            "{result:?}"
        );

        // A hard link through a symlinked directory.
        let mut t = Tarball::new();
        t.link(tar::EntryType::Symlink, "etc", "/etc").link(
            tar::EntryType::Link,
            "steal",
            "etc/passwd",
        );
        let (_dir, result) = unpack_into(&t.finish());
        assert!(
            matches!(result, Err(UnpackError::Unsafe { .. })),
            "{result:?}"
        );

        // A whiteout through a symlink must not remove anything outside.
        fs::write(outside.path().join("victim"), b"keep").unwrap();
        let mut t = Tarball::new();
        t.link(tar::EntryType::Symlink, "esc", outside_str)
            .file("esc/.wh.victim", 0o644, b"");
        let (_dir, result) = unpack_into(&t.finish());
        assert!(result.is_err());
        assert_eq!(fs::read(outside.path().join("victim")).unwrap(), b"keep");
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        if !is_root() {
            return;
        }
        let mut t = Tarball::new();
        t.file("a", 0o644, b"file")
            .dir("a/", 0o700)
            .file("a/x", 0o644, b"x")
            .link(tar::EntryType::Symlink, "b", "a")
            .file("b", 0o600, b"now a file");
        let (dir, result) = unpack_into(&t.finish());
        result.unwrap();
        assert!(fs::symlink_metadata(dir.path().join("a")).unwrap().is_dir());
        assert_eq!(fs::read(dir.path().join("b")).unwrap(), b"now a file");
    }

    #[test]
    fn pax_xattrs_are_kept() {
        if !is_root() {
            return;
        }
        let mut builder = tar::Builder::new(Vec::new());
        builder
            .append_pax_extensions([("SCHILY.xattr.user.crius", &b"yes"[..])])
            .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_path("tagged").unwrap();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(0);
        h.set_cksum();
        builder.append(&h, &b""[..]).unwrap();
        let (dir, result) = unpack_into(&builder.into_inner().unwrap());
        result.unwrap();
        let path = CString::new(dir.path().join("tagged").as_os_str().as_bytes()).unwrap();
        let name = CString::new("user.crius").unwrap();
        let mut value = [0u8; 8];
        // SAFETY: valid NUL-terminated strings and an 8-byte buffer.
        let n = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                name.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        assert_eq!(&value[..n.max(0) as usize], b"yes");
    }

    #[test]
    fn blob_digest_is_the_uncompressed_tar_for_each_compression() {
        if !is_root() {
            return;
        }
        let mut t = Tarball::new();
        t.file("hello", 0o644, b"hello\n");
        let tar = t.finish();
        let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::stream::encode_all(&tar[..], 1).unwrap();

        for (name, blob) in [("plain", tar.clone()), ("gzip", gz), ("zstd", zst)] {
            let dest = tempfile::tempdir().unwrap();
            let got = unpack_layer_stream(&blob[..], dest.path()).unwrap();
            assert_eq!(got, diff_id, "{name}");
            assert_eq!(
                fs::read(dest.path().join("hello")).unwrap(),
                b"hello\n",
                "{name}"
            );
        }
    }
}
