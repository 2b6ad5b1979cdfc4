//! Pod and container lifecycle latency: each iteration runs a pod, creates,
//! starts, stops and removes a container in it, then stops and removes the pod,
//! timing every call.

use crate::client::Runtime;
use crate::stats::Summary;
use crate::workload::{self, Workload};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// The steps in the order they run (also the order of `LifecycleResult::steps`).
pub const STEPS: [&str; 7] = [
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
];

#[derive(Debug, Serialize, Deserialize)]
pub struct LifecycleResult {
    pub iterations: usize,
    pub warmup: usize,
    /// One summary per entry of `STEPS`, named.
    pub steps: Vec<(String, Summary)>,
    /// The sum of the steps of each iteration.
    pub total: Summary,
}

pub async fn measure(
    rt: &mut Runtime,
    workload: &Workload,
    iterations: usize,
    warmup: usize,
) -> anyhow::Result<LifecycleResult> {
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(iterations); STEPS.len()];
    let mut totals = Vec::with_capacity(iterations);
    for i in 0..warmup + iterations {
        let steps = one_iteration(rt, workload, &format!("lc{i}")).await?;
        if i >= warmup {
            totals.push(steps.iter().sum());
            for (step, took) in samples.iter_mut().zip(steps) {
                step.push(took);
            }
        }
    }
    Ok(LifecycleResult {
        iterations,
        warmup,
        steps: STEPS
            .iter()
            .zip(&samples)
            .map(|(name, s)| (name.to_string(), Summary::of(s)))
            .collect(),
        total: Summary::of(&totals),
    })
}

/// Runs the seven steps once; returns how long each took.
async fn one_iteration(
    rt: &mut Runtime,
    workload: &Workload,
    name: &str,
) -> anyhow::Result<[Duration; 7]> {
    let pod = workload.new_pod(name)?;
    let mut took = [Duration::ZERO; 7];

    let t = Instant::now();
    let pod_id = workload::run_pod(rt, &pod).await?;
    took[0] = t.elapsed();

    let t = Instant::now();
    let id = workload::create_container(rt, &pod_id, &pod, workload.container_config()).await?;
    took[1] = t.elapsed();

    let t = Instant::now();
    workload::start_container(rt, &id).await?;
    took[2] = t.elapsed();

    let t = Instant::now();
    workload::stop_container(rt, &id).await?;
    took[3] = t.elapsed();

    let t = Instant::now();
    workload::remove_container(rt, &id).await?;
    took[4] = t.elapsed();

    let t = Instant::now();
    workload::stop_pod(rt, &pod_id).await?;
    took[5] = t.elapsed();

    let t = Instant::now();
    workload::remove_pod(rt, &pod_id).await?;
    took[6] = t.elapsed();

    Ok(took)
}
