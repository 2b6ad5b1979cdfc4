//! PortForward: which network namespace a pod's forwarded ports are dialled in.

use std::path::PathBuf;

use crate::error::CriError;
use crate::state::sandbox::PodRecord;
use crate::state::table::Table;

/// The network namespace a port-forward into pod `id` connects in: the
/// pod's pinned one, or None for a host-network pod (the host's own, as
/// containerd and CRI-O do). Errors: InvalidArgument for an empty id,
/// NotFound for an unknown pod, FailedPrecondition when the pod is not
/// ready (stopped: its namespace is gone).
pub fn port_forward_netns(pods: &Table<PodRecord>, id: &str) -> Result<Option<PathBuf>, CriError> {
    if id.is_empty() {
        return Err(CriError::invalid("pod_sandbox_id", "must not be empty"));
    }
    let pod = pods.find(id)?.snapshot();
    if !pod.is_ready() {
        return Err(CriError::FailedPrecondition(format!(
            "pod sandbox {} is not ready",
            pod.id
        )));
    }
    Ok(pod.netns)
}
