//! The container's stdio as the shim holds it: pipes whose read ends the
//! shim keeps, or the master of its pty; the copy of its output into the CRI
//! log and to attachers; and its stdin, which attachers feed.

use std::io;
use std::os::fd::OwnedFd;
use std::pin::pin;
use std::sync::Arc;
use std::time::SystemTime;

use nix::fcntl::OFlag;
use nix::unistd::pipe2;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{broadcast, mpsc, oneshot, Notify};

use crate::cri_log::{CriLogFile, Stream};
use crate::terminal::Terminal;

/// The most bytes read at once from an output, and so the largest chunk
/// sent to an attacher or an exec's caller.
pub const CHUNK: usize = 32 * 1024;

/// How many chunks an attacher may fall behind before it loses the oldest
/// (at most 2 MiB held for it).
pub const ATTACH_BACKLOG: usize = 64;

/// A piece of the container's output, as attachers get it.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub stream: Stream,
    pub data: Arc<[u8]>,
}

/// Where the container's output goes besides the log: every attacher
/// subscribes. A send never waits: an attacher [`ATTACH_BACKLOG`] chunks
/// behind loses its oldest ones (it sees `Lagged`), so a slow or stuck
/// attacher holds up neither the container nor its log, which keeps it all.
pub fn attachers() -> broadcast::Sender<Chunk> {
    broadcast::Sender::new(ATTACH_BACKLOG)
}

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
/// log) and to the current `attachers` until every source reaches EOF, i.e.
/// every holder of the pipes' write ends or of the pty's slave has exited.
/// Reopens the log between two reads when asked; without a log that is done
/// at once.
pub async fn forward_to_log(
    output: Output,
    log: Option<CriLogFile>,
    attachers: broadcast::Sender<Chunk>,
    reopen_requests: mpsc::Receiver<ReopenRequest>,
) {
    match output {
        Output::Pipes { stdout, stderr } => {
            copy(stdout, stderr, log, attachers, reopen_requests).await
        }
        // The terminal carries stderr too; an empty stderr ends at once.
        Output::Terminal(terminal) => {
            copy(
                terminal,
                tokio::io::empty(),
                log,
                attachers,
                reopen_requests,
            )
            .await
        }
    }
    tracing::debug!("container output closed");
}

async fn copy(
    mut stdout: impl AsyncRead + Unpin,
    mut stderr: impl AsyncRead + Unpin,
    mut log: Option<CriLogFile>,
    attachers: broadcast::Sender<Chunk>,
    mut reopen_requests: mpsc::Receiver<ReopenRequest>,
) {
    let mut out_buf = vec![0; CHUNK];
    let mut err_buf = vec![0; CHUNK];
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
            Ok(data) => {
                // Without attachers nothing is copied for them.
                if attachers.receiver_count() > 0 {
                    let chunk = Chunk {
                        stream,
                        data: data.into(),
                    };
                    // Fails only when the last attacher left meanwhile.
                    let _ = attachers.send(chunk);
                }
                log.as_mut()
                    .map(|log| log.writer().write(stream, data, now))
            }
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

/// The container's stdin as attachers feed it: chunks written in the order
/// received, from any attacher, by one task that owns the pipe's write end
/// (or a handle on the pty). Clones feed the same stdin.
#[derive(Clone)]
pub struct ContainerStdin {
    chunks: mpsc::Sender<Vec<u8>>,
    close: Arc<Notify>,
}

/// How many stdin chunks may wait for a container that does not read them;
/// then a feeding attacher waits.
const STDIN_BACKLOG: usize = 16;

impl ContainerStdin {
    /// Starts the task that writes into `stdin` until [`ContainerStdin::close`]
    /// or a failed write (the container closed its end), and then drops it:
    /// for a pipe, that is EOF for the container.
    pub fn spawn(stdin: impl AsyncWrite + Unpin + Send + 'static) -> ContainerStdin {
        let (chunks, received) = mpsc::channel(STDIN_BACKLOG);
        let close = Arc::new(Notify::new());
        tokio::spawn(write_stdin(stdin, received, Arc::clone(&close)));
        ContainerStdin { chunks, close }
    }

    /// Queues `data` for the container's stdin; waits while the backlog is
    /// full. After a close it is dropped.
    pub async fn write(&self, data: Vec<u8>) {
        // Fails once the writer ended: the stdin is closed, nothing to feed.
        let _ = self.chunks.send(data).await;
    }

    /// Closes the container's stdin once what was queued is written (or at
    /// once, if the container does not read it). Idempotent.
    pub fn close(&self) {
        // A stored permit if the writer is busy: it closes at its next turn.
        self.close.notify_one();
    }
}

async fn write_stdin(
    mut stdin: impl AsyncWrite + Unpin,
    mut chunks: mpsc::Receiver<Vec<u8>>,
    close: Arc<Notify>,
) {
    let mut closed = pin!(close.notified());
    loop {
        let chunk = tokio::select! {
            // What was queued before the close is written first, unless the
            // container stops reading (the write below waits on the close).
            biased;
            chunk = chunks.recv() => chunk,
            () = &mut closed => break,
        };
        // Every sender gone: the container itself is gone.
        let Some(chunk) = chunk else { break };
        tokio::select! {
            // A write that can go through goes first; a close cuts short
            // only one the container does not take.
            biased;
            written = stdin.write_all(&chunk) => if let Err(err) = written {
                tracing::debug!(%err, "writing the container's stdin failed; closing it");
                break;
            },
            () = &mut closed => break,
        }
    }
    tracing::debug!("container stdin closed");
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::Write;
    use std::time::Duration;

    use tokio::sync::broadcast::error::RecvError;

    use super::*;

    const SOON: Duration = Duration::from_secs(5);

    async fn next(chunks: &mut broadcast::Receiver<Chunk>) -> Result<(Stream, Vec<u8>), RecvError> {
        let chunk = tokio::time::timeout(SOON, chunks.recv()).await.unwrap()?;
        Ok((chunk.stream, chunk.data.to_vec()))
    }

    #[tokio::test]
    async fn the_output_reaches_every_attacher_tagged_with_its_stream() {
        let (stdout, stdout_writer) = pipe().unwrap();
        let (stderr, stderr_writer) = pipe().unwrap();
        let output = Output::Pipes {
            stdout: receiver(stdout).unwrap(),
            stderr: receiver(stderr).unwrap(),
        };
        let fan_out = attachers();
        let mut first = fan_out.subscribe();
        let mut second = fan_out.subscribe();
        let (_reopen, reopen_requests) = mpsc::channel(1);
        let copy = tokio::spawn(forward_to_log(output, None, fan_out, reopen_requests));

        File::from(stdout_writer).write_all(b"out").unwrap();
        for chunks in [&mut first, &mut second] {
            assert_eq!(next(chunks).await, Ok((Stream::Stdout, b"out".to_vec())));
        }
        File::from(stderr_writer).write_all(b"err").unwrap();
        for chunks in [&mut first, &mut second] {
            assert_eq!(next(chunks).await, Ok((Stream::Stderr, b"err".to_vec())));
        }
        // Both pipes closed: the copy ends, and with it the fan-out.
        tokio::time::timeout(SOON, copy).await.unwrap().unwrap();
        assert_eq!(next(&mut first).await, Err(RecvError::Closed));
    }

    #[tokio::test]
    async fn an_attacher_that_reads_nothing_holds_up_neither_the_log_nor_the_others() {
        let (stdout, stdout_writer) = pipe().unwrap();
        let output = Output::Pipes {
            stdout: receiver(stdout).unwrap(),
            stderr: receiver(pipe().unwrap().0).unwrap(),
        };
        let fan_out = attachers();
        let mut stuck = fan_out.subscribe();
        let mut reading = fan_out.subscribe();
        let (_reopen, reopen_requests) = mpsc::channel(1);
        tokio::spawn(forward_to_log(output, None, fan_out, reopen_requests));

        let mut writer = File::from(stdout_writer);
        let chunks = 4 * ATTACH_BACKLOG;
        for n in 0..chunks {
            writer.write_all(format!("{n:04}").as_bytes()).unwrap();
            // One read a chunk: wait until the reading attacher has it.
            let (_, data) = next(&mut reading).await.unwrap();
            assert_eq!(data, format!("{n:04}").into_bytes());
        }
        // The stuck one lost its oldest chunks and then gets the newest.
        let lost = chunks - ATTACH_BACKLOG;
        assert_eq!(next(&mut stuck).await, Err(RecvError::Lagged(lost as u64)));
        let (_, data) = next(&mut stuck).await.unwrap();
        assert_eq!(data, format!("{lost:04}").into_bytes());
    }

    #[tokio::test]
    async fn stdin_is_written_in_order_and_closed_after_what_was_queued() {
        let (mut container, shim) = tokio::io::duplex(64);
        let stdin = ContainerStdin::spawn(shim);
        let other = stdin.clone();
        stdin.write(b"one ".to_vec()).await;
        other.write(b"two".to_vec()).await;
        other.close();
        stdin.close();
        let mut read = Vec::new();
        tokio::time::timeout(SOON, container.read_to_end(&mut read))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read, b"one two");
        // Closed: later writes are dropped, not an error.
        stdin.write(b"late".to_vec()).await;
    }
}
