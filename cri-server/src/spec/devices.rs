//! Device nodes: the request's (a node, or every node under a directory) and,
//! for a privileged container, the host's. Each requested node also gets its
//! devices-cgroup rule; a privileged container's cgroup allows every device.

use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crius_proto::cri::ContainerConfig;
use nix::sys::stat::{major, minor};
use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
};

use super::SpecError;

const FIELD_DEVICES: &str = "config.devices";

/// Under the host's /dev, what a privileged container does not get: the
/// runtime mounts its own pts, shm and mqueue, and the console is the host's.
const HOST_DEV_SKIPPED_DIRS: [&str; 7] =
    ["pts", "shm", "mqueue", "fd", ".lxc", ".lxd-mounts", ".udev"];
const HOST_DEV_SKIPPED_FILES: [&str; 1] = ["console"];

#[derive(Debug, Default)]
pub(super) struct Devices {
    pub nodes: Vec<LinuxDevice>,
    /// Allow rules, to follow the deny-all rule.
    pub rules: Vec<LinuxDeviceCgroup>,
}

pub(super) fn devices(
    config: &ContainerConfig,
    privileged: bool,
    host_dev: &Path,
) -> Result<Devices, SpecError> {
    let mut out = Devices::default();
    for (i, d) in config.devices.iter().enumerate() {
        let invalid =
            |what: String| SpecError::invalid(FIELD_DEVICES, format!("devices[{i}].{what}"));
        let access = if d.permissions.is_empty() {
            "rwm"
        } else {
            &d.permissions
        };
        if !access.chars().all(|c| "rwm".contains(c)) {
            return Err(invalid(format!(
                "permissions {:?}: only r, w and m are allowed",
                d.permissions
            )));
        }
        let container_path = if d.container_path.is_empty() {
            &d.host_path
        } else {
            &d.container_path
        };
        if !container_path.starts_with('/') {
            return Err(invalid(format!(
                "container_path {container_path:?} is not an absolute path"
            )));
        }
        let meta = match std::fs::metadata(&d.host_path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(invalid(format!(
                    "host_path {:?} does not exist",
                    d.host_path
                )))
            }
            Err(source) => {
                return Err(SpecError::Io {
                    path: d.host_path.clone().into(),
                    source,
                })
            }
        };
        let found = if meta.is_dir() {
            let mut found = Vec::new();
            walk(Path::new(&d.host_path), &[], &[], &mut found)?;
            found
                .into_iter()
                .map(|(host, meta)| {
                    let rel = host
                        .strip_prefix(&d.host_path)
                        .unwrap_or(&host)
                        .to_path_buf();
                    (Path::new(container_path).join(rel), meta)
                })
                .collect()
        } else if device_type(&meta).is_some() {
            vec![(PathBuf::from(container_path), meta)]
        } else {
            return Err(invalid(format!(
                "host_path {:?} is not a device node",
                d.host_path
            )));
        };
        for (path, meta) in found {
            let node = node(path, &meta)?;
            out.rules.push(
                LinuxDeviceCgroupBuilder::default()
                    .allow(true)
                    .typ(node.typ())
                    .major(node.major())
                    .minor(node.minor())
                    .access(access.to_string())
                    .build()?,
            );
            out.nodes.push(node);
        }
    }

    if privileged {
        let mut found = Vec::new();
        walk(
            host_dev,
            &HOST_DEV_SKIPPED_DIRS,
            &HOST_DEV_SKIPPED_FILES,
            &mut found,
        )?;
        for (host, meta) in found {
            let path = Path::new("/dev").join(host.strip_prefix(host_dev).unwrap_or(&host));
            // The request's own nodes win over the host's at the same path.
            if out.nodes.iter().any(|n| n.path() == &path) {
                continue;
            }
            out.nodes.push(node(path, &meta)?);
        }
    }
    Ok(out)
}

fn device_type(meta: &Metadata) -> Option<LinuxDeviceType> {
    let t = meta.file_type();
    if t.is_char_device() {
        Some(LinuxDeviceType::C)
    } else if t.is_block_device() {
        Some(LinuxDeviceType::B)
    } else {
        None
    }
}

fn node(path: PathBuf, meta: &Metadata) -> Result<LinuxDevice, SpecError> {
    let rdev = meta.rdev();
    Ok(LinuxDeviceBuilder::default()
        .path(path)
        .typ(device_type(meta).unwrap_or(LinuxDeviceType::C))
        .major(major(rdev) as i64)
        .minor(minor(rdev) as i64)
        .file_mode(meta.mode() & 0o777)
        .uid(meta.uid())
        .gid(meta.gid())
        .build()?)
}

/// Every device node under `dir` (symlinks not followed), sorted by path.
fn walk(
    dir: &Path,
    skipped_dirs: &[&str],
    skipped_files: &[&str],
    found: &mut Vec<(PathBuf, Metadata)>,
) -> Result<(), SpecError> {
    let io = |source| SpecError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // An entry may vanish while we look (hot-unplug): not an error.
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if meta.is_dir() {
            if !skipped_dirs.contains(&name.as_ref()) {
                walk(&entry.path(), skipped_dirs, skipped_files, found)?;
            }
        } else if device_type(&meta).is_some() && !skipped_files.contains(&name.as_ref()) {
            found.push((entry.path(), meta));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crius_proto::cri::Device;

    fn config(devices: Vec<Device>) -> ContainerConfig {
        ContainerConfig {
            devices,
            ..Default::default()
        }
    }

    fn device(container: &str, host: &str, permissions: &str) -> Device {
        Device {
            container_path: container.into(),
            host_path: host.into(),
            permissions: permissions.into(),
        }
    }

    fn empty_dev() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn a_requested_node_and_its_rule() {
        let dev = empty_dev();
        let d = devices(
            &config(vec![device("/dev/mynull", "/dev/null", "rw")]),
            false,
            dev.path(),
        )
        .unwrap();
        assert_eq!(d.nodes.len(), 1);
        let n = &d.nodes[0];
        assert_eq!(n.path(), Path::new("/dev/mynull"));
        assert_eq!(n.typ(), LinuxDeviceType::C);
        assert_eq!((n.major(), n.minor()), (1, 3));
        assert_eq!(n.file_mode(), Some(0o666));
        let r = &d.rules[0];
        assert!(r.allow());
        assert_eq!(
            (r.typ(), r.major(), r.minor()),
            (Some(LinuxDeviceType::C), Some(1), Some(3))
        );
        assert_eq!(r.access().as_deref(), Some("rw"));
        // Defaults: the host path inside, every access.
        let d = devices(
            &config(vec![device("", "/dev/null", "")]),
            false,
            dev.path(),
        )
        .unwrap();
        assert_eq!(d.nodes[0].path(), Path::new("/dev/null"));
        assert_eq!(d.rules[0].access().as_deref(), Some("rwm"));
    }

    #[test]
    fn bad_requests_name_the_device() {
        let dev = empty_dev();
        let file = dev.path().join("plain");
        std::fs::write(&file, "").unwrap();
        for d in [
            device("/dev/x", "/dev/no-such-device", ""),
            device("/dev/x", file.to_str().unwrap(), ""),
            device("/dev/x", "/dev/null", "rwx"),
            device("dev/x", "/dev/null", ""),
        ] {
            let err = devices(&config(vec![d]), false, dev.path()).unwrap_err();
            assert!(
                matches!(
                    err,
                    SpecError::InvalidArgument {
                        field: FIELD_DEVICES,
                        ..
                    }
                ),
                "{err}"
            );
            assert!(err.to_string().contains("devices[0]."), "{err}");
        }
    }

    #[test]
    fn privileged_gets_the_hosts_nodes_but_not_pts() {
        let d = devices(&config(vec![]), true, Path::new("/dev")).unwrap();
        assert!(
            d.rules.is_empty(),
            "privileged: the cgroup allows all anyway"
        );
        let paths: Vec<&Path> = d.nodes.iter().map(|n| n.path().as_path()).collect();
        assert!(paths.contains(&Path::new("/dev/null")), "{paths:?}");
        assert!(
            !paths.iter().any(|p| p.starts_with("/dev/pts")),
            "{paths:?}"
        );
        assert!(!paths.contains(&Path::new("/dev/console")), "{paths:?}");
        // A requested node at the same path wins.
        let d = devices(
            &config(vec![device("/dev/null", "/dev/zero", "r")]),
            true,
            Path::new("/dev"),
        )
        .unwrap();
        let null: Vec<_> = d
            .nodes
            .iter()
            .filter(|n| n.path() == Path::new("/dev/null"))
            .collect();
        assert_eq!(null.len(), 1);
        assert_eq!(null[0].minor(), 5, "the request's /dev/zero");
    }

    #[test]
    fn a_directory_brings_every_node_under_it() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping a_directory_brings_every_node_under_it: needs root (mknod)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        for (name, minor_no) in [("a", 3), ("sub/b", 5)] {
            nix::sys::stat::mknod(
                &dir.path().join(name),
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                nix::sys::stat::makedev(1, minor_no),
            )
            .unwrap();
        }
        std::os::unix::fs::symlink("/dev/null", dir.path().join("link")).unwrap();
        let d = devices(
            &config(vec![device("/dev/mine", dir.path().to_str().unwrap(), "r")]),
            false,
            empty_dev().path(),
        )
        .unwrap();
        let paths: Vec<&Path> = d.nodes.iter().map(|n| n.path().as_path()).collect();
        assert_eq!(
            paths,
            [Path::new("/dev/mine/a"), Path::new("/dev/mine/sub/b")]
        );
        assert_eq!(d.nodes[0].file_mode(), Some(0o600));
        assert_eq!(d.rules.len(), 2);
    }
}
