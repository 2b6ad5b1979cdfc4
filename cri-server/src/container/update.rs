//! UpdateContainerResources: kubelet's in-place resize (KEP-1287) and
//! `crictl update` change a created or running container's cgroup limits
//! without a restart. The new `linux.resources` is built here with the spec
//! builder's rules; the shim applies it through the container's runtime
//! (libcgroups, or `runc update`); the record keeps what is then in force,
//! for ContainerStatus.resources and across daemon restarts.

use crius_proto::cri;

use super::{not_running, ContainerDeps, ContainerState};
use crate::error::CriError;
use crate::spec;

/// Applies `resources` to the container's cgroup: each field it sets
/// replaces the limit in force, a zero or empty one keeps it (see
/// [`spec::updated_resources`]). Waits for the container's other lifecycle
/// calls. Errors: NotFound for an unknown id; FailedPrecondition when the
/// container is neither created nor running; InvalidArgument naming
/// `linux.<field>` for a bad value (nothing applied); the shim's error when
/// the cgroup refuses a value (cgroup v1: a memory limit below the usage,
/// EBUSY), after which the limits in force, and the record, are unchanged.
/// Idempotent.
pub async fn update_container_resources(
    deps: &ContainerDeps,
    id: &str,
    resources: &cri::LinuxContainerResources,
) -> Result<(), CriError> {
    let entry = deps.containers.find(id)?;
    let _op = entry.op.lock().await;
    let record = entry.snapshot();
    if !matches!(
        record.state,
        ContainerState::Created | ContainerState::Running
    ) {
        return Err(not_running(&record.id));
    }
    let (linux, in_force) =
        spec::updated_resources(record.resources.as_ref(), resources, &deps.host)?;
    let json = serde_json::to_vec(&linux)
        .map_err(|e| anyhow::Error::new(e).context("encoding linux.resources"))?;
    let shim = deps.shims.get(&record.id, &record.bundle).await?;
    shim.update(json).await?;
    deps.containers
        .update(&entry, |r| r.resources = Some(in_force))?;
    tracing::info!(container = %record.id, "resources updated");
    Ok(())
}
