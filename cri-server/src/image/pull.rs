//! Pulling an image from a registry (Registry API v2, through `oci-client`)
//! into the content store: the manifest (an index resolved to this host's
//! platform), the config and the layers, each verified against its digest
//! before it lands, each layer unpacked once under its chain ID.
//!
//! Layers are downloaded `max_concurrent_downloads` at a time and unpacked
//! as their bytes arrive: the HTTP body feeds a blocking thread that
//! decompresses and untars it into `tmp/`, while the compressed bytes are
//! hashed; the layer moves in place only when the blob's digest and the
//! tar's (the diff ID) both match. The compressed blob is not kept (as
//! containerd's `discard_unpacked_layers`). A layer already unpacked (by
//! chain ID) is not downloaded again, and a pull that needs a layer another
//! pull is bringing in waits for it. A layer that receives no byte for
//! `image_pull_progress_timeout` fails the pull; the first failing layer
//! stops the others, and each removes its half-unpacked dir before the
//! pull returns.
//!
//! Endpoints: as [`super::hosts`] lists them for the registry host (a
//! `hosts.toml`, the config's mirrors, the host itself), those whose
//! capabilities serve the reference. The first endpoint that has the
//! manifest serves every blob of the image.

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use oci_client::client::LayerDescriptor;
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};
pub use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::content::{chain_ids, sha256_digest, Content};
use super::hosts::{endpoints, http_client, Endpoint};
use super::reference::{validate_digest, Reference};
use super::store::ImageConfig;
use super::ImageError;
use crate::config::{ImagePullConfig, RegistryConfig};

const ACCEPTED_MANIFESTS: &[&str] = &[
    OCI_IMAGE_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];
/// How often a layer's progress is logged while it downloads.
const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Chunks of a layer's body (a few KiB to 64 KiB each) buffered between the
/// download and the unpacking thread.
const FEED_DEPTH: usize = 64;

/// How a pull transfers layers: the config's `[image]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullOptions {
    /// Layers downloaded and unpacked at once; at least 1.
    pub max_concurrent_downloads: usize,
    /// How long a layer may receive no byte (and a manifest or config take
    /// to arrive whole) before the pull is cancelled; None: no limit.
    pub progress_timeout: Option<Duration>,
}

impl From<&ImagePullConfig> for PullOptions {
    fn from(c: &ImagePullConfig) -> PullOptions {
        PullOptions {
            max_concurrent_downloads: c.max_concurrent_downloads.max(1),
            progress_timeout: (!c.image_pull_progress_timeout.is_zero())
                .then_some(c.image_pull_progress_timeout),
        }
    }
}

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
    /// Every blob of the image kept in the content store: manifests and
    /// config (layers are kept unpacked only).
    pub blobs: Vec<String>,
}

/// Pulls images from the endpoints [`super::hosts`] lists for a registry
/// host, sharing one HTTP client per kind of endpoint across pulls.
pub struct Puller {
    registry: RegistryConfig,
    http: Client,
    https: Client,
    /// HTTPS without certificate verification, for loopback hosts only.
    https_loopback: Client,
}

impl Puller {
    /// A puller for `registry`'s hosts. Errors: an HTTP client that cannot
    /// be built (the TLS provider), as its message.
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

    /// Pulls the image `reference` names into `content`. Errors: NotFound
    /// when no endpoint has it; Pull for a transfer that failed or made no
    /// progress for `options.progress_timeout`, a bad manifest or config;
    /// DigestMismatch, Unpack, Io for content that does not land.
    pub async fn pull(
        &self,
        reference: &Reference,
        auth: &RegistryAuth,
        content: &Content,
        options: &PullOptions,
    ) -> Result<PulledImage, ImageError> {
        let limit = options.progress_timeout;
        let source = within(limit, self.resolve(reference, auth))
            .await
            .unwrap_or_else(|| Err(stalled(reference, "the manifest", limit)))?;
        let mut blobs = vec![source.top_digest.clone()];
        content.write_blob(&source.top_digest, &source.top_bytes)?;

        let manifest_bytes = match parse_manifest(reference, &source.top_bytes)? {
            Manifest::Image(_) => source.top_bytes.clone(),
            Manifest::Index(entries) => {
                let digest = pick_platform(reference, &entries)?;
                let bytes = within(limit, source.manifest(&digest, auth))
                    .await
                    .unwrap_or_else(|| {
                        Err(stalled(reference, &format!("manifest {digest}"), limit))
                    })?;
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

        let config_bytes = within(limit, source.config_blob(&manifest.config))
            .await
            .unwrap_or_else(|| {
                let what = format!("config {}", manifest.config.digest);
                Err(stalled(reference, &what, limit))
            })?;
        content.write_blob(&manifest.config.digest, &config_bytes)?;
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
        let cancel = CancellationToken::new();
        let layer_fetches: Vec<_> = manifest
            .layers
            .iter()
            .zip(&diff_ids)
            .zip(&chain_ids)
            .map(|((descriptor, diff_id), chain_id)| {
                let layer = LayerJob {
                    digest: &descriptor.digest,
                    size: descriptor.size,
                    diff_id,
                    chain_id,
                };
                source.fetch_layer(descriptor, layer, content, options, &cancel)
            })
            .collect();
        // Every layer's future runs to its end (the others cancelled after
        // the first error), so that none leaves a half-unpacked dir behind
        // when the pull returns.
        let mut results = futures_util::stream::iter(layer_fetches)
            .buffer_unordered(options.max_concurrent_downloads.max(1));
        let mut first_error = None;
        while let Some(result) = results.next().await {
            if let Err(e) = result {
                cancel.cancel();
                first_error.get_or_insert(e);
            }
        }
        drop(results);
        if let Some(e) = first_error {
            return Err(e);
        }

        blobs.push(manifest.config.digest.clone());
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

    /// The image config's bytes (small: read whole), checked against its
    /// digest by oci-client as they arrive.
    async fn config_blob(&self, descriptor: &Descriptor) -> Result<Vec<u8>, ImageError> {
        let blob = LayerDescriptor {
            digest: &descriptor.digest,
            urls: &descriptor.urls,
        };
        let mut bytes = Vec::new();
        self.client
            .pull_blob(&self.blob_ref(), &blob, &mut bytes)
            .await
            .map_err(|e| self.fail(format!("config {}", descriptor.digest), &e))?;
        Ok(bytes)
    }

    /// Makes sure the layer with this chain ID is unpacked: present, it is
    /// skipped; being brought in by another pull, this waits for it (and
    /// then finds it, or tries itself when that pull failed).
    async fn fetch_layer(
        &self,
        descriptor: &Descriptor,
        layer: LayerJob<'_>,
        content: &Content,
        options: &PullOptions,
        cancel: &CancellationToken,
    ) -> Result<(), ImageError> {
        let _guard = tokio::select! {
            guard = content.lock(layer.chain_id) => guard,
            () = cancel.cancelled() => return Err(cancelled(self.reference)),
        };
        if cancel.is_cancelled() {
            return Err(cancelled(self.reference));
        }
        if content.layer_path(layer.chain_id).exists() {
            tracing::debug!(reference = %self.reference, layer = %layer.digest, "layer present");
            return Ok(());
        }
        let blob = LayerDescriptor {
            digest: layer.digest,
            urls: &descriptor.urls,
        };
        let limit = options.progress_timeout;
        let started = Instant::now();
        let body = match within(limit, self.client.pull_blob_stream(&self.blob_ref(), &blob)).await
        {
            Some(body) => body.map_err(|e| self.fail(format!("layer {}", layer.digest), &e))?,
            None => {
                let what = format!(
                    "layer {} (0 of {} bytes received)",
                    layer.digest, layer.size
                );
                return Err(stalled(self.reference, &what, limit));
            }
        };
        stream_layer(self.reference, body, &layer, content, options, cancel).await?;
        tracing::debug!(reference = %self.reference, layer = %layer.digest, chain_id = %layer.chain_id,
            elapsed = ?started.elapsed(), "layer pulled and unpacked");
        Ok(())
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

/// `fut`'s output, or None when `limit` passed first.
async fn within<F: Future>(limit: Option<Duration>, fut: F) -> Option<F::Output> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, fut).await.ok(),
        None => Some(fut.await),
    }
}

/// `what` got no byte for `limit` (only a limit passes).
fn stalled(reference: &Reference, what: &str, limit: Option<Duration>) -> ImageError {
    let limit = limit.unwrap_or_default();
    pull_err(
        reference,
        format!(
            "{what} made no progress for {limit:?} (image_pull_progress_timeout): pull cancelled"
        ),
    )
}

/// What a layer still waiting or running returns once another has failed
/// the pull (never what the pull returns: the first error is).
fn cancelled(reference: &Reference) -> ImageError {
    pull_err(reference, "cancelled: another layer failed")
}

/// One layer of a pull.
#[derive(Debug, Clone, Copy)]
struct LayerJob<'a> {
    /// The compressed blob's digest, as the manifest lists it.
    digest: &'a str,
    /// The blob's size in bytes from the manifest; 0 when it gives none.
    size: u64,
    diff_id: &'a str,
    chain_id: &'a str,
}

/// What the download hands the unpacking thread.
enum Feed {
    Data(Bytes),
    /// The whole blob arrived and its digest matched.
    End,
}

/// The unpacking thread's side of the feed: the body's bytes as they
/// arrive. A feed that closes without [`Feed::End`] (the download failed or
/// was cancelled) is a read error, so that nothing is moved in place.
struct FeedReader {
    feed: mpsc::Receiver<Feed>,
    chunk: Bytes,
    ended: bool,
}

impl io::Read for FeedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.chunk.is_empty() {
                let n = buf.len().min(self.chunk.len());
                buf[..n].copy_from_slice(&self.chunk[..n]);
                self.chunk.advance(n);
                return Ok(n);
            }
            if self.ended {
                return Ok(0);
            }
            match self.feed.blocking_recv() {
                Some(Feed::Data(chunk)) => self.chunk = chunk,
                Some(Feed::End) => self.ended = true,
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the layer's download stopped",
                    ))
                }
            }
        }
    }
}

/// Why the download side of a layer stopped.
enum FeedError {
    /// The unpacking thread stopped reading: its error says why.
    Unpacker,
    Failed(ImageError),
}

/// Downloads one layer's body (`chunks`) while a blocking thread unpacks
/// it into the content store; returns once the layer is in place, or, on
/// error, once its half-unpacked dir is gone. The compressed bytes must
/// hash to `layer.digest` and not exceed `layer.size`; a body that yields
/// nothing for `options.progress_timeout` fails with an error naming the
/// layer, the timeout and the bytes received. The download stops early
/// when `cancel` fires.
async fn stream_layer<S>(
    reference: &Reference,
    chunks: S,
    layer: &LayerJob<'_>,
    content: &Content,
    options: &PullOptions,
    cancel: &CancellationToken,
) -> Result<(), ImageError>
where
    S: Stream<Item = io::Result<Bytes>> + Unpin,
{
    let (feed, received) = mpsc::channel(FEED_DEPTH);
    let unpacker = content.layer_unpacker(layer.chain_id);
    let (digest, diff_id) = (layer.digest.to_string(), layer.diff_id.to_string());
    let unpacking = tokio::task::spawn_blocking(move || {
        let reader = FeedReader {
            feed: received,
            chunk: Bytes::new(),
            ended: false,
        };
        unpacker.run(reader, &digest, &diff_id)
    });
    // `feed` is moved in and dropped when the download ends, which the
    // unpacking thread sees: it is awaited only after.
    let fed = download(reference, chunks, feed, layer, options, cancel).await;
    let unpacked = unpacking
        .await
        .map_err(|e| ImageError::io("unpacking a layer", io::Error::other(e)))?;
    match fed {
        Ok(()) | Err(FeedError::Unpacker) => unpacked,
        Err(FeedError::Failed(e)) => Err(e),
    }
}

/// The download side of [`stream_layer`].
async fn download<S>(
    reference: &Reference,
    mut chunks: S,
    feed: mpsc::Sender<Feed>,
    layer: &LayerJob<'_>,
    options: &PullOptions,
    cancel: &CancellationToken,
) -> Result<(), FeedError>
where
    S: Stream<Item = io::Result<Bytes>> + Unpin,
{
    let failed = |detail: String| {
        FeedError::Failed(pull_err(
            reference,
            format!("layer {}: {detail}", layer.digest),
        ))
    };
    let mut hasher = Sha256::new();
    let mut done: u64 = 0;
    let mut logged = Instant::now();
    loop {
        let next = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(FeedError::Failed(cancelled(reference))),
            next = within(options.progress_timeout, chunks.next()) => next,
        };
        let chunk = match next {
            None => {
                let what = format!(
                    "layer {} ({done} of {} bytes received)",
                    layer.digest, layer.size
                );
                return Err(FeedError::Failed(stalled(
                    reference,
                    &what,
                    options.progress_timeout,
                )));
            }
            Some(None) => break,
            Some(Some(Ok(chunk))) => chunk,
            Some(Some(Err(e))) => {
                return Err(match digest_mismatch(&e) {
                    Some((expected, actual)) => FeedError::Failed(ImageError::DigestMismatch {
                        what: format!("layer of {reference}"),
                        expected,
                        actual,
                    }),
                    None => failed(error_chain(&e)),
                })
            }
        };
        done += chunk.len() as u64;
        if layer.size > 0 && done > layer.size {
            return Err(failed(format!(
                "the registry sent more than the manifest's {} bytes",
                layer.size
            )));
        }
        hasher.update(&chunk);
        if feed.send(Feed::Data(chunk)).await.is_err() {
            return Err(FeedError::Unpacker);
        }
        if logged.elapsed() >= PROGRESS_LOG_INTERVAL {
            logged = Instant::now();
            tracing::info!(%reference, layer = %layer.digest, done, total = layer.size, "pulling layer");
        }
    }
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != layer.digest {
        return Err(FeedError::Failed(ImageError::DigestMismatch {
            what: format!("layer of {reference}"),
            expected: layer.digest.to_string(),
            actual,
        }));
    }
    feed.send(Feed::End).await.map_err(|_| FeedError::Unpacker)
}

/// oci-client's own check of a blob's digest, failed: expected and actual.
fn digest_mismatch(e: &io::Error) -> Option<(String, String)> {
    match e.get_ref()?.downcast_ref::<DigestError>()? {
        DigestError::VerificationError { expected, actual } => {
            Some((expected.clone(), actual.clone()))
        }
        _ => None,
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
    use super::*;
    use crate::image::hosts::tests::{ep, mirror, registry};

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

    /// A gzip layer holding `file` with `text`: the blob, its digest and
    /// its diff ID.
    fn gzip_layer(text: &[u8]) -> (Vec<u8>, String, String) {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_path("file").unwrap();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        tar.append(&header, text).unwrap();
        let tar = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let blob = gz.finish().unwrap();
        let digest = sha256_digest(&blob);
        (blob, digest, sha256_digest(&tar))
    }

    /// The blob as a body of 1 KiB chunks.
    fn chunks(blob: &[u8]) -> Vec<io::Result<Bytes>> {
        blob.chunks(1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect()
    }

    fn is_root() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        eprintln!("skipping: unpacking layers needs root (chown)");
        false
    }

    /// Streams `body` as the layer `(digest, size, diff_id)` into a fresh
    /// content store: the result and what the store holds after (layer
    /// dirs, tmp entries).
    async fn stream(
        body: impl Stream<Item = io::Result<Bytes>> + Unpin,
        digest: &str,
        size: u64,
        diff_id: &str,
        options: PullOptions,
        cancel: &CancellationToken,
    ) -> (Result<(), ImageError>, Vec<String>, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let content = Content::open(dir.path()).unwrap();
        let reference = Reference::parse("127.0.0.1:5000/crius/layered:1").unwrap();
        let layer = LayerJob {
            digest,
            size,
            diff_id,
            chain_id: diff_id,
        };
        let result = stream_layer(&reference, body, &layer, &content, &options, cancel).await;
        let names = |sub: &str| -> Vec<String> {
            std::fs::read_dir(dir.path().join(sub))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        };
        if result.is_ok() {
            let unpacked = content.layer_path(diff_id).join("file");
            assert!(unpacked.is_file(), "{}", unpacked.display());
        }
        (result, names("layers"), names("tmp"))
    }

    const OPTIONS: PullOptions = PullOptions {
        max_concurrent_downloads: 3,
        progress_timeout: Some(Duration::from_millis(300)),
    };

    #[tokio::test]
    async fn a_layer_is_unpacked_as_it_streams_in() {
        if !is_root() {
            return;
        }
        let (blob, digest, diff_id) = gzip_layer(&[7; 50_000]);
        let body = futures_util::stream::iter(chunks(&blob));
        let never = CancellationToken::new();
        let (result, layers, tmp) =
            stream(body, &digest, blob.len() as u64, &diff_id, OPTIONS, &never).await;
        result.unwrap();
        assert_eq!(layers, [diff_id.trim_start_matches("sha256:")]);
        assert!(tmp.is_empty(), "{tmp:?}");
    }

    #[tokio::test]
    async fn a_corrupted_layer_is_refused_and_nothing_stays() {
        if !is_root() {
            return;
        }
        let (blob, digest, diff_id) = gzip_layer(b"original");
        let (other, _, _) = gzip_layer(b"tampered");
        let never = CancellationToken::new();
        // The blob differs from its digest; the blob is right but its tar
        // is not the config's diff ID.
        let wrong_diff_id = sha256_digest(b"another tar");
        for (body, diff_id, what) in [
            (&other, &diff_id, "layer of"),
            (&blob, &wrong_diff_id, "uncompressed layer"),
        ] {
            let stream_of = futures_util::stream::iter(chunks(body));
            let (result, layers, tmp) =
                stream(stream_of, &digest, 0, diff_id, OPTIONS, &never).await;
            let err = result.unwrap_err();
            assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
            assert!(err.to_string().contains(what), "{err}");
            assert!(layers.is_empty() && tmp.is_empty(), "{layers:?} {tmp:?}");
        }
        // oci-client's own check failing at the end of the body.
        let verification = io::Error::other(DigestError::VerificationError {
            expected: digest.clone(),
            actual: sha256_digest(b"x"),
        });
        let body = futures_util::stream::iter(chunks(&blob))
            .chain(futures_util::stream::iter([Err(verification)]));
        let (result, layers, tmp) = stream(body, &digest, 0, &diff_id, OPTIONS, &never).await;
        let err = result.unwrap_err();
        assert!(
            matches!(&err, ImageError::DigestMismatch { expected, .. } if *expected == digest),
            "{err}"
        );
        assert!(layers.is_empty() && tmp.is_empty(), "{layers:?} {tmp:?}");
    }

    #[tokio::test]
    async fn a_stalled_layer_is_cancelled_by_the_progress_timeout_naming_it() {
        if !is_root() {
            return;
        }
        let (blob, digest, diff_id) = gzip_layer(&[1; 200_000]);
        let half = chunks(&blob[..blob.len() / 2]);
        let sent: usize = blob.len() / 2;
        let body = futures_util::stream::iter(half).chain(futures_util::stream::pending());
        let never = CancellationToken::new();
        let started = Instant::now();
        let (result, layers, tmp) =
            stream(body, &digest, blob.len() as u64, &diff_id, OPTIONS, &never).await;
        let err = result.unwrap_err().to_string();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(
            err.contains(&format!(
                "layer {digest} ({sent} of {} bytes received)",
                blob.len()
            )) && err.contains("no progress for 300ms (image_pull_progress_timeout)"),
            "{err}"
        );
        assert!(layers.is_empty() && tmp.is_empty(), "{layers:?} {tmp:?}");
    }

    #[tokio::test]
    async fn a_failed_or_cancelled_download_leaves_nothing() {
        if !is_root() {
            return;
        }
        let (blob, digest, diff_id) = gzip_layer(&[2; 100_000]);
        let half = || chunks(&blob[..blob.len() / 2]);
        let never = CancellationToken::new();
        // The connection breaks mid-body.
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        let body =
            futures_util::stream::iter(half()).chain(futures_util::stream::iter([Err(reset)]));
        let (result, layers, tmp) = stream(body, &digest, 0, &diff_id, OPTIONS, &never).await;
        let err = result.unwrap_err().to_string();
        assert!(err.contains(&format!("layer {digest}: ")), "{err}");
        assert!(layers.is_empty() && tmp.is_empty(), "{layers:?} {tmp:?}");
        // More than the manifest's size.
        let body = futures_util::stream::iter(chunks(&blob));
        let (result, layers, tmp) = stream(body, &digest, 1000, &diff_id, OPTIONS, &never).await;
        let err = result.unwrap_err().to_string();
        assert!(err.contains("more than the manifest's 1000 bytes"), "{err}");
        assert!(layers.is_empty() && tmp.is_empty(), "{layers:?} {tmp:?}");
        // Another layer failed: this one stops though its body stalls, and
        // no timeout applies.
        let cancel = CancellationToken::new();
        let body = futures_util::stream::iter(half()).chain(futures_util::stream::pending());
        let no_limit = PullOptions {
            progress_timeout: None,
            ..OPTIONS
        };
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            trigger.cancel();
        });
        let (result, layers, tmp) = stream(body, &digest, 0, &diff_id, no_limit, &cancel).await;
        let err = result.unwrap_err().to_string();
        assert!(err.contains("cancelled"), "{err}");
        assert!(layers.is_empty() && tmp.is_empty(), "{layers:?} {tmp:?}");
    }

    #[test]
    fn options_come_from_the_config() {
        let mut config = ImagePullConfig::default();
        assert_eq!(
            PullOptions::from(&config),
            PullOptions {
                max_concurrent_downloads: 3,
                progress_timeout: Some(Duration::from_secs(300)),
            }
        );
        config.image_pull_progress_timeout = Duration::ZERO;
        assert_eq!(PullOptions::from(&config).progress_timeout, None);
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
