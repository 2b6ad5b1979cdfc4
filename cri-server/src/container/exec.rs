//! ExecSync: a command run to completion inside a running container.

use std::time::Duration;

use crius_proto::cri;

use anyhow::Context;

use super::{not_running, ContainerDeps, ContainerState};
use crate::error::CriError;
use crate::spec;

/// Runs `req.cmd` in the running container to completion: its output and
/// exit code. Errors: NotFound for an unknown id, FailedPrecondition when it
/// is not running, DeadlineExceeded when `req.timeout` (seconds) passes,
/// Unavailable when its shim is unreachable.
pub async fn exec_sync(
    deps: &ContainerDeps,
    req: cri::ExecSyncRequest,
) -> Result<cri::ExecSyncResponse, CriError> {
    let record = deps.containers.find(&req.container_id)?.snapshot();
    if record.state != ContainerState::Running {
        return Err(not_running(&record.id));
    }
    let process = spec::exec_process(&record.process, &req.cmd, false, None)?;
    let process_json = serde_json::to_vec(&process).context("encoding the exec process")?;
    let timeout = Duration::from_secs(req.timeout.max(0) as u64);
    let shim = deps.shims.get(&record.id, &record.bundle).await?;
    let reply = shim.exec_sync(process_json, timeout).await?;
    if reply.timed_out {
        return Err(CriError::DeadlineExceeded(format!(
            "command {:?} timed out after {}s",
            req.cmd, req.timeout
        )));
    }
    Ok(cri::ExecSyncResponse {
        stdout: reply.stdout,
        stderr: reply.stderr,
        exit_code: reply.exit_code,
    })
}
