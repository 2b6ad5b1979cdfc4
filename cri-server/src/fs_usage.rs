//! Disk usage of a directory tree: a container's writable layer (its
//! overlay `upper/` dir) for stats, the image and container dirs for
//! ImageFsInfo, with the mount point of the filesystem each is on.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

/// Allocated bytes (as `du` counts) and inodes under `dir`, each hard-linked
/// inode once. Entries that vanish during the walk (a container being
/// removed, files deleted by the container) are skipped; an absent dir uses
/// nothing.
pub fn dir_usage(dir: &Path) -> std::io::Result<Usage> {
    let mut usage = Usage::default();
    let mut seen = HashSet::new();
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        usage.inodes += 1;
        usage.bytes += meta.blocks() * 512;
        if meta.is_dir() {
            let entries = match std::fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                stack.push(entry?.path());
            }
        }
    }
    Ok(usage)
}

/// The mount point of the filesystem holding `dir` (which must exist): the
/// highest of `dir` and its ancestors on `dir`'s device, as `df` finds it.
/// Two dirs on one filesystem get one mount point: kubelet takes two
/// different mount points in ImageFsInfo for a split image filesystem
/// (KEP-4191; `IsContainerFsSeparateFromImageFs` in
/// pkg/kubelet/container/container_gc.go).
pub fn mount_point(dir: &Path) -> std::io::Result<PathBuf> {
    let mut current = dir.canonicalize()?;
    let device = std::fs::metadata(&current)?.dev();
    while let Some(parent) = current.parent() {
        if std::fs::metadata(parent)?.dev() != device {
            break;
        }
        current = parent.to_path_buf();
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_point_is_the_highest_dir_on_the_same_device() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a/b");
        std::fs::create_dir_all(&deep).unwrap();
        let found = mount_point(&deep).unwrap();
        let device = |p: &Path| std::fs::metadata(p).unwrap().dev();
        assert!(
            deep.canonicalize().unwrap().starts_with(&found),
            "{found:?}"
        );
        assert_eq!(device(&found), device(&deep));
        if let Some(parent) = found.parent() {
            assert_ne!(device(parent), device(&found), "{found:?} is not the top");
        }
        assert_eq!(mount_point(tmp.path()).unwrap(), found);
        assert_eq!(mount_point(Path::new("/")).unwrap(), PathBuf::from("/"));
        assert!(mount_point(&tmp.path().join("absent")).is_err());
    }

    #[test]
    fn counts_allocated_bytes_and_inodes() {
        let tmp = tempfile::tempdir().unwrap();
        let upper = tmp.path().join("upper");
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        std::fs::write(upper.join("etc/data"), vec![7u8; 64 * 1024]).unwrap();
        std::fs::hard_link(upper.join("etc/data"), upper.join("again")).unwrap();
        let u = dir_usage(&upper).unwrap();
        assert_eq!(u.inodes, 3, "upper, etc, one file inode: {u:?}");
        assert!(u.bytes >= 64 * 1024, "{u:?}");
        assert_eq!(
            dir_usage(&tmp.path().join("absent")).unwrap(),
            Usage::default()
        );
    }
}
