//! A [`Snapshotter`] for unit tests: no mounts, container dirs made and
//! removed for real (so a test can see what is left), a record of every
//! prepare and remove, and a failure to inject.

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
        }
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
