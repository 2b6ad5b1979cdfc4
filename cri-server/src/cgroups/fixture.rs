//! Test hosts: a temp dir laid out as `/sys/fs/cgroup`, `/proc/self/mountinfo`
//! and `/proc/self/cgroup` of a v1, hybrid or v2 machine, read without root.

use std::path::{Path, PathBuf};

use super::CgroupLayout;

/// The daemon's own cgroup in the fixtures' unified hierarchy.
pub const OWN_CGROUP: &str = "/system.slice/crius.service";

pub struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    /// A v1 host as containerd's CI: cpu and cpuacct in one hierarchy (with
    /// the usual symlinks), memory with swap accounting, pids, hugetlb, and
    /// systemd's named hierarchy.
    pub fn v1() -> Host {
        let host = Host::with_mounts(&[
            ("cpu,cpuacct", "cgroup", "rw,cpu,cpuacct"),
            ("memory", "cgroup", "rw,memory"),
            ("pids", "cgroup", "rw,pids"),
            ("blkio", "cgroup", "rw,blkio"),
            ("hugetlb", "cgroup", "rw,hugetlb"),
            ("systemd", "cgroup", "rw,xattr,name=systemd"),
        ]);
        for link in ["cpu", "cpuacct"] {
            std::os::unix::fs::symlink("cpu,cpuacct", host.cgroup_root().join(link)).unwrap();
        }
        host.write("sys/fs/cgroup/memory/memory.memsw.limit_in_bytes", "0\n");
        host.write_proc_cgroup("3:pids:/\n2:memory:/\n1:cpu,cpuacct:/\n");
        host
    }

    /// This machine: cpu and cpuacct apart, no swap accounting, hugetlb only
    /// on the cgroup2 mount at /sys/fs/cgroup/unified.
    pub fn hybrid() -> Host {
        let host = Host::with_mounts(&[
            ("cpu", "cgroup", "rw,cpu"),
            ("cpuacct", "cgroup", "rw,cpuacct"),
            ("cpuset", "cgroup", "rw,cpuset"),
            ("memory", "cgroup", "rw,memory"),
            ("devices", "cgroup", "rw,devices"),
            ("pids", "cgroup", "rw,pids"),
            ("systemd", "cgroup", "rw,name=systemd"),
            ("unified", "cgroup2", "rw"),
        ]);
        host.write("sys/fs/cgroup/unified/cgroup.controllers", "hugetlb\n");
        host.write_proc_cgroup("9:name=systemd:/\n4:memory:/process_api/x\n0::/\n");
        host
    }

    /// A unified host with `controllers` enabled at the root.
    pub fn v2(controllers: &str) -> Host {
        let host = Host::with_mounts(&[("", "cgroup2", "rw,nsdelegate,memory_recursiveprot")]);
        host.write(
            "sys/fs/cgroup/cgroup.controllers",
            &format!("{controllers}\n"),
        );
        host.mkdir(&format!("sys/fs/cgroup{OWN_CGROUP}"));
        host.write_proc_cgroup(&format!("0::{OWN_CGROUP}\n"));
        host
    }

    /// `(name under /sys/fs/cgroup, fs type, super options)` a mount; a v1
    /// host's /sys/fs/cgroup itself is a tmpfs.
    fn with_mounts(mounts: &[(&str, &str, &str)]) -> Host {
        let host = Host {
            dir: tempfile::tempdir().unwrap(),
        };
        let mut mountinfo = String::from(
            "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n23 22 0:5 / /proc rw - proc proc rw\n",
        );
        if mounts.iter().all(|(name, _, _)| !name.is_empty()) {
            mountinfo.push_str("31 22 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n");
        }
        for (i, (name, fs_type, options)) in mounts.iter().enumerate() {
            let point = if name.is_empty() {
                "/sys/fs/cgroup".to_string()
            } else {
                format!("/sys/fs/cgroup/{name}")
            };
            host.mkdir(&point[1..]);
            mountinfo.push_str(&format!(
                "{} 31 0:{} / {point} rw,nosuid,nodev,noexec,relatime shared:{i} - {fs_type} {fs_type} {options}\n",
                40 + i,
                29 + i,
            ));
        }
        host.write("proc/self/mountinfo", &mountinfo);
        host
    }

    fn write_proc_cgroup(&self, content: &str) {
        self.write("proc/self/cgroup", content);
    }

    /// The fixture's /sys/fs/cgroup.
    pub fn cgroup_root(&self) -> PathBuf {
        self.dir.path().join("sys/fs/cgroup")
    }

    pub fn layout(&self) -> CgroupLayout {
        CgroupLayout::detect_under(self.dir.path()).unwrap()
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn mkdir(&self, relative: &str) {
        std::fs::create_dir_all(self.path(relative)).unwrap();
    }

    /// Writes `relative` (under the host's root), making its parents.
    pub fn write(&self, relative: &str, content: &str) {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new("/"))).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// Writes each `(file, content)` into `dir` (under the host's root).
    pub fn write_all(&self, dir: &str, files: &[(&str, &str)]) {
        for (name, content) in files {
            self.write(&format!("{dir}/{name}"), content);
        }
    }
}
