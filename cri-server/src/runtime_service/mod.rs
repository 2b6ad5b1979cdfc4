//! The CRI RuntimeService. tonic needs the whole service as one `impl`;
//! here each RPC is one line that hands its request to its group's file,
//! where its handling (validation, then the concerns, orchestrated) lives:
//!
//! - `sandbox`: RunPodSandbox, StopPodSandbox, RemovePodSandbox,
//!   PodSandboxStatus, ListPodSandbox (and the pod RPCs not built yet);
//! - `container`: CreateContainer, StartContainer, StopContainer,
//!   RemoveContainer, ContainerStatus, ListContainers, ReopenContainerLog,
//!   GetContainerEvents;
//! - `exec`: ExecSync, and Exec, Attach, PortForward (URLs on the streaming server);
//! - `stats`: container and pod stats, and the metrics RPCs (not built yet);
//! - `info`: Version, Status, RuntimeConfig, UpdateRuntimeConfig.

mod container;
mod exec;
mod info;
mod sandbox;
mod stats;

use std::sync::Arc;

use crius_proto::cri;
use crius_proto::cri::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use crate::instrument::ReplyStream;
use crate::Crius;

pub use info::{CRI_API_VERSION, RUNTIME_NAME};

pub struct RuntimeHandler {
    crius: Arc<Crius>,
}

impl RuntimeHandler {
    pub fn new(crius: Arc<Crius>) -> RuntimeHandler {
        RuntimeHandler { crius }
    }
}

/// What every RPC answers.
type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl RuntimeService for RuntimeHandler {
    type GetContainerEventsStream = ReplyStream<cri::ContainerEventResponse>;
    type StreamPodSandboxesStream = ReplyStream<cri::StreamPodSandboxesResponse>;
    type StreamContainersStream = ReplyStream<cri::StreamContainersResponse>;
    type StreamContainerStatsStream = ReplyStream<cri::StreamContainerStatsResponse>;
    type StreamPodSandboxStatsStream = ReplyStream<cri::StreamPodSandboxStatsResponse>;
    type StreamPodSandboxMetricsStream = ReplyStream<cri::StreamPodSandboxMetricsResponse>;

    async fn version(&self, request: Request<cri::VersionRequest>) -> Reply<cri::VersionResponse> {
        info::version(request.into_inner()).await
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<cri::RunPodSandboxRequest>,
    ) -> Reply<cri::RunPodSandboxResponse> {
        sandbox::run_pod_sandbox(&self.crius, request.into_inner()).await
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<cri::StopPodSandboxRequest>,
    ) -> Reply<cri::StopPodSandboxResponse> {
        sandbox::stop_pod_sandbox(&self.crius, request.into_inner()).await
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<cri::RemovePodSandboxRequest>,
    ) -> Reply<cri::RemovePodSandboxResponse> {
        sandbox::remove_pod_sandbox(&self.crius, request.into_inner()).await
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<cri::PodSandboxStatusRequest>,
    ) -> Reply<cri::PodSandboxStatusResponse> {
        sandbox::pod_sandbox_status(&self.crius, request.into_inner()).await
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<cri::ListPodSandboxRequest>,
    ) -> Reply<cri::ListPodSandboxResponse> {
        sandbox::list_pod_sandbox(&self.crius, request.into_inner()).await
    }

    async fn stream_pod_sandboxes(
        &self,
        _request: Request<cri::StreamPodSandboxesRequest>,
    ) -> Reply<Self::StreamPodSandboxesStream> {
        sandbox::stream_pod_sandboxes()
    }

    async fn update_pod_sandbox_resources(
        &self,
        _request: Request<cri::UpdatePodSandboxResourcesRequest>,
    ) -> Reply<cri::UpdatePodSandboxResourcesResponse> {
        sandbox::update_pod_sandbox_resources()
    }

    async fn checkpoint_pod(
        &self,
        _request: Request<cri::CheckpointPodRequest>,
    ) -> Reply<cri::CheckpointPodResponse> {
        sandbox::checkpoint_pod()
    }

    async fn restore_pod(
        &self,
        _request: Request<cri::RestorePodRequest>,
    ) -> Reply<cri::RestorePodResponse> {
        sandbox::restore_pod()
    }

    async fn create_container(
        &self,
        request: Request<cri::CreateContainerRequest>,
    ) -> Reply<cri::CreateContainerResponse> {
        container::create_container(&self.crius, request.into_inner()).await
    }

    async fn start_container(
        &self,
        request: Request<cri::StartContainerRequest>,
    ) -> Reply<cri::StartContainerResponse> {
        container::start_container(&self.crius, request.into_inner()).await
    }

    async fn stop_container(
        &self,
        request: Request<cri::StopContainerRequest>,
    ) -> Reply<cri::StopContainerResponse> {
        container::stop_container(&self.crius, request.into_inner()).await
    }

    async fn remove_container(
        &self,
        request: Request<cri::RemoveContainerRequest>,
    ) -> Reply<cri::RemoveContainerResponse> {
        container::remove_container(&self.crius, request.into_inner()).await
    }

    async fn list_containers(
        &self,
        request: Request<cri::ListContainersRequest>,
    ) -> Reply<cri::ListContainersResponse> {
        container::list_containers(&self.crius, request.into_inner()).await
    }

    async fn stream_containers(
        &self,
        _request: Request<cri::StreamContainersRequest>,
    ) -> Reply<Self::StreamContainersStream> {
        container::stream_containers()
    }

    async fn container_status(
        &self,
        request: Request<cri::ContainerStatusRequest>,
    ) -> Reply<cri::ContainerStatusResponse> {
        container::container_status(&self.crius, request.into_inner()).await
    }

    async fn update_container_resources(
        &self,
        request: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Reply<cri::UpdateContainerResourcesResponse> {
        container::update_container_resources(&self.crius, request.into_inner()).await
    }

    async fn reopen_container_log(
        &self,
        request: Request<cri::ReopenContainerLogRequest>,
    ) -> Reply<cri::ReopenContainerLogResponse> {
        container::reopen_container_log(&self.crius, request.into_inner()).await
    }

    async fn checkpoint_container(
        &self,
        _request: Request<cri::CheckpointContainerRequest>,
    ) -> Reply<cri::CheckpointContainerResponse> {
        container::checkpoint_container()
    }

    async fn get_container_events(
        &self,
        request: Request<cri::GetEventsRequest>,
    ) -> Reply<Self::GetContainerEventsStream> {
        container::get_container_events(&self.crius, request.into_inner()).await
    }

    async fn exec_sync(
        &self,
        request: Request<cri::ExecSyncRequest>,
    ) -> Reply<cri::ExecSyncResponse> {
        exec::exec_sync(&self.crius, request.into_inner()).await
    }

    async fn exec(&self, request: Request<cri::ExecRequest>) -> Reply<cri::ExecResponse> {
        exec::exec(&self.crius, request.into_inner()).await
    }

    async fn attach(&self, request: Request<cri::AttachRequest>) -> Reply<cri::AttachResponse> {
        exec::attach(&self.crius, request.into_inner()).await
    }

    async fn port_forward(
        &self,
        request: Request<cri::PortForwardRequest>,
    ) -> Reply<cri::PortForwardResponse> {
        exec::port_forward(&self.crius, request.into_inner()).await
    }

    async fn container_stats(
        &self,
        request: Request<cri::ContainerStatsRequest>,
    ) -> Reply<cri::ContainerStatsResponse> {
        stats::container_stats(&self.crius, request.into_inner()).await
    }

    async fn list_container_stats(
        &self,
        request: Request<cri::ListContainerStatsRequest>,
    ) -> Reply<cri::ListContainerStatsResponse> {
        stats::list_container_stats(&self.crius, request.into_inner()).await
    }

    async fn stream_container_stats(
        &self,
        _request: Request<cri::StreamContainerStatsRequest>,
    ) -> Reply<Self::StreamContainerStatsStream> {
        stats::stream_container_stats()
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<cri::PodSandboxStatsRequest>,
    ) -> Reply<cri::PodSandboxStatsResponse> {
        stats::pod_sandbox_stats(&self.crius, request.into_inner()).await
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Reply<cri::ListPodSandboxStatsResponse> {
        stats::list_pod_sandbox_stats(&self.crius, request.into_inner()).await
    }

    async fn stream_pod_sandbox_stats(
        &self,
        _request: Request<cri::StreamPodSandboxStatsRequest>,
    ) -> Reply<Self::StreamPodSandboxStatsStream> {
        stats::stream_pod_sandbox_stats()
    }

    async fn list_metric_descriptors(
        &self,
        _request: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Reply<cri::ListMetricDescriptorsResponse> {
        stats::list_metric_descriptors().await
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _request: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Reply<cri::ListPodSandboxMetricsResponse> {
        stats::list_pod_sandbox_metrics(&self.crius).await
    }

    async fn stream_pod_sandbox_metrics(
        &self,
        _request: Request<cri::StreamPodSandboxMetricsRequest>,
    ) -> Reply<Self::StreamPodSandboxMetricsStream> {
        stats::stream_pod_sandbox_metrics()
    }

    async fn status(&self, request: Request<cri::StatusRequest>) -> Reply<cri::StatusResponse> {
        info::status(&self.crius, request.into_inner()).await
    }

    async fn runtime_config(
        &self,
        request: Request<cri::RuntimeConfigRequest>,
    ) -> Reply<cri::RuntimeConfigResponse> {
        info::runtime_config(&self.crius, request.into_inner()).await
    }

    async fn update_runtime_config(
        &self,
        request: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Reply<cri::UpdateRuntimeConfigResponse> {
        info::update_runtime_config(&self.crius, request.into_inner()).await
    }
}

#[cfg(test)]
mod tests;
