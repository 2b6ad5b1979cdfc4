//! The container's mounts: the standard /proc, /dev, /sys set, then the
//! request's binds and the pod's files (/etc/hostname, /etc/hosts,
//! /etc/resolv.conf, /dev/shm), ordered so that no mount hides a deeper one.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use crius_proto::cri::{ContainerConfig, Mount as CriMount, MountPropagation};
use oci_spec::runtime::{Mount, MountBuilder};

use super::SpecError;

const FIELD_MOUNTS: &str = "config.mounts";

/// The `mount_options` a bind may ask for (CRI 1.37's `Mount.mount_options`,
/// as kubelet's `BindMountOptions` names them), applied as the OCI options
/// of the same names.
const BIND_MOUNT_OPTIONS: [&str; 3] = ["noexec", "nodev", "nosuid"];

/// Files the pod provides to each of its containers, bind-mounted.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct PodFiles<'a> {
    pub hostname: Option<&'a Path>,
    pub hosts: Option<&'a Path>,
    pub resolv_conf: Option<&'a Path>,
    pub shm: Option<&'a Path>,
}

#[derive(Debug)]
pub(super) struct Mounts {
    pub mounts: Vec<Mount>,
    /// Set when a bind asks for propagation the rootfs must allow.
    pub rootfs_propagation: Option<String>,
}

/// One bind mount, from the request or from the pod.
struct Bind {
    destination: String,
    source: PathBuf,
    readonly: bool,
    propagation: MountPropagation,
    /// Read-only down to every sub-mount (KEP-3857): OCI's `rro`.
    recursive_read_only: bool,
    /// Some of [`BIND_MOUNT_OPTIONS`].
    options: Vec<String>,
}

/// An image volume (KEP-4639) a container's config asks for: mount number
/// `mount` of `config.mounts` binds image `image` (any name of it, as
/// kubelet sends its image ID), or only `sub_path` inside it (empty: the
/// image's root), read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageVolumeRequest<'a> {
    pub mount: usize,
    pub image: &'a str,
    pub sub_path: &'a str,
}

/// The image volumes `config` asks for, in mount order. Refused,
/// InvalidArgument naming the mount and its field: an empty `image.image`,
/// `readonly: false` (KEP-4639: image volumes are read-only; kubelet
/// always sends true and critest expects the refusal), a `host_path` as
/// well (the image is the source). Pure.
pub fn image_volumes(config: &ContainerConfig) -> Result<Vec<ImageVolumeRequest<'_>>, SpecError> {
    config
        .mounts
        .iter()
        .enumerate()
        .filter_map(|(i, m)| m.image.as_ref().map(|image| (i, m, image)))
        .map(|(i, m, image)| {
            check_image_volume(i, m)?;
            Ok(ImageVolumeRequest {
                mount: i,
                image: &image.image,
                sub_path: &m.image_sub_path,
            })
        })
        .collect()
}

/// The rules of [`image_volumes`] for mount `i`, an image volume.
fn check_image_volume(i: usize, m: &CriMount) -> Result<(), SpecError> {
    let invalid = |what: &str| SpecError::invalid(FIELD_MOUNTS, format!("mounts[{i}].{what}"));
    if m.image.as_ref().is_none_or(|image| image.image.is_empty()) {
        return Err(invalid("image.image: must name an image"));
    }
    if !m.readonly {
        return Err(invalid(
            "readonly: an image volume is read-only (set readonly: true)",
        ));
    }
    if !m.host_path.is_empty() {
        return Err(invalid(&format!(
            "host_path {:?}: an image volume's source is its image, not a host path",
            m.host_path
        )));
    }
    Ok(())
}

/// Where the request's binds come from besides their `host_path`.
#[derive(Debug, Clone, Copy)]
pub(super) struct BindSources<'a> {
    /// Host dirs under which a missing `host_path` is never created.
    pub protected: &'a [PathBuf],
    /// The host path each image volume binds, by mount index.
    pub image_volumes: &'a BTreeMap<usize, PathBuf>,
}

static NO_IMAGE_VOLUMES: BTreeMap<usize, PathBuf> = BTreeMap::new();

impl Default for BindSources<'_> {
    fn default() -> Self {
        BindSources {
            protected: &[],
            image_volumes: &NO_IMAGE_VOLUMES,
        }
    }
}

/// The container's mounts. `mount_setattr`: the kernel can make a bind
/// read-only recursively ([`super::HostCapabilities::mount_setattr`]).
/// Errors: InvalidArgument naming the mount and its field for a bind the
/// request cannot have; Io when a bind's source cannot be resolved or made;
/// Build for an image volume without a source (the caller's bug).
pub(super) fn mounts(
    config: &ContainerConfig,
    pod: &PodFiles,
    host_ipc: bool,
    privileged: bool,
    readonly_rootfs: bool,
    mount_setattr: bool,
    sources: &BindSources,
) -> Result<Mounts, SpecError> {
    let mut binds = requested_binds(config, mount_setattr, sources)?;

    // The pod's files, unless the request mounts something there itself.
    let shm = if host_ipc {
        Some(Path::new("/dev/shm"))
    } else {
        pod.shm
    };
    let pod_binds = [
        ("/etc/hostname", pod.hostname, readonly_rootfs),
        ("/etc/hosts", pod.hosts, readonly_rootfs),
        ("/etc/resolv.conf", pod.resolv_conf, readonly_rootfs),
        ("/dev/shm", shm, false),
    ];
    for (destination, source, readonly) in pod_binds {
        let Some(source) = source else { continue };
        if binds.iter().any(|b| b.destination == destination) {
            continue;
        }
        binds.push(Bind {
            destination: destination.to_string(),
            source: source.to_path_buf(),
            readonly,
            propagation: MountPropagation::PropagationPrivate,
            recursive_read_only: false,
            options: Vec::new(),
        });
    }
    // Shallow before deep, so that /a/b is mounted onto /a and not hidden by it.
    binds.sort_by_key(|b| Path::new(&b.destination).components().count());

    let over_dev = binds.iter().any(|b| b.destination == "/dev");
    let mut out: Vec<Mount> = default_mounts(privileged)?
        .into_iter()
        .filter(|m| {
            let dest = m.destination().to_string_lossy();
            let overridden = binds.iter().any(|b| b.destination == dest);
            let under_bound_dev = over_dev && dest.starts_with("/dev/");
            !overridden && !under_bound_dev
        })
        .collect();

    // The rootfs must propagate what its binds do. The spec's own names
    // ("slave", "shared"), not containerd's "rslave"/"rshared": runc takes
    // both, libcontainer only these (and applies them recursively anyway).
    let mut rootfs_propagation = None;
    for b in binds {
        let propagation = match b.propagation {
            MountPropagation::PropagationPrivate => "rprivate",
            MountPropagation::PropagationHostToContainer => {
                if rootfs_propagation.is_none() {
                    rootfs_propagation = Some("slave");
                }
                "rslave"
            }
            MountPropagation::PropagationBidirectional => {
                rootfs_propagation = Some("shared");
                "rshared"
            }
        };
        let access = if b.readonly { "ro" } else { "rw" };
        let mut options = strings(&["rbind", propagation, access]);
        if b.recursive_read_only {
            // "ro" still makes the bind itself read-only; "rro" every mount under it.
            options.push("rro".to_string());
        }
        options.extend(b.options);
        out.push(
            MountBuilder::default()
                .destination(b.destination)
                .typ("bind")
                .source(b.source)
                .options(options)
                .build()?,
        );
    }
    Ok(Mounts {
        mounts: out,
        rootfs_propagation: rootfs_propagation.map(str::to_string),
    })
}

/// The request's binds, an image volume's from its source in
/// `sources.image_volumes`. Refused, InvalidArgument naming the mount and its
/// field: `recursive_read_only` without `readonly`, with a propagation other
/// than PROPAGATION_PRIVATE (KEP-3857; critest checks each), or on a kernel
/// without mount_setattr; a `mount_options` value not in
/// [`BIND_MOUNT_OPTIONS`] (named); what [`image_volumes`] refuses;
/// id-mapped mounts.
fn requested_binds(
    config: &ContainerConfig,
    mount_setattr: bool,
    sources: &BindSources,
) -> Result<Vec<Bind>, SpecError> {
    let mut binds: Vec<Bind> = Vec::with_capacity(config.mounts.len());
    for (i, m) in config.mounts.iter().enumerate() {
        let invalid = |what: &str| SpecError::invalid(FIELD_MOUNTS, format!("mounts[{i}].{what}"));
        if m.image.is_some() {
            check_image_volume(i, m)?;
        } else if m.host_path.is_empty() {
            return Err(invalid("host_path is empty"));
        }
        if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
            return Err(invalid("uidMappings: id-mapped mounts are not supported"));
        }
        if !m.container_path.starts_with('/') {
            return Err(invalid(&format!(
                "container_path {:?} is not an absolute path",
                m.container_path
            )));
        }
        let propagation = MountPropagation::try_from(m.propagation)
            .map_err(|_| invalid(&format!("propagation: unknown value {}", m.propagation)))?;
        if m.recursive_read_only {
            if !m.readonly {
                return Err(invalid("recursive_read_only: requires readonly: true"));
            }
            if propagation != MountPropagation::PropagationPrivate {
                return Err(invalid(&format!(
                    "recursive_read_only: requires propagation PROPAGATION_PRIVATE, not {}",
                    propagation.as_str_name()
                )));
            }
            if !mount_setattr {
                return Err(invalid(
                    "recursive_read_only: this kernel has no mount_setattr (Linux 5.12) to make a mount read-only recursively",
                ));
            }
        }
        if let Some(bad) = m
            .mount_options
            .iter()
            .find(|o| !BIND_MOUNT_OPTIONS.contains(&o.as_str()))
        {
            return Err(invalid(&format!(
                "mount_options: {bad:?} is not one of {}",
                BIND_MOUNT_OPTIONS.join(", ")
            )));
        }
        let source = match m.image {
            Some(_) => sources.image_volumes.get(&i).cloned().ok_or_else(|| {
                SpecError::Build(oci_spec::OciSpecError::Other(format!(
                    "mounts[{i}]: the image volume has no source"
                )))
            })?,
            None => host_source(i, &m.host_path, sources.protected)?,
        };
        let destination = clean(&m.container_path);
        // A later mount of the same path wins, as with repeated -v in Docker.
        binds.retain(|b| b.destination != destination);
        binds.push(Bind {
            destination,
            source,
            readonly: m.readonly,
            propagation,
            recursive_read_only: m.recursive_read_only,
            options: m.mount_options.clone(),
        });
    }
    Ok(binds)
}

/// Host trees where a missing `host_path` is never created, whatever the
/// request: the kernel's pseudo filesystems. The daemon adds its own root and
/// state dirs (`protected`).
const NO_CREATE_UNDER: [&str; 3] = ["/proc", "/sys", "/dev"];

/// The host path a bind mounts: `host_path` with its symlinks resolved on the
/// host, as containerd does, so the runtime binds what the request named at
/// the time of the request.
///
/// A missing path is created as containerd does (`mkdir -p`, 0755, owned by
/// root), which kubelet's default hostPath type (`""`, no check) relies on.
/// Refused, InvalidArgument naming the mount: a relative path; a path whose
/// nearest existing ancestor is not a directory (named); a path that resolves
/// under [`NO_CREATE_UNDER`] or `protected` (named). Directories made here
/// stay when a later step of CreateContainer fails, as with containerd: they
/// are the pod's volumes, which kubelet owns and may mount again on a retry.
fn host_source(i: usize, host_path: &str, protected: &[PathBuf]) -> Result<PathBuf, SpecError> {
    let invalid = |what: String| SpecError::invalid(FIELD_MOUNTS, format!("mounts[{i}].{what}"));
    let io = |path: &Path, source: std::io::Error| SpecError::Io {
        path: path.to_path_buf(),
        source,
    };
    let missing = |e: &std::io::Error| {
        e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
    };
    match std::fs::canonicalize(host_path) {
        Ok(p) => return Ok(p),
        Err(e) if missing(&e) => {}
        Err(e) => return Err(io(Path::new(host_path), e)),
    }
    if !host_path.starts_with('/') {
        return Err(invalid(format!(
            "host_path {host_path:?} does not exist and is not an absolute path"
        )));
    }
    // The nearest ancestor that exists, resolved, and the names below it.
    let wanted = PathBuf::from(clean(host_path));
    let mut below = Vec::new();
    let mut ancestor = wanted.as_path();
    let real_ancestor = loop {
        match std::fs::canonicalize(ancestor) {
            Ok(real) => break real,
            Err(e) if missing(&e) => {}
            Err(e) => return Err(io(ancestor, e)),
        }
        below.push(ancestor.file_name().unwrap_or_default().to_owned());
        ancestor = ancestor.parent().unwrap_or(Path::new("/"));
    };
    if !real_ancestor.is_dir() {
        return Err(invalid(format!(
            "host_path {host_path:?} does not exist and cannot be created: its parent {} is not a directory",
            ancestor.display()
        )));
    }
    let mut target = real_ancestor;
    target.extend(below.iter().rev());
    let protected_real = protected
        .iter()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()));
    let denied = NO_CREATE_UNDER
        .iter()
        .map(PathBuf::from)
        .chain(protected.iter().cloned())
        .chain(protected_real)
        .find(|d| target.starts_with(d));
    if let Some(denied) = denied {
        return Err(invalid(format!(
            "host_path {host_path:?} does not exist and is not created: it lies under {}, where crius creates nothing",
            denied.display()
        )));
    }
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&target)
            .map_err(|e| {
                let e = std::io::Error::new(
                    e.kind(),
                    format!("creating it (missing bind source): {e}"),
                );
                io(&target, e)
            })?;
    }
    tracing::info!(host_path, created = %target.display(), "created a missing bind mount source");
    std::fs::canonicalize(&target).map_err(|e| io(&target, e))
}

/// containerd's default set (without /run), /sys and the cgroup tree read-only
/// unless privileged.
fn default_mounts(privileged: bool) -> Result<Vec<Mount>, SpecError> {
    let sys_access = if privileged { "rw" } else { "ro" };
    [
        (
            "/proc",
            "proc",
            "proc",
            strings(&["nosuid", "noexec", "nodev"]),
        ),
        (
            "/dev",
            "tmpfs",
            "tmpfs",
            strings(&["nosuid", "strictatime", "mode=755", "size=65536k"]),
        ),
        (
            "/dev/pts",
            "devpts",
            "devpts",
            strings(&[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ]),
        ),
        (
            "/dev/shm",
            "tmpfs",
            "shm",
            strings(&["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
        ),
        (
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            strings(&["nosuid", "noexec", "nodev"]),
        ),
        (
            "/sys",
            "sysfs",
            "sysfs",
            strings(&["nosuid", "noexec", "nodev", sys_access]),
        ),
        (
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            strings(&["nosuid", "noexec", "nodev", "relatime", sys_access]),
        ),
    ]
    .into_iter()
    .map(|(destination, typ, source, options)| {
        Ok(MountBuilder::default()
            .destination(destination)
            .typ(typ)
            .source(source)
            .options(options)
            .build()?)
    })
    .collect()
}

/// Lexical clean-up of an absolute path: no `.`, `..`, repeated or trailing `/`.
fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str().unwrap_or_default()),
            Component::ParentDir => {
                parts.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    format!("/{}", parts.join("/"))
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crius_proto::cri::Mount as CriMount;

    fn summary(m: &Mounts) -> Vec<(String, String, String, Vec<String>)> {
        m.mounts
            .iter()
            .map(|m| {
                (
                    m.destination().display().to_string(),
                    m.typ().clone().unwrap(),
                    m.source().as_ref().unwrap().display().to_string(),
                    m.options().clone().unwrap(),
                )
            })
            .collect()
    }

    fn destinations(m: &Mounts) -> Vec<String> {
        summary(m).into_iter().map(|s| s.0).collect()
    }

    fn find(m: &Mounts, dest: &str) -> (String, String, String, Vec<String>) {
        summary(m)
            .into_iter()
            .find(|s| s.0 == dest)
            .unwrap_or_else(|| panic!("no mount at {dest}"))
    }

    fn cri_mount(container: &str, host: &Path) -> CriMount {
        CriMount {
            container_path: container.into(),
            host_path: host.display().to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_without_anything_else() {
        let m = mounts(
            &ContainerConfig::default(),
            &PodFiles::default(),
            false,
            false,
            false,
            true,
            &BindSources::default(),
        )
        .unwrap();
        assert_eq!(
            destinations(&m),
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup"
            ]
        );
        assert_eq!(find(&m, "/dev/shm").1, "tmpfs");
        assert!(find(&m, "/sys").3.contains(&"ro".to_string()));
        assert_eq!(find(&m, "/sys/fs/cgroup").1, "cgroup");
        assert!(find(&m, "/sys/fs/cgroup").3.contains(&"ro".to_string()));
        assert!(find(&m, "/dev/pts")
            .3
            .contains(&"ptmxmode=0666".to_string()));
        assert_eq!(m.rootfs_propagation, None);
    }

    #[test]
    fn privileged_sys_is_writable() {
        let m = mounts(
            &ContainerConfig::default(),
            &PodFiles::default(),
            false,
            true,
            false,
            true,
            &BindSources::default(),
        )
        .unwrap();
        assert!(find(&m, "/sys").3.contains(&"rw".to_string()));
        assert!(!find(&m, "/sys").3.contains(&"ro".to_string()));
        assert!(find(&m, "/sys/fs/cgroup").3.contains(&"rw".to_string()));
    }

    #[test]
    fn binds_with_access_and_propagation() {
        let dir = tempfile::tempdir().unwrap();
        let mut ro = cri_mount("/data/ro/", dir.path());
        ro.readonly = true;
        let mut slave = cri_mount("/slave", dir.path());
        slave.propagation = MountPropagation::PropagationHostToContainer as i32;
        let cfg = ContainerConfig {
            mounts: vec![ro, slave],
            ..Default::default()
        };
        let m = mounts(
            &cfg,
            &PodFiles::default(),
            false,
            false,
            false,
            true,
            &BindSources::default(),
        )
        .unwrap();
        let real = std::fs::canonicalize(dir.path())
            .unwrap()
            .display()
            .to_string();
        assert_eq!(
            find(&m, "/data/ro"),
            (
                "/data/ro".into(),
                "bind".into(),
                real.clone(),
                strings(&["rbind", "rprivate", "ro"])
            )
        );
        assert_eq!(find(&m, "/slave").3, strings(&["rbind", "rslave", "rw"]));
        assert_eq!(m.rootfs_propagation.as_deref(), Some("slave"));

        let mut shared = cri_mount("/shared", dir.path());
        shared.propagation = MountPropagation::PropagationBidirectional as i32;
        let mut slave = cri_mount("/slave", dir.path());
        slave.propagation = MountPropagation::PropagationHostToContainer as i32;
        let cfg = ContainerConfig {
            mounts: vec![shared, slave],
            ..Default::default()
        };
        let m = mounts(
            &cfg,
            &PodFiles::default(),
            false,
            false,
            false,
            true,
            &BindSources::default(),
        )
        .unwrap();
        assert_eq!(find(&m, "/shared").3, strings(&["rbind", "rshared", "rw"]));
        assert_eq!(m.rootfs_propagation.as_deref(), Some("shared"));
    }

    #[test]
    fn binds_resolve_symlinks_and_sort_shallow_first() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
        let cfg = ContainerConfig {
            mounts: vec![
                cri_mount("/a/b/c", &dir.path().join("link")),
                cri_mount("/a", dir.path()),
            ],
            ..Default::default()
        };
        let m = mounts(
            &cfg,
            &PodFiles::default(),
            false,
            false,
            false,
            true,
            &BindSources::default(),
        )
        .unwrap();
        let d = destinations(&m);
        assert_eq!(&d[d.len() - 2..], ["/a", "/a/b/c"]);
        assert_eq!(
            find(&m, "/a/b/c").2,
            std::fs::canonicalize(dir.path().join("real"))
                .unwrap()
                .display()
                .to_string()
        );
    }

    fn invalid_message<T: std::fmt::Debug>(r: Result<T, SpecError>) -> String {
        match r {
            Err(
                e @ SpecError::InvalidArgument {
                    field: FIELD_MOUNTS,
                    ..
                },
            ) => e.to_string(),
            other => panic!("expected InvalidArgument on {FIELD_MOUNTS}, got {other:?}"),
        }
    }

    #[test]
    fn a_missing_host_path_is_created_with_mode_0755() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("link")).unwrap();
        let cfg = ContainerConfig {
            mounts: vec![
                cri_mount("/ok", dir.path()),
                cri_mount("/x", &dir.path().join("gone/deeper")),
                // Through a symlink and `..`: made where they lead on the host.
                cri_mount("/y", &dir.path().join("link/a/../b")),
            ],
            ..Default::default()
        };
        let m = mounts(
            &cfg,
            &PodFiles::default(),
            false,
            false,
            false,
            true,
            &BindSources::default(),
        )
        .unwrap();
        let made = dir.path().join("gone/deeper");
        assert!(made.is_dir());
        for d in [dir.path().join("gone"), made.clone()] {
            let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & !0o022, 0o755 & !0o022, "{}", d.display());
            assert_eq!(mode & 0o700, 0o700);
        }
        assert_eq!(find(&m, "/x").2, made.display().to_string());
        assert!(dir.path().join("b").is_dir());
        assert!(!dir.path().join("a").exists());
        assert_eq!(find(&m, "/y").2, dir.path().join("b").display().to_string());
    }

    #[test]
    fn a_missing_host_path_under_a_file_names_the_mount_and_the_parent() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        for host in [file.join("sub"), file.join("sub/deeper")] {
            let cfg = ContainerConfig {
                mounts: vec![cri_mount("/ok", dir.path()), cri_mount("/x", &host)],
                ..Default::default()
            };
            let msg = invalid_message(mounts(
                &cfg,
                &PodFiles::default(),
                false,
                false,
                false,
                true,
                &BindSources::default(),
            ));
            assert!(msg.contains("mounts[1].host_path"), "{msg}");
            assert!(
                msg.contains(&format!("its parent {} is not a directory", file.display())),
                "{msg}"
            );
        }
    }

    #[test]
    fn a_missing_host_path_is_not_created_where_crius_must_not_touch() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        // A symlink into a protected dir does not get around the list.
        std::os::unix::fs::symlink(&state, dir.path().join("to-state")).unwrap();
        let protected = [dir.path().join("root-not-yet-made"), state.clone()];
        let cases = [
            (
                PathBuf::from("/proc/crius-test-missing"),
                PathBuf::from("/proc"),
            ),
            (
                PathBuf::from("/sys/crius-test/missing"),
                PathBuf::from("/sys"),
            ),
            (
                PathBuf::from("/dev/../dev/crius-test-missing"),
                PathBuf::from("/dev"),
            ),
            (state.join("c/x"), state.clone()),
            (dir.path().join("to-state/x"), state.clone()),
            (protected[0].join("meta"), protected[0].clone()),
        ];
        for (host, under) in cases {
            let cfg = ContainerConfig {
                mounts: vec![cri_mount("/x", &host)],
                ..Default::default()
            };
            let msg = invalid_message(mounts(
                &cfg,
                &PodFiles::default(),
                false,
                false,
                false,
                true,
                &BindSources {
                    protected: &protected,
                    ..Default::default()
                },
            ));
            assert!(msg.contains("mounts[0].host_path"), "{msg}");
            assert!(
                msg.contains(&format!("it lies under {},", under.display())),
                "{msg}"
            );
        }
        assert!(!state.join("c").exists() && !protected[0].exists());
        // What exists there is still bound: the list is about creating only.
        let cfg = ContainerConfig {
            mounts: vec![
                cri_mount("/x", &state),
                cri_mount("/null", Path::new("/dev/null")),
            ],
            ..Default::default()
        };
        mounts(
            &cfg,
            &PodFiles::default(),
            false,
            false,
            false,
            true,
            &BindSources {
                protected: &protected,
                ..Default::default()
            },
        )
        .unwrap();
    }

    #[test]
    fn a_missing_relative_host_path_is_refused() {
        let cfg = ContainerConfig {
            mounts: vec![CriMount {
                container_path: "/x".into(),
                host_path: "crius-relative-missing/x".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let msg = invalid_message(mounts(
            &cfg,
            &PodFiles::default(),
            false,
            false,
            false,
            true,
            &BindSources::default(),
        ));
        assert!(msg.contains("not an absolute path"), "{msg}");
        assert!(!Path::new("crius-relative-missing").exists());
    }

    #[test]
    fn unsupported_mount_features_are_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let mut idmapped = cri_mount("/u", dir.path());
        idmapped.uid_mappings = vec![Default::default()];
        let relative = cri_mount("rel", dir.path());
        for (m, what) in [
            (idmapped, "mounts[0].uidMappings"),
            (relative, "mounts[0].container_path"),
        ] {
            let cfg = ContainerConfig {
                mounts: vec![m],
                ..Default::default()
            };
            let msg = invalid_message(mounts(
                &cfg,
                &PodFiles::default(),
                false,
                false,
                false,
                true,
                &BindSources::default(),
            ));
            assert!(msg.contains(what), "{msg}");
        }
    }

    fn image_mount(path: &str, image: &str, sub_path: &str) -> CriMount {
        CriMount {
            container_path: path.into(),
            readonly: true,
            image: Some(crius_proto::cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            image_sub_path: sub_path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn image_volumes_are_listed_in_mount_order_and_must_be_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ContainerConfig {
            mounts: vec![
                image_mount("/a", "sha256:aa", ""),
                cri_mount("/h", dir.path()),
                image_mount("/b", "busybox", "etc"),
            ],
            ..Default::default()
        };
        assert_eq!(
            image_volumes(&cfg).unwrap(),
            [
                ImageVolumeRequest {
                    mount: 0,
                    image: "sha256:aa",
                    sub_path: "",
                },
                ImageVolumeRequest {
                    mount: 2,
                    image: "busybox",
                    sub_path: "etc",
                },
            ]
        );
        let mut writable = image_mount("/w", "busybox", "");
        writable.readonly = false;
        let unnamed = image_mount("/u", "", "");
        let mut with_host_path = image_mount("/p", "busybox", "");
        with_host_path.host_path = "/srv".into();
        for (m, message) in [
            (writable, "config.mounts: mounts[1].readonly: an image volume is read-only"),
            (unnamed, "config.mounts: mounts[1].image.image: must name an image"),
            (with_host_path, "config.mounts: mounts[1].host_path \"/srv\": an image volume's source is its image"),
        ] {
            let cfg = ContainerConfig {
                mounts: vec![image_mount("/ok", "busybox", ""), m],
                ..Default::default()
            };
            let err = image_volumes(&cfg).unwrap_err().to_string();
            assert!(err.starts_with(message), "{err}");
            let sources = BTreeMap::from([(0, dir.path().to_path_buf()), (1, dir.path().to_path_buf())]);
            let err = requested_binds(&cfg, true, &BindSources { image_volumes: &sources, ..Default::default() }).err().unwrap().to_string();
            assert!(err.starts_with(message), "the spec refuses it too: {err}");
        }
    }

    #[test]
    fn an_image_volume_binds_its_source_read_only() {
        let view = tempfile::tempdir().unwrap();
        let source = view.path().join("etc");
        let mut with_options = image_mount("/opt/data/", "busybox", "etc");
        with_options.mount_options = vec!["nodev".into()];
        let cfg = ContainerConfig {
            mounts: vec![image_mount("/mnt/image", "busybox", ""), with_options],
            ..Default::default()
        };
        let sources = BTreeMap::from([(0, view.path().to_path_buf()), (1, source.clone())]);
        let m = mounts(
            &cfg,
            &PodFiles::default(),
            false,
            false,
            false,
            true,
            &BindSources {
                image_volumes: &sources,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            find(&m, "/mnt/image"),
            (
                "/mnt/image".to_string(),
                "bind".to_string(),
                view.path().display().to_string(),
                strings(&["rbind", "rprivate", "ro"])
            )
        );
        assert_eq!(
            find(&m, "/opt/data"),
            (
                "/opt/data".to_string(),
                "bind".to_string(),
                source.display().to_string(),
                strings(&["rbind", "rprivate", "ro", "nodev"])
            )
        );
        // Without its source (a caller's bug): no spec, and no host path made.
        let err = mounts(
            &cfg,
            &PodFiles::default(),
            false,
            false,
            false,
            true,
            &BindSources::default(),
        )
        .err()
        .unwrap();
        assert!(matches!(err, SpecError::Build(_)), "{err}");
    }

    /// The bind of `m` alone, with the kernel's mount_setattr as given.
    fn one_bind(m: CriMount, mount_setattr: bool) -> Result<Vec<String>, SpecError> {
        let destination = clean(&m.container_path);
        let cfg = ContainerConfig {
            mounts: vec![m],
            ..Default::default()
        };
        let m = mounts(
            &cfg,
            &PodFiles::default(),
            false,
            false,
            false,
            mount_setattr,
            &BindSources::default(),
        )?;
        Ok(find(&m, &destination).3)
    }

    #[test]
    fn a_recursive_read_only_bind_is_ro_and_rro() {
        let dir = tempfile::tempdir().unwrap();
        let mut rro = cri_mount("/r", dir.path());
        rro.readonly = true;
        rro.recursive_read_only = true;
        assert_eq!(
            one_bind(rro, true).unwrap(),
            strings(&["rbind", "rprivate", "ro", "rro"])
        );
    }

    #[test]
    fn recursive_read_only_needs_readonly_private_propagation_and_mount_setattr() {
        let dir = tempfile::tempdir().unwrap();
        let rro = || {
            let mut m = cri_mount("/r", dir.path());
            m.readonly = true;
            m.recursive_read_only = true;
            m
        };
        let writable = CriMount {
            readonly: false,
            ..rro()
        };
        let msg = invalid_message(one_bind(writable, true).map(|_| unreachable!()));
        assert!(
            msg.contains("mounts[0].recursive_read_only: requires readonly: true"),
            "{msg}"
        );
        for propagation in [
            MountPropagation::PropagationHostToContainer,
            MountPropagation::PropagationBidirectional,
        ] {
            let m = CriMount {
                propagation: propagation as i32,
                ..rro()
            };
            let msg = invalid_message(one_bind(m, true).map(|_| unreachable!()));
            assert!(
                msg.contains(
                    "mounts[0].recursive_read_only: requires propagation PROPAGATION_PRIVATE"
                ) && msg.contains(propagation.as_str_name()),
                "{msg}"
            );
        }
        let msg = invalid_message(one_bind(rro(), false).map(|_| unreachable!()));
        assert!(msg.contains("mount_setattr"), "{msg}");
    }

    #[test]
    fn bind_mount_options_are_applied_and_others_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = cri_mount("/o", dir.path());
        m.mount_options = strings(&["noexec", "nodev", "nosuid"]);
        assert_eq!(
            one_bind(m.clone(), true).unwrap(),
            strings(&["rbind", "rprivate", "rw", "noexec", "nodev", "nosuid"])
        );
        for bad in ["exec", "ro", "NOEXEC", "noexec,nodev", ""] {
            m.mount_options = strings(&["nodev", bad]);
            let msg = invalid_message(one_bind(m.clone(), true).map(|_| unreachable!()));
            assert!(
                msg.contains(&format!(
                    "mounts[0].mount_options: {bad:?} is not one of noexec, nodev, nosuid"
                )),
                "{msg}"
            );
        }
    }

    #[test]
    fn pod_files_unless_overridden() {
        let dir = tempfile::tempdir().unwrap();
        let pod = PodFiles {
            hostname: Some(Path::new("/run/crius/p/hostname")),
            hosts: Some(Path::new("/run/crius/p/hosts")),
            resolv_conf: Some(Path::new("/run/crius/p/resolv.conf")),
            shm: Some(Path::new("/run/crius/p/shm")),
        };
        let cfg = ContainerConfig {
            mounts: vec![cri_mount("/etc/hosts", dir.path())],
            ..Default::default()
        };
        let m = mounts(
            &cfg,
            &pod,
            false,
            false,
            true,
            true,
            &BindSources::default(),
        )
        .unwrap();
        assert_eq!(
            find(&m, "/etc/hostname"),
            (
                "/etc/hostname".into(),
                "bind".into(),
                "/run/crius/p/hostname".into(),
                strings(&["rbind", "rprivate", "ro"])
            )
        );
        assert_eq!(find(&m, "/etc/resolv.conf").2, "/run/crius/p/resolv.conf");
        assert_eq!(
            find(&m, "/etc/hosts").2,
            std::fs::canonicalize(dir.path())
                .unwrap()
                .display()
                .to_string()
        );
        assert_eq!(
            destinations(&m)
                .iter()
                .filter(|d| *d == "/etc/hosts")
                .count(),
            1
        );
        // The pod's /dev/shm replaces the default tmpfs, writable even with a read-only rootfs.
        assert_eq!(
            find(&m, "/dev/shm"),
            (
                "/dev/shm".into(),
                "bind".into(),
                "/run/crius/p/shm".into(),
                strings(&["rbind", "rprivate", "rw"])
            )
        );
        assert_eq!(
            destinations(&m).iter().filter(|d| *d == "/dev/shm").count(),
            1
        );

        let m = mounts(
            &ContainerConfig::default(),
            &pod,
            true,
            false,
            false,
            true,
            &BindSources::default(),
        )
        .unwrap();
        assert_eq!(
            find(&m, "/dev/shm").2,
            "/dev/shm",
            "host IPC shares the host's /dev/shm"
        );
    }

    #[test]
    fn a_dev_bind_replaces_all_default_dev_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ContainerConfig {
            mounts: vec![cri_mount("/dev", dir.path())],
            ..Default::default()
        };
        let m = mounts(
            &cfg,
            &PodFiles::default(),
            false,
            false,
            false,
            true,
            &BindSources::default(),
        )
        .unwrap();
        assert_eq!(
            destinations(&m),
            ["/proc", "/sys", "/sys/fs/cgroup", "/dev"]
        );
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean("/a/./b//c/"), "/a/b/c");
        assert_eq!(clean("/a/../b"), "/b");
        assert_eq!(clean("/"), "/");
    }
}
