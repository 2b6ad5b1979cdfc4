//! Image volumes (KEP-4639): an image's root filesystem mounted read-only
//! into containers, whole or one path of it (`image_sub_path`).
//!
//! Each image gets one read-only view (through [`Snapshotter::mount_view`])
//! under `<state>/image-volumes/<id hex>/`, shared by every container that
//! mounts the image: made by the first, unmounted and removed with the last
//! (containerd shares a view per pod and keeps it until the pod goes; here
//! the users are containers, so an image is freed as soon as nothing mounts
//! it). An image with users cannot be removed: RemoveImage fails naming one,
//! as kubelet's image garbage collection expects of an image in use. The
//! users are the containers' records (`ContainerRecord::image_volumes`);
//! after a restart [`ImageStore::restore_volumes`] registers them again.
//! The view lives in the state dir (a tmpfs), so a reboot takes both.
//!
//! [`Snapshotter::mount_view`]: super::snapshot::Snapshotter::mount_view

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::sync::MutexGuard;

use super::store::{id_hex, ImageStore};
use super::ImageError;

/// How many symlinks one resolution follows: the kernel's limit
/// (`MAXSYMLINKS`, 40), past which it answers ELOOP.
const MAX_SYMLINKS: usize = 40;

/// An image's view while containers mount it.
#[derive(Debug, Default)]
pub(super) struct View {
    /// The ids of the containers that mount it.
    users: BTreeSet<String>,
    /// The view's root on the host while it is mounted. `None` for a view
    /// registered after a restart: the first container that needs it again
    /// mounts it.
    root: Option<PathBuf>,
}

/// Views by image ID.
pub(super) type Views = BTreeMap<String, View>;

/// An image volume mounted for one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountedVolume {
    /// The image's ID (its config digest), what the container's record keeps.
    pub image_id: String,
    /// The host path the container binds: the view's root, or the path
    /// `image_sub_path` names inside it (resolved, no symlink left).
    pub source: PathBuf,
}

impl ImageStore {
    /// Mounts the image `image` (any name [`ImageStore::resolve`] takes)
    /// for container `container_id` as the volume of its mount number
    /// `mount` (for errors), mounting the image's view unless it is already
    /// mounted, and resolves `sub_path` inside it ([`resolve_sub_path`]).
    /// Errors: `NotFound` for an image not in the store; `SubPath` naming the
    /// mount, the path and why; the snapshotter's. A failed call leaves no
    /// user and, if it made the view, no view. Blocking (a mount).
    pub fn mount_volume(
        &self,
        image: &str,
        sub_path: &str,
        mount: usize,
        container_id: &str,
    ) -> Result<MountedVolume, ImageError> {
        let mut views = self.views();
        let record = self.resolve(image).ok_or_else(|| ImageError::NotFound {
            reference: image.to_string(),
            detail: format!("config.mounts[{mount}].image: not in the image store (pull it first)"),
        })?;
        let id = record.id.clone();
        let mounted = views.get(&id).and_then(|v| v.root.clone());
        let root = match mounted {
            Some(root) => root,
            None => {
                let made = self
                    .snapshotter
                    .mount_view(&self.view_dir(&id), &self.layer_dirs(&record));
                match made {
                    Ok(root) => {
                        views.entry(id.clone()).or_default().root = Some(root.clone());
                        root
                    }
                    Err(e) => {
                        self.drop_unused_view(&mut views, &id);
                        return Err(e);
                    }
                }
            }
        };
        let source = match resolve_sub_path(&root, sub_path) {
            Ok(source) => source,
            Err(reason) => {
                self.drop_unused_view(&mut views, &id);
                return Err(ImageError::SubPath {
                    mount,
                    sub_path: sub_path.to_string(),
                    reason,
                });
            }
        };
        views
            .entry(id.clone())
            .or_default()
            .users
            .insert(container_id.to_string());
        Ok(MountedVolume {
            image_id: id,
            source,
        })
    }

    /// Container `container_id` no longer mounts image `image_id`: when it
    /// was the last user, the view is unmounted and removed. Idempotent (a
    /// container that is no user, an image without a view: success).
    /// Errors: the snapshotter's, with the user kept for a retry. Blocking.
    pub fn release_volume(&self, image_id: &str, container_id: &str) -> Result<(), ImageError> {
        let mut views = self.views();
        let last = views
            .get(image_id)
            .is_none_or(|v| v.users.iter().all(|u| u == container_id));
        if last {
            self.snapshotter.remove_view(&self.view_dir(image_id))?;
            views.remove(image_id);
        } else if let Some(view) = views.get_mut(image_id) {
            view.users.remove(container_id);
        }
        Ok(())
    }

    /// After a restart: unmounts and removes every view there is (the
    /// containers running still see theirs: each holds its own bind of it),
    /// then registers `users` (container id, image ID), so that their images
    /// cannot be removed and the next container mounts a fresh view. A view
    /// that cannot be removed is logged and left.
    pub fn restore_volumes(&self, users: impl IntoIterator<Item = (String, String)>) {
        let mut views = self.views();
        match std::fs::read_dir(&self.volumes_dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    if let Err(e) = self.snapshotter.remove_view(&entry.path()) {
                        tracing::warn!(view = %entry.path().display(), error = %e, "removing an image volume's view left from before the restart");
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %self.volumes_dir.display(), error = %e, "listing image volumes' views")
            }
        }
        for (container, image) in users {
            views.entry(image).or_default().users.insert(container);
        }
    }

    /// A container that mounts image `image_id`, if any (the first by id).
    pub(super) fn volume_user(views: &Views, image_id: &str) -> Option<String> {
        views
            .get(image_id)
            .and_then(|v| v.users.iter().next().cloned())
    }

    pub(super) fn views(&self) -> MutexGuard<'_, Views> {
        self.volumes.lock().expect("image volumes")
    }

    fn view_dir(&self, image_id: &str) -> PathBuf {
        self.volumes_dir.join(id_hex(image_id))
    }

    /// Removes image `id`'s view if no container uses it (undoing what a
    /// failed [`ImageStore::mount_volume`] made); a failure is logged, the
    /// view kept for the next release.
    fn drop_unused_view(&self, views: &mut Views, id: &str) {
        if views.get(id).is_some_and(|v| !v.users.is_empty()) {
            return;
        }
        match self.snapshotter.remove_view(&self.view_dir(id)) {
            Ok(()) => {
                views.remove(id);
            }
            Err(e) => {
                tracing::warn!(image = %id, error = %e, "removing an unused image volume's view")
            }
        }
    }
}

/// The host path of `sub_path` inside the image whose root is `root` (a
/// read-only view, so nothing changes between this and the mount): `root`
/// itself for an empty path or `.`. Each component is looked up in the
/// image as a container of it would: a symlink is followed, an absolute
/// target from the image's root, a relative one from the link's dir; `..`
/// goes up a dir. The result holds no symlink. Errors, the reason alone
/// (never a host path): an absolute `sub_path`; a path that climbs above
/// the image's root (through `..`, literal or in a symlink); a path that
/// does not exist (or runs through a file); more than [`MAX_SYMLINKS`]
/// symlinks.
pub fn resolve_sub_path(root: &Path, sub_path: &str) -> Result<PathBuf, String> {
    if sub_path.starts_with('/') {
        return Err("must be a path relative to the image's root".to_string());
    }
    let mut pending: VecDeque<OsString> = components(Path::new(sub_path));
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            if resolved.pop().is_none() {
                return Err("leaves the image: it climbs above the image's root".to_string());
            }
            continue;
        }
        let mut path = root.to_path_buf();
        path.extend(&resolved);
        path.push(&name);
        let meta = std::fs::symlink_metadata(&path).map_err(|e| {
            let inside: PathBuf = resolved.iter().chain([&name]).collect();
            match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENOTDIR) => {
                    format!(
                        "{:?} does not exist in the image",
                        inside.display().to_string()
                    )
                }
                _ => format!(
                    "{:?} cannot be looked up in the image: {}",
                    inside.display().to_string(),
                    std::io::Error::from(e.kind())
                ),
            }
        })?;
        if !meta.file_type().is_symlink() {
            resolved.push(name);
            continue;
        }
        links += 1;
        if links > MAX_SYMLINKS {
            return Err(format!(
                "more than {MAX_SYMLINKS} symlinks on the way (a loop?)"
            ));
        }
        let target = std::fs::read_link(&path).map_err(|e| {
            format!(
                "reading a symlink in the image: {}",
                std::io::Error::from(e.kind())
            )
        })?;
        if target.is_absolute() {
            resolved.clear();
        }
        for part in components(&target).into_iter().rev() {
            pending.push_front(part);
        }
    }
    let mut path = root.to_path_buf();
    path.extend(&resolved);
    Ok(path)
}

/// The names and `..`s of `path`, without the root and `.`.
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::image::snapshot::fake::{FakeSnapshotStep, FakeSnapshotter};
    use crate::image::{ImageConfig, ImageRecord};
    use crate::state::Store;
    use tonic::Code;

    /// An image root: `etc/passwd`, `bin/sh`, links inside and out.
    fn image_root() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for dir in ["etc/ssl", "bin", "usr/share/data"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::write(root.join("etc/passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
        std::fs::write(root.join("bin/sh"), "").unwrap();
        symlink("../usr/share/data", root.join("etc/data")).unwrap();
        symlink("/usr/share", root.join("etc/share")).unwrap();
        symlink("../../..", root.join("etc/up")).unwrap();
        symlink("/../../tmp", root.join("etc/abs_up")).unwrap();
        symlink("loop_b", root.join("loop_a")).unwrap();
        symlink("loop_a", root.join("loop_b")).unwrap();
        tmp
    }

    #[test]
    fn a_sub_path_resolves_inside_the_image_following_its_symlinks() {
        let tmp = image_root();
        let root = tmp.path();
        for (sub_path, expected) in [
            ("", ""),
            (".", ""),
            ("etc", "etc"),
            ("etc/", "etc"),
            ("./etc/./ssl", "etc/ssl"),
            ("etc/passwd", "etc/passwd"),
            ("bin/../etc", "etc"),
            ("etc/data", "usr/share/data"),
            ("etc/share/data", "usr/share/data"),
        ] {
            assert_eq!(
                resolve_sub_path(root, sub_path),
                Ok(root.join(expected)),
                "{sub_path:?}"
            );
        }
    }

    #[test]
    fn a_sub_path_that_leaves_the_image_or_is_missing_is_refused_without_host_paths() {
        let tmp = image_root();
        let root = tmp.path();
        for (sub_path, reason) in [
            ("..", "leaves the image"),
            ("etc/../..", "leaves the image"),
            ("etc/up", "leaves the image"),
            ("etc/abs_up", "leaves the image"),
            ("/etc", "relative"),
            (
                "not-existing",
                "\"not-existing\" does not exist in the image",
            ),
            (
                "etc/passwd/x",
                "\"etc/passwd/x\" does not exist in the image",
            ),
            ("loop_a", "more than 40 symlinks"),
        ] {
            let err = resolve_sub_path(root, sub_path).unwrap_err();
            assert!(err.contains(reason), "{sub_path:?}: {err}");
            assert!(
                !err.contains(&*root.to_string_lossy()),
                "{sub_path:?} names a host path: {err}"
            );
        }
    }

    const IMAGE_ID: &str =
        "sha256:3333333333333333333333333333333333333333333333333333333333333333";
    const LAYERS: [&str; 2] = [
        "sha256:4444444444444444444444444444444444444444444444444444444444444444",
        "sha256:5555555555555555555555555555555555555555555555555555555555555555",
    ];

    struct Fixture {
        store: ImageStore,
        snapshots: Arc<FakeSnapshotter>,
        config: Config,
        _tmp: tempfile::TempDir,
    }

    /// A store with one image of two layers: `etc/passwd` below, `bin/sh` above.
    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let config = Config {
            root: tmp.path().join("root"),
            state: tmp.path().join("state"),
            ..Config::default()
        };
        let snapshots = Arc::new(FakeSnapshotter::new(config.container_dir()));
        let state = Store::open(config.root.join("meta")).unwrap();
        let store = ImageStore::open(&config, state, snapshots.clone()).unwrap();
        let record = store
            .record(ImageRecord {
                id: IMAGE_ID.into(),
                repo_tags: vec!["docker.io/library/busybox:latest".into()],
                repo_digests: vec![],
                size: 1,
                chain_ids: LAYERS.iter().map(|l| l.to_string()).collect(),
                config: ImageConfig::default(),
                blobs: vec![],
            })
            .unwrap();
        let dirs = store.layer_dirs(&record);
        std::fs::create_dir_all(dirs[0].join("etc")).unwrap();
        std::fs::write(dirs[0].join("etc/passwd"), "root\n").unwrap();
        std::fs::create_dir_all(dirs[1].join("bin")).unwrap();
        std::fs::write(dirs[1].join("bin/sh"), "").unwrap();
        Fixture {
            store,
            snapshots,
            config,
            _tmp: tmp,
        }
    }

    impl Fixture {
        fn view_dir(&self) -> PathBuf {
            self.config
                .state
                .join("image-volumes")
                .join(id_hex(IMAGE_ID))
        }
    }

    fn status(e: ImageError) -> tonic::Status {
        crate::error::CriError::from(e).into()
    }

    #[test]
    fn containers_of_one_image_share_one_view_removed_with_the_last() {
        let fx = fixture();
        let a = fx.store.mount_volume("busybox", "", 0, "a").unwrap();
        assert_eq!(a.image_id, IMAGE_ID);
        assert_eq!(a.source, fx.view_dir().join("rootfs"));
        assert!(a.source.join("etc/passwd").is_file() && a.source.join("bin/sh").is_file());
        let b = fx.store.mount_volume(IMAGE_ID, "etc", 2, "b").unwrap();
        assert_eq!(b.source, fx.view_dir().join("rootfs/etc"));
        assert_eq!(fx.snapshots.views_mounted(), 1, "one view for both");

        fx.store.release_volume(IMAGE_ID, "a").unwrap();
        assert_eq!(fx.snapshots.views(), [fx.view_dir()], "b still mounts it");
        fx.store.release_volume(IMAGE_ID, "a").unwrap();
        assert_eq!(fx.snapshots.views(), [fx.view_dir()], "idempotent");
        fx.store.release_volume(IMAGE_ID, "b").unwrap();
        assert!(fx.snapshots.views().is_empty());
        assert!(!fx.view_dir().exists());
        fx.store.release_volume(IMAGE_ID, "b").unwrap();

        fx.store.mount_volume("busybox", "", 0, "c").unwrap();
        assert_eq!(fx.snapshots.views_mounted(), 2, "mounted again when needed");
    }

    #[tokio::test]
    async fn an_image_in_use_is_not_removed_and_goes_after_its_last_user() {
        let fx = fixture();
        fx.store.mount_volume("busybox", "", 0, "c1").unwrap();
        fx.store.mount_volume("busybox", "bin", 1, "c2").unwrap();
        let s = status(fx.store.remove("busybox").await.unwrap_err());
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(
            s.message().contains(IMAGE_ID) && s.message().contains("container c1"),
            "{}",
            s.message()
        );
        assert!(fx.store.resolve("busybox").is_some());
        fx.store.release_volume(IMAGE_ID, "c1").unwrap();
        let s = status(fx.store.remove(IMAGE_ID).await.unwrap_err());
        assert!(s.message().contains("container c2"), "{}", s.message());
        fx.store.release_volume(IMAGE_ID, "c2").unwrap();
        assert_eq!(
            fx.store.remove(IMAGE_ID).await.unwrap().unwrap().id,
            IMAGE_ID
        );
        let record = ImageRecord {
            id: IMAGE_ID.into(),
            repo_tags: vec![],
            repo_digests: vec![],
            size: 0,
            chain_ids: LAYERS.iter().map(|l| l.to_string()).collect(),
            config: ImageConfig::default(),
            blobs: vec![],
        };
        for layer in fx.store.layer_dirs(&record) {
            assert!(!layer.exists(), "{} collected", layer.display());
        }
    }

    #[test]
    fn an_unknown_image_is_not_found_naming_it_and_mounts_nothing() {
        let fx = fixture();
        let s = status(fx.store.mount_volume("nope:1", "", 3, "c").unwrap_err());
        assert_eq!(s.code(), Code::NotFound);
        assert!(
            s.message().contains("nope:1") && s.message().contains("config.mounts[3].image"),
            "{}",
            s.message()
        );
        assert_eq!(fx.snapshots.views_mounted(), 0);
    }

    #[test]
    fn a_bad_sub_path_is_invalid_naming_the_mount_and_leaves_no_view() {
        let fx = fixture();
        for sub_path in ["../..", "not-existing"] {
            let s = status(
                fx.store
                    .mount_volume("busybox", sub_path, 1, "c")
                    .unwrap_err(),
            );
            assert_eq!(s.code(), Code::InvalidArgument);
            assert!(
                s.message().starts_with(&format!(
                    "config.mounts: mounts[1].image_sub_path {sub_path:?}: "
                )),
                "{}",
                s.message()
            );
            assert!(!s.message().contains("image-volumes"), "{}", s.message());
            assert!(fx.snapshots.views().is_empty() && !fx.view_dir().exists());
        }
        // A view others use stays.
        fx.store.mount_volume("busybox", "", 0, "other").unwrap();
        fx.store
            .mount_volume("busybox", "nope", 1, "c")
            .unwrap_err();
        assert_eq!(fx.snapshots.views(), [fx.view_dir()]);
        fx.store.release_volume(IMAGE_ID, "c").unwrap();
        assert_eq!(fx.snapshots.views(), [fx.view_dir()], "c was no user");
    }

    #[test]
    fn a_failed_mount_or_unmount_keeps_nothing_or_the_user() {
        let fx = fixture();
        fx.snapshots.fail_at(Some(FakeSnapshotStep::MountView));
        let s = status(fx.store.mount_volume("busybox", "", 0, "c").unwrap_err());
        assert_eq!(s.code(), Code::Internal);
        assert!(fx.snapshots.views().is_empty() && !fx.view_dir().exists());
        assert!(fx.store.views().is_empty(), "no user registered");

        fx.snapshots.fail_at(None);
        fx.store.mount_volume("busybox", "", 0, "c").unwrap();
        fx.snapshots.fail_at(Some(FakeSnapshotStep::RemoveView));
        fx.store.release_volume(IMAGE_ID, "c").unwrap_err();
        assert_eq!(
            ImageStore::volume_user(&fx.store.views(), IMAGE_ID).as_deref(),
            Some("c"),
            "kept for a retry"
        );
        fx.snapshots.fail_at(None);
        fx.store.release_volume(IMAGE_ID, "c").unwrap();
        assert!(fx.snapshots.views().is_empty());
    }

    #[tokio::test]
    async fn a_restart_removes_old_views_and_keeps_the_users() {
        let fx = fixture();
        fx.store.mount_volume("busybox", "", 0, "c1").unwrap();
        // A view a crash left without a user.
        let stray = fx.config.state.join("image-volumes").join("f".repeat(64));
        std::fs::create_dir_all(stray.join("rootfs")).unwrap();
        let state = Store::open(fx.config.root.join("meta")).unwrap();
        let restarted = ImageStore::open(&fx.config, state, fx.snapshots.clone()).unwrap();
        restarted.restore_volumes([("c1".to_string(), IMAGE_ID.to_string())]);
        assert!(!stray.exists() && !fx.view_dir().exists());
        let s = status(restarted.remove(IMAGE_ID).await.unwrap_err());
        assert!(s.message().contains("container c1"), "{}", s.message());
        let again = restarted.mount_volume(IMAGE_ID, "etc", 0, "c2").unwrap();
        assert!(again.source.join("passwd").is_file(), "mounted afresh");
        restarted.release_volume(IMAGE_ID, "c1").unwrap();
        assert!(fx.view_dir().exists(), "c2 still mounts it");
        restarted.release_volume(IMAGE_ID, "c2").unwrap();
        assert!(!fx.view_dir().exists());
        restarted.remove(IMAGE_ID).await.unwrap();
    }
}
