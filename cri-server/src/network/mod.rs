//! Pod networking through CNI.

mod cache;
pub mod cni;
pub mod conf;
mod invoke;
mod result;

pub use cni::{Cni, CniError, NetworkStatus, PodNetwork, PortMapping, Protocol};
