//! Images: references, pulling from registries into a content store, layers
//! unpacked for overlayfs, the image index, and container root filesystems.

pub mod content;
pub mod hosts;
pub mod pinned;
pub mod pull;
pub mod reference;
pub mod snapshot;
pub mod store;
pub mod unpack;
pub mod volume;

use std::io;

pub use pull::RegistryAuth;
pub use reference::{Reference, ReferenceError};
pub use store::{ImageConfig, ImageRecord, ImageStore};

use crate::error::CriError;
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
    /// The registry (every endpoint tried) refused the pull's credentials
    /// or wanted some; `detail` lists each endpoint's answer.
    #[error("pulling {reference}: registry {registry} refused the credentials given (none, wrong, or not allowed to pull): {detail}")]
    Unauthenticated {
        reference: String,
        registry: String,
        detail: String,
    },
    /// The HTTP client for registries could not be built (TLS set-up).
    #[error("registry client: {0}")]
    Client(String),
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
    /// An image volume's `image_sub_path` that names no path inside the
    /// image; `mount` is the CRI mount's index.
    #[error("mounts[{mount}].image_sub_path {sub_path:?}: {reason}")]
    SubPath {
        mount: usize,
        sub_path: String,
        reason: String,
    },
    /// The image cannot be removed: `container` mounts it as a volume.
    #[error("image {image} is in use: container {container} mounts it as an image volume")]
    InUse { image: String, container: String },
    /// An entry of the config's `pinned_images` that names no image.
    #[error("config key pinned_images: {entry:?}: {reason}")]
    PinnedImage { entry: String, reason: String },
}

/// The one mapping of image errors to CRI codes: a malformed reference is
/// InvalidArgument naming `image.image` (the field of every ImageService
/// request that names an image); an image the registry does not have is
/// NotFound; credentials the registry refuses are Unauthenticated naming
/// the registry; an image volume's bad `image_sub_path` is InvalidArgument
/// naming `config.mounts` (the message names the mount and the path); an
/// image a container mounts is FailedPrecondition for its removal (naming
/// the container, as kubelet's image GC expects); a failed pull, a digest
/// mismatch, unpacking, the disk, the store and mounts are Internal with
/// the cause chain (as is a bad `pinned_images` entry, which stops criusd
/// at start).
impl From<ImageError> for CriError {
    fn from(e: ImageError) -> CriError {
        match e {
            ImageError::InvalidReference(e) => CriError::invalid("image.image", e.to_string()),
            ImageError::NotFound { .. } => CriError::NotFound(e.to_string()),
            ImageError::Unauthenticated { .. } => CriError::Unauthenticated(e.to_string()),
            ImageError::SubPath { .. } => CriError::invalid("config.mounts", e.to_string()),
            ImageError::InUse { .. } => CriError::FailedPrecondition(e.to_string()),
            other => CriError::Internal(anyhow::Error::new(other)),
        }
    }
}

impl ImageError {
    pub fn io(context: impl Into<String>, source: io::Error) -> ImageError {
        ImageError::Io {
            context: context.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::{Code, Status};

    fn status_of(e: ImageError) -> Status {
        CriError::from(e).into()
    }

    #[test]
    fn a_bad_reference_is_invalid_argument_naming_the_field_and_the_reference() {
        let bad = Reference::parse("Bad").unwrap_err();
        let s = status_of(ImageError::InvalidReference(bad));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(
            s.message().starts_with("image.image: ") && s.message().contains("Bad"),
            "{}",
            s.message()
        );
    }

    #[test]
    fn an_image_the_registry_lacks_is_not_found_naming_it() {
        let s = status_of(ImageError::NotFound {
            reference: "docker.io/library/nope:1".into(),
            detail: "manifest unknown".into(),
        });
        assert_eq!(s.code(), Code::NotFound);
        assert!(
            s.message().contains("docker.io/library/nope:1"),
            "{}",
            s.message()
        );
    }

    #[test]
    fn pull_content_and_disk_faults_are_internal_naming_what_failed() {
        let errors = [
            (
                ImageError::Pull {
                    reference: "docker.io/library/busybox:1".into(),
                    detail: "401 Unauthorized".into(),
                },
                "busybox",
            ),
            (
                ImageError::DigestMismatch {
                    what: "layer".into(),
                    expected: "sha256:aa".into(),
                    actual: "sha256:bb".into(),
                },
                "sha256:aa",
            ),
            (
                ImageError::io(
                    "writing blob sha256:cc",
                    io::Error::from_raw_os_error(libc::ENOSPC),
                ),
                "sha256:cc",
            ),
            (
                ImageError::Unpack {
                    digest: "sha256:dd".into(),
                    source: UnpackError::Unsafe {
                        entry: "../etc/passwd".into(),
                        reason: "climbs out".into(),
                    },
                },
                "sha256:dd",
            ),
            (
                ImageError::Store(StoreError::Io {
                    path: "/var/lib/crius/meta/images/x.json".into(),
                    source: io::Error::from_raw_os_error(libc::EIO),
                }),
                "x.json",
            ),
            (ImageError::Mount("overlay on /r: EINVAL".into()), "overlay"),
        ];
        for (e, named) in errors {
            let s = status_of(e);
            assert_eq!(s.code(), Code::Internal);
            assert!(s.message().contains(named), "{}", s.message());
        }
    }
}
