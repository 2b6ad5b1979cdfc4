//! The console socket through which a container process hands back its pseudo-terminal.
//!
//! With `process.terminal`, libcontainer's init (or exec'd process) opens a pty inside the
//! container, makes the slave its stdio and sends the master over a unix socket we listen on
//! (the OCI console-socket protocol: one message, the master as SCM_RIGHTS).

use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
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
