//! The image index: one record an image (keyed by its config digest, the
//! image ID), kept in the state store (kind `images`) and served from memory.
//! Pulls, lookups by any name CRI uses, removal with garbage collection of
//! the blobs and layers no image (and no container) uses any more.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use super::content::Content;
use super::pinned::PinnedImages;
use super::pull::{PullOptions, Puller, RegistryAuth};
use super::reference::Reference;
use super::snapshot::Snapshotter;
use super::volume::Views;
use super::ImageError;
use crate::config::Config;
use crate::state::container::ImageNames;
use crate::state::Store;

const KIND: &str = "images";
/// The shortest image ID prefix that finds an image (docker's short IDs are 12).
const MIN_ID_PREFIX: usize = 12;

/// How a container of the image runs: the `config` object of the OCI image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    pub user: String,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub stop_signal: String,
    pub labels: BTreeMap<String, String>,
    /// `port/proto`, as `80/tcp`.
    pub exposed_ports: Vec<String>,
    pub volumes: Vec<String>,
}

impl ImageConfig {
    /// Parses an image config blob (OCI or Docker): the run config and the
    /// layers' diff IDs, lowest first.
    pub fn from_oci_json(bytes: &[u8]) -> Result<(ImageConfig, Vec<String>), serde_json::Error> {
        #[derive(Deserialize)]
        struct Blob {
            #[serde(default)]
            config: Option<RunJson>,
            rootfs: RootFs,
        }
        #[derive(Deserialize)]
        struct RootFs {
            #[serde(default)]
            diff_ids: Vec<String>,
        }
        #[derive(Default, Deserialize)]
        #[serde(rename_all = "PascalCase", default)]
        struct RunJson {
            user: Option<String>,
            env: Option<Vec<String>>,
            entrypoint: Option<Vec<String>>,
            cmd: Option<Vec<String>>,
            working_dir: Option<String>,
            stop_signal: Option<String>,
            labels: Option<BTreeMap<String, String>>,
            exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
            volumes: Option<BTreeMap<String, serde_json::Value>>,
        }
        let blob: Blob = serde_json::from_slice(bytes)?;
        let run = blob.config.unwrap_or_default();
        let config = ImageConfig {
            user: run.user.unwrap_or_default(),
            env: run.env.unwrap_or_default(),
            entrypoint: run.entrypoint.unwrap_or_default(),
            cmd: run.cmd.unwrap_or_default(),
            working_dir: run.working_dir.unwrap_or_default(),
            stop_signal: run.stop_signal.unwrap_or_default(),
            labels: run.labels.unwrap_or_default(),
            exposed_ports: run.exposed_ports.unwrap_or_default().into_keys().collect(),
            volumes: run.volumes.unwrap_or_default().into_keys().collect(),
        };
        Ok((config, blob.rootfs.diff_ids))
    }

    /// The image's user as CRI reports it: a numeric uid, or else a user name
    /// (the group part of `user:group` is not reported).
    pub fn uid_or_username(&self) -> (Option<i64>, String) {
        let user = self.user.split(':').next().unwrap_or_default();
        match user.parse::<i64>() {
            Ok(uid) => (Some(uid), String::new()),
            Err(_) => (None, user.to_string()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The config digest, `sha256:…`.
    pub id: String,
    /// Normalized `registry/repository:tag` names.
    pub repo_tags: Vec<String>,
    /// `registry/repository@sha256:<manifest digest>`.
    pub repo_digests: Vec<String>,
    /// Compressed layers plus the config.
    pub size: u64,
    /// Lowest first.
    pub chain_ids: Vec<String>,
    pub config: ImageConfig,
    /// Every blob of the image in the content store: what garbage collection keeps.
    pub blobs: Vec<String>,
}

impl ImageRecord {
    /// Its tags and digests, as ContainerStatus names a container's image.
    pub fn names(&self) -> ImageNames<'_> {
        ImageNames {
            repo_tags: &self.repo_tags,
            repo_digests: &self.repo_digests,
        }
    }
}

pub struct ImageStore {
    images_dir: PathBuf,
    /// Owns the containers' layer references (what garbage collection
    /// keeps) and mounts image volumes' views.
    pub(super) snapshotter: Arc<dyn Snapshotter>,
    content: Content,
    state: Store,
    puller: Puller,
    /// `[image]`: concurrent layer downloads, the progress timeout.
    pull_options: PullOptions,
    pinned: PinnedImages,
    index: RwLock<BTreeMap<String, ImageRecord>>,
    /// `<state>/image-volumes`: one view dir an image that containers mount.
    pub(super) volumes_dir: PathBuf,
    /// The images containers mount as volumes, with their users. Taken
    /// before `index` by whoever takes both, so that an image is never
    /// removed while a container starts to mount it.
    pub(super) volumes: Mutex<Views>,
    /// Pulls hold it shared, removal exclusively: garbage collection must not
    /// take a layer that a pull has unpacked but not yet recorded.
    gc: tokio::sync::RwLock<()>,
}

impl ImageStore {
    /// Loads the index and collects what a crash left unreferenced (keeping
    /// the layers `snapshotter` says containers stack). Errors: a bad
    /// `pinned_images` entry, the content store's, the state store's, the
    /// snapshotter's.
    pub fn open(
        config: &Config,
        state: Store,
        snapshotter: Arc<dyn Snapshotter>,
    ) -> Result<ImageStore, ImageError> {
        let pinned = PinnedImages::parse(&config.pinned_images)?;
        let images_dir = config.image_dir();
        let content = Content::open(&images_dir)?;
        let records: Vec<(String, ImageRecord)> = state.load_all(KIND)?;
        let index = records
            .into_iter()
            .map(|(_, r)| (r.id.clone(), r))
            .collect();
        let store = ImageStore {
            images_dir,
            snapshotter,
            content,
            state,
            puller: Puller::new(config.registry.clone()).map_err(ImageError::Client)?,
            pull_options: PullOptions::from(&config.image),
            pinned,
            index: RwLock::new(index),
            volumes_dir: config.state.join("image-volumes"),
            volumes: Mutex::default(),
            gc: tokio::sync::RwLock::new(()),
        };
        store.collect_garbage()?;
        Ok(store)
    }

    /// Makes garbage collection ask `snapshotter` for the layers in use (a
    /// test wiring a fake into `Crius`).
    pub(crate) fn set_snapshotter(&mut self, snapshotter: Arc<dyn Snapshotter>) {
        self.snapshotter = snapshotter;
    }

    /// Where blobs and layers live (what ImageFsInfo measures).
    pub fn images_dir(&self) -> &Path {
        &self.images_dir
    }

    /// Pulls an image and records it under the reference's tag and digest.
    /// Pulls of one reference run one at a time; the second finds the
    /// content in place and only re-checks the manifest. Pulls of one image
    /// by other references share its layers (each brought in once, see
    /// `pull`).
    pub async fn pull(
        &self,
        image_ref: &str,
        auth: &RegistryAuth,
    ) -> Result<ImageRecord, ImageError> {
        let reference = Reference::parse(image_ref)?;
        let _no_gc = self.gc.read().await;
        let _pulling = self.content.lock(&reference.to_string()).await;
        let started = std::time::Instant::now();
        let pulled = self
            .puller
            .pull(&reference, auth, &self.content, &self.pull_options)
            .await?;
        tracing::info!(%reference, id = %pulled.config_digest, elapsed = ?started.elapsed(), "pulled");
        let repo_digest = reference.repo_digest(&pulled.manifest_digest);
        self.record(ImageRecord {
            id: pulled.config_digest,
            repo_tags: reference.repo_tag().into_iter().collect(),
            repo_digests: vec![repo_digest],
            size: pulled.size,
            chain_ids: pulled.chain_ids,
            config: pulled.config,
            blobs: pulled.blobs,
        })
    }

    /// Adds a pulled image's names to its record (creating it) and takes
    /// each of its tags from any other image: a tag names one image.
    pub(crate) fn record(&self, pulled: ImageRecord) -> Result<ImageRecord, ImageError> {
        let mut index = self.index.write().expect("image index");
        for other in index.values_mut().filter(|o| o.id != pulled.id) {
            let before = other.repo_tags.len();
            other.repo_tags.retain(|t| !pulled.repo_tags.contains(t));
            if other.repo_tags.len() != before {
                self.state.put(KIND, id_hex(&other.id), &*other)?;
            }
        }
        let record = match index.get(&pulled.id) {
            Some(existing) => {
                let mut merged = existing.clone();
                for tag in pulled.repo_tags {
                    push_unique(&mut merged.repo_tags, tag);
                }
                for digest in pulled.repo_digests {
                    push_unique(&mut merged.repo_digests, digest);
                }
                for blob in pulled.blobs {
                    push_unique(&mut merged.blobs, blob);
                }
                merged
            }
            None => pulled,
        };
        self.state.put(KIND, id_hex(&record.id), &record)?;
        index.insert(record.id.clone(), record.clone());
        Ok(record)
    }

    /// Finds an image by ID (`sha256:<hex>`, the hex alone, or an unambiguous
    /// prefix of at least 12 hex digits), by tag (`busybox` finds
    /// `docker.io/library/busybox:latest`) or by repo digest.
    pub fn resolve(&self, image_ref: &str) -> Option<ImageRecord> {
        let index = self.index.read().expect("image index");
        find(&index, image_ref).cloned()
    }

    /// True when the config's `pinned_images` names the image: kubelet's
    /// image garbage collection keeps it.
    pub fn is_pinned(&self, image: &ImageRecord) -> bool {
        self.pinned.pins(image)
    }

    /// Every image, ordered by ID.
    pub fn list(&self) -> Vec<ImageRecord> {
        let index = self.index.read().expect("image index");
        index.values().cloned().collect()
    }

    /// The image's unpacked layer dirs, lowest first.
    pub fn layer_dirs(&self, image: &ImageRecord) -> Vec<PathBuf> {
        image
            .chain_ids
            .iter()
            .map(|c| self.content.layer_path(c))
            .collect()
    }

    /// Removes the image any of whose names this is, with all its tags, and
    /// then the blobs and layers nothing else uses. Removing an absent image
    /// succeeds and returns None. Errors: `InUse` naming a container that
    /// mounts the image as a volume; the state store's; garbage collection's.
    pub async fn remove(&self, image_ref: &str) -> Result<Option<ImageRecord>, ImageError> {
        let _gc = self.gc.write().await;
        let removed = {
            let views = self.views();
            let mut index = self.index.write().expect("image index");
            let Some(id) = find(&index, image_ref).map(|r| r.id.clone()) else {
                return Ok(None);
            };
            if let Some(container) = ImageStore::volume_user(&views, &id) {
                return Err(ImageError::InUse {
                    image: id,
                    container,
                });
            }
            self.state.delete(KIND, id_hex(&id))?;
            index.remove(&id)
        };
        let collected = self.collect_garbage()?;
        tracing::info!(image = %image_ref, collected, "image removed");
        Ok(removed)
    }

    /// Removes blobs and layers that no image records and no container
    /// stacks (as the snapshotter says); returns how many went.
    fn collect_garbage(&self) -> Result<usize, ImageError> {
        let (keep_blobs, mut keep_layers) = {
            let index = self.index.read().expect("image index");
            let blobs: HashSet<String> = index.values().flat_map(|r| r.blobs.clone()).collect();
            let layers: HashSet<String> =
                index.values().flat_map(|r| r.chain_ids.clone()).collect();
            (blobs, layers)
        };
        for layer in self.snapshotter.layers_in_use()? {
            if let Some(name) = layer.file_name() {
                keep_layers.insert(format!("sha256:{}", name.to_string_lossy()));
            }
        }
        self.content.remove_unused(&keep_blobs, &keep_layers)
    }
}

fn find<'a>(index: &'a BTreeMap<String, ImageRecord>, image_ref: &str) -> Option<&'a ImageRecord> {
    if let Some(record) = index.get(image_ref) {
        return Some(record);
    }
    let hex = image_ref.strip_prefix("sha256:").unwrap_or(image_ref);
    if hex.len() >= MIN_ID_PREFIX && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut matches = index.values().filter(|r| id_hex(&r.id).starts_with(hex));
        if let (Some(one), None) = (matches.next(), matches.next()) {
            return Some(one);
        }
    }
    let reference = Reference::parse(image_ref).ok()?;
    match reference.digest() {
        Some(digest) => {
            let repo_digest = reference.repo_digest(digest);
            index
                .values()
                .find(|r| r.repo_digests.contains(&repo_digest))
        }
        None => {
            let repo_tag = reference.repo_tag()?;
            index.values().find(|r| r.repo_tags.contains(&repo_tag))
        }
    }
}

/// The hex of an image ID (`sha256:<hex>`).
pub(super) fn id_hex(id: &str) -> &str {
    id.strip_prefix("sha256:").unwrap_or(id)
}

fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::content::sha256_digest;

    fn open(root: &Path) -> ImageStore {
        let config = Config {
            root: root.to_path_buf(),
            ..Config::default()
        };
        let state = Store::open(root.join("meta")).unwrap();
        let snapshotter = crate::image::snapshot::OverlaySnapshotter::new(config.container_dir());
        ImageStore::open(&config, state, Arc::new(snapshotter)).unwrap()
    }

    fn pulled(config_byte: &[u8], reference: &str, manifest: &[u8]) -> ImageRecord {
        let reference = Reference::parse(reference).unwrap();
        let layer = sha256_digest(b"layer");
        ImageRecord {
            id: sha256_digest(config_byte),
            repo_tags: reference.repo_tag().into_iter().collect(),
            repo_digests: vec![reference.repo_digest(&sha256_digest(manifest))],
            size: 10,
            chain_ids: vec![layer.clone()],
            config: ImageConfig::default(),
            blobs: vec![sha256_digest(manifest), sha256_digest(config_byte), layer],
        }
    }

    #[test]
    fn config_blob_parses_docker_and_oci_forms() {
        let blob = br#"{"architecture":"amd64","os":"linux",
            "config":{"User":"1003:1004","Env":["PATH=/bin"],"Entrypoint":null,"Cmd":["sh"],
              "WorkingDir":"/w","StopSignal":"SIGQUIT","Labels":{"a":"b"},
              "ExposedPorts":{"80/tcp":{}},"Volumes":{"/data":{}}},
            "rootfs":{"type":"layers","diff_ids":["sha256:1","sha256:2"]}}"#;
        let (config, diff_ids) = ImageConfig::from_oci_json(blob).unwrap();
        assert_eq!(diff_ids, ["sha256:1", "sha256:2"]);
        assert_eq!(config.user, "1003:1004");
        assert_eq!(config.uid_or_username(), (Some(1003), String::new()));
        assert!(config.entrypoint.is_empty());
        assert_eq!(config.cmd, ["sh"]);
        assert_eq!(config.working_dir, "/w");
        assert_eq!(config.stop_signal, "SIGQUIT");
        assert_eq!(config.exposed_ports, ["80/tcp"]);
        assert_eq!(config.volumes, ["/data"]);
        let (bare, _) = ImageConfig::from_oci_json(br#"{"rootfs":{"diff_ids":[]}}"#).unwrap();
        assert_eq!(bare, ImageConfig::default());
        let named = ImageConfig {
            user: "www-data:1004".into(),
            ..ImageConfig::default()
        };
        assert_eq!(named.uid_or_username(), (None, "www-data".into()));
    }

    #[test]
    fn lookups_by_every_name() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let rec = store.record(pulled(b"c1", "busybox", b"m1")).unwrap();
        let hex = id_hex(&rec.id).to_string();
        for name in [
            rec.id.as_str(),
            hex.as_str(),
            &hex[..12],
            "busybox",
            "busybox:latest",
            "docker.io/library/busybox:latest",
            &rec.repo_digests[0],
            &format!("busybox@{}", sha256_digest(b"m1")),
        ] {
            assert_eq!(store.resolve(name).as_ref(), Some(&rec), "{name}");
        }
        for absent in ["busybox:1.0", "alpine", &hex[..8], "Not A Ref"] {
            assert!(store.resolve(absent).is_none(), "{absent}");
        }
    }

    #[test]
    fn a_moved_tag_leaves_the_old_image_and_records_persist() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let old = store.record(pulled(b"c1", "busybox", b"m1")).unwrap();
        store.record(pulled(b"c1", "busybox:1.36", b"m1")).unwrap();
        let new = store.record(pulled(b"c2", "busybox", b"m2")).unwrap();
        let old = store.resolve(&old.id).unwrap();
        assert_eq!(old.repo_tags, ["docker.io/library/busybox:1.36"]);
        assert_eq!(store.resolve("busybox").unwrap().id, new.id);
        drop(store);
        let reopened = open(tmp.path());
        assert_eq!(reopened.list().len(), 2);
        assert_eq!(reopened.resolve("busybox").unwrap().id, new.id);
        assert_eq!(reopened.resolve("busybox:1.36").unwrap().id, old.id);
    }

    #[tokio::test]
    async fn removal_collects_unused_content_only() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let a = store.record(pulled(b"c1", "a", b"m1")).unwrap();
        let mut b = pulled(b"c2", "b", b"m2");
        // b shares a's layer and has one of its own.
        let own = sha256_digest(b"own layer");
        b.chain_ids.push(own.clone());
        b.blobs.push(own.clone());
        let b = store.record(b).unwrap();
        for blob in a.blobs.iter().chain(&b.blobs) {
            std::fs::write(store.content.blob_path(blob), b"").unwrap();
        }
        for chain_id in a.chain_ids.iter().chain(&b.chain_ids) {
            std::fs::create_dir_all(store.content.layer_path(chain_id)).unwrap();
        }

        assert_eq!(store.remove("b").await.unwrap().unwrap().id, b.id);
        assert!(store.resolve("b").is_none());
        assert!(!store.content.layer_path(&own).exists());
        assert!(!store.content.blob_path(&b.blobs[0]).exists());
        for dir in store.layer_dirs(&a) {
            assert!(dir.exists(), "a's layer kept");
        }
        assert!(
            store.remove("b").await.unwrap().is_none(),
            "absent: no error"
        );

        // A container that stacks a's layer keeps it after a goes.
        let container = tmp.path().join("containers/c1");
        std::fs::create_dir_all(&container).unwrap();
        let text = format!("{}\n", store.layer_dirs(&a)[0].display());
        std::fs::write(
            container.join(crate::image::snapshot::CONTAINER_LAYERS_FILE),
            text,
        )
        .unwrap();
        store.remove(&a.id).await.unwrap();
        assert!(store.layer_dirs(&a)[0].exists());
        assert!(!store.content.blob_path(&a.blobs[0]).exists());
        assert!(Store::open(tmp.path().join("meta"))
            .unwrap()
            .load_all::<ImageRecord>(KIND)
            .unwrap()
            .is_empty());
    }
}
