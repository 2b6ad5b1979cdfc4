//! One wrapper around every CRI call: a span with the RPC name and object id,
//! the caller's deadline, one log line for the outcome with the call's
//! duration (`elapsed_ms`, what a probe's timeout is judged by), and the
//! error → gRPC status mapping.

use std::future::Future;

use tonic::{Response, Status};
use tracing::Instrument;

use crate::error::CriError;

/// Runs one CRI call `name` on object `id` under its span and the caller's
/// deadline: its response, or its error as the one gRPC status (a passed
/// deadline is DEADLINE_EXCEEDED). Logs the outcome with `elapsed_ms`.
pub async fn rpc<T, F>(name: &'static str, id: &str, call: F) -> Result<Response<T>, Status>
where
    F: Future<Output = Result<T, CriError>>,
{
    let span = tracing::info_span!("cri", rpc = name, id = id);
    async move {
        let start = std::time::Instant::now();
        let result = match crate::deadline::current() {
            Some(deadline) => tokio::time::timeout_at(deadline, call)
                .await
                .unwrap_or_else(|_| {
                    Err(CriError::DeadlineExceeded(format!(
                        "{name}: the request's deadline passed"
                    )))
                }),
            None => call.await,
        };
        let elapsed_ms = start.elapsed().as_secs_f64() * 1000.0;
        match &result {
            Ok(_) => tracing::debug!(elapsed_ms, "ok"),
            Err(e) => tracing::warn!(error = %e, elapsed_ms, "failed"),
        }
        result.map(Response::new).map_err(Status::from)
    }
    .instrument(span)
    .await
}

/// The response stream of a server-streaming RPC: boxed, so a handler can
/// return any stream (tonic needs one concrete type per RPC).
pub type ReplyStream<T> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The answer of every RPC whose issue has not landed yet.
pub fn unimplemented<T>(name: &'static str) -> Result<Response<T>, Status> {
    tracing::debug!(rpc = name, "unimplemented");
    Err(CriError::Unimplemented(name).into())
}
