//! Kubernetes' port-forward protocol (`portforward.k8s.io`): the client
//! opens a data and an error stream per forwarded connection, paired by
//! their `requestid` header and naming the pod's `port`; each pair becomes
//! one TCP connection to that port on the pod's localhost (kubelet's
//! `cri/streaming/portforward/httpstream.go`; containerd dials the same way
//! inside the pod's network namespace).

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::spdy;

/// The protocol's name in the upgrade handshake.
pub const PROTOCOL: &str = "portforward.k8s.io";

/// How much each direction of a forwarded connection buffers.
const COPY_BUFFER: usize = 64 * 1024;

/// Serves the streams of one port-forward connection into pod `pod_id`
/// (its network namespace `netns`, None for the host's) until the client
/// closes it. Each pair of streams is forwarded on its own task.
pub async fn serve(
    mut incoming: mpsc::Receiver<spdy::Stream>,
    pod_id: String,
    netns: Option<PathBuf>,
) {
    let mut pending: HashMap<String, Pair> = HashMap::new();
    let mut forwards = tokio::task::JoinSet::new();
    while let Some(stream) = incoming.recv().await {
        let header = |name: &str| {
            stream
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let request_id = header("requestid").unwrap_or_default();
        let kind = header("streamtype").unwrap_or_default();
        let port = header("port").unwrap_or_default();
        let pair = pending.entry(request_id.clone()).or_default();
        match kind.as_str() {
            "data" => pair.data = Some(stream),
            "error" => pair.error = Some(stream),
            other => {
                tracing::debug!(stream_type = other, "unknown port-forward stream; reset");
                continue;
            }
        }
        if pair.data.is_some() && pair.error.is_some() {
            let pair = pending.remove(&request_id).expect("the pair is pending");
            let (data, error) = (pair.data.unwrap(), pair.error.unwrap());
            let (pod_id, netns) = (pod_id.clone(), netns.clone());
            forwards
                .spawn(async move { forward(&pod_id, netns.as_deref(), &port, data, error).await });
        }
        // Reap finished forwards as we go.
        while forwards.try_join_next().is_some() {}
    }
    // The connection ended: its streams are gone, and so are their forwards.
    forwards.abort_all();
}

#[derive(Default)]
struct Pair {
    data: Option<spdy::Stream>,
    error: Option<spdy::Stream>,
}

/// Forwards one connection: dials `port` and copies both ways until both
/// sides closed; a failure is written on the error stream.
async fn forward(
    pod_id: &str,
    netns: Option<&Path>,
    port: &str,
    data: spdy::Stream,
    error: spdy::Stream,
) {
    let (_, mut error) = error.split();
    let result = async {
        let port: u16 = port.parse().ok().filter(|&port| port > 0).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid port {port:?}"),
            )
        })?;
        let mut tcp = dial(netns.map(Path::to_path_buf), port).await?;
        let (reader, writer) = data.split();
        let mut data = tokio::io::join(reader, writer);
        tokio::io::copy_bidirectional_with_sizes(&mut data, &mut tcp, COPY_BUFFER, COPY_BUFFER)
            .await
            .map(drop)
    }
    .await;
    if let Err(err) = result {
        tracing::debug!(pod_id, port, %err, "port-forward failed");
        let message = format!("error forwarding port {port} to pod {pod_id}: {err}");
        let _ = error.write_all(message.as_bytes()).await;
    }
    let _ = error.shutdown().await;
}

/// Connects to `port` on localhost (IPv4, then IPv6) in the network
/// namespace pinned at `netns`, or the host's. The socket is made on a
/// thread of its own that joins the namespace, never on one of the async
/// runtime's threads, which must stay in the host's.
pub async fn dial(netns: Option<PathBuf>, port: u16) -> io::Result<TcpStream> {
    let connect = move || {
        let v4 = std::net::TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        v4.or_else(|err| {
            std::net::TcpStream::connect(SocketAddr::from((Ipv6Addr::LOCALHOST, port)))
                .map_err(|_| err)
        })
    };
    let stream = tokio::task::spawn_blocking(move || match netns {
        Some(netns) => crate::namespaces::in_netns(&netns, connect)
            .map_err(|err| io::Error::other(err.to_string()))?,
        None => connect(),
    })
    .await
    .map_err(io::Error::other)??;
    stream.set_nonblocking(true)?;
    stream.set_nodelay(true)?;
    TcpStream::from_std(stream)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn dials_localhost_in_the_hosts_namespace() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            conn.write_all(b"hello").await.unwrap();
        });
        let mut stream = dial(None, port).await.unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_closed_port_is_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let err = dial(None, port).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    }
}
