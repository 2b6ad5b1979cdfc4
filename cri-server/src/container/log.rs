//! ReopenContainerLog: kubelet renamed the container's log file to rotate
//! it, and the shim starts a new one at the same path.

use std::sync::Arc;

use super::{not_running, ContainerState};
use crate::error::CriError;
use crate::Crius;

/// Has the shim reopen the log at its path. Errors: NotFound for an unknown
/// id, FailedPrecondition when the container is not running, Unavailable
/// when its shim is unreachable. Idempotent.
pub async fn reopen_container_log(crius: &Arc<Crius>, id: &str) -> Result<(), CriError> {
    let record = crius.containers.find(id)?.snapshot();
    if record.state != ContainerState::Running {
        return Err(not_running(&record.id));
    }
    let shim = crius.shims.get(&record.id, &record.bundle).await?;
    Ok(shim.reopen_log().await?)
}
