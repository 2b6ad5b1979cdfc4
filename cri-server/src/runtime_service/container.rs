//! CreateContainer, StartContainer, StopContainer, RemoveContainer,
//! ContainerStatus, ListContainers, ReopenContainerLog, GetContainerEvents
//! (and the container RPCs not built yet).

use std::sync::Arc;

use crius_proto::cri;
use tokio_stream::StreamExt;

use super::Reply;
use crate::error::CriError;
use crate::image::ImageRecord;
use crate::instrument::{rpc, unimplemented, ReplyStream};
use crate::state::container::{ContainerRecord, ImageNames};
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
        if !pod.is_ready() {
            let why = pod.pause.as_ref().and_then(|p| p.gone.as_deref());
            return Err(CriError::FailedPrecondition(match why {
                Some(why) => format!("pod sandbox {} is not ready: {why}", pod.id),
                None => format!("pod sandbox {} is not ready", pod.id),
            }));
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

/// ContainerStatus, naming the image by its names in the image store now
/// (see [`ContainerRecord::status`]); with `verbose`, `info` as containerd fills it (see
/// [`container::status_info`]), else empty and without any file read.
/// Errors: NotFound for an unknown id.
pub async fn container_status(
    crius: &Arc<Crius>,
    req: cri::ContainerStatusRequest,
) -> Reply<cri::ContainerStatusResponse> {
    let id = req.container_id;
    rpc("ContainerStatus", &id, async {
        let record = crius.containers.find(&id)?.snapshot();
        let info = if req.verbose {
            container::status_info(&record).await
        } else {
            Default::default()
        };
        // The image's names as they are now (containerd's rule); none once
        // the image is removed.
        let image = crius.images.resolve(&record.image_id);
        let names = image
            .as_ref()
            .map_or_else(ImageNames::default, ImageRecord::names);
        Ok(cri::ContainerStatusResponse {
            status: Some(record.status(names)),
            info,
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

/// UpdateContainerResources (errors: see
/// [`container::update_container_resources`]). Windows resources are
/// ignored, and so are `annotations`, as by containerd on Linux.
pub async fn update_container_resources(
    crius: &Arc<Crius>,
    req: cri::UpdateContainerResourcesRequest,
) -> Reply<cri::UpdateContainerResourcesResponse> {
    let id = req.container_id;
    rpc("UpdateContainerResources", &id, async {
        let linux = req
            .linux
            .ok_or_else(|| CriError::invalid("linux", "is required"))?;
        container::update_container_resources(&crius.container_deps(), &id, &linux).await?;
        Ok(cri::UpdateContainerResourcesResponse {})
    })
    .await
}

/// Not built yet: UNIMPLEMENTED naming the RPC.
pub fn checkpoint_container() -> Reply<cri::CheckpointContainerResponse> {
    unimplemented("CheckpointContainer")
}

/// GetContainerEvents: every container and pod event from now on, in
/// order (see [`crate::events`]); a subscriber that falls too far behind
/// sees its stream end with RESOURCE_EXHAUSTED.
pub async fn get_container_events(
    crius: &Arc<Crius>,
    _req: cri::GetEventsRequest,
) -> Reply<ReplyStream<cri::ContainerEventResponse>> {
    rpc("GetContainerEvents", "", async {
        let events = crius.events.subscribe();
        let stream = events.map(|e| e.map_err(|e| tonic::Status::from(CriError::from(e))));
        Ok(Box::pin(stream) as ReplyStream<_>)
    })
    .await
}

/// ContainerStatus' verbose info through the handler: the spec read from
/// the bundle, nothing read without `verbose`, and what is known once the
/// bundle is gone.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::state::container::{fixture, ContainerState};
    use crate::state::table::Record;

    async fn status(crius: &Arc<Crius>, verbose: bool) -> cri::ContainerStatusResponse {
        let req = cri::ContainerStatusRequest {
            container_id: "c1".into(),
            verbose,
        };
        container_status(crius, req).await.unwrap().into_inner()
    }

    #[tokio::test]
    async fn verbose_status_returns_containerds_info() {
        let tmp = tempfile::tempdir().unwrap();
        let config = Config {
            root: tmp.path().join("root"),
            state: tmp.path().join("state"),
            ..Default::default()
        };
        let crius = Arc::new(Crius::open(config).unwrap());
        let mut record = fixture(ContainerState::Running, 0);
        record.bundle = tmp.path().join("bundle");
        record.config.command = vec!["top".into()];
        std::fs::create_dir_all(&record.bundle).unwrap();
        let spec = serde_json::json!({"ociVersion": "1.0.2", "process": {"args": ["top"]}});
        std::fs::write(record.bundle.join("config.json"), spec.to_string()).unwrap();
        crius.containers.reserve_name(&record.name(), "c1").unwrap();
        crius.containers.insert(record.clone()).unwrap();

        assert!(status(&crius, false).await.info.is_empty());
        let reply = status(&crius, true).await;
        assert_eq!(reply.info.len(), 1);
        let info: serde_json::Value = serde_json::from_str(&reply.info["info"]).unwrap();
        assert_eq!(info["pid"], 42);
        assert_eq!(info["sandboxID"], "p1");
        assert_eq!(info["runtimeSpec"], spec);
        assert_eq!(info["runtimeSpec"]["process"]["args"][0], "top");
        let config: cri::ContainerConfig = serde_json::from_value(info["config"].clone()).unwrap();
        assert_eq!(config, record.config);

        // Exited and its bundle cleaned: still answers, without the spec.
        std::fs::remove_dir_all(&record.bundle).unwrap();
        let reply = status(&crius, true).await;
        let info: serde_json::Value = serde_json::from_str(&reply.info["info"]).unwrap();
        assert!(info["runtimeSpec"].is_null());
        assert_eq!(info["pid"], 42);
        assert_eq!(info["snapshotKey"], "c1");
    }
}
