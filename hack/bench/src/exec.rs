//! ExecSync latency of a no-op, and how late ExecSync returns past its timeout.

use crate::client::Runtime;
use crate::stats::Summary;
use anyhow::{bail, Context};
use crius_proto::cri;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

#[derive(Debug, Serialize, Deserialize)]
pub struct ExecResult {
    pub iterations: usize,
    pub warmup: usize,
    pub latency: Summary,
}

/// `true` in the container, `iterations` times after `warmup` untimed runs.
pub async fn measure_latency(
    rt: &mut Runtime,
    container_id: &str,
    iterations: usize,
    warmup: usize,
) -> anyhow::Result<ExecResult> {
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..warmup + iterations {
        let t = Instant::now();
        let resp = exec(rt, container_id, &["true"], 10)
            .await
            .context("ExecSync true")?;
        let took = t.elapsed();
        if resp.exit_code != 0 {
            bail!("ExecSync true exited with {}", resp.exit_code);
        }
        if i >= warmup {
            samples.push(took);
        }
    }
    Ok(ExecResult {
        iterations,
        warmup,
        latency: Summary::of(&samples),
    })
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TimeoutResult {
    pub iterations: usize,
    pub timeout_ms: f64,
    /// How long past the timeout each call returned.
    pub overshoot: Summary,
    /// How each call ended: the gRPC code, or "exit N" when it returned a result.
    pub outcomes: Vec<String>,
}

/// `sleep 10` with a 1 s timeout: the runtime should give up at 1 s.
pub async fn measure_timeout(
    rt: &mut Runtime,
    container_id: &str,
    iterations: usize,
) -> anyhow::Result<TimeoutResult> {
    const TIMEOUT: Duration = Duration::from_secs(1);
    let mut overshoot_ms = Vec::with_capacity(iterations);
    let mut outcomes = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        let result = exec(rt, container_id, &["sleep", "10"], TIMEOUT.as_secs() as i64).await;
        let took = t.elapsed();
        overshoot_ms.push((took.as_secs_f64() - TIMEOUT.as_secs_f64()) * 1e3);
        outcomes.push(match result {
            Ok(resp) => format!("exit {}", resp.exit_code),
            Err(status) => format!("{:?}", status.code()),
        });
    }
    Ok(TimeoutResult {
        iterations,
        timeout_ms: TIMEOUT.as_secs_f64() * 1e3,
        overshoot: Summary::of_ms(overshoot_ms),
        outcomes,
    })
}

async fn exec(
    rt: &mut Runtime,
    container_id: &str,
    cmd: &[&str],
    timeout_secs: i64,
) -> Result<cri::ExecSyncResponse, tonic::Status> {
    rt.exec_sync(cri::ExecSyncRequest {
        container_id: container_id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout: timeout_secs,
    })
    .await
    .map(|r| r.into_inner())
}
