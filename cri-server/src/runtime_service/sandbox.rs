//! RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus,
//! ListPodSandbox (and the pod RPCs not built yet). Stopping and removing a
//! pod spans both concerns: its containers are stopped and removed here,
//! then the pod itself.

use std::sync::Arc;

use crius_proto::cri;

use super::Reply;
use crate::error::CriError;
use crate::instrument::{rpc, unimplemented};
use crate::state::sandbox::PodRecord;
use crate::state::table::Entry;
use crate::task::detached;
use crate::{container, pod, Crius};

/// RunPodSandbox: the new pod's id (errors: see [`pod::run_pod`]).
pub async fn run_pod_sandbox(
    crius: &Arc<Crius>,
    req: cri::RunPodSandboxRequest,
) -> Reply<cri::RunPodSandboxResponse> {
    let name = req
        .config
        .as_ref()
        .and_then(|c| c.metadata.as_ref())
        .map(|m| m.name.clone())
        .unwrap_or_default();
    rpc("RunPodSandbox", &name, async {
        let pod_sandbox_id = pod::run_pod(&crius.pod_deps(), req).await?;
        Ok(cri::RunPodSandboxResponse { pod_sandbox_id })
    })
    .await
}

/// StopPodSandbox: stops every container of the pod, then releases its
/// network. Idempotent; an unknown id succeeds.
pub async fn stop_pod_sandbox(
    crius: &Arc<Crius>,
    req: cri::StopPodSandboxRequest,
) -> Reply<cri::StopPodSandboxResponse> {
    let id = req.pod_sandbox_id;
    rpc("StopPodSandbox", &id, async {
        let Some(entry) = crius.pods.find_if_any(&id)? else {
            return Ok(cri::StopPodSandboxResponse {});
        };
        let crius = crius.clone();
        detached(async move {
            let _op = entry.op.lock().await;
            stop_locked(&crius, &entry).await
        })
        .await?;
        Ok(cri::StopPodSandboxResponse {})
    })
    .await
}

/// RemovePodSandbox: stops the pod, removes its containers, then
/// everything the pod holds. Idempotent; an unknown id succeeds.
pub async fn remove_pod_sandbox(
    crius: &Arc<Crius>,
    req: cri::RemovePodSandboxRequest,
) -> Reply<cri::RemovePodSandboxResponse> {
    let id = req.pod_sandbox_id;
    rpc("RemovePodSandbox", &id, async {
        let Some(entry) = crius.pods.find_if_any(&id)? else {
            return Ok(cri::RemovePodSandboxResponse {});
        };
        let crius = crius.clone();
        detached(async move {
            let _op = entry.op.lock().await;
            stop_locked(&crius, &entry).await?;
            for c in containers_of(&crius, &entry.snapshot().id) {
                container::remove_container(&crius.container_deps(), &c).await?;
            }
            pod::remove_pod(&crius.pod_deps(), &entry).await
        })
        .await?;
        Ok(cri::RemovePodSandboxResponse {})
    })
    .await
}

/// The pod's containers, then the pod; the caller holds the pod's op lock.
async fn stop_locked(crius: &Arc<Crius>, entry: &Entry<PodRecord>) -> Result<(), CriError> {
    let containers = crius.container_deps();
    for c in containers_of(crius, &entry.snapshot().id) {
        container::stop_container(&containers, &c, 0).await?;
    }
    pod::stop_pod(&crius.pod_deps(), entry).await
}

/// The ids of the containers in the pod `pod_id` (a full id).
fn containers_of(crius: &Crius, pod_id: &str) -> Vec<String> {
    let of_pod = crius.containers.select(|c| c.pod_id == pod_id);
    of_pod.into_iter().map(|c| c.id).collect()
}

/// PodSandboxStatus; with `verbose`, `info` as containerd fills it (see
/// [`pod::status_info`]), else empty and without any file read. Errors:
/// NotFound for an unknown id.
pub async fn pod_sandbox_status(
    crius: &Arc<Crius>,
    req: cri::PodSandboxStatusRequest,
) -> Reply<cri::PodSandboxStatusResponse> {
    let id = req.pod_sandbox_id;
    rpc("PodSandboxStatus", &id, async {
        let pod = crius.pods.find(&id)?.snapshot();
        let info = if req.verbose {
            pod::status_info(&crius.pod_deps(), &pod).await
        } else {
            Default::default()
        };
        Ok(cri::PodSandboxStatusResponse {
            status: Some(pod.status()),
            info,
            ..Default::default()
        })
    })
    .await
}

/// ListPodSandbox: the pods the filter selects.
pub async fn list_pod_sandbox(
    crius: &Arc<Crius>,
    req: cri::ListPodSandboxRequest,
) -> Reply<cri::ListPodSandboxResponse> {
    let filter = req.filter.unwrap_or_default();
    rpc("ListPodSandbox", "", async {
        let selected = crius.pods.select(|p| p.matches(&filter));
        let items = selected.iter().map(PodRecord::to_cri).collect();
        Ok(cri::ListPodSandboxResponse { items })
    })
    .await
}

/// Not built yet: UNIMPLEMENTED naming the RPC.
pub fn stream_pod_sandboxes<T>() -> Reply<T> {
    unimplemented("StreamPodSandboxes")
}

/// Not built yet: UNIMPLEMENTED naming the RPC.
pub fn update_pod_sandbox_resources() -> Reply<cri::UpdatePodSandboxResourcesResponse> {
    unimplemented("UpdatePodSandboxResources")
}

/// Not built yet: UNIMPLEMENTED naming the RPC.
pub fn checkpoint_pod() -> Reply<cri::CheckpointPodResponse> {
    unimplemented("CheckpointPod")
}

/// Not built yet: UNIMPLEMENTED naming the RPC.
pub fn restore_pod() -> Reply<cri::RestorePodResponse> {
    unimplemented("RestorePod")
}

/// StopPodSandbox and RemovePodSandbox twice over, through the fakes (no
/// root). What the code promises: Stop releases the network once (a pod
/// not ready gets no second DEL); Remove runs the whole idempotent teardown,
/// so its DEL follows Stop's and finds nothing cached (a harmless no-op);
/// a second Remove finds no pod and touches nothing.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespaces::fake::NsCall;
    use crate::network::fake::NetCall;
    use crate::pod::testing::{run_request, PodFakes};
    use crate::state::sandbox::PodState;

    /// A daemon whose pod seams are `PodFakes`' fakes, and those fakes
    /// (their deps share the daemon's pods table).
    fn daemon() -> (PodFakes, Arc<Crius>) {
        PodFakes::with(|s, _| {
            let mut crius = Crius::open(s.config.clone()).unwrap().with_pod_seams(
                s.net.clone(),
                s.ns.clone(),
                s.cgroups.clone(),
            );
            crius.host_resolv_conf = s.host_resolv_conf.clone();
            let crius = Arc::new(crius.with_shims(Arc::new(s.shims.clone())));
            (crius.pod_deps(), crius)
        })
    }

    async fn run(crius: &Arc<Crius>) -> String {
        run_pod_sandbox(crius, run_request("web"))
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id
    }

    fn del(id: &str, had_network: bool) -> NetCall {
        NetCall::Del {
            id: id.into(),
            had_network,
        }
    }

    #[tokio::test]
    async fn stop_pod_sandbox_is_idempotent_and_dels_once() {
        let (f, crius) = daemon();
        let id = run(&crius).await;
        for _ in 0..2 {
            let req = cri::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            };
            stop_pod_sandbox(&crius, req).await.unwrap();
        }
        assert_eq!(f.net.calls(), [NetCall::Add(id.clone()), del(&id, true)]);
        let pod = crius.pods.find(&id).unwrap().snapshot();
        assert_eq!(pod.state, PodState::NotReady);
        // Stop ends the pause process (once) and keeps the namespaces, the
        // dir and the record for Remove.
        // (The watch's Wait runs whenever its task does.)
        let calls: Vec<_> = (f.shims.calls(&id).into_iter())
            .filter(|c| *c != "Wait")
            .collect();
        assert_eq!(
            calls,
            ["Spawn", "Create", "Start", "Kill", "Delete", "Shutdown", "Connect"]
        );
        assert_eq!(f.shims.signals(&id), [libc::SIGKILL]);
        assert_eq!(f.ns.pinned().len(), 4);
        assert!(pod.dir.exists());
    }

    #[tokio::test]
    async fn verbose_status_returns_the_config_namespaces_and_cni_result() {
        let (f, crius) = daemon();
        let id = run(&crius).await;
        let status = |verbose| {
            let req = cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose,
            };
            pod_sandbox_status(&crius, req)
        };
        assert!(status(false).await.unwrap().into_inner().info.is_empty());
        let reply = status(true).await.unwrap().into_inner();
        let info: serde_json::Value = serde_json::from_str(&reply.info["info"]).unwrap();
        let pod = crius.pods.find(&id).unwrap().snapshot();
        assert_eq!(info["pid"], 4242, "the pause process's pid");
        let netns = pod.netns.clone().unwrap();
        assert_eq!(info["namespaces"]["network"], netns.display().to_string());
        assert_eq!(
            info["runtimeSpec"]["linux"]["namespaces"][0]["path"],
            netns.display().to_string()
        );
        let ip = reply.status.unwrap().network.unwrap().ip;
        assert_eq!(info["cniResult"]["ips"][0]["address"], format!("{ip}/16"));
        let config: cri::PodSandboxConfig = serde_json::from_value(info["config"].clone()).unwrap();
        assert_eq!(config, pod.config);
        // Stopped: the network released, the status still answers.
        let req = cri::StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        };
        stop_pod_sandbox(&crius, req).await.unwrap();
        let reply = status(true).await.unwrap().into_inner();
        let info: serde_json::Value = serde_json::from_str(&reply.info["info"]).unwrap();
        assert!(info["cniResult"].is_null());
        assert_eq!(
            info["config"]["metadata"],
            serde_json::json!(pod.config.metadata)
        );
        drop(f);
    }

    #[tokio::test]
    async fn remove_pod_sandbox_is_idempotent_and_its_repeated_del_is_harmless() {
        let (f, crius) = daemon();
        let id = run(&crius).await;
        for _ in 0..2 {
            let req = cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            };
            remove_pod_sandbox(&crius, req).await.unwrap();
        }
        // Stop's DEL released the network; the teardown's found nothing
        // cached; the second Remove found no pod.
        assert_eq!(
            f.net.calls(),
            [NetCall::Add(id.clone()), del(&id, true), del(&id, false)]
        );
        let unpins = f.ns.calls();
        let unpins = unpins.iter().filter(|c| matches!(c, NsCall::Unpin(_)));
        assert_eq!(unpins.count(), 4);
        f.assert_nothing_left();
        // The name is free again.
        run(&crius).await;
    }
}
