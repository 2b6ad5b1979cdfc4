//! Pull speed and safety (issue 13) against a registry server of the test's
//! own (plain HTTP on loopback, images built in memory), which counts the
//! blob requests and can stall or corrupt a layer: a stalled layer cancelled
//! by `image_pull_progress_timeout`, a corrupted one refused, two concurrent
//! pulls of one image sharing its layers, a layer already present not
//! downloaded again; nothing half-written left in any case.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crius_proto::cri;
use crius_test_images::layer::LayerBuilder;
use crius_test_images::oci::{Image, RunConfig};
use crius_tests::{require_root, Daemon, DaemonOptions};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How the server sends a blob.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Serve {
    Whole,
    /// Its headers and the first half of its body, then nothing (the
    /// connection stays open).
    StallMidway,
    /// Its full length, with one byte flipped in the middle.
    Corrupted,
}

#[derive(Default)]
struct Content {
    /// `/v2/<repo>/manifests/<tag>` → manifest.
    manifests: BTreeMap<String, Vec<u8>>,
    /// Digest → blob and how to send it.
    blobs: BTreeMap<String, (Vec<u8>, Serve)>,
    /// Digest → GET requests seen.
    gets: BTreeMap<String, usize>,
}

/// A registry on loopback speaking just enough of the Registry API v2 for a
/// pull (one request a connection).
struct Server {
    addr: String,
    content: Arc<Mutex<Content>>,
}

impl Server {
    async fn start() -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let content = Arc::new(Mutex::new(Content::default()));
        let shared = content.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, shared.clone()));
            }
        });
        Server { addr, content }
    }

    /// Publishes `image` as `<repo>:latest`, its layers sent as `serve` says.
    fn publish(&self, repo: &str, image: &Image, serve: impl Fn(usize) -> Serve) -> String {
        let mut content = self.content.lock().unwrap();
        content.manifests.insert(
            format!("/v2/{repo}/manifests/latest"),
            image.manifest.clone(),
        );
        content.manifests.insert(
            format!("/v2/{repo}/manifests/{}", image.manifest_digest),
            image.manifest.clone(),
        );
        content.blobs.insert(
            image.config_digest.clone(),
            (image.config.clone(), Serve::Whole),
        );
        for (i, layer) in image.layers.iter().enumerate() {
            content
                .blobs
                .insert(layer.digest.clone(), (layer.blob.to_vec(), serve(i)));
        }
        format!("{}/{repo}:latest", self.addr)
    }

    fn gets(&self, digest: &str) -> usize {
        self.content
            .lock()
            .unwrap()
            .gets
            .get(digest)
            .copied()
            .unwrap_or(0)
    }
}

async fn serve(mut conn: tokio::net::TcpStream, content: Arc<Mutex<Content>>) {
    let mut request = Vec::new();
    let mut buf = [0; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&request).into_owned();
    let path = head.split(' ').nth(1).unwrap_or_default().to_string();
    let (status, kind, body, serve) = {
        let mut content = content.lock().unwrap();
        if path == "/v2/" {
            ("200 OK", "application/json", b"{}".to_vec(), Serve::Whole)
        } else if let Some(manifest) = content.manifests.get(&path) {
            (
                "200 OK",
                crius_test_images::oci::MANIFEST_MEDIA_TYPE,
                manifest.clone(),
                Serve::Whole,
            )
        } else if let Some(digest) = path.rsplit_once("/blobs/").map(|(_, d)| d.to_string()) {
            *content.gets.entry(digest.clone()).or_default() += 1;
            match content.blobs.get(&digest) {
                Some((blob, serve)) => ("200 OK", "application/octet-stream", blob.clone(), *serve),
                None => (
                    "404 Not Found",
                    "application/json",
                    Vec::new(),
                    Serve::Whole,
                ),
            }
        } else {
            let unknown =
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
            (
                "404 Not Found",
                "application/json",
                unknown.to_vec(),
                Serve::Whole,
            )
        }
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes()).await;
    match serve {
        Serve::Whole => {
            let _ = conn.write_all(&body).await;
        }
        Serve::Corrupted => {
            let mut body = body;
            let middle = body.len() / 2;
            body[middle] ^= 0xff;
            let _ = conn.write_all(&body).await;
        }
        Serve::StallMidway => {
            let _ = conn.write_all(&body[..body.len() / 2]).await;
            let _ = conn.flush().await;
            // Holds the connection open without a byte more.
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
    }
}

/// An image of `layers` layers of `size` bytes each that no other test
/// pulls: `seed` makes its content unique (files of pseudo-random bytes, so
/// that gzip keeps them large).
fn image(seed: u8, layers: usize, size: usize) -> Image {
    let built = (0..layers)
        .map(|i| {
            let mut x: u32 = u32::from(seed) * 7919 + i as u32 * 104_729 + 1;
            let data: Vec<u8> = (0..size)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let mut layer = LayerBuilder::new();
            layer.file(&format!("layer-{i}"), 0o644, data);
            layer.build().unwrap()
        })
        .collect();
    Image::assemble(built, &RunConfig::default())
}

fn start(server: &Server, timeout: &str) -> Daemon {
    Daemon::start_with(DaemonOptions {
        config_toml: format!(
            "[registry]\ninsecure = [\"{}\"]\n[image]\nimage_pull_progress_timeout = \"{timeout}\"\n",
            server.addr
        ),
        ..Default::default()
    })
}

async fn pull(daemon: &Daemon, image: &str) -> Result<String, tonic::Status> {
    daemon
        .images()
        .await
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The chain ID of the image's layer `i` (OCI image spec).
fn chain_id(image: &Image, i: usize) -> String {
    let mut chain = image.layers[0].diff_id.clone();
    for layer in &image.layers[1..=i] {
        let digest = Sha256::digest(format!("{chain} {}", layer.diff_id).as_bytes());
        chain = format!("sha256:{}", hex::encode(digest));
    }
    chain
}

/// Nothing of the failed layer `failed` stays: no layer dir, no
/// half-written temp entry, and no layer blob of the image (only manifests
/// and configs are kept as blobs). Its other layers may have landed whole.
fn assert_nothing_left(daemon: &Daemon, image: &Image, failed: usize) {
    let images = daemon.root.join("images");
    assert!(
        names(&images.join("tmp")).is_empty(),
        "{:?}",
        names(&images.join("tmp"))
    );
    let layers = names(&images.join("layers"));
    let failed_chain = chain_id(image, failed);
    assert!(
        !layers.contains(&failed_chain.trim_start_matches("sha256:").to_string()),
        "layer {failed_chain} stayed"
    );
    let blobs = names(&images.join("blobs/sha256"));
    for layer in &image.layers {
        let hex = layer.digest.trim_start_matches("sha256:").to_string();
        assert!(!blobs.contains(&hex), "blob {} stayed", layer.digest);
    }
}

#[tokio::test]
async fn a_stalled_layer_is_cancelled_by_the_progress_timeout_and_leaves_nothing() {
    if !require_root() {
        return;
    }
    let server = Server::start().await;
    let image = image(1, 3, 2 << 20);
    let stalled = image.layers[1].digest.clone();
    let reference = server.publish("pulls/stall", &image, |i| {
        if i == 1 {
            Serve::StallMidway
        } else {
            Serve::Whole
        }
    });
    let daemon = start(&server, "2s");
    let started = Instant::now();
    let err = pull(&daemon, &reference).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(30),
        "cancelled after {elapsed:?}"
    );
    assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
    let message = err.message();
    assert!(
        message.contains(&format!("layer {stalled} ("))
            && message.contains("made no progress for 2s (image_pull_progress_timeout)"),
        "{message}"
    );
    assert_nothing_left(&daemon, &image, 1);
    let listed = daemon
        .images()
        .await
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(listed.is_empty(), "{listed:?}");

    // Once the registry sends it, the pull completes, fetching again only
    // what did not land.
    let landed: Vec<bool> = (0..image.layers.len())
        .map(|i| {
            let hex = chain_id(&image, i)
                .trim_start_matches("sha256:")
                .to_string();
            daemon.root.join("images/layers").join(hex).is_dir()
        })
        .collect();
    server.publish("pulls/stall", &image, |_| Serve::Whole);
    assert_eq!(
        pull(&daemon, &reference).await.unwrap(),
        image.config_digest
    );
    for (i, layer) in image.layers.iter().enumerate() {
        let expected = if landed[i] { 1 } else { 2 };
        assert_eq!(server.gets(&layer.digest), expected, "layer {i}");
    }
}

#[tokio::test]
async fn a_corrupted_layer_is_refused_and_leaves_nothing() {
    if !require_root() {
        return;
    }
    let server = Server::start().await;
    let image = image(2, 3, 1 << 20);
    let corrupted = image.layers[2].digest.clone();
    let reference = server.publish("pulls/corrupted", &image, |i| {
        if i == 2 {
            Serve::Corrupted
        } else {
            Serve::Whole
        }
    });
    let daemon = start(&server, "5m0s");
    let err = pull(&daemon, &reference).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
    assert!(
        err.message().contains(&format!("expected {corrupted}")),
        "{}",
        err.message()
    );
    assert_nothing_left(&daemon, &image, 2);
}

#[tokio::test]
async fn concurrent_pulls_of_one_image_download_each_layer_once() {
    if !require_root() {
        return;
    }
    let server = Server::start().await;
    let image = image(3, 6, 1 << 20);
    let by_tag = server.publish("pulls/shared", &image, |_| Serve::Whole);
    let by_digest = format!("{}/pulls/shared@{}", server.addr, image.manifest_digest);
    let daemon = start(&server, "5m0s");
    let (a, b, c) = tokio::join!(
        pull(&daemon, &by_tag),
        pull(&daemon, &by_tag),
        pull(&daemon, &by_digest)
    );
    for id in [a.unwrap(), b.unwrap(), c.unwrap()] {
        assert_eq!(id, image.config_digest);
    }
    for layer in &image.layers {
        assert_eq!(server.gets(&layer.digest), 1, "layer {}", layer.digest);
        let dir = daemon
            .root
            .join("images/layers")
            .join(layer.diff_id.trim_start_matches("sha256:"));
        // Only the lowest layer's dir is named by its diff ID (its chain ID).
        if layer.digest == image.layers[0].digest {
            assert!(dir.join("layer-0").is_file());
        }
    }
    assert_eq!(
        names(&daemon.root.join("images/layers")).len(),
        image.layers.len()
    );
    assert!(names(&daemon.root.join("images/tmp")).is_empty());

    // An image on top of the same layers downloads only its own.
    let mut more = image.layers.clone();
    more.push(self::image(4, 1, 1 << 10).layers.remove(0));
    let top = Image::assemble(more, &RunConfig::default());
    let reference = server.publish("pulls/on-top", &top, |_| Serve::Whole);
    assert_eq!(pull(&daemon, &reference).await.unwrap(), top.config_digest);
    for layer in &image.layers {
        assert_eq!(
            server.gets(&layer.digest),
            1,
            "layer {} again",
            layer.digest
        );
    }
    assert_eq!(server.gets(&top.layers[6].digest), 1);
}
