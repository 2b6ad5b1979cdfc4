//! ReopenContainerLog: kubelet renamed the container's log file to rotate
//! it, and the shim starts a new one at the same path.

use super::{not_running, ContainerDeps, ContainerState};
use crate::error::CriError;

/// Has the shim reopen the log at its path. Errors: NotFound for an unknown
/// id, FailedPrecondition when the container is not running, Unavailable
/// when its shim is unreachable. Idempotent.
pub async fn reopen_container_log(deps: &ContainerDeps, id: &str) -> Result<(), CriError> {
    let record = deps.containers.find(id)?.snapshot();
    if record.state != ContainerState::Running {
        return Err(not_running(&record.id));
    }
    let shim = deps.shims.get(&record.id, &record.bundle).await?;
    Ok(shim.reopen_log().await?)
}
