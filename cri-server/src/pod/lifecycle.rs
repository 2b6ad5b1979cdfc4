//! RunPodSandbox, and the pod's own part of StopPodSandbox and
//! RemovePodSandbox (the RPC layer stops and removes its containers).
//!
//! Creation runs in a spawned task, so that a client that gives up does not
//! abandon a half-made pod; on any failure the same idempotent teardown that
//! RemovePodSandbox uses undoes every step that was done.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use crius_proto::cri;

use super::{files, pod_name, PodRecord, PodState};
use crate::error::CriError;
use crate::namespaces::{self, NamespaceKinds};
use crate::network::cni::{PodNetwork, PortMapping, Protocol};
use crate::state::table::Entry;
use crate::{detached, new_id, now_nanos, Crius};

fn validate(config: &cri::PodSandboxConfig) -> Result<(), CriError> {
    let m = config
        .metadata
        .as_ref()
        .ok_or_else(|| CriError::invalid("config.metadata", "is required"))?;
    for (field, value) in [
        ("config.metadata.name", &m.name),
        ("config.metadata.namespace", &m.namespace),
        ("config.metadata.uid", &m.uid),
    ] {
        if value.is_empty() {
            return Err(CriError::invalid(field, "must not be empty"));
        }
    }
    Ok(())
}

/// Makes the pod (namespaces, network, files, cgroup parent) and records
/// it: its id. Errors: InvalidArgument for a bad config or an unknown
/// runtime handler, AlreadyExists for a taken name, Internal for a failed
/// step (undone, or kept NOTREADY for RemovePodSandbox). Not idempotent.
pub async fn run_pod(
    crius: &Arc<Crius>,
    req: cri::RunPodSandboxRequest,
) -> Result<String, CriError> {
    let config = req
        .config
        .ok_or_else(|| CriError::invalid("config", "is required"))?;
    validate(&config)?;
    if !req.runtime_handler.is_empty() {
        return Err(CriError::invalid(
            "runtime_handler",
            format!("unknown runtime handler {:?}", req.runtime_handler),
        ));
    }
    let id = new_id();
    let name = pod_name(&config);
    crius.pods.reserve_name(&name, &id)?;
    let crius = crius.clone();
    detached(async move {
        create(&crius, id.clone(), config)
            .await
            .map_err(|e| e.context("running pod sandbox"))?;
        Ok(id)
    })
    .await
}

async fn create(
    crius: &Arc<Crius>,
    id: String,
    config: cri::PodSandboxConfig,
) -> Result<(), CriError> {
    let dir = crius.config.state.join("pods").join(&id);
    let mut pod = PodRecord::new(id, dir, config, now_nanos());
    let result = match setup(crius, &mut pod).await {
        Ok(()) => crius
            .pods
            .insert(pod.clone())
            .map(drop)
            .map_err(CriError::from),
        Err(e) => Err(e),
    };
    let Err(e) = result else {
        return Ok(());
    };
    match teardown(crius, &pod).await {
        Ok(()) => crius.pods.release_name(&pod_name(&pod.config), &pod.id),
        Err(undo) => {
            // Kept, not leaked: RemovePodSandbox retries the teardown.
            tracing::error!(pod = %pod.id, error = %format!("{undo:#}"), "rollback of a failed pod left something behind; kept as not ready");
            pod.state = PodState::NotReady;
            if let Err(store) = crius.pods.insert(pod) {
                tracing::error!(error = %store, "recording the half-made pod");
            }
        }
    }
    Err(e)
}

/// Each step records in `pod` what it made, so that `teardown` undoes exactly that.
/// Errors: each concern's, as its `From` maps it (a bad kubelet
/// `cgroup_parent` is InvalidArgument naming `config.linux.cgroup_parent`).
async fn setup(crius: &Arc<Crius>, pod: &mut PodRecord) -> Result<(), CriError> {
    std::fs::create_dir_all(&pod.dir).with_context(|| format!("creating {}", pod.dir.display()))?;
    let ns = pod.namespace_options();
    let node = cri::NamespaceMode::Node as i32;
    let kinds = NamespaceKinds {
        net: ns.network != node,
        ipc: ns.ipc != node,
        // The pod's UTS namespace follows its network, as in Kubernetes.
        uts: ns.network != node,
    };
    let hostname = files::hostname(&pod.config);
    if kinds.net || kinds.ipc || kinds.uts {
        let dir = pod.dir.join("ns");
        let host = kinds.uts.then(|| hostname.clone());
        let pinned =
            tokio::task::spawn_blocking(move || namespaces::pin(&dir, kinds, host.as_deref()))
                .await??;
        pod.netns = pinned.net;
        pod.ipcns = pinned.ipc;
        pod.utsns = pinned.uts;
    }
    if let Some(netns) = pod.netns.clone() {
        let status = crius.cni.add(&pod_network(pod, &netns)).await?;
        pod.ip = status.ip;
        pod.additional_ips = status.additional_ips;
    }
    let resolv = files::resolv_conf(
        pod.config.dns_config.as_ref(),
        Path::new("/etc/resolv.conf"),
    )
    .context("reading the host's /etc/resolv.conf")?;
    let paths = files::paths(&pod.dir);
    write_file(&paths.resolv_conf, &resolv)?;
    write_file(&paths.hostname, &format!("{hostname}\n"))?;
    write_file(&paths.hosts, &files::hosts(&hostname, &pod.ip))?;
    // What the pod's containers read from its record.
    pod.files = paths;
    pod.hostname = files::containers_hostname(&pod.config, pod.utsns.is_some());
    let given = pod
        .config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.clone())
        .unwrap_or_default();
    let cgroup = crius.cgroups.pod_cgroup(&pod.id, &given)?;
    pod.cgroup_parent = cgroup.name;
    pod.owns_cgroup = cgroup.owned;
    Ok(())
}

fn write_file(path: &Path, content: &str) -> anyhow::Result<()> {
    std::fs::write(path, content).with_context(|| format!("writing {}", path.display()))
}

fn pod_network(pod: &PodRecord, netns: &Path) -> PodNetwork {
    let m = pod.config.metadata.clone().unwrap_or_default();
    PodNetwork {
        id: pod.id.clone(),
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        netns: netns.to_path_buf(),
        port_mappings: pod
            .config
            .port_mappings
            .iter()
            .map(|p| PortMapping {
                container_port: p.container_port,
                host_port: p.host_port,
                protocol: match cri::Protocol::try_from(p.protocol) {
                    Ok(cri::Protocol::Udp) => Protocol::Udp,
                    Ok(cri::Protocol::Sctp) => Protocol::Sctp,
                    _ => Protocol::Tcp,
                },
                host_ip: p.host_ip.clone(),
            })
            .collect(),
    }
}

/// Releases the pod's network, namespaces, files and cgroup. Idempotent.
async fn teardown(crius: &Crius, pod: &PodRecord) -> Result<(), CriError> {
    if let Some(netns) = &pod.netns {
        crius.cni.del(&pod_network(pod, netns)).await?;
    }
    let dir = pod.dir.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        namespaces::unpin(&dir.join("ns"))?;
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", dir.display()))
            }
            _ => Ok(()),
        }
    })
    .await??;
    if pod.owns_cgroup {
        crius.cgroups.remove(&pod.cgroup_parent)?;
    }
    Ok(())
}

/// Releases a ready pod's network and marks it not ready; the caller holds
/// the entry's op lock and has stopped the pod's containers first.
/// Idempotent: a pod not ready is left as it is. Errors: Internal (CNI DEL,
/// store).
pub async fn stop_pod(crius: &Crius, entry: &Entry<PodRecord>) -> Result<(), CriError> {
    let pod = entry.snapshot();
    if pod.state == PodState::Ready {
        if let Some(netns) = &pod.netns {
            crius.cni.del(&pod_network(&pod, netns)).await?;
        }
        crius.pods.update(entry, |p| p.state = PodState::NotReady)?;
    }
    Ok(())
}

/// Releases everything the pod holds (network, namespaces, files, cgroup)
/// and deletes its record; the caller holds the entry's op lock and has
/// stopped the pod and removed its containers first. Idempotent. Errors:
/// Internal (a teardown step, store).
pub async fn remove_pod(crius: &Crius, entry: &Entry<PodRecord>) -> Result<(), CriError> {
    let pod = entry.snapshot();
    teardown(crius, &pod).await?;
    crius.pods.remove(&pod.id)?;
    Ok(())
}
