//! Who the container's process runs as: the CRI security context or the image's
//! `User`, resolved against the image's own /etc/passwd and /etc/group (as
//! containerd and CRI-O do), never the host's.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;

use crius_proto::cri::{LinuxContainerSecurityContext, SupplementalGroupsPolicy};
use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};

use super::SpecError;

const FIELD_RUN_AS_USERNAME: &str = "config.linux.security_context.run_as_username";
const FIELD_RUN_AS_USER: &str = "config.linux.security_context.run_as_user";
const FIELD_RUN_AS_GROUP: &str = "config.linux.security_context.run_as_group";
const FIELD_SUPPLEMENTAL_GROUPS: &str = "config.linux.security_context.supplemental_groups";
const FIELD_GROUPS_POLICY: &str = "config.linux.security_context.supplemental_groups_policy";
const FIELD_IMAGE_USER: &str = "image config User";

/// An image's /etc/passwd or /etc/group larger than this is refused rather than
/// read into the daemon's memory.
const MAX_DATABASE_BYTES: u64 = 4 << 20;

/// The identity of the container's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Sorted, without duplicates, and including `gid` (as containerd does).
    pub additional_gids: Vec<u32>,
    /// The user's home from the image's /etc/passwd, "/" when unknown: the
    /// value of HOME when neither the image nor the request sets it (as runc does).
    pub home: String,
}

enum Id {
    Numeric(u32),
    Name(String),
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

pub(super) fn resolve(
    rootfs: &Path,
    sc: Option<&LinuxContainerSecurityContext>,
    image_user: &str,
) -> Result<ResolvedUser, SpecError> {
    let passwd = parse_passwd(&read_in_root(rootfs, "etc/passwd")?.unwrap_or_default());
    let groups = parse_group(&read_in_root(rootfs, "etc/group")?.unwrap_or_default());

    let (user, group, field) = requested_user(sc, image_user)?;

    let (uid, entry) = match user {
        Id::Numeric(uid) => (uid, passwd.iter().find(|e| e.uid == uid)),
        Id::Name(name) => {
            let entry = passwd.iter().find(|e| e.name == name).ok_or_else(|| {
                SpecError::invalid(
                    field,
                    format!("user {name:?} not found in the image's /etc/passwd"),
                )
            })?;
            (entry.uid, Some(entry))
        }
    };
    let mut gid = entry.map_or(0, |e| e.gid);
    match group {
        None => {}
        Some(Id::Numeric(g)) => gid = g,
        Some(Id::Name(name)) => {
            gid = groups
                .iter()
                .find(|g| g.name == name)
                .ok_or_else(|| {
                    SpecError::invalid(
                        field,
                        format!("group {name:?} not found in the image's /etc/group"),
                    )
                })?
                .gid
        }
    }
    if let Some(g) = sc.and_then(|sc| sc.run_as_group.as_ref()) {
        gid = checked_id(g.value, FIELD_RUN_AS_GROUP)?;
    }

    let mut gids = BTreeSet::from([gid]);
    let policy = match sc {
        Some(sc) => {
            SupplementalGroupsPolicy::try_from(sc.supplemental_groups_policy).map_err(|_| {
                SpecError::invalid(
                    FIELD_GROUPS_POLICY,
                    format!("unknown policy {}", sc.supplemental_groups_policy),
                )
            })?
        }
        None => SupplementalGroupsPolicy::Merge,
    };
    if let (SupplementalGroupsPolicy::Merge, Some(entry)) = (policy, entry) {
        gids.extend(
            groups
                .iter()
                .filter(|g| g.members.contains(&entry.name))
                .map(|g| g.gid),
        );
    }
    for g in sc
        .map(|sc| sc.supplemental_groups.as_slice())
        .unwrap_or_default()
    {
        gids.insert(checked_id(*g, FIELD_SUPPLEMENTAL_GROUPS)?);
    }

    let home = entry
        .map(|e| e.home.as_str())
        .filter(|h| !h.is_empty())
        .unwrap_or("/")
        .to_string();
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: gids.into_iter().collect(),
        home,
    })
}

/// The user (and group, when the image's `User` names one) asked for, with the
/// field to blame when it does not resolve. Root when nothing is asked.
fn requested_user(
    sc: Option<&LinuxContainerSecurityContext>,
    image_user: &str,
) -> Result<(Id, Option<Id>, &'static str), SpecError> {
    if let Some(sc) = sc {
        // A group without a user is refused, as containerd does (and critest
        // expects): which user it was meant for is anyone's guess.
        if sc.run_as_group.is_some() && sc.run_as_username.is_empty() && sc.run_as_user.is_none() {
            return Err(SpecError::invalid(
                FIELD_RUN_AS_GROUP,
                "run_as_group is set without run_as_user or run_as_username",
            ));
        }
        if !sc.run_as_username.is_empty() {
            return Ok((
                Id::Name(sc.run_as_username.clone()),
                None,
                FIELD_RUN_AS_USERNAME,
            ));
        }
        if let Some(v) = &sc.run_as_user {
            return Ok((
                Id::Numeric(checked_id(v.value, FIELD_RUN_AS_USER)?),
                None,
                FIELD_RUN_AS_USER,
            ));
        }
    }
    if image_user.is_empty() {
        return Ok((Id::Numeric(0), None, FIELD_IMAGE_USER));
    }
    let (user, group) = match image_user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (image_user, None),
    };
    let user = parse_id(user, FIELD_IMAGE_USER, image_user)?;
    let group = group
        .map(|g| parse_id(g, FIELD_IMAGE_USER, image_user))
        .transpose()?;
    Ok((user, group, FIELD_IMAGE_USER))
}

fn parse_id(s: &str, field: &'static str, whole: &str) -> Result<Id, SpecError> {
    if s.is_empty() {
        return Err(SpecError::invalid(
            field,
            format!("{whole:?} is not a user, uid, user:group or uid:gid"),
        ));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let n = s.parse::<i64>().unwrap_or(i64::MAX);
        return Ok(Id::Numeric(checked_id(n, field)?));
    }
    Ok(Id::Name(s.to_string()))
}

/// runc (and so containerd) accepts ids up to i32::MAX only.
fn checked_id(v: i64, field: &'static str) -> Result<u32, SpecError> {
    if (0..=i64::from(i32::MAX)).contains(&v) {
        Ok(v as u32)
    } else {
        Err(SpecError::invalid(
            field,
            format!("{v} is out of range (0 to {})", i32::MAX),
        ))
    }
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f.get(5).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .unwrap_or(&"")
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

/// Reads `path` inside `rootfs` with every symlink resolved inside it too: an
/// image's `/etc/passwd -> /host/file` must not reach the host's files.
/// `None` when it does not exist.
fn read_in_root(rootfs: &Path, path: &str) -> Result<Option<String>, SpecError> {
    let io_error = |source| SpecError::Io {
        path: rootfs.join(path),
        source,
    };
    let root = File::open(rootfs).map_err(|source| SpecError::Io {
        path: rootfs.to_path_buf(),
        source,
    })?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    let fd = match openat2(root.as_raw_fd(), path, how) {
        Ok(fd) => fd,
        Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(None),
        Err(e) => return Err(io_error(e.into())),
    };
    // SAFETY: openat2 just returned this descriptor and nothing else owns it.
    let file = unsafe { File::from_raw_fd(fd) };
    let mut bytes = Vec::new();
    file.take(MAX_DATABASE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > MAX_DATABASE_BYTES {
        return Err(io_error(std::io::Error::other(format!(
            "larger than {MAX_DATABASE_BYTES} bytes"
        ))));
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crius_proto::cri::Int64Value;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
# a comment
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
default-user:x:1000:1000::/home/default-user:/bin/sh
broken line
nohome:x:1500:1500
";
    const GROUP: &str = "\
root:x:0:
www-data:x:33:
default-user:x:1000:
group-defined-in-image:x:50000:default-user
audio:x:29:www-data, default-user
";

    fn fixture(passwd: Option<&str>, group: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        if let Some(p) = passwd {
            std::fs::write(dir.path().join("etc/passwd"), p).unwrap();
        }
        if let Some(g) = group {
            std::fs::write(dir.path().join("etc/group"), g).unwrap();
        }
        dir
    }

    fn sc() -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext::default()
    }

    fn user(uid: u32, gid: u32, gids: &[u32], home: &str) -> ResolvedUser {
        ResolvedUser {
            uid,
            gid,
            additional_gids: gids.to_vec(),
            home: home.to_string(),
        }
    }

    #[test]
    fn nothing_asked_is_root() {
        let root = fixture(Some(PASSWD), Some(GROUP));
        assert_eq!(
            resolve(root.path(), None, "").unwrap(),
            user(0, 0, &[0], "/root")
        );
    }

    #[test]
    fn image_user_forms() {
        let root = fixture(Some(PASSWD), Some(GROUP));
        let r = |u: &str| resolve(root.path(), None, u).unwrap();
        // uid known to /etc/passwd: its primary group and memberships.
        assert_eq!(
            r("1000"),
            user(1000, 1000, &[29, 1000, 50000], "/home/default-user")
        );
        // uid unknown: gid 0, home /.
        assert_eq!(r("1002"), user(1002, 0, &[0], "/"));
        assert_eq!(r("www-data"), user(33, 33, &[29, 33], "/var/www"));
        assert_eq!(r("1003:1004"), user(1003, 1004, &[1004], "/"));
        assert_eq!(r("www-data:1004"), user(33, 1004, &[29, 1004], "/var/www"));
        assert_eq!(
            r("1000:audio"),
            user(1000, 29, &[29, 50000], "/home/default-user")
        );
        assert_eq!(r("nohome"), user(1500, 1500, &[1500], "/"));
    }

    #[test]
    fn unknown_names_are_invalid_and_name_the_field() {
        let root = fixture(Some(PASSWD), Some(GROUP));
        let err = resolve(root.path(), None, "nobody-here")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(FIELD_IMAGE_USER), "{err}");
        assert!(err.contains("nobody-here"), "{err}");
        let err = resolve(root.path(), None, "1000:nogroup")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nogroup"), "{err}");
        let s = LinuxContainerSecurityContext {
            run_as_username: "ghost".into(),
            ..sc()
        };
        let err = resolve(root.path(), Some(&s), "").unwrap_err();
        assert!(
            matches!(
                err,
                SpecError::InvalidArgument {
                    field: FIELD_RUN_AS_USERNAME,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn names_need_the_databases() {
        let root = fixture(None, None);
        assert!(resolve(root.path(), None, "www-data").is_err());
        assert_eq!(
            resolve(root.path(), None, "7").unwrap(),
            user(7, 0, &[0], "/")
        );
    }

    #[test]
    fn malformed_or_out_of_range_ids_are_invalid() {
        let root = fixture(Some(PASSWD), Some(GROUP));
        for bad in [":", "1000:", ":1000", "99999999999"] {
            assert!(
                matches!(
                    resolve(root.path(), None, bad),
                    Err(SpecError::InvalidArgument { .. })
                ),
                "{bad}"
            );
        }
        let s = LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: -1 }),
            ..sc()
        };
        let err = resolve(root.path(), Some(&s), "").unwrap_err();
        assert!(
            matches!(
                err,
                SpecError::InvalidArgument {
                    field: FIELD_RUN_AS_USER,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn security_context_wins_over_image() {
        let root = fixture(Some(PASSWD), Some(GROUP));
        let s = LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 33 }),
            ..sc()
        };
        assert_eq!(
            resolve(root.path(), Some(&s), "1000").unwrap(),
            user(33, 33, &[29, 33], "/var/www")
        );
        let s = LinuxContainerSecurityContext {
            run_as_username: "default-user".into(),
            run_as_user: Some(Int64Value { value: 33 }),
            ..sc()
        };
        assert_eq!(resolve(root.path(), Some(&s), "").unwrap().uid, 1000);
    }

    #[test]
    fn run_as_group_overrides_the_users_group() {
        let root = fixture(Some(PASSWD), Some(GROUP));
        let s = LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 1000 }),
            run_as_group: Some(Int64Value { value: 2000 }),
            ..sc()
        };
        assert_eq!(
            resolve(root.path(), Some(&s), "").unwrap(),
            user(1000, 2000, &[29, 2000, 50000], "/home/default-user")
        );
        let s = LinuxContainerSecurityContext {
            run_as_username: "www-data".into(),
            run_as_group: Some(Int64Value { value: 7 }),
            ..sc()
        };
        assert_eq!(resolve(root.path(), Some(&s), "").unwrap().gid, 7);
    }

    #[test]
    fn run_as_group_without_a_user_is_invalid() {
        let root = fixture(Some(PASSWD), Some(GROUP));
        let s = LinuxContainerSecurityContext {
            run_as_group: Some(Int64Value { value: 1002 }),
            ..sc()
        };
        let err = resolve(root.path(), Some(&s), "www-data:1004").unwrap_err();
        assert!(
            matches!(
                err,
                SpecError::InvalidArgument {
                    field: FIELD_RUN_AS_GROUP,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn supplemental_groups_merge_or_replace_image_groups() {
        let root = fixture(Some(PASSWD), Some(GROUP));
        let s = LinuxContainerSecurityContext {
            supplemental_groups: vec![5, 50000],
            ..sc()
        };
        assert_eq!(
            resolve(root.path(), Some(&s), "1000")
                .unwrap()
                .additional_gids,
            vec![5, 29, 1000, 50000]
        );
        let s = LinuxContainerSecurityContext {
            supplemental_groups: vec![5],
            supplemental_groups_policy: SupplementalGroupsPolicy::Strict as i32,
            ..sc()
        };
        assert_eq!(
            resolve(root.path(), Some(&s), "1000")
                .unwrap()
                .additional_gids,
            vec![5, 1000]
        );
        let s = LinuxContainerSecurityContext {
            supplemental_groups: vec![-5],
            ..sc()
        };
        assert!(resolve(root.path(), Some(&s), "1000").is_err());
    }

    #[test]
    fn symlinks_resolve_inside_the_rootfs() {
        let root = fixture(None, None);
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(
            elsewhere.path().join("passwd"),
            "evil:x:4242:4242::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::create_dir(root.path().join("data")).unwrap();
        std::fs::write(root.path().join("data/passwd"), "good:x:77:77::/:/bin/sh\n").unwrap();
        // An absolute link whose target exists on the host and, differently, in the rootfs.
        let target = elsewhere.path().join("passwd");
        let inside = root.path().join(target.strip_prefix("/").unwrap());
        std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
        std::fs::write(&inside, "good:x:78:78::/:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink(&target, root.path().join("etc/passwd")).unwrap();
        assert!(resolve(root.path(), None, "evil").is_err());
        assert_eq!(resolve(root.path(), None, "good").unwrap().uid, 78);
        std::fs::remove_file(root.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("../../../../data/passwd", root.path().join("etc/passwd"))
            .unwrap();
        assert_eq!(resolve(root.path(), None, "good").unwrap().uid, 77);
    }
}
