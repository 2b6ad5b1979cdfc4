//! The gRPC face of the shim: thin handlers over [`Container`], each in its
//! own span; errors become a `Status` in one place (`error.rs`).

use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use crius_proto::shim::v1::shim_server::Shim;
use crius_proto::shim::v1::{
    io_input, CreateRequest, CreateResponse, DeleteRequest, DeleteResponse, ExecSyncRequest,
    ExecSyncResponse, IoInput, IoOutput, KillRequest, KillResponse, ReopenLogRequest,
    ReopenLogResponse, ShutdownRequest, ShutdownResponse, StartRequest, StartResponse,
    StateRequest, StateResponse, UpdateRequest, UpdateResponse, WaitRequest, WaitResponse,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::container::{unix_nanos, Container};
use crate::error::ShimError;
use crate::streams;

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

fn nanos(time: Option<SystemTime>) -> i64 {
    time.map_or(0, unix_nanos)
}

/// The response of a streamed Exec or Attach.
type IoStream = Pin<Box<dyn Stream<Item = Result<IoOutput, Status>> + Send>>;

/// The first message of a streamed call, which says what to start.
async fn first_input(
    inputs: &mut Streaming<IoInput>,
    call: &str,
) -> Result<io_input::Kind, ShimError> {
    let first = inputs
        .message()
        .await
        .map_err(|status| anyhow::anyhow!("reading the first {call} message: {status}"))?;
    first.and_then(|input| input.kind).ok_or_else(|| {
        ShimError::InvalidArgument(format!("{call} input ended before its first message"))
    })
}

/// A response whose messages a session sends: the session gets the sender.
fn io_response() -> (streams::Outputs, Response<IoStream>) {
    let (outputs, responses) = mpsc::channel(streams::OUTPUT_BACKLOG);
    let stream: IoStream = Box::pin(ReceiverStream::new(responses));
    (outputs, Response::new(stream))
}

#[tonic::async_trait]
impl Shim for ShimService {
    #[tracing::instrument(skip_all, name = "Create")]
    async fn create(&self, request: Request<CreateRequest>) -> RpcResult<CreateResponse> {
        let request = request.into_inner();
        let pid = self.container.create(request.stdin, request.stdin_once)?;
        Ok(Response::new(CreateResponse {
            pid: pid.map_or(0, |pid| pid.as_raw() as u32),
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
        let output = self
            .container
            .exec_sync(&request.process_json, request.timeout_ms)
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

    type ExecStream = IoStream;

    /// Answers once the process runs, so that a refusal fails the call.
    #[tracing::instrument(skip_all, name = "Exec")]
    async fn exec(&self, request: Request<Streaming<IoInput>>) -> RpcResult<IoStream> {
        let mut inputs = request.into_inner();
        let io_input::Kind::Exec(start) = first_input(&mut inputs, "Exec").await? else {
            return Err(ShimError::InvalidArgument(
                "the first message of an Exec must be `exec`".into(),
            )
            .into());
        };
        let started = self.container.exec(&start)?;
        let (outputs, response) = io_response();
        tokio::spawn(streams::exec(started, inputs, outputs).in_current_span());
        Ok(response)
    }

    type AttachStream = IoStream;

    #[tracing::instrument(skip_all, name = "Attach")]
    async fn attach(&self, request: Request<Streaming<IoInput>>) -> RpcResult<IoStream> {
        let mut inputs = request.into_inner();
        let io_input::Kind::Attach(start) = first_input(&mut inputs, "Attach").await? else {
            return Err(ShimError::InvalidArgument(
                "the first message of an Attach must be `attach`".into(),
            )
            .into());
        };
        let attachment = self.container.attach(&start)?;
        let (outputs, response) = io_response();
        tokio::spawn(streams::attach(attachment, inputs, outputs).in_current_span());
        Ok(response)
    }

    #[tracing::instrument(skip_all, name = "Update")]
    async fn update(&self, request: Request<UpdateRequest>) -> RpcResult<UpdateResponse> {
        self.container
            .update(&request.into_inner().resources_json)?;
        Ok(Response::new(UpdateResponse {}))
    }
}
