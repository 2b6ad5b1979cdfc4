//! The container's pseudo-terminal as the shim holds it: the master side of
//! the pty whose slave is the stdin, stdout and stderr of a `tty` container.
//!
//! The shim keeps the master open for the container's life: closing it would
//! hang up the terminal (SIGHUP, then EOF on the container's stdin). The same
//! type holds the pty of a streamed exec.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::pty::Winsize;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

nix::ioctl_write_ptr_bad!(tiocswinsz, nix::libc::TIOCSWINSZ, Winsize);

/// The pty master, read and written on the event loop. Reading yields what
/// the container writes to its terminal and ends (reads 0) once no process
/// holds the slave: the kernel reports that as EIO, the normal end of a
/// terminal's output. Writing is typing into the terminal (the container's
/// stdin). Clones share the one master, which closes with the last of
/// them; each direction serves one task at a time (the event loop wakes only
/// the last reader and the last writer).
#[derive(Clone)]
pub struct Terminal {
    master: Arc<AsyncFd<OwnedFd>>,
}

impl Terminal {
    /// Takes the master the runtime received and makes it non-blocking.
    pub fn new(master: OwnedFd) -> io::Result<Terminal> {
        let flags = OFlag::from_bits_retain(fcntl(master.as_raw_fd(), FcntlArg::F_GETFL)?);
        fcntl(
            master.as_raw_fd(),
            FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK),
        )?;
        // SAFETY: the OwnedFd keeps its fd open, and the same, until the
        // AsyncFd that owns it is dropped.
        let master = unsafe {
            AsyncFd::register_with_interest(master, Interest::READABLE | Interest::WRITABLE)
        }
        .map_err(|err| err.into_parts().1)?;
        Ok(Terminal {
            master: Arc::new(master),
        })
    }

    /// Sets the window size to `width` columns and `height` rows (each
    /// clamped to 65535); the processes in the terminal's foreground group
    /// get SIGWINCH.
    pub fn resize(&self, width: u32, height: u32) -> io::Result<()> {
        let clamp = |n: u32| u16::try_from(n).unwrap_or(u16::MAX);
        let size = Winsize {
            ws_row: clamp(height),
            ws_col: clamp(width),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ only reads the winsize we pass; the master is open.
        unsafe { tiocswinsz(self.master.get_ref().as_raw_fd(), &size) }?;
        Ok(())
    }
}

impl AsyncRead for Terminal {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.master.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let read =
                guard.try_io(
                    |master| match nix::unistd::read(master.as_raw_fd(), unfilled) {
                        Err(Errno::EIO) => Ok(0),
                        read => read.map_err(io::Error::from),
                    },
                );
            match read {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(err)) => return Poll::Ready(Err(err)),
                // Not readable after all; the guard cleared the readiness.
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for Terminal {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.master.poll_write_ready(cx))?;
            let written = guard.try_io(|master| {
                nix::unistd::write(master.get_ref(), buf).map_err(io::Error::from)
            });
            match written {
                Ok(written) => return Poll::Ready(written),
                // The terminal's input queue is full; the guard cleared the readiness.
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::Write;

    use nix::pty::{openpty, Winsize};
    use nix::sys::termios::{tcgetattr, tcsetattr, OutputFlags, SetArg};
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn reads_the_output_then_ends_at_the_slaves_hangup() {
        let size = Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&size), None).unwrap();
        let mut terminal = Terminal::new(pty.master).unwrap();
        let mut slave = File::from(pty.slave);
        slave.write_all(b"hello-tty\n").unwrap();
        // Output written before the hangup is still read, then the end.
        slave.write_all(b"last words\n").unwrap();
        drop(slave);

        let mut out = Vec::new();
        terminal.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"hello-tty\r\nlast words\r\n");
    }

    nix::ioctl_read_bad!(tiocgwinsz, nix::libc::TIOCGWINSZ, Winsize);

    #[tokio::test]
    async fn writes_reach_the_slave_and_resize_sets_its_size() {
        let pty = openpty(None, None).unwrap();
        let mut terminal = Terminal::new(pty.master).unwrap();
        let mut slave = File::from(pty.slave);
        tokio::io::AsyncWriteExt::write_all(&mut terminal, b"typed\n")
            .await
            .unwrap();
        let mut line = [0u8; 6];
        std::io::Read::read_exact(&mut slave, &mut line).unwrap();
        assert_eq!(&line, b"typed\n");

        terminal.clone().resize(100, 30).unwrap();
        let mut size = Winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize into `size`; the slave is open.
        unsafe { tiocgwinsz(slave.as_raw_fd(), &mut size) }.unwrap();
        assert_eq!((size.ws_col, size.ws_row), (100, 30));
    }

    #[tokio::test]
    async fn a_read_waits_for_output() {
        let pty = openpty(None, None).unwrap();
        let mut terminal = Terminal::new(pty.master).unwrap();
        let slave = File::from(pty.slave);
        // Raw output: what the program writes is what the master reads.
        let mut termios = tcgetattr(&slave).unwrap();
        termios.output_flags.remove(OutputFlags::OPOST);
        tcsetattr(&slave, SetArg::TCSANOW, &termios).unwrap();

        let mut buf = [0u8; 16];
        let pending = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            terminal.read(&mut buf),
        )
        .await;
        assert!(pending.is_err(), "a read returned without output");
        (&slave).write_all(b"x\n").unwrap();
        let n = terminal.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"x\n");
    }
}
