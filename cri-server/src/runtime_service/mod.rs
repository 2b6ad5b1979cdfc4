//! The CRI RuntimeService: thin handlers over the concerns' modules.

mod info;

use std::sync::Arc;

use crius_proto::cri;
use crius_proto::cri::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use crate::error::CriError;
use crate::instrument::{rpc, unimplemented, ReplyStream};
use crate::pod::PodRecord;
use crate::{container, pod, stats, Crius};

pub use info::{CRI_API_VERSION, RUNTIME_NAME};

pub struct RuntimeHandler {
    crius: Arc<Crius>,
}

impl RuntimeHandler {
    pub fn new(crius: Arc<Crius>) -> RuntimeHandler {
        RuntimeHandler { crius }
    }

    fn pod(&self, id: &str) -> Result<PodRecord, CriError> {
        self.crius
            .pods
            .get(id)
            .map_err(|e| CriError::NotFound(e.to_string()))?
            .map(|e| e.snapshot())
            .ok_or_else(|| CriError::NotFound(format!("pod sandbox {id:?} not found")))
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl RuntimeService for RuntimeHandler {
    type GetContainerEventsStream =
        tokio_stream::Empty<Result<cri::ContainerEventResponse, Status>>;
    type StreamPodSandboxesStream = ReplyStream<cri::StreamPodSandboxesResponse>;
    type StreamContainersStream = ReplyStream<cri::StreamContainersResponse>;
    type StreamContainerStatsStream = ReplyStream<cri::StreamContainerStatsResponse>;
    type StreamPodSandboxStatsStream = ReplyStream<cri::StreamPodSandboxStatsResponse>;
    type StreamPodSandboxMetricsStream = ReplyStream<cri::StreamPodSandboxMetricsResponse>;

    async fn version(&self, _request: Request<cri::VersionRequest>) -> Reply<cri::VersionResponse> {
        rpc("Version", "", async { Ok(info::version()) }).await
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<cri::RunPodSandboxRequest>,
    ) -> Reply<cri::RunPodSandboxResponse> {
        let req = request.into_inner();
        let name = req
            .config
            .as_ref()
            .and_then(|c| c.metadata.as_ref())
            .map(|m| m.name.clone())
            .unwrap_or_default();
        rpc("RunPodSandbox", &name, async {
            let pod_sandbox_id = pod::run_pod(&self.crius, req).await?;
            Ok(cri::RunPodSandboxResponse { pod_sandbox_id })
        })
        .await
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<cri::StopPodSandboxRequest>,
    ) -> Reply<cri::StopPodSandboxResponse> {
        let id = request.into_inner().pod_sandbox_id;
        rpc("StopPodSandbox", &id, async {
            pod::stop_pod(&self.crius, &id).await?;
            Ok(cri::StopPodSandboxResponse {})
        })
        .await
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<cri::RemovePodSandboxRequest>,
    ) -> Reply<cri::RemovePodSandboxResponse> {
        let id = request.into_inner().pod_sandbox_id;
        rpc("RemovePodSandbox", &id, async {
            pod::remove_pod(&self.crius, &id).await?;
            Ok(cri::RemovePodSandboxResponse {})
        })
        .await
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<cri::PodSandboxStatusRequest>,
    ) -> Reply<cri::PodSandboxStatusResponse> {
        let id = request.into_inner().pod_sandbox_id;
        rpc("PodSandboxStatus", &id, async {
            let pod = self.pod(&id)?;
            Ok(cri::PodSandboxStatusResponse {
                status: Some(pod.status()),
                ..Default::default()
            })
        })
        .await
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<cri::ListPodSandboxRequest>,
    ) -> Reply<cri::ListPodSandboxResponse> {
        let filter = request.into_inner().filter.unwrap_or_default();
        rpc("ListPodSandbox", "", async {
            let items = self
                .crius
                .pods
                .list()
                .iter()
                .filter(|p| pod::matches(p, &filter))
                .map(|p| p.to_cri())
                .collect();
            Ok(cri::ListPodSandboxResponse { items })
        })
        .await
    }

    async fn stream_pod_sandboxes(
        &self,
        _request: Request<cri::StreamPodSandboxesRequest>,
    ) -> Reply<Self::StreamPodSandboxesStream> {
        unimplemented("StreamPodSandboxes")
    }

    async fn create_container(
        &self,
        request: Request<cri::CreateContainerRequest>,
    ) -> Reply<cri::CreateContainerResponse> {
        let req = request.into_inner();
        let pod_id = req.pod_sandbox_id.clone();
        rpc("CreateContainer", &pod_id, async {
            let container_id = container::create_container(&self.crius, req).await?;
            Ok(cri::CreateContainerResponse { container_id })
        })
        .await
    }

    async fn start_container(
        &self,
        request: Request<cri::StartContainerRequest>,
    ) -> Reply<cri::StartContainerResponse> {
        let id = request.into_inner().container_id;
        rpc("StartContainer", &id, async {
            container::start_container(&self.crius, &id).await?;
            Ok(cri::StartContainerResponse {})
        })
        .await
    }

    async fn stop_container(
        &self,
        request: Request<cri::StopContainerRequest>,
    ) -> Reply<cri::StopContainerResponse> {
        let req = request.into_inner();
        rpc("StopContainer", &req.container_id, async {
            container::stop_container(&self.crius, &req.container_id, req.timeout).await?;
            Ok(cri::StopContainerResponse {})
        })
        .await
    }

    async fn remove_container(
        &self,
        request: Request<cri::RemoveContainerRequest>,
    ) -> Reply<cri::RemoveContainerResponse> {
        let id = request.into_inner().container_id;
        rpc("RemoveContainer", &id, async {
            container::remove_container(&self.crius, &id).await?;
            Ok(cri::RemoveContainerResponse {})
        })
        .await
    }

    async fn list_containers(
        &self,
        request: Request<cri::ListContainersRequest>,
    ) -> Reply<cri::ListContainersResponse> {
        let filter = request.into_inner().filter.unwrap_or_default();
        rpc("ListContainers", "", async {
            let containers = self
                .crius
                .containers
                .list()
                .iter()
                .filter(|c| container::matches(c, &filter))
                .map(|c| c.to_cri())
                .collect();
            Ok(cri::ListContainersResponse { containers })
        })
        .await
    }

    async fn stream_containers(
        &self,
        _request: Request<cri::StreamContainersRequest>,
    ) -> Reply<Self::StreamContainersStream> {
        unimplemented("StreamContainers")
    }

    async fn container_status(
        &self,
        request: Request<cri::ContainerStatusRequest>,
    ) -> Reply<cri::ContainerStatusResponse> {
        let id = request.into_inner().container_id;
        rpc("ContainerStatus", &id, async {
            let record = container::find(&self.crius, &id)?.snapshot();
            Ok(cri::ContainerStatusResponse {
                status: Some(record.status()),
                ..Default::default()
            })
        })
        .await
    }

    async fn update_container_resources(
        &self,
        _request: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Reply<cri::UpdateContainerResourcesResponse> {
        unimplemented("UpdateContainerResources")
    }

    async fn reopen_container_log(
        &self,
        request: Request<cri::ReopenContainerLogRequest>,
    ) -> Reply<cri::ReopenContainerLogResponse> {
        let id = request.into_inner().container_id;
        rpc("ReopenContainerLog", &id, async {
            container::reopen_container_log(&self.crius, &id).await?;
            Ok(cri::ReopenContainerLogResponse {})
        })
        .await
    }

    async fn exec_sync(
        &self,
        request: Request<cri::ExecSyncRequest>,
    ) -> Reply<cri::ExecSyncResponse> {
        let req = request.into_inner();
        let id = req.container_id.clone();
        rpc("ExecSync", &id, container::exec_sync(&self.crius, req)).await
    }

    async fn exec(&self, _request: Request<cri::ExecRequest>) -> Reply<cri::ExecResponse> {
        unimplemented("Exec")
    }

    async fn attach(&self, _request: Request<cri::AttachRequest>) -> Reply<cri::AttachResponse> {
        unimplemented("Attach")
    }

    async fn port_forward(
        &self,
        _request: Request<cri::PortForwardRequest>,
    ) -> Reply<cri::PortForwardResponse> {
        unimplemented("PortForward")
    }

    async fn container_stats(
        &self,
        request: Request<cri::ContainerStatsRequest>,
    ) -> Reply<cri::ContainerStatsResponse> {
        let id = request.into_inner().container_id;
        rpc("ContainerStats", &id, async {
            let stats = stats::container_stats(&self.crius, &id).await?;
            Ok(cri::ContainerStatsResponse { stats: Some(stats) })
        })
        .await
    }

    async fn list_container_stats(
        &self,
        request: Request<cri::ListContainerStatsRequest>,
    ) -> Reply<cri::ListContainerStatsResponse> {
        let filter = request.into_inner().filter.unwrap_or_default();
        rpc("ListContainerStats", "", async {
            let stats = stats::list_container_stats(&self.crius, filter).await?;
            Ok(cri::ListContainerStatsResponse { stats })
        })
        .await
    }

    async fn stream_container_stats(
        &self,
        _request: Request<cri::StreamContainerStatsRequest>,
    ) -> Reply<Self::StreamContainerStatsStream> {
        unimplemented("StreamContainerStats")
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<cri::PodSandboxStatsRequest>,
    ) -> Reply<cri::PodSandboxStatsResponse> {
        let id = request.into_inner().pod_sandbox_id;
        rpc("PodSandboxStats", &id, async {
            let stats = stats::pod_sandbox_stats(&self.crius, &id).await?;
            Ok(cri::PodSandboxStatsResponse { stats: Some(stats) })
        })
        .await
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Reply<cri::ListPodSandboxStatsResponse> {
        let filter = request.into_inner().filter.unwrap_or_default();
        rpc("ListPodSandboxStats", "", async {
            let stats = stats::list_pod_sandbox_stats(&self.crius, filter).await?;
            Ok(cri::ListPodSandboxStatsResponse { stats })
        })
        .await
    }

    async fn stream_pod_sandbox_stats(
        &self,
        _request: Request<cri::StreamPodSandboxStatsRequest>,
    ) -> Reply<Self::StreamPodSandboxStatsStream> {
        unimplemented("StreamPodSandboxStats")
    }

    async fn update_runtime_config(
        &self,
        request: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Reply<cri::UpdateRuntimeConfigResponse> {
        let req = request.into_inner();
        rpc("UpdateRuntimeConfig", "", async {
            Ok(info::update_runtime_config(&self.crius, req))
        })
        .await
    }

    async fn status(&self, request: Request<cri::StatusRequest>) -> Reply<cri::StatusResponse> {
        let verbose = request.into_inner().verbose;
        rpc("Status", "", async { info::status(&self.crius, verbose) }).await
    }

    async fn checkpoint_container(
        &self,
        _request: Request<cri::CheckpointContainerRequest>,
    ) -> Reply<cri::CheckpointContainerResponse> {
        unimplemented("CheckpointContainer")
    }

    async fn checkpoint_pod(
        &self,
        _request: Request<cri::CheckpointPodRequest>,
    ) -> Reply<cri::CheckpointPodResponse> {
        unimplemented("CheckpointPod")
    }

    async fn restore_pod(
        &self,
        _request: Request<cri::RestorePodRequest>,
    ) -> Reply<cri::RestorePodResponse> {
        unimplemented("RestorePod")
    }

    async fn get_container_events(
        &self,
        _request: Request<cri::GetEventsRequest>,
    ) -> Reply<Self::GetContainerEventsStream> {
        unimplemented("GetContainerEvents")
    }

    async fn list_metric_descriptors(
        &self,
        _request: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Reply<cri::ListMetricDescriptorsResponse> {
        unimplemented("ListMetricDescriptors")
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _request: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Reply<cri::ListPodSandboxMetricsResponse> {
        unimplemented("ListPodSandboxMetrics")
    }

    async fn stream_pod_sandbox_metrics(
        &self,
        _request: Request<cri::StreamPodSandboxMetricsRequest>,
    ) -> Reply<Self::StreamPodSandboxMetricsStream> {
        unimplemented("StreamPodSandboxMetrics")
    }

    async fn runtime_config(
        &self,
        _request: Request<cri::RuntimeConfigRequest>,
    ) -> Reply<cri::RuntimeConfigResponse> {
        rpc("RuntimeConfig", "", async {
            Ok(info::runtime_config(&self.crius))
        })
        .await
    }

    async fn update_pod_sandbox_resources(
        &self,
        _request: Request<cri::UpdatePodSandboxResourcesRequest>,
    ) -> Reply<cri::UpdatePodSandboxResourcesResponse> {
        unimplemented("UpdatePodSandboxResources")
    }
}
