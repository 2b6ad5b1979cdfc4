//! The content store on disk: verified blobs under `blobs/sha256/<hex>`,
//! unpacked layers under `layers/<chain-id hex>/`, and a `tmp/` dir where
//! both are built before a rename puts them in place, so a crash never leaves
//! a half-written blob or a half-unpacked layer under its final name.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::sync::OwnedMutexGuard;

use super::reference::is_sha256_hex;
use super::unpack::unpack_layer_stream;
use super::ImageError;

pub struct Content {
    blobs: PathBuf,
    layers: PathBuf,
    tmp: PathBuf,
    next_tmp: AtomicU64,
    locks: KeyedLocks,
}

impl Content {
    /// Creates the dirs under `images_dir` and empties `tmp/`: what is there
    /// was left by a crash mid-write.
    pub fn open(images_dir: &Path) -> Result<Content, ImageError> {
        let content = Content {
            blobs: images_dir.join("blobs").join("sha256"),
            layers: images_dir.join("layers"),
            tmp: images_dir.join("tmp"),
            next_tmp: AtomicU64::new(0),
            locks: KeyedLocks::default(),
        };
        match fs::remove_dir_all(&content.tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ImageError::io(
                    format!("emptying {}", content.tmp.display()),
                    e,
                ))
            }
        }
        for dir in [&content.blobs, &content.layers, &content.tmp] {
            fs::create_dir_all(dir)
                .map_err(|e| ImageError::io(format!("creating {}", dir.display()), e))?;
        }
        Ok(content)
    }

    /// `sha256:<hex>` → the blob's path. The digest must have been validated.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.blobs.join(digest_hex(digest))
    }

    /// A chain ID → the layer's dir.
    pub fn layer_path(&self, chain_id: &str) -> PathBuf {
        self.layers.join(digest_hex(chain_id))
    }

    /// A fresh path under `tmp/`, unique in this process.
    pub fn temp_path(&self, label: &str) -> PathBuf {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        self.tmp.join(format!("{}-{n}", digest_hex(label)))
    }

    /// Serializes work on one key (a blob digest, a chain ID, a reference):
    /// a second caller waits for the first and then finds its result.
    pub async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        self.locks.lock(key).await
    }

    /// Stores bytes already in memory (manifests, configs) after checking them
    /// against their digest.
    pub fn write_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), ImageError> {
        let actual = sha256_digest(bytes);
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                what: "blob".into(),
                expected: digest.to_string(),
                actual,
            });
        }
        let path = self.blob_path(digest);
        if path.exists() {
            return Ok(());
        }
        let tmp = self.temp_path(digest);
        fs::write(&tmp, bytes)
            .map_err(|e| ImageError::io(format!("writing {}", tmp.display()), e))?;
        self.commit(&tmp, &path)
    }

    /// Where the layer with this chain ID is unpacked: a fresh dir under
    /// `tmp/`, moved to the layer's own once whole. The caller holds the
    /// chain ID's lock.
    pub fn layer_unpacker(&self, chain_id: &str) -> LayerUnpacker {
        LayerUnpacker {
            tmp: self.temp_path(chain_id),
            dest: self.layer_path(chain_id),
        }
    }

    /// Moves a finished blob file or layer dir from `tmp/` to its final path.
    pub fn commit(&self, tmp: &Path, path: &Path) -> Result<(), ImageError> {
        fs::rename(tmp, path).map_err(|e| {
            ImageError::io(format!("moving {} to {}", tmp.display(), path.display()), e)
        })
    }

    /// Removes every blob and layer not in the keep sets (digests and chain
    /// IDs, `sha256:…`) and returns how many were removed. A layer is first
    /// renamed into `tmp/`, so that a crash mid-removal leaves no half layer.
    pub fn remove_unused(
        &self,
        keep_blobs: &HashSet<String>,
        keep_layers: &HashSet<String>,
    ) -> Result<usize, ImageError> {
        let mut removed = 0;
        for (dir, keep, is_layer) in [
            (&self.blobs, keep_blobs, false),
            (&self.layers, keep_layers, true),
        ] {
            for name in list_names(dir)? {
                if keep.contains(&format!("sha256:{name}")) || !is_sha256_hex(&name) {
                    continue;
                }
                let path = dir.join(&name);
                let result = if is_layer {
                    let doomed = self.temp_path(&name);
                    fs::rename(&path, &doomed).and_then(|()| fs::remove_dir_all(&doomed))
                } else {
                    fs::remove_file(&path)
                };
                match result {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(ImageError::io(format!("removing {}", path.display()), e))
                    }
                }
            }
        }
        Ok(removed)
    }
}

/// One layer's unpacking, owned, so that it can run on a blocking thread.
pub struct LayerUnpacker {
    tmp: PathBuf,
    dest: PathBuf,
}

impl LayerUnpacker {
    /// Unpacks a layer blob read from `blob` as it arrives (blocking: run it
    /// off the async threads) and moves it in place once `blob` has ended
    /// and the uncompressed tar's digest is `diff_id`. On any error, a read
    /// error of `blob` included, the half-unpacked dir is removed before
    /// this returns: nothing half-written stays. `layer_digest` (the blob's)
    /// names the layer in errors.
    pub fn run(
        self,
        blob: impl io::Read,
        layer_digest: &str,
        diff_id: &str,
    ) -> Result<(), ImageError> {
        fs::create_dir(&self.tmp)
            .map_err(|e| ImageError::io(format!("creating {}", self.tmp.display()), e))?;
        let result = match unpack_layer_stream(blob, &self.tmp) {
            Ok(actual) if actual == diff_id => fs::rename(&self.tmp, &self.dest).map_err(|e| {
                ImageError::io(
                    format!("moving {} to {}", self.tmp.display(), self.dest.display()),
                    e,
                )
            }),
            Ok(actual) => Err(ImageError::DigestMismatch {
                what: format!("uncompressed layer {layer_digest}"),
                expected: diff_id.to_string(),
                actual,
            }),
            Err(source) => Err(ImageError::Unpack {
                digest: layer_digest.to_string(),
                source,
            }),
        };
        if result.is_err() {
            // What cannot be removed now goes at the next start (`open`).
            if let Err(e) = fs::remove_dir_all(&self.tmp) {
                tracing::warn!(dir = %self.tmp.display(), error = %e, "removing a half-unpacked layer");
            }
        }
        result
    }
}

fn list_names(dir: &Path) -> Result<Vec<String>, ImageError> {
    let entries =
        fs::read_dir(dir).map_err(|e| ImageError::io(format!("listing {}", dir.display()), e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ImageError::io(format!("listing {}", dir.display()), e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

/// The chain IDs of layers with these diff IDs, lowest first (OCI image spec:
/// `ChainID(L0) = DiffID(L0)`, `ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))`).
/// A chain ID names a layer together with everything below it, so two images
/// share an unpacked layer only when they share the whole stack under it.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let id = match chain.last() {
            None => diff_id.clone(),
            Some(parent) => sha256_digest(format!("{parent} {diff_id}").as_bytes()),
        };
        chain.push(id);
    }
    chain
}

/// The OCI digest of `bytes`: `sha256:` and 64 lowercase hex digits.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn digest_hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// Async mutexes by name, created on first use; unused ones are dropped as
/// new ones are made, so the map stays as small as the work in flight.
#[derive(Default)]
struct KeyedLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().expect("keyed locks");
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            locks.entry(key.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = sha256_digest(b"a");
        let b = sha256_digest(b"b");
        let c = sha256_digest(b"c");
        let ids = chain_ids(&[a.clone(), b.clone(), c.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], sha256_digest(format!("{a} {b}").as_bytes()));
        assert_eq!(ids[2], sha256_digest(format!("{} {c}", ids[1]).as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn blobs_are_verified_and_unused_content_removed() {
        let dir = tempfile::tempdir().unwrap();
        let content = Content::open(dir.path()).unwrap();
        let good = sha256_digest(b"config");
        content.write_blob(&good, b"config").unwrap();
        assert_eq!(fs::read(content.blob_path(&good)).unwrap(), b"config");
        let err = content.write_blob(&good, b"tampered").unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");

        let other = sha256_digest(b"other");
        content.write_blob(&other, b"other").unwrap();
        let layer = sha256_digest(b"layer");
        fs::create_dir_all(content.layer_path(&layer).join("etc")).unwrap();
        let kept_layer = sha256_digest(b"kept layer");
        fs::create_dir_all(content.layer_path(&kept_layer)).unwrap();

        let removed = content
            .remove_unused(
                &HashSet::from([good.clone()]),
                &HashSet::from([kept_layer.clone()]),
            )
            .unwrap();
        assert_eq!(removed, 2);
        assert!(content.blob_path(&good).exists());
        assert!(!content.blob_path(&other).exists());
        assert!(!content.layer_path(&layer).exists());
        assert!(content.layer_path(&kept_layer).exists());
    }

    #[test]
    fn leftovers_in_tmp_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let content = Content::open(dir.path()).unwrap();
        let half = content.temp_path("sha256:abc");
        fs::create_dir_all(half.join("usr")).unwrap();
        drop(content);
        Content::open(dir.path()).unwrap();
        assert!(!half.exists());
    }

    #[tokio::test]
    async fn keyed_locks_serialize_one_key_only() {
        let locks = Arc::new(KeyedLocks::default());
        let held = locks.lock("a").await;
        // Another key is free.
        drop(locks.lock("b").await);
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move { drop(locks.lock("a").await) })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "second locker of the same key waits");
        drop(held);
        waiter.await.unwrap();
    }
}
