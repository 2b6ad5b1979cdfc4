//! crius: the CRI server. `criusd` is a thin binary over this library.

pub mod config;
pub mod error;
pub mod image;
pub mod image_service;
mod instrument;
pub mod namespaces;
pub mod network;
pub mod runtime_service;
pub mod server;
pub mod spec;
pub mod state;

use std::sync::RwLock;

use config::Config;
use state::Store;

/// What every service shares: the effective config, the state store and the
/// runtime settings kubelet pushes.
pub struct Crius {
    pub config: Config,
    pub store: Store,
    /// Pulled images: content, unpacked layers and the index.
    pub images: image::ImageStore,
    pod_cidr: RwLock<String>,
}

impl Crius {
    pub fn open(config: Config) -> anyhow::Result<Crius> {
        use anyhow::Context;
        let meta = config.root.join("meta");
        let store = Store::open(&meta)
            .with_context(|| format!("opening state store {}", meta.display()))?;
        std::fs::create_dir_all(&config.state)
            .with_context(|| format!("creating state dir {}", config.state.display()))?;
        let images = image::ImageStore::open(&config, store.clone()).with_context(|| {
            format!("opening the image store under {}", config.root.display())
        })?;
        Ok(Crius {
            images,
            config,
            store,
            pod_cidr: RwLock::new(String::new()),
        })
    }

    pub fn pod_cidr(&self) -> String {
        self.pod_cidr.read().expect("pod_cidr lock").clone()
    }

    pub fn set_pod_cidr(&self, cidr: String) {
        *self.pod_cidr.write().expect("pod_cidr lock") = cidr;
    }
}
