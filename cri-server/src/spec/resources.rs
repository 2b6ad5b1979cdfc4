//! linux.resources (cgroup limits), the devices cgroup rule and the OOM score.

use std::collections::HashMap;

use crius_proto::cri::{HugepageLimit, LinuxContainerResources};
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxHugepageLimitBuilder,
    LinuxMemoryBuilder, LinuxResources, LinuxResourcesBuilder, Spec,
};

use super::{HostCapabilities, SpecError};

/// Where a request's resources are, for errors naming a field: a
/// ContainerConfig's at create, an UpdateContainerResourcesRequest's later.
struct ResourceFields {
    cpu_period: &'static str,
    cpu_shares: &'static str,
    hugepage_limits: &'static str,
    unified: &'static str,
}

const CREATE_FIELDS: ResourceFields = ResourceFields {
    cpu_period: "config.linux.resources.cpu_period",
    cpu_shares: "config.linux.resources.cpu_shares",
    hugepage_limits: "config.linux.resources.hugepage_limits",
    unified: "config.linux.resources.unified",
};

const UPDATE_FIELDS: ResourceFields = ResourceFields {
    cpu_period: "linux.cpu_period",
    cpu_shares: "linux.cpu_shares",
    hugepage_limits: "linux.hugepage_limits",
    unified: "linux.unified",
};

/// The cgroup limits of a container. Devices: deny all (the runtime then
/// allows its default /dev nodes) and allow `device_rules`, or allow all
/// when privileged.
pub(super) fn resources(
    r: Option<&LinuxContainerResources>,
    host: &HostCapabilities,
    privileged: bool,
    device_rules: Vec<LinuxDeviceCgroup>,
) -> Result<LinuxResources, SpecError> {
    let mut rules = vec![LinuxDeviceCgroupBuilder::default()
        .allow(privileged)
        .access("rwm")
        .build()?];
    rules.extend(device_rules);
    let mut out = match r {
        Some(r) => limits(r, host, &CREATE_FIELDS)?,
        None => LinuxResources::default(),
    };
    out.set_devices(Some(rules));
    Ok(out)
}

/// A live update (UpdateContainerResources) of a container whose limits in
/// force are `current` ([`applied_resources`] of its spec, or what its last
/// update left): the `linux.resources` to apply and what is in force after
/// it, as ContainerStatus reports it. Each field `update` sets replaces the
/// one in force; a zero or empty one keeps it, as at create (kubelet sends
/// the whole set; containerd merges into the spec the same way,
/// `updateOCIResource`). A new memory limit without a swap limit takes the
/// create rule (swap held to the limit). `unified` keys are merged.
/// oom_score_adj stays: it is the process', not the cgroup's. Devices are
/// left out. Errors: InvalidArgument naming `linux.<field>`, as at create.
pub fn updated_resources(
    current: Option<&LinuxContainerResources>,
    update: &LinuxContainerResources,
    host: &HostCapabilities,
) -> Result<(LinuxResources, LinuxContainerResources), SpecError> {
    let mut merged = current.cloned().unwrap_or_default();
    for (to, from) in [
        (&mut merged.cpu_period, update.cpu_period),
        (&mut merged.cpu_quota, update.cpu_quota),
        (&mut merged.cpu_shares, update.cpu_shares),
    ] {
        if from != 0 {
            *to = from;
        }
    }
    for (to, from) in [
        (&mut merged.cpuset_cpus, &update.cpuset_cpus),
        (&mut merged.cpuset_mems, &update.cpuset_mems),
    ] {
        if !from.is_empty() {
            to.clone_from(from);
        }
    }
    if update.memory_limit_in_bytes != 0 {
        merged.memory_limit_in_bytes = update.memory_limit_in_bytes;
        merged.memory_swap_limit_in_bytes = update.memory_swap_limit_in_bytes;
    } else if update.memory_swap_limit_in_bytes != 0 {
        merged.memory_swap_limit_in_bytes = update.memory_swap_limit_in_bytes;
    }
    if !update.hugepage_limits.is_empty() {
        merged.hugepage_limits.clone_from(&update.hugepage_limits);
    }
    merged.unified.extend(update.unified.clone());
    let linux = limits(&merged, host, &UPDATE_FIELDS)?;
    let in_force = applied_limits(&linux, merged.oom_score_adj);
    Ok((linux, in_force))
}

/// The cpu, memory, hugepage and unified limits `r` asks for, on this host.
fn limits(
    r: &LinuxContainerResources,
    host: &HostCapabilities,
    fields: &ResourceFields,
) -> Result<LinuxResources, SpecError> {
    let mut out = LinuxResourcesBuilder::default();
    let mut cpu = LinuxCpuBuilder::default();
    let mut cpu_set = false;
    if r.cpu_period != 0 {
        cpu = cpu.period(non_negative(r.cpu_period, fields.cpu_period)?);
        cpu_set = true;
    }
    if r.cpu_quota != 0 {
        cpu = cpu.quota(r.cpu_quota);
        cpu_set = true;
    }
    if r.cpu_shares != 0 {
        cpu = cpu.shares(non_negative(r.cpu_shares, fields.cpu_shares)?);
        cpu_set = true;
    }
    if !r.cpuset_cpus.is_empty() {
        cpu = cpu.cpus(r.cpuset_cpus.clone());
        cpu_set = true;
    }
    if !r.cpuset_mems.is_empty() {
        cpu = cpu.mems(r.cpuset_mems.clone());
        cpu_set = true;
    }
    if cpu_set {
        out = out.cpu(cpu.build()?);
    }

    // Without a swap limit, swap is held to the memory limit so that the
    // container cannot swap (containerd's rule), where the host can say so.
    let mut memory = LinuxMemoryBuilder::default();
    let mut memory_set = false;
    if r.memory_limit_in_bytes != 0 {
        memory = memory.limit(r.memory_limit_in_bytes);
        memory_set = true;
        if r.memory_swap_limit_in_bytes == 0 && host.memory_swap {
            memory = memory.swap(r.memory_limit_in_bytes);
        }
    }
    if r.memory_swap_limit_in_bytes != 0 && host.memory_swap {
        memory = memory.swap(r.memory_swap_limit_in_bytes);
        memory_set = true;
    }
    if memory_set {
        out = out.memory(memory.build()?);
    }

    if host.hugetlb && !r.hugepage_limits.is_empty() {
        let limits = r
            .hugepage_limits
            .iter()
            .map(|h| {
                let limit = i64::try_from(h.limit).map_err(|_| {
                    SpecError::invalid(
                        fields.hugepage_limits,
                        format!("limit {} for {} is out of range", h.limit, h.page_size),
                    )
                })?;
                Ok(LinuxHugepageLimitBuilder::default()
                    .page_size(h.page_size.clone())
                    .limit(limit)
                    .build()?)
            })
            .collect::<Result<Vec<_>, SpecError>>()?;
        out = out.hugepage_limits(limits);
    }

    if !r.unified.is_empty() {
        if !host.cgroup_v2 {
            return Err(SpecError::invalid(
                fields.unified,
                "cgroup v2 settings given, but this host's cgroups are v1",
            ));
        }
        out = out.unified(
            r.unified
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        );
    }
    Ok(out.build()?)
}

/// The requested score, never below the daemon's own (see
/// [`HostCapabilities::min_oom_score_adj`]). `None` when the request sets no
/// resources (the process then inherits the runtime's).
pub(super) fn oom_score_adj(
    r: Option<&LinuxContainerResources>,
    host: &HostCapabilities,
) -> Result<Option<i32>, SpecError> {
    let Some(r) = r else { return Ok(None) };
    if !(-1000..=1000).contains(&r.oom_score_adj) {
        return Err(SpecError::invalid(
            "config.linux.resources.oom_score_adj",
            format!("{} is outside -1000..=1000", r.oom_score_adj),
        ));
    }
    Ok(Some((r.oom_score_adj as i32).max(host.min_oom_score_adj)))
}

/// What a built spec applies, as ContainerStatus.resources reports it:
/// linux.resources' cpu, memory, hugepage and unified settings and the
/// process' oom_score_adj; zero where the spec sets nothing, `None` without a
/// linux section (containerd's `copyResourcesToStatus`,
/// internal/cri/server/helpers.go).
pub fn applied_resources(spec: &Spec) -> Option<LinuxContainerResources> {
    let linux = spec.linux().as_ref()?;
    let oom_score_adj = spec
        .process()
        .as_ref()
        .and_then(|p| p.oom_score_adj())
        .map_or(0, i64::from);
    Some(match linux.resources() {
        Some(r) => applied_limits(r, oom_score_adj),
        None => LinuxContainerResources {
            oom_score_adj,
            ..Default::default()
        },
    })
}

/// `r`'s cpu, memory, hugepage and unified settings with `oom_score_adj`,
/// as CRI resources; zero where `r` sets nothing.
fn applied_limits(r: &LinuxResources, oom_score_adj: i64) -> LinuxContainerResources {
    let mut out = LinuxContainerResources {
        oom_score_adj,
        ..Default::default()
    };
    if let Some(cpu) = r.cpu() {
        out.cpu_period = cpu
            .period()
            .map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX));
        out.cpu_quota = cpu.quota().unwrap_or(0);
        out.cpu_shares = cpu
            .shares()
            .map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX));
        out.cpuset_cpus = cpu.cpus().clone().unwrap_or_default();
        out.cpuset_mems = cpu.mems().clone().unwrap_or_default();
    }
    if let Some(memory) = r.memory() {
        out.memory_limit_in_bytes = memory.limit().unwrap_or(0);
        out.memory_swap_limit_in_bytes = memory.swap().unwrap_or(0);
    }
    out.hugepage_limits = r
        .hugepage_limits()
        .iter()
        .flatten()
        .map(|h| HugepageLimit {
            page_size: h.page_size().clone(),
            limit: u64::try_from(h.limit()).unwrap_or(0),
        })
        .collect();
    if let Some(unified) = r.unified() {
        out.unified = unified
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
    }
    out
}

fn non_negative(v: i64, field: &'static str) -> Result<u64, SpecError> {
    u64::try_from(v).map_err(|_| SpecError::invalid(field, format!("{v} is negative")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostCapabilities {
        HostCapabilities {
            cgroup_v2: false,
            hugetlb: false,
            memory_swap: true,
            min_oom_score_adj: 0,
            apparmor: false,
            own_capabilities: (1 << 41) - 1,
            mount_setattr: true,
            idmapped_layers: true,
        }
    }

    fn hugepages() -> LinuxContainerResources {
        LinuxContainerResources {
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 0,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn none_is_only_the_device_rule() {
        let r = resources(None, &host(), false, vec![]).unwrap();
        let devices = r.devices().as_ref().unwrap();
        assert_eq!(devices.len(), 1);
        assert!(!devices[0].allow());
        assert_eq!(devices[0].access().as_deref(), Some("rwm"));
        assert!(r.cpu().is_none() && r.memory().is_none());
        assert!(resources(None, &host(), true, vec![])
            .unwrap()
            .devices()
            .as_ref()
            .unwrap()[0]
            .allow());
    }

    #[test]
    fn cpu_and_memory() {
        let req = LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            cpuset_cpus: "0".into(),
            cpuset_mems: "0".into(),
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        };
        let r = resources(Some(&req), &host(), false, vec![]).unwrap();
        let cpu = r.cpu().as_ref().unwrap();
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.shares(), Some(512));
        assert_eq!(cpu.cpus().as_deref(), Some("0"));
        assert_eq!(cpu.mems().as_deref(), Some("0"));
        let mem = r.memory().as_ref().unwrap();
        assert_eq!(mem.limit(), Some(64 << 20));
        assert_eq!(mem.swap(), Some(64 << 20), "swap pinned to the limit");

        let no_swap = HostCapabilities {
            memory_swap: false,
            ..host()
        };
        let r = resources(Some(&req), &no_swap, false, vec![]).unwrap();
        assert_eq!(r.memory().as_ref().unwrap().swap(), None);
        let req = LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            memory_swap_limit_in_bytes: 128 << 20,
            ..Default::default()
        };
        let r = resources(Some(&req), &host(), false, vec![]).unwrap();
        assert_eq!(r.memory().as_ref().unwrap().swap(), Some(128 << 20));
    }

    #[test]
    fn negative_period_or_shares_are_invalid() {
        let req = LinuxContainerResources {
            cpu_shares: -2,
            ..Default::default()
        };
        let err = resources(Some(&req), &host(), false, vec![]).unwrap_err();
        assert!(matches!(
            err,
            SpecError::InvalidArgument {
                field: "config.linux.resources.cpu_shares",
                ..
            }
        ));
    }

    #[test]
    fn hugepages_only_where_enforceable() {
        let r = resources(Some(&hugepages()), &host(), false, vec![]).unwrap();
        assert!(r.hugepage_limits().is_none());
        let with = HostCapabilities {
            hugetlb: true,
            ..host()
        };
        let r = resources(Some(&hugepages()), &with, false, vec![]).unwrap();
        let limits = r.hugepage_limits().as_ref().unwrap();
        assert_eq!(limits[0].page_size(), "2MB");
        assert_eq!(limits[0].limit(), 0);
    }

    #[test]
    fn unified_needs_cgroup_v2() {
        let req = LinuxContainerResources {
            unified: [("memory.high".to_string(), "1M".to_string())].into(),
            ..Default::default()
        };
        assert!(matches!(
            resources(Some(&req), &host(), false, vec![]),
            Err(SpecError::InvalidArgument {
                field: "config.linux.resources.unified",
                ..
            })
        ));
        let v2 = HostCapabilities {
            cgroup_v2: true,
            ..host()
        };
        let r = resources(Some(&req), &v2, false, vec![]).unwrap();
        assert_eq!(r.unified().as_ref().unwrap()["memory.high"], "1M");
    }

    /// What a container made with 1 CPU's quota, 128 MiB and oom score 500
    /// has in force.
    fn in_force() -> LinuxContainerResources {
        let made = resources(
            Some(&LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 100_000,
                cpu_shares: 1024,
                memory_limit_in_bytes: 128 << 20,
                ..Default::default()
            }),
            &host(),
            false,
            vec![],
        )
        .unwrap();
        applied_limits(&made, 500)
    }

    #[test]
    fn an_update_replaces_what_it_sets_and_keeps_the_rest() {
        let update = LinuxContainerResources {
            cpu_quota: 50_000,
            memory_limit_in_bytes: 256 << 20,
            ..Default::default()
        };
        let (linux, now) = updated_resources(Some(&in_force()), &update, &host()).unwrap();
        assert!(linux.devices().is_none());
        let cpu = linux.cpu().as_ref().unwrap();
        assert_eq!(
            (cpu.period(), cpu.quota(), cpu.shares()),
            (Some(100_000), Some(50_000), Some(1024))
        );
        // The new limit takes the swap rule again, not the old swap.
        let memory = linux.memory().as_ref().unwrap();
        assert_eq!(
            (memory.limit(), memory.swap()),
            (Some(256 << 20), Some(256 << 20))
        );
        assert_eq!(
            now,
            LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 50_000,
                cpu_shares: 1024,
                memory_limit_in_bytes: 256 << 20,
                memory_swap_limit_in_bytes: 256 << 20,
                oom_score_adj: 500,
                ..Default::default()
            }
        );
        // An update of the cpu alone keeps the memory and its swap.
        let cpu_only = LinuxContainerResources {
            cpu_shares: 2,
            oom_score_adj: -999,
            ..Default::default()
        };
        let (_, later) = updated_resources(Some(&now), &cpu_only, &host()).unwrap();
        assert_eq!(
            later,
            LinuxContainerResources {
                cpu_shares: 2,
                ..now
            }
        );
    }

    #[test]
    fn an_update_names_its_own_fields() {
        for (update, field) in [
            (
                LinuxContainerResources {
                    cpu_period: -1,
                    ..Default::default()
                },
                "linux.cpu_period",
            ),
            (
                LinuxContainerResources {
                    unified: [("memory.high".to_string(), "1M".to_string())].into(),
                    ..Default::default()
                },
                "linux.unified",
            ),
        ] {
            let err = updated_resources(Some(&in_force()), &update, &host()).unwrap_err();
            assert!(err.to_string().starts_with(&format!("{field}: ")), "{err}");
        }
    }

    #[test]
    fn no_linux_section_applies_nothing() {
        let mut spec = Spec::default();
        spec.set_linux(None);
        assert_eq!(applied_resources(&spec), None);
    }

    #[test]
    fn oom_score_is_clamped_to_the_daemons() {
        let req = |adj| LinuxContainerResources {
            oom_score_adj: adj,
            ..Default::default()
        };
        assert_eq!(oom_score_adj(None, &host()).unwrap(), None);
        assert_eq!(oom_score_adj(Some(&req(500)), &host()).unwrap(), Some(500));
        assert_eq!(oom_score_adj(Some(&req(-998)), &host()).unwrap(), Some(0));
        let low = HostCapabilities {
            min_oom_score_adj: -999,
            ..host()
        };
        assert_eq!(oom_score_adj(Some(&req(-998)), &low).unwrap(), Some(-998));
        assert!(oom_score_adj(Some(&req(1001)), &host()).is_err());
    }
}
