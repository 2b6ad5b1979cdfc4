//! crius-bench: measures a CRI runtime over its socket (lifecycle and ExecSync
//! latency, ExecSync timeout overshoot, exec round trip and port-forward
//! throughput over the streaming server, memory of the daemon and its shims)
//! and compares two such runs. `hack/bench/run` drives it against crius and
//! containerd.

mod client;
mod exec;
mod lifecycle;
mod memory;
mod procfs;
mod report;
mod spdy_client;
mod stats;
mod streaming;
mod update;
mod workload;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "CRI runtime benchmark")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measures one runtime and prints the results as JSON.
    Run(RunArgs),
    /// Prints two runs side by side with their ratios (SUBJECT / BASELINE).
    Report {
        /// NAME=FILE of the run to judge.
        subject: String,
        /// NAME=FILE of the run to compare it with.
        baseline: String,
        /// Also write both runs and the compared rows as one JSON document.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// The runtime's CRI socket, unix:///path.
    #[arg(long)]
    endpoint: String,
    /// Busybox image for the containers (pulled before measuring).
    #[arg(long)]
    image: String,
    /// Directory under which the pods' log directories are made.
    #[arg(long)]
    log_dir: PathBuf,
    /// The daemon's PID, for its memory.
    #[arg(long)]
    daemon_pid: i32,
    /// A string every shim's command line holds (repeat: all must match).
    #[arg(long = "shim-match", required = true)]
    shim_match: Vec<String>,
    /// Timed pod/container lifecycle iterations.
    #[arg(long, default_value_t = 20)]
    iterations: usize,
    /// Untimed lifecycle iterations first (the first pod can pull a pause image).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed ExecSync `true` calls.
    #[arg(long, default_value_t = 200)]
    exec_iterations: usize,
    /// ExecSync `sleep 10` calls with a 1 s timeout.
    #[arg(long, default_value_t = 10)]
    timeout_iterations: usize,
    /// Timed UpdateContainerResources calls on a running container.
    #[arg(long, default_value_t = 50)]
    update_iterations: usize,
    /// Timed exec `true` round trips over the streaming server (SPDY).
    #[arg(long, default_value_t = 50)]
    stream_exec_iterations: usize,
    /// Timed port-forwarded downloads (256 MiB each).
    #[arg(long, default_value_t = 3)]
    port_forward_repetitions: usize,
    /// Pods (one container each) running for the memory measurement.
    #[arg(long, default_value_t = 10)]
    pods: usize,
    /// Write the JSON here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Everything one `run` measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunResult {
    /// "name version" from the runtime's Version.
    pub runtime: String,
    pub endpoint: String,
    pub image: String,
    /// The host's 1, 5 and 15 minute load averages before and after the run:
    /// other work on the host shows in the latencies.
    pub load_average: [String; 2],
    pub lifecycle: lifecycle::LifecycleResult,
    pub exec: exec::ExecResult,
    pub exec_timeout: exec::TimeoutResult,
    pub update: update::UpdateResult,
    pub streaming: streaming::StreamingResult,
    pub memory: memory::MemoryResult,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => {
            let result = run(&args).await?;
            let json = serde_json::to_string_pretty(&result)?;
            match &args.out {
                Some(path) => std::fs::write(path, json + "\n")
                    .with_context(|| format!("writing {}", path.display()))?,
                None => println!("{json}"),
            }
        }
        Command::Report {
            subject,
            baseline,
            json,
        } => {
            let (subject_name, subject_run) = load(&subject)?;
            let (baseline_name, baseline_run) = load(&baseline)?;
            let rows = report::rows(&subject_run, &baseline_run);
            for (name, run) in [
                (&subject_name, &subject_run),
                (&baseline_name, &baseline_run),
            ] {
                println!(
                    "{name}: {} (host load average before/after: {} / {})",
                    run.runtime, run.load_average[0], run.load_average[1]
                );
            }
            print!("{}", report::table(&subject_name, &baseline_name, &rows));
            if let Some(path) = json {
                let doc = serde_json::json!({
                    "subject": subject_name,
                    "baseline": baseline_name,
                    "rows": rows,
                    "runs": { &subject_name: subject_run, &baseline_name: baseline_run },
                });
                std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    Ok(())
}

/// Reads NAME=FILE.
fn load(named_file: &str) -> anyhow::Result<(String, RunResult)> {
    let (name, path) = named_file
        .split_once('=')
        .with_context(|| format!("{named_file:?} is not NAME=FILE"))?;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let run = serde_json::from_str(&text).with_context(|| format!("parsing {path}"))?;
    Ok((name.to_string(), run))
}

async fn run(args: &RunArgs) -> anyhow::Result<RunResult> {
    let load_before = procfs::load_average();
    let (mut rt, mut images) = client::connect(&args.endpoint).await?;
    let runtime = client::runtime_version(&mut rt).await?;
    eprintln!("crius-bench: measuring {runtime} at {}", args.endpoint);
    client::pull(&mut images, &args.image).await?;
    let procs = memory::Processes {
        daemon_pid: args.daemon_pid,
        shim_match: args.shim_match.clone(),
        workload_comm: "sleep".into(),
    };
    let daemon_start = procs.daemon()?;
    let workload = workload::Workload {
        image: args.image.clone(),
        log_root: args.log_dir.display().to_string(),
        run_id: std::process::id().to_string(),
    };

    eprintln!("crius-bench: lifecycle, {} iterations", args.iterations);
    let lifecycle = lifecycle::measure(&mut rt, &workload, args.iterations, args.warmup).await?;

    eprintln!(
        "crius-bench: ExecSync, {} + {} iterations",
        args.exec_iterations, args.timeout_iterations
    );
    let pod = workload::RunningPod::start(&mut rt, &workload, "exec").await?;
    let measured = async {
        let exec =
            exec::measure_latency(&mut rt, &pod.container_id, args.exec_iterations, 5).await?;
        let timeout =
            exec::measure_timeout(&mut rt, &pod.container_id, args.timeout_iterations).await?;
        eprintln!(
            "crius-bench: UpdateContainerResources, {} iterations",
            args.update_iterations
        );
        let update = update::measure(&mut rt, &pod.container_id, args.update_iterations, 5).await?;
        anyhow::Ok((exec, timeout, update))
    }
    .await;
    pod.remove(&mut rt).await?;
    let (exec, exec_timeout, update) = measured?;

    eprintln!(
        "crius-bench: streaming, {} exec round trips, {} port-forwarded downloads",
        args.stream_exec_iterations, args.port_forward_repetitions
    );
    let streaming = streaming::measure(
        &mut rt,
        &workload,
        args.stream_exec_iterations,
        args.port_forward_repetitions,
    )
    .await?;

    eprintln!("crius-bench: memory, {} pods", args.pods);
    let memory = memory::measure(&mut rt, &workload, &procs, daemon_start, args.pods).await?;

    Ok(RunResult {
        runtime,
        endpoint: args.endpoint.clone(),
        image: args.image.clone(),
        load_average: [load_before, procfs::load_average()],
        lifecycle,
        exec,
        exec_timeout,
        update,
        streaming,
        memory,
    })
}
