//! Whether the container's process can be exec'd, decided before anything is forked.
//!
//! runc looks the process up (`exec.LookPath` in its init, as the container's user, with the
//! container's `PATH`) before it waits for start, and fails the create with Go's words:
//! `exec: "nosuch": executable file not found in $PATH`, `exec: "/bin/nosuch": stat
//! /bin/nosuch: no such file or directory`, `exec: "/etc": is a directory`,
//! `exec: "/etc/passwd": permission denied`. containerd creates the runc container at
//! StartContainer, so kubelet sees these at start. libcontainer checks too, but later (in its
//! init, failing the create) and by its own rules (a file without the other-exec bit is
//! refused even for its owner). So the runtime looks the process up first, from outside the
//! container, once the mount points and the working directory are made: in the rootfs, or in
//! a bind mount's source where the path lies under one, every symlink resolved inside the
//! root it is met in (an absolute or climbing link never leaves it, see
//! [`crate::mountpoint::in_container`]). A path under any other mount (a tmpfs, …) does not
//! exist before the create: it is left to libcontainer.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fstatat, FileStat, SFlag};
use oci_spec::runtime::Spec;

use crate::mountpoint::{in_container, InContainer};

/// Why the spec's process (`process.args[0]`) cannot be exec'd, in runc's words; None when it
/// can, or when that is only known once the container's mounts are made. The lookup follows
/// Go's `exec.LookPath`: a name with a `/` is that path (relative to `process.cwd`), any other
/// is searched in the absolute directories of the process's `PATH`, and the file must be no
/// directory and executable by the process's user.
pub(crate) fn unexecutable(spec: &Spec, rootfs: &Path) -> Option<String> {
    let process = spec.process().as_ref()?;
    let name = process.args().as_ref()?.first()?;
    let user = process.user();
    let mut gids = vec![user.gid()];
    gids.extend(user.additional_gids().iter().flatten());
    // With user namespaces the files' owners are host ids: only "some exec bit" is certain.
    let mapped = spec
        .linux()
        .as_ref()
        .is_some_and(|l| l.uid_mappings().is_some() || l.gid_mappings().is_some());
    let who = Who {
        uid: (!mapped).then_some(user.uid()),
        gids,
    };
    let lookup = |path: &Path| resolve(spec, rootfs, path);

    if name.contains('/') {
        let path = process.cwd().join(name);
        let reason = match lookup(&path) {
            Resolved::Elsewhere => return None,
            Resolved::Failed(errno) => format!("stat {name}: {}", go_errno(errno)),
            Resolved::File(stat) if is_dir(&stat) => go_errno(Errno::EISDIR),
            Resolved::File(stat) if !who.may_execute(&stat) => go_errno(Errno::EACCES),
            Resolved::File(_) => return None,
        };
        return Some(format!("exec: {name:?}: {reason}"));
    }
    let path_var = process
        .env()
        .iter()
        .flatten()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or_default();
    // Go returns the first directory's file that may be exec'd; relative ones are refused.
    for dir in path_var
        .split(':')
        .map(Path::new)
        .filter(|d| d.is_absolute())
    {
        match lookup(&dir.join(name)) {
            Resolved::Elsewhere => return None,
            Resolved::File(stat) if !is_dir(&stat) && who.may_execute(&stat) => return None,
            Resolved::File(_) | Resolved::Failed(_) => {}
        }
    }
    Some(format!(
        "exec: {name:?}: executable file not found in $PATH"
    ))
}

/// Whom the exec permission is checked for.
struct Who {
    /// None: ids are mapped, any exec bit will do.
    uid: Option<u32>,
    /// The primary group first, then the additional ones.
    gids: Vec<u32>,
}

impl Who {
    /// As `access(X_OK)`: root needs any exec bit; others the owner's, group's or others'.
    fn may_execute(&self, stat: &FileStat) -> bool {
        let mode = stat.st_mode;
        let bit = match self.uid {
            None | Some(0) => 0o111,
            Some(uid) if uid == stat.st_uid => 0o100,
            Some(_) if self.gids.contains(&stat.st_gid) => 0o010,
            Some(_) => 0o001,
        };
        mode & bit != 0
    }
}

fn is_dir(stat: &FileStat) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// Go's wording of an errno, libc's text in lower case: "no such file or directory".
fn go_errno(errno: Errno) -> String {
    // std words it as strerror(3) does, with " (os error N)" after.
    let text = std::io::Error::from_raw_os_error(errno as i32).to_string();
    let text = text.split(" (os error").next().unwrap_or_default();
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_lowercase().chain(chars).collect()
    })
}

/// What a path of the container is before its mounts are made.
#[derive(Debug)]
enum Resolved {
    /// The file the path names, symlinks followed.
    File(FileStat),
    /// Resolving failed (ENOENT, ENOTDIR, ELOOP, …).
    Failed(Errno),
    /// It lies under a mount that is not made yet.
    Elsewhere,
}

/// Resolves the container path `path` as the container will see it, only looking (see
/// [`in_container`]: in the rootfs, or in the source of the bind mount it lies under, no
/// symlink leading out of either), and stats what it names.
fn resolve(spec: &Spec, rootfs: &Path, path: &Path) -> Resolved {
    match in_container(spec, rootfs, path, None) {
        Ok(InContainer::At { root, path }) => {
            let path = if path.as_os_str().is_empty() {
                Path::new(".")
            } else {
                &path
            };
            File::open(&root)
                .map_err(|e| errno_of(&e))
                .and_then(|root| {
                    fstatat(Some(root.as_raw_fd()), path, AtFlags::AT_SYMLINK_NOFOLLOW)
                })
                .map_or_else(Resolved::Failed, Resolved::File)
        }
        Ok(InContainer::OtherMount) => Resolved::Elsewhere,
        Err(e) => Resolved::Failed(e.source.errno),
    }
}

fn errno_of(e: &std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    use oci_spec::runtime::{MountBuilder, ProcessBuilder, RootBuilder, SpecBuilder, UserBuilder};

    use super::*;

    struct Rootfs {
        dir: tempfile::TempDir,
    }

    impl Rootfs {
        /// A rootfs with /bin/sh (0755), /bin/secret (0700, uid 0), /etc/passwd (0644),
        /// /usr/bin -> /bin and /sbin -> ../../../bin (climbing out stops at the root).
        fn new() -> Rootfs {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            for d in ["bin", "etc", "usr"] {
                fs::create_dir(root.join(d)).unwrap();
            }
            for (file, mode) in [
                ("bin/sh", 0o755),
                ("bin/secret", 0o700),
                ("etc/passwd", 0o644),
            ] {
                fs::write(root.join(file), "x").unwrap();
                fs::set_permissions(root.join(file), fs::Permissions::from_mode(mode)).unwrap();
            }
            symlink("/bin", root.join("usr/bin")).unwrap();
            symlink("../../../bin", root.join("sbin")).unwrap();
            Rootfs { dir }
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }

        fn check(&self, args: &[&str], path: &str, uid: u32) -> Option<String> {
            self.check_with(args, path, uid, vec![])
        }

        fn check_with(
            &self,
            args: &[&str],
            path: &str,
            uid: u32,
            mounts: Vec<oci_spec::runtime::Mount>,
        ) -> Option<String> {
            let spec = SpecBuilder::default()
                .root(RootBuilder::default().path(self.path()).build().unwrap())
                .process(
                    ProcessBuilder::default()
                        .args(args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
                        .env(vec![format!("PATH={path}")])
                        .cwd("/etc")
                        .user(UserBuilder::default().uid(uid).gid(uid).build().unwrap())
                        .build()
                        .unwrap(),
                )
                .mounts(mounts)
                .build()
                .unwrap();
            unexecutable(&spec, self.path())
        }
    }

    #[test]
    fn names_on_path_are_found_through_symlinks_inside_the_rootfs() {
        let rootfs = Rootfs::new();
        assert_eq!(rootfs.check(&["sh"], "/usr/local/bin:/usr/bin", 0), None);
        assert_eq!(rootfs.check(&["sh"], "/sbin", 1000), None);
        assert_eq!(rootfs.check(&["/usr/bin/sh"], "", 0), None);
        // Relative to the working directory (/etc).
        assert_eq!(rootfs.check(&["../bin/sh"], "", 0), None);
        // A host directory named by an absolute symlink is not the container's.
        let host = tempfile::tempdir().unwrap();
        fs::write(host.path().join("tool"), "x").unwrap();
        fs::set_permissions(host.path().join("tool"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink(host.path(), rootfs.path().join("hostlink")).unwrap();
        assert_eq!(
            rootfs.check(&["tool"], "/hostlink", 0).as_deref(),
            Some(r#"exec: "tool": executable file not found in $PATH"#)
        );
    }

    #[test]
    fn what_cannot_be_execd_is_worded_as_runc() {
        let rootfs = Rootfs::new();
        let cases = [
            (
                "nosuch",
                0,
                r#"exec: "nosuch": executable file not found in $PATH"#,
            ),
            // A directory or a file without exec permission on PATH is skipped.
            (
                "etc",
                0,
                r#"exec: "etc": executable file not found in $PATH"#,
            ),
            (
                "/bin/nosuch",
                0,
                r#"exec: "/bin/nosuch": stat /bin/nosuch: no such file or directory"#,
            ),
            (
                "/etc/passwd/x",
                0,
                r#"exec: "/etc/passwd/x": stat /etc/passwd/x: not a directory"#,
            ),
            ("/etc", 0, r#"exec: "/etc": is a directory"#),
            (
                "/etc/passwd",
                0,
                r#"exec: "/etc/passwd": permission denied"#,
            ),
            // Owned by root, 0700: root may, others not.
            (
                "/bin/secret",
                4242,
                r#"exec: "/bin/secret": permission denied"#,
            ),
        ];
        for (name, uid, want) in cases {
            assert_eq!(
                rootfs.check(&[name], "/bin:/", uid).as_deref(),
                Some(want),
                "{name}"
            );
        }
        assert_eq!(rootfs.check(&["/bin/secret"], "", 0), None);
        assert_eq!(rootfs.check(&["secret"], "/bin", 0), None);
    }

    #[test]
    fn a_symlink_loop_is_eloop() {
        let rootfs = Rootfs::new();
        symlink("/loop", rootfs.path().join("loop")).unwrap();
        assert_eq!(
            rootfs.check(&["/loop"], "", 0).as_deref(),
            Some(r#"exec: "/loop": stat /loop: too many levels of symbolic links"#)
        );
    }

    #[test]
    fn under_a_bind_mount_the_source_counts_and_other_mounts_are_unknown() {
        let rootfs = Rootfs::new();
        let volume = tempfile::tempdir().unwrap();
        fs::write(volume.path().join("tool"), "x").unwrap();
        fs::set_permissions(
            volume.path().join("tool"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let bind = MountBuilder::default()
            .destination("/opt")
            .typ("bind")
            .source(volume.path())
            .options(vec!["rbind".to_string()])
            .build()
            .unwrap();
        let tmpfs = MountBuilder::default()
            .destination("/scratch")
            .typ("tmpfs")
            .source("tmpfs")
            .build()
            .unwrap();
        let mounts = vec![bind, tmpfs];
        assert_eq!(
            rootfs.check_with(&["tool"], "/opt", 0, mounts.clone()),
            None
        );
        // A symlink of the image into the volume.
        symlink("/opt/tool", rootfs.path().join("bin/linked")).unwrap();
        assert_eq!(
            rootfs.check_with(&["linked"], "/bin", 0, mounts.clone()),
            None
        );
        assert_eq!(
            rootfs
                .check_with(&["/opt/nosuch"], "", 0, mounts.clone())
                .as_deref(),
            Some(r#"exec: "/opt/nosuch": stat /opt/nosuch: no such file or directory"#)
        );
        // What a tmpfs will hold is not known before the create.
        assert_eq!(
            rootfs.check_with(&["/scratch/x"], "", 0, mounts.clone()),
            None
        );
        assert_eq!(rootfs.check_with(&["x"], "/scratch:/bin", 0, mounts), None);
    }
}
