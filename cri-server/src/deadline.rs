//! The caller's deadline (the `grpc-timeout` header), made known to every
//! handler so that a call past it answers DEADLINE_EXCEEDED, as CRI expects.
//!
//! tonic's server enforces the header itself but answers CANCELLED, and its
//! layer sits outside any layer a server can add. So this layer (inside it)
//! puts the deadline in a task-local, and `instrument::rpc` answers a little
//! before tonic's timer would: a reply at the deadline could not reach the
//! client in time anyway. The work of a state-changing call runs in its own
//! task and finishes regardless.

use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Option<Instant>;
}

/// How much earlier than the caller's deadline a call gives up.
const MARGIN: Duration = Duration::from_millis(2);

/// The instant the current call must answer by, if its caller set a deadline.
pub fn current() -> Option<Instant> {
    DEADLINE
        .try_with(|d| *d)
        .ok()
        .flatten()
        .map(|d| d.checked_sub(MARGIN).unwrap_or(d))
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for Deadline<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tokio::task::futures::TaskLocalFuture<Option<Instant>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let deadline = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map(|t| Instant::now() + t);
        DEADLINE.scope(deadline, self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_values() {
        assert_eq!(parse_grpc_timeout("1m"), Some(Duration::from_millis(1)));
        assert_eq!(parse_grpc_timeout("120S"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("500u"), Some(Duration::from_micros(500)));
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None, "more than 8 digits");
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }

    #[tokio::test]
    async fn the_deadline_is_known_inside_the_scope_only() {
        assert_eq!(current(), None);
        let at = Instant::now() + Duration::from_secs(1);
        let seen = DEADLINE.scope(Some(at), async { current() }).await;
        assert_eq!(seen, Some(at - MARGIN));
    }
}
