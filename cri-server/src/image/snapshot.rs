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
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::ImageError;
use crate::fs_usage::{dir_usage, Usage};
use crate::idmap::UserNamespace;

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
    /// With `idmap` (a pinned user namespace), the rootfs is seen through
    /// that namespace's ID maps: files keep their on-disk owners inside it
    /// (an idmapped mount, KEP-127). Errors: `Io`, `Mount`; what it made
    /// stays for [`Snapshotter::remove`]. Not idempotent.
    fn prepare(
        &self,
        container_dir: &Path,
        layers: &[PathBuf],
        target: &Path,
        idmap: Option<&UserNamespace>,
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
    /// Mounts `layers` (lowest first) read-only at `<view_dir>/rootfs`, an
    /// image volume's root (KEP-4639), creating the dirs, and returns that
    /// path: an overlay of the layers alone (no upper dir: the kernel
    /// refuses every write with EROFS) for two or more, a read-only bind of
    /// the layer for one (overlayfs needs two lower dirs without an upper
    /// one), a read-only bind of an empty dir for none. Errors: `Io`,
    /// `Mount`; what it made stays for [`Snapshotter::remove_view`]. Not
    /// idempotent.
    fn mount_view(&self, view_dir: &Path, layers: &[PathBuf]) -> Result<PathBuf, ImageError>;

    /// Unmounts the view under `view_dir` (detaching a busy mount) and
    /// removes the dir. Errors: `Mount`, `Io`. Idempotent.
    fn remove_view(&self, view_dir: &Path) -> Result<(), ImageError>;
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
        idmap: Option<&UserNamespace>,
    ) -> Result<(), ImageError> {
        mount_rootfs(layers, container_dir, target, idmap)
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

    fn mount_view(&self, view_dir: &Path, layers: &[PathBuf]) -> Result<PathBuf, ImageError> {
        mount_view(view_dir, layers)
    }

    fn remove_view(&self, view_dir: &Path) -> Result<(), ImageError> {
        remove_view(view_dir)
    }
}

/// One line a layer dir, lowest first.
pub const CONTAINER_LAYERS_FILE: &str = "layers";
const UPPER_DIR: &str = "upper";
const WORK_DIR: &str = "work";
/// A lower layer for an image without layers: overlayfs needs one.
const EMPTY_DIR: &str = "empty";
/// The short names overlayfs is given for the layers while it mounts them:
/// `l/<i>` links to the i-th layer (lowest first, the i-th line of
/// [`CONTAINER_LAYERS_FILE`]), as Docker's overlay2 names them in its `l/`.
const LINKS_DIR: &str = "l";
/// The most lower layers one overlay stacks: the kernel's `OVL_MAX_STACK`
/// (fs/overlayfs, 500 from Linux 4.0 to today).
pub const MAX_LAYERS: usize = 500;

/// Where a view's read-only root is mounted, under its dir.
pub const VIEW_ROOT: &str = "rootfs";

/// Mounts the overlay of `layers` (lowest first) with `upper/` and `work/`
/// under `container_dir` at `target` (an absolute path), creating those dirs.
///
/// Any count overlayfs stacks, up to [`MAX_LAYERS`], mounts the same way on
/// every kernel (Linux 6.1 has no `lowerdir+`): the options name the layers
/// by links `l/<i>` and the upper and work dirs relative to `container_dir`,
/// and the mount runs from a thread of its own whose working directory is
/// `container_dir`. So a layer costs a few bytes of the one page of mount
/// options, whatever its path (500 layers take under 3 KiB), and no path of
/// the host's can break the options with a ',' or ':'. One way for every
/// count, so every container exercises it; `layers` names what `l/<i>` was.
/// overlayfs holds the dirs the links resolved to, so the links go as soon
/// as the mount call returns, mounted or not.
///
/// With `idmap` (a user namespace), the overlay is made of idmapped
/// clones of the layers and of `container_dir` (for `upper/` and `work/`)
/// under `<container_dir>/idmapped/` (overlayfs cannot be idmapped, its
/// layers can): files keep their on-disk owners inside the namespace, and
/// what its root writes is on-disk root's. overlayfs keeps private clones
/// of its layers, so those go, like the links, once the mount call
/// returns. Errors: `Mount` (more than [`MAX_LAYERS`] layers, naming the
/// count, an idmapped clone, or the kernel's refusal), `Io`.
pub fn mount_rootfs(
    layers: &[PathBuf],
    container_dir: &Path,
    target: &Path,
    idmap: Option<&UserNamespace>,
) -> Result<(), ImageError> {
    let rw_dir = (idmap.map(|_| format!("{IDMAPPED_DIR}/{IDMAPPED_RW}/"))).unwrap_or_default();
    let options = overlay_options(layers.len().max(1), Some(&rw_dir))?;
    for dir in [
        &container_dir.join(UPPER_DIR),
        &container_dir.join(WORK_DIR),
        &target.to_path_buf(),
    ] {
        create_dir(dir)?;
    }
    record_layers(container_dir, layers)?;
    let layers: Vec<PathBuf> = if layers.is_empty() {
        let empty = container_dir.join(EMPTY_DIR);
        create_dir(&empty)?;
        vec![empty]
    } else {
        layers.to_vec()
    };
    // Both removed when dropped, on every way out of this function.
    let idmapped = match idmap {
        Some(userns) => Some(IdmappedLayers::create(
            container_dir,
            &layers,
            &userns.path,
        )?),
        None => None,
    };
    let lowers = idmapped.as_ref().map_or(&layers, |i| &i.lowers);
    let host_root = idmap.map(|u| (u.root_uid, u.root_gid));
    mount_overlay(
        lowers,
        container_dir,
        target,
        &options,
        MsFlags::empty(),
        host_root,
    )
}

/// The overlay mount of [`mount_rootfs`] and [`mount_view`]: `options`
/// name `layers` by the links `l/<i>` under `dir`, made here for the call
/// and removed after it, mounted or not; with `mount_as` (a user
/// namespace root's host uid and gid), mounted with those filesystem IDs
/// (see [`mount_as`]). Errors: `Mount` naming the target and the count,
/// `Io` for the links.
fn mount_overlay(
    layers: &[PathBuf],
    dir: &Path,
    target: &Path,
    options: &str,
    flags: MsFlags,
    host_root: Option<(u32, u32)>,
) -> Result<(), ImageError> {
    // Removed when dropped, on every way out of this function.
    let _links = LayerLinks::create(dir, layers)?;
    let (dir, target, options, count) = (
        dir.to_path_buf(),
        target.to_path_buf(),
        options.to_string(),
        layers.len(),
    );
    std::thread::spawn(move || {
        // This thread's working directory only: CLONE_FS unshares it from
        // the rest of the process.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)
            .map_err(|e| ImageError::Mount(format!("unshare(CLONE_FS): {e}")))?;
        nix::unistd::chdir(&dir)
            .map_err(|e| ImageError::Mount(format!("chdir {}: {e}", dir.display())))?;
        if let Some((uid, gid)) = host_root {
            mount_as(uid, gid)?;
        }
        mount(
            Some("overlay"),
            &target,
            Some("overlay"),
            flags,
            Some(options.as_str()),
        )
        .map_err(|e| {
            ImageError::Mount(format!(
                "overlay mount at {} of the {count} layers linked under {}: {e}",
                target.display(),
                dir.display()
            ))
        })
    })
    .join()
    .map_err(|_| ImageError::Mount("the overlay mount thread panicked".into()))?
}

/// See [`Snapshotter::mount_view`].
pub fn mount_view(view_dir: &Path, layers: &[PathBuf]) -> Result<PathBuf, ImageError> {
    let target = view_dir.join(VIEW_ROOT);
    create_dir(&target)?;
    match layers {
        [] => {
            let empty = view_dir.join(EMPTY_DIR);
            create_dir(&empty)?;
            bind_read_only(&empty, &target)?;
        }
        [layer] => bind_read_only(layer, &target)?,
        _ => {
            let options = overlay_options(layers.len(), None)?;
            mount_overlay(
                layers,
                view_dir,
                &target,
                &options,
                MsFlags::MS_RDONLY,
                None,
            )?;
        }
    }
    Ok(target)
}

/// Binds `source` at `target` and makes the bind read-only (a bind takes
/// MS_RDONLY only on a remount). A bind left writable by a failed remount
/// is unmounted again. Errors: `Mount` naming both paths.
fn bind_read_only(source: &Path, target: &Path) -> Result<(), ImageError> {
    let failed = |what: &str, e: Errno| {
        ImageError::Mount(format!(
            "{what} {} at {}: {e}",
            source.display(),
            target.display()
        ))
    };
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| failed("binding", e))?;
    let read_only = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    if let Err(e) = mount(None::<&str>, target, None::<&str>, read_only, None::<&str>) {
        unmount_rootfs(target)?;
        return Err(failed("making read-only the bind of", e));
    }
    Ok(())
}

/// See [`Snapshotter::remove_view`]. The mount point is removed on its own
/// before the rest, so that nothing is ever removed through a mount that
/// stayed.
pub fn remove_view(view_dir: &Path) -> Result<(), ImageError> {
    let target = view_dir.join(VIEW_ROOT);
    unmount_rootfs(&target)?;
    let io = |path: &Path, e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Ok(())
        } else {
            Err(ImageError::io(format!("removing {}", path.display()), e))
        }
    };
    if let Err(e) = fs::remove_dir(&target) {
        io(&target, e)?;
    }
    if let Err(e) = fs::remove_dir_all(view_dir) {
        io(view_dir, e)?;
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), ImageError> {
    fs::create_dir_all(dir).map_err(|e| ImageError::io(format!("creating {}", dir.display()), e))
}

/// The overlay's mount options for `lowers` layers (at least one): their
/// links `l/<i>`, top first as overlayfs wants them, and with `rw_dir`
/// (a writable overlay) `upper` and `work` under it (`""`: the mount's dir;
/// the idmapped clone of the container dir for a user namespace), every
/// path relative to the mount's dir. Errors: `Mount` naming the count when
/// it exceeds [`MAX_LAYERS`].
fn overlay_options(lowers: usize, rw_dir: Option<&str>) -> Result<String, ImageError> {
    if lowers > MAX_LAYERS {
        return Err(ImageError::Mount(format!(
            "the image has {lowers} layers: overlayfs stacks at most {MAX_LAYERS}"
        )));
    }
    let lowerdir: Vec<String> = (0..lowers)
        .rev()
        .map(|i| format!("{LINKS_DIR}/{i}"))
        .collect();
    let mut options = format!("lowerdir={}", lowerdir.join(":"));
    if let Some(rw) = rw_dir {
        options.push_str(&format!(",upperdir={rw}{UPPER_DIR},workdir={rw}{WORK_DIR}"));
    }
    Ok(options)
}

/// Makes the calling thread's filesystem IDs the user namespace's root,
/// with its capabilities kept: overlayfs does its work in the upper layer
/// (its `work/` dir at mount, copy-ups later) with the mounter's
/// credentials, which an idmapped upper layer refuses (EOVERFLOW, and the
/// overlay mounts read-only) unless it maps them. Filesystem IDs and
/// capabilities are the thread's own, and the thread is the mount's alone.
fn mount_as(uid: u32, gid: u32) -> Result<(), ImageError> {
    // SAFETY: setfsgid and setfsuid change only this thread's credentials.
    unsafe {
        libc::setfsgid(gid);
        libc::setfsuid(uid);
    }
    // Changing the fsuid from 0 clears the file capabilities from the
    // effective set; the permitted set keeps them.
    let permitted = caps::read(None, caps::CapSet::Permitted)
        .map_err(|e| ImageError::Mount(format!("reading the capabilities: {e}")))?;
    caps::set(None, caps::CapSet::Effective, &permitted)
        .map_err(|e| ImageError::Mount(format!("raising the capabilities: {e}")))
}

/// The dir of a mount's idmapped clones: `<i>` of the i-th layer, and
/// [`IDMAPPED_RW`] of the container dir.
const IDMAPPED_DIR: &str = "idmapped";
const IDMAPPED_RW: &str = "rw";

/// The idmapped clones one overlay mount is made of, under
/// `<container_dir>/idmapped/`: unmounted and removed when dropped (never
/// through a mount: each clone is detached before its dir goes).
struct IdmappedLayers {
    dir: PathBuf,
    /// The clones of the layers, lowest first.
    lowers: Vec<PathBuf>,
}

impl IdmappedLayers {
    /// Clones each layer and the container dir (alone, without its
    /// sub-mounts) idmapped with the user namespace at `userns`. Errors:
    /// `Mount` naming the clone, `Io`; what was made is undone.
    fn create(
        container_dir: &Path,
        layers: &[PathBuf],
        userns: &Path,
    ) -> Result<IdmappedLayers, ImageError> {
        let dir = container_dir.join(IDMAPPED_DIR);
        fs::create_dir(&dir)
            .map_err(|e| ImageError::io(format!("creating {}", dir.display()), e))?;
        let mut made = IdmappedLayers {
            dir,
            lowers: Vec::new(),
        };
        let rw = (
            container_dir.to_path_buf(),
            made.dir.join(IDMAPPED_RW),
            false,
        );
        let lowers = layers
            .iter()
            .enumerate()
            .map(|(i, layer)| (layer.clone(), made.dir.join(i.to_string()), true));
        for (source, clone, is_layer) in lowers.collect::<Vec<_>>().into_iter().chain([rw]) {
            fs::create_dir(&clone)
                .map_err(|e| ImageError::io(format!("creating {}", clone.display()), e))?;
            crate::idmap::idmapped_bind(&source, &clone, userns, false)
                .map_err(|e| ImageError::Mount(format!("an idmapped clone for the rootfs: {e}")))?;
            if is_layer {
                made.lowers.push(clone);
            }
        }
        Ok(made)
    }
}

impl Drop for IdmappedLayers {
    fn drop(&mut self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for clone in entries.flatten().map(|e| e.path()) {
            // Were a clone to stay mounted, its dir stays too (with the
            // container's, whose removal fails rather than reach into it).
            let detached = umount2(&clone, MntFlags::MNT_DETACH);
            if let Err(e) = detached
                .map_err(io::Error::from)
                .and_then(|()| fs::remove_dir(&clone))
            {
                tracing::warn!(clone = %clone.display(), error = %e, "removing an idmapped clone");
            }
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

/// The dir `l/` of links to the layers, made for one mount and removed with
/// its links (never their targets) when dropped.
struct LayerLinks {
    dir: PathBuf,
}

impl LayerLinks {
    /// Makes `<container_dir>/l/<i>` link to `layers[i]`. Errors: `Io`, with
    /// nothing left behind.
    fn create(container_dir: &Path, layers: &[PathBuf]) -> Result<LayerLinks, ImageError> {
        let dir = container_dir.join(LINKS_DIR);
        fs::create_dir(&dir)
            .map_err(|e| ImageError::io(format!("creating {}", dir.display()), e))?;
        let links = LayerLinks { dir };
        for (i, layer) in layers.iter().enumerate() {
            let link = links.dir.join(i.to_string());
            std::os::unix::fs::symlink(layer, &link).map_err(|e| {
                ImageError::io(
                    format!("linking {} to {}", link.display(), layer.display()),
                    e,
                )
            })?;
        }
        Ok(links)
    }
}

impl Drop for LayerLinks {
    fn drop(&mut self) {
        // remove_dir_all unlinks symlinks without following them. Were this
        // to fail, the dir still goes with the container's.
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "removing the layer links");
        }
    }
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

    /// Through a user namespace mapping 0.. to 200000.., the rootfs shows
    /// a layer's on-disk owners as the mapped host IDs (so as themselves
    /// inside), the upper layer too; no idmapped clone is left mounted.
    #[test]
    fn an_idmapped_rootfs_shows_the_layers_owners_through_the_maps() {
        if !is_root() {
            return;
        }
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let layer = tmp.path().join("layers/one");
        fs::create_dir_all(&layer).unwrap();
        fs::write(layer.join("root-owned"), "").unwrap();
        fs::write(layer.join("five-owned"), "").unwrap();
        std::os::unix::fs::chown(layer.join("five-owned"), Some(5), Some(5)).unwrap();
        let userns = UserNamespace {
            path: crate::idmap::tests::pinned_userns(&tmp.path().join("ns")),
            root_uid: 200000,
            root_gid: 200000,
        };
        let container_dir = tmp.path().join("containers/c1");
        let target = tmp.path().join("rootfs");
        let mounted_now = mount_rootfs(
            std::slice::from_ref(&layer),
            &container_dir,
            &target,
            Some(&userns),
        );
        // The namespace's root writes (a copy-up of a root-owned file too);
        // the host's root only with the namespace root's filesystem IDs
        // (as the runtime makes mount points).
        let write_inside = std::process::Command::new("nsenter")
            .arg(format!("--user={}", userns.path.display()))
            .args(["sh", "-c"])
            .arg(format!(
                "touch {0}/written && touch {0}/root-owned",
                target.display()
            ))
            .output()
            .unwrap();
        let as_host_root = fs::create_dir(target.join("made-by-host-root"));
        let as_namespace_root = std::thread::scope(|s| {
            s.spawn(|| {
                mount_as(200000, 200000).unwrap();
                fs::create_dir(target.join("made-as-namespace-root"))
            })
            .join()
            .unwrap()
        });
        crate::namespaces::unpin(&tmp.path().join("ns")).unwrap();
        mounted_now.unwrap();
        assert!(write_inside.status.success(), "{write_inside:?}");
        let err = as_host_root.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EOVERFLOW), "{err}");
        as_namespace_root.unwrap();
        let owner = |p: &Path| {
            let m = fs::metadata(p).unwrap();
            (m.uid(), m.gid())
        };
        let result = std::panic::catch_unwind(|| {
            assert_eq!(owner(&target.join("root-owned")), (200000, 200000));
            assert_eq!(owner(&target.join("five-owned")), (200005, 200005));
            assert_eq!(owner(&target), (200000, 200000), "the upper dir");
            assert!(!container_dir.join(IDMAPPED_DIR).exists());
            let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
            let clones = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|m| m.starts_with(&*container_dir.to_string_lossy()));
            assert_eq!(clones.count(), 0, "{mounts}");
        });
        unmount_rootfs(&target).unwrap();
        result.unwrap();
        assert_eq!(owner(&layer.join("root-owned")), (0, 0));
        // On disk, what the namespace's root wrote is root's.
        assert_eq!(owner(&container_dir.join("upper/written")), (0, 0));
        assert_eq!(owner(&container_dir.join("upper/root-owned")), (0, 0));
        let made = container_dir.join("upper/made-as-namespace-root");
        assert_eq!(owner(&made), (0, 0));
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
        mount_rootfs(&layers, &container_dir, &target, None).unwrap();
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

    /// mount(2) copies one page of options, NUL included.
    const MOUNT_DATA_PAGE: usize = 4096;

    #[test]
    fn options_name_each_layer_by_its_link_top_first_within_a_page() {
        assert_eq!(
            overlay_options(3, Some("")).unwrap(),
            "lowerdir=l/2:l/1:l/0,upperdir=upper,workdir=work"
        );
        assert_eq!(
            overlay_options(1, Some("")).unwrap(),
            "lowerdir=l/0,upperdir=upper,workdir=work"
        );
        // Docker's limit is 127, nixpkgs' layered images make 100, overlayfs stacks 500.
        for count in [125, MAX_LAYERS] {
            let options = overlay_options(count, Some("")).unwrap();
            assert!(
                options.len() < MOUNT_DATA_PAGE,
                "{count}: {}",
                options.len()
            );
            let lowerdir = options
                .strip_prefix("lowerdir=")
                .and_then(|o| o.split(',').next())
                .unwrap();
            let expected: Vec<String> = (0..count).rev().map(|i| format!("l/{i}")).collect();
            assert_eq!(lowerdir.split(':').collect::<Vec<_>>(), expected);
        }
    }

    #[test]
    fn a_view_s_options_name_only_lower_layers() {
        assert_eq!(overlay_options(2, None).unwrap(), "lowerdir=l/1:l/0");
    }

    fn write_fails_read_only(path: &Path) {
        let err = fs::write(path, b"x").unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::EROFS),
            "{}: {err}",
            path.display()
        );
    }

    #[test]
    fn views_of_none_one_and_two_layers_are_read_only_and_go_without_a_trace() {
        if !is_root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let lower = tmp.path().join("layers/lower");
        let upper = tmp.path().join("layers/upper");
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::write(lower.join("etc/passwd"), b"root\n").unwrap();
        fs::write(lower.join("etc/old"), b"old\n").unwrap();
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::write(upper.join("etc/old"), b"new\n").unwrap();
        for (name, layers, files) in [
            ("none", vec![], vec![]),
            (
                "one",
                vec![lower.clone()],
                vec![("etc/passwd", "root\n"), ("etc/old", "old\n")],
            ),
            (
                "two",
                vec![lower.clone(), upper.clone()],
                vec![("etc/passwd", "root\n"), ("etc/old", "new\n")],
            ),
        ] {
            let view_dir = tmp.path().join("views").join(name);
            let root = mount_view(&view_dir, &layers).unwrap();
            let seen: Vec<(String, String)> = files
                .iter()
                .map(|(f, _)| {
                    (
                        f.to_string(),
                        fs::read_to_string(root.join(f)).unwrap_or_default(),
                    )
                })
                .collect();
            let was_mounted = mounted(&root);
            let entries = fs::read_dir(&root).unwrap().count();
            let write = std::panic::catch_unwind(|| {
                write_fails_read_only(&root.join("new"));
                if !files.is_empty() {
                    write_fails_read_only(&root.join("etc/passwd"));
                }
            });
            remove_view(&view_dir).unwrap();
            write.unwrap();
            assert!(was_mounted, "{name}");
            let expected: Vec<(String, String)> = files
                .iter()
                .map(|(f, c)| (f.to_string(), c.to_string()))
                .collect();
            assert_eq!(seen, expected, "{name}");
            if files.is_empty() {
                assert_eq!(entries, 0, "an image without layers is an empty dir");
            }
            assert!(!mounted(&root) && !view_dir.exists(), "{name}: left behind");
            remove_view(&view_dir).unwrap();
        }
        assert_eq!(fs::read_to_string(lower.join("etc/old")).unwrap(), "old\n");
        assert!(!lower.join("new").exists() && !upper.join("new").exists());
    }

    #[test]
    fn more_layers_than_overlayfs_stacks_fail_naming_the_count_and_make_nothing() {
        let err = overlay_options(MAX_LAYERS + 1, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the image has 501 layers: overlayfs stacks at most 500"
        );
        let tmp = tempfile::tempdir().unwrap();
        let layers = vec![tmp.path().join("layer"); 640];
        let container_dir = tmp.path().join("c");
        let err =
            mount_rootfs(&layers, &container_dir, &tmp.path().join("rootfs"), None).unwrap_err();
        assert!(err.to_string().contains("640 layers"), "{err}");
        assert!(!container_dir.exists());
    }

    #[test]
    fn links_name_the_layers_and_go_without_their_targets() {
        let tmp = tempfile::tempdir().unwrap();
        let layers: Vec<PathBuf> = (0..3)
            .map(|i| {
                let dir = tmp.path().join(format!("layers/{i:064x}"));
                fs::create_dir_all(&dir).unwrap();
                fs::write(dir.join("file"), i.to_string()).unwrap();
                dir
            })
            .collect();
        let links = LayerLinks::create(tmp.path(), &layers).unwrap();
        for (i, layer) in layers.iter().enumerate() {
            let link = tmp.path().join(format!("l/{i}"));
            assert_eq!(&fs::read_link(&link).unwrap(), layer);
            assert_eq!(
                fs::read_to_string(link.join("file")).unwrap(),
                i.to_string()
            );
        }
        drop(links);
        assert!(!tmp.path().join(LINKS_DIR).exists());
        for (i, layer) in layers.iter().enumerate() {
            assert_eq!(
                fs::read_to_string(layer.join("file")).unwrap(),
                i.to_string()
            );
        }
    }

    #[test]
    fn a_link_that_cannot_be_made_leaves_no_links_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let layers = vec![tmp.path().join("ok"), PathBuf::from("nul\0byte")];
        let err = LayerLinks::create(tmp.path(), &layers).err().unwrap();
        assert!(err.to_string().contains("l/1"), "{err}");
        assert!(!tmp.path().join(LINKS_DIR).exists());
    }

    #[test]
    fn the_most_layers_overlayfs_stacks_mount_top_first() {
        if !is_root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let layers_dir = tmp.path().join("images/layers");
        // Each layer adds its own file and overwrites `top`.
        let layers: Vec<PathBuf> = (0..MAX_LAYERS)
            .map(|i| {
                let dir = layers_dir.join(format!("{i:064x}"));
                fs::create_dir_all(&dir).unwrap();
                fs::write(dir.join(format!("layer-{i}")), i.to_string()).unwrap();
                fs::write(dir.join("top"), i.to_string()).unwrap();
                dir
            })
            .collect();
        let container_dir = tmp.path().join("c");
        let target = tmp.path().join("rootfs");
        let cwd = std::env::current_dir().unwrap();
        mount_rootfs(&layers, &container_dir, &target, None).unwrap();
        let read = |name: &str| fs::read_to_string(target.join(name)).unwrap_or_default();
        let seen = [
            read("layer-0"),
            read("layer-250"),
            read("layer-499"),
            read("top"),
        ];
        let was_mounted = mounted(&target);
        unmount_rootfs(&target).unwrap();
        assert!(was_mounted);
        assert_eq!(seen, ["0", "250", "499", "499"]);
        assert_eq!(recorded_layers(&container_dir), layers);
        assert!(
            !container_dir.join(LINKS_DIR).exists(),
            "links outlived the mount"
        );
        assert!(!mounted(&target));
        assert_eq!(
            std::env::current_dir().unwrap(),
            cwd,
            "the process's cwd is untouched"
        );
    }

    #[test]
    fn a_failed_mount_leaves_no_links_and_no_mount() {
        if !is_root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let present = tmp.path().join("layers/present");
        fs::create_dir_all(&present).unwrap();
        let layers = vec![present, tmp.path().join("layers/absent")];
        let container_dir = tmp.path().join("c");
        let target = tmp.path().join("rootfs");
        let err = mount_rootfs(&layers, &container_dir, &target, None).unwrap_err();
        assert!(
            err.to_string().contains("of the 2 layers linked under"),
            "{err}"
        );
        assert!(!mounted(&target));
        assert!(!container_dir.join(LINKS_DIR).exists());
    }
}
