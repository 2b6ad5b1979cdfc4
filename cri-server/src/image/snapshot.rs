//! A container's root filesystem: the image's unpacked layers, read-only,
//! under the container's own writable `upper/`, merged by overlayfs.
//!
//! The seam is [`Snapshotter`] (prepare, remove, usage, the layers in use),
//! with [`OverlaySnapshotter`] for the host; unit tests use
//! `fake::FakeSnapshotter`. The snapshotter owns each container's layer
//! references: the layers a container stacks are written to
//! `<container dir>/layers` before the mount, and image garbage collection
//! asks [`Snapshotter::layers_in_use`] which to keep, whatever happens to
//! the image.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::ImageError;
use crate::fs_usage::{dir_usage, Usage};

#[cfg(test)]
pub mod fake;

/// Gives containers their root filesystems and owns the layer references
/// they hold. A container is named by its dir (its record's `layer_dir`,
/// from [`Snapshotter::container_dir`]); nothing else writes under it.
pub trait Snapshotter: Send + Sync {
    /// The dir of container `id`'s writable layer and layer references. Pure.
    fn container_dir(&self, id: &str) -> PathBuf;

    /// Records `layers` (lowest first) as in use by the container, then
    /// mounts them with its writable layer at `target`, creating the dirs.
    /// Errors: `Io`, `Mount`; what it made stays for [`Snapshotter::remove`].
    /// Not idempotent.
    fn prepare(
        &self,
        container_dir: &Path,
        layers: &[PathBuf],
        target: &Path,
    ) -> Result<(), ImageError>;

    /// Unmounts `target` (detaching a busy mount) and removes the writable
    /// layer with the container's layer references. Errors: `Mount`, `Io`.
    /// Idempotent: nothing mounted or an absent dir is success.
    fn remove(&self, container_dir: &Path, target: &Path) -> Result<(), ImageError>;

    /// Bytes and inodes the container's writable layer holds (zero when
    /// absent). Errors: `Io`.
    fn usage(&self, container_dir: &Path) -> Result<Usage, ImageError>;

    /// Every layer dir some container stacks: what image garbage collection
    /// must keep. Errors: the snapshotter's own (the overlay one has none:
    /// an unreadable containers dir counts as no references, as before).
    fn layers_in_use(&self) -> Result<Vec<PathBuf>, ImageError>;
}

/// The host's snapshotter: overlayfs over the unpacked layers, one dir per
/// container under `containers_dir` (`<root>/containers/<id>`).
#[derive(Debug, Clone)]
pub struct OverlaySnapshotter {
    containers_dir: PathBuf,
}

impl OverlaySnapshotter {
    /// A snapshotter keeping container dirs under `containers_dir`.
    pub fn new(containers_dir: PathBuf) -> OverlaySnapshotter {
        OverlaySnapshotter { containers_dir }
    }
}

impl Snapshotter for OverlaySnapshotter {
    fn container_dir(&self, id: &str) -> PathBuf {
        self.containers_dir.join(id)
    }

    fn prepare(
        &self,
        container_dir: &Path,
        layers: &[PathBuf],
        target: &Path,
    ) -> Result<(), ImageError> {
        mount_rootfs(layers, container_dir, target)
    }

    fn remove(&self, container_dir: &Path, target: &Path) -> Result<(), ImageError> {
        unmount_rootfs(target)?;
        match fs::remove_dir_all(container_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ImageError::io(
                format!("removing {}", container_dir.display()),
                e,
            )),
            _ => Ok(()),
        }
    }

    fn usage(&self, container_dir: &Path) -> Result<Usage, ImageError> {
        let upper = container_dir.join(UPPER_DIR);
        dir_usage(&upper).map_err(|e| ImageError::io(format!("measuring {}", upper.display()), e))
    }

    fn layers_in_use(&self) -> Result<Vec<PathBuf>, ImageError> {
        // As before the seam: an unreadable containers dir holds no references.
        let containers = match fs::read_dir(&self.containers_dir) {
            Ok(entries) => entries,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %self.containers_dir.display(), error = %e, "listing container dirs for their layer references");
                }
                return Ok(Vec::new());
            }
        };
        Ok(containers
            .flatten()
            .flat_map(|container| recorded_layers(&container.path()))
            .collect())
    }
}

/// One line a layer dir, lowest first.
pub const CONTAINER_LAYERS_FILE: &str = "layers";
const UPPER_DIR: &str = "upper";
const WORK_DIR: &str = "work";
/// A lower layer for an image without layers: overlayfs needs one.
const EMPTY_DIR: &str = "empty";
/// Mount options travel in one page, NUL included.
const MAX_MOUNT_DATA: usize = 4095;

/// Mounts the overlay of `layers` (lowest first) with `upper/` and `work/`
/// under `container_dir` at `target`, creating those dirs.
///
/// Layer paths longer in sum than a page (about 40 layers under
/// `/var/lib/crius`) are passed relative to their common parent dir from a
/// thread that changed its own working directory, which fits about 60;
/// beyond that the mount fails with an error saying so.
pub fn mount_rootfs(
    layers: &[PathBuf],
    container_dir: &Path,
    target: &Path,
) -> Result<(), ImageError> {
    let upper = container_dir.join(UPPER_DIR);
    let work = container_dir.join(WORK_DIR);
    for dir in [&upper, &work, &target.to_path_buf()] {
        fs::create_dir_all(dir)
            .map_err(|e| ImageError::io(format!("creating {}", dir.display()), e))?;
    }
    record_layers(container_dir, layers)?;
    let layers: Vec<PathBuf> = if layers.is_empty() {
        let empty = container_dir.join(EMPTY_DIR);
        fs::create_dir_all(&empty)
            .map_err(|e| ImageError::io(format!("creating {}", empty.display()), e))?;
        vec![empty]
    } else {
        layers.to_vec()
    };
    for path in layers.iter().chain([&upper, &work]) {
        let text = path.to_string_lossy();
        if text.contains([',', ':', '\n']) {
            return Err(ImageError::Mount(format!(
                "overlay mount of {}: path {text:?} holds ',' or ':' or a newline, which overlayfs options cannot carry",
                target.display()
            )));
        }
    }
    let tail = format!(
        ",upperdir={},workdir={}",
        upper.to_string_lossy(),
        work.to_string_lossy()
    );
    // overlayfs wants the top layer first.
    let absolute: Vec<String> = layers
        .iter()
        .rev()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let data = format!("lowerdir={}{tail}", absolute.join(":"));
    if data.len() <= MAX_MOUNT_DATA {
        return mount_overlay(target, &data);
    }

    let parent = layers[0].parent().map(Path::to_path_buf);
    let same_parent = layers
        .iter()
        .all(|l| l.parent().map(Path::to_path_buf) == parent);
    let relative: Vec<String> = layers
        .iter()
        .rev()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let data = format!("lowerdir={}{tail}", relative.join(":"));
    let (Some(parent), true, true) = (parent, same_parent, data.len() <= MAX_MOUNT_DATA) else {
        return Err(ImageError::Mount(format!(
            "overlay mount of {}: {} layers do not fit in the {MAX_MOUNT_DATA}-byte mount options",
            target.display(),
            layers.len()
        )));
    };
    let target = target.to_path_buf();
    std::thread::spawn(move || {
        // This thread's working directory only: CLONE_FS unshares it from
        // the rest of the process.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)
            .map_err(|e| ImageError::Mount(format!("unshare(CLONE_FS): {e}")))?;
        nix::unistd::chdir(&parent)
            .map_err(|e| ImageError::Mount(format!("chdir {}: {e}", parent.display())))?;
        mount_overlay(&target, &data)
    })
    .join()
    .map_err(|_| ImageError::Mount("the overlay mount thread panicked".into()))?
}

fn mount_overlay(target: &Path, data: &str) -> Result<(), ImageError> {
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data),
    )
    .map_err(|e| {
        ImageError::Mount(format!(
            "overlay mount at {} ({data}): {e}",
            target.display()
        ))
    })
}

/// Writes the layer list atomically: a torn list could let garbage
/// collection take a layer the container still stacks.
fn record_layers(container_dir: &Path, layers: &[PathBuf]) -> Result<(), ImageError> {
    let path = container_dir.join(CONTAINER_LAYERS_FILE);
    let tmp = container_dir.join(format!("{CONTAINER_LAYERS_FILE}.tmp"));
    let mut text = String::new();
    for layer in layers {
        text.push_str(&layer.to_string_lossy());
        text.push('\n');
    }
    let write = || -> std::io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, &path)
    };
    write().map_err(|e| ImageError::io(format!("writing {}", path.display()), e))
}

/// The layer dirs the container under `container_dir` stacks, if it recorded any.
pub fn recorded_layers(container_dir: &Path) -> Vec<PathBuf> {
    fs::read_to_string(container_dir.join(CONTAINER_LAYERS_FILE))
        .map(|text| text.lines().map(PathBuf::from).collect())
        .unwrap_or_default()
}

/// Unmounts the rootfs; succeeds when nothing is mounted there (or the dir is
/// gone). A busy mount is detached, to go away when its last user does.
pub fn unmount_rootfs(target: &Path) -> Result<(), ImageError> {
    match umount2(target, MntFlags::empty()) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EBUSY) => {
            tracing::warn!(target = %target.display(), "rootfs busy: detaching it");
            umount2(target, MntFlags::MNT_DETACH)
                .map_err(|e| ImageError::Mount(format!("detaching {}: {e}", target.display())))
        }
        Err(e) => Err(ImageError::Mount(format!(
            "unmounting {}: {e}",
            target.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileTypeExt;

    use super::*;
    use crate::image::unpack::unpack;

    fn is_root() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        eprintln!("skipping: mounting overlayfs needs root");
        false
    }

    fn tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_path(path).unwrap();
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(data.len() as u64);
            h.set_cksum();
            builder.append(&h, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn mounted(target: &Path) -> bool {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let target = target.to_string_lossy();
        mountinfo
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(target.as_ref()))
    }

    #[test]
    fn two_layers_with_a_whiteout_merge() {
        if !is_root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let lower = tmp.path().join("layers/lower");
        let upper_layer = tmp.path().join("layers/upper");
        fs::create_dir_all(&lower).unwrap();
        fs::create_dir_all(&upper_layer).unwrap();
        unpack(
            &tar(&[("data/keep.txt", b"keep\n"), ("data/gone.txt", b"gone\n")])[..],
            &lower,
        )
        .unwrap();
        unpack(
            &tar(&[("data/.wh.gone.txt", b""), ("data/new.txt", b"new\n")])[..],
            &upper_layer,
        )
        .unwrap();

        let container_dir = tmp.path().join("containers/c1");
        let target = tmp.path().join("rootfs");
        let layers = vec![lower.clone(), upper_layer.clone()];
        mount_rootfs(&layers, &container_dir, &target).unwrap();
        assert!(mounted(&target));
        let result = std::panic::catch_unwind(|| {
            let mut names: Vec<String> = fs::read_dir(target.join("data"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert_eq!(names, ["keep.txt", "new.txt"]);
            fs::write(target.join("data/written.txt"), b"mine").unwrap();
            assert_eq!(
                fs::read(container_dir.join("upper/data/written.txt")).unwrap(),
                b"mine"
            );
            assert!(!lower.join("data/written.txt").exists());
            assert_eq!(recorded_layers(&container_dir), layers);
        });
        unmount_rootfs(&target).unwrap();
        result.unwrap();
        assert!(!mounted(&target), "nothing left in mountinfo");
        unmount_rootfs(&target).unwrap();
        assert!(fs::symlink_metadata(upper_layer.join("data/gone.txt"))
            .unwrap()
            .file_type()
            .is_char_device());
    }

    #[test]
    fn many_layers_mount_through_relative_paths() {
        if !is_root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let layers_dir = tmp.path().join("images/layers");
        // 50 layers of 64-hex names under this path exceed a page when absolute.
        let layers: Vec<PathBuf> = (0..50)
            .map(|i| {
                let dir = layers_dir.join(format!("{i:064x}"));
                fs::create_dir_all(&dir).unwrap();
                fs::write(dir.join(format!("layer-{i}")), b"").unwrap();
                dir
            })
            .collect();
        let target = tmp.path().join("rootfs");
        mount_rootfs(&layers, &tmp.path().join("c"), &target).unwrap();
        let seen = target.join("layer-0").exists() && target.join("layer-49").exists();
        unmount_rootfs(&target).unwrap();
        assert!(seen, "bottom and top layer visible");
        assert!(!mounted(&target));
        // The process's working directory is untouched.
        assert_ne!(std::env::current_dir().unwrap(), layers_dir);

        let too_many: Vec<PathBuf> = (0..70).map(|_| layers[0].clone()).collect();
        let err = mount_rootfs(&too_many, &tmp.path().join("c2"), &target).unwrap_err();
        assert!(err.to_string().contains("70 layers"), "{err}");
    }
}
