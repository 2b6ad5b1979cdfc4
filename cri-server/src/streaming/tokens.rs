//! Single-use tokens for the URLs Exec, Attach and PortForward return: each
//! names one validated request, is taken by the first connection that
//! presents it, and expires unused after [`TOKEN_TTL`] (kubelet's streaming
//! server: `pkg/kubelet/cri/streaming/request_cache.go`, 1 minute, at most
//! 1,000 pending).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;

/// How long a token waits for its connection.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);

/// The most tokens pending at once; beyond, issuing fails until some are
/// taken or expire (kubelet answers ResourceExhausted then).
pub const MAX_PENDING: usize = 1000;

/// Pending requests by token.
pub struct Tokens<R> {
    pending: Mutex<HashMap<String, (Instant, R)>>,
    ttl: Duration,
}

/// Every one of [`MAX_PENDING`] tokens is pending and unexpired.
#[derive(Debug, thiserror::Error)]
#[error("too many streaming requests pending ({MAX_PENDING}); retry in a moment")]
pub struct TooManyPending;

impl<R> Tokens<R> {
    /// An empty cache whose tokens expire after `ttl`.
    pub fn new(ttl: Duration) -> Tokens<R> {
        Tokens {
            pending: Mutex::default(),
            ttl,
        }
    }

    /// Keeps `request` under a new random token (22 URL-safe characters,
    /// 128 bits) and returns the token.
    pub fn issue(&self, request: R) -> Result<String, TooManyPending> {
        let mut bytes = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = Instant::now();
        let mut pending = self.lock();
        if pending.len() >= MAX_PENDING {
            pending.retain(|_, (expires, _)| *expires > now);
            if pending.len() >= MAX_PENDING {
                return Err(TooManyPending);
            }
        }
        pending.insert(token.clone(), (now + self.ttl, request));
        Ok(token)
    }

    /// Takes the request of `token`: None when it is unknown, was taken
    /// before, or expired.
    pub fn take(&self, token: &str) -> Option<R> {
        let (expires, request) = self.lock().remove(token)?;
        (expires > Instant::now()).then_some(request)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, R)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_taken_once() {
        let tokens = Tokens::new(TOKEN_TTL);
        let token = tokens.issue("exec").unwrap();
        assert_eq!(token.len(), 22);
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(tokens.take(&token), Some("exec"));
        assert_eq!(tokens.take(&token), None);
        assert_eq!(tokens.take("unknown"), None);
    }

    #[test]
    fn tokens_differ() {
        let tokens = Tokens::new(TOKEN_TTL);
        let a = tokens.issue(1).unwrap();
        let b = tokens.issue(2).unwrap();
        assert_ne!(a, b);
        assert_eq!(tokens.take(&b), Some(2));
        assert_eq!(tokens.take(&a), Some(1));
    }

    #[test]
    fn an_expired_token_is_refused() {
        let tokens = Tokens::new(Duration::from_millis(20));
        let token = tokens.issue(()).unwrap();
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(tokens.take(&token), None);
    }

    #[test]
    fn the_pending_limit_counts_only_unexpired_tokens() {
        let tokens = Tokens::new(Duration::from_millis(30));
        for n in 0..MAX_PENDING {
            tokens.issue(n).unwrap();
        }
        assert!(tokens.issue(MAX_PENDING).is_err());
        std::thread::sleep(Duration::from_millis(50));
        let token = tokens.issue(0).unwrap();
        assert_eq!(tokens.take(&token), Some(0));
    }
}
