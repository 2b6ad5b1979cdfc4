//! Becoming a daemon that outlives criusd, and telling criusd when the shim
//! is ready (the protocol is `crius_proto::ready`).

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{FromRawFd, RawFd};

use anyhow::Context;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::prctl::set_child_subreaper;
use nix::unistd::{chdir, dup2, fork, setsid, ForkResult};
use tokio::signal::unix::{signal, SignalKind};

/// The write end of criusd's readiness pipe; used once.
pub struct ReadyPipe(Option<File>);

impl ReadyPipe {
    /// No one waits for readiness (the shim was started by hand).
    pub fn none() -> ReadyPipe {
        ReadyPipe(None)
    }

    /// Takes over inherited fd `fd`, close-on-exec so no container inherits it.
    pub fn adopt(fd: RawFd) -> anyhow::Result<ReadyPipe> {
        let flags = fcntl(fd, FcntlArg::F_GETFD)
            .with_context(|| format!("--ready-fd {fd} is not an open fd"))?;
        let flags = FdFlag::from_bits_retain(flags) | FdFlag::FD_CLOEXEC;
        fcntl(fd, FcntlArg::F_SETFD(flags)).context("make the ready fd close-on-exec")?;
        // SAFETY: the fd is open (F_GETFD succeeded) and criusd handed it to
        // us alone; nothing else in this process refers to it.
        Ok(ReadyPipe(Some(unsafe { File::from_raw_fd(fd) })))
    }

    /// Reports that the socket serves, and closes the pipe.
    pub fn ready(&mut self) -> io::Result<()> {
        match self.0.take() {
            Some(mut pipe) => pipe.write_all(&[crius_proto::ready::READY]),
            None => Ok(()),
        }
    }

    /// Reports a start-up failure, if readiness was not reported yet.
    pub fn fail(&mut self, message: &str) {
        if let Some(mut pipe) = self.0.take() {
            // A message must not look like the ready byte.
            let message = message.trim_start_matches('\0');
            let message = if message.is_empty() {
                "start-up failed"
            } else {
                message
            };
            // criusd may be gone; there is no one else to tell.
            let _ = pipe.write_all(message.as_bytes());
        }
    }
}

/// Leaves criusd: forks, the parent (criusd's child) exits at once so
/// criusd's waitpid returns, and the child goes on in a new session, is
/// reparented, and becomes child subreaper with cwd `/` and stdio on
/// /dev/null. Call while the process has one thread.
pub fn detach() -> anyhow::Result<()> {
    // SAFETY: called before any thread exists, so the child may do anything.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Parent { .. } => {
            // SAFETY: _exit only ends the process; nothing of the child's is
            // flushed or run twice.
            unsafe { nix::libc::_exit(0) }
        }
        ForkResult::Child => {}
    }
    setsid().context("setsid")?;
    set_child_subreaper(true).context("become child subreaper")?;
    chdir("/").context("chdir /")?;
    let dev_null = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("open /dev/null")?;
    for stdio in 0..=2 {
        dup2(std::os::fd::AsRawFd::as_raw_fd(&dev_null), stdio)
            .context("point stdio at /dev/null")?;
    }
    Ok(())
}

/// Keeps SIGHUP (criusd's session ending) and SIGPIPE (a reader gone) from
/// killing the shim. They are caught, not ignored: an ignored signal would
/// stay ignored in every container process the shim starts, a caught one is
/// reset to default by exec.
pub fn survive_hangup_and_broken_pipes() -> io::Result<()> {
    for kind in [SignalKind::hangup(), SignalKind::pipe()] {
        let mut signals = signal(kind)?;
        tokio::spawn(async move {
            while signals.recv().await.is_some() {
                tracing::debug!(signal = kind.as_raw_value(), "signal ignored");
            }
        });
    }
    Ok(())
}
