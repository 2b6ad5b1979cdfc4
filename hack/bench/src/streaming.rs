//! Exec and port-forward over the runtime's streaming server, through the
//! SPDY client of [`crate::spdy_client`], as kubelet and crictl use them:
//! the round trip of an exec of `true` (the CRI Exec call, connection,
//! upgrade, streams and final status), and the throughput of a
//! port-forwarded HTTP download from a server in a pod.

use crate::client::Runtime;
use crate::exec::ExecResult;
use crate::spdy_client::{self, Connection};
use crate::stats::{self, Summary};
use crate::workload::{RunningPod, Workload};
use anyhow::{bail, ensure, Context};
use crius_proto::cri;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

/// The remote-command version both runtimes' SPDY servers speak best.
const REMOTE_COMMAND: &str = "v4.channel.k8s.io";
/// The port-forward protocol's name in the upgrade.
const PORT_FORWARD: &str = "portforward.k8s.io";
/// Untimed exec round trips first.
const EXEC_WARMUP: usize = 5;
/// The port the pod's HTTP server listens on.
const SERVER_PORT: u16 = 8080;
/// The size of the file each port-forwarded download fetches.
const BODY_BYTES: u64 = 256 << 20;
/// How long the pod's server may take to write its file and listen.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one exec round trip or one download may take at most.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Serialize, Deserialize)]
pub struct StreamingResult {
    /// Exec `true` over SPDY, CRI call to final status.
    pub exec: ExecResult,
    pub port_forward: PortForwardResult,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PortForwardResult {
    pub repetitions: usize,
    /// The HTTP body of each download, in bytes.
    pub body_bytes: u64,
    /// Each download's throughput in MiB/s (the body over the time from the
    /// request's first byte to the body's last), in the order taken.
    pub samples_mib_per_s: Vec<f64>,
    pub median_mib_per_s: f64,
    pub min_mib_per_s: f64,
    pub max_mib_per_s: f64,
}

/// Runs one pod whose container serves a [`BODY_BYTES`] file over HTTP,
/// then times `exec_iterations` exec round trips into it (after
/// [`EXEC_WARMUP`] untimed ones) and `port_forward_repetitions` downloads
/// of the file through port-forward.
pub async fn measure(
    rt: &mut Runtime,
    workload: &Workload,
    exec_iterations: usize,
    port_forward_repetitions: usize,
) -> anyhow::Result<StreamingResult> {
    let script = format!(
        "head -c {BODY_BYTES} /dev/zero > /tmp/big && echo ok > /tmp/ready && \
         exec httpd -f -p {SERVER_PORT} -h /tmp"
    );
    let config = workload.container("server", vec!["sh".into(), "-c".into(), script]);
    let pod = RunningPod::start_with(rt, workload, "streaming", config).await?;
    let measured = async {
        wait_for_server(rt, &pod.container_id).await?;
        let exec = exec_round_trips(rt, &pod.container_id, exec_iterations).await?;
        let port_forward = downloads(rt, &pod.pod_id, port_forward_repetitions).await?;
        anyhow::Ok(StreamingResult { exec, port_forward })
    }
    .await;
    pod.remove(rt).await?;
    measured
}

/// Until the server answers inside the pod (its file is whole by then).
async fn wait_for_server(rt: &mut Runtime, container_id: &str) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{SERVER_PORT}/ready");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let probe = rt
            .exec_sync(cri::ExecSyncRequest {
                container_id: container_id.into(),
                cmd: ["wget", "-q", "-O", "/dev/null", &url]
                    .map(String::from)
                    .to_vec(),
                timeout: 10,
            })
            .await
            .context("ExecSync wget")?
            .into_inner();
        if probe.exit_code == 0 {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the pod's HTTP server did not answer within {READY_TIMEOUT:?}: {}",
            String::from_utf8_lossy(&probe.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn exec_round_trips(
    rt: &mut Runtime,
    container_id: &str,
    iterations: usize,
) -> anyhow::Result<ExecResult> {
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..EXEC_WARMUP + iterations {
        let took = tokio::time::timeout(CALL_TIMEOUT, exec_round_trip(rt, container_id))
            .await
            .with_context(|| format!("exec `true` over SPDY took over {CALL_TIMEOUT:?}"))??;
        if i >= EXEC_WARMUP {
            samples.push(took);
        }
    }
    Ok(ExecResult {
        iterations,
        warmup: EXEC_WARMUP,
        latency: Summary::of(&samples),
    })
}

/// One exec of `true` with stdout and stderr, as `crictl exec` makes it:
/// the CRI call, a new connection, the upgrade, the streams, the status.
async fn exec_round_trip(rt: &mut Runtime, container_id: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let url = rt
        .exec(cri::ExecRequest {
            container_id: container_id.into(),
            cmd: vec!["true".into()],
            stdout: true,
            stderr: true,
            ..Default::default()
        })
        .await
        .context("Exec true")?
        .into_inner()
        .url;
    let mut conn = spdy_client::dial(&url, REMOTE_COMMAND).await?;
    let status = exec_streams(&mut conn).await?;
    drop(conn);
    let took = t.elapsed();
    check_status(&status)?;
    Ok(took)
}

/// Opens an exec's streams in client-go's order (error, stdout, stderr;
/// no stdin, no terminal) and reads until each has ended. Returns what the
/// error stream carried: the v4 status.
async fn exec_streams<T: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<T>,
) -> anyhow::Result<Vec<u8>> {
    let error = conn.open_stream(&[("streamtype", "error")]).await?;
    let stdout = conn.open_stream(&[("streamtype", "stdout")]).await?;
    let stderr = conn.open_stream(&[("streamtype", "stderr")]).await?;
    conn.run_until(|c| {
        [error, stdout, stderr]
            .iter()
            .all(|&id| c.stream(id).end.is_some())
    })
    .await?;
    Ok(conn.stream(error).kept.clone())
}

/// Whether a v4 status says the command succeeded: a JSON `Status` with
/// `"status":"Success"`, or nothing (client-go reads an empty error stream
/// as success).
fn check_status(status: &[u8]) -> anyhow::Result<()> {
    if status.is_empty() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(status);
    let parsed: serde_json::Value =
        serde_json::from_slice(status).with_context(|| format!("the exec status {text:?}"))?;
    ensure!(
        parsed["status"] == "Success",
        "exec `true` ended with status {text}"
    );
    Ok(())
}

async fn downloads(
    rt: &mut Runtime,
    pod_id: &str,
    repetitions: usize,
) -> anyhow::Result<PortForwardResult> {
    let mut samples = Vec::with_capacity(repetitions);
    for _ in 0..repetitions {
        let url = rt
            .port_forward(cri::PortForwardRequest {
                pod_sandbox_id: pod_id.into(),
                port: vec![SERVER_PORT.into()],
            })
            .await
            .context("PortForward")?
            .into_inner()
            .url;
        let transfer = tokio::time::timeout(CALL_TIMEOUT, async {
            let mut conn = spdy_client::dial(&url, PORT_FORWARD).await?;
            download(&mut conn, SERVER_PORT, "/big").await
        })
        .await
        .with_context(|| format!("a port-forwarded download took over {CALL_TIMEOUT:?}"))??;
        ensure!(
            transfer.body_bytes == BODY_BYTES,
            "the download carried {} bytes, want {BODY_BYTES}",
            transfer.body_bytes
        );
        samples.push(transfer.mib_per_s());
    }
    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(PortForwardResult {
        repetitions,
        body_bytes: BODY_BYTES,
        median_mib_per_s: stats::median(&sorted),
        min_mib_per_s: sorted[0],
        max_mib_per_s: sorted[sorted.len() - 1],
        samples_mib_per_s: samples,
    })
}

/// One HTTP download through a port-forward connection.
#[derive(Debug, PartialEq)]
struct Transfer {
    body_bytes: u64,
    /// From the request's first byte to the body's last.
    took: Duration,
}

impl Transfer {
    fn mib_per_s(&self) -> f64 {
        self.body_bytes as f64 / f64::from(1 << 20) / self.took.as_secs_f64()
    }
}

/// Opens a port-forward stream pair to `port` as client-go does (error,
/// then data, request 0), sends an HTTP/1.0 GET of `path` on the data
/// stream and reads the response to its last body byte (by its
/// Content-Length). The clock stops there, not at the data stream's FIN:
/// containerd 1.6 sends that FIN only once the client has half-closed or
/// a second has passed (its `portForward` waits up to 1 s for the second
/// direction), and half-closing before the response ends would cut it off
/// after that second. Then this side half-closes and waits for both
/// streams to end; anything on the error stream is an error.
async fn download<T: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<T>,
    port: u16,
    path: &str,
) -> anyhow::Result<Transfer> {
    let port = port.to_string();
    let pair = |kind: &'static str| {
        [
            ("streamtype", kind),
            ("port", port.as_str()),
            ("requestid", "0"),
        ]
    };
    let error = conn.open_stream(&pair("error")).await?;
    // client-go half-closes the error stream at once: it only reads it.
    conn.send(error, &[], true).await?;
    let data = conn.open_stream(&pair("data")).await?;
    let t = Instant::now();
    conn.send(
        data,
        format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes(),
        false,
    )
    .await?;
    conn.run_until(|c| {
        let d = c.stream(data);
        d.end.is_some() || c.stream(error).received > 0 || response_head(&d.kept).is_some()
    })
    .await?;
    let forward_error = |c: &Connection<T>| {
        let e = c.stream(error);
        (e.received > 0).then(|| String::from_utf8_lossy(&e.kept).into_owned())
    };
    let head = response_head(&conn.stream(data).kept);
    if head.is_none() || conn.stream(error).received > 0 {
        // The server's reason, whole.
        conn.run_until(|c| c.stream(error).end.is_some()).await?;
        if let Some(message) = forward_error(conn) {
            bail!("port-forward failed: {message}");
        }
    }
    let Some(head) = head else {
        bail!(
            "the data stream ended ({:?}) before an HTTP response head",
            conn.stream(data).end
        );
    };
    let (head_len, body_bytes) = head?;
    let total = head_len as u64 + body_bytes;
    conn.run_until(|c| {
        let d = c.stream(data);
        d.received >= total || d.end.is_some()
    })
    .await?;
    let took = t.elapsed();
    let received = conn.stream(data).received;
    ensure!(
        received == total,
        "the data stream carried {received} bytes, want {total} (response head and body; ended: {:?})",
        conn.stream(data).end
    );
    conn.send(data, &[], true).await?;
    conn.run_until(|c| c.stream(data).end.is_some() && c.stream(error).end.is_some())
        .await?;
    if let Some(message) = forward_error(conn) {
        bail!("port-forward failed after the download: {message}");
    }
    Ok(Transfer { body_bytes, took })
}

/// The length of the HTTP response head at the start of `data` and its
/// Content-Length; None while the head is incomplete. Errors: not a 200
/// answer, or no Content-Length.
fn response_head(data: &[u8]) -> Option<anyhow::Result<(usize, u64)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(data) {
        Ok(httparse::Status::Partial) => return None,
        Ok(httparse::Status::Complete(len)) => len,
        Err(err) => return Some(Err(err).context("parsing the HTTP response")),
    };
    Some((|| {
        ensure!(
            response.code == Some(200),
            "the pod's server answered {:?} {}",
            response.code,
            response.reason.unwrap_or_default()
        );
        let length = response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .context("the response has no Content-Length")?;
        let length = std::str::from_utf8(length.value)?.trim().parse()?;
        Ok((head_len, length))
    })())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use crius::streaming::spdy;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    /// A client session on one end of an in-memory pipe and crius' SPDY
    /// server session on the other; `handler` gets each stream the client
    /// opens.
    fn session<F, Fut>(handler: F) -> Connection<tokio::io::DuplexStream>
    where
        F: Fn(spdy::Stream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (client, server) = duplex(256 * 1024);
        let (_session, mut incoming) = spdy::serve(server);
        tokio::spawn(async move {
            while let Some(stream) = incoming.recv().await {
                tokio::spawn(handler(stream));
            }
        });
        Connection::new(client, BytesMut::new())
    }

    fn stream_type(stream: &spdy::Stream) -> String {
        let value = stream.headers().get("streamtype").unwrap();
        value.to_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn an_exec_reads_the_status_after_every_stream_ended() {
        let status = br#"{"metadata":{},"status":"Success"}"#;
        let mut conn = session(move |stream| async move {
            let kind = stream_type(&stream);
            let (_reader, mut writer) = stream.split();
            match kind.as_str() {
                "error" => writer.write_all(status).await.unwrap(),
                "stdout" => writer.write_all(b"out").await.unwrap(),
                _ => {}
            }
            writer.shutdown().await.unwrap();
        });
        let got = exec_streams(&mut conn).await.unwrap();
        assert_eq!(got, status);
        check_status(&got).unwrap();
        for id in [1, 3, 5] {
            assert_eq!(conn.stream(id).end, Some(spdy_client::StreamEnd::Fin));
        }
        assert_eq!(conn.stream(3).kept, b"out");
    }

    #[test]
    fn statuses_other_than_success_are_errors() {
        check_status(b"").unwrap();
        check_status(br#"{"metadata":{},"status":"Success"}"#).unwrap();
        let failure = br#"{"metadata":{},"status":"Failure","reason":"NonZeroExitCode"}"#;
        let err = check_status(failure).unwrap_err().to_string();
        assert!(err.contains("NonZeroExitCode"), "{err}");
        assert!(check_status(b"not json").is_err());
    }

    /// An HTTP server stand-in behind the data stream: it checks the
    /// request, then answers with a 4 MiB body in odd-sized writes.
    #[tokio::test]
    async fn a_download_counts_every_body_byte() {
        const BODY: usize = 4 << 20;
        let mut conn = session(|stream| async move {
            assert_eq!(stream.headers().get("port").unwrap(), "8080");
            assert_eq!(stream.headers().get("requestid").unwrap(), "0");
            let kind = stream_type(&stream);
            let (mut reader, mut writer) = stream.split();
            if kind == "data" {
                let want = b"GET /big HTTP/1.0\r\n\r\n";
                let mut request = vec![0; want.len()];
                reader.read_exact(&mut request).await.unwrap();
                assert_eq!(request, want);
                let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {BODY}\r\n\r\n");
                writer.write_all(head.as_bytes()).await.unwrap();
                let chunk = vec![0; 100_003];
                let mut left = BODY;
                while left > 0 {
                    let n = left.min(chunk.len());
                    writer.write_all(&chunk[..n]).await.unwrap();
                    left -= n;
                }
                // The FIN comes only after the client's, as containerd's does.
                let mut rest = Vec::new();
                reader.read_to_end(&mut rest).await.unwrap();
                assert!(rest.is_empty());
            } else {
                let mut rest = Vec::new();
                reader.read_to_end(&mut rest).await.unwrap();
            }
            writer.shutdown().await.unwrap();
        });
        let transfer = download(&mut conn, 8080, "/big").await.unwrap();
        assert_eq!(transfer.body_bytes, BODY as u64);
        assert!(transfer.mib_per_s() > 0.0);
    }

    #[tokio::test]
    async fn a_refused_port_is_an_error_with_the_servers_message() {
        let mut conn = session(|stream| async move {
            let kind = stream_type(&stream);
            let (_reader, mut writer) = stream.split();
            if kind == "error" {
                writer.write_all(b"connection refused").await.unwrap();
            }
            writer.shutdown().await.unwrap();
        });
        let err = download(&mut conn, 8080, "/big").await.unwrap_err();
        assert!(err.to_string().contains("connection refused"), "{err}");
    }

    #[test]
    fn response_heads_give_their_length_and_content_length() {
        let head = b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\
                     Content-Length: 268435456\r\n\r\n";
        let mut data = head.to_vec();
        data.extend_from_slice(&[0; 10]);
        let (len, body) = response_head(&data).unwrap().unwrap();
        assert_eq!((len, body), (head.len(), 268_435_456));
        assert!(response_head(&head[..20]).is_none());
        let missing = b"HTTP/1.0 404 Not Found\r\n\r\n";
        assert!(response_head(missing).unwrap().is_err());
        let no_length = b"HTTP/1.0 200 OK\r\n\r\n";
        assert!(response_head(no_length).unwrap().is_err());
    }
}
