//! RunPodSandbox, and the pod's own part of StopPodSandbox and
//! RemovePodSandbox (the RPC layer stops and removes its containers).
//!
//! Creation runs in a spawned task, so that a client that gives up does not
//! abandon a half-made pod; on any failure the same idempotent teardown that
//! RemovePodSandbox uses undoes every step that was done.

use std::path::Path;

use anyhow::Context;
use crius_proto::cri;

use super::{files, pause, pod_name, userns, PodDeps, PodFiles, PodRecord, PodState};
use crate::error::CriError;
use crate::events::EventType;
use crate::namespaces::NamespaceKinds;
use crate::network::cni::{PodNetwork, PortMapping, Protocol};
use crate::stamp::{new_id, now_nanos};
use crate::state::sandbox::UserMappings;
use crate::state::table::Entry;
use crate::task::detached;

/// The pod's user namespace maps, checked with the rest of `config`.
fn validate(config: &cri::PodSandboxConfig) -> Result<Option<UserMappings>, CriError> {
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
    let ns = (config.linux.as_ref())
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    userns::user_mappings(&ns)
}

/// Makes the pod (namespaces, network, files, cgroup parent) and records
/// it: its id. Errors: InvalidArgument for a bad config or an unknown
/// runtime handler, AlreadyExists for a taken name, Internal for a failed
/// step (undone, or kept NOTREADY for RemovePodSandbox). Not idempotent.
pub async fn run_pod(deps: &PodDeps, req: cri::RunPodSandboxRequest) -> Result<String, CriError> {
    let config = req
        .config
        .ok_or_else(|| CriError::invalid("config", "is required"))?;
    let user_mappings = validate(&config)?;
    let handler = deps.handlers.get(&req.runtime_handler)?;
    userns::handler_serves(handler, user_mappings.as_ref())?;
    let handler = handler.name.clone();
    let id = new_id();
    let name = pod_name(&config);
    deps.pods.reserve_name(&name, &id)?;
    let deps = deps.clone();
    detached(async move {
        create(&deps, id.clone(), config, handler)
            .await
            .map_err(|e| e.context("running pod sandbox"))?;
        Ok(id)
    })
    .await
}

async fn create(
    deps: &PodDeps,
    id: String,
    config: cri::PodSandboxConfig,
    runtime_handler: String,
) -> Result<(), CriError> {
    let dir = deps.pods_dir.join(&id);
    let mut pod = PodRecord::new(id, dir, config, now_nanos());
    pod.runtime_handler = runtime_handler;
    let result = match setup(deps, &mut pod).await {
        Ok(()) => deps
            .pods
            .insert(pod.clone())
            .map_err(|e| CriError::from(e).context("recording the pod")),
        Err(e) => Err(e),
    };
    let e = match result {
        Ok(entry) => {
            // A pod is created and started in one step (containerd sends both).
            deps.events.pod(EventType::ContainerCreatedEvent, &pod);
            deps.events.pod(EventType::ContainerStartedEvent, &pod);
            pause::watch(deps, entry);
            return Ok(());
        }
        Err(e) => e,
    };
    match teardown(deps, &pod).await {
        Ok(()) => deps.pods.release_name(&pod_name(&pod.config), &pod.id),
        Err(undo) => {
            // Kept, not leaked: RemovePodSandbox retries the teardown.
            tracing::error!(pod = %pod.id, error = %format!("{undo:#}"), "rollback of a failed pod left something behind; kept as not ready");
            pod.state = PodState::NotReady;
            if let Err(store) = deps.pods.insert(pod) {
                tracing::error!(error = %store, "recording the half-made pod");
            }
        }
    }
    Err(e)
}

/// Each step records in `pod` what it made, so that `teardown` undoes exactly that.
/// Errors: each concern's, as its `From` maps it (a bad kubelet
/// `cgroup_parent` is InvalidArgument naming `config.linux.cgroup_parent`);
/// an Internal one names its step in the cause chain.
async fn setup(deps: &PodDeps, pod: &mut PodRecord) -> Result<(), CriError> {
    std::fs::create_dir_all(&pod.dir)
        .with_context(|| format!("creating the pod's dir {}", pod.dir.display()))?;
    let ns = pod.namespace_options();
    let user = userns::user_mappings(&ns)?;
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
        let pinner = deps.namespaces.clone();
        let pinned = tokio::task::spawn_blocking(move || {
            pinner.pin(&dir, kinds, host.as_deref(), user.as_ref())
        })
        .await?
        .map_err(|e| CriError::from(e).context("pinning the pod's namespaces"))?;
        pod.netns = pinned.net;
        pod.ipcns = pinned.ipc;
        pod.utsns = pinned.uts;
        pod.userns = pinned.user;
        pod.user_mappings = user;
    }
    if let Some(netns) = pod.netns.clone() {
        let status = (deps.cni.add(&pod_network(pod, &netns)).await)
            .map_err(|e| CriError::from(e).context("setting up the pod network (CNI ADD)"))?;
        pod.ip = status.ip;
        pod.additional_ips = status.additional_ips;
    }
    // What the pod's containers read from its record.
    pod.files =
        write_files(pod, &hostname, &deps.host_resolv_conf).context("writing the pod's files")?;
    pod.hostname = files::containers_hostname(&pod.config, pod.utsns.is_some());
    let given = pod
        .config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.clone())
        .unwrap_or_default();
    let cgroup = (deps.cgroups.pod_cgroup(&pod.id, &given))
        .map_err(|e| CriError::from(e).context("naming the pod's cgroup"))?;
    pod.cgroup_parent = cgroup.name;
    pod.owns_cgroup = cgroup.owned;
    if pause::wanted(pod) {
        pause::start(deps, pod).await?;
    }
    Ok(())
}

/// resolv.conf, hostname and hosts in the pod's dir: their paths.
fn write_files(pod: &PodRecord, hostname: &str, host_resolv: &Path) -> anyhow::Result<PodFiles> {
    let resolv = files::resolv_conf(pod.config.dns_config.as_ref(), host_resolv)
        .with_context(|| format!("reading the host's {}", host_resolv.display()))?;
    let paths = files::paths(&pod.dir);
    write_file(&paths.resolv_conf, &resolv)?;
    write_file(&paths.hostname, &format!("{hostname}\n"))?;
    write_file(&paths.hosts, &files::hosts(hostname, &pod.ip))?;
    Ok(paths)
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

/// Releases the pod's pause process, network, namespaces, files and
/// cgroup. Idempotent.
async fn teardown(deps: &PodDeps, pod: &PodRecord) -> Result<(), CriError> {
    pause::remove(deps, pod).await?;
    if let Some(netns) = &pod.netns {
        deps.cni.del(&pod_network(pod, netns)).await?;
    }
    let dir = pod.dir.clone();
    let pinner = deps.namespaces.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        pinner.unpin(&dir.join("ns"))?;
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", dir.display()))
            }
            _ => Ok(()),
        }
    })
    .await??;
    if pod.owns_cgroup {
        deps.cgroups.remove(&pod.cgroup_parent)?;
    }
    Ok(())
}

/// Ends the pod's pause process, releases a ready pod's network and marks
/// it not ready; the caller holds the entry's op lock and has stopped the
/// pod's containers first. Idempotent: a pod not ready keeps its network
/// released. Errors: Internal (pause process, CNI DEL, store).
pub async fn stop_pod(deps: &PodDeps, entry: &Entry<PodRecord>) -> Result<(), CriError> {
    let pod = entry.snapshot();
    pause::stop(deps, &pod).await?;
    if pod.state == PodState::Ready {
        if let Some(netns) = &pod.netns {
            deps.cni.del(&pod_network(&pod, netns)).await?;
        }
        let stopped = deps.pods.update(entry, |p| p.state = PodState::NotReady)?;
        // A pod whose pause process is gone had its STOPPED event then.
        if pod.is_ready() {
            deps.events.pod(EventType::ContainerStoppedEvent, &stopped);
        }
    }
    Ok(())
}

/// Releases everything the pod holds (network, namespaces, files, cgroup)
/// and deletes its record; the caller holds the entry's op lock and has
/// stopped the pod and removed its containers first. Idempotent. Errors:
/// Internal (a teardown step, store).
pub async fn remove_pod(deps: &PodDeps, entry: &Entry<PodRecord>) -> Result<(), CriError> {
    let pod = entry.snapshot();
    teardown(deps, &pod).await?;
    deps.pods.remove(&pod.id)?;
    deps.events.pod(EventType::ContainerDeletedEvent, &pod);
    Ok(())
}

/// Rollback at every step of RunPodSandbox, through the fakes (no root):
/// a failure injected at each step leaves nothing of the pod behind, frees
/// its name, and names the step in the error.
#[cfg(test)]
mod rollback_tests {
    use tonic::{Code, Status};

    use super::*;
    use crate::cgroups::fake::FakeStep as CgroupStep;
    use crate::namespaces::fake::NsCall;
    use crate::namespaces::NamespaceKind;
    use crate::network::fake::{FakeStep as NetStep, NetCall};
    use crate::pod::testing::{run_request, PodFakes};
    use crate::shim_client::fake::FakeShimStep;
    use crate::shim_client::Shims;
    use crate::state::table::Table;
    use crate::state::Store;
    use std::sync::Arc;

    async fn run(f: &PodFakes, name: &str) -> Result<String, Status> {
        run_pod(&f.deps, run_request(name))
            .await
            .map_err(Status::from)
    }

    /// The failed run answered `code` naming `step`, left nothing behind,
    /// and a second run of the same name succeeds once the fault is gone.
    #[track_caller]
    fn failed_at(f: &PodFakes, got: Result<String, Status>, code: Code, step: &[&str]) {
        let status = got.expect_err("the run should fail");
        assert_eq!(status.code(), code, "{status:?}");
        for word in step {
            assert!(
                status.message().contains(word),
                "{:?} lacks {word:?}",
                status.message()
            );
        }
        f.assert_nothing_left();
    }

    async fn runs_again(f: &PodFakes) {
        let id = run(f, "web").await.expect("a second run of the same name");
        let pod = f.deps.pods.find(&id).unwrap().snapshot();
        assert_eq!(pod.state, PodState::Ready);
        assert!(f.net.added().contains(&id));
        // net, ipc, uts, and the pause process's PID namespace.
        assert_eq!(f.ns.pinned().len(), 4);
        assert_eq!(f.shims.calls(&id)[..3], ["Spawn", "Create", "Start"]);
    }

    #[tokio::test]
    async fn a_clean_run_sets_every_step_up() {
        let f = PodFakes::new(|_, _| {});
        let id = run(&f, "web").await.unwrap();
        let pod = f.deps.pods.find(&id).unwrap().snapshot();
        assert!(pod.netns.is_some() && pod.ipcns.is_some() && pod.utsns.is_some());
        assert_eq!(pod.ip, "10.88.0.2");
        assert_eq!(pod.cgroup_parent, format!("/fake/{id}"));
        assert!(pod.owns_cgroup);
        assert_eq!(
            std::fs::read_to_string(&pod.files.resolv_conf).unwrap(),
            "nameserver 10.0.0.10\n"
        );
        assert!(f.records_dir().join(format!("{id}.json")).exists());
        assert_eq!(f.net.calls(), [NetCall::Add(id.clone())]);
    }

    /// Fakes whose handlers include a runc one without user namespaces.
    fn with_runc() -> PodFakes {
        let runc = crate::runtime_handlers::RuntimeHandler {
            name: "runc".into(),
            runtime: crate::shim_client::ShimRuntime::Binary {
                path: "/usr/sbin/runc".into(),
                root: "/run/runc-crius".into(),
                hide_unified_cgroup: false,
            },
            features: Default::default(),
        };
        PodFakes::new(|deps, _| {
            deps.handlers = Arc::new((*deps.handlers).clone().with(runc));
        })
    }

    #[tokio::test]
    async fn a_pod_records_its_handler_and_its_pause_process_runs_in_process() {
        let f = with_runc();
        let mut req = run_request("web");
        req.runtime_handler = "runc".into();
        let id = run_pod(&f.deps, req).await.unwrap();
        let pod = f.deps.pods.find(&id).unwrap().snapshot();
        assert_eq!(pod.runtime_handler, "runc");
        assert_eq!(pod.status().runtime_handler, "runc");
        assert_eq!(
            f.shims.spawned_runtimes(),
            [(id, f.deps.handlers.default_handler().runtime.clone())]
        );
    }

    #[tokio::test]
    async fn an_unknown_handler_is_refused_naming_it_and_leaves_nothing() {
        let f = PodFakes::new(|_, _| {});
        let mut req = run_request("web");
        req.runtime_handler = "kata".into();
        let status = Status::from(run_pod(&f.deps, req).await.unwrap_err());
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "runtime_handler: unknown runtime handler \"kata\" (configured: \"\")"
        );
        assert!(f.ns.pinned().is_empty() && f.net.calls().is_empty());
        assert!(f.shims.spawned().is_empty());
        f.assert_nothing_left();
        runs_again(&f).await;
    }

    #[tokio::test]
    async fn name_reservation_fails_before_anything_is_done() {
        let f = PodFakes::new(|_, _| {});
        let first = run(&f, "web").await.unwrap();
        let (ns_calls, net_calls) = (f.ns.calls(), f.net.calls());
        let status = run(&f, "web").await.unwrap_err();
        assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
        assert!(status.message().contains("web") && status.message().contains(&first));
        // Nothing of the second attempt was made; the first pod is intact.
        assert_eq!(f.ns.calls(), ns_calls);
        assert_eq!(f.net.calls(), net_calls);
        assert_eq!(f.deps.pods.list().len(), 1);
        assert_eq!(PodFakes::entries(&f.pods_dir()).len(), 1);
        // Once the holder is gone, the name is free.
        let entry = f.deps.pods.find(&first).unwrap();
        stop_pod(&f.deps, &entry).await.unwrap();
        remove_pod(&f.deps, &entry).await.unwrap();
        f.assert_nothing_left();
        runs_again(&f).await;
    }

    async fn pin_fails_at(kind: NamespaceKind) {
        let f = PodFakes::new(|_, _| {});
        f.ns.fail_at(Some(kind));
        let got = run(&f, "web").await;
        failed_at(
            &f,
            got,
            Code::Internal,
            &["pinning the pod's namespaces", kind.name()],
        );
        // No network was asked for a pod whose namespaces failed.
        assert!(f.net.calls().iter().all(|c| !matches!(c, NetCall::Add(_))));
        f.ns.fail_at(None);
        runs_again(&f).await;
    }

    #[tokio::test]
    async fn net_namespace_pin_fails() {
        pin_fails_at(NamespaceKind::Net).await;
    }

    #[tokio::test]
    async fn ipc_namespace_pin_fails_and_the_net_pin_is_undone() {
        pin_fails_at(NamespaceKind::Ipc).await;
    }

    #[tokio::test]
    async fn uts_namespace_pin_fails_and_the_net_and_ipc_pins_are_undone() {
        let f = PodFakes::new(|_, _| {});
        f.ns.fail_at(Some(NamespaceKind::Uts));
        let got = run(&f, "web").await;
        failed_at(
            &f,
            got,
            Code::Internal,
            &["pinning the pod's namespaces", "uts"],
        );
        let unpinned: Vec<_> = (f.ns.calls().into_iter())
            .filter_map(|c| match c {
                NsCall::Unpin(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()),
                NsCall::Pin(_) | NsCall::Kill(..) => None,
            })
            .collect();
        assert_eq!(unpinned, ["net", "ipc"]);
        drop(f);
        pin_fails_at(NamespaceKind::Uts).await;
    }

    /// A failure at each step of the pause process's start undoes it (and
    /// every earlier step of the pod), naming the step.
    #[tokio::test]
    async fn a_pause_process_that_fails_to_start_is_undone() {
        for (step, words) in [
            (
                FakeShimStep::Spawn,
                &["spawning the pause process's shim"][..],
            ),
            (FakeShimStep::Create, &["creating the pause process"][..]),
            (FakeShimStep::Start, &["starting the pause process"][..]),
        ] {
            let f = PodFakes::new(|_, _| {});
            f.shims.fail_at(Some(step));
            let got = run(&f, "web").await;
            failed_at(&f, got, Code::Internal, words);
            f.shims.fail_at(None);
            runs_again(&f).await;
        }
        let f = PodFakes::new(|_, _| {});
        f.ns.fail_pid_pin(true);
        let got = run(&f, "web").await;
        failed_at(
            &f,
            got,
            Code::Internal,
            &["pinning the pod's PID namespace", "pid"],
        );
        // The created pause process was killed and deleted with its shim.
        let spawned = f.shims.spawned();
        assert_eq!(
            f.shims.calls(&spawned[0]),
            ["Spawn", "Create", "Kill", "Wait", "Delete", "Shutdown"]
        );
        f.ns.fail_pid_pin(false);
        runs_again(&f).await;
    }

    fn with_pid_mode(name: &str, mode: cri::NamespaceMode) -> cri::RunPodSandboxRequest {
        let mut req = run_request(name);
        req.config.as_mut().unwrap().linux = Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    pid: mode as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        req
    }

    /// Only a shared PID namespace runs a process.
    #[tokio::test]
    async fn a_pod_without_a_shared_pid_namespace_runs_no_process() {
        let f = PodFakes::new(|_, _| {});
        for (name, mode) in [
            ("own", cri::NamespaceMode::Container),
            ("node", cri::NamespaceMode::Node),
        ] {
            let id = run_pod(&f.deps, with_pid_mode(name, mode)).await.unwrap();
            let pod = f.deps.pods.find(&id).unwrap().snapshot();
            assert!(pod.pause.is_none(), "{name}");
            assert_eq!(
                f.ns.pinned().iter().filter(|p| p.ends_with("pid")).count(),
                0
            );
        }
        assert!(f.shims.spawned().is_empty());
        let id = run_pod(&f.deps, with_pid_mode("shared", cri::NamespaceMode::Pod))
            .await
            .unwrap();
        let pause = f.deps.pods.find(&id).unwrap().snapshot().pause.unwrap();
        assert_eq!(pause.pid, 4242);
        assert_eq!(
            pause.pidns.as_deref(),
            Some(&*f.pods_dir().join(&id).join("ns/pid"))
        );
        assert!(pause.bundle.join("config.json").exists());
        assert_eq!(f.shims.spawned(), [id]);
    }

    fn with_userns(name: &str, mode: cri::NamespaceMode) -> cri::RunPodSandboxRequest {
        let mut req = run_request(name);
        let ids = vec![cri::IdMapping {
            container_id: 0,
            host_id: 200000,
            length: 65536,
        }];
        req.config.as_mut().unwrap().linux = Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    userns_options: Some(cri::UserNamespace {
                        mode: mode as i32,
                        uids: ids.clone(),
                        gids: ids,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        req
    }

    /// A pod user namespace is pinned with the others, recorded, and
    /// released by remove; a refused mode makes nothing.
    #[tokio::test]
    async fn a_pod_user_namespace_is_pinned_and_released() {
        let f = PodFakes::new(|_, _| {});
        let id = run_pod(&f.deps, with_userns("userns", cri::NamespaceMode::Pod))
            .await
            .unwrap();
        let entry = f.deps.pods.find(&id).unwrap();
        let user = f.pods_dir().join(&id).join("ns/user");
        assert_eq!(entry.snapshot().userns.as_deref(), Some(&*user));
        assert_eq!(f.ns.calls()[0], NsCall::Pin(user.clone()));
        stop_pod(&f.deps, &entry).await.unwrap();
        remove_pod(&f.deps, &entry).await.unwrap();
        assert!(f.ns.calls().contains(&NsCall::Unpin(user)));
        f.assert_nothing_left();

        let calls = f.ns.calls();
        let status = run_pod(
            &f.deps,
            with_userns("refused", cri::NamespaceMode::Container),
        )
        .await
        .map_err(Status::from)
        .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains("userns_options.mode"),
            "{status:?}"
        );
        assert_eq!(f.ns.calls(), calls);
        f.assert_nothing_left();
        runs_again(&f).await;
    }

    #[tokio::test]
    async fn a_handler_without_user_namespaces_refuses_a_pod_user_namespace() {
        let f = with_runc();
        let mut req = with_userns("userns", cri::NamespaceMode::Pod);
        req.runtime_handler = "runc".into();
        let status = Status::from(run_pod(&f.deps, req).await.unwrap_err());
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "runtime_handler: runtime handler \"runc\" cannot run a pod with a user namespace (userns_options mode POD)"
        );
        assert!(f.ns.calls().is_empty() && f.net.calls().is_empty());
        f.assert_nothing_left();
        runs_again(&f).await;
    }

    async fn until(mut done: impl FnMut() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("timed out");
    }

    /// A pause process that ends, or whose shim is lost, makes the pod
    /// NOTREADY with the reason; stop and remove then release everything.
    #[tokio::test]
    async fn a_gone_pause_process_makes_the_pod_not_ready() {
        for lose_shim in [false, true] {
            let f = PodFakes::new(|_, _| {});
            let id = run(&f, "web").await.unwrap();
            let entry = f.deps.pods.find(&id).unwrap();
            until(|| f.shims.calls(&id).contains(&"Wait")).await;
            if lose_shim {
                f.shims.lose(&id);
            } else {
                f.shims.end(&id);
            }
            until(|| !entry.snapshot().is_ready()).await;
            let pod = entry.snapshot();
            assert_eq!(pod.state, PodState::Ready, "not stopped, only not ready");
            let reason = pod.pause.unwrap().gone.unwrap();
            let want = if lose_shim {
                "the pause process's shim is gone"
            } else {
                "the pause process exited with status 137"
            };
            assert!(reason.contains(want), "{reason}");
            stop_pod(&f.deps, &entry).await.unwrap();
            // A lost shim's pause process is killed through its pinned namespace.
            let pin = f.pods_dir().join(&id).join("ns/pid");
            let kills = f.ns.calls().contains(&NsCall::Kill(pin, 4242));
            assert_eq!(kills, lose_shim);
            remove_pod(&f.deps, &entry).await.unwrap();
            f.assert_nothing_left();
        }
    }

    /// A pod's transitions are events with its id, in order: CREATED and
    /// STARTED at its run, STOPPED once (at its stop, or when its pause
    /// process ends), DELETED with its last status.
    #[tokio::test]
    async fn a_pods_transitions_are_events_in_order() {
        use crate::events::testing::{assert_no_more, next, next_event};
        use crate::events::EventType::*;
        let f = PodFakes::new(|_, _| {});
        let mut events = f.deps.events.subscribe();
        let id = run(&f, "web").await.unwrap();
        let created = next_event(&mut events).await;
        assert_eq!(
            (created.container_event_type(), &created.container_id),
            (ContainerCreatedEvent, &id)
        );
        let status = created.pod_sandbox_status.unwrap();
        assert_eq!(status.state(), cri::PodSandboxState::SandboxReady);
        assert_eq!(status.network.unwrap().ip, "10.88.0.2");
        assert_eq!(next(&mut events).await, (ContainerStartedEvent, id.clone()));
        let entry = f.deps.pods.find(&id).unwrap();
        stop_pod(&f.deps, &entry).await.unwrap();
        stop_pod(&f.deps, &entry).await.unwrap();
        remove_pod(&f.deps, &entry).await.unwrap();
        let stopped = next_event(&mut events).await;
        assert_eq!(stopped.container_event_type(), ContainerStoppedEvent);
        let status = stopped.pod_sandbox_status.unwrap();
        assert_eq!(status.state(), cri::PodSandboxState::SandboxNotready);
        let deleted = next_event(&mut events).await;
        assert_eq!(
            (deleted.container_event_type(), &deleted.container_id),
            (ContainerDeletedEvent, &id)
        );
        assert_eq!(
            deleted.pod_sandbox_status.unwrap().id,
            id,
            "its last status"
        );
        assert_no_more(&mut events).await;

        let gone = run(&f, "gone").await.unwrap();
        assert_eq!(
            next(&mut events).await,
            (ContainerCreatedEvent, gone.clone())
        );
        assert_eq!(
            next(&mut events).await,
            (ContainerStartedEvent, gone.clone())
        );
        until(|| f.shims.calls(&gone).contains(&"Wait")).await;
        f.shims.end(&gone);
        let stopped = next_event(&mut events).await;
        assert_eq!(
            (stopped.container_event_type(), &stopped.container_id),
            (ContainerStoppedEvent, &gone)
        );
        let status = stopped.pod_sandbox_status.unwrap();
        assert_eq!(status.state(), cri::PodSandboxState::SandboxNotready);
        let entry = f.deps.pods.find(&gone).unwrap();
        stop_pod(&f.deps, &entry).await.unwrap();
        remove_pod(&f.deps, &entry).await.unwrap();
        assert_eq!(next(&mut events).await, (ContainerDeletedEvent, gone));
        assert_no_more(&mut events).await;
    }

    /// A stop ends the pause process without marking it gone: the pod is
    /// stopped, not broken.
    #[tokio::test]
    async fn a_stop_is_not_reported_as_a_gone_pause_process() {
        let f = PodFakes::new(|_, _| {});
        let id = run(&f, "web").await.unwrap();
        let entry = f.deps.pods.find(&id).unwrap();
        until(|| f.shims.calls(&id).contains(&"Wait")).await;
        {
            let _op = entry.op.lock().await;
            stop_pod(&f.deps, &entry).await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let pod = entry.snapshot();
        assert_eq!(pod.state, PodState::NotReady);
        assert_eq!(pod.pause.unwrap().gone, None);
    }

    /// After a restart, a ready pod whose pause shim no longer answers turns
    /// NOTREADY; one whose shim answers is watched again.
    #[tokio::test]
    async fn recovery_watches_the_pause_process_again() {
        let f = PodFakes::new(|_, _| {});
        let alive = run(&f, "alive").await.unwrap();
        let lost = run(&f, "lost").await.unwrap();
        f.shims.lose(&lost);
        let lost_entry = f.deps.pods.find(&lost).unwrap();
        until(|| !lost_entry.snapshot().is_ready()).await;
        // A fresh daemon over the same state: the records reload.
        let deps = PodDeps {
            pods: Arc::new(
                Table::load_upgrading(
                    Store::open(f.config.root.join("meta")).unwrap(),
                    super::super::upgrade_record,
                )
                .unwrap(),
            ),
            shims: Arc::new(Shims::new(Arc::new(f.shims.clone()))),
            ..f.deps.clone()
        };
        super::super::recover(&deps);
        until(|| {
            f.shims
                .calls(&alive)
                .iter()
                .filter(|c| **c == "Wait")
                .count()
                == 2
        })
        .await;
        let reloaded = deps.pods.find(&alive).unwrap();
        assert!(reloaded.snapshot().is_ready());
        f.shims.end(&alive);
        until(|| !reloaded.snapshot().is_ready()).await;
        let lost_again = deps.pods.find(&lost).unwrap().snapshot();
        assert!(!lost_again.is_ready());
    }

    #[tokio::test]
    async fn cni_add_fails_and_the_pins_are_undone() {
        let f = PodFakes::new(|_, _| {});
        f.net.fail_at(Some(NetStep::Add));
        let got = run(&f, "web").await;
        failed_at(&f, got, Code::Internal, &["CNI ADD", "injected"]);
        let calls = f.net.calls();
        assert!(matches!(&calls[..], [NetCall::Add(a), NetCall::Del { id, .. }] if a == id));
        assert_eq!(
            f.ns.calls().len(),
            6,
            "3 pins, 3 unpins: {:?}",
            f.ns.calls()
        );
        f.net.fail_at(None);
        runs_again(&f).await;
    }

    #[tokio::test]
    async fn pod_files_fail_and_the_network_and_pins_are_undone() {
        // The host's resolv.conf is a directory: reading it fails, even as root.
        let f = PodFakes::new(|c, tmp| {
            let dir = tmp.join("resolv-dir");
            std::fs::create_dir(&dir).unwrap();
            c.host_resolv_conf = dir;
        });
        let got = run(&f, "web").await;
        failed_at(
            &f,
            got,
            Code::Internal,
            &["writing the pod's files", "resolv-dir"],
        );
        assert!(matches!(
            &f.net.calls()[..],
            [
                NetCall::Add(_),
                NetCall::Del {
                    had_network: true,
                    ..
                }
            ]
        ));
        // This daemon's resolv.conf stays broken: a pod with its own DNS config runs.
        let mut req = run_request("web");
        req.config.as_mut().unwrap().dns_config = Some(cri::DnsConfig {
            servers: vec!["10.0.0.10".into()],
            ..Default::default()
        });
        run_pod(&f.deps, req)
            .await
            .expect("a second run of the same name");
    }

    #[tokio::test]
    async fn cgroup_fails_and_files_network_and_pins_are_undone() {
        let f = PodFakes::new(|_, _| {});
        f.cgroups.fail_at(Some(CgroupStep::PodCgroup));
        let got = run(&f, "web").await;
        failed_at(
            &f,
            got,
            Code::Internal,
            &["naming the pod's cgroup", "PodCgroup"],
        );
        // No cgroup was made, so none is removed.
        assert!(f.cgroups.removed().is_empty());
        f.cgroups.fail_at(None);
        runs_again(&f).await;
    }

    #[tokio::test]
    async fn a_bad_cgroup_parent_is_invalid_argument_and_rolled_back() {
        let f = PodFakes::new(|_, _| {});
        let mut req = run_request("web");
        req.config.as_mut().unwrap().linux = Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: "/kubepods/../../etc".into(),
            ..Default::default()
        });
        let got = run_pod(&f.deps, req).await.map_err(Status::from);
        failed_at(
            &f,
            got,
            Code::InvalidArgument,
            &["config.linux.cgroup_parent"],
        );
        runs_again(&f).await;
    }

    #[tokio::test]
    async fn record_write_fails_and_every_step_is_undone() {
        let f = PodFakes::new(|_, _| {});
        // The store's pods dir is a file: the record's write fails, even as root.
        let records = f.records_dir();
        let _ = std::fs::remove_dir_all(&records);
        std::fs::write(&records, "not a dir").unwrap();
        let got = run(&f, "web").await;
        let status = got.expect_err("the run should fail");
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        assert!(status.message().contains("recording the pod"), "{status:?}");
        // The owned cgroup named at the last step is removed.
        let removed = f.cgroups.removed();
        assert!(
            matches!(&removed[..], [c] if c.starts_with("/fake/")),
            "{removed:?}"
        );
        std::fs::remove_file(&records).unwrap();
        f.assert_nothing_left();
        runs_again(&f).await;
    }

    /// A rollback that fails itself keeps the pod NOTREADY under its name,
    /// never leaked; RemovePodSandbox finishes it.
    #[tokio::test]
    async fn a_failed_rollback_keeps_the_pod_not_ready_for_remove() {
        let f = PodFakes::new(|_, _| {});
        f.cgroups.fail_at(Some(CgroupStep::PodCgroup));
        f.net.fail_at(Some(NetStep::Del));
        let status = run(&f, "web").await.unwrap_err();
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        assert!(
            status.message().contains("naming the pod's cgroup"),
            "{status:?}"
        );
        let kept = f.deps.pods.list();
        assert!(
            matches!(&kept[..], [p] if p.state == PodState::NotReady),
            "{kept:?}"
        );
        assert_eq!(
            run(&f, "web").await.unwrap_err().code(),
            Code::AlreadyExists
        );
        f.cgroups.fail_at(None);
        f.net.fail_at(None);
        let entry = f.deps.pods.find(&kept[0].id).unwrap();
        stop_pod(&f.deps, &entry).await.unwrap();
        remove_pod(&f.deps, &entry).await.unwrap();
        f.assert_nothing_left();
        runs_again(&f).await;
    }
}
