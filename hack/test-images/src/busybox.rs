//! The base layer every image shares: this host's Debian dynamic busybox, the
//! shared libraries and loader `ldd` lists for it, every applet as a hard link
//! to the one binary, and a minimal root tree with accounts.
//!
//! Hard links, not symlinks: a spec masks `/bin/ls` by bind-mounting over it,
//! which through a symlink would mask busybox itself.

use std::process::Command;
use std::sync::Arc;

use crate::layer::LayerBuilder;
use crate::BuildError;

pub const BUSYBOX: &str = "/bin/busybox";

/// PATH of every image, as Docker's default.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A line of /etc/passwd.
#[derive(Debug, Clone, Copy)]
pub struct User {
    pub name: &'static str,
    pub uid: u32,
    pub gid: u32,
    pub home: &'static str,
    pub shell: &'static str,
}

/// A line of /etc/group.
#[derive(Debug, Clone, Copy)]
pub struct Group {
    pub name: &'static str,
    pub gid: u32,
    pub members: &'static [&'static str],
}

/// The accounts of every image; `www-data` because a critest image runs as it.
pub const BASE_USERS: &[User] = &[
    User {
        name: "root",
        uid: 0,
        gid: 0,
        home: "/root",
        shell: "/bin/sh",
    },
    User {
        name: "www-data",
        uid: 33,
        gid: 33,
        home: "/var/www",
        shell: "/bin/false",
    },
    User {
        name: "nobody",
        uid: 65534,
        gid: 65534,
        home: "/nonexistent",
        shell: "/bin/false",
    },
];

pub const BASE_GROUPS: &[Group] = &[
    Group {
        name: "root",
        gid: 0,
        members: &[],
    },
    Group {
        name: "www-data",
        gid: 33,
        members: &[],
    },
    Group {
        name: "nobody",
        gid: 65534,
        members: &[],
    },
];

/// /etc/passwd with the base accounts followed by `extra`.
pub fn etc_passwd(extra: &[User]) -> String {
    BASE_USERS
        .iter()
        .chain(extra)
        .map(|u| {
            format!(
                "{}:x:{}:{}:{}:{}:{}\n",
                u.name, u.uid, u.gid, u.name, u.home, u.shell
            )
        })
        .collect()
}

/// /etc/group with the base groups followed by `extra`.
pub fn etc_group(extra: &[Group]) -> String {
    BASE_GROUPS
        .iter()
        .chain(extra)
        .map(|g| format!("{}:x:{}:{}\n", g.name, g.gid, g.members.join(",")))
        .collect()
}

/// Writes /etc/passwd and /etc/group with the base accounts plus these.
pub fn add_accounts(layer: &mut LayerBuilder, users: &[User], groups: &[Group]) {
    layer
        .file("/etc/passwd", 0o644, etc_passwd(users).into_bytes())
        .file("/etc/group", 0o644, etc_group(groups).into_bytes());
}

fn run(program: &str, args: &[&str]) -> Result<String, BuildError> {
    let command = format!("{program} {}", args.join(" "));
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| BuildError::Command {
            command: command.clone(),
            detail: source.to_string(),
        })?;
    if !output.status.success() {
        let detail = format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        return Err(BuildError::Command { command, detail });
    }
    String::from_utf8(output.stdout).map_err(|_| BuildError::Command {
        command,
        detail: "output is not UTF-8".into(),
    })
}

fn read(path: &str) -> Result<Vec<u8>, BuildError> {
    std::fs::read(path).map_err(|source| BuildError::Read {
        path: path.into(),
        source,
    })
}

/// The absolute paths of the shared objects in `ldd` output, the loader included
/// (`linux-vdso.so.1` has no file and is left out).
pub fn parse_ldd(output: &str) -> Result<Vec<String>, BuildError> {
    let mut paths = Vec::new();
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let resolved = match line.split_once("=>") {
            Some((_, resolved)) => resolved.trim(),
            None => line,
        };
        match resolved.split_whitespace().next() {
            Some(path) if path.starts_with('/') => paths.push(path.to_string()),
            _ if line.starts_with("linux-vdso") => {}
            _ => {
                return Err(BuildError::Command {
                    command: format!("ldd {BUSYBOX}"),
                    detail: format!("unresolved library: {line}"),
                })
            }
        }
    }
    Ok(paths)
}

/// This host's busybox binary.
pub fn read_busybox() -> Result<Arc<[u8]>, BuildError> {
    Ok(read(BUSYBOX)?.into())
}

/// The base layer around `busybox`, with its libraries read from this host.
pub fn base_layer(busybox: &Arc<[u8]>) -> Result<LayerBuilder, BuildError> {
    let mut layer = LayerBuilder::new();
    for (dir, mode) in [
        ("/bin", 0o755),
        ("/dev", 0o755),
        ("/etc", 0o755),
        ("/home", 0o755),
        ("/lib", 0o755),
        ("/proc", 0o555),
        ("/root", 0o700),
        ("/sbin", 0o755),
        ("/sys", 0o555),
        ("/tmp", 0o1777),
        ("/usr/bin", 0o755),
        ("/usr/sbin", 0o755),
        ("/usr/local/bin", 0o755),
        ("/var/run", 0o755),
    ] {
        layer.dir(dir, mode);
    }
    layer.file(BUSYBOX, 0o755, busybox.clone());
    for applet in run(BUSYBOX, &["--list-full"])?.lines().map(str::trim) {
        let applet = format!("/{applet}");
        if !applet.ends_with('/') && applet != BUSYBOX {
            layer.hard_link(&applet, BUSYBOX);
        }
    }
    for library in parse_ldd(&run("ldd", &[BUSYBOX])?)? {
        layer.file(&library, 0o755, read(&library)?);
    }
    add_accounts(&mut layer, &[], &[]);
    // Applets Debian's build leaves out and critest runs.
    layer
        .file(
            "/usr/bin/pgrep",
            0o755,
            &include_bytes!("../files/pgrep")[..],
        )
        .file("/usr/bin/ipcs", 0o755, &include_bytes!("../files/ipcs")[..]);
    Ok(layer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_libraries_and_loader() {
        let output = "\tlinux-vdso.so.1 (0x00007ffd)\n\
            \tlibresolv.so.2 => /lib/x86_64-linux-gnu/libresolv.so.2 (0x00007f93)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f95)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f9315837000)\n";
        assert_eq!(
            parse_ldd(output).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libresolv.so.2",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
    }

    #[test]
    fn accounts_list_base_then_extra() {
        let user = User {
            name: "crius",
            uid: 1000,
            gid: 1000,
            home: "/home/crius",
            shell: "/bin/sh",
        };
        let passwd = etc_passwd(&[user]);
        assert!(passwd.starts_with("root:x:0:0:root:/root:/bin/sh\n"));
        assert!(passwd.ends_with("crius:x:1000:1000:crius:/home/crius:/bin/sh\n"));
        let group = Group {
            name: "extra",
            gid: 50000,
            members: &["a", "b"],
        };
        assert!(etc_group(&[group]).ends_with("nobody:x:65534:\nextra:x:50000:a,b\n"));
    }
}
