//! Deterministic OCI test images built from this host's Debian dynamic busybox,
//! and a small client that pushes them to a registry. The `crius-test-images`
//! binary drives both; crius's tests may use the library to build an image in
//! memory and to know what `crius/layers:latest` unpacks to.

pub mod busybox;
pub mod catalog;
pub mod layer;
pub mod oci;
pub mod registry;

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("running {command}: {detail}")]
    Command { command: String, detail: String },
    #[error("hard link {link} -> {target}: the target is not a regular file of the same layer")]
    DanglingHardLink { link: String, target: String },
    #[error("writing a layer: {0}")]
    Write(#[from] io::Error),
}
