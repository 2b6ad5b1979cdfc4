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

/// /etc/passwd of every image; `www-data` because a critest image runs as it.
pub const BASE_PASSWD: &str = "root:x:0:0:root:/root:/bin/sh
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
";

/// /etc/group of every image.
pub const BASE_GROUP: &str = "root:x:0:
www-data:x:33:
nobody:x:65534:
";

fn with_lines(base: &str, lines: &[&str]) -> Vec<u8> {
    let mut file = base.to_string();
    for line in lines {
        file.push_str(line);
        file.push('\n');
    }
    file.into_bytes()
}

/// Writes /etc/passwd and /etc/group: the base accounts, then these lines.
pub fn add_accounts(layer: &mut LayerBuilder, passwd: &[&str], group: &[&str]) {
    layer
        .file("/etc/passwd", 0o644, with_lines(BASE_PASSWD, passwd))
        .file("/etc/group", 0o644, with_lines(BASE_GROUP, group));
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
        let mut layer = LayerBuilder::new();
        add_accounts(
            &mut layer,
            &["crius:x:1000:1000::/home/crius:/bin/sh"],
            &["crius:x:1000:"],
        );
        let entries = crate::layer::tar_entries(&layer.tar().unwrap());
        let file = |path: &str| {
            let (.., content) = entries.iter().find(|e| e.0 == path).unwrap();
            String::from_utf8(content.clone()).unwrap()
        };
        assert_eq!(
            file("etc/passwd"),
            format!("{BASE_PASSWD}crius:x:1000:1000::/home/crius:/bin/sh\n")
        );
        assert_eq!(file("etc/group"), format!("{BASE_GROUP}crius:x:1000:\n"));
    }
}
