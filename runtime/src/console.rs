//! The console socket through which a container process hands back its pseudo-terminal.
//!
//! With `process.terminal`, libcontainer's init (or exec'd process) opens a pty inside the
//! container, makes the slave its stdio and sends the master over a unix socket we listen on
//! (the OCI console-socket protocol: one message, the master as SCM_RIGHTS).

use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use nix::pty::Winsize;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
use oci_spec::runtime::Box as ConsoleSize;
use tempfile::NamedTempFile;

/// A listening socket at a unique path in a directory, removed on drop.
pub(crate) struct ConsoleSocket {
    listener: NamedTempFile<UnixListener>,
}

impl ConsoleSocket {
    /// Binds in `dir`, which must be short enough for a socket path (107 bytes).
    pub fn bind(dir: &Path) -> io::Result<ConsoleSocket> {
        let listener = tempfile::Builder::new()
            .prefix("console-")
            .suffix(".sock")
            .make_in(dir, |path| UnixListener::bind(path))?;
        Ok(ConsoleSocket { listener })
    }

    pub fn path(&self) -> &Path {
        self.listener.path()
    }

    /// The pty master the container process sent. Call only after libcontainer returned
    /// success: it connected before forking and the process sent the master before it
    /// reported ready, so neither accept nor the read blocks then.
    pub fn receive_master(&self) -> io::Result<OwnedFd> {
        let (stream, _) = self.listener.as_file().accept()?;
        let mut name = [0u8; 64];
        let mut iov = [IoSliceMut::new(&mut name)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let message = recvmsg::<UnixAddr>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        for cmsg in message.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                if let Some(&fd) = fds.first() {
                    // SAFETY: the kernel just installed this fd in our table; we own it.
                    return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "console socket message carried no file descriptor",
        ))
    }
}

nix::ioctl_write_ptr_bad!(tiocswinsz, nix::libc::TIOCSWINSZ, Winsize);

/// Sets the window size (rows × columns) of the pty whose master is `master`, as the OCI
/// `process.consoleSize` asks (runc applies it in its init; libcontainer 0.7 ignores the
/// field). The processes in the pty's foreground group get SIGWINCH.
pub(crate) fn set_window_size(master: impl AsFd, size: ConsoleSize) -> io::Result<()> {
    let clamp = |n: u64| u16::try_from(n).unwrap_or(u16::MAX);
    let size = Winsize {
        ws_row: clamp(size.height()),
        ws_col: clamp(size.width()),
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ only reads the winsize we pass; the fd is borrowed and open.
    unsafe { tiocswinsz(master.as_fd().as_raw_fd(), &size) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use nix::fcntl::OFlag;
    use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
    use oci_spec::runtime::BoxBuilder;

    use super::*;

    nix::ioctl_read_bad!(tiocgwinsz, nix::libc::TIOCGWINSZ, Winsize);

    #[test]
    fn the_window_size_is_what_the_slave_reads() {
        let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let slave = std::fs::File::options()
            .read(true)
            .write(true)
            .open(ptsname_r(&master).unwrap())
            .unwrap();
        let size = BoxBuilder::default()
            .height(24u64)
            .width(80u64)
            .build()
            .unwrap();
        set_window_size(&master, size).unwrap();

        let mut got = Winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize into `got`.
        unsafe { tiocgwinsz(slave.as_raw_fd(), &mut got) }.unwrap();
        assert_eq!((got.ws_row, got.ws_col), (24, 80));
    }
}
