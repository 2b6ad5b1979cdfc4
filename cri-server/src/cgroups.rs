//! Removing the cgroups crius made, in every hierarchy: the v1 controllers
//! under /sys/fs/cgroup/<controller>, the unified v2 tree, and a hybrid
//! host's /sys/fs/cgroup/unified.

use std::path::{Path, PathBuf};

/// The directories of `cgroup` (a path like `/crius/<pod>`) in each hierarchy under `root`.
pub fn hierarchy_dirs(root: &Path, cgroup: &str) -> Vec<PathBuf> {
    let relative = cgroup.trim_start_matches('/');
    let mut dirs = Vec::new();
    if root.join("cgroup.controllers").exists() {
        dirs.push(root.join(relative));
    }
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            let path = entry.path();
            // Skip v1 symlinks such as cpu -> cpu,cpuacct: the target is listed too.
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir {
                dirs.push(path.join(relative));
            }
        }
    }
    dirs.retain(|d| d.exists());
    dirs.sort();
    dirs
}

/// Removes `cgroup` and its (empty) children everywhere. Absent is fine; a
/// cgroup with live processes fails with EBUSY, named.
pub fn remove(cgroup: &str) -> std::io::Result<()> {
    for dir in hierarchy_dirs(Path::new("/sys/fs/cgroup"), cgroup) {
        remove_tree(&dir)?;
    }
    Ok(())
}

fn remove_tree(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(std::io::Error::new(
            e.kind(),
            format!("removing cgroup {}: {e}", dir.display()),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_v1_hierarchies() {
        let root = tempfile::tempdir().unwrap();
        for c in ["memory", "pids", "cpu,cpuacct"] {
            std::fs::create_dir_all(root.path().join(c).join("crius/pod1")).unwrap();
        }
        std::fs::create_dir_all(root.path().join("devices")).unwrap();
        let dirs = hierarchy_dirs(root.path(), "/crius/pod1");
        assert_eq!(dirs.len(), 3);
        assert!(dirs.iter().all(|d| d.ends_with("crius/pod1")));
    }

    #[test]
    fn finds_the_v2_tree() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory pids").unwrap();
        std::fs::create_dir_all(root.path().join("crius/pod1")).unwrap();
        assert_eq!(
            hierarchy_dirs(root.path(), "/crius/pod1"),
            vec![root.path().join("crius/pod1")]
        );
    }
}
