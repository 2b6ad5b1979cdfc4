//! Exec and Attach: the checks the RPCs make before they hand out a
//! streaming URL, and the streamed process the URL's connection drives.

use anyhow::Context;
use crius_proto::cri;
use crius_proto::shim::v1 as pb;

use super::{not_running, ContainerDeps, ContainerState};
use crate::error::CriError;
use crate::shim_client::ProcessIo;
use crate::spec;

/// How an attach's end of stdin reaches the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachStdin {
    /// The container was created with `stdin_once` and no terminal: the
    /// first attacher's end of stdin closes the container's stdin, and the
    /// attach stays until the container exits. Otherwise the attacher's end
    /// of stdin ends its attach and the container's stdin stays open
    /// (containerd's `ContainerIO.Attach`, kept for kubectl's behaviour).
    pub closes_container_stdin: bool,
}

/// The checks of an Exec request, as kubelet's streaming server makes them
/// (`validateExecRequest`): InvalidArgument for an empty `container_id` or
/// `cmd`, for none of stdin, stdout and stderr, or for `tty` with `stderr`
/// (one terminal cannot carry two streams); NotFound for an unknown
/// container; FailedPrecondition unless it runs.
pub fn validate_exec(deps: &ContainerDeps, req: &cri::ExecRequest) -> Result<(), CriError> {
    running_for_exec(deps, req).map(drop)
}

/// The running container `req` execs into, once the request's own fields
/// are checked.
fn running_for_exec(
    deps: &ContainerDeps,
    req: &cri::ExecRequest,
) -> Result<crate::state::container::ContainerRecord, CriError> {
    check_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
    if req.cmd.is_empty() {
        return Err(CriError::invalid("cmd", "must not be empty"));
    }
    running(deps, &req.container_id)
}

/// The checks of an Attach request: as [`validate_exec`] without `cmd`.
pub fn validate_attach(deps: &ContainerDeps, req: &cri::AttachRequest) -> Result<(), CriError> {
    running_for_attach(deps, req).map(drop)
}

/// The running container `req` attaches to, once the request's own fields
/// are checked.
fn running_for_attach(
    deps: &ContainerDeps,
    req: &cri::AttachRequest,
) -> Result<crate::state::container::ContainerRecord, CriError> {
    check_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
    running(deps, &req.container_id)
}

/// Starts `req.cmd` in the running container with the container's own user,
/// env and cwd (a terminal with `tty`, sized `size` (columns, rows) when
/// the client's is known), its stdio streamed: the streams and the exit code
/// come through the returned [`ProcessIo`]. Errors as [`validate_exec`],
/// checked again (the container may have exited since); Unavailable when
/// its shim is unreachable.
pub async fn exec(
    deps: &ContainerDeps,
    req: &cri::ExecRequest,
    size: Option<(u16, u16)>,
) -> Result<ProcessIo, CriError> {
    let record = running_for_exec(deps, req)?;
    let process = spec::exec_process(&record.process, &req.cmd, req.tty, size)?;
    let process_json = serde_json::to_vec(&process).context("encoding the exec process")?;
    let shim = deps.shims.get(&record.id, &record.bundle).await?;
    Ok(shim
        .exec(pb::ExecStart {
            process_json,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
        })
        .await?)
}

/// Attaches to the running container's init: its output from now on and,
/// with `stdin`, its stdin; with how the attacher's end of stdin is to be
/// handled. Errors as [`validate_attach`]; Unavailable when its shim is
/// unreachable.
pub async fn attach(
    deps: &ContainerDeps,
    req: &cri::AttachRequest,
) -> Result<(ProcessIo, AttachStdin), CriError> {
    let record = running_for_attach(deps, req)?;
    let shim = deps.shims.get(&record.id, &record.bundle).await?;
    let io = shim
        .attach(pb::AttachStart {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
        })
        .await?;
    let stdin = AttachStdin {
        closes_container_stdin: record.config.stdin_once && !record.config.tty,
    };
    Ok((io, stdin))
}

fn check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<(), CriError> {
    if tty && stderr {
        return Err(CriError::invalid(
            "stderr",
            "tty and stderr cannot both be true: a terminal carries one output stream",
        ));
    }
    if !stdin && !stdout && !stderr {
        return Err(CriError::invalid(
            "stdin",
            "one of stdin, stdout or stderr must be set",
        ));
    }
    Ok(())
}

/// The record of container `id` if it runs.
fn running(
    deps: &ContainerDeps,
    id: &str,
) -> Result<crate::state::container::ContainerRecord, CriError> {
    if id.is_empty() {
        return Err(CriError::invalid("container_id", "must not be empty"));
    }
    let record = deps.containers.find(id)?.snapshot();
    if record.state != ContainerState::Running {
        return Err(not_running(&record.id));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_carries_no_stderr() {
        let err = check_streams(false, true, true, true).unwrap_err();
        assert!(
            matches!(&err, CriError::InvalidArgument { field: "stderr", message } if message.contains("tty and stderr")),
            "{err}"
        );
        check_streams(true, true, false, true).unwrap();
    }

    #[test]
    fn some_stream_is_needed() {
        let err = check_streams(false, false, false, false).unwrap_err();
        assert!(
            matches!(&err, CriError::InvalidArgument { message, .. } if message.contains("one of stdin, stdout or stderr")),
            "{err}"
        );
        for (stdin, stdout, stderr) in [
            (true, false, false),
            (false, true, false),
            (false, false, true),
        ] {
            check_streams(stdin, stdout, stderr, false).unwrap();
        }
    }
}
