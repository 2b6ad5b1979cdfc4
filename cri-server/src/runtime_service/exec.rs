//! ExecSync, and the streaming RPCs (Exec, Attach, PortForward): each
//! validates its request and answers a single-use URL on the streaming
//! server, where the client's connection runs it.

use std::sync::Arc;

use crius_proto::cri;

use super::Reply;
use crate::instrument::rpc;
use crate::streaming::StreamRequest;
use crate::{container, pod, Crius};

/// ExecSync (errors: see [`container::exec_sync`]).
pub async fn exec_sync(
    crius: &Arc<Crius>,
    req: cri::ExecSyncRequest,
) -> Reply<cri::ExecSyncResponse> {
    let id = req.container_id.clone();
    let deps = crius.container_deps();
    rpc("ExecSync", &id, container::exec_sync(&deps, req)).await
}

/// Exec: a URL that runs `req.cmd` in the container (errors: see
/// [`container::stream::validate_exec`]).
pub async fn exec(crius: &Arc<Crius>, req: cri::ExecRequest) -> Reply<cri::ExecResponse> {
    let id = req.container_id.clone();
    rpc("Exec", &id, async {
        container::stream::validate_exec(&crius.container_deps(), &req)?;
        let url = crius.streaming.url(StreamRequest::Exec(req))?;
        Ok(cri::ExecResponse { url })
    })
    .await
}

/// Attach: a URL that attaches to the container's init (errors: see
/// [`container::stream::validate_attach`]).
pub async fn attach(crius: &Arc<Crius>, req: cri::AttachRequest) -> Reply<cri::AttachResponse> {
    let id = req.container_id.clone();
    rpc("Attach", &id, async {
        container::stream::validate_attach(&crius.container_deps(), &req)?;
        let url = crius.streaming.url(StreamRequest::Attach(req))?;
        Ok(cri::AttachResponse { url })
    })
    .await
}

/// PortForward: a URL that forwards connections into the pod (errors: see
/// [`pod::port_forward_netns`]).
pub async fn port_forward(
    crius: &Arc<Crius>,
    req: cri::PortForwardRequest,
) -> Reply<cri::PortForwardResponse> {
    let id = req.pod_sandbox_id.clone();
    rpc("PortForward", &id, async {
        pod::port_forward_netns(&crius.pods, &req.pod_sandbox_id)?;
        let url = crius.streaming.url(StreamRequest::PortForward(req))?;
        Ok(cri::PortForwardResponse { url })
    })
    .await
}
