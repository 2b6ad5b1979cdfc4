//! Pod sandboxes: their life cycle. A pod is its pinned namespaces, its
//! network (CNI), its cgroup parent and, when its containers share a PID
//! namespace, its pause process (`pause`). Its record lives in
//! `state::sandbox`: RunPodSandbox writes there what it resolved for the
//! pod's containers (hostname, namespace paths, files, cgroup parent).

mod files;
mod lifecycle;
mod pause;
mod port_forward;
#[cfg(test)]
pub(crate) mod testing;
mod userns;

// The record, for the life cycle's submodules.
use crate::state::sandbox::{pod_name, PodFiles, PodRecord, PodState};

pub use lifecycle::{remove_pod, run_pod, stop_pod};
pub use pause::recover;
pub use port_forward::port_forward_netns;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::cgroups::CgroupDriver;
use crate::events::Events;
use crate::namespaces::NamespacePinner;
use crate::network::PodNetworking;
use crate::runtime_handlers::RuntimeHandlers;
use crate::shim_client::Shims;
use crate::spec::HostCapabilities;
use crate::state::table::Table;

/// What the pod's life cycle uses, and nothing else: built by the
/// composition root (`Crius::pod_deps`) or by a test around fakes. Cheap to
/// clone; a detached task holds its own clone.
#[derive(Clone)]
pub struct PodDeps {
    /// The pods' records and name reservations.
    pub pods: Arc<Table<PodRecord>>,
    /// Pod networking (CNI ADD/DEL).
    pub cni: Arc<dyn PodNetworking>,
    /// Pinning the pod's namespaces.
    pub namespaces: Arc<dyn NamespacePinner>,
    /// Names and removes the pod's cgroup.
    pub cgroups: Arc<dyn CgroupDriver>,
    /// Where each pod's dir (`<pods_dir>/<id>`) is made.
    pub pods_dir: PathBuf,
    /// The host's resolv.conf, copied for pods without a DNS config.
    pub host_resolv_conf: PathBuf,
    /// The pause processes' shims (shared with the containers': one
    /// libcontainer state dir, ids that never collide).
    pub shims: Arc<Shims>,
    /// Where each pause process's bundle (`<bundles_dir>/<16 hex of the
    /// pod id>`) is made (`<state>/p`: a short path, for the shim's socket).
    pub bundles_dir: PathBuf,
    /// What this host's cgroups can enforce, for the pause process's spec.
    pub host: Arc<HostCapabilities>,
    /// The runtime handlers a pod may name; the pause process runs on the
    /// default one.
    pub handlers: Arc<RuntimeHandlers>,
    /// Where the pod's transitions are announced (GetContainerEvents).
    pub events: Arc<Events>,
}

/// PodSandboxStatus' verbose `info`: one key, "info", holding
/// [`PodRecord::verbose_info`] with the pod's cached CNI result and whether
/// its pinned netns is gone. Never fails: a cache that does not read leaves
/// `cniResult` null, with a warning.
pub async fn status_info(deps: &PodDeps, pod: &PodRecord) -> HashMap<String, String> {
    let cni_result = match deps.cni.cached_result(&pod.id).await {
        Ok(result) => result,
        Err(e) => {
            tracing::warn!(pod = %pod.id, "reading the pod's CNI result: {e}");
            None
        }
    };
    let netns_closed = match &pod.netns {
        Some(path) => !tokio::fs::try_exists(path).await.unwrap_or(false),
        None => false,
    };
    let info = pod.verbose_info(cni_result, netns_closed);
    HashMap::from([("info".to_string(), info.to_string())])
}

/// Fills what a record written by an older criusd lacks, as RunPodSandbox
/// resolves it today: the containers' hostname and the pod files' paths
/// (which such a criusd wrote in the pod's dir). Run on each pod record as
/// the table loads; the record is persisted with its next update. Leaves a
/// complete record as it is; idempotent. Reads the node's hostname.
pub fn upgrade_record(pod: &mut PodRecord) {
    if pod.hostname.is_empty() {
        pod.hostname = files::containers_hostname(&pod.config, pod.utsns.is_some());
    }
    if pod.files == PodFiles::default() {
        pod.files = files::paths(&pod.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::table::Table;
    use crate::state::Store;

    /// A pod record as the criusd before the resolved fields wrote it.
    const OLD_RECORD: &str = r#"{
        "id": "p1",
        "config": {"metadata": {"name": "web", "uid": "u1", "namespace": "ns", "attempt": 0},
                   "hostname": "web-0"},
        "runtime_handler": "",
        "created_at": 1,
        "state": "Ready",
        "dir": "/run/crius/pods/p1",
        "netns": "/run/crius/pods/p1/ns/net",
        "ipcns": "/run/crius/pods/p1/ns/ipc",
        "utsns": "/run/crius/pods/p1/ns/uts",
        "ip": "10.0.0.2",
        "additional_ips": [],
        "cgroup_parent": "/crius/pod-p1",
        "owns_cgroup": true
    }"#;

    #[test]
    fn an_old_record_gets_what_run_pod_sandbox_resolves_today() {
        let mut pod: PodRecord = serde_json::from_str(OLD_RECORD).unwrap();
        upgrade_record(&mut pod);
        assert_eq!(pod.hostname, "web-0");
        assert_eq!(
            pod.files,
            PodFiles {
                resolv_conf: "/run/crius/pods/p1/resolv.conf".into(),
                hosts: "/run/crius/pods/p1/hosts".into(),
                hostname: "/run/crius/pods/p1/hostname".into(),
            }
        );
        // Without a UTS namespace of its own, the pod's containers see the node's.
        let mut host_net: PodRecord = serde_json::from_str(OLD_RECORD).unwrap();
        host_net.utsns = None;
        upgrade_record(&mut host_net);
        assert_eq!(host_net.hostname, files::node_hostname());
    }

    #[test]
    fn a_complete_record_is_left_as_it_is() {
        let mut pod: PodRecord = serde_json::from_str(OLD_RECORD).unwrap();
        pod.hostname = "kept".into();
        pod.files.resolv_conf = "/elsewhere/resolv.conf".into();
        let before = serde_json::to_value(&pod).unwrap();
        upgrade_record(&mut pod);
        assert_eq!(serde_json::to_value(&pod).unwrap(), before);
    }

    /// After a restart of criusd over an older one's state, the table holds
    /// the record upgraded, under its reserved name.
    #[test]
    fn an_old_record_on_disk_loads_upgraded() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("pods")).unwrap();
        std::fs::write(tmp.path().join("pods/p1.json"), OLD_RECORD).unwrap();
        let pods: Table<PodRecord> =
            Table::load_upgrading(Store::open(tmp.path()).unwrap(), upgrade_record).unwrap();
        let pod = pods.find("p1").unwrap().snapshot();
        assert_eq!(pod.hostname, "web-0");
        assert_eq!(
            pod.files.hosts,
            std::path::Path::new("/run/crius/pods/p1/hosts")
        );
        assert_eq!(pod.state, PodState::Ready);
        assert!(pods.reserve_name(&pod_name(&pod.config), "other").is_err());
    }
}
