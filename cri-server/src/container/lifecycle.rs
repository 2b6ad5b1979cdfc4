//! CreateContainer, StartContainer, StopContainer, RemoveContainer.
//!
//! State-changing work runs in spawned tasks (a caller that gives up does not
//! abandon it half-way); a failed create undoes every step with the same
//! idempotent teardown RemoveContainer uses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use crius_proto::cri;
use crius_proto::shim::v1 as pb;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{container_name, ContainerDeps, ContainerRecord, ContainerState};
use super::{idmapped, signal};
use crate::error::CriError;
use crate::events::EventType;
use crate::shim_client::{ShimApi, ShimPaths};
use crate::spec::{self, ContainerSpecInput, SandboxNamespaces};
use crate::stamp::{new_id, now_nanos};
use crate::state::sandbox::PodRecord;
use crate::state::table::Entry;
use crate::task::detached;

/// The exit code of a container whose start failed (containerd's
/// `errorStartExitCode`, internal/cri/server/helpers.go).
const START_ERROR_EXIT_CODE: i32 = 128;

/// Creates the container in `pod` (found and checked ready by the caller):
/// its id. Errors: InvalidArgument for a bad config (an image volume's
/// `image_sub_path` that names no path inside its image among them),
/// NotFound for an unknown image (the container's or an image volume's),
/// AlreadyExists for a taken name, Internal for a failed
/// step, its message naming the step (preparing the rootfs, building the
/// spec, spawning the shim, creating the container in it, writing the
/// record); Unavailable when the new shim stops serving. A failed step is
/// undone with the name released, or the container kept UNKNOWN for
/// RemoveContainer. Not idempotent.
pub async fn create_container(
    deps: &ContainerDeps,
    pod: PodRecord,
    req: cri::CreateContainerRequest,
) -> Result<String, CriError> {
    let config = req
        .config
        .ok_or_else(|| CriError::invalid("config", "is required"))?;
    let metadata = config
        .metadata
        .as_ref()
        .ok_or_else(|| CriError::invalid("config.metadata", "is required"))?;
    if metadata.name.is_empty() {
        return Err(CriError::invalid(
            "config.metadata.name",
            "must not be empty",
        ));
    }
    handler_serves(deps, &pod, &config)?;
    let image_name = config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    if image_name.is_empty() {
        return Err(CriError::invalid("config.image.image", "must not be empty"));
    }
    let image = deps
        .images
        .resolve(&image_name)
        .ok_or_else(|| CriError::NotFound(format!("image {image_name:?} not found")))?;
    let effective_stop_signal = signal::stop_signal(config.stop_signal, &image.config.stop_signal)?;
    let image_volumes = image_volumes(deps, &config)?;
    let id = new_id();
    let pod_name = crate::state::sandbox::pod_name(&pod.config);
    let name = container_name(&config, &pod_name);
    deps.containers.reserve_name(&name, &id)?;
    let record = ContainerRecord {
        // A short name keeps the shim's socket path far below the 107 bytes
        // a unix socket allows; creating the dir fails on a collision.
        bundle: crate::shim_client::bundle_dir(&deps.bundles_dir, &id),
        layer_dir: deps.snapshotter.container_dir(&id),
        log_path: log_path(&pod, &config),
        id: id.clone(),
        pod_id: pod.id.clone(),
        pod_name,
        image_id: image.id.clone(),
        state: ContainerState::Created,
        created_at: now_nanos(),
        started_at: 0,
        finished_at: 0,
        exit_code: 0,
        oom_killed: false,
        pid: 0,
        stop_signal: image.config.stop_signal.clone(),
        effective_stop_signal: effective_stop_signal as i32,
        process: Default::default(),
        resources: None,
        start_error: None,
        image_volumes: Vec::new(),
        config,
    };
    let layers = deps.images.layer_dirs(&image);
    let image_view = spec::ImageConfigView {
        user: image.config.user.clone(),
        env: image.config.env.clone(),
        entrypoint: image.config.entrypoint.clone(),
        cmd: image.config.cmd.clone(),
        working_dir: image.config.working_dir.clone(),
        stop_signal: image.config.stop_signal.clone(),
    };
    let deps = deps.clone();
    detached(async move {
        let mut record = record;
        // The annotation names the image as the user did, not kubelet's image ID.
        let annotated_name = super::reported_image(record.config.image.as_ref(), &[]).image;
        // A bundle dir that exists already is another container's (its
        // short name collided): nothing of ours to undo there.
        if let Err(e) = make_bundle(&record.bundle) {
            deps.containers.release_name(&name, &id);
            return Err(e);
        }
        let result = match setup(&deps, &pod, &mut record, &layers, &image_volumes, &annotated_name, &image_view).await {
            Ok(()) => deps
                .containers
                .insert(record.clone())
                .map(drop)
                .map_err(|e| CriError::from(e).context("writing the container's record")),
            Err(e) => Err(e),
        };
        let Err(e) = result else {
            deps.events.container(EventType::ContainerCreatedEvent, &record);
            return Ok(id);
        };
        match teardown(&deps, &record).await {
            Ok(()) => deps.containers.release_name(&name, &id),
            Err(undo) => {
                // Kept, not leaked: RemoveContainer retries the teardown.
                tracing::error!(container = %id, error = %format!("{undo:#}"), "rollback of a failed container left something behind; kept as unknown");
                record.state = ContainerState::Unknown;
                if let Err(store) = deps.containers.insert(record) {
                    tracing::error!(error = %store, "recording the half-made container");
                }
            }
        }
        Err(e)
    })
    .await
}

fn log_path(pod: &PodRecord, config: &cri::ContainerConfig) -> String {
    if pod.config.log_directory.is_empty() || config.log_path.is_empty() {
        return String::new();
    }
    Path::new(&pod.config.log_directory)
        .join(&config.log_path)
        .display()
        .to_string()
}

/// An image volume to mount: mount number `mount` binds image `image_id`,
/// or `sub_path` inside it.
struct VolumeToMount {
    mount: usize,
    image_id: String,
    sub_path: String,
}

/// The image volumes `config` asks for, their images found in the store.
/// Errors: InvalidArgument for a volume the request cannot have (the spec's
/// rule: [`spec::image_volumes`]); NotFound naming an image that is not in
/// the store (kubelet pulls it first) and the mount.
fn image_volumes(
    deps: &ContainerDeps,
    config: &cri::ContainerConfig,
) -> Result<Vec<VolumeToMount>, CriError> {
    spec::image_volumes(config)?
        .into_iter()
        .map(|v| {
            let image = deps.images.resolve(v.image).ok_or_else(|| {
                CriError::NotFound(format!(
                    "image {:?} of config.mounts[{}].image not found",
                    v.image, v.mount
                ))
            })?;
            Ok(VolumeToMount {
                mount: v.mount,
                image_id: image.id,
                sub_path: v.sub_path.to_string(),
            })
        })
        .collect()
}

/// Creates the container's bundle dir (and its parent). Errors: Internal,
/// also when it exists already. Not idempotent.
fn make_bundle(bundle: &Path) -> Result<(), CriError> {
    if let Some(parent) = bundle.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::create_dir(bundle).with_context(|| format!("creating {}", bundle.display()))?;
    Ok(())
}

/// Every step of CreateContainer after the bundle dir: rootfs, image
/// volumes (each recorded as soon as it is mounted), spec, log dir, shim
/// spawn, shim create. On error the caller undoes them all with
/// [`teardown`].
async fn setup(
    deps: &ContainerDeps,
    pod: &PodRecord,
    record: &mut ContainerRecord,
    layers: &[PathBuf],
    image_volumes: &[VolumeToMount],
    image_name: &str,
    image: &spec::ImageConfigView,
) -> Result<(), CriError> {
    let rootfs = record.rootfs();
    std::fs::create_dir_all(&rootfs).with_context(|| format!("creating {}", rootfs.display()))?;
    {
        let snapshotter = deps.snapshotter.clone();
        let (layers, layer_dir, rootfs, userns) = (
            layers.to_vec(),
            record.layer_dir.clone(),
            rootfs.clone(),
            pod_user_namespace(pod),
        );
        tokio::task::spawn_blocking(move || {
            snapshotter.prepare(&layer_dir, &layers, &rootfs, userns.as_ref())
        })
        .await?
        .map_err(|e| CriError::from(e).context("preparing the container's rootfs"))?;
    }
    let mut volume_sources = BTreeMap::new();
    for volume in image_volumes {
        let images = deps.images.clone();
        let (image_id, sub_path, mount, id) = (
            volume.image_id.clone(),
            volume.sub_path.clone(),
            volume.mount,
            record.id.clone(),
        );
        let mounted = tokio::task::spawn_blocking(move || {
            images.mount_volume(&image_id, &sub_path, mount, &id)
        })
        .await?
        .map_err(|e| CriError::from(e).context("mounting an image volume"))?;
        record
            .image_volumes
            .push(crate::state::container::ImageVolume {
                mount: volume.mount,
                image_id: mounted.image_id,
            });
        volume_sources.insert(volume.mount, mounted.source);
    }
    let namespaces = SandboxNamespaces {
        network: pod.netns.clone(),
        ipc: pod.ipcns.clone(),
        uts: pod.utsns.clone(),
        pid: pod.pause.as_ref().and_then(|p| p.pidns.clone()),
        user: pod.userns.clone(),
    };
    let target_pid_namespace = target_pid_namespace(deps, pod, &record.config)?;
    let spec = spec::container_spec(&ContainerSpecInput {
        container_id: &record.id,
        sandbox_id: &pod.id,
        image_name,
        config: &record.config,
        sandbox: &pod.config,
        image,
        rootfs: &rootfs,
        namespaces: &namespaces,
        user_mappings: pod.user_mappings.as_ref(),
        target_pid_namespace: target_pid_namespace.as_deref(),
        cgroups_path: deps
            .cgroups
            .container_cgroups_path(&pod.cgroup_parent, &record.id),
        // What RunPodSandbox resolved for the pod's containers.
        hostname: &pod.hostname,
        resolv_conf: Some(&pod.files.resolv_conf),
        hosts_file: Some(&pod.files.hosts),
        hostname_file: Some(&pod.files.hostname),
        shm_path: None,
        host: &deps.host,
        protected_host_dirs: &deps.protected_host_dirs,
        image_volumes: &volume_sources,
    })
    .map_err(|e| CriError::from(e).context("building the container's spec"))?;
    let mut spec = spec;
    if let Some(userns) = pod.userns.clone() {
        let bundle = record.bundle.clone();
        spec = tokio::task::spawn_blocking(move || {
            idmapped::idmap_binds(&mut spec, &bundle, &userns).map(|()| spec)
        })
        .await?
        .context("idmapping the container's binds")?;
    }
    record.process = spec.process().clone().unwrap_or_default();
    record.resources = spec::applied_resources(&spec);
    let config_json = record.bundle.join("config.json");
    spec.save(&config_json)
        .with_context(|| format!("writing {}", config_json.display()))?;
    if !record.log_path.is_empty() {
        if let Some(dir) = Path::new(&record.log_path).parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating log dir {}", dir.display()))?;
        }
    }
    let runtime = &deps.handlers.get(&pod.runtime_handler)?.runtime;
    let shim = deps
        .shims
        .spawn(
            &record.id,
            &ShimPaths::in_bundle(&record.bundle),
            runtime,
            (!record.log_path.is_empty()).then(|| Path::new(&record.log_path)),
        )
        .await
        .map_err(|e| CriError::from(e).context("spawning the container's shim"))?;
    let (stdin, stdin_once) = (record.config.stdin, record.config.stdin_once);
    record.pid = shim
        .create(stdin, stdin_once)
        .await
        .map_err(|e| CriError::from(e).context("creating the container in its shim"))?;
    Ok(())
}

/// Checks that the pod's runtime handler can run `config`: it is still
/// configured (FailedPrecondition naming it otherwise: the config changed
/// since the pod ran), and a binary handler whose binary does not list
/// `rro` gets no `recursive_read_only` mount (InvalidArgument naming the
/// handler; kubelet asks only handlers that report the feature, and the
/// default handler's own rule is the spec builder's).
fn handler_serves(
    deps: &ContainerDeps,
    pod: &PodRecord,
    config: &cri::ContainerConfig,
) -> Result<(), CriError> {
    let handler = deps.handlers.get(&pod.runtime_handler).map_err(|_| {
        CriError::FailedPrecondition(format!(
            "pod {}: its runtime handler {:?} is no longer configured",
            pod.id, pod.runtime_handler
        ))
    })?;
    if !handler.name.is_empty()
        && !handler.features.recursive_read_only_mounts
        && config.mounts.iter().any(|m| m.recursive_read_only)
    {
        return Err(CriError::invalid(
            "config.mounts.recursive_read_only",
            format!(
                "runtime handler {:?} does not make mounts read-only recursively",
                handler.name
            ),
        ));
    }
    Ok(())
}

/// The pod's user namespace, which the container's rootfs and binds are
/// seen through; `None` for a pod in the host's.
fn pod_user_namespace(pod: &PodRecord) -> Option<crate::idmap::UserNamespace> {
    let (path, maps) = (pod.userns.clone()?, pod.user_mappings?);
    Some(crate::idmap::UserNamespace {
        path,
        root_uid: maps.uids.host_id,
        root_gid: maps.gids.host_id,
    })
}

/// The PID namespace of the container that `namespace_options.target_id`
/// names, when the config asks for mode TARGET (kubelet's ephemeral
/// debug containers): `/proc/<its init pid>/ns/pid`. Errors:
/// InvalidArgument for an empty target, NotFound for an unknown one,
/// FailedPrecondition for one in another pod or not running.
fn target_pid_namespace(
    deps: &ContainerDeps,
    pod: &PodRecord,
    config: &cri::ContainerConfig,
) -> Result<Option<std::path::PathBuf>, CriError> {
    const FIELD: &str = "config.linux.security_context.namespace_options.target_id";
    let options = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|sc| sc.namespace_options.as_ref());
    let Some(options) = options.filter(|o| o.pid == cri::NamespaceMode::Target as i32) else {
        return Ok(None);
    };
    if options.target_id.is_empty() {
        return Err(CriError::invalid(
            FIELD,
            "must name a container for PID mode TARGET",
        ));
    }
    let target = deps.containers.find(&options.target_id)?.snapshot();
    if target.pod_id != pod.id {
        return Err(CriError::FailedPrecondition(format!(
            "{FIELD}: container {} is in another pod",
            target.id
        )));
    }
    if target.state != ContainerState::Running || target.pid == 0 {
        return Err(CriError::FailedPrecondition(format!(
            "{FIELD}: container {} is {:?}, not running",
            target.id, target.state
        )));
    }
    Ok(Some(format!("/proc/{}/ns/pid", target.pid).into()))
}

/// Ends the shim and releases the rootfs (through the snapshotter), the
/// image volumes (the image store unmounts a view with its last user) and
/// the bundle. Idempotent. Errors: the shim's, as `From<ShimError>` maps them
/// (Unavailable if it breaks off mid-delete), else Internal.
async fn teardown(deps: &ContainerDeps, record: &ContainerRecord) -> Result<(), CriError> {
    match deps.shims.get(&record.id, &record.bundle).await {
        Ok(shim) => {
            shim.delete().await?;
            // The shim exits after replying; a broken connection means it is gone already.
            if let Err(e) = shim.shutdown().await {
                if !e.is_unreachable() {
                    return Err(e.into());
                }
            }
        }
        Err(e) if e.is_unreachable() => {}
        Err(e) => return Err(e.into()),
    }
    deps.shims.remove(&record.id);
    let (snapshotter, images) = (deps.snapshotter.clone(), deps.images.clone());
    let (rootfs, bundle, layer_dir) = (
        record.rootfs(),
        record.bundle.clone(),
        record.layer_dir.clone(),
    );
    let (id, volumes) = (record.id.clone(), record.image_volumes.clone());
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        snapshotter.remove(&layer_dir, &rootfs)?;
        idmapped::release(&bundle)?;
        for volume in &volumes {
            images
                .release_volume(&volume.image_id, &id)
                .context("releasing an image volume")?;
        }
        match std::fs::remove_dir_all(&bundle) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", bundle.display()))
            }
            _ => Ok(()),
        }
    })
    .await??;
    Ok(())
}

/// Releases a created container's process. Errors: NotFound for an unknown
/// id, FailedPrecondition unless it is created (so not idempotent),
/// Unavailable when its shim is unreachable (the container stays created),
/// Internal when the shim fails the start (e.g. the process cannot be exec'd: runc's words, `exec:
/// "nosuch": executable file not found in $PATH`). As containerd
/// (internal/cri/server/container_start.go), a start that fails leaves the
/// container exited with code 128, reason `StartError` and the error as its
/// message, for RemoveContainer to clean up.
pub async fn start_container(deps: &ContainerDeps, id: &str) -> Result<(), CriError> {
    let entry = deps.containers.find(id)?;
    let deps = deps.clone();
    detached(async move {
        let _op = entry.op.lock().await;
        let record = entry.snapshot();
        if record.state != ContainerState::Created {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is {:?}, not created",
                record.id, record.state
            )));
        }
        let shim = deps.shims.get(&record.id, &record.bundle).await?;
        match shim.start().await {
            Ok(()) => {}
            // A shim out of reach may answer a retry: the container stays created.
            Err(e) if e.is_unreachable() => return Err(e.into()),
            Err(e) => {
                let e = CriError::from(e);
                let message = e.message();
                let exited = deps.containers.update(&entry, |c| {
                    c.state = ContainerState::Exited;
                    c.exit_code = START_ERROR_EXIT_CODE;
                    c.finished_at = now_nanos();
                    c.start_error = Some(message);
                })?;
                deps.events
                    .container(EventType::ContainerStoppedEvent, &exited);
                return Err(e);
            }
        }
        let running = deps.containers.update(&entry, |c| {
            c.state = ContainerState::Running;
            c.started_at = now_nanos();
        })?;
        deps.events
            .container(EventType::ContainerStartedEvent, &running);
        watch_exit(deps.clone(), entry.clone(), shim);
        Ok(())
    })
    .await
}

/// After a criusd restart: gives the image store back the containers'
/// image volumes, watches again every container that was running, and
/// settles those whose shim died meanwhile from their exit files.
pub fn recover(deps: &ContainerDeps) {
    deps.images
        .restore_volumes(deps.containers.list().into_iter().flat_map(|c| {
            c.image_volumes
                .into_iter()
                .map(move |v| (c.id.clone(), v.image_id))
        }));
    for entry in deps.containers.entries() {
        let record = entry.snapshot();
        if record.state != ContainerState::Running {
            continue;
        }
        let deps = deps.clone();
        tokio::spawn(async move {
            match deps.shims.get(&record.id, &record.bundle).await {
                Ok(shim) => watch_exit(deps.clone(), entry, shim),
                Err(e) => {
                    tracing::warn!(container = %record.id, error = %e, "shim unreachable after restart");
                    record_exit(&deps, &entry, read_exit_file(&record));
                }
            }
        });
    }
}

/// Records the exit once the shim reports it, under the op lock: a stop or
/// remove in progress records it first (and its events keep their order);
/// a container removed meanwhile is left alone.
fn watch_exit(deps: ContainerDeps, entry: Arc<Entry<ContainerRecord>>, shim: Arc<dyn ShimApi>) {
    tokio::spawn(async move {
        let exit = match shim.wait().await {
            Ok(w) => Some(Exit::from(w)),
            Err(e) => {
                tracing::warn!(container = %entry.snapshot().id, error = %e, "lost the shim while waiting for the exit");
                read_exit_file(&entry.snapshot())
            }
        };
        let _op = entry.op.lock().await;
        let id = entry.snapshot().id;
        if matches!(deps.containers.find_if_any(&id), Ok(Some(e)) if Arc::ptr_eq(&e, &entry)) {
            record_exit(&deps, &entry, exit);
        }
    });
}

/// Init's exit as the shim, or its exit file, reports it.
struct Exit {
    code: i32,
    finished_at: i64,
    oom_killed: bool,
}

impl From<pb::WaitResponse> for Exit {
    fn from(w: pb::WaitResponse) -> Exit {
        Exit {
            code: w.exit_code,
            finished_at: w.finished_at,
            oom_killed: w.oom_killed,
        }
    }
}

fn read_exit_file(record: &ContainerRecord) -> Option<Exit> {
    let paths = ShimPaths::in_bundle(&record.bundle);
    crius_proto::exit_file::read(&paths.exit_file)
        .ok()
        .flatten()
        .map(|r| Exit {
            code: r.exit_code,
            finished_at: r.finished_at_unix_nanos,
            oom_killed: r.oom_killed,
        })
}

/// Records `exit` (or, without one, that the container's fate is
/// unknown) unless the container has exited already; a recorded exit is
/// the container's STOPPED event.
fn record_exit(deps: &ContainerDeps, entry: &Entry<ContainerRecord>, exit: Option<Exit>) {
    let mut exited = false;
    let result = deps.containers.update(entry, |c| {
        if matches!(c.state, ContainerState::Exited) {
            return;
        }
        match &exit {
            Some(exit) => {
                c.state = ContainerState::Exited;
                c.exit_code = exit.code;
                c.finished_at = exit.finished_at;
                c.oom_killed = exit.oom_killed;
                exited = true;
            }
            None => c.state = ContainerState::Unknown,
        }
    });
    match result {
        Ok(record) if exited => deps
            .events
            .container(EventType::ContainerStoppedEvent, &record),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "recording a container's exit"),
    }
}

/// Sends the stop signal, then SIGKILL to every process after `timeout_secs`.
/// Stopping an exited or unknown container succeeds; so does an unknown id.
/// A stop while another is in progress shortens the other's grace period
/// if its own deadline is earlier (the container is killed then), and
/// returns once the container has exited.
pub async fn stop_container(
    deps: &ContainerDeps,
    id: &str,
    timeout_secs: i64,
) -> Result<(), CriError> {
    let Some(entry) = deps.containers.find_if_any(id)? else {
        return Ok(());
    };
    let deps = deps.clone();
    let deadline = Instant::now() + Duration::from_secs(timeout_secs.max(0) as u64);
    detached(async move {
        // Joined before the op lock: the stop holding it sees an earlier deadline at once.
        let ticket = deps.stops.join(&entry.snapshot().id, deadline);
        let _op = entry.op.lock().await;
        stop_locked(&deps, &entry, ticket.deadline.clone()).await
    })
    .await
}

/// Sends the stop signal, waits for the exit until the shared `deadline`
/// (following it down when a later stop lowers it), then SIGKILLs every
/// process and waits for the exit; records it. The caller holds the op lock.
async fn stop_locked(
    deps: &ContainerDeps,
    entry: &Arc<Entry<ContainerRecord>>,
    mut deadline: watch::Receiver<Instant>,
) -> Result<(), CriError> {
    let record = entry.snapshot();
    if !matches!(
        record.state,
        ContainerState::Created | ContainerState::Running
    ) {
        return Ok(());
    }
    let shim = match deps.shims.get(&record.id, &record.bundle).await {
        Ok(s) => s,
        Err(e) if e.is_unreachable() => {
            record_exit(deps, entry, read_exit_file(&record));
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    // A created container's init has not exec'd its process: only SIGKILL applies.
    let graceful = *deadline.borrow_and_update() > Instant::now();
    if record.state == ContainerState::Running && graceful {
        let signal = signal::stop_number(record.effective_stop_signal, &record.stop_signal);
        shim.kill(signal, false).await?;
        let wait = shim.wait();
        tokio::pin!(wait);
        loop {
            let until = *deadline.borrow_and_update();
            tokio::select! {
                w = &mut wait => {
                    if let Ok(w) = w {
                        record_exit(deps, entry, Some(Exit::from(w)));
                        return Ok(());
                    }
                    break;
                }
                () = tokio::time::sleep_until(until) => break,
                // A later stop lowered the deadline: wait until the new one.
                Ok(()) = deadline.changed() => {}
            }
        }
    }
    shim.kill(libc::SIGKILL, true).await?;
    let w = shim.wait().await?;
    record_exit(deps, entry, Some(Exit::from(w)));
    Ok(())
}

/// Kills the container if it runs and removes everything it holds. Unknown
/// ids succeed. A stop in progress is shortened to kill at once.
pub async fn remove_container(deps: &ContainerDeps, id: &str) -> Result<(), CriError> {
    let Some(entry) = deps.containers.find_if_any(id)? else {
        return Ok(());
    };
    let deps = deps.clone();
    detached(async move {
        let ticket = deps.stops.join(&entry.snapshot().id, Instant::now());
        let _op = entry.op.lock().await;
        stop_locked(&deps, &entry, ticket.deadline.clone()).await?;
        let record = entry.snapshot();
        teardown(&deps, &record).await?;
        deps.containers.remove(&record.id)?;
        deps.events
            .container(EventType::ContainerDeletedEvent, &record);
        Ok(())
    })
    .await
}

#[cfg(test)]
mod rollback;
