//! Images: references, pulling from registries into a content store, layers
//! unpacked for overlayfs, the image index, and container root filesystems.

pub mod content;
pub mod pull;
pub mod reference;
pub mod snapshot;
pub mod store;
pub mod unpack;

use std::io;

pub use pull::RegistryAuth;
pub use reference::{Reference, ReferenceError};
pub use store::{ImageConfig, ImageRecord, ImageStore};

use crate::state::StoreError;
use unpack::UnpackError;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    InvalidReference(#[from] ReferenceError),
    #[error("image {reference} not found: {detail}")]
    NotFound { reference: String, detail: String },
    #[error("pulling {reference}: {detail}")]
    Pull { reference: String, detail: String },
    #[error("{what}: content has digest {actual}, expected {expected}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("unpacking layer {digest}: {source}")]
    Unpack { digest: String, source: UnpackError },
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Mount(String),
}

impl ImageError {
    pub fn io(context: impl Into<String>, source: io::Error) -> ImageError {
        ImageError::Io {
            context: context.into(),
            source,
        }
    }
}
