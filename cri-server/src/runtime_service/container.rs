//! CreateContainer, StartContainer, StopContainer, RemoveContainer,
//! ContainerStatus, ListContainers, ReopenContainerLog (and the container
//! RPCs not built yet).

use std::sync::Arc;

use crius_proto::cri;

use super::Reply;
use crate::error::CriError;
use crate::instrument::{rpc, unimplemented};
use crate::state::container::ContainerRecord;
use crate::state::sandbox::PodState;
use crate::{container, Crius};

/// CreateContainer in a ready pod: the new container's id. Errors:
/// NotFound for an unknown pod, FailedPrecondition for a pod not ready,
/// else as [`container::create_container`].
pub async fn create_container(
    crius: &Arc<Crius>,
    req: cri::CreateContainerRequest,
) -> Reply<cri::CreateContainerResponse> {
    let pod_id = req.pod_sandbox_id.clone();
    rpc("CreateContainer", &pod_id, async {
        let pod = crius.pods.find(&pod_id)?.snapshot();
        if pod.state != PodState::Ready {
            return Err(CriError::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                pod.id
            )));
        }
        let container_id = container::create_container(&crius.container_deps(), pod, req).await?;
        Ok(cri::CreateContainerResponse { container_id })
    })
    .await
}

/// StartContainer (errors: see [`container::start_container`]).
pub async fn start_container(
    crius: &Arc<Crius>,
    req: cri::StartContainerRequest,
) -> Reply<cri::StartContainerResponse> {
    let id = req.container_id;
    rpc("StartContainer", &id, async {
        container::start_container(&crius.container_deps(), &id).await?;
        Ok(cri::StartContainerResponse {})
    })
    .await
}

/// StopContainer, `req.timeout` in seconds. Idempotent; an unknown id succeeds.
pub async fn stop_container(
    crius: &Arc<Crius>,
    req: cri::StopContainerRequest,
) -> Reply<cri::StopContainerResponse> {
    rpc("StopContainer", &req.container_id, async {
        container::stop_container(&crius.container_deps(), &req.container_id, req.timeout).await?;
        Ok(cri::StopContainerResponse {})
    })
    .await
}

/// RemoveContainer. Idempotent; an unknown id succeeds.
pub async fn remove_container(
    crius: &Arc<Crius>,
    req: cri::RemoveContainerRequest,
) -> Reply<cri::RemoveContainerResponse> {
    let id = req.container_id;
    rpc("RemoveContainer", &id, async {
        container::remove_container(&crius.container_deps(), &id).await?;
        Ok(cri::RemoveContainerResponse {})
    })
    .await
}

/// ListContainers: the containers the filter selects.
pub async fn list_containers(
    crius: &Arc<Crius>,
    req: cri::ListContainersRequest,
) -> Reply<cri::ListContainersResponse> {
    let filter = req.filter.unwrap_or_default();
    rpc("ListContainers", "", async {
        let selected = crius.containers.select(|c| c.matches(&filter));
        let containers = selected.iter().map(ContainerRecord::to_cri).collect();
        Ok(cri::ListContainersResponse { containers })
    })
    .await
}

/// ContainerStatus. Errors: NotFound for an unknown id.
pub async fn container_status(
    crius: &Arc<Crius>,
    req: cri::ContainerStatusRequest,
) -> Reply<cri::ContainerStatusResponse> {
    let id = req.container_id;
    rpc("ContainerStatus", &id, async {
        let record = crius.containers.find(&id)?.snapshot();
        Ok(cri::ContainerStatusResponse {
            status: Some(record.status()),
            ..Default::default()
        })
    })
    .await
}

/// ReopenContainerLog (errors: see [`container::reopen_container_log`]).
pub async fn reopen_container_log(
    crius: &Arc<Crius>,
    req: cri::ReopenContainerLogRequest,
) -> Reply<cri::ReopenContainerLogResponse> {
    let id = req.container_id;
    rpc("ReopenContainerLog", &id, async {
        container::reopen_container_log(&crius.container_deps(), &id).await?;
        Ok(cri::ReopenContainerLogResponse {})
    })
    .await
}

/// Not built yet: UNIMPLEMENTED naming the RPC.
pub fn stream_containers<T>() -> Reply<T> {
    unimplemented("StreamContainers")
}

/// Not built yet: UNIMPLEMENTED naming the RPC.
pub fn update_container_resources() -> Reply<cri::UpdateContainerResourcesResponse> {
    unimplemented("UpdateContainerResources")
}

/// Not built yet: UNIMPLEMENTED naming the RPC.
pub fn checkpoint_container() -> Reply<cri::CheckpointContainerResponse> {
    unimplemented("CheckpointContainer")
}

/// Not built yet: UNIMPLEMENTED naming the RPC.
pub fn get_container_events<T>() -> Reply<T> {
    unimplemented("GetContainerEvents")
}
