//! A [`Snapshotter`] for unit tests: no mounts, container dirs made and
//! removed for real (so a test can see what is left), a record of every
//! prepare and remove, and a failure to inject. An image volume's view is
//! a copy of its layers' files (lowest first), so rules that look inside
//! the image (a subPath) see what a mount would show.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::Snapshotter;
use crate::fs_usage::Usage;
use crate::idmap::UserNamespace;
use crate::image::ImageError;

/// A step of [`FakeSnapshotter`] that can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeSnapshotStep {
    Prepare,
    Remove,
    MountView,
    RemoveView,
}

#[derive(Debug)]
pub struct FakeSnapshotter {
    containers_dir: PathBuf,
    fail: Mutex<Option<FakeSnapshotStep>>,
    prepared: Mutex<Vec<PathBuf>>,
    /// The user namespace each prepare idmapped its rootfs with, in order.
    idmaps: Mutex<Vec<Option<PathBuf>>>,
    removed: Mutex<Vec<PathBuf>>,
    /// Layers by container dir, while prepared.
    in_use: Mutex<Vec<(PathBuf, Vec<PathBuf>)>>,
    /// View dirs mounted and not removed since.
    views: Mutex<Vec<PathBuf>>,
    /// How many views were ever mounted.
    views_mounted: Mutex<usize>,
}

impl FakeSnapshotter {
    /// A fake keeping container dirs under `containers_dir`.
    pub fn new(containers_dir: PathBuf) -> FakeSnapshotter {
        FakeSnapshotter {
            containers_dir,
            fail: Mutex::default(),
            prepared: Mutex::default(),
            idmaps: Mutex::default(),
            removed: Mutex::default(),
            in_use: Mutex::default(),
            views: Mutex::default(),
            views_mounted: Mutex::default(),
        }
    }

    /// View dirs mounted now (mounted and not removed since), in order.
    pub fn views(&self) -> Vec<PathBuf> {
        self.views.lock().unwrap().clone()
    }

    /// How many views were mounted so far, removed or not.
    pub fn views_mounted(&self) -> usize {
        *self.views_mounted.lock().unwrap()
    }

    /// Makes every later call of `step` fail (`None`: none fails).
    pub fn fail_at(&self, step: Option<FakeSnapshotStep>) {
        *self.fail.lock().unwrap() = step;
    }

    /// Container dirs prepared so far, in order.
    pub fn prepared(&self) -> Vec<PathBuf> {
        self.prepared.lock().unwrap().clone()
    }

    /// The user namespace each prepare so far idmapped the rootfs with.
    pub fn idmaps(&self) -> Vec<Option<PathBuf>> {
        self.idmaps.lock().unwrap().clone()
    }

    /// Container dirs removed so far, in order.
    pub fn removed(&self) -> Vec<PathBuf> {
        self.removed.lock().unwrap().clone()
    }

    fn check(&self, step: FakeSnapshotStep) -> Result<(), ImageError> {
        if *self.fail.lock().unwrap() == Some(step) {
            return Err(ImageError::Mount(format!("injected failure at {step:?}")));
        }
        Ok(())
    }
}

impl Snapshotter for FakeSnapshotter {
    fn container_dir(&self, id: &str) -> PathBuf {
        self.containers_dir.join(id)
    }

    fn prepare(
        &self,
        container_dir: &Path,
        layers: &[PathBuf],
        target: &Path,
        idmap: Option<&UserNamespace>,
    ) -> Result<(), ImageError> {
        self.check(FakeSnapshotStep::Prepare)?;
        for dir in [container_dir, target] {
            std::fs::create_dir_all(dir)
                .map_err(|e| ImageError::io(format!("creating {}", dir.display()), e))?;
        }
        self.prepared
            .lock()
            .unwrap()
            .push(container_dir.to_path_buf());
        self.idmaps
            .lock()
            .unwrap()
            .push(idmap.map(|u| u.path.clone()));
        self.in_use
            .lock()
            .unwrap()
            .push((container_dir.to_path_buf(), layers.to_vec()));
        Ok(())
    }

    fn remove(&self, container_dir: &Path, _target: &Path) -> Result<(), ImageError> {
        self.check(FakeSnapshotStep::Remove)?;
        match std::fs::remove_dir_all(container_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(ImageError::io(
                    format!("removing {}", container_dir.display()),
                    e,
                ))
            }
            _ => {}
        }
        self.in_use
            .lock()
            .unwrap()
            .retain(|(dir, _)| dir != container_dir);
        self.removed
            .lock()
            .unwrap()
            .push(container_dir.to_path_buf());
        Ok(())
    }

    fn usage(&self, _container_dir: &Path) -> Result<Usage, ImageError> {
        Ok(Usage::default())
    }

    fn mount_view(&self, view_dir: &Path, layers: &[PathBuf]) -> Result<PathBuf, ImageError> {
        self.check(FakeSnapshotStep::MountView)?;
        let target = view_dir.join(super::VIEW_ROOT);
        std::fs::create_dir_all(&target)
            .map_err(|e| ImageError::io(format!("creating {}", target.display()), e))?;
        for layer in layers.iter().filter(|l| l.is_dir()) {
            copy_tree(layer, &target)
                .map_err(|e| ImageError::io(format!("copying {}", layer.display()), e))?;
        }
        self.views.lock().unwrap().push(view_dir.to_path_buf());
        *self.views_mounted.lock().unwrap() += 1;
        Ok(target)
    }

    fn remove_view(&self, view_dir: &Path) -> Result<(), ImageError> {
        self.check(FakeSnapshotStep::RemoveView)?;
        match std::fs::remove_dir_all(view_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(ImageError::io(
                    format!("removing {}", view_dir.display()),
                    e,
                ))
            }
            _ => {}
        }
        self.views.lock().unwrap().retain(|v| v != view_dir);
        Ok(())
    }

    fn layers_in_use(&self) -> Result<Vec<PathBuf>, ImageError> {
        Ok(self
            .in_use
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, layers)| layers.clone())
            .collect())
    }
}

/// Copies the dirs, files and symlinks (as links) under `from` into `to`.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_tree(&source, &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &target)?;
        } else {
            std::fs::copy(&source, &target)?;
        }
    }
    Ok(())
}
