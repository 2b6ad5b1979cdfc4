//! Images: references, pulling from registries into a content store, layers
//! unpacked for overlayfs, the image index, and container root filesystems.

pub mod reference;
pub mod unpack;
