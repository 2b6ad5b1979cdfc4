//! The pause process of a pod with a shared PID namespace
//! (`namespace_options.pid == POD`): PID 1 of that namespace, which the
//! pod's containers join. It runs as a sandbox container (spec:
//! [`crate::spec::pause_spec`]) under a `crius-shim` of its own, whose
//! libcontainer id is the pod's id; the shim stays outside the pod's mount
//! and PID namespaces, as every container's shim does.
//!
//! Why a process at all: a PID namespace lives only while its PID 1 does,
//! and a container's init as PID 1 gets no default action for SIGTERM (the
//! kernel drops it until the process sets a handler), so `sh -c top` would
//! ignore a stop; under the pause process it dies on SIGTERM at once, as
//! under containerd and CRI-O. A pod without a shared PID namespace runs no
//! process.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use crius_proto::cri;

use super::{PodDeps, PodRecord};
use crate::error::CriError;
use crate::events::EventType;
use crate::shim_client::{ShimApi, ShimError, ShimPaths};
use crate::spec::{self, SandboxNamespaces};
use crate::state::sandbox::PauseRecord;
use crate::state::table::Entry;

/// How often a watch connects again after its Wait broke off, and how long
/// it lets a busy shim be first.
const WAIT_RETRIES: u32 = 5;
const WAIT_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// How long a stop waits for the SIGKILLed pause process to be reaped.
const KILL_REAP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// True when the pod's config asks for a shared PID namespace (CRI's
/// default: POD is the proto's zero value).
pub fn wanted(pod: &PodRecord) -> bool {
    pod.namespace_options().pid == cri::NamespaceMode::Pod as i32
}

/// Starts the pod's pause process in its pinned namespaces and cgroup, and
/// pins its PID namespace at `<pod dir>/ns/pid`. Records in `pod.pause`
/// what it makes as it goes (the bundle first), so that [`remove`] undoes
/// exactly that. Errors: each step's, naming it (writing the bundle,
/// spawning the shim, creating or starting the process, pinning).
pub async fn start(deps: &PodDeps, pod: &mut PodRecord) -> Result<(), CriError> {
    let bundle = crate::shim_client::bundle_dir(&deps.bundles_dir, &pod.id);
    pod.pause = Some(PauseRecord {
        bundle: bundle.clone(),
        ..Default::default()
    });
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs).with_context(|| format!("creating {}", rootfs.display()))?;
    let spec = spec::pause_spec(&spec::PauseSpecInput {
        rootfs: &rootfs,
        sandbox_id: &pod.id,
        namespaces: &SandboxNamespaces {
            network: pod.netns.clone(),
            ipc: pod.ipcns.clone(),
            uts: pod.utsns.clone(),
            pid: None,
            user: pod.userns.clone(),
        },
        cgroups_path: deps
            .cgroups
            .container_cgroups_path(&pod.cgroup_parent, &pod.id),
        host: &deps.host,
    })
    .map_err(|e| CriError::from(e).context("building the pause process's spec"))?;
    let config_json = bundle.join("config.json");
    spec.save(&config_json)
        .with_context(|| format!("writing {}", config_json.display()))?;
    // crius' own process, whatever the pod's handler: only the in-process
    // runtime has the built-in pause workload.
    let shim = deps
        .shims
        .spawn(
            &pod.id,
            &ShimPaths::in_bundle(&bundle),
            &deps.handlers.default_handler().runtime,
            None,
        )
        .await
        .map_err(|e| CriError::from(e).context("spawning the pause process's shim"))?;
    let pid = shim
        .create(false, false)
        .await
        .map_err(|e| CriError::from(e).context("creating the pause process"))?;
    set(pod, |p| p.pid = pid);
    // Created, not started: its shim cannot have reaped it, so `pid` is it.
    let (pinner, dir) = (deps.namespaces.clone(), pod.dir.join("ns"));
    let pidns = tokio::task::spawn_blocking(move || pinner.pin_pid(&dir, pid))
        .await?
        .map_err(|e| CriError::from(e).context("pinning the pod's PID namespace"))?;
    set(pod, |p| p.pidns = Some(pidns));
    shim.start()
        .await
        .map_err(|e| CriError::from(e).context("starting the pause process"))?;
    Ok(())
}

fn set(pod: &mut PodRecord, f: impl FnOnce(&mut PauseRecord)) {
    if let Some(pause) = pod.pause.as_mut() {
        f(pause);
    }
}

/// Watches the pod's running pause process: when it ends, or its shim is
/// lost, while the pod is ready, the pod turns NOTREADY with the reason in
/// its record (kubelet then makes a new sandbox, as it does for a dead pause
/// container under containerd). A broken connection alone is not a lost
/// shim: the watch connects again, and only a shim that no longer answers
/// is lost. The watch ends once the pod is stopped or removed. Used for a
/// new pod and, after a criusd restart, by [`recover`].
pub fn watch(deps: &PodDeps, entry: Arc<Entry<PodRecord>>) {
    let deps = deps.clone();
    tokio::spawn(async move {
        let mut retries = WAIT_RETRIES;
        let reason = loop {
            let pod = entry.snapshot();
            let Some(bundle) = pod.pause.map(|p| p.bundle) else {
                return;
            };
            let shim = match deps.shims.get(&pod.id, &bundle).await {
                Ok(shim) => shim,
                Err(e) if e.is_unreachable() => {
                    break format!("the pause process's shim is gone: {e}")
                }
                Err(e) => break format!("the pause process's shim fails: {e}"),
            };
            match shim.wait().await {
                Ok(exit) => {
                    break format!("the pause process exited with status {}", exit.exit_code)
                }
                Err(e) if retries == 0 => break format!("the pause process's shim fails: {e}"),
                Err(e) => {
                    tracing::debug!(pod = %pod.id, error = %e, "the pause process's Wait broke off; connecting again")
                }
            }
            retries -= 1;
            tokio::time::sleep(WAIT_RETRY_PAUSE).await;
            // A stop (or removal) ends the shim itself: nothing left to watch.
            if !entry.snapshot().is_ready() || deps.pods.find(&pod.id).is_err() {
                return;
            }
            deps.shims.remove(&pod.id);
        };
        mark_gone(&deps, &entry, reason).await;
    });
}

/// Records that the pause process is gone, unless the pod was stopped or
/// removed meanwhile (a stop ends the pause process itself). Takes the
/// pod's op lock, so a stop in progress finishes first.
async fn mark_gone(deps: &PodDeps, entry: &Entry<PodRecord>, reason: String) {
    let _op = entry.op.lock().await;
    let pod = entry.snapshot();
    let stopped = pod.state != super::PodState::Ready;
    let Some(pause) = pod.pause.as_ref().filter(|p| p.gone.is_none()) else {
        return;
    };
    if stopped || deps.pods.find(&pod.id).is_err() {
        return;
    }
    tracing::warn!(pod = %pod.id, pid = pause.pid, "{reason}; the pod is not ready");
    match deps
        .pods
        .update(entry, |p| set(p, |pause| pause.gone = Some(reason)))
    {
        // The pod's sandbox stopped on its own (containerd's sandbox exit).
        Ok(pod) => deps.events.pod(EventType::ContainerStoppedEvent, &pod),
        Err(e) => {
            tracing::error!(pod = %pod.id, error = %e, "recording that the pause process is gone")
        }
    }
}

/// After a criusd restart: watches again the pause process of every ready
/// pod; a pod whose pause shim no longer answers turns NOTREADY at once.
pub fn recover(deps: &PodDeps) {
    for entry in deps.pods.entries() {
        if entry.snapshot().is_ready() {
            watch(deps, entry);
        }
    }
}

/// Ends the pod's pause process (SIGKILL: it holds nothing to save) and its
/// shim, and forgets the connection; the bundle stays for [`remove`].
/// Idempotent: a pause process or shim already gone is fine. When the shim
/// is lost (killed), the pause process it left is killed here, found by its
/// pinned PID namespace; its cgroup goes with the pod's. Errors: the
/// shim's, when it answers but cannot delete the process.
pub async fn stop(deps: &PodDeps, pod: &PodRecord) -> Result<(), CriError> {
    let Some(pause) = &pod.pause else {
        return Ok(());
    };
    let ended = match deps.shims.get(&pod.id, &pause.bundle).await {
        Ok(shim) => end_through(shim.as_ref()).await,
        Err(e) => Err(e),
    };
    match ended {
        Ok(()) => {}
        Err(e) if e.is_unreachable() => kill_orphan(deps, pod, pause).await?,
        Err(e) => return Err(CriError::from(e).context("deleting the pause process")),
    }
    deps.shims.remove(&pod.id);
    Ok(())
}

/// Kill, delete, shutdown through the pause process's shim.
async fn end_through(shim: &dyn ShimApi) -> Result<(), ShimError> {
    // Refused when the process was never created or is gone: both fine,
    // delete settles either.
    match shim.kill(libc::SIGKILL, true).await {
        Err(e) if e.is_unreachable() => return Err(e),
        Err(e) => tracing::debug!(error = %e, "killing the pause process"),
        // Delete refuses a process whose exit the shim has not reaped yet.
        Ok(()) => match tokio::time::timeout(KILL_REAP_TIMEOUT, shim.wait()).await {
            Ok(Err(e)) if e.is_unreachable() => return Err(e),
            _ => {}
        },
    }
    shim.delete().await?;
    match shim.shutdown().await {
        Err(e) if !e.is_unreachable() => Err(e),
        _ => Ok(()),
    }
}

/// SIGKILLs the pause process a lost shim left running, if it is still the
/// PID 1 of the pod's pinned PID namespace (never another process that
/// reuses its pid).
async fn kill_orphan(deps: &PodDeps, pod: &PodRecord, pause: &PauseRecord) -> Result<(), CriError> {
    let Some(pin) = pause.pidns.clone() else {
        return Ok(());
    };
    let (pinner, pid) = (deps.namespaces.clone(), pause.pid);
    let killed = tokio::task::spawn_blocking(move || pinner.kill_pinned_pid(&pin, pid))
        .await?
        .map_err(|e| CriError::from(e).context("killing the pause process of a lost shim"))?;
    if killed {
        tracing::warn!(pod = %pod.id, pid, "killed the pause process its lost shim left running");
    }
    Ok(())
}

/// [`stop`], then removes the pause process's bundle. Idempotent. The PID
/// namespace pin goes with the pod's other pins.
pub async fn remove(deps: &PodDeps, pod: &PodRecord) -> Result<(), CriError> {
    stop(deps, pod).await?;
    if let Some(pause) = &pod.pause {
        remove_bundle(&pause.bundle).await?;
    }
    Ok(())
}

async fn remove_bundle(bundle: &Path) -> Result<(), CriError> {
    let bundle: PathBuf = bundle.to_path_buf();
    tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&bundle) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", bundle.display()))
        }
        _ => Ok(()),
    })
    .await??;
    Ok(())
}
