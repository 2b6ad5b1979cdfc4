//! UpdateContainerResources latency (kubelet's in-place resize): a running
//! container's memory limit and CPU shares moved back and forth.

use crate::client::Runtime;
use crate::stats::Summary;
use anyhow::Context;
use crius_proto::cri;
use serde::{Deserialize, Serialize};
use std::time::Instant;

#[derive(Debug, Serialize, Deserialize)]
pub struct UpdateResult {
    pub iterations: usize,
    pub warmup: usize,
    pub latency: Summary,
}

/// `iterations` updates after `warmup` untimed ones, alternating between
/// 128 MiB with 512 shares and 256 MiB with 1024 shares (each one a real
/// change of the cgroup), the whole set sent as kubelet sends it.
pub async fn measure(
    rt: &mut Runtime,
    container_id: &str,
    iterations: usize,
    warmup: usize,
) -> anyhow::Result<UpdateResult> {
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..warmup + iterations {
        let (memory, shares) = if i % 2 == 0 {
            (128 << 20, 512)
        } else {
            (256 << 20, 1024)
        };
        let t = Instant::now();
        rt.update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: container_id.into(),
            linux: Some(cri::LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 50_000,
                cpu_shares: shares,
                memory_limit_in_bytes: memory,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .context("UpdateContainerResources")?;
        if i >= warmup {
            samples.push(t.elapsed());
        }
    }
    Ok(UpdateResult {
        iterations,
        warmup,
        latency: Summary::of(&samples),
    })
}
