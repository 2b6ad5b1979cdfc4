//! ExecSync, and the streaming RPCs (Exec, Attach, PortForward) that the
//! streaming issue builds.

use std::sync::Arc;

use crius_proto::cri;

use super::Reply;
use crate::instrument::{rpc, unimplemented};
use crate::{container, Crius};

/// ExecSync (errors: see [`container::exec_sync`]).
pub async fn exec_sync(
    crius: &Arc<Crius>,
    req: cri::ExecSyncRequest,
) -> Reply<cri::ExecSyncResponse> {
    let id = req.container_id.clone();
    let deps = crius.container_deps();
    rpc("ExecSync", &id, container::exec_sync(&deps, req)).await
}

/// Not built yet: UNIMPLEMENTED naming the RPC.
pub fn exec() -> Reply<cri::ExecResponse> {
    unimplemented("Exec")
}

/// Not built yet: UNIMPLEMENTED naming the RPC.
pub fn attach() -> Reply<cri::AttachResponse> {
    unimplemented("Attach")
}

/// Not built yet: UNIMPLEMENTED naming the RPC.
pub fn port_forward() -> Reply<cri::PortForwardResponse> {
    unimplemented("PortForward")
}
