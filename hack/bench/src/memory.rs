//! Memory of the runtime's processes: the daemon, and the per-pod processes
//! it leaves running (shims, and a sandbox process such as pause) with one
//! and with many containers up.

use crate::client::Runtime;
use crate::procfs::{self, Memory, Process};
use crate::workload::{RunningPod, Workload};
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Who the runtime's processes are.
pub struct Processes {
    pub daemon_pid: i32,
    /// Every one of these is in a shim's command line (binary name, and the
    /// socket or state dir that ties it to this daemon).
    pub shim_match: Vec<String>,
    /// The workload's process name: the descendants of the shims without
    /// this name are the pods' sandbox processes.
    pub workload_comm: String,
}

/// How long removed pods' shims get to exit before they count as leaked.
const SHIM_EXIT_GRACE: Duration = Duration::from_secs(10);

/// The per-pod processes with a number of pods running.
#[derive(Debug, Serialize, Deserialize)]
pub struct PodProcesses {
    pub pods: usize,
    pub shims: Vec<Memory>,
    pub shims_rss_kib: u64,
    pub shims_pss_kib: u64,
    /// Descendants of the shims other than the containers' own processes.
    pub sandbox_processes: Vec<Memory>,
    pub sandbox_rss_kib: u64,
    pub sandbox_pss_kib: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MemoryResult {
    /// Shims of the earlier, removed pods still running when this
    /// measurement began (a leak; they are left out of the figures).
    pub leaked_shims: Vec<i32>,
    /// The daemon before the first pod of the run.
    pub daemon_start: Memory,
    /// The daemon with `many.pods` pods running.
    pub daemon_with_pods: Memory,
    /// The daemon after every measurement, all pods removed.
    pub daemon_after_runs: Memory,
    pub one: PodProcesses,
    pub many: PodProcesses,
}

/// Lets the new processes finish their start-up before they are measured.
const SETTLE: Duration = Duration::from_secs(1);

impl Processes {
    pub fn daemon(&self) -> anyhow::Result<Memory> {
        Memory::of(self.daemon_pid, "daemon")
            .with_context(|| format!("reading the memory of daemon pid {}", self.daemon_pid))
    }

    fn shim_pids(&self) -> Vec<i32> {
        procfs::matching(&procfs::processes(), &self.shim_match)
            .iter()
            .map(|p| p.pid)
            .collect()
    }

    /// The shims still running once the grace for exiting has passed.
    async fn leftover_shims(&self) -> Vec<i32> {
        let deadline = tokio::time::Instant::now() + SHIM_EXIT_GRACE;
        loop {
            let pids = self.shim_pids();
            if pids.is_empty() || tokio::time::Instant::now() >= deadline {
                return pids;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The per-pod processes, leaving out the shims in `ignored`.
    fn pod_processes(&self, pods: usize, ignored: &[i32]) -> anyhow::Result<PodProcesses> {
        let all = procfs::processes();
        let mut shims = procfs::matching(&all, &self.shim_match);
        shims.retain(|p| !ignored.contains(&p.pid));
        if shims.is_empty() {
            bail!("no process matches {:?}", self.shim_match);
        }
        let shim_pids: Vec<i32> = shims.iter().map(|p| p.pid).collect();
        let sandbox: Vec<&Process> = procfs::descendants(&all, &shim_pids)
            .into_iter()
            .filter(|p| p.comm != self.workload_comm && !shim_pids.contains(&p.pid))
            .collect();
        let shims = measure_all(&shims)?;
        let sandbox_processes = measure_all(&sandbox)?;
        Ok(PodProcesses {
            pods,
            shims_rss_kib: shims.iter().map(|m| m.rss_kib).sum(),
            shims_pss_kib: shims.iter().map(|m| m.pss_kib).sum(),
            shims,
            sandbox_rss_kib: sandbox_processes.iter().map(|m| m.rss_kib).sum(),
            sandbox_pss_kib: sandbox_processes.iter().map(|m| m.pss_kib).sum(),
            sandbox_processes,
        })
    }
}

fn measure_all(processes: &[&Process]) -> anyhow::Result<Vec<Memory>> {
    processes
        .iter()
        .map(|p| {
            Memory::of(p.pid, &p.comm)
                .with_context(|| format!("reading the memory of {} ({})", p.pid, p.cmdline))
        })
        .collect()
}

/// Measures the shims with one pod running, then with `pods` pods running;
/// removes them all and measures the daemon. `daemon_start` was taken before
/// the run's first pod.
pub async fn measure(
    rt: &mut Runtime,
    workload: &Workload,
    procs: &Processes,
    daemon_start: Memory,
    pods: usize,
) -> anyhow::Result<MemoryResult> {
    let leaked_shims = procs.leftover_shims().await;
    if !leaked_shims.is_empty() {
        eprintln!(
            "crius-bench: warning: shim(s) {leaked_shims:?} of removed pods still run {}s later; left out",
            SHIM_EXIT_GRACE.as_secs()
        );
    }
    let mut running = Vec::with_capacity(pods);
    let measured = async {
        running.push(RunningPod::start(rt, workload, "mem0").await?);
        tokio::time::sleep(SETTLE).await;
        let one = procs.pod_processes(1, &leaked_shims)?;
        for i in 1..pods {
            running.push(RunningPod::start(rt, workload, &format!("mem{i}")).await?);
        }
        tokio::time::sleep(SETTLE).await;
        let many = procs.pod_processes(pods, &leaked_shims)?;
        let daemon_with_pods = procs.daemon()?;
        anyhow::Ok((one, many, daemon_with_pods))
    }
    .await;
    for pod in running {
        pod.remove(rt).await?;
    }
    let (one, many, daemon_with_pods) = measured?;
    tokio::time::sleep(SETTLE).await;
    Ok(MemoryResult {
        leaked_shims,
        daemon_start,
        daemon_with_pods,
        daemon_after_runs: procs.daemon()?,
        one,
        many,
    })
}
