//! The seccomp filter: none (unconfined, or privileged), a profile from a file
//! on the node (Localhost, in the Docker/containerd JSON format), or the
//! runtime's default.
//!
//! The default profile is crius' own: everything is allowed except the
//! syscalls that reach kernel state no namespace isolates (keyrings, modules,
//! clocks, reboot, mounts, new namespaces, ...), each group lifted when the
//! container holds the capability that governs it, as Docker's profile does.
//! It is a deny list, so a syscall newer than the list is allowed.

use std::path::{Path, PathBuf};

use crius_proto::cri::{
    security_profile::ProfileType, LinuxContainerSecurityContext, SecurityProfile,
};
use oci_spec::runtime::{
    Arch, Capabilities, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg,
    LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompFilterFlag, LinuxSeccompOperator,
    LinuxSyscall, LinuxSyscallBuilder,
};
use serde::Deserialize;

use super::SpecError;

const FIELD_SECCOMP: &str = "config.linux.security_context.seccomp";
const FIELD_PROFILE_PATH: &str = "config.linux.security_context.seccomp_profile_path";

/// Denied syscalls, each group unless the container holds one of the listed
/// capabilities (never, when none is listed).
const DENIED: &[(&[Capability], &[&str])] = &[
    (
        &[],
        &[
            // Kernel keyrings are not namespaced.
            "add_key",
            "keyctl",
            "request_key",
            // Obsolete or host-wide interfaces.
            "create_module",
            "get_kernel_syms",
            "query_module",
            "nfsservctl",
            "uselib",
            "ustat",
            "sysfs",
            "_sysctl",
            "vm86",
            "vm86old",
        ],
    ),
    (
        &[Capability::SysAdmin],
        &[
            "mount",
            "umount",
            "umount2",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "pivot_root",
            "unshare",
            "setns",
            "quotactl",
            "quotactl_fd",
            "lookup_dcookie",
            "fanotify_init",
            "swapon",
            "swapoff",
        ],
    ),
    (&[Capability::SysAdmin, Capability::Bpf], &["bpf"]),
    (
        &[Capability::SysAdmin, Capability::Perfmon],
        &["perf_event_open"],
    ),
    (
        &[Capability::SysModule],
        &["init_module", "finit_module", "delete_module"],
    ),
    (
        &[Capability::SysBoot],
        &["reboot", "kexec_load", "kexec_file_load"],
    ),
    (&[Capability::SysRawio], &["iopl", "ioperm"]),
    (
        &[Capability::SysTime],
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    (&[Capability::SysPacct], &["acct"]),
    (
        &[Capability::SysPtrace],
        &[
            "process_vm_readv",
            "process_vm_writev",
            "kcmp",
            "userfaultfd",
        ],
    ),
    (
        &[Capability::SysNice],
        &[
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
            "migrate_pages",
            "move_pages",
        ],
    ),
    (&[Capability::SysTtyConfig], &["vhangup"]),
    (
        &[Capability::DacReadSearch],
        &["open_by_handle_at", "name_to_handle_at"],
    ),
    (&[Capability::Syslog], &["syslog"]),
];

/// clone(2) flags that create namespaces: denied without CAP_SYS_ADMIN.
const CLONE_NAMESPACE_FLAGS: [u64; 7] = [
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

pub(super) fn seccomp(
    sc: Option<&LinuxContainerSecurityContext>,
    privileged: bool,
    capabilities: &Capabilities,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    if privileged {
        return Ok(None);
    }
    let Some(sc) = sc else { return Ok(None) };
    // Older kubelets still send the string form.
    #[allow(deprecated)]
    match &sc.seccomp {
        Some(profile) => from_profile(profile, capabilities),
        None => from_deprecated_path(&sc.seccomp_profile_path, capabilities),
    }
}

fn from_profile(
    profile: &SecurityProfile,
    capabilities: &Capabilities,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    let kind = ProfileType::try_from(profile.profile_type).map_err(|_| {
        SpecError::invalid(
            FIELD_SECCOMP,
            format!("unknown profile type {}", profile.profile_type),
        )
    })?;
    match kind {
        ProfileType::Unconfined => Ok(None),
        ProfileType::RuntimeDefault => Ok(Some(default_profile(capabilities)?)),
        ProfileType::Localhost => localhost_profile(
            Path::new(&profile.localhost_ref),
            capabilities,
            FIELD_SECCOMP,
        )
        .map(Some),
    }
}

/// The pre-1.19 string form: "", "unconfined", "runtime/default",
/// "docker/default" or "localhost/<absolute path>".
fn from_deprecated_path(
    path: &str,
    capabilities: &Capabilities,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    match path {
        "" | "unconfined" => Ok(None),
        "runtime/default" | "docker/default" => Ok(Some(default_profile(capabilities)?)),
        other => match other.strip_prefix("localhost/") {
            Some(file) => {
                localhost_profile(Path::new(file), capabilities, FIELD_PROFILE_PATH).map(Some)
            }
            None => Err(SpecError::invalid(
                FIELD_PROFILE_PATH,
                format!("unknown seccomp profile {other:?}"),
            )),
        },
    }
}

/// The default profile for a container holding `capabilities`.
pub fn default_profile(capabilities: &Capabilities) -> Result<LinuxSeccomp, SpecError> {
    let lifted = |caps: &[Capability]| caps.iter().any(|c| capabilities.contains(c));
    let mut rules = Vec::new();
    for (caps, names) in DENIED {
        if !lifted(caps) {
            rules.push(deny(names, libc::EPERM, None)?);
        }
    }
    if !capabilities.contains(&Capability::SysAdmin) {
        for flag in CLONE_NAMESPACE_FLAGS {
            let arg = LinuxSeccompArgBuilder::default()
                .index(CLONE_FLAGS_ARG)
                .value(flag)
                .value_two(flag)
                .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                .build()?;
            rules.push(deny(&["clone"], libc::EPERM, Some(vec![arg]))?);
        }
        // clone3 passes its flags in memory, out of a filter's reach: ENOSYS
        // makes libc fall back to clone, which the rules above can check.
        rules.push(deny(&["clone3"], libc::ENOSYS, None)?);
    }
    Ok(LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(native_architectures())
        .syscalls(rules)
        .build()?)
}

/// s390 passes clone's flags second; every other architecture first.
const CLONE_FLAGS_ARG: usize = if cfg!(target_arch = "s390x") { 1 } else { 0 };

fn deny(
    names: &[&str],
    errno: i32,
    args: Option<Vec<LinuxSeccompArg>>,
) -> Result<LinuxSyscall, SpecError> {
    let rule = LinuxSyscallBuilder::default()
        .names(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(errno as u32);
    Ok(match args {
        Some(args) => rule.args(args),
        None => rule,
    }
    .build()?)
}

/// The architectures a container on this machine may run binaries of.
fn native_architectures() -> Vec<Arch> {
    match std::env::consts::ARCH {
        "x86_64" => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        "aarch64" => vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm],
        "s390x" => vec![Arch::ScmpArchS390x, Arch::ScmpArchS390],
        "riscv64" => vec![Arch::ScmpArchRiscv64],
        _ => vec![Arch::ScmpArchNative],
    }
}

/// The architecture name profiles use in `includes.arches` (Go's GOARCH).
fn profile_arch_name() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// A seccomp profile in the format Docker and containerd read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProfileFile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Vec<Arch>,
    #[serde(default)]
    arch_map: Vec<ArchMapEntry>,
    #[serde(default)]
    syscalls: Vec<ProfileSyscall>,
    #[serde(default)]
    flags: Vec<LinuxSeccompFilterFlag>,
    #[serde(default)]
    listener_path: Option<PathBuf>,
    #[serde(default)]
    listener_metadata: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMapEntry {
    architecture: Arch,
    #[serde(default)]
    sub_architectures: Vec<Arch>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProfileSyscall {
    #[serde(default)]
    name: String,
    #[serde(default)]
    names: Vec<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<LinuxSeccompArg>,
    #[serde(default)]
    includes: ProfileFilter,
    #[serde(default)]
    excludes: ProfileFilter,
}

/// When a rule applies: all of `caps` held (includes) or none (excludes), the
/// machine among `arches`. `minKernel` is not checked.
#[derive(Default, Deserialize)]
struct ProfileFilter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
}

fn localhost_profile(
    path: &Path,
    capabilities: &Capabilities,
    field: &'static str,
) -> Result<LinuxSeccomp, SpecError> {
    if !path.is_absolute() {
        return Err(SpecError::invalid(
            field,
            format!(
                "localhost profile {:?} is not an absolute path",
                path.display()
            ),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        SpecError::invalid(
            field,
            format!("reading localhost profile {}: {e}", path.display()),
        )
    })?;
    let file: ProfileFile = serde_json::from_str(&text).map_err(|e| {
        SpecError::invalid(field, format!("localhost profile {}: {e}", path.display()))
    })?;

    let has_cap = |name: &String| {
        let upper = name.to_ascii_uppercase();
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        bare.parse::<Capability>()
            .is_ok_and(|c| capabilities.contains(&c))
    };
    let arch = profile_arch_name();
    let mut syscalls = Vec::new();
    for s in file.syscalls {
        let included = s.includes.caps.iter().all(has_cap)
            && (s.includes.arches.is_empty() || s.includes.arches.iter().any(|a| a == arch));
        let excluded =
            s.excludes.caps.iter().any(has_cap) || s.excludes.arches.iter().any(|a| a == arch);
        if !included || excluded {
            continue;
        }
        let mut names = s.names;
        if !s.name.is_empty() {
            names.push(s.name);
        }
        let mut rule = LinuxSyscallBuilder::default().names(names).action(s.action);
        if let Some(errno) = s.errno_ret {
            rule = rule.errno_ret(errno);
        }
        if !s.args.is_empty() {
            rule = rule.args(s.args);
        }
        syscalls.push(rule.build()?);
    }

    let mut architectures = file.architectures;
    for entry in file.arch_map {
        architectures.push(entry.architecture);
        architectures.extend(entry.sub_architectures);
    }
    let mut out = LinuxSeccompBuilder::default()
        .default_action(file.default_action)
        .syscalls(syscalls);
    if let Some(errno) = file.default_errno_ret {
        out = out.default_errno_ret(errno);
    }
    if !architectures.is_empty() {
        out = out.architectures(architectures);
    }
    if !file.flags.is_empty() {
        out = out.flags(file.flags);
    }
    if let Some(p) = file.listener_path {
        out = out.listener_path(p);
    }
    if let Some(m) = file.listener_metadata {
        out = out.listener_metadata(m);
    }
    Ok(out.build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_caps() -> Capabilities {
        [Capability::Chown, Capability::NetRaw, Capability::Kill]
            .into_iter()
            .collect()
    }

    fn with_profile(profile: Option<SecurityProfile>) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            seccomp: profile,
            ..Default::default()
        }
    }

    fn profile(kind: ProfileType, localhost_ref: &str) -> SecurityProfile {
        SecurityProfile {
            profile_type: kind as i32,
            localhost_ref: localhost_ref.into(),
        }
    }

    fn denied(s: &LinuxSeccomp) -> Vec<String> {
        s.syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|r| r.action() == LinuxSeccompAction::ScmpActErrno && r.args().is_none())
            .flat_map(|r| r.names().clone())
            .collect()
    }

    #[test]
    fn unconfined_nil_and_privileged_have_no_filter() {
        let caps = default_caps();
        assert!(seccomp(None, false, &caps).unwrap().is_none());
        assert!(seccomp(Some(&with_profile(None)), false, &caps)
            .unwrap()
            .is_none());
        let unconfined = with_profile(Some(profile(ProfileType::Unconfined, "")));
        assert!(seccomp(Some(&unconfined), false, &caps).unwrap().is_none());
        let default = with_profile(Some(profile(ProfileType::RuntimeDefault, "")));
        assert!(seccomp(Some(&default), true, &caps).unwrap().is_none());
    }

    #[test]
    fn runtime_default_denies_what_the_capabilities_do_not_lift() {
        let sc = with_profile(Some(SecurityProfile::default()));
        let s = seccomp(Some(&sc), false, &default_caps()).unwrap().unwrap();
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActAllow);
        let d = denied(&s);
        for name in [
            "keyctl", "mount", "unshare", "setns", "bpf", "reboot", "clone3",
        ] {
            assert!(d.contains(&name.to_string()), "{name} not denied");
        }
        let clone_rules = s
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|r| r.names() == &["clone"])
            .count();
        assert_eq!(clone_rules, CLONE_NAMESPACE_FLAGS.len());
        assert!(s.architectures().as_ref().is_some_and(|a| !a.is_empty()));

        let mut admin = default_caps();
        admin.insert(Capability::SysAdmin);
        let s = default_profile(&admin).unwrap();
        let d = denied(&s);
        for name in ["mount", "unshare", "bpf", "clone3"] {
            assert!(
                !d.contains(&name.to_string()),
                "{name} denied despite SYS_ADMIN"
            );
        }
        assert!(d.contains(&"keyctl".to_string()) && d.contains(&"reboot".to_string()));
        assert!(!s
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .any(|r| r.names() == &["clone"]));
    }

    #[test]
    #[allow(deprecated)]
    fn localhost_profile_as_critest_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("block-chmod.json");
        std::fs::write(
            &path,
            r#"{
     "defaultAction": "SCMP_ACT_ALLOW",
     "syscalls": [
         {
             "names": ["chmod", "fchmodat"],
             "action": "SCMP_ACT_ERRNO"
         }
     ]
}"#,
        )
        .unwrap();
        let sc = with_profile(Some(profile(
            ProfileType::Localhost,
            path.to_str().unwrap(),
        )));
        let s = seccomp(Some(&sc), false, &default_caps()).unwrap().unwrap();
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActAllow);
        let rules = s.syscalls().as_ref().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].names(), &["chmod", "fchmodat"]);
        assert_eq!(rules[0].action(), LinuxSeccompAction::ScmpActErrno);

        let legacy = LinuxContainerSecurityContext {
            seccomp_profile_path: format!("localhost/{}", path.display()),
            ..Default::default()
        };
        assert_eq!(
            seccomp(Some(&legacy), false, &default_caps()).unwrap(),
            Some(s)
        );
    }

    #[test]
    fn docker_format_filters_by_capability_and_architecture() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        let other_arch = if profile_arch_name() == "amd64" {
            "arm64"
        } else {
            "amd64"
        };
        std::fs::write(
            &path,
            format!(
                r#"{{
  "defaultAction": "SCMP_ACT_ERRNO",
  "defaultErrnoRet": 38,
  "archMap": [{{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}}],
  "syscalls": [
    {{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "comment": "always"}},
    {{"name": "mount", "action": "SCMP_ACT_ALLOW", "includes": {{"caps": ["CAP_SYS_ADMIN"]}}}},
    {{"names": ["chown"], "action": "SCMP_ACT_ALLOW", "excludes": {{"caps": ["CAP_CHOWN"]}}}},
    {{"names": ["iopl"], "action": "SCMP_ACT_ALLOW", "includes": {{"arches": ["{other_arch}"]}}}},
    {{"names": ["clone"], "action": "SCMP_ACT_ALLOW",
      "args": [{{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}}]}}
  ]
}}"#
            ),
        )
        .unwrap();
        let sc = with_profile(Some(profile(
            ProfileType::Localhost,
            path.to_str().unwrap(),
        )));
        let s = seccomp(Some(&sc), false, &default_caps()).unwrap().unwrap();
        assert_eq!(s.default_errno_ret(), Some(38));
        assert_eq!(
            s.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86][..])
        );
        let names: Vec<Vec<String>> = s
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .map(|r| r.names().clone())
            .collect();
        assert_eq!(
            names,
            [
                vec!["read".to_string(), "write".into()],
                vec!["clone".into()]
            ]
        );
        let clone = &s.syscalls().as_ref().unwrap()[1];
        let arg = clone.args().as_ref().unwrap()[0];
        assert_eq!(arg.value(), 2114060288);
        assert_eq!(arg.value_two(), Some(0));
        assert_eq!(arg.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
    }

    #[test]
    #[allow(deprecated)]
    fn bad_localhost_profiles_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.json");
        std::fs::write(&garbage, "{not json").unwrap();
        let missing = dir.path().join("missing.json");
        for p in [
            garbage.to_str().unwrap(),
            missing.to_str().unwrap(),
            "relative.json",
        ] {
            let sc = with_profile(Some(profile(ProfileType::Localhost, p)));
            let err = seccomp(Some(&sc), false, &default_caps()).unwrap_err();
            assert!(
                matches!(
                    err,
                    SpecError::InvalidArgument {
                        field: FIELD_SECCOMP,
                        ..
                    }
                ),
                "{p}: {err}"
            );
        }
        let legacy = LinuxContainerSecurityContext {
            seccomp_profile_path: "weird".into(),
            ..Default::default()
        };
        let err = seccomp(Some(&legacy), false, &default_caps()).unwrap_err();
        assert!(matches!(
            err,
            SpecError::InvalidArgument {
                field: FIELD_PROFILE_PATH,
                ..
            }
        ));
    }

    #[test]
    #[allow(deprecated)]
    fn legacy_default_names() {
        for name in ["runtime/default", "docker/default"] {
            let sc = LinuxContainerSecurityContext {
                seccomp_profile_path: name.into(),
                ..Default::default()
            };
            assert!(
                seccomp(Some(&sc), false, &default_caps())
                    .unwrap()
                    .is_some(),
                "{name}"
            );
        }
    }
}
