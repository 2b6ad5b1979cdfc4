//! Kubernetes' remote-command protocol for Exec and Attach, whatever the
//! transport (SPDY streams or WebSocket channels): the client's stdin and
//! terminal sizes go to the shim, the process's output comes back, and the
//! error channel carries the final status (client-go's
//! `tools/remotecommand`, kubelet's `cri/streaming/remotecommand`).

use std::future::Future;
use std::pin::Pin;

use crius_proto::shim::v1 as pb;
use futures_util::StreamExt;
use pb::io_input::Kind as In;
use pb::io_output::Kind as Out;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::shim_client::ProcessIo;

/// The read side of one channel.
pub type Reader = Pin<Box<dyn AsyncRead + Send>>;
/// The write side of one channel.
pub type Writer = Pin<Box<dyn AsyncWrite + Send>>;

/// A remote-command protocol version. Each adds to the one before: v2 an
/// error channel with the error as text, v3 the resize channel, v4 the final
/// status as a JSON `Status` with the exit code, v5 (WebSocket only) a close
/// signal for stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    V2,
    V3,
    V4,
    V5,
}

impl Protocol {
    /// The versions offered over SPDY, best first (kubelet offers the same;
    /// v5's close signal is a WebSocket frame).
    pub const SPDY: [Protocol; 3] = [Protocol::V4, Protocol::V3, Protocol::V2];

    /// The name a client asks for, e.g. `v4.channel.k8s.io`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::V2 => "v2.channel.k8s.io",
            Protocol::V3 => "v3.channel.k8s.io",
            Protocol::V4 => "v4.channel.k8s.io",
            Protocol::V5 => "v5.channel.k8s.io",
        }
    }

    /// Whether the client can send terminal sizes.
    pub fn has_resize(self) -> bool {
        self >= Protocol::V3
    }
}

/// Which streams the request asked for (the CRI request's flags, as the
/// token recorded them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// The channels of one exec or attach, as the client opened them.
pub struct Channels {
    pub stdin: Option<Reader>,
    pub stdout: Option<Writer>,
    pub stderr: Option<Writer>,
    /// A stream of JSON `{"Width":…,"Height":…}` objects.
    pub resize: Option<Reader>,
    /// Where the final status goes.
    pub error: Writer,
}

/// What happens when the client's stdin ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdinEnd {
    /// The process's stdin is closed (an exec; an attach to a `stdin_once`
    /// container): the stream goes on until the process exits.
    Close,
    /// The attach ends; the container's stdin stays open for the next one.
    Detach,
}

/// How the process's streaming ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The process exited with this status (128+N: killed by signal N).
    Exited(i32),
    /// The attacher's stdin ended; the container runs on.
    Detached,
    /// The client went away: nothing can be told to it.
    ClientGone,
    /// The shim failed mid-stream.
    Failed(String),
}

/// How much of the client's stdin is sent to the shim in one message.
const STDIN_CHUNK: usize = 32 * 1024;

/// Moves data between the client's channels and the shim's [`ProcessIo`]
/// until the process exits, the attach ends (`stdin_end`), the client goes
/// away (`client_gone` resolves or its output cannot be written) or the shim
/// fails. The output writers are shut down (the client reads EOF) before
/// this returns; the error channel is left to [`write_status`]. Dropping
/// the shim call when the client is gone makes the shim kill an exec.
pub async fn pump(
    channels: Channels,
    io: ProcessIo,
    stdin_end: StdinEnd,
    client_gone: impl Future<Output = ()>,
) -> (Outcome, Writer) {
    let Channels {
        stdin,
        mut stdout,
        mut stderr,
        resize,
        error,
    } = channels;
    let ProcessIo { input, mut output } = io;
    let (detach_tx, mut detached) = mpsc::channel::<()>(1);
    let mut feeders = tokio::task::JoinSet::new();
    if let Some(stdin) = stdin {
        feeders.spawn(feed_stdin(stdin, input.clone(), stdin_end, detach_tx));
    }
    if let Some(resize) = resize {
        feeders.spawn(feed_resizes(resize, input.clone()));
    }
    // The shim call lives while `input` does: its end tells the shim the
    // caller is gone.
    let mut client_gone = std::pin::pin!(client_gone);
    let outcome = loop {
        tokio::select! {
            next = output.next() => match next {
                Some(Ok(pb::IoOutput { kind: Some(Out::Stdout(data)) })) => {
                    if write_to(&mut stdout, &data).await.is_err() {
                        break Outcome::ClientGone;
                    }
                }
                Some(Ok(pb::IoOutput { kind: Some(Out::Stderr(data)) })) => {
                    if write_to(&mut stderr, &data).await.is_err() {
                        break Outcome::ClientGone;
                    }
                }
                Some(Ok(pb::IoOutput { kind: Some(Out::Exit(exit)) })) => break Outcome::Exited(exit.exit_code),
                Some(Ok(pb::IoOutput { kind: None })) => {}
                Some(Err(err)) => break Outcome::Failed(err.to_string()),
                // The shim ended the call without an exit: the container is gone.
                None => break Outcome::Failed("the shim ended the stream without an exit status".into()),
            },
            Some(()) = detached.recv() => break Outcome::Detached,
            () = &mut client_gone => break Outcome::ClientGone,
        }
    };
    feeders.abort_all();
    drop(input);
    drop(output);
    for writer in [stdout.as_mut(), stderr.as_mut()].into_iter().flatten() {
        let _ = writer.shutdown().await;
    }
    (outcome, error)
}

async fn write_to(writer: &mut Option<Writer>, data: &[u8]) -> std::io::Result<()> {
    match writer {
        Some(writer) => writer.write_all(data).await,
        // Not asked for: the shim sends nothing there; drop what comes.
        None => Ok(()),
    }
}

async fn feed_stdin(
    mut stdin: Reader,
    input: mpsc::Sender<pb::IoInput>,
    end: StdinEnd,
    detach: mpsc::Sender<()>,
) {
    let mut buf = vec![0; STDIN_CHUNK];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let message = pb::IoInput {
                    kind: Some(In::Stdin(buf[..n].to_vec())),
                };
                if input.send(message).await.is_err() {
                    return;
                }
            }
        }
    }
    match end {
        StdinEnd::Close => {
            let close = pb::IoInput {
                kind: Some(In::CloseStdin(pb::CloseStdin {})),
            };
            let _ = input.send(close).await;
            // Keep the call open: the process runs on without stdin.
            input.closed().await;
        }
        StdinEnd::Detach => {
            let _ = detach.send(()).await;
        }
    }
}

/// How long an exec on a terminal waits for the client's first size before
/// it starts: client-go sends it as soon as the streams are open, and a
/// process that starts with it lays out right from its first line.
pub const FIRST_SIZE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Reads the client's first terminal size from `resize` (within
/// [`FIRST_SIZE_WAIT`]): the size as (columns, rows), if one came, and the
/// resize channel with whatever followed it still to be read.
pub async fn first_size(mut resize: Reader) -> (Option<(u16, u16)>, Reader) {
    let mut pending = Vec::new();
    let mut buf = vec![0; 512];
    let read = tokio::time::timeout(FIRST_SIZE_WAIT, async {
        loop {
            match resize.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
            let mut stream =
                serde_json::Deserializer::from_slice(&pending).into_iter::<TerminalSize>();
            match stream.next() {
                Some(Ok(size)) => {
                    // What follows it is the feeder's to read.
                    let used = stream.byte_offset();
                    pending.drain(..used);
                    return Some((size.width, size.height));
                }
                Some(Err(err)) if err.is_eof() => continue,
                // Malformed: the feeder skips it; start without a size.
                Some(Err(_)) => return None,
                None => continue,
            }
        }
    })
    .await;
    let size = read.ok().flatten();
    let rest: Reader = Box::pin(std::io::Cursor::new(pending).chain(resize));
    (size, rest)
}

/// One terminal size as client-go's resize channel sends it.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct TerminalSize {
    pub width: u16,
    pub height: u16,
}

async fn feed_resizes(mut resize: Reader, input: mpsc::Sender<pb::IoInput>) {
    let mut pending = Vec::new();
    let mut buf = vec![0; 4096];
    loop {
        match resize.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
        let (sizes, used) = parse_sizes(&pending);
        pending.drain(..used);
        for size in sizes {
            let message = pb::IoInput {
                kind: Some(In::Resize(pb::Resize {
                    width: size.width.into(),
                    height: size.height.into(),
                })),
            };
            if input.send(message).await.is_err() {
                return;
            }
        }
    }
    // Keep the call open while the process runs.
    input.closed().await;
}

/// The complete sizes at the start of `bytes`, and how many bytes they
/// took; a partial object waits for more. A malformed one is skipped up to
/// the next line (client-go writes one object a line).
pub fn parse_sizes(bytes: &[u8]) -> (Vec<TerminalSize>, usize) {
    let mut sizes = Vec::new();
    let mut used = 0;
    while used < bytes.len() {
        let mut stream =
            serde_json::Deserializer::from_slice(&bytes[used..]).into_iter::<TerminalSize>();
        match stream.next() {
            Some(Ok(size)) => {
                used += stream.byte_offset();
                sizes.push(size);
            }
            Some(Err(err)) if err.is_eof() => break,
            Some(Err(_)) => match bytes[used..].iter().position(|&b| b == b'\n') {
                Some(newline) => used += newline + 1,
                None => break,
            },
            None => {
                used = bytes.len();
            }
        }
    }
    (sizes, used)
}

/// What the error channel says for `outcome` under `protocol`: v4 and v5 a
/// JSON `metav1.Status` (a non-zero exit as reason `NonZeroExitCode` with
/// the code in `details.causes`, as client-go's `errorDecoderV4` reads it);
/// v2 and v3 the error as text, nothing on success. None when nothing is to
/// be written.
pub fn status(protocol: Protocol, outcome: &Outcome, cmd: &[String]) -> Option<Vec<u8>> {
    let failure = match outcome {
        Outcome::Exited(0) | Outcome::Detached => None,
        Outcome::ClientGone => return None,
        Outcome::Exited(code) => Some((
            format!(
                "command terminated with non-zero exit code: error executing command {cmd:?}, exit code {code}"
            ),
            Some(*code),
        )),
        Outcome::Failed(message) => Some((message.clone(), None)),
    };
    if protocol < Protocol::V4 {
        return failure.map(|(message, _)| message.into_bytes());
    }
    let status = match failure {
        None => serde_json::json!({"metadata": {}, "status": "Success"}),
        Some((message, Some(code))) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Some((message, None)) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("Internal error occurred: {message}"),
            "reason": "InternalError",
            "details": {"causes": [{"message": message}]},
            "code": 500,
        }),
    };
    Some(status.to_string().into_bytes())
}

/// Writes the status of `outcome` on the error channel and closes it.
pub async fn write_status(
    mut error: Writer,
    protocol: Protocol,
    outcome: &Outcome,
    cmd: &[String],
) {
    if let Some(status) = status(protocol, outcome, cmd) {
        let _ = error.write_all(&status).await;
    }
    let _ = error.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_parsed_as_they_arrive() {
        let (sizes, used) = parse_sizes(br#"{"Width":80,"Height":24}"#);
        assert_eq!(
            sizes,
            [TerminalSize {
                width: 80,
                height: 24
            }]
        );
        assert_eq!(used, 24);

        let input = b"{\"Width\":100,\"Height\":30}\n{\"Width\":12";
        let (sizes, used) = parse_sizes(input);
        assert_eq!(
            sizes,
            [TerminalSize {
                width: 100,
                height: 30
            }]
        );
        assert_eq!(&input[used..], b"\n{\"Width\":12");

        let (sizes, used) = parse_sizes(b"garbage\n{\"Width\":1,\"Height\":2}\n");
        assert_eq!(
            sizes,
            [TerminalSize {
                width: 1,
                height: 2
            }]
        );
        assert_eq!(used, 31);
    }

    #[tokio::test]
    async fn the_first_size_is_taken_and_the_rest_left_to_read() {
        let (mut client, server) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(
            &mut client,
            b"{\"Width\":100,\"Height\":30}\n{\"Width\":90,",
        )
        .await
        .unwrap();
        drop(client);
        let (size, mut rest) = first_size(Box::pin(server)).await;
        assert_eq!(size, Some((100, 30)));
        let mut left = Vec::new();
        rest.read_to_end(&mut left).await.unwrap();
        assert_eq!(left, b"\n{\"Width\":90,");
    }

    #[tokio::test]
    async fn no_size_in_time_starts_without_one() {
        let (_client, server) = tokio::io::duplex(1024);
        let started = std::time::Instant::now();
        let (size, _) = first_size(Box::pin(server)).await;
        assert_eq!(size, None);
        assert!(started.elapsed() >= FIRST_SIZE_WAIT);
    }

    #[test]
    fn the_v4_status_carries_the_exit_code() {
        let cmd = ["sh".to_string(), "-c".into(), "exit 7".into()];
        let status = status(Protocol::V4, &Outcome::Exited(7), &cmd).unwrap();
        let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "7");

        let success = super::status(Protocol::V4, &Outcome::Exited(0), &cmd).unwrap();
        assert_eq!(success, br#"{"metadata":{},"status":"Success"}"#);
        let detached = super::status(Protocol::V5, &Outcome::Detached, &cmd).unwrap();
        assert_eq!(detached, success);
    }

    #[test]
    fn older_protocols_get_text_and_nothing_on_success() {
        let cmd = ["false".to_string()];
        assert_eq!(status(Protocol::V3, &Outcome::Exited(0), &cmd), None);
        let text = status(Protocol::V2, &Outcome::Exited(1), &cmd).unwrap();
        assert!(String::from_utf8(text).unwrap().contains("exit code 1"));
        let failed = status(Protocol::V3, &Outcome::Failed("boom".into()), &cmd).unwrap();
        assert_eq!(failed, b"boom");
        assert_eq!(status(Protocol::V4, &Outcome::ClientGone, &cmd), None);
    }

    #[test]
    fn internal_errors_are_500() {
        let status = status(Protocol::V4, &Outcome::Failed("shim gone".into()), &[]).unwrap();
        let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
        assert_eq!(status["reason"], "InternalError");
        assert_eq!(status["code"], 500);
        assert_eq!(status["message"], "Internal error occurred: shim gone");
    }
}
