//! crius-shim: the monitor of one container. criusd starts it; it detaches,
//! serves the shim API (`crius_proto::shim::v1`) on a unix socket, creates
//! the container through crius-runtime (in-process, or through the OCI
//! runtime binary of a runtime handler), owns its stdio and CRI log, reaps it
//! and records its exit. Single-threaded on purpose: small, and safe for
//! libcontainer's forks. A pod's pause process is such a container too: its
//! init runs crius-runtime's built-in pause workload instead of an exec.

mod child_errors;
mod container;
mod container_io;
mod cri_log;
mod daemon;
mod error;
mod exec;
mod oom;
mod reaper;
mod server;
mod streams;
mod terminal;

use std::fs::OpenOptions;
use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use crius_proto::shim::v1::shim_server::ShimServer;
use crius_runtime::{BinaryRuntime, OciRuntime, Runtime};
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::child_errors::ErrorEvents;
use crate::container::{Container, ContainerConfig};
use crate::daemon::ReadyPipe;
use crate::reaper::Reaper;
use crate::server::ShimService;

/// How long open connections (say, a pending Wait) may delay the exit after
/// Shutdown replied.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

#[derive(Parser)]
#[command(version, about = "The per-container monitor of crius")]
struct Args {
    /// The container's id (also its id in the runtime state).
    #[arg(long)]
    id: String,
    /// The OCI bundle; the shim's own log is written to <bundle>/shim.log.
    #[arg(long)]
    bundle: PathBuf,
    /// The unix socket to serve the shim API on.
    #[arg(long)]
    socket: PathBuf,
    /// The runtime's state directory (shared by the shims of a node that
    /// use the same runtime).
    #[arg(long)]
    runtime_root: PathBuf,
    /// An OCI runtime binary (runc, crun) to run the container with; without
    /// one, crius-runtime runs it in-process (libcontainer).
    #[arg(long)]
    runtime_path: Option<PathBuf>,
    /// With --runtime-path: run the binary without a hybrid host's cgroup2
    /// mount (see crius_runtime::BinaryRuntime::hiding_unified_cgroup).
    #[arg(long, requires = "runtime_path")]
    runtime_hide_unified_cgroup: bool,
    /// Where init's exit status is recorded.
    #[arg(long)]
    exit_file: PathBuf,
    /// The CRI log file to write the container's stdout and stderr to;
    /// without one the output is discarded.
    #[arg(long)]
    log_path: Option<PathBuf>,
    /// The level of the shim's own log.
    #[arg(long, default_value = "info")]
    log_level: tracing::Level,
    /// An inherited pipe fd to report readiness on (see crius_proto::ready).
    #[arg(long)]
    ready_fd: Option<RawFd>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut ready = match args.ready_fd.map(ReadyPipe::adopt).transpose() {
        Ok(ready) => ready.unwrap_or_else(ReadyPipe::none),
        Err(err) => {
            eprintln!("crius-shim: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    match run(args, &mut ready) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let message = format!("crius-shim: {err:#}");
            // Before detaching, stderr is still criusd's; after, shim.log.
            eprintln!("{message}");
            tracing::error!("{message}");
            ready.fail(&message);
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args, ready: &mut ReadyPipe) -> anyhow::Result<()> {
    // After detach the cwd is `/`, and libcontainer changes it at times.
    let args = Args {
        bundle: absolute(&args.bundle)?,
        socket: absolute(&args.socket)?,
        runtime_root: absolute(&args.runtime_root)?,
        runtime_path: args.runtime_path.as_deref().map(absolute).transpose()?,
        exit_file: absolute(&args.exit_file)?,
        log_path: args.log_path.as_deref().map(absolute).transpose()?,
        ..args
    };
    daemon::detach()?;
    let error_events = ErrorEvents::new().context("create the file of libcontainer's errors")?;
    init_logging(&args.bundle, args.log_level, &error_events)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("build the event loop")?;
    // One thread runs every task, so this span is the parent of all the
    // shim's log lines.
    let _span = tracing::info_span!("shim", id = %args.id).entered();
    runtime.block_on(serve(args, ready, error_events))
}

async fn serve(args: Args, ready: &mut ReadyPipe, error_events: ErrorEvents) -> anyhow::Result<()> {
    let reaper = Reaper::start().context("watch SIGCHLD")?;
    daemon::survive_hangup_and_broken_pipes().context("catch SIGHUP and SIGPIPE")?;
    let listener = bind(&args.socket)?;
    let runtime = runtime(&args);
    let container = Container::new(
        ContainerConfig {
            id: args.id,
            bundle: args.bundle,
            log_path: args.log_path,
            exit_file: args.exit_file,
        },
        runtime,
        reaper,
        error_events,
    );
    let (shutdown, mut shutdown_requested) = watch::channel(false);
    let mut stop_serving = shutdown_requested.clone();
    let mut server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ShimServer::new(ShimService::new(container, shutdown)))
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                let _ = stop_serving.wait_for(|stop| *stop).await;
            }),
    );
    // Let the server task start accepting before criusd hears we serve.
    tokio::task::yield_now().await;
    ready.ready().context("report readiness")?;
    tracing::info!(socket = %args.socket.display(), "serving");

    tokio::select! {
        served = &mut server => served.context("the server task failed")?.context("serve")?,
        _ = shutdown_requested.wait_for(|stop| *stop) => {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await.is_err() {
                tracing::info!("connections still open after shutdown; exiting anyway");
            }
        }
    }
    remove_socket(&args.socket)?;
    tracing::info!("exiting");
    Ok(())
}

/// The runtime the flags name: the binary of --runtime-path, else the
/// in-process one.
fn runtime(args: &Args) -> Box<dyn OciRuntime> {
    match &args.runtime_path {
        Some(path) => Box::new(
            BinaryRuntime::new(path, &args.runtime_root)
                .hiding_unified_cgroup(args.runtime_hide_unified_cgroup),
        ),
        None => Box::new(Runtime::new(&args.runtime_root)),
    }
}

fn bind(socket: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    // A socket left by a shim that died; criusd gives every shim its own path.
    remove_socket(socket)?;
    UnixListener::bind(socket).with_context(|| format!("bind {}", socket.display()))
}

fn remove_socket(socket: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(socket) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            Err(err).with_context(|| format!("remove {}", socket.display()))
        }
        _ => Ok(()),
    }
}

/// The shim's log, `<bundle>/shim.log` at `level`, and libcontainer's errors
/// copied to `error_events`.
fn init_logging(
    bundle: &Path,
    level: tracing::Level,
    error_events: &ErrorEvents,
) -> anyhow::Result<()> {
    let path = bundle.join("shim.log");
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    let log = tracing_subscriber::fmt::layer()
        .with_writer(Mutex::new(file))
        .with_ansi(false)
        .with_filter(LevelFilter::from_level(level));
    tracing_subscriber::registry()
        .with(log)
        .with(error_events.layer().with_filter(LevelFilter::ERROR))
        .init();
    Ok(())
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolve {}", path.display()))
}
