//! The lookups as a CRI client sees them: every RPC that names a pod or a
//! container answers an unknown id with NotFound naming it, the idempotent
//! ones succeed, and an ambiguous prefix is NotFound everywhere.

use std::path::PathBuf;
use std::sync::Arc;

use crius_proto::cri;
use tonic::Code;

use super::{container, exec, sandbox, stats, Reply};
use crate::config::Config;
use crate::state::sandbox::{pod_name, PodRecord, PodState};
use crate::Crius;

fn crius() -> (tempfile::TempDir, Arc<Crius>) {
    let tmp = tempfile::tempdir().unwrap();
    let config = Config {
        root: tmp.path().join("root"),
        state: tmp.path().join("state"),
        ..Default::default()
    };
    (tmp, Arc::new(Crius::open(config).unwrap()))
}

/// A pod with nothing to release: no namespaces, network or own cgroup.
fn add_pod(crius: &Crius, id: &str, state: PodState) {
    let config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: format!("pod-{id}"),
            namespace: "ns".into(),
            uid: id.into(),
            attempt: 0,
        }),
        ..Default::default()
    };
    let dir = crius.config.state.join("pods").join(id);
    let pod = PodRecord {
        state,
        ..PodRecord::new(id.into(), dir, config, 1)
    };
    crius.pods.reserve_name(&pod_name(&pod.config), id).unwrap();
    crius.pods.insert(pod).unwrap();
}

#[track_caller]
fn not_found<T: std::fmt::Debug>(reply: Reply<T>, id: &str) {
    let status = reply.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains(id), "{status:?}");
}

#[tokio::test]
async fn an_unknown_id_is_not_found_naming_it() {
    let (_tmp, crius) = crius();
    let pod = "feedface";
    let c = "deadbeef";
    not_found(
        sandbox::pod_sandbox_status(
            &crius,
            cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod.into(),
                verbose: false,
            },
        )
        .await,
        pod,
    );
    let status = sandbox::pod_sandbox_status(&crius, Default::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "an empty id: {status:?}");
    not_found(
        stats::pod_sandbox_stats(
            &crius,
            cri::PodSandboxStatsRequest {
                pod_sandbox_id: pod.into(),
            },
        )
        .await,
        pod,
    );
    not_found(
        container::create_container(
            &crius,
            cri::CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                ..Default::default()
            },
        )
        .await,
        pod,
    );
    let message = container::container_status(
        &crius,
        cri::ContainerStatusRequest {
            container_id: c.into(),
            verbose: false,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(message.message(), r#"container "deadbeef" not found"#);
    not_found(
        container::start_container(
            &crius,
            cri::StartContainerRequest {
                container_id: c.into(),
            },
        )
        .await,
        c,
    );
    not_found(
        container::reopen_container_log(
            &crius,
            cri::ReopenContainerLogRequest {
                container_id: c.into(),
            },
        )
        .await,
        c,
    );
    not_found(
        exec::exec_sync(
            &crius,
            cri::ExecSyncRequest {
                container_id: c.into(),
                cmd: vec!["true".into()],
                timeout: 1,
            },
        )
        .await,
        c,
    );
    not_found(
        stats::container_stats(
            &crius,
            cri::ContainerStatsRequest {
                container_id: c.into(),
            },
        )
        .await,
        c,
    );
}

#[tokio::test]
async fn stop_and_remove_of_an_unknown_id_succeed() {
    let (_tmp, crius) = crius();
    sandbox::stop_pod_sandbox(
        &crius,
        cri::StopPodSandboxRequest {
            pod_sandbox_id: "feedface".into(),
        },
    )
    .await
    .unwrap();
    sandbox::remove_pod_sandbox(
        &crius,
        cri::RemovePodSandboxRequest {
            pod_sandbox_id: "feedface".into(),
        },
    )
    .await
    .unwrap();
    container::stop_container(
        &crius,
        cri::StopContainerRequest {
            container_id: "deadbeef".into(),
            timeout: 0,
        },
    )
    .await
    .unwrap();
    container::remove_container(
        &crius,
        cri::RemoveContainerRequest {
            container_id: "deadbeef".into(),
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn an_ambiguous_prefix_is_not_found_a_unique_one_finds() {
    let (_tmp, crius) = crius();
    add_pod(&crius, "abc1", PodState::Ready);
    add_pod(&crius, "abc2", PodState::Ready);
    for reply in [
        sandbox::pod_sandbox_status(
            &crius,
            cri::PodSandboxStatusRequest {
                pod_sandbox_id: "abc".into(),
                verbose: false,
            },
        )
        .await
        .map(drop),
        sandbox::stop_pod_sandbox(
            &crius,
            cri::StopPodSandboxRequest {
                pod_sandbox_id: "abc".into(),
            },
        )
        .await
        .map(drop),
        sandbox::remove_pod_sandbox(
            &crius,
            cri::RemovePodSandboxRequest {
                pod_sandbox_id: "abc".into(),
            },
        )
        .await
        .map(drop),
    ] {
        let status = reply.unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(
            status.message(),
            r#"pod sandbox id prefix "abc" is ambiguous"#
        );
    }
    let status = sandbox::pod_sandbox_status(
        &crius,
        cri::PodSandboxStatusRequest {
            pod_sandbox_id: "abc2".into(),
            verbose: false,
        },
    )
    .await
    .unwrap()
    .into_inner()
    .status
    .unwrap();
    assert_eq!(status.id, "abc2");
}

#[tokio::test]
async fn a_container_needs_a_ready_pod() {
    let (_tmp, crius) = crius();
    add_pod(&crius, "abc1", PodState::NotReady);
    let status = container::create_container(
        &crius,
        cri::CreateContainerRequest {
            pod_sandbox_id: "abc".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
}

#[tokio::test]
async fn a_pod_is_found_by_prefix_stopped_and_removed() {
    let (_tmp, crius) = crius();
    add_pod(&crius, "abc1", PodState::Ready);
    sandbox::stop_pod_sandbox(
        &crius,
        cri::StopPodSandboxRequest {
            pod_sandbox_id: "abc".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        crius.pods.find("abc1").unwrap().snapshot().state,
        PodState::NotReady
    );
    let dir: PathBuf = crius.pods.find("abc1").unwrap().snapshot().dir;
    std::fs::create_dir_all(&dir).unwrap();
    sandbox::remove_pod_sandbox(
        &crius,
        cri::RemovePodSandboxRequest {
            pod_sandbox_id: "abc".into(),
        },
    )
    .await
    .unwrap();
    assert!(crius.pods.find_if_any("abc1").unwrap().is_none());
    assert!(!dir.exists());
    // Its name is free again.
    add_pod(&crius, "abc1", PodState::Ready);
}
