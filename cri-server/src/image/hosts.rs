//! Where a pull asks for a registry host's images, and how: the endpoint
//! list of a registry host and the HTTP client of each endpoint.
//!
//! Per registry host, the first of these that names it decides:
//! 1. the host's own directory under `[registry] config_path`, containerd's
//!    `hosts.toml` layout (containerd docs/hosts.md,
//!    core/remotes/docker/config/hosts.go);
//! 2. crius' `[registry.mirrors]` and `[registry] insecure` entries naming it;
//! 3. the `_default` directory under `config_path`;
//! 4. the host itself (`docker.io` served by `registry-1.docker.io`), with
//!    containerd's loopback rule ([`host_endpoint`]).
//!
//! A host's directory replaces crius' own entries for that host rather than
//! merging with them (containerd refuses `mirrors` beside `config_path`
//! altogether; crius keeps both so that a config can move host by host).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::Client;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::Deserialize;

use super::reference::DEFAULT_REGISTRY;
use crate::config::RegistryConfig;

const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";
/// A registry host's directory under `config_path` holding only
/// certificates (Docker's certs.d layout) or a `hosts.toml`.
const HOSTS_FILE: &str = "hosts.toml";
/// The directory for every registry host without one of its own.
const DEFAULT_DIR: &str = "_default";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// What an endpoint may be asked for (hosts.toml `capabilities`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Content by digest: manifests and blobs.
    pub pull: bool,
    /// A tag resolved to a manifest.
    pub resolve: bool,
}

impl Capabilities {
    /// What an endpoint without a `capabilities` key may be asked for
    /// (containerd's default: pull and resolve).
    pub const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
    };

    /// Whether the endpoint may serve a reference: a tag needs `resolve`
    /// and `pull`, a digest `pull` (containerd's resolver.go, `Resolve`).
    pub fn serves(&self, by_digest: bool) -> bool {
        self.pull && (by_digest || self.resolve)
    }
}

/// Which configuration named an endpoint, for error messages that say what
/// to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The registry host itself, from no config or `[registry] insecure`.
    Host,
    /// A `[registry.mirrors]` URL.
    Mirror,
    /// An entry of this `hosts.toml` (or a certs.d directory).
    HostsFile(PathBuf),
}

/// One place to ask for an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]`
    pub host: String,
    pub plain_http: bool,
    /// HTTPS without verifying the server's certificate: hosts.toml
    /// `skip_verify`, or a loopback registry host (containerd's rule).
    pub skip_verify: bool,
    /// A server that answers the TLS handshake in plain HTTP is asked again
    /// over plain HTTP (a loopback host on a port other than 80 or 443).
    pub http_fallback: bool,
    pub origin: Origin,
    pub capabilities: Capabilities,
    /// Trusted besides the system's roots (hosts.toml `ca`, DER).
    pub ca: Vec<CertificateDer<'static>>,
    /// hosts.toml `dial_timeout`; 15 s otherwise.
    pub dial_timeout: Option<Duration>,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.plain_http { "http" } else { "https" };
        write!(f, "{scheme}://{}", self.host)
    }
}

impl Endpoint {
    /// `host[:port]` over HTTPS (or plain HTTP), verified, every
    /// capability, no CA of its own, the default timeouts.
    pub fn new(host: &str, plain_http: bool, origin: Origin) -> Endpoint {
        Endpoint {
            host: host.to_string(),
            plain_http,
            skip_verify: false,
            http_fallback: false,
            origin,
            capabilities: Capabilities::ALL,
            ca: Vec::new(),
            dial_timeout: None,
        }
    }

    /// The same host over plain HTTP, after its HTTPS handshake met a
    /// plain-HTTP server.
    pub fn over_plain_http(&self) -> Endpoint {
        Endpoint {
            plain_http: true,
            http_fallback: false,
            ..self.clone()
        }
    }

    /// Whether the shared clients (system roots, default timeouts) serve it.
    pub fn needs_own_client(&self) -> bool {
        !self.ca.is_empty() || self.dial_timeout.is_some()
    }

    /// What to do when its HTTPS handshake met a plain-HTTP server and no
    /// fallback applies: the config that reaches it.
    pub fn plain_http_hint(&self, registry_host: &str) -> String {
        let speaks = "the server speaks plain HTTP, not HTTPS";
        match &self.origin {
            Origin::Mirror => format!(
                "{speaks}: write this mirror of {registry_host} as http://{} in \
                 [registry.mirrors]",
                self.host
            ),
            Origin::HostsFile(file) => format!(
                "{speaks}: write it as http://{} in {}",
                self.host,
                file.display()
            ),
            Origin::Host => format!(
                "{speaks}: to pull from it over plain HTTP, list \"{registry_host}\" in the \
                 config's [registry] insecure"
            ),
        }
    }

    /// Its HTTP client (see [`http_client`]).
    pub fn client(&self) -> Result<Client, String> {
        http_client(
            self.plain_http,
            self.skip_verify,
            &self.ca,
            self.dial_timeout,
        )
        .map_err(|e| format!("{self}: {e}"))
    }
}

/// An HTTP client for registries: plain HTTP, or HTTPS trusting the
/// system's roots plus `ca` (nothing at all with `skip_verify`), connecting
/// within `dial_timeout` (15 s by default), without a read timeout. A pull's credentials are given
/// per request, and a client keeps the first it sees for a host.
pub fn http_client(
    plain_http: bool,
    skip_verify: bool,
    ca: &[CertificateDer<'static>],
    dial_timeout: Option<Duration>,
) -> Result<Client, String> {
    // reqwest is built without a TLS provider of its own: ring is ours.
    // Installing fails only when one is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let protocol = if plain_http {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    };
    Client::try_from(ClientConfig {
        protocol,
        accept_invalid_certificates: skip_verify && !plain_http,
        extra_root_certificates: ca
            .iter()
            .map(|der| Certificate {
                encoding: CertificateEncoding::Der,
                data: der.to_vec(),
            })
            .collect(),
        connect_timeout: Some(dial_timeout.unwrap_or(CONNECT_TIMEOUT)),
        // No read timeout: a transfer that stalls is the pull's
        // `image_pull_progress_timeout` to cancel (a client's would cut it
        // short, and keep `0` from meaning no limit).
        ..ClientConfig::default()
    })
    .map_err(|e| format!("building the HTTP client: {e}"))
}

/// The endpoints for a registry host, in the order they are tried; an error
/// names the file and key (or the mirror URL) that is wrong.
pub fn endpoints(registry: &RegistryConfig, host: &str) -> Result<Vec<Endpoint>, String> {
    let roots: Vec<PathBuf> = registry
        .config_path
        .as_deref()
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    if let Some(dir) = find_dir(&roots, &host_dirs(host))? {
        return from_hosts_dir(&dir, host);
    }
    let named = registry.mirrors.contains_key(host) || registry.insecure.iter().any(|h| h == host);
    if !named {
        if let Some(dir) = find_dir(&roots, &[DEFAULT_DIR.to_string()])? {
            return from_hosts_dir(&dir, host);
        }
    }
    let mut list = Vec::new();
    for url in registry.mirrors.get(host).into_iter().flatten() {
        let (plain_http, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (false, rest)
        } else {
            return Err(format!(
                "mirror {url:?} of {host} is not an http:// or https:// URL"
            ));
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        // The Registry API lives at /v2 of the host; a mirror under another
        // path prefix cannot be reached through it.
        if !matches!(path.trim_end_matches('/'), "" | "v2") || authority.is_empty() {
            return Err(format!(
                "mirror {url:?} of {host}: only http(s)://host[:port][/v2] is supported"
            ));
        }
        list.push(Endpoint::new(authority, plain_http, Origin::Mirror));
    }
    list.push(host_endpoint(registry, host));
    Ok(list)
}

/// The registry host's own endpoint. Listed in `[registry] insecure`: plain
/// HTTP. Else a loopback host (`localhost`, `127.0.0.0/8`, `::1`) needs no
/// config, as in containerd (core/remotes/docker/config/hosts.go,
/// `ConfigureHosts`, and resolver.go, `IsLocalhost`, `NewHTTPFallback`):
/// port 80 is plain HTTP; no port or 443 is HTTPS; any other port is HTTPS
/// and then plain HTTP when the server answers the handshake in plain HTTP;
/// its certificate is not verified unless it is plain HTTP. Any other host
/// is HTTPS (`docker.io` served by `registry-1.docker.io`).
pub fn host_endpoint(registry: &RegistryConfig, host: &str) -> Endpoint {
    let plain_http = registry.insecure.iter().any(|h| h == host);
    default_endpoint(host, plain_http, Origin::Host)
}

fn default_endpoint(host: &str, plain_http: bool, origin: Origin) -> Endpoint {
    let own = if host == DEFAULT_REGISTRY {
        DOCKER_HUB_ENDPOINT
    } else {
        host
    };
    let mut endpoint = Endpoint::new(own, plain_http, origin);
    if !endpoint.plain_http {
        if let Some(port) = loopback_port(host) {
            match port {
                Some("80") => endpoint.plain_http = true,
                None | Some("443") => endpoint.skip_verify = true,
                Some(_) => {
                    endpoint.skip_verify = true;
                    endpoint.http_fallback = true;
                }
            }
        }
    }
    endpoint
}

/// For a loopback `host[:port]` (`localhost`, an IPv4 address in
/// 127.0.0.0/8, `::1` bare or as `[::1]`), its port if it names one; None
/// for any other host.
fn loopback_port(host: &str) -> Option<Option<&str>> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (name, after) = rest.split_once(']')?;
        match after {
            "" => (name, None),
            _ => (name, Some(after.strip_prefix(':')?)),
        }
    } else if host.parse::<IpAddr>().is_ok() {
        (host, None)
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    loopback.then_some(port)
}

/// The directory names a registry host may have, in containerd's order
/// (`hostPaths`): `host_port_` (a `:` is not allowed in every file
/// system), then `host:port`.
fn host_dirs(host: &str) -> Vec<String> {
    let mut names = Vec::new();
    if let Some((name, port)) = host.rsplit_once(':').filter(|(n, _)| !n.is_empty()) {
        names.push(format!("{name}_{port}_"));
    }
    names.push(host.to_string());
    names
}

/// The first of `names` that is a directory, root by root.
fn find_dir(roots: &[PathBuf], names: &[String]) -> Result<Option<PathBuf>, String> {
    for root in roots {
        for name in names {
            let dir = root.join(name);
            match std::fs::metadata(&dir) {
                Ok(m) if m.is_dir() => return Ok(Some(dir)),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: {e}", dir.display())),
            }
        }
    }
    Ok(None)
}

/// The endpoints a registry host's directory names: its `hosts.toml`, or,
/// without one, Docker's certs.d layout (`*.crt` CA files for the host
/// itself).
fn from_hosts_dir(dir: &Path, host: &str) -> Result<Vec<Endpoint>, String> {
    let file = dir.join(HOSTS_FILE);
    match std::fs::read_to_string(&file) {
        Ok(text) => parse_hosts_file(&file, &text, host),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => from_certs_dir(dir, host),
        Err(e) => Err(format!("{}: {e}", file.display())),
    }
}

fn from_certs_dir(dir: &Path, host: &str) -> Result<Vec<Endpoint>, String> {
    let mut endpoint = default_endpoint(host, false, Origin::HostsFile(dir.to_path_buf()));
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut names = BTreeSet::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        names.insert(entry.path());
    }
    for path in names {
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => endpoint.ca.extend(read_ca(&path)?),
            Some("cert") => {
                return Err(format!(
                    "{}: TLS client certificates are not supported: crius' registry client \
                     (oci-client) cannot present one",
                    path.display()
                ))
            }
            _ => {}
        }
    }
    Ok(vec![endpoint])
}

/// The keys of a `[host."…"]` table and of the file's top level (which
/// describe `server`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostFields {
    capabilities: Option<Vec<String>>,
    ca: Option<OneOrMany>,
    client: Option<toml::Value>,
    skip_verify: Option<bool>,
    header: Option<toml::Table>,
    #[serde(default)]
    override_path: bool,
    dial_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Parses a `hosts.toml`: the `[host."URL"]` entries in the file's order,
/// then `server` (the registry host itself when absent, as containerd's
/// `ConfigureHosts` fills an empty server).
pub fn parse_hosts_file(file: &Path, text: &str, host: &str) -> Result<Vec<Endpoint>, String> {
    let at = |what: &str, e: &dyn std::fmt::Display| format!("{}: {what}{e}", file.display());
    let mut table: toml::Table = toml::from_str(text).map_err(|e| at("", &e))?;
    let server = match table.remove("server") {
        None => None,
        Some(toml::Value::String(s)) => Some(s),
        Some(other) => return Err(at("server: ", &format!("{other} is not a string"))),
    };
    let hosts = match table.remove("host") {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => t,
        Some(other) => return Err(at("host: ", &format!("{other} is not a table"))),
    };
    let origin = Origin::HostsFile(file.to_path_buf());
    let mut list = Vec::new();
    for (url, fields) in hosts {
        let key = format!("[host.{url:?}] ");
        let fields: HostFields = fields.try_into().map_err(|e| at(&key, &e))?;
        let mut endpoint =
            parse_url(&url, fields.override_path, origin.clone()).map_err(|e| at(&key, &e))?;
        apply(&mut endpoint, fields, file).map_err(|e| at(&key, &e))?;
        list.push(endpoint);
    }
    let fields: HostFields = toml::Value::Table(table)
        .try_into()
        .map_err(|e| at("", &e))?;
    let mut endpoint = match server {
        Some(url) => {
            parse_url(&url, fields.override_path, origin).map_err(|e| at("server: ", &e))?
        }
        None => default_endpoint(host, false, origin),
    };
    let loopback_default = endpoint.skip_verify;
    apply(&mut endpoint, fields, file).map_err(|e| at("", &e))?;
    // containerd verifies no certificate of a loopback host it fills in,
    // whatever `skip_verify` says.
    endpoint.skip_verify |= loopback_default;
    list.push(endpoint);
    Ok(list)
}

/// `scheme://host[:port][/path]` (`https://` when no scheme is written);
/// the API root is the path plus `/v2` unless `override_path`, and must be
/// `/v2`: crius' registry client (oci-client) reaches the Registry API
/// there only.
fn parse_url(url: &str, override_path: bool, origin: Origin) -> Result<Endpoint, String> {
    let (plain_http, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (false, rest)
    } else if url.contains("://") {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    } else {
        (false, url)
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    let path = path.trim_end_matches('/');
    let root = if override_path || path.ends_with("/v2") {
        path.to_string()
    } else {
        format!("{path}/v2")
    };
    if root != "/v2" {
        return Err(format!(
            "{url:?}: the API root {root:?} is not supported, only /v2 at the host's root"
        ));
    }
    Ok(Endpoint::new(authority, plain_http, origin))
}

fn apply(endpoint: &mut Endpoint, fields: HostFields, file: &Path) -> Result<(), String> {
    let base = file.parent().unwrap_or(Path::new("/"));
    if let Some(capabilities) = fields.capabilities {
        endpoint.capabilities = Capabilities {
            pull: false,
            resolve: false,
        };
        for c in capabilities {
            match c.to_ascii_lowercase().as_str() {
                "pull" => endpoint.capabilities.pull = true,
                "resolve" => endpoint.capabilities.resolve = true,
                // Valid, but a CRI runtime never pushes.
                "push" => {}
                _ => return Err(format!("capabilities: unknown capability {c:?}")),
            }
        }
    }
    if let Some(skip) = fields.skip_verify {
        endpoint.skip_verify = skip;
    }
    let ca_files = match fields.ca {
        None => Vec::new(),
        Some(OneOrMany::One(f)) => vec![f],
        Some(OneOrMany::Many(fs)) => fs,
    };
    for f in ca_files {
        endpoint.ca.extend(read_ca(&base.join(f))?);
    }
    if fields.client.is_some() {
        return Err(
            "client: TLS client certificates are not supported: crius' registry \
                    client (oci-client) cannot present one"
                .into(),
        );
    }
    if fields.header.is_some() {
        return Err(
            "header: extra request headers are not supported: crius' registry \
                    client (oci-client) cannot send them"
                .into(),
        );
    }
    if let Some(timeout) = fields.dial_timeout {
        endpoint.dial_timeout = Some(
            crate::config::parse_go_duration(&timeout).map_err(|e| format!("dial_timeout: {e}"))?,
        );
    }
    Ok(())
}

/// The PEM certificates of a CA file (a bundle may hold several).
fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("ca {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("ca {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("ca {}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A registry config with `mirrors` (host, endpoint URLs) and `insecure` hosts.
    pub(crate) fn registry(mirrors: &[(&str, &[&str])], insecure: &[&str]) -> RegistryConfig {
        RegistryConfig {
            mirrors: mirrors
                .iter()
                .map(|(h, e)| (h.to_string(), e.iter().map(|s| s.to_string()).collect()))
                .collect::<BTreeMap<_, _>>(),
            insecure: insecure.iter().map(|s| s.to_string()).collect(),
            config_path: None,
        }
    }

    /// A registry host's own endpoint.
    pub(crate) fn ep(host: &str, plain_http: bool) -> Endpoint {
        Endpoint::new(host, plain_http, Origin::Host)
    }

    /// A mirror's endpoint.
    pub(crate) fn mirror(host: &str, plain_http: bool) -> Endpoint {
        Endpoint::new(host, plain_http, Origin::Mirror)
    }

    #[test]
    fn mirrors_first_then_the_host() {
        let r = registry(
            &[(
                "registry.k8s.io",
                &["http://127.0.0.1:5000", "https://mirror.example/v2/"],
            )],
            &["127.0.0.1:5001"],
        );
        assert_eq!(
            endpoints(&r, "registry.k8s.io").unwrap(),
            vec![
                mirror("127.0.0.1:5000", true),
                mirror("mirror.example", false),
                ep("registry.k8s.io", false)
            ]
        );
        assert_eq!(
            endpoints(&r, "127.0.0.1:5001").unwrap(),
            vec![ep("127.0.0.1:5001", true)]
        );
        assert_eq!(
            endpoints(&r, "docker.io").unwrap(),
            vec![ep("registry-1.docker.io", false)]
        );
    }

    #[test]
    fn loopback_hosts_need_no_config() {
        let none = registry(&[], &[]);
        let https_then_http = |host: &str| Endpoint {
            skip_verify: true,
            http_fallback: true,
            ..ep(host, false)
        };
        let https_unverified = |host: &str| Endpoint {
            skip_verify: true,
            ..ep(host, false)
        };
        for host in [
            "127.0.0.1:5000",
            "127.1.2.3:5000",
            "localhost:5000",
            "LocalHost:5000",
            "[::1]:5000",
        ] {
            assert_eq!(host_endpoint(&none, host), https_then_http(host), "{host}");
        }
        for host in ["localhost", "127.0.0.1", "127.0.0.1:443", "[::1]", "::1"] {
            assert_eq!(host_endpoint(&none, host), https_unverified(host), "{host}");
        }
        for host in ["localhost:80", "[::1]:80"] {
            assert_eq!(host_endpoint(&none, host), ep(host, true), "{host}");
        }
        // Not loopback: HTTPS, verified, no fallback.
        for host in [
            "128.0.0.1:5000",
            "10.0.0.1:5000",
            "[::2]:5000",
            "localhost.example:5000",
            "mylocalhost:5000",
            "registry.k8s.io",
        ] {
            assert_eq!(host_endpoint(&none, host), ep(host, false), "{host}");
        }
        // `insecure` wins: plain HTTP only.
        let insecure = registry(&[], &["127.0.0.1:5000"]);
        assert_eq!(
            host_endpoint(&insecure, "127.0.0.1:5000"),
            ep("127.0.0.1:5000", true)
        );
        // A mirror's URL says its scheme, loopback or not.
        let mirrored = registry(&[("registry.k8s.io", &["https://127.0.0.1:5000"])], &[]);
        assert_eq!(
            endpoints(&mirrored, "registry.k8s.io").unwrap()[0],
            mirror("127.0.0.1:5000", false)
        );
    }

    #[test]
    fn mirror_with_a_path_prefix_is_refused() {
        let r = registry(&[("gcr.io", &["https://mirror.example/gcr"])], &[]);
        let err = endpoints(&r, "gcr.io").unwrap_err();
        assert!(err.contains("mirror.example/gcr"), "{err}");
    }

    /// A self-signed CA certificate (openssl, P-256), as a hosts.toml `ca`.
    const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBkTCCATegAwIBAgIUG/EjehaGrXGzg6QUMQD4shwLEH8wCgYIKoZIzj0EAwIw\nHTEbMBkGA1UEAwwSY3JpdXMgdW5pdC10ZXN0IENBMCAXDTI2MTEzMDAwMTEyMVoY\nDzIxMjYxMTA2MDAxMTIxWjAdMRswGQYDVQQDDBJjcml1cyB1bml0LXRlc3QgQ0Ew\nWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAARI6hZuXHGC9oiAazWoDdvc2UYHxKr+\nlPqwb6lCewR3EiVL0Ty/xXpiDKnN3HthGz7utJcUGdaoAL30wgS3xzRRo1MwUTAd\nBgNVHQ4EFgQUmB+V62GRqesodgk5fsCT3HxaaZAwHwYDVR0jBBgwFoAUmB+V62GR\nqesodgk5fsCT3HxaaZAwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBF\nAiEA8+huh/ekx80N5bsZbZCiuGiwz24oRSE94Aj0XPOb/XMCIHn9YZrF69KAdopR\nMEawJHpvvgHWDHE9bDStbUcEtYwp\n-----END CERTIFICATE-----\n";

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    fn ca_der() -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(CA_PEM.as_bytes()).unwrap()
    }

    #[test]
    fn hosts_toml_lists_its_hosts_in_file_order_then_the_server() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "certs/ca.pem", CA_PEM);
        let file = write(
            dir.path(),
            "hosts.toml",
            r#"
            server = "https://registry.example"
            ca = ["certs/ca.pem"]

            [host."https://zeta.mirror:8443/v2"]
              capabilities = ["pull"]
              skip_verify = true
              dial_timeout = "1m30s"

            [host."http://alpha.mirror:5000"]
              capabilities = ["pull", "resolve"]
              ca = "certs/ca.pem"
              override_path = false
            "#,
        );
        let text = std::fs::read_to_string(&file).unwrap();
        let list = parse_hosts_file(&file, &text, "registry.example").unwrap();
        let origin = Origin::HostsFile(file.clone());
        let zeta = Endpoint {
            skip_verify: true,
            capabilities: Capabilities {
                pull: true,
                resolve: false,
            },
            dial_timeout: Some(Duration::from_secs(90)),
            ..Endpoint::new("zeta.mirror:8443", false, origin.clone())
        };
        let alpha = Endpoint {
            ca: vec![ca_der()],
            ..Endpoint::new("alpha.mirror:5000", true, origin.clone())
        };
        let server = Endpoint {
            ca: vec![ca_der()],
            ..Endpoint::new("registry.example", false, origin)
        };
        assert_eq!(list, vec![zeta, alpha, server]);
        // A tag is resolved by alpha and the server only; a digest by all.
        let resolvers: Vec<_> = list
            .iter()
            .filter(|e| e.capabilities.serves(false))
            .collect();
        assert_eq!(resolvers.len(), 2);
        assert!(list.iter().all(|e| e.capabilities.serves(true)));
    }

    #[test]
    fn without_server_the_registry_host_itself_comes_last() {
        let file = Path::new("/etc/crius/certs.d/x/hosts.toml");
        let origin = Origin::HostsFile(file.to_path_buf());
        let text = "[host.\"https://mirror.example\"]\n";
        let list = parse_hosts_file(file, text, "docker.io").unwrap();
        assert_eq!(
            list,
            vec![
                Endpoint::new("mirror.example", false, origin.clone()),
                Endpoint::new("registry-1.docker.io", false, origin.clone()),
            ]
        );
        // A loopback registry keeps containerd's rule, even against an
        // explicit skip_verify = false.
        let list = parse_hosts_file(file, "skip_verify = false", "127.0.0.1:5000").unwrap();
        assert_eq!(
            list,
            vec![Endpoint {
                skip_verify: true,
                http_fallback: true,
                ..Endpoint::new("127.0.0.1:5000", false, origin)
            }]
        );
    }

    #[test]
    fn what_crius_cannot_do_is_refused_naming_the_file_and_key() {
        let file = Path::new("/etc/crius/certs.d/r.example/hosts.toml");
        for (text, names) in [
            (
                "[host.\"https://m.example\"]\nclient = \"c.pem\"",
                &["[host.\"https://m.example\"] client", "client certificates"][..],
            ),
            (
                "[host.\"https://m.example\"]\n[host.\"https://m.example\".header]\nx-a = \"b\"",
                &["header", "headers are not supported"],
            ),
            (
                "server = \"https://m.example/prefix\"",
                &["server: ", "\"/prefix/v2\" is not supported"],
            ),
            (
                "server = \"https://m.example/api\"\noverride_path = true",
                &["server: ", "\"/api\" is not supported"],
            ),
            (
                "capabilities = [\"pull\", \"fetch\"]",
                &["capabilities: unknown capability \"fetch\""],
            ),
            ("skip_verfy = true", &["unknown field `skip_verfy`"]),
            (
                "ca = \"missing.pem\"",
                &["ca /etc/crius/certs.d/r.example/missing.pem"],
            ),
            (
                "dial_timeout = \"5 parsecs\"",
                &["dial_timeout: \"5 parsecs\""],
            ),
            (
                "server = \"ftp://m.example\"",
                &["not an http:// or https:// URL"],
            ),
        ] {
            let err = parse_hosts_file(file, text, "r.example").unwrap_err();
            assert!(err.starts_with(&file.display().to_string()), "{err}");
            for name in names {
                assert!(err.contains(name), "{text}: {err} lacks {name}");
            }
        }
        // The API root written in full is fine, with or without override_path.
        for text in [
            "server = \"https://m.example/v2/\"",
            "server = \"https://m.example/v2\"\noverride_path = true",
            "server = \"m.example\"",
        ] {
            let list = parse_hosts_file(file, text, "r.example").unwrap();
            assert_eq!(list[0].to_string(), "https://m.example", "{text}");
        }
    }

    #[test]
    fn a_hosts_directory_wins_over_mirrors_which_win_over_default() {
        let root = tempfile::tempdir().unwrap();
        write(
            root.path(),
            "127.0.0.1_5000_/hosts.toml",
            "server = \"http://127.0.0.1:5000\"",
        );
        write(
            root.path(),
            "registry.k8s.io/hosts.toml",
            "[host.\"https://k8s.mirror\"]",
        );
        write(
            root.path(),
            "_default/hosts.toml",
            "[host.\"https://default.mirror\"]",
        );
        let mut config = registry(
            &[
                ("registry.k8s.io", &["http://ignored.mirror"]),
                ("quay.io", &["https://quay.mirror"]),
            ],
            &["127.0.0.1:5000"],
        );
        let other = tempfile::tempdir().unwrap();
        config.config_path = Some(format!(
            "{}:{}",
            other.path().display(),
            root.path().display()
        ));
        let hosts = |host: &str| -> Vec<String> {
            endpoints(&config, host)
                .unwrap()
                .iter()
                .map(|e| e.to_string())
                .collect()
        };
        // The `host_port_` directory; `insecure` no longer applies to it.
        assert_eq!(hosts("127.0.0.1:5000"), ["http://127.0.0.1:5000"]);
        assert_eq!(
            hosts("registry.k8s.io"),
            ["https://k8s.mirror", "https://registry.k8s.io"]
        );
        assert_eq!(hosts("quay.io"), ["https://quay.mirror", "https://quay.io"]);
        assert_eq!(
            hosts("ghcr.io"),
            ["https://default.mirror", "https://ghcr.io"]
        );
        // `host:port` is a name too, and the first root holding the host wins.
        write(
            other.path(),
            "ghcr.io/hosts.toml",
            "server = \"https://ghcr.mirror\"",
        );
        assert_eq!(hosts("ghcr.io"), ["https://ghcr.mirror"]);
        write(
            other.path(),
            "localhost:5001/hosts.toml",
            "server = \"https://l.mirror\"",
        );
        assert_eq!(hosts("localhost:5001"), ["https://l.mirror"]);
    }

    #[test]
    fn a_certs_directory_without_hosts_toml_gives_its_ca_to_the_host() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("r.example:5000");
        write(&dir, "ca.crt", CA_PEM);
        write(&dir, "README", "not a certificate");
        let config = RegistryConfig {
            config_path: Some(root.path().display().to_string()),
            ..RegistryConfig::default()
        };
        let list = endpoints(&config, "r.example:5000").unwrap();
        assert_eq!(
            list,
            vec![Endpoint {
                ca: vec![ca_der()],
                ..Endpoint::new("r.example:5000", false, Origin::HostsFile(dir.clone()))
            }]
        );
        list[0].client().expect("a client trusting the CA");
        write(&dir, "client.cert", CA_PEM);
        let err = endpoints(&config, "r.example:5000").unwrap_err();
        assert!(
            err.contains("client.cert") && err.contains("client certificates"),
            "{err}"
        );
    }
}
