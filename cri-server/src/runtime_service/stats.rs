//! ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats,
//! ListMetricDescriptors, ListPodSandboxMetrics (and the streaming stats and
//! metrics RPCs not built yet).

use std::sync::Arc;

use crius_proto::cri;

use super::Reply;
use crate::instrument::{rpc, unimplemented};
use crate::{stats, Crius};

/// ContainerStats. Errors: NotFound for an unknown id.
pub async fn container_stats(
    crius: &Arc<Crius>,
    req: cri::ContainerStatsRequest,
) -> Reply<cri::ContainerStatsResponse> {
    let id = req.container_id;
    rpc("ContainerStats", &id, async {
        let stats = stats::container_stats(&crius.stats_deps(), &id).await?;
        Ok(cri::ContainerStatsResponse { stats: Some(stats) })
    })
    .await
}

/// ListContainerStats: every container the filter selects.
pub async fn list_container_stats(
    crius: &Arc<Crius>,
    req: cri::ListContainerStatsRequest,
) -> Reply<cri::ListContainerStatsResponse> {
    let filter = req.filter.unwrap_or_default();
    rpc("ListContainerStats", "", async {
        let stats = stats::list_container_stats(&crius.stats_deps(), filter).await?;
        Ok(cri::ListContainerStatsResponse { stats })
    })
    .await
}

/// PodSandboxStats. Errors: NotFound for an unknown id,
/// FailedPrecondition for a pod not ready.
pub async fn pod_sandbox_stats(
    crius: &Arc<Crius>,
    req: cri::PodSandboxStatsRequest,
) -> Reply<cri::PodSandboxStatsResponse> {
    let id = req.pod_sandbox_id;
    rpc("PodSandboxStats", &id, async {
        let stats = stats::pod_sandbox_stats(&crius.stats_deps(), &id).await?;
        Ok(cri::PodSandboxStatsResponse { stats: Some(stats) })
    })
    .await
}

/// ListPodSandboxStats: every ready pod the filter selects.
pub async fn list_pod_sandbox_stats(
    crius: &Arc<Crius>,
    req: cri::ListPodSandboxStatsRequest,
) -> Reply<cri::ListPodSandboxStatsResponse> {
    let filter = req.filter.unwrap_or_default();
    rpc("ListPodSandboxStats", "", async {
        let stats = stats::list_pod_sandbox_stats(&crius.stats_deps(), filter).await?;
        Ok(cri::ListPodSandboxStatsResponse { stats })
    })
    .await
}

/// Not built yet: UNIMPLEMENTED naming the RPC.
pub fn stream_container_stats<T>() -> Reply<T> {
    unimplemented("StreamContainerStats")
}

/// Not built yet: UNIMPLEMENTED naming the RPC.
pub fn stream_pod_sandbox_stats<T>() -> Reply<T> {
    unimplemented("StreamPodSandboxStats")
}

/// ListMetricDescriptors: the metrics ListPodSandboxMetrics serves.
pub async fn list_metric_descriptors() -> Reply<cri::ListMetricDescriptorsResponse> {
    rpc("ListMetricDescriptors", "", async {
        Ok(cri::ListMetricDescriptorsResponse {
            descriptors: stats::list_metric_descriptors(),
        })
    })
    .await
}

/// ListPodSandboxMetrics: every ready pod's and its containers' metrics.
pub async fn list_pod_sandbox_metrics(
    crius: &Arc<Crius>,
) -> Reply<cri::ListPodSandboxMetricsResponse> {
    rpc("ListPodSandboxMetrics", "", async {
        let pod_metrics = stats::list_pod_sandbox_metrics(&crius.stats_deps()).await?;
        Ok(cri::ListPodSandboxMetricsResponse { pod_metrics })
    })
    .await
}

/// Not built yet: UNIMPLEMENTED naming the RPC.
pub fn stream_pod_sandbox_metrics<T>() -> Reply<T> {
    unimplemented("StreamPodSandboxMetrics")
}
