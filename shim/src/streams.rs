//! The sessions of the streamed Exec and Attach calls: the caller's input
//! (stdin, its EOF, terminal resizes) into the process, the process's output
//! to the caller, and the final `exit`. A session runs in its own task; the
//! handler starts the process (or attaches) first, so that a refusal fails
//! the call itself.

use crius_proto::shim::v1::{io_input, io_output, Exit, IoInput, IoOutput, Resize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use crate::container::InitExit;
use crate::container_io::{Chunk, ContainerStdin, CHUNK};
use crate::cri_log::Stream as Source;
use crate::exec::{KillOnDrop, DRAIN_GRACE};
use crate::reaper::Exit as Reaped;
use crate::terminal::Terminal;

/// Where a session's output messages go: the call's response stream.
pub type Outputs = mpsc::Sender<Result<IoOutput, Status>>;

/// How many output messages may wait for a slow caller; then an exec's
/// output waits (and so its process, on a full pipe), as a terminal would.
pub const OUTPUT_BACKLOG: usize = 8;

/// The caller went away: its output can no longer be sent.
#[derive(Debug, PartialEq, Eq)]
struct Gone;

/// How an attach session ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// Init exited; `exit` was sent.
    Exited,
    /// The caller went away (its input ended or failed, or its output closed).
    Gone,
    /// The attacher's stdin ended on a container whose stdin stays open.
    Detached,
}

async fn send(outputs: &Outputs, kind: io_output::Kind) -> Result<(), Gone> {
    let output = IoOutput { kind: Some(kind) };
    outputs.send(Ok(output)).await.map_err(|_| Gone)
}

fn output_of(stream: Source, data: Vec<u8>) -> io_output::Kind {
    match stream {
        Source::Stdout => io_output::Kind::Stdout(data),
        Source::Stderr => io_output::Kind::Stderr(data),
    }
}

fn resize(terminal: Option<&Terminal>, size: Resize) {
    // Without a terminal there is nothing to size (the proto says: ignored).
    if let Some(terminal) = terminal {
        if let Err(err) = terminal.resize(size.width, size.height) {
            tracing::warn!(%err, size.width, size.height, "resizing the terminal failed");
        }
    }
}

/// One output of an exec's process: read to EOF, each chunk sent as
/// `stream`, or read and dropped without one (a terminal nobody asked to
/// see must still be drained, or its process blocks).
pub struct OutputSource {
    pub reader: Box<dyn AsyncRead + Send + Unpin>,
    pub stream: Option<Source>,
}

/// A started exec's process as its session holds it.
pub struct StartedExec {
    /// Kills the process's group unless disarmed once it exited.
    pub group: KillOnDrop,
    pub exited: oneshot::Receiver<Reaped>,
    pub stdout: Option<OutputSource>,
    pub stderr: Option<OutputSource>,
    /// Its stdin pipe's write end, or its terminal; None when not asked.
    pub stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    /// Its pty, for resizes.
    pub terminal: Option<Terminal>,
}

/// Runs a streamed exec's session: feeds `inputs` into the process, sends
/// its output, and once it exited and its output drained (at most
/// [`DRAIN_GRACE`]) sends `exit`. If the caller goes away first, the
/// process's group is killed (the reaper reaps it).
pub async fn exec(
    started: StartedExec,
    inputs: impl Stream<Item = Result<IoInput, Status>> + Unpin,
    outputs: Outputs,
) {
    let StartedExec {
        mut group,
        exited,
        stdout,
        stderr,
        stdin,
        terminal,
    } = started;
    let mut drain = std::pin::pin!(async {
        let (stdout, stderr) = tokio::join!(pump(stdout, &outputs), pump(stderr, &outputs));
        stdout.and(stderr)
    });
    let mut feed = std::pin::pin!(feed_exec(inputs, stdin, terminal.as_ref()));
    let mut exited = std::pin::pin!(exited);
    let mut drained = false;
    let exit = loop {
        tokio::select! {
            exit = &mut exited => break exit,
            pumped = &mut drain, if !drained => match pumped {
                Ok(()) => drained = true,
                Err(Gone) => return,
            },
            () = &mut feed => {
                tracing::debug!("the exec's caller went away; killing it");
                return;
            }
            () = outputs.closed() => {
                tracing::debug!("the exec's caller went away; killing it");
                return;
            }
        }
    };
    group.disarm();
    if !drained {
        match tokio::time::timeout(DRAIN_GRACE, &mut drain).await {
            Ok(Ok(())) => {}
            Ok(Err(Gone)) => return,
            Err(_) => tracing::debug!("exec output still open after the process exited"),
        }
    }
    let Ok(exit) = exit else {
        tracing::error!("the reaper dropped a streamed exec's process");
        return;
    };
    tracing::debug!(exit_code = exit.code, "streamed exec finished");
    let exit = io_output::Kind::Exit(Exit {
        exit_code: exit.code,
    });
    // The caller may have gone just now; the process is gone either way.
    let _ = send(&outputs, exit).await;
}

/// Sends `output` in chunks until EOF (or drops them, without a stream).
async fn pump(output: Option<OutputSource>, outputs: &Outputs) -> Result<(), Gone> {
    let Some(OutputSource { mut reader, stream }) = output else {
        return Ok(());
    };
    let mut buf = vec![0; CHUNK];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(err) => {
                tracing::warn!(%err, "reading exec output failed");
                return Ok(());
            }
        };
        if let Some(stream) = stream {
            send(outputs, output_of(stream, buf[..n].to_vec())).await?;
        }
    }
}

/// Feeds the caller's input into the exec's process until the input ends
/// (the caller went away). CloseStdin drops the stdin: EOF for a pipe; a
/// terminal stays open (the pty is also the output), only fed no more.
async fn feed_exec(
    mut inputs: impl Stream<Item = Result<IoInput, Status>> + Unpin,
    mut stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    terminal: Option<&Terminal>,
) {
    while let Some(Ok(input)) = inputs.next().await {
        match input.kind {
            Some(io_input::Kind::Stdin(data)) => {
                let Some(writer) = stdin.as_mut() else {
                    continue;
                };
                if let Err(err) = writer.write_all(&data).await {
                    tracing::debug!(%err, "the exec's process closed its stdin");
                    stdin = None;
                }
            }
            Some(io_input::Kind::CloseStdin(_)) => stdin = None,
            Some(io_input::Kind::Resize(size)) => resize(terminal, size),
            Some(io_input::Kind::Exec(_) | io_input::Kind::Attach(_)) | None => {
                tracing::warn!("ignored an input message that is no stdin, EOF or resize");
            }
        }
    }
}

/// What an attacher is attached to.
pub struct Attachment {
    /// The container's output from the moment of attaching.
    pub chunks: broadcast::Receiver<Chunk>,
    pub stdout: bool,
    pub stderr: bool,
    /// The container's stdin, when the attacher asked for it and the
    /// container has one.
    pub stdin: Option<ContainerStdin>,
    /// Close the container's stdin when this attacher's ends (CRI
    /// `stdin_once`, never on a terminal); otherwise the attach ends then.
    pub stdin_once: bool,
    /// Init's pty, for resizes.
    pub terminal: Option<Terminal>,
    /// Init's exit, once recorded.
    pub exit: watch::Receiver<Option<InitExit>>,
}

/// Runs an attach session: the container's output (what the attacher asked
/// for) to the caller, its stdin into the container, until init exited
/// (then `exit`), the caller went away, or (see [`Attachment::stdin_once`])
/// its stdin ended.
pub async fn attach(
    attachment: Attachment,
    inputs: impl Stream<Item = Result<IoInput, Status>> + Unpin,
    outputs: Outputs,
) {
    let Attachment {
        chunks,
        stdout,
        stderr,
        stdin,
        stdin_once,
        terminal,
        exit,
    } = attachment;
    let ended = tokio::select! {
        ended = forward(chunks, (stdout, stderr), exit, &outputs) => ended,
        ended = feed_attach(inputs, stdin.as_ref(), stdin_once, terminal.as_ref()) => ended,
        () = outputs.closed() => Ended::Gone,
    };
    if ended == Ended::Gone && stdin_once {
        if let Some(stdin) = &stdin {
            tracing::debug!("the stdin_once attacher went away; closing the container's stdin");
            stdin.close();
        }
    }
    tracing::debug!(?ended, "attach ended");
}

/// Sends the container's output (of the `wanted` (stdout, stderr)) until
/// init's exit, then what was read before it, then `exit`.
async fn forward(
    mut chunks: broadcast::Receiver<Chunk>,
    wanted: (bool, bool),
    mut exit: watch::Receiver<Option<InitExit>>,
    outputs: &Outputs,
) -> Ended {
    let wants = |chunk: &Chunk| match chunk.stream {
        Source::Stdout => wanted.0,
        Source::Stderr => wanted.1,
    };
    let mut open = true;
    loop {
        tokio::select! {
            biased;
            chunk = chunks.recv(), if open => match chunk {
                Ok(chunk) if wants(&chunk) => {
                    if send(outputs, output_of(chunk.stream, chunk.data.to_vec())).await.is_err() {
                        return Ended::Gone;
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(lost)) => {
                    tracing::warn!(lost, "an attacher fell behind; dropped its oldest output");
                }
                Err(RecvError::Closed) => open = false,
            },
            code = init_exit(&mut exit) => {
                // The log task published all it read before the exit was
                // recorded: the last words are queued here.
                loop {
                    match chunks.try_recv() {
                        Ok(chunk) if wants(&chunk) => {
                            let output = output_of(chunk.stream, chunk.data.to_vec());
                            if send(outputs, output).await.is_err() {
                                return Ended::Gone;
                            }
                        }
                        Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                        Err(_) => break,
                    }
                }
                let exit = io_output::Kind::Exit(Exit { exit_code: code });
                return match send(outputs, exit).await {
                    Ok(()) => Ended::Exited,
                    Err(Gone) => Ended::Gone,
                };
            }
        }
    }
}

/// Init's exit code, once recorded.
async fn init_exit(exit: &mut watch::Receiver<Option<InitExit>>) -> i32 {
    let code = (exit.wait_for(Option::is_some).await)
        .ok()
        .and_then(|exit| (*exit).map(|exit| exit.code));
    match code {
        Some(code) => code,
        // The container (and its exit watch) is gone: no exit to wait for.
        None => std::future::pending().await,
    }
}

/// Feeds the attacher's input into the container until the input ends (the
/// caller went away) or, without `stdin_once`, its stdin ends.
async fn feed_attach(
    mut inputs: impl Stream<Item = Result<IoInput, Status>> + Unpin,
    stdin: Option<&ContainerStdin>,
    stdin_once: bool,
    terminal: Option<&Terminal>,
) -> Ended {
    let mut feeding = stdin;
    while let Some(Ok(input)) = inputs.next().await {
        match input.kind {
            Some(io_input::Kind::Stdin(data)) => {
                if let Some(stdin) = feeding {
                    stdin.write(data).await;
                }
            }
            Some(io_input::Kind::CloseStdin(_)) => {
                let Some(stdin) = feeding.take() else {
                    continue;
                };
                if !stdin_once {
                    return Ended::Detached;
                }
                tracing::debug!("the stdin_once attacher's stdin ended; closing the container's");
                stdin.close();
            }
            Some(io_input::Kind::Resize(size)) => resize(terminal, size),
            Some(io_input::Kind::Exec(_) | io_input::Kind::Attach(_)) | None => {
                tracing::warn!("ignored an input message that is no stdin, EOF or resize");
            }
        }
    }
    Ended::Gone
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use tokio::io::AsyncReadExt;
    use tokio_stream::wrappers::ReceiverStream;

    use super::*;
    use crate::container_io::attachers;

    /// How long a test waits for what must happen at once.
    const SOON: Duration = Duration::from_secs(5);

    /// A session's input, as the caller sends it.
    type Input = mpsc::Sender<Result<IoInput, Status>>;
    /// A session's output, as the caller receives it.
    type Output = mpsc::Receiver<Result<IoOutput, Status>>;

    fn chunk(stream: Source, data: &[u8]) -> Chunk {
        Chunk {
            stream,
            data: Arc::from(data),
        }
    }

    fn stdin_input(data: &[u8]) -> Result<IoInput, Status> {
        Ok(IoInput {
            kind: Some(io_input::Kind::Stdin(data.to_vec())),
        })
    }

    fn close_stdin() -> Result<IoInput, Status> {
        Ok(IoInput {
            kind: Some(io_input::Kind::CloseStdin(Default::default())),
        })
    }

    /// An attach session on `attachment`: its input sender and output receiver.
    fn start_attach(attachment: Attachment) -> (Input, Output, tokio::task::JoinHandle<()>) {
        let (input, inputs) = mpsc::channel(4);
        let (outputs, output) = mpsc::channel(OUTPUT_BACKLOG);
        let session = tokio::spawn(attach(attachment, ReceiverStream::new(inputs), outputs));
        (input, output, session)
    }

    fn attachment(
        chunks: broadcast::Receiver<Chunk>,
        exit: &watch::Sender<Option<InitExit>>,
    ) -> Attachment {
        Attachment {
            chunks,
            stdout: true,
            stderr: true,
            stdin: None,
            stdin_once: false,
            terminal: None,
            exit: exit.subscribe(),
        }
    }

    async fn next(output: &mut Output) -> io_output::Kind {
        let message = tokio::time::timeout(SOON, output.recv()).await.unwrap();
        message.unwrap().unwrap().kind.unwrap()
    }

    fn exited(code: i32) -> Option<InitExit> {
        Some(InitExit {
            code,
            at: SystemTime::now(),
            oom_killed: false,
        })
    }

    #[tokio::test]
    async fn two_attachers_get_the_same_output_then_the_exit() {
        let container = attachers();
        let exit = watch::Sender::new(None);
        let (_in_a, mut out_a, _) = start_attach(attachment(container.subscribe(), &exit));
        let mut only_stderr = attachment(container.subscribe(), &exit);
        only_stderr.stdout = false;
        let (_in_b, mut out_b, _) = start_attach(only_stderr);

        container.send(chunk(Source::Stdout, b"out")).unwrap();
        container.send(chunk(Source::Stderr, b"err")).unwrap();
        exit.send_replace(exited(3));

        assert_eq!(
            next(&mut out_a).await,
            io_output::Kind::Stdout(b"out".to_vec())
        );
        assert_eq!(
            next(&mut out_a).await,
            io_output::Kind::Stderr(b"err".to_vec())
        );
        assert_eq!(
            next(&mut out_a).await,
            io_output::Kind::Exit(Exit { exit_code: 3 })
        );
        assert_eq!(
            next(&mut out_b).await,
            io_output::Kind::Stderr(b"err".to_vec())
        );
        assert_eq!(
            next(&mut out_b).await,
            io_output::Kind::Exit(Exit { exit_code: 3 })
        );
        // The calls end after `exit`.
        assert!(out_a.recv().await.is_none());
        assert!(out_b.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_stuck_attacher_holds_up_neither_the_container_nor_the_others() {
        let container = attachers();
        let exit = watch::Sender::new(None);
        // Never read: its session blocks on a full output channel.
        let (_in_stuck, _out_stuck, _) = start_attach(attachment(container.subscribe(), &exit));
        let (_in, mut out, _) = start_attach(attachment(container.subscribe(), &exit));

        let chunks = 10 * crate::container_io::ATTACH_BACKLOG;
        for n in 0..chunks {
            // Never waits, whoever is behind.
            container
                .send(chunk(Source::Stdout, n.to_string().as_bytes()))
                .unwrap();
            let message = next(&mut out).await;
            assert_eq!(message, io_output::Kind::Stdout(n.to_string().into_bytes()));
        }
    }

    #[tokio::test]
    async fn a_stdin_once_attachers_eof_closes_the_containers_stdin() {
        let (mut reader, writer) = tokio::io::duplex(1024);
        let stdin = ContainerStdin::spawn(writer);
        let container = attachers();
        let exit = watch::Sender::new(None);
        let mut first = attachment(container.subscribe(), &exit);
        first.stdin = Some(stdin.clone());
        first.stdin_once = true;
        let (input, mut out, _) = start_attach(first);

        input.send(stdin_input(b"hi\n")).await.unwrap();
        input.send(close_stdin()).await.unwrap();
        let mut received = Vec::new();
        tokio::time::timeout(SOON, reader.read_to_end(&mut received))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(received, b"hi\n");
        // The attacher stays to see the container's answer and exit.
        container.send(chunk(Source::Stdout, b"bye")).unwrap();
        assert_eq!(
            next(&mut out).await,
            io_output::Kind::Stdout(b"bye".to_vec())
        );
    }

    #[tokio::test]
    async fn a_stdin_once_attacher_going_away_closes_the_containers_stdin() {
        let (mut reader, writer) = tokio::io::duplex(1024);
        let stdin = ContainerStdin::spawn(writer);
        let exit = watch::Sender::new(None);
        let mut first = attachment(attachers().subscribe(), &exit);
        first.stdin = Some(stdin);
        first.stdin_once = true;
        let (input, _out, session) = start_attach(first);
        input.send(stdin_input(b"x")).await.unwrap();
        drop(input);
        tokio::time::timeout(SOON, session).await.unwrap().unwrap();
        let mut received = Vec::new();
        tokio::time::timeout(SOON, reader.read_to_end(&mut received))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(received, b"x");
    }

    #[tokio::test]
    async fn without_stdin_once_an_attachers_eof_detaches_it_and_stdin_stays_open() {
        let (mut reader, writer) = tokio::io::duplex(1024);
        let stdin = ContainerStdin::spawn(writer);
        let exit = watch::Sender::new(None);
        let mut first = attachment(attachers().subscribe(), &exit);
        first.stdin = Some(stdin.clone());
        let (input, mut out, session) = start_attach(first);
        input.send(stdin_input(b"one\n")).await.unwrap();
        input.send(close_stdin()).await.unwrap();
        tokio::time::timeout(SOON, session).await.unwrap().unwrap();
        // Ended without `exit`: the container did not exit.
        assert!(out.recv().await.is_none());

        // A second attacher still feeds the open stdin.
        let mut second = attachment(attachers().subscribe(), &exit);
        second.stdin = Some(stdin);
        let (input, _out, _) = start_attach(second);
        input.send(stdin_input(b"two\n")).await.unwrap();
        let mut received = vec![0; 8];
        tokio::time::timeout(SOON, reader.read_exact(&mut received))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(received, b"one\ntwo\n");
    }

    /// A process stand-in: its stdout, its stdin's other end, and its exit.
    struct FakeProcess {
        stdout: tokio::io::DuplexStream,
        stdin: tokio::io::DuplexStream,
        exit: oneshot::Sender<Reaped>,
    }

    /// A streamed exec session over a fake process in process group `pgid`.
    fn start_exec(pgid: nix::unistd::Pid) -> (FakeProcess, Input, Output) {
        let (stdout, stdout_reader) = tokio::io::duplex(CHUNK);
        let (stdin_writer, stdin) = tokio::io::duplex(CHUNK);
        let (exit, exited) = oneshot::channel();
        let started = StartedExec {
            group: KillOnDrop::new(pgid),
            exited,
            stdout: Some(OutputSource {
                reader: Box::new(stdout_reader),
                stream: Some(Source::Stdout),
            }),
            stderr: None,
            stdin: Some(Box::new(stdin_writer)),
            terminal: None,
        };
        let (input, inputs) = mpsc::channel(4);
        let (outputs, output) = mpsc::channel(OUTPUT_BACKLOG);
        tokio::spawn(exec(started, ReceiverStream::new(inputs), outputs));
        let process = FakeProcess {
            stdout,
            stdin,
            exit,
        };
        (process, input, output)
    }

    /// A real process group to be killed: `sleep` as its own group leader.
    fn sleeper() -> std::process::Child {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap()
    }

    #[tokio::test]
    async fn an_exec_streams_stdin_and_output_then_its_exit_after_the_drain() {
        let mut sleeper = sleeper();
        let pgid = nix::unistd::Pid::from_raw(sleeper.id() as i32);
        let (mut process, input, mut output) = start_exec(pgid);
        input.send(stdin_input(b"hi\n")).await.unwrap();
        input.send(close_stdin()).await.unwrap();
        let mut typed = Vec::new();
        tokio::time::timeout(SOON, process.stdin.read_to_end(&mut typed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(typed, b"hi\n");
        process.stdout.write_all(b"got-hi\n").await.unwrap();
        assert_eq!(
            next(&mut output).await,
            io_output::Kind::Stdout(b"got-hi\n".to_vec())
        );
        drop(process.stdout);
        let reaped = Reaped {
            code: 7,
            at: SystemTime::now(),
        };
        process.exit.send(reaped).unwrap();
        assert_eq!(
            next(&mut output).await,
            io_output::Kind::Exit(Exit { exit_code: 7 })
        );
        assert!(output.recv().await.is_none());
        // Exited: its group is left alone.
        assert!(sleeper.try_wait().unwrap().is_none());
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
    }

    #[tokio::test]
    async fn an_exec_whose_caller_goes_away_is_killed() {
        let mut sleeper = sleeper();
        let pgid = nix::unistd::Pid::from_raw(sleeper.id() as i32);
        let (_process, input, _output) = start_exec(pgid);
        drop(input);
        let status = tokio::task::spawn_blocking(move || sleeper.wait().unwrap())
            .await
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(nix::libc::SIGKILL));
    }
}
