//! ReopenContainerLog: kubelet renamed the container's log file to rotate
//! it, and the shim starts a new one at the same path.

use std::sync::Arc;

use super::{not_running, shim_call_error, ContainerState};
use crate::error::CriError;
use crate::Crius;

/// Has the shim reopen the log at its path. Errors: NotFound for an unknown
/// id, FailedPrecondition when the container is not running. Idempotent.
pub async fn reopen_container_log(crius: &Arc<Crius>, id: &str) -> Result<(), CriError> {
    let record = crius.containers.find(id)?.snapshot();
    if record.state != ContainerState::Running {
        return Err(not_running(&record.id));
    }
    let shim = crius
        .shims
        .get(&record.id, &record.bundle)
        .await
        .map_err(anyhow::Error::from)?;
    shim.reopen_log()
        .await
        .map_err(|e| shim_call_error(&record.id, e))
}
