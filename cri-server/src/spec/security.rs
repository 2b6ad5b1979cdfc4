//! Capabilities, masked and read-only /proc and /sys paths, and what
//! `privileged` lifts.

use std::str::FromStr;

use crius_proto::cri::{
    security_profile::ProfileType, LinuxContainerSecurityContext, SecurityProfile,
};
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, LinuxCapabilitiesBuilder};

use super::SpecError;

const FIELD_ADD: &str = "config.linux.security_context.capabilities.add_capabilities";
const FIELD_DROP: &str = "config.linux.security_context.capabilities.drop_capabilities";
const FIELD_APPARMOR: &str = "config.linux.security_context.apparmor";

/// containerd's (and Docker's) default set.
const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability oci-spec knows, with its kernel number, so that "all" can
/// mean all that the daemon itself has.
const NUMBERED_CAPABILITIES: [(u32, Capability); 41] = [
    (0, Capability::Chown),
    (1, Capability::DacOverride),
    (2, Capability::DacReadSearch),
    (3, Capability::Fowner),
    (4, Capability::Fsetid),
    (5, Capability::Kill),
    (6, Capability::Setgid),
    (7, Capability::Setuid),
    (8, Capability::Setpcap),
    (9, Capability::LinuxImmutable),
    (10, Capability::NetBindService),
    (11, Capability::NetBroadcast),
    (12, Capability::NetAdmin),
    (13, Capability::NetRaw),
    (14, Capability::IpcLock),
    (15, Capability::IpcOwner),
    (16, Capability::SysModule),
    (17, Capability::SysRawio),
    (18, Capability::SysChroot),
    (19, Capability::SysPtrace),
    (20, Capability::SysPacct),
    (21, Capability::SysAdmin),
    (22, Capability::SysBoot),
    (23, Capability::SysNice),
    (24, Capability::SysResource),
    (25, Capability::SysTime),
    (26, Capability::SysTtyConfig),
    (27, Capability::Mknod),
    (28, Capability::Lease),
    (29, Capability::AuditWrite),
    (30, Capability::AuditControl),
    (31, Capability::Setfcap),
    (32, Capability::MacOverride),
    (33, Capability::MacAdmin),
    (34, Capability::Syslog),
    (35, Capability::WakeAlarm),
    (36, Capability::BlockSuspend),
    (37, Capability::AuditRead),
    (38, Capability::Perfmon),
    (39, Capability::Bpf),
    (40, Capability::CheckpointRestore),
];

/// containerd's defaults (the OCI runtime-tools set).
pub(super) const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];

pub(super) const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The bounding, effective and permitted sets (never inheritable or ambient,
/// as containerd: what non-root plus capabilities means is undefined in
/// Kubernetes). Defaults, then "ALL" in add or drop, then the single names
/// added, then those dropped. "ALL" and privileged mean every capability the
/// daemon has (as containerd's "all current capabilities").
pub(super) fn capabilities(
    sc: Option<&LinuxContainerSecurityContext>,
    privileged: bool,
    own_capabilities: u64,
) -> Result<LinuxCapabilities, SpecError> {
    let all: Capabilities = NUMBERED_CAPABILITIES
        .iter()
        .filter(|(n, _)| own_capabilities & (1 << n) != 0)
        .map(|(_, c)| *c)
        .collect();
    let mut set: Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
    if let Some(caps) = sc.and_then(|sc| sc.capabilities.as_ref()) {
        if caps.add_capabilities.iter().any(|c| is_all(c)) {
            set = all.clone();
        }
        if caps.drop_capabilities.iter().any(|c| is_all(c)) {
            set.clear();
        }
        for name in caps.add_capabilities.iter().filter(|c| !is_all(c)) {
            set.insert(parse_capability(name, FIELD_ADD)?);
        }
        for name in caps.drop_capabilities.iter().filter(|c| !is_all(c)) {
            set.remove(&parse_capability(name, FIELD_DROP)?);
        }
    }
    if privileged {
        set = all;
    }
    // The builder starts from oci-spec's defaults, which fill all five sets.
    let mut caps = LinuxCapabilitiesBuilder::default()
        .bounding(set.clone())
        .effective(set.clone())
        .permitted(set)
        .build()?;
    caps.set_inheritable(None);
    caps.set_ambient(None);
    Ok(caps)
}

fn is_all(name: &str) -> bool {
    name.eq_ignore_ascii_case("ALL")
}

/// CRI names carry no `CAP_` prefix; tolerate one anyway.
fn parse_capability(name: &str, field: &'static str) -> Result<Capability, SpecError> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    Capability::from_str(bare)
        .map_err(|_| SpecError::invalid(field, format!("unknown capability {name:?}")))
}

/// The AppArmor profile to confine the process with. Asking for one where the
/// kernel has no AppArmor is an error (as containerd): the request would
/// silently go unconfined. With AppArmor, a Localhost profile is named as
/// given (it must be loaded); the runtime's own default profile is not
/// provided, so RuntimeDefault leaves the process without one.
pub(super) fn apparmor_profile(
    sc: Option<&LinuxContainerSecurityContext>,
    privileged: bool,
    host_apparmor: bool,
) -> Result<Option<String>, SpecError> {
    let Some(sc) = sc else { return Ok(None) };
    // Older kubelets still send the string form.
    #[allow(deprecated)]
    let profile = match (&sc.apparmor, sc.apparmor_profile.as_str()) {
        (Some(p), _) => p.clone(),
        (None, "") => return Ok(None),
        (None, "unconfined") => return Ok(None),
        (None, "runtime/default") => SecurityProfile::default(),
        (None, other) => SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: other
                .strip_prefix("localhost/")
                .unwrap_or(other)
                .to_string(),
        },
    };
    let kind = ProfileType::try_from(profile.profile_type).map_err(|_| {
        SpecError::invalid(
            FIELD_APPARMOR,
            format!("unknown profile type {}", profile.profile_type),
        )
    })?;
    if kind == ProfileType::Unconfined {
        return Ok(None);
    }
    if !host_apparmor {
        return Err(SpecError::invalid(
            FIELD_APPARMOR,
            "AppArmor is not enabled on this node",
        ));
    }
    match kind {
        ProfileType::Localhost if !privileged => {
            let name = profile.localhost_ref.trim_start_matches("localhost/");
            if name.is_empty() {
                return Err(SpecError::invalid(FIELD_APPARMOR, "localhost_ref is empty"));
            }
            Ok(Some(name.to_string()))
        }
        _ => Ok(None),
    }
}

/// The request's list, else the defaults; nothing when privileged.
pub(super) fn masked_paths(
    sc: Option<&LinuxContainerSecurityContext>,
    privileged: bool,
) -> Vec<String> {
    paths_or_default(
        sc.map(|sc| &sc.masked_paths[..]),
        &DEFAULT_MASKED_PATHS,
        privileged,
    )
}

pub(super) fn readonly_paths(
    sc: Option<&LinuxContainerSecurityContext>,
    privileged: bool,
) -> Vec<String> {
    paths_or_default(
        sc.map(|sc| &sc.readonly_paths[..]),
        &DEFAULT_READONLY_PATHS,
        privileged,
    )
}

fn paths_or_default(given: Option<&[String]>, default: &[&str], privileged: bool) -> Vec<String> {
    match given {
        _ if privileged => Vec::new(),
        Some(paths) if !paths.is_empty() => paths.to_vec(),
        _ => default.iter().map(|p| p.to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crius_proto::cri::Capability as CriCapability;

    const ALL: u64 = (1 << 41) - 1;

    fn sc(add: &[&str], drop: &[&str]) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            capabilities: Some(CriCapability {
                add_capabilities: add.iter().map(|s| s.to_string()).collect(),
                drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
                add_ambient_capabilities: vec![],
            }),
            ..Default::default()
        }
    }

    fn effective(caps: &LinuxCapabilities) -> Capabilities {
        assert_eq!(caps.bounding(), caps.effective());
        assert_eq!(caps.permitted(), caps.effective());
        assert!(caps.inheritable().is_none());
        assert!(caps.ambient().is_none());
        caps.effective().clone().unwrap()
    }

    #[test]
    fn default_set() {
        let caps = capabilities(None, false, ALL).unwrap();
        let set = effective(&caps);
        assert_eq!(set.len(), 14);
        assert!(set.contains(&Capability::NetRaw));
        assert!(!set.contains(&Capability::SysAdmin));
    }

    #[test]
    fn add_and_drop() {
        let set = effective(
            &capabilities(
                Some(&sc(&["SYS_ADMIN", "cap_net_admin"], &["CHOWN"])),
                false,
                40,
            )
            .unwrap(),
        );
        assert!(set.contains(&Capability::SysAdmin));
        assert!(set.contains(&Capability::NetAdmin));
        assert!(!set.contains(&Capability::Chown));
        assert_eq!(set.len(), 15);
    }

    #[test]
    fn all_then_singles() {
        let set = effective(&capabilities(Some(&sc(&["ALL"], &["CHOWN"])), false, ALL).unwrap());
        assert_eq!(set.len(), 40);
        assert!(!set.contains(&Capability::Chown));
        let set =
            effective(&capabilities(Some(&sc(&["NET_ADMIN"], &["all"])), false, ALL).unwrap());
        assert_eq!(set, [Capability::NetAdmin].into_iter().collect());
        // "all" means what the daemon has: here no CAP_SYS_RESOURCE (24).
        let set =
            effective(&capabilities(Some(&sc(&["ALL"], &[])), false, ALL & !(1 << 24)).unwrap());
        assert_eq!(set.len(), 40);
        assert!(!set.contains(&Capability::SysResource));
    }

    #[test]
    fn unknown_capability_names_the_field() {
        let err = capabilities(Some(&sc(&["FLY"], &[])), false, ALL).unwrap_err();
        assert!(
            matches!(
                err,
                SpecError::InvalidArgument {
                    field: FIELD_ADD,
                    ..
                }
            ),
            "{err}"
        );
        let err = capabilities(Some(&sc(&[], &["SWIM"])), false, ALL).unwrap_err();
        assert!(
            matches!(
                err,
                SpecError::InvalidArgument {
                    field: FIELD_DROP,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn privileged_has_everything() {
        let set = effective(&capabilities(Some(&sc(&[], &["ALL"])), true, ALL).unwrap());
        assert_eq!(set.len(), 41);
    }

    fn apparmor(p: Option<SecurityProfile>) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            apparmor: p,
            ..Default::default()
        }
    }

    fn localhost(name: &str) -> SecurityProfile {
        SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: name.into(),
        }
    }

    #[test]
    fn apparmor_without_apparmor_only_unconfined() {
        assert_eq!(apparmor_profile(None, false, false).unwrap(), None);
        assert_eq!(
            apparmor_profile(Some(&apparmor(None)), false, false).unwrap(),
            None
        );
        let unconfined = SecurityProfile {
            profile_type: ProfileType::Unconfined as i32,
            localhost_ref: String::new(),
        };
        assert_eq!(
            apparmor_profile(Some(&apparmor(Some(unconfined))), false, false).unwrap(),
            None
        );
        for p in [SecurityProfile::default(), localhost("mine")] {
            let err = apparmor_profile(Some(&apparmor(Some(p))), false, false).unwrap_err();
            assert!(
                matches!(
                    err,
                    SpecError::InvalidArgument {
                        field: FIELD_APPARMOR,
                        ..
                    }
                ),
                "{err}"
            );
        }
    }

    #[test]
    #[allow(deprecated)]
    fn apparmor_with_apparmor() {
        let sc = apparmor(Some(localhost("localhost/mine")));
        assert_eq!(
            apparmor_profile(Some(&sc), false, true).unwrap().as_deref(),
            Some("mine")
        );
        assert_eq!(
            apparmor_profile(Some(&sc), true, true).unwrap(),
            None,
            "privileged"
        );
        let sc = apparmor(Some(SecurityProfile::default()));
        assert_eq!(apparmor_profile(Some(&sc), false, true).unwrap(), None);
        let legacy = LinuxContainerSecurityContext {
            apparmor_profile: "localhost/old".into(),
            ..Default::default()
        };
        assert_eq!(
            apparmor_profile(Some(&legacy), false, true)
                .unwrap()
                .as_deref(),
            Some("old")
        );
        assert!(apparmor_profile(Some(&apparmor(Some(localhost("")))), false, true).is_err());
    }

    #[test]
    fn masked_and_readonly_paths() {
        assert_eq!(masked_paths(None, false), DEFAULT_MASKED_PATHS);
        assert_eq!(readonly_paths(None, false), DEFAULT_READONLY_PATHS);
        let custom = LinuxContainerSecurityContext {
            masked_paths: vec!["/bin/ls".into()],
            readonly_paths: vec!["/etc".into()],
            ..Default::default()
        };
        assert_eq!(masked_paths(Some(&custom), false), ["/bin/ls"]);
        assert_eq!(readonly_paths(Some(&custom), false), ["/etc"]);
        assert!(masked_paths(Some(&custom), true).is_empty());
        assert!(readonly_paths(None, true).is_empty());
    }
}
