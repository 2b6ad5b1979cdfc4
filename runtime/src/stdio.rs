//! The stdio a container process gets as its fds 0, 1 and 2.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// Fds to become the container process's stdin, stdout and stderr; `None` means /dev/null.
/// The runtime takes ownership and closes its copies once the process has them.
#[derive(Debug, Default)]
pub struct Stdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// The three fds handed to libcontainer, each numbered 3 or above.
pub(crate) struct ContainerStdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

impl Stdio {
    /// All three streams on /dev/null.
    pub fn null() -> Stdio {
        Stdio::default()
    }

    /// Fills the gaps with /dev/null and moves every fd above 2.
    ///
    /// libcontainer's init does `dup2(fd, n); close(fd)` for each stream in turn: a caller fd
    /// that already is 0, 1 or 2 would be closed or overwritten by another stream's dup2.
    pub(crate) fn into_container_stdio(self) -> io::Result<ContainerStdio> {
        let mut dev_null = None;
        let mut resolve = |fd: Option<OwnedFd>| -> io::Result<OwnedFd> {
            let fd = match fd {
                Some(fd) => fd,
                None => match &dev_null {
                    Some(null) => OwnedFd::try_clone(null)?,
                    None => {
                        let null: OwnedFd = File::options()
                            .read(true)
                            .write(true)
                            .open("/dev/null")?
                            .into();
                        dev_null.insert(null).try_clone()?
                    }
                },
            };
            above_stdio(fd)
        };
        Ok(ContainerStdio {
            stdin: resolve(self.stdin)?,
            stdout: resolve(self.stdout)?,
            stderr: resolve(self.stderr)?,
        })
    }
}

fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // std duplicates with F_DUPFD_CLOEXEC and a lowest number of 3.
    fd.try_clone()
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use nix::libc::S_IFMT;
    use nix::sys::stat::fstat;

    use super::*;

    fn is_dev_null(fd: &OwnedFd) -> bool {
        let null = nix::sys::stat::stat("/dev/null").unwrap();
        let stat = fstat(fd.as_raw_fd()).unwrap();
        stat.st_rdev == null.st_rdev && stat.st_mode & S_IFMT == null.st_mode & S_IFMT
    }

    #[test]
    fn missing_streams_become_dev_null() {
        let (reader, writer) = nix::unistd::pipe().unwrap();
        let stdio = Stdio {
            stdin: None,
            stdout: Some(writer),
            stderr: None,
        }
        .into_container_stdio()
        .unwrap();
        assert!(is_dev_null(&stdio.stdin));
        assert!(is_dev_null(&stdio.stderr));
        assert!(!is_dev_null(&stdio.stdout));
        for fd in [&stdio.stdin, &stdio.stdout, &stdio.stderr] {
            assert!(fd.as_raw_fd() > 2);
        }

        let mut out = File::from(stdio.stdout);
        out.write_all(b"x").unwrap();
        drop(out);
        let mut got = String::new();
        File::from(reader).read_to_string(&mut got).unwrap();
        assert_eq!(got, "x");
    }
}
