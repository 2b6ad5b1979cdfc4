//! Pulling an image from a registry (Registry API v2, through `oci-client`)
//! into the content store: the manifest (an index resolved to this host's
//! platform), the config and the layers, each verified against its digest
//! before it lands, each layer unpacked once under its chain ID.
//!
//! Endpoints: as [`super::hosts`] lists them for the registry host (a
//! `hosts.toml`, the config's mirrors, the host itself), those whose
//! capabilities serve the reference. The first endpoint that has the
//! manifest serves every blob of the image.

use std::collections::HashSet;
use std::path::PathBuf;

use futures_util::{StreamExt, TryStreamExt};
use oci_client::client::LayerDescriptor;
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};
pub use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use serde::Deserialize;

use super::content::{chain_ids, sha256_digest, Content};
use super::hosts::{endpoints, http_client, Endpoint};
use super::reference::{validate_digest, Reference};
use super::store::ImageConfig;
use super::unpack::unpack_layer_blob;
use super::ImageError;
use crate::config::RegistryConfig;

const ACCEPTED_MANIFESTS: &[&str] = &[
    OCI_IMAGE_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];
/// Layers fetched and unpacked at once, per pull.
const CONCURRENT_LAYERS: usize = 3;

/// What a pull brought into the content store.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The digest the reference resolved to: an index's when the tag names
    /// one, as `repo@digest` must name what the registry serves under the tag.
    pub manifest_digest: String,
    pub config_digest: String,
    pub config: ImageConfig,
    /// Lowest first.
    pub chain_ids: Vec<String>,
    /// Compressed layers plus the config, as the registry serves them.
    pub size: u64,
    /// Every blob of the image: manifests, config, layers.
    pub blobs: Vec<String>,
}

pub struct Puller {
    registry: RegistryConfig,
    http: Client,
    https: Client,
    /// HTTPS without certificate verification, for loopback hosts only.
    https_loopback: Client,
}

impl Puller {
    pub fn new(registry: RegistryConfig) -> Result<Puller, String> {
        let shared = |plain_http, skip_verify| http_client(plain_http, skip_verify, &[], None);
        Ok(Puller {
            registry,
            http: shared(true, false)?,
            https: shared(false, false)?,
            https_loopback: shared(false, true)?,
        })
    }

    /// Anonymous pulls share a client (connections, tokens) per kind of
    /// endpoint; pulls with credentials get their own, since a client keeps
    /// the first credentials it sees for a host, and so does an endpoint
    /// with its own CA or timeout (hosts.toml).
    fn client_for(&self, endpoint: &Endpoint, auth: &RegistryAuth) -> Result<Client, String> {
        if !matches!(auth, RegistryAuth::Anonymous) || endpoint.needs_own_client() {
            return endpoint.client();
        }
        Ok(match (endpoint.plain_http, endpoint.skip_verify) {
            (true, _) => self.http.clone(),
            (false, true) => self.https_loopback.clone(),
            (false, false) => self.https.clone(),
        })
    }

    pub async fn pull(
        &self,
        reference: &Reference,
        auth: &RegistryAuth,
        content: &Content,
    ) -> Result<PulledImage, ImageError> {
        let source = self.resolve(reference, auth).await?;
        let mut blobs = vec![source.top_digest.clone()];
        content.write_blob(&source.top_digest, &source.top_bytes)?;

        let manifest_bytes = match parse_manifest(reference, &source.top_bytes)? {
            Manifest::Image(_) => source.top_bytes.clone(),
            Manifest::Index(entries) => {
                let digest = pick_platform(reference, &entries)?;
                let bytes = source.manifest(&digest, auth).await?;
                content.write_blob(&digest, &bytes)?;
                blobs.push(digest);
                bytes
            }
        };
        let Manifest::Image(manifest) = parse_manifest(reference, &manifest_bytes)? else {
            return Err(pull_err(reference, "an image index lists another index"));
        };
        for descriptor in std::iter::once(&manifest.config).chain(&manifest.layers) {
            validate_digest(&descriptor.digest).map_err(|r| pull_err(reference, r))?;
        }

        let config_path = source.fetch_blob(&manifest.config, content).await?;
        let config_bytes = tokio::fs::read(&config_path)
            .await
            .map_err(|e| ImageError::io(format!("reading {}", config_path.display()), e))?;
        let (config, diff_ids) = ImageConfig::from_oci_json(&config_bytes)
            .map_err(|e| pull_err(reference, format!("image config: {e}")))?;
        if diff_ids.len() != manifest.layers.len() {
            return Err(pull_err(
                reference,
                format!(
                    "the manifest has {} layers but the config {} diff IDs",
                    manifest.layers.len(),
                    diff_ids.len()
                ),
            ));
        }
        for diff_id in &diff_ids {
            validate_digest(diff_id).map_err(|r| pull_err(reference, r))?;
        }
        let chain_ids = chain_ids(&diff_ids);

        // Each layer is unpacked into its own dir, so layers need no order.
        // (The futures are made first: a closure inside the stream would not
        // be general enough over lifetimes for a spawned task.)
        let layer_fetches: Vec<_> = manifest
            .layers
            .iter()
            .zip(&diff_ids)
            .zip(&chain_ids)
            .map(|((descriptor, diff_id), chain_id)| {
                source.fetch_layer(descriptor, diff_id, chain_id, content)
            })
            .collect();
        futures_util::stream::iter(layer_fetches)
            .buffer_unordered(CONCURRENT_LAYERS)
            .try_collect::<Vec<()>>()
            .await?;

        blobs.push(manifest.config.digest.clone());
        blobs.extend(manifest.layers.iter().map(|l| l.digest.clone()));
        let size = manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>();
        Ok(PulledImage {
            manifest_digest: source.top_digest,
            config_digest: manifest.config.digest,
            config,
            chain_ids,
            size,
            blobs: dedup(blobs),
        })
    }

    /// Asks each endpoint in turn for the manifest the reference names.
    async fn resolve<'r>(
        &self,
        reference: &'r Reference,
        auth: &RegistryAuth,
    ) -> Result<Source<'r>, ImageError> {
        let registry = reference.registry();
        let by_digest = reference.digest().is_some();
        let endpoints: Vec<Endpoint> = endpoints(&self.registry, registry)
            .map_err(|e| pull_err(reference, e))?
            .into_iter()
            .filter(|e| e.capabilities.serves(by_digest))
            .collect();
        if endpoints.is_empty() {
            let needs = if by_digest {
                "pull"
            } else {
                "pull and resolve"
            };
            return Err(pull_err(
                reference,
                format!("no endpoint of {registry} has the capabilities {needs} (hosts.toml)"),
            ));
        }
        let mut failures = Vec::new();
        let mut all_not_found = true;
        let mut unauthorized = false;
        for endpoint in endpoints {
            match self.ask_manifest(endpoint, reference, auth).await {
                Ok((endpoint, client, bytes)) => {
                    let top_digest = sha256_digest(&bytes);
                    if let Some(wanted) = reference.digest() {
                        if wanted != top_digest {
                            return Err(ImageError::DigestMismatch {
                                what: format!("manifest of {reference} from {endpoint}"),
                                expected: wanted.to_string(),
                                actual: top_digest,
                            });
                        }
                    }
                    tracing::debug!(%reference, %endpoint, digest = %top_digest, "resolved");
                    return Ok(Source {
                        reference,
                        endpoint,
                        client,
                        top_digest,
                        top_bytes: bytes,
                    });
                }
                Err(failure) => {
                    all_not_found &= failure.not_found;
                    unauthorized |= failure.unauthorized;
                    failures.push(failure.message);
                }
            }
        }
        let detail = failures.join("; ");
        Err(if all_not_found {
            ImageError::NotFound {
                reference: reference.to_string(),
                detail,
            }
        } else if unauthorized {
            ImageError::Unauthenticated {
                reference: reference.to_string(),
                registry: registry.to_string(),
                detail,
            }
        } else {
            pull_err(reference, detail)
        })
    }
}

/// Why one endpoint did not serve the manifest.
#[derive(Debug)]
struct EndpointFailure {
    /// `scheme://host: what went wrong`
    message: String,
    /// The registry answered that it has no such manifest or repository.
    not_found: bool,
    /// The registry refused the pull's credentials (or their absence).
    unauthorized: bool,
}

impl EndpointFailure {
    fn other(message: String) -> EndpointFailure {
        EndpointFailure {
            message,
            not_found: false,
            unauthorized: false,
        }
    }
}

impl Puller {
    /// Asks one endpoint for the manifest the reference names (over plain
    /// HTTP again when its HTTPS handshake met a plain-HTTP server and the
    /// endpoint allows the fallback): the endpoint that answered, its client
    /// and the manifest's bytes.
    async fn ask_manifest(
        &self,
        endpoint: Endpoint,
        reference: &Reference,
        auth: &RegistryAuth,
    ) -> Result<(Endpoint, Client, Vec<u8>), EndpointFailure> {
        let ask = |endpoint: &Endpoint, client: Client| {
            let oci_ref = oci_reference(endpoint, reference, None);
            async move {
                client
                    .pull_manifest_raw(&oci_ref, auth, ACCEPTED_MANIFESTS)
                    .await
                    .map(|(bytes, _)| bytes.to_vec())
            }
        };
        let mut endpoint = endpoint;
        let mut client = self
            .client_for(&endpoint, auth)
            .map_err(EndpointFailure::other)?;
        let mut answer = ask(&endpoint, client.clone()).await;
        if answer.as_ref().is_err_and(speaks_plain_http) {
            if !endpoint.http_fallback {
                return Err(EndpointFailure::other(format!(
                    "{endpoint}: {}",
                    endpoint.plain_http_hint(reference.registry())
                )));
            }
            tracing::info!(%reference, %endpoint, "the registry speaks plain HTTP: asking over HTTP");
            endpoint = endpoint.over_plain_http();
            client = self
                .client_for(&endpoint, auth)
                .map_err(EndpointFailure::other)?;
            answer = ask(&endpoint, client.clone()).await;
        }
        match answer {
            Ok(bytes) => Ok((endpoint, client, bytes)),
            Err(e) => Err(EndpointFailure {
                message: format!("{endpoint}: {}", error_chain(&e)),
                not_found: is_not_found(&e),
                unauthorized: is_unauthorized(&e),
            }),
        }
    }
}

/// True when a request failed because the server answered the TLS handshake
/// in plain HTTP: rustls reads `HTTP/…` as a record of an invalid content
/// type (containerd's `isTLSError` looks for the same `HTTP/` header). The
/// rustls error sits inside an `io::Error`, whose `source()` skips it.
fn speaks_plain_http(e: &OciDistributionError) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = next {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            if matches!(
                tls,
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
            ) {
                return true;
            }
        }
        next = match error.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => error.source(),
        };
    }
    false
}

fn oci_reference(
    endpoint: &Endpoint,
    reference: &Reference,
    digest: Option<&str>,
) -> oci_client::Reference {
    let host = endpoint.host.clone();
    let repository = reference.repository().to_string();
    match (digest.or(reference.digest()), reference.tag()) {
        (Some(digest), _) => oci_client::Reference::with_digest(host, repository, digest.into()),
        (None, Some(tag)) => oci_client::Reference::with_tag(host, repository, tag.into()),
        (None, None) => unreachable!("a parsed reference has a tag or a digest"),
    }
}

/// The endpoint that resolved the reference, which then serves its blobs.
struct Source<'r> {
    reference: &'r Reference,
    endpoint: Endpoint,
    client: Client,
    top_digest: String,
    top_bytes: Vec<u8>,
}

impl Source<'_> {
    fn blob_ref(&self) -> oci_client::Reference {
        oci_reference(&self.endpoint, self.reference, Some(&self.top_digest))
    }

    async fn manifest(&self, digest: &str, auth: &RegistryAuth) -> Result<Vec<u8>, ImageError> {
        let oci_ref = oci_reference(&self.endpoint, self.reference, Some(digest));
        let (bytes, _) = self
            .client
            .pull_manifest_raw(&oci_ref, auth, ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| self.fail(format!("manifest {digest}"), &e))?;
        Ok(bytes.to_vec())
    }

    /// The blob's path in the content store, downloading it when absent.
    /// oci-client checks the bytes against the digest as they stream in; the
    /// file is renamed into place only when they match.
    async fn fetch_blob(
        &self,
        descriptor: &Descriptor,
        content: &Content,
    ) -> Result<PathBuf, ImageError> {
        let digest = &descriptor.digest;
        let _guard = content.lock(digest).await;
        let path = content.blob_path(digest);
        if path.exists() {
            return Ok(path);
        }
        let tmp = content.temp_path(digest);
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| ImageError::io(format!("creating {}", tmp.display()), e))?;
        let layer = LayerDescriptor {
            digest,
            urls: &descriptor.urls,
        };
        let started = std::time::Instant::now();
        if let Err(e) = self.client.pull_blob(&self.blob_ref(), &layer, file).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(self.fail(format!("blob {digest}"), &e));
        }
        tracing::debug!(%digest, size = descriptor.size, elapsed = ?started.elapsed(), "blob fetched");
        content.commit(&tmp, &path)?;
        Ok(path)
    }

    /// Makes sure the layer with this chain ID is unpacked.
    async fn fetch_layer(
        &self,
        descriptor: &Descriptor,
        diff_id: &str,
        chain_id: &str,
        content: &Content,
    ) -> Result<(), ImageError> {
        let _guard = content.lock(chain_id).await;
        let layer_dir = content.layer_path(chain_id);
        if layer_dir.exists() {
            return Ok(());
        }
        let blob = self.fetch_blob(descriptor, content).await?;
        let tmp = content.temp_path(chain_id);
        let unpack_into = tmp.clone();
        let layer_digest = descriptor.digest.clone();
        let started = std::time::Instant::now();
        let unpacked = tokio::task::spawn_blocking(move || {
            std::fs::create_dir(&unpack_into)
                .map_err(|e| ImageError::io(format!("creating {}", unpack_into.display()), e))?;
            unpack_layer_blob(&blob, &unpack_into).map_err(|source| ImageError::Unpack {
                digest: layer_digest,
                source,
            })
        })
        .await
        .map_err(|e| ImageError::io("unpacking a layer", std::io::Error::other(e)))?;
        let result = match unpacked {
            Ok(actual) if actual == diff_id => content.commit(&tmp, &layer_dir),
            Ok(actual) => Err(ImageError::DigestMismatch {
                what: format!("uncompressed layer {}", descriptor.digest),
                expected: diff_id.to_string(),
                actual,
            }),
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = tokio::fs::remove_dir_all(&tmp).await;
        } else {
            tracing::debug!(layer = %descriptor.digest, %chain_id, elapsed = ?started.elapsed(), "layer unpacked");
        }
        result
    }

    fn fail(&self, what: String, e: &OciDistributionError) -> ImageError {
        pull_err(
            self.reference,
            format!("{what} from {}: {}", self.endpoint, error_chain(e)),
        )
    }
}

fn pull_err(reference: &Reference, detail: impl Into<String>) -> ImageError {
    ImageError::Pull {
        reference: reference.to_string(),
        detail: detail.into(),
    }
}

fn is_not_found(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().all(|e| {
            matches!(
                e.code,
                OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::NotFound
            )
        }),
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        _ => false,
    }
}

/// The registry refused the request's credentials or wants some (HTTP 401,
/// or 403 / DENIED for credentials that may not pull).
fn is_unauthorized(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => true,
        OciDistributionError::RegistryError { envelope, .. } => {
            !envelope.errors.is_empty()
                && envelope
                    .errors
                    .iter()
                    .all(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied))
        }
        OciDistributionError::ServerError { code, .. } => matches!(*code, 401 | 403),
        _ => false,
    }
}

/// reqwest's own message hides the cause ("error sending request"): add it.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

fn dedup(items: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    items
        .into_iter()
        .filter(|i| seen.insert(i.clone()))
        .collect()
}

#[derive(Debug, Deserialize)]
struct Descriptor {
    digest: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    urls: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct ImageManifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct IndexEntry {
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

enum Manifest {
    Image(ImageManifest),
    Index(Vec<IndexEntry>),
}

fn parse_manifest(reference: &Reference, bytes: &[u8]) -> Result<Manifest, ImageError> {
    #[derive(Deserialize)]
    struct Either {
        #[serde(default)]
        manifests: Option<Vec<IndexEntry>>,
    }
    let bad = |e: serde_json::Error| pull_err(reference, format!("manifest: {e}"));
    let either: Either = serde_json::from_slice(bytes).map_err(bad)?;
    match either.manifests {
        Some(entries) => Ok(Manifest::Index(entries)),
        None => Ok(Manifest::Image(serde_json::from_slice(bytes).map_err(bad)?)),
    }
}

/// The index entry for linux on this host's architecture (GOARCH names).
fn pick_platform(reference: &Reference, entries: &[IndexEntry]) -> Result<String, ImageError> {
    let arch = host_arch();
    let entry = entries
        .iter()
        .find(|e| {
            e.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .ok_or_else(|| {
            let offered: Vec<String> = entries
                .iter()
                .filter_map(|e| e.platform.as_ref())
                .map(|p| format!("{}/{}", p.os, p.architecture))
                .collect();
            pull_err(
                reference,
                format!("no linux/{arch} image in the index (it has {offered:?})"),
            )
        })?;
    validate_digest(&entry.digest).map_err(|r| pull_err(reference, r))?;
    Ok(entry.digest.clone())
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::image::hosts::Origin;

    fn registry(mirrors: &[(&str, &[&str])], insecure: &[&str]) -> RegistryConfig {
        RegistryConfig {
            mirrors: mirrors
                .iter()
                .map(|(h, e)| (h.to_string(), e.iter().map(|s| s.to_string()).collect()))
                .collect::<BTreeMap<_, _>>(),
            insecure: insecure.iter().map(|s| s.to_string()).collect(),
            config_path: None,
        }
    }

    fn ep(host: &str, plain_http: bool) -> Endpoint {
        Endpoint::new(host, plain_http, Origin::Host)
    }

    fn mirror(host: &str, plain_http: bool) -> Endpoint {
        Endpoint::new(host, plain_http, Origin::Mirror)
    }

    /// A registry that speaks only plain HTTP on a loopback port: `/v2/`
    /// answers 200, every manifest 404 MANIFEST_UNKNOWN, anything that is
    /// not an HTTP request (a TLS ClientHello) 400, as Go's net/http does.
    async fn plain_http_registry() -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0; 8192];
                    let n = conn.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]);
                    let (status, body) = match head.split(' ').nth(1) {
                        _ if !head.starts_with("GET ") => ("400 Bad Request", String::new()),
                        Some("/v2/") => ("200 OK", "{}".to_string()),
                        _ => (
                            "404 Not Found",
                            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
                                .to_string(),
                        ),
                    };
                    let reply = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(reply.as_bytes()).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_loopback_registry_over_plain_http_is_reached_without_config() {
        let addr = plain_http_registry().await;
        let puller = Puller::new(registry(&[], &[])).unwrap();
        let reference = Reference::parse(&format!("{addr}/crius/absent:1")).unwrap();
        let err = puller
            .resolve(&reference, &RegistryAuth::Anonymous)
            .await
            .err()
            .expect("no such manifest");
        // The plain-HTTP endpoint answered: the registry's own NotFound.
        let ImageError::NotFound { detail, .. } = &err else {
            panic!("{err}");
        };
        assert!(
            detail.starts_with(&format!("http://{addr}: ")) && detail.contains("manifest unknown"),
            "{detail}"
        );
    }

    #[tokio::test]
    async fn https_meeting_plain_http_names_the_config_that_reaches_it() {
        let addr = plain_http_registry().await;
        let puller = Puller::new(registry(&[], &[])).unwrap();
        let reference = Reference::parse(&format!("{addr}/crius/busybox:1")).unwrap();
        // A host that is not loopback (its name stands for one here: only
        // loopback is reachable in a test) and a mirror, both over HTTPS.
        for (endpoint, config) in [
            (
                ep(&addr, false),
                format!("list \"{addr}\" in the config's [registry] insecure"),
            ),
            (
                mirror(&addr, false),
                format!("as http://{addr} in [registry.mirrors]"),
            ),
        ] {
            let failure = puller
                .ask_manifest(endpoint, &reference, &RegistryAuth::Anonymous)
                .await
                .err()
                .expect("TLS against plain HTTP fails");
            assert!(!failure.not_found);
            assert!(
                failure
                    .message
                    .starts_with(&format!("https://{addr}: the server speaks plain HTTP"))
                    && failure.message.contains(&config),
                "{}",
                failure.message
            );
        }
    }

    #[test]
    fn index_resolves_to_this_platform() {
        let reference = Reference::parse("busybox").unwrap();
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[
                {{"digest":"{}","platform":{{"os":"windows","architecture":"{arch}"}}}},
                {{"digest":"{}","platform":{{"os":"linux","architecture":"{arch}"}}}},
                {{"digest":"{}","platform":{{"os":"linux","architecture":"s390x"}}}}]}}"#,
            d('a'),
            d('b'),
            d('c'),
            arch = host_arch()
        );
        let Manifest::Index(entries) = parse_manifest(&reference, index.as_bytes()).unwrap() else {
            panic!("an index");
        };
        assert_eq!(pick_platform(&reference, &entries).unwrap(), d('b'));
        let err = pick_platform(&reference, &entries[2..])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("linux/s390x") && err.contains("busybox"),
            "{err}"
        );
    }

    #[test]
    fn image_manifest_parses() {
        let reference = Reference::parse("busybox").unwrap();
        let m = br#"{"schemaVersion":2,"config":{"digest":"sha256:c","size":10},
            "layers":[{"digest":"sha256:l","size":5,"mediaType":"x"}]}"#;
        let Manifest::Image(m) = parse_manifest(&reference, m).unwrap() else {
            panic!("an image manifest");
        };
        assert_eq!(m.config.size, 10);
        assert_eq!(m.layers[0].digest, "sha256:l");
    }
}
