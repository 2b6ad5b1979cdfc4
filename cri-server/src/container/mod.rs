//! Containers: their life cycle through the shim. Their records live in
//! `state::container`; the pod a container is created in comes as its
//! record (`state::sandbox`), never from the pod concern.

mod exec;
mod idmapped;
mod lifecycle;
mod log;
mod signal;
mod stops;
pub mod stream;
mod update;

use crate::error::CriError;
// The records, for the life cycle's submodules.
use crate::state::container::{container_name, reported_image, ContainerRecord, ContainerState};

pub use exec::exec_sync;
pub use lifecycle::{create_container, recover, remove_container, start_container, stop_container};
pub use log::reopen_container_log;
pub use stops::StopDeadlines;
pub use update::update_container_resources;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::cgroups::CgroupDriver;
use crate::events::Events;
use crate::image::snapshot::Snapshotter;
use crate::image::ImageStore;
use crate::runtime_handlers::RuntimeHandlers;
use crate::shim_client::Shims;
use crate::spec::HostCapabilities;
use crate::state::table::Table;

/// What the container's life cycle, ExecSync and ReopenContainerLog use,
/// and nothing else: built by the composition root
/// (`Crius::container_deps`) or by a test around fakes. Cheap to clone; a
/// detached task (and each exit watcher) holds its own clone.
#[derive(Clone)]
pub struct ContainerDeps {
    /// The containers' records and name reservations.
    pub containers: Arc<Table<ContainerRecord>>,
    /// Pulled images: the container's image and its layers.
    pub images: Arc<ImageStore>,
    /// The containers' shims (spawned, or connected again after a restart).
    pub shims: Arc<Shims>,
    /// The containers' root filesystems and the layers they hold.
    pub snapshotter: Arc<dyn Snapshotter>,
    /// Names the container's cgroup under its pod's.
    pub cgroups: Arc<dyn CgroupDriver>,
    /// What this host's cgroups can enforce, for the spec.
    pub host: Arc<HostCapabilities>,
    /// Where each container's bundle (`<bundles_dir>/<16 hex of the id>`) is made.
    pub bundles_dir: PathBuf,
    /// The daemon's root and state dirs: a bind's missing `host_path` under
    /// them is refused rather than created.
    pub protected_host_dirs: Vec<PathBuf>,
    /// The stop deadline each container's concurrent stops share: one for
    /// the daemon, so that a later stop can shorten an earlier one.
    pub stops: Arc<StopDeadlines>,
    /// The runtime handlers: a container runs on its pod's.
    pub handlers: Arc<RuntimeHandlers>,
    /// Where the life cycle's transitions are announced (GetContainerEvents).
    pub events: Arc<Events>,
}

/// ContainerStatus' verbose `info`: one key, "info", holding
/// [`ContainerRecord::verbose_info`] with the OCI spec read from the
/// bundle's config.json. Never fails: a bundle that is gone (or a spec that
/// does not read) leaves `runtimeSpec` null, with a warning for the latter.
pub async fn status_info(record: &ContainerRecord) -> HashMap<String, String> {
    let path = record.bundle.join("config.json");
    let spec = match tokio::fs::read(&path).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| tracing::warn!(path = %path.display(), "unreadable runtime spec: {e}"))
            .ok(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(path = %path.display(), "reading the runtime spec: {e}");
            None
        }
    };
    HashMap::from([("info".to_string(), record.verbose_info(spec).to_string())])
}

/// The answer to a call that needs a running container; a shim that saw
/// its container stop answers the same (`From<ShimError> for CriError`).
fn not_running(id: &str) -> CriError {
    CriError::not_running(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crius_proto::cri;

    fn record(state: ContainerState, exit_code: i32) -> ContainerRecord {
        crate::state::container::fixture(state, exit_code)
    }

    /// A record as create_container makes it: its resources from the spec
    /// built for `resources`.
    fn created_with(
        resources: Option<cri::LinuxContainerResources>,
        host: &crate::spec::HostCapabilities,
    ) -> ContainerRecord {
        let mut r = record(ContainerState::Running, 0);
        r.config.linux = Some(cri::LinuxContainerConfig {
            resources,
            security_context: None,
        });
        let rootfs = tempfile::tempdir().unwrap();
        let spec = crate::spec::container_spec(&crate::spec::ContainerSpecInput {
            container_id: &r.id,
            sandbox_id: &r.pod_id,
            image_name: "busybox",
            config: &r.config,
            sandbox: &Default::default(),
            image: &crate::spec::ImageConfigView {
                cmd: vec!["sh".into()],
                ..Default::default()
            },
            rootfs: rootfs.path(),
            namespaces: &crate::spec::SandboxNamespaces {
                network: Some("/run/crius/ns/p/net".into()),
                ipc: Some("/run/crius/ns/p/ipc".into()),
                uts: Some("/run/crius/ns/p/uts".into()),
                pid: None,
                user: None,
            },
            user_mappings: None,
            target_pid_namespace: None,
            cgroups_path: "/crius/pod-p1/c1".into(),
            hostname: "web",
            resolv_conf: None,
            hosts_file: None,
            hostname_file: None,
            shm_path: None,
            host,
            protected_host_dirs: &[],
            image_volumes: &Default::default(),
        })
        .unwrap();
        r.resources = crate::spec::applied_resources(&spec);
        r
    }

    fn host() -> crate::spec::HostCapabilities {
        crate::spec::HostCapabilities {
            cgroup_v2: true,
            hugetlb: true,
            memory_swap: true,
            min_oom_score_adj: -500,
            apparmor: false,
            own_capabilities: (1 << 41) - 1,
            mount_setattr: true,
            idmapped_layers: true,
        }
    }

    #[test]
    fn status_reports_the_applied_limits() {
        let requested = cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            oom_score_adj: -998,
            cpuset_cpus: "0-1".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![cri::HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }],
            unified: [("memory.high".to_string(), "60M".to_string())].into(),
            ..Default::default()
        };
        let status = created_with(Some(requested), &host())
            .status(crate::state::container::ImageNames::default());
        let linux = status.resources.unwrap().linux.unwrap();
        assert_eq!(linux.cpu_period, 100_000);
        assert_eq!(linux.cpu_quota, 50_000);
        assert_eq!(linux.cpu_shares, 512);
        assert_eq!(linux.memory_limit_in_bytes, 64 << 20);
        assert_eq!(linux.memory_swap_limit_in_bytes, 64 << 20, "swap pinned");
        assert_eq!(linux.oom_score_adj, -500, "clamped to the daemon's");
        assert_eq!(linux.cpuset_cpus, "0-1");
        assert_eq!(linux.cpuset_mems, "0");
        assert_eq!(
            linux.hugepage_limits,
            vec![cri::HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }]
        );
        assert_eq!(linux.unified.len(), 1);
        assert_eq!(linux.unified["memory.high"], "60M");
    }

    #[test]
    fn status_without_requested_limits_reports_none_applied() {
        let status =
            created_with(None, &host()).status(crate::state::container::ImageNames::default());
        assert_eq!(
            status.resources,
            Some(cri::ContainerResources {
                linux: Some(cri::LinuxContainerResources::default()),
                windows: None,
            })
        );
        // Where the host cannot limit swap, none is reported.
        let no_swap = crate::spec::HostCapabilities {
            memory_swap: false,
            ..host()
        };
        let limited = cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        };
        let linux = created_with(Some(limited), &no_swap)
            .status(crate::state::container::ImageNames::default())
            .resources
            .unwrap()
            .linux
            .unwrap();
        assert_eq!(
            (
                linux.memory_limit_in_bytes,
                linux.memory_swap_limit_in_bytes
            ),
            (64 << 20, 0)
        );
    }

    #[test]
    fn a_record_written_before_resources_were_kept_reports_none() {
        let mut json = serde_json::to_value(created_with(None, &host())).unwrap();
        json.as_object_mut().unwrap().remove("resources");
        let old: ContainerRecord = serde_json::from_value(json).unwrap();
        assert_eq!(old.resources, None);
        assert_eq!(
            old.status(crate::state::container::ImageNames::default())
                .resources,
            None
        );
    }

    #[test]
    fn a_shim_that_saw_its_container_stop_means_not_running() {
        let stopped = crate::shim_client::ShimError::Call {
            id: "c1".into(),
            call: "ExecSync",
            status: tonic::Status::failed_precondition(
                "container c1: exec: not allowed while the container is stopped",
            ),
        };
        let status = tonic::Status::from(CriError::from(stopped));
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(status.message(), not_running("c1").to_string());
    }
}
