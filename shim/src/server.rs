//! The gRPC face of the shim: thin handlers over [`Container`], each in its
//! own span; errors become a `Status` in one place (`error.rs`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crius_proto::shim::v1::exec_sync_request::Process as ExecProcessKind;
use crius_proto::shim::v1::shim_server::Shim;
use crius_proto::shim::v1::{
    CreateRequest, CreateResponse, DeleteRequest, DeleteResponse, ExecSyncRequest,
    ExecSyncResponse, KillRequest, KillResponse, ReopenLogRequest, ReopenLogResponse,
    ShutdownRequest, ShutdownResponse, StartRequest, StartResponse, StateRequest, StateResponse,
    WaitRequest, WaitResponse,
};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::container::{unix_nanos, Container, CreateOptions, ExecRequest};
use crate::error::ShimError;

pub struct ShimService {
    container: Arc<Container>,
    /// Set to true to stop serving and exit.
    shutdown: watch::Sender<bool>,
}

impl ShimService {
    pub fn new(container: Arc<Container>, shutdown: watch::Sender<bool>) -> Self {
        ShimService {
            container,
            shutdown,
        }
    }
}

type RpcResult<T> = Result<Response<T>, Status>;

fn non_empty_path(path: String) -> Option<PathBuf> {
    (!path.is_empty()).then(|| PathBuf::from(path))
}

fn nanos(time: Option<SystemTime>) -> i64 {
    time.map_or(0, unix_nanos)
}

#[tonic::async_trait]
impl Shim for ShimService {
    #[tracing::instrument(skip_all, name = "Create")]
    async fn create(&self, request: Request<CreateRequest>) -> RpcResult<CreateResponse> {
        let request = request.into_inner();
        let pid = self.container.create(CreateOptions {
            bundle: non_empty_path(request.bundle),
            stdin: request.stdin,
            log_path: non_empty_path(request.log_path),
        })?;
        Ok(Response::new(CreateResponse {
            pid: pid.as_raw() as u32,
        }))
    }

    #[tracing::instrument(skip_all, name = "Start")]
    async fn start(&self, _: Request<StartRequest>) -> RpcResult<StartResponse> {
        self.container.start()?;
        Ok(Response::new(StartResponse {}))
    }

    #[tracing::instrument(skip_all, name = "State")]
    async fn state(&self, _: Request<StateRequest>) -> RpcResult<StateResponse> {
        let snapshot = self.container.snapshot();
        Ok(Response::new(StateResponse {
            id: self.container.id().to_owned(),
            pid: snapshot.pid.map_or(0, |pid| pid.as_raw() as u32),
            status: snapshot.status.into(),
            exit_code: snapshot.exit.map_or(0, |exit| exit.code),
            created_at: nanos(snapshot.created_at),
            started_at: nanos(snapshot.started_at),
            finished_at: nanos(snapshot.exit.map(|exit| exit.at)),
            deleted: snapshot.deleted,
            oom_killed: snapshot.exit.is_some_and(|exit| exit.oom_killed),
        }))
    }

    #[tracing::instrument(skip_all, name = "Kill")]
    async fn kill(&self, request: Request<KillRequest>) -> RpcResult<KillResponse> {
        let request = request.into_inner();
        self.container.kill(request.signal, request.all)?;
        Ok(Response::new(KillResponse {}))
    }

    #[tracing::instrument(skip_all, name = "Wait")]
    async fn wait(&self, _: Request<WaitRequest>) -> RpcResult<WaitResponse> {
        let exit = self.container.wait().await?;
        Ok(Response::new(WaitResponse {
            exit_code: exit.code,
            finished_at: unix_nanos(exit.at),
            oom_killed: exit.oom_killed,
        }))
    }

    #[tracing::instrument(skip_all, name = "ExecSync")]
    async fn exec_sync(&self, request: Request<ExecSyncRequest>) -> RpcResult<ExecSyncResponse> {
        let request = request.into_inner();
        let process = match request.process {
            Some(ExecProcessKind::ProcessJson(json)) => ExecRequest::Json(json),
            Some(ExecProcessKind::Fields(fields)) => ExecRequest::Fields(fields),
            None => return Err(ShimError::InvalidArgument("no exec process given".into()).into()),
        };
        let output = self
            .container
            .exec_sync(process, request.timeout_ms)
            .await?;
        Ok(Response::new(ExecSyncResponse {
            stdout: output.stdout,
            stderr: output.stderr,
            exit_code: output.exit_code,
            timed_out: output.timed_out,
        }))
    }

    #[tracing::instrument(skip_all, name = "Delete")]
    async fn delete(&self, _: Request<DeleteRequest>) -> RpcResult<DeleteResponse> {
        self.container.delete().await?;
        Ok(Response::new(DeleteResponse {}))
    }

    #[tracing::instrument(skip_all, name = "ReopenLog")]
    async fn reopen_log(&self, _: Request<ReopenLogRequest>) -> RpcResult<ReopenLogResponse> {
        self.container.reopen_log().await?;
        Ok(Response::new(ReopenLogResponse {}))
    }

    #[tracing::instrument(skip_all, name = "Shutdown")]
    async fn shutdown(&self, _: Request<ShutdownRequest>) -> RpcResult<ShutdownResponse> {
        if !self.container.may_shut_down() {
            return Err(ShimError::FailedPrecondition(
                "the container exists; delete it first".into(),
            )
            .into());
        }
        tracing::info!("shutting down");
        // The server finishes this reply before it stops.
        self.shutdown.send_replace(true);
        Ok(Response::new(ShutdownResponse {}))
    }
}
