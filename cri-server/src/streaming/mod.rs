//! The streaming server: the HTTP endpoint behind the URLs that Exec,
//! Attach and PortForward return. A URL names a single-use token
//! ([`tokens`]); its connection upgrades to SPDY/3.1 ([`spdy`]) or
//! WebSocket and speaks the remote-command ([`remotecommand`]) or
//! port-forward ([`portforward`]) protocol of Kubernetes.
//!
//! The RPC handlers validate a request and [`Streaming::url`] keeps it under
//! a token; [`server::serve`] takes the token when the client connects.

pub mod portforward;
pub mod remotecommand;
pub mod server;
pub mod spdy;
pub mod tokens;
pub mod websocket;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use crius_proto::cri;

use crate::config::StreamingConfig;
use crate::error::CriError;
use tokens::Tokens;

/// A validated request waiting for its streaming connection.
#[derive(Debug, Clone)]
pub enum StreamRequest {
    Exec(cri::ExecRequest),
    Attach(cri::AttachRequest),
    PortForward(cri::PortForwardRequest),
}

impl StreamRequest {
    /// The first path segment of its URL (kubelet's: `/exec/<token>` …).
    pub fn kind(&self) -> &'static str {
        match self {
            StreamRequest::Exec(_) => "exec",
            StreamRequest::Attach(_) => "attach",
            StreamRequest::PortForward(_) => "portforward",
        }
    }
}

/// The streaming server's address and its pending requests.
pub struct Streaming {
    tokens: Tokens<StreamRequest>,
    /// `http://<address>:<port>`, the prefix of every URL handed out.
    base_url: String,
    /// Bound when the daemon opens, served once it runs.
    listener: Mutex<Option<TcpListener>>,
    /// The TLS side of HTTPS, when the config names a certificate.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Streaming {
    /// Binds the streaming server's TCP port (`config.port` 0: a free one)
    /// so that URLs can name it before it serves, and loads its TLS
    /// certificate and key when given. Errors: the address cannot be bound,
    /// the certificate or key cannot be read or do not match.
    pub fn bind(config: &StreamingConfig) -> anyhow::Result<Streaming> {
        let tls = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
            _ => None,
        };
        let address = SocketAddr::new(config.address, config.port);
        let listener = TcpListener::bind(address)
            .with_context(|| format!("binding the streaming server to {address}"))?;
        listener
            .set_nonblocking(true)
            .context("making the streaming socket non-blocking")?;
        let bound = listener
            .local_addr()
            .context("reading the streaming address")?;
        Ok(Streaming {
            tokens: Tokens::new(tokens::TOKEN_TTL),
            base_url: format!("{}://{bound}", if tls.is_some() { "https" } else { "http" }),
            listener: Mutex::new(Some(listener)),
            tls,
        })
    }

    /// The URL that serves `request` once, for a minute. Errors:
    /// ResourceExhausted when too many requests are pending.
    pub fn url(&self, request: StreamRequest) -> Result<String, CriError> {
        let kind = request.kind();
        let token = (self.tokens.issue(request))
            .map_err(|err| CriError::ResourceExhausted(err.to_string()))?;
        Ok(format!("{}/{kind}/{token}", self.base_url))
    }

    /// Takes the request under `token` if its URL's `kind` matches: None
    /// for an unknown, used, expired or mismatched token.
    pub fn take(&self, kind: &str, token: &str) -> Option<StreamRequest> {
        self.tokens
            .take(token)
            .filter(|request| request.kind() == kind)
    }

    /// The bound socket, once: for [`server::serve`].
    pub fn take_listener(&self) -> Option<TcpListener> {
        self.listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The TLS acceptor when the server speaks HTTPS.
    pub fn tls(&self) -> Option<&tokio_rustls::TlsAcceptor> {
        self.tls.as_ref()
    }
}

/// A TLS acceptor serving the PEM certificate chain `cert` with its key.
fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the streaming certificate {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the streaming key {}", key.display()))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the streaming certificate and key do not make a TLS identity")?;
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_bound_port_and_serve_once() {
        let streaming = Streaming::bind(&StreamingConfig::default()).unwrap();
        let request = StreamRequest::PortForward(cri::PortForwardRequest {
            pod_sandbox_id: "pod".into(),
            port: vec![80],
        });
        let url = streaming.url(request).unwrap();
        let listener = streaming.take_listener().unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_ne!(port, 0);
        let prefix = format!("http://127.0.0.1:{port}/portforward/");
        let token = url.strip_prefix(&prefix).unwrap_or_else(|| panic!("{url}"));
        assert!(
            streaming.take("exec", token).is_none(),
            "the kind must match"
        );
        // A mismatched kind used the token up, as any presentation does.
        assert!(streaming.take("portforward", token).is_none());
        let url = streaming
            .url(StreamRequest::Exec(cri::ExecRequest::default()))
            .unwrap();
        let token = url.rsplit('/').next().unwrap();
        assert!(matches!(
            streaming.take("exec", token),
            Some(StreamRequest::Exec(_))
        ));
        assert!(streaming.take_listener().is_none());
    }
}
