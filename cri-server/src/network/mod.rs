//! Pod networking through CNI, behind the [`PodNetworking`] seam: [`Cni`]
//! runs the node's plugins and caches what each ADD used so that DEL undoes
//! exactly that; unit tests use `fake::FakeNetworking`.

mod cache;
pub mod cni;
pub mod conf;
#[cfg(test)]
pub mod fake;
mod invoke;
mod result;

use std::fmt;

use futures_util::future::BoxFuture;

pub use cni::{Cni, CniError, NetworkStatus, PodNetwork, PortMapping, Protocol};

/// The pod network seam: sets a pod's network up in its pinned network
/// namespace, checks it, and tears it down. Keyed by [`PodNetwork::id`].
pub trait PodNetworking: Send + Sync + fmt::Debug {
    /// CNI ADD: the pod's addresses. All or nothing: on error what was added
    /// is undone (or kept cached for a later `del` when the undo fails too).
    /// Errors: FailedPrecondition-mapped `NoConfig` when the node has no
    /// network config yet; plugin, result and cache faults. A leftover of an
    /// earlier ADD of the same pod is deleted first, so a retry is safe.
    fn add<'a>(&'a self, pod: &'a PodNetwork) -> BoxFuture<'a, Result<NetworkStatus, CniError>>;

    /// CNI DEL of what the pod's ADD cached. Idempotent: a pod with nothing
    /// cached (never added, or already deleted) succeeds doing nothing.
    /// Errors: the first plugin that failed (every plugin still gets its
    /// DEL; the cache is kept for a retry), cache faults.
    fn del<'a>(&'a self, pod: &'a PodNetwork) -> BoxFuture<'a, Result<(), CniError>>;

    /// CNI CHECK: the pod's network is still as ADD left it. Errors:
    /// `NotAdded` for a pod with no completed ADD; a failing plugin.
    fn check<'a>(&'a self, pod: &'a PodNetwork) -> BoxFuture<'a, Result<(), CniError>>;

    /// The CNI result the pod's last completed ADD returned, as the plugins
    /// wrote it (CNI spec JSON: `cniVersion`, `interfaces`, `ips`, `routes`,
    /// `dns`), for PodSandboxStatus' verbose info. `None`: nothing cached
    /// (never added, already deleted, or an ADD under way). Reads the
    /// cache; errors: cache faults.
    fn cached_result<'a>(
        &'a self,
        pod_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<serde_json::Value>, CniError>>;
}

impl PodNetworking for Cni {
    fn add<'a>(&'a self, pod: &'a PodNetwork) -> BoxFuture<'a, Result<NetworkStatus, CniError>> {
        Box::pin(Cni::add(self, pod))
    }

    fn del<'a>(&'a self, pod: &'a PodNetwork) -> BoxFuture<'a, Result<(), CniError>> {
        Box::pin(Cni::del(self, pod))
    }

    fn check<'a>(&'a self, pod: &'a PodNetwork) -> BoxFuture<'a, Result<(), CniError>> {
        Box::pin(Cni::check(self, pod))
    }

    fn cached_result<'a>(
        &'a self,
        pod_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<serde_json::Value>, CniError>> {
        Box::pin(Cni::cached_result(self, pod_id))
    }
}
