//! The container's output as the shim holds it: pipes whose read ends the
//! shim keeps, or the master of its pty, and the copy into the CRI log.

use std::io;
use std::os::fd::OwnedFd;
use std::time::SystemTime;

use nix::fcntl::OFlag;
use nix::unistd::pipe2;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};

use crate::cri_log::{CriLogFile, Stream};
use crate::terminal::Terminal;

/// A request to reopen the CRI log, answered once the new file takes the
/// output (or with why it could not be opened).
pub type ReopenRequest = oneshot::Sender<io::Result<()>>;

/// A pipe as (read end, write end), both close-on-exec: the runtime dup2()s
/// the container's end onto 0, 1 or 2, which clears the flag there.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(pipe2(OFlag::O_CLOEXEC)?)
}

/// The read end of a pipe, for the event loop.
pub fn receiver(read_end: OwnedFd) -> io::Result<pipe::Receiver> {
    pipe::Receiver::from_owned_fd(read_end)
}

/// What the container writes to, as the shim reads it.
pub enum Output {
    /// stdout and stderr, each on its own pipe.
    Pipes {
        stdout: pipe::Receiver,
        stderr: pipe::Receiver,
    },
    /// The pty that is both: logged as stdout.
    Terminal(Terminal),
}

/// Copies the container's output into the CRI log (or drops it without a
/// log) until every source reaches EOF, i.e. every holder of the pipes' write
/// ends or of the pty's slave has exited. Reopens the log between two reads
/// when asked; without a log that is done at once.
pub async fn forward_to_log(
    output: Output,
    log: Option<CriLogFile>,
    reopen_requests: mpsc::Receiver<ReopenRequest>,
) {
    match output {
        Output::Pipes { stdout, stderr } => copy(stdout, stderr, log, reopen_requests).await,
        // The terminal carries stderr too; an empty stderr ends at once.
        Output::Terminal(terminal) => {
            copy(terminal, tokio::io::empty(), log, reopen_requests).await
        }
    }
    tracing::debug!("container output closed");
}

async fn copy(
    mut stdout: impl AsyncRead + Unpin,
    mut stderr: impl AsyncRead + Unpin,
    mut log: Option<CriLogFile>,
    mut reopen_requests: mpsc::Receiver<ReopenRequest>,
) {
    let mut out_buf = vec![0; 8192];
    let mut err_buf = vec![0; 8192];
    let (mut out_open, mut err_open) = (true, true);
    let mut log_failing = false;
    while out_open || err_open {
        let (stream, read) = tokio::select! {
            read = stdout.read(&mut out_buf), if out_open => (Stream::Stdout, read.map(|n| &out_buf[..n])),
            read = stderr.read(&mut err_buf), if err_open => (Stream::Stderr, read.map(|n| &err_buf[..n])),
            Some(reply) = reopen_requests.recv() => {
                let reopened = log.as_mut().map_or(Ok(()), CriLogFile::reopen);
                // The requester may have given up; the reopen stands.
                let _ = reply.send(reopened);
                continue;
            }
        };
        let now = SystemTime::now();
        let written = match read {
            Ok([]) | Err(_) => {
                match stream {
                    Stream::Stdout => out_open = false,
                    Stream::Stderr => err_open = false,
                }
                log.as_mut().map(|log| log.writer().finish(stream, now))
            }
            Ok(data) => log
                .as_mut()
                .map(|log| log.writer().write(stream, data, now)),
        };
        // A full disk must not stop the draining, or the container blocks on
        // its output; say so once per episode.
        match written {
            Some(Err(err)) if !log_failing => {
                tracing::warn!(%err, "writing the container log failed");
                log_failing = true;
            }
            Some(Ok(())) => log_failing = false,
            _ => {}
        }
    }
}
