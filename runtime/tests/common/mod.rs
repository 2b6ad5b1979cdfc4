//! Shared fixtures for the root integration tests: a busybox bundle, pipes, waiting.
#![allow(dead_code)] // each test binary uses a different subset

use std::fs::{self, File};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crius_runtime::oci_spec::runtime::{
    get_default_mounts, LinuxBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, ProcessBuilder,
    RootBuilder, Spec, SpecBuilder,
};
use crius_runtime::{Pid, Runtime};
use nix::sys::wait::{waitpid, WaitStatus};

/// Skips the calling test, loudly, when not root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: this test needs root (namespaces, mounts, cgroups)");
            return;
        }
    };
}

/// libcontainer chdir()s the whole process during create/start/exec, so tests in one binary
/// must not run those calls concurrently.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "true", "cat", "id", "pwd", "hostname", "mkdir", "grep", "tty", "stty",
];

/// Parent of every test cgroup, under each v1 controller.
pub const TEST_CGROUP_PARENT: &str = "crius-test";

/// A unique container id for one test run.
pub fn unique_id(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

/// A bundle dir with a busybox rootfs and a config.json.
pub struct Bundle {
    dir: tempfile::TempDir,
}

impl Bundle {
    /// A bundle running `args` with the given namespaces, in cgroup /crius-test/<cgroup_name>.
    pub fn new(cgroup_name: &str, args: &[&str], namespaces: &[LinuxNamespaceType]) -> Bundle {
        let dir = tempfile::Builder::new()
            .prefix("crius-bundle-")
            .tempdir()
            .unwrap();
        build_busybox_rootfs(&dir.path().join("rootfs"));
        spec(cgroup_name, args, namespaces)
            .save(dir.path().join("config.json"))
            .unwrap();
        Bundle { dir }
    }

    /// The usual container namespaces: pid, ipc, uts, mount, net.
    pub fn isolated(cgroup_name: &str, args: &[&str]) -> Bundle {
        use LinuxNamespaceType::*;
        Bundle::new(cgroup_name, args, &[Pid, Ipc, Uts, Mount, Network])
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn spec(cgroup_name: &str, args: &[&str], namespaces: &[LinuxNamespaceType]) -> Spec {
    let process = ProcessBuilder::default()
        .args(args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
        .env(vec!["PATH=/bin".to_string(), "HOME=/".to_string()])
        .cwd("/")
        .build()
        .unwrap();
    // The brief's mounts: the defaults without the /sys/fs/cgroup mount.
    let mounts = get_default_mounts()
        .into_iter()
        .filter(|m| m.destination() != Path::new("/sys/fs/cgroup"))
        .collect::<Vec<_>>();
    let namespaces = namespaces
        .iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(*typ).build().unwrap())
        .collect::<Vec<_>>();
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(format!(
            "/{TEST_CGROUP_PARENT}/{cgroup_name}"
        )))
        .build()
        .unwrap();
    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(false)
                .build()
                .unwrap(),
        )
        .hostname("crius-test")
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()
        .unwrap()
}

/// Copies the host's dynamic busybox, the libraries `ldd` lists and the loader into `rootfs`.
fn build_busybox_rootfs(rootfs: &Path) {
    let bin = rootfs.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    for applet in BUSYBOX_APPLETS {
        symlink("busybox", bin.join(applet)).unwrap();
    }
    let ldd = Command::new("ldd").arg("/bin/busybox").output().unwrap();
    assert!(ldd.status.success(), "ldd /bin/busybox failed");
    for lib in String::from_utf8(ldd.stdout)
        .unwrap()
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
    {
        let target = rootfs.join(lib.trim_start_matches('/'));
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::copy(lib, &target).unwrap();
    }
}

/// The container's cgroup dir under a v1 controller, e.g. "memory".
pub fn cgroup_dir(controller: &str, cgroup_name: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(TEST_CGROUP_PARENT)
        .join(cgroup_name)
}

/// The controllers whose cgroup dirs must come and go with a container.
pub const CGROUP_CONTROLLERS: &[&str] = &["memory", "pids", "cpu", "devices", "freezer"];

/// Deletes the container (force) when a test ends, passing or not.
pub struct DeleteOnDrop<'a> {
    pub runtime: &'a Runtime,
    pub id: String,
}

impl Drop for DeleteOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.runtime.delete(&self.id, true);
    }
}

pub fn pipe() -> (File, OwnedFd) {
    let (reader, writer) = nix::unistd::pipe().unwrap();
    (File::from(reader), writer)
}

pub fn read_to_end(mut reader: File) -> String {
    let mut out = String::new();
    reader.read_to_string(&mut out).unwrap();
    out
}

pub fn wait(pid: Pid) -> WaitStatus {
    loop {
        match waitpid(pid, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other.unwrap(),
        }
    }
}

/// Field 4 (ppid) or 5 (pgrp) of /proc/<pid>/stat.
fn stat_field(pid: Pid, index_after_comm: usize) -> i32 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // comm may contain spaces and parens: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ')
        .nth(index_after_comm)
        .unwrap()
        .parse()
        .unwrap()
}

pub fn parent_of(pid: Pid) -> Pid {
    Pid::from_raw(stat_field(pid, 1))
}

pub fn process_group_of(pid: Pid) -> Pid {
    Pid::from_raw(stat_field(pid, 2))
}

pub fn comm_of(pid: Pid) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap()
        .trim_end()
        .to_string()
}

pub fn namespace_of(pid: Pid, ns: &str) -> PathBuf {
    fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap()
}
