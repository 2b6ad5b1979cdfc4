//! ReopenContainerLog: kubelet renamed the container's log file to rotate
//! it, and the shim starts a new one at the same path.

use std::sync::Arc;

use super::lifecycle::find;
use super::ContainerState;
use crate::error::CriError;
use crate::shim_client::ShimError;
use crate::Crius;

pub async fn reopen_container_log(crius: &Arc<Crius>, id: &str) -> Result<(), CriError> {
    let record = find(crius, id)?.snapshot();
    if record.state != ContainerState::Running {
        return Err(not_running(&record.id));
    }
    let shim = crius
        .shims
        .get(&record.id, &record.bundle)
        .await
        .map_err(anyhow::Error::from)?;
    match shim.reopen_log().await {
        Ok(()) => Ok(()),
        // It exited since the record was read.
        Err(ShimError::Call { status, .. }) if status.code() == tonic::Code::FailedPrecondition => {
            Err(not_running(&record.id))
        }
        Err(e) => Err(anyhow::Error::from(e).into()),
    }
}

fn not_running(id: &str) -> CriError {
    CriError::FailedPrecondition(format!("container {id} is not running"))
}
