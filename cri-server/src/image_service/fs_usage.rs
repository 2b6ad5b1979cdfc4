//! Disk usage of a directory tree, for ImageFsInfo.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

/// Bytes (allocated blocks, as `du` counts) and inodes under `dir`, each
/// hard-linked inode counted once. An absent dir uses nothing.
pub fn dir_usage(dir: &Path) -> std::io::Result<Usage> {
    let mut usage = Usage::default();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        usage.inodes += 1;
        usage.bytes += meta.blocks() * 512;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_files_dirs_and_hardlinks_once() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("a"), vec![1u8; 10_000]).unwrap();
        std::fs::hard_link(d.join("a"), d.join("b")).unwrap();
        let u = dir_usage(&d).unwrap();
        assert_eq!(u.inodes, 2, "dir + one file inode");
        assert!(u.bytes >= 10_000, "{u:?}");
        assert_eq!(
            dir_usage(&tmp.path().join("absent")).unwrap(),
            Usage::default()
        );
    }
}
