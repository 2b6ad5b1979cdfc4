//! A pod's network, IPC and UTS namespaces, pinned by bind mounts as CRI-O's
//! pinns does, but without a process: a throwaway thread unshares them (these
//! three kinds are per-thread), and the binds keep them alive after it exits.
//!
//! Any directory will do for the pins. A mount namespace copied from ours (a
//! container's, until its pivot_root drops the copy) holds a copy of each pin;
//! `unpin` unlinks the pin file, and the kernel (since 3.18) then detaches the
//! copies in every namespace, so no copy keeps a pod's namespaces alive.
//!
//! Every call here blocks on syscalls; call it from `spawn_blocking` in async code.
//!
//! The daemon pins through the [`NamespacePinner`] seam: [`HostNamespaces`]
//! is the real one (the functions of this module); unit tests use
//! `fake::FakeNamespaces`.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

use crate::error::CriError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceKind {
    Net,
    Ipc,
    Uts,
}

impl NamespaceKind {
    pub const ALL: [NamespaceKind; 3] =
        [NamespaceKind::Net, NamespaceKind::Ipc, NamespaceKind::Uts];

    /// The name under /proc/<pid>/ns/, also the pin's file name.
    pub fn name(self) -> &'static str {
        match self {
            NamespaceKind::Net => "net",
            NamespaceKind::Ipc => "ipc",
            NamespaceKind::Uts => "uts",
        }
    }

    fn clone_flag(self) -> CloneFlags {
        match self {
            NamespaceKind::Net => CloneFlags::CLONE_NEWNET,
            NamespaceKind::Ipc => CloneFlags::CLONE_NEWIPC,
            NamespaceKind::Uts => CloneFlags::CLONE_NEWUTS,
        }
    }
}

/// Which namespaces a pod gets of its own; the others it shares with the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NamespaceKinds {
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
}

impl NamespaceKinds {
    pub const ALL: NamespaceKinds = NamespaceKinds {
        net: true,
        ipc: true,
        uts: true,
    };

    pub fn contains(self, kind: NamespaceKind) -> bool {
        match kind {
            NamespaceKind::Net => self.net,
            NamespaceKind::Ipc => self.ipc,
            NamespaceKind::Uts => self.uts,
        }
    }

    fn iter(self) -> impl Iterator<Item = NamespaceKind> {
        NamespaceKind::ALL
            .into_iter()
            .filter(move |k| self.contains(*k))
    }
}

/// Where each pinned namespace is; `None` for a kind shared with the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinnedNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
}

impl PinnedNamespaces {
    pub fn get(&self, kind: NamespaceKind) -> Option<&Path> {
        match kind {
            NamespaceKind::Net => self.net.as_deref(),
            NamespaceKind::Ipc => self.ipc.as_deref(),
            NamespaceKind::Uts => self.uts.as_deref(),
        }
    }

    fn set(&mut self, kind: NamespaceKind, path: PathBuf) {
        match kind {
            NamespaceKind::Net => self.net = Some(path),
            NamespaceKind::Ipc => self.ipc = Some(path),
            NamespaceKind::Uts => self.uts = Some(path),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{op}: {source}")]
    Sys { op: &'static str, source: Errno },
    #[error("{0} is already pinned")]
    AlreadyPinned(PathBuf),
    #[error("the namespace thread panicked")]
    ThreadPanicked,
    /// A failure a test injected through `fake::FakeNamespaces`.
    #[cfg(test)]
    #[error("injected failure at pinning the {0} namespace")]
    Injected(&'static str),
}

/// The namespace pinning seam: makes a pod's own namespaces and keeps them
/// alive under a directory of the state dir, and releases them. Blocking.
pub trait NamespacePinner: Send + Sync + fmt::Debug {
    /// New namespaces of the asked kinds pinned at `<dir>/<kind>` (see
    /// [`pin`]): where each is. All or nothing: on error nothing of this call
    /// is left behind. Errors: `AlreadyPinned`, a syscall or mount failing.
    fn pin(
        &self,
        dir: &Path,
        kinds: NamespaceKinds,
        hostname: Option<&str>,
    ) -> Result<PinnedNamespaces, NsError>;

    /// Releases every pin under `dir` and `dir` itself (see [`unpin`]).
    /// Idempotent: what is already gone is fine. Errors: an unmount or
    /// removal failing, named.
    fn unpin(&self, dir: &Path) -> Result<(), NsError>;
}

/// The real pinner: bind mounts of new namespaces on this host (needs root).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostNamespaces;

impl NamespacePinner for HostNamespaces {
    fn pin(
        &self,
        dir: &Path,
        kinds: NamespaceKinds,
        hostname: Option<&str>,
    ) -> Result<PinnedNamespaces, NsError> {
        pin(dir, kinds, hostname)
    }

    fn unpin(&self, dir: &Path) -> Result<(), NsError> {
        unpin(dir)
    }
}

/// The one mapping of namespace errors to CRI codes: pinning, entering and
/// unpinning a pod's namespaces fail only through the host (a syscall, a
/// mount, a pin left behind by a crash), never through the request, so every
/// variant is Internal with the cause chain (op and path named).
impl From<NsError> for CriError {
    fn from(e: NsError) -> CriError {
        CriError::Internal(anyhow::Error::new(e).context("pod namespaces"))
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> NsError + 'a {
    move |source| NsError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn sys_err(op: &'static str) -> impl FnOnce(Errno) -> NsError {
    move |source| NsError::Sys { op, source }
}

/// Creates new namespaces of the asked kinds and bind-mounts each onto
/// `<dir>/<kind>`. The hostname, if given, is set in the new UTS namespace; the
/// new network namespace has `lo` up and no other link. On error nothing of
/// this call is left behind.
pub fn pin(
    dir: &Path,
    kinds: NamespaceKinds,
    hostname: Option<&str>,
) -> Result<PinnedNamespaces, NsError> {
    for kind in kinds.iter() {
        let target = dir.join(kind.name());
        if target.exists() {
            return Err(NsError::AlreadyPinned(target));
        }
    }
    let created_dir = !dir.exists();
    fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let mut pinned = PinnedNamespaces::default();
    let result = std::thread::scope(|s| {
        s.spawn(|| pin_in_this_thread(dir, kinds, hostname, &mut pinned))
            .join()
            .unwrap_or(Err(NsError::ThreadPanicked))
    });
    match result {
        Ok(()) => Ok(pinned),
        Err(e) => {
            // Undo only what this call made: a racing pin of the same dir keeps its own.
            for kind in NamespaceKind::ALL {
                if let Some(path) = pinned.get(kind) {
                    if let Err(undo) = remove_pin(path) {
                        tracing::warn!(error = %undo, "undoing a failed pin");
                    }
                }
            }
            if created_dir {
                let _ = fs::remove_dir(dir);
            }
            Err(e)
        }
    }
}

/// Runs in a thread of its own, which leaves the host's namespaces for good.
/// Every pin it creates is recorded in `pinned` before it is mounted, so the
/// caller can undo a half-done job.
fn pin_in_this_thread(
    dir: &Path,
    kinds: NamespaceKinds,
    hostname: Option<&str>,
    pinned: &mut PinnedNamespaces,
) -> Result<(), NsError> {
    let flags = kinds
        .iter()
        .fold(CloneFlags::empty(), |f, k| f | k.clone_flag());
    unshare(flags).map_err(sys_err("unshare"))?;
    if let (true, Some(name)) = (kinds.uts, hostname) {
        nix::unistd::sethostname(name).map_err(sys_err("sethostname"))?;
    }
    if kinds.net {
        bring_loopback_up()?;
    }
    for kind in kinds.iter() {
        let target = dir.join(kind.name());
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => NsError::AlreadyPinned(target.clone()),
                _ => NsError::Io {
                    op: "creating",
                    path: target.clone(),
                    source: e,
                },
            })?;
        pinned.set(kind, target.clone());
        let source = format!("/proc/thread-self/ns/{}", kind.name());
        mount(
            Some(source.as_str()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys_err("bind-mounting a namespace"))?;
    }
    Ok(())
}

/// Sets IFF_UP on `lo` of the calling thread's network namespace: a socket
/// belongs to the namespace it was created in.
fn bring_loopback_up() -> Result<(), NsError> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(sys_err("socket for lo"))?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: both ioctls read and write only `req`, which outlives them.
    let got = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    Errno::result(got).map_err(sys_err("SIOCGIFFLAGS lo"))?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    let set = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
    Errno::result(set).map_err(sys_err("SIOCSIFFLAGS lo"))?;
    Ok(())
}

/// Unmounts and removes the pins under `dir`, and `dir` itself. Idempotent:
/// what is already gone is fine.
pub fn unpin(dir: &Path) -> Result<(), NsError> {
    for kind in NamespaceKind::ALL {
        remove_pin(&dir.join(kind.name()))?;
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", dir)(e)),
        _ => Ok(()),
    }
}

fn remove_pin(path: &Path) -> Result<(), NsError> {
    // A pin mounted twice over (a crash between two attempts) needs two unmounts.
    loop {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => break,
            Err(e) => return Err(sys_err("unmounting a namespace pin")(e)),
        }
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", path)(e)),
        _ => Ok(()),
    }
}

/// Runs `f` on a thread that has joined the network namespace pinned at
/// `netns`. Sockets made in `f` stay in that namespace wherever they are used
/// afterwards (a port-forward's connection, a test's probe).
pub fn in_netns<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> Result<T, NsError> {
    let file = File::open(netns).map_err(io_err("opening", netns))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(sys_err("setns net"))?;
            Ok(f())
        })
        .join()
        .unwrap_or(Err(NsError::ThreadPanicked))
    })
}

/// A [`NamespacePinner`] for unit tests: no syscalls, no root. A pin is a
/// plain file at `<dir>/<kind>`; every pin and unpin is logged; pinning a
/// chosen kind can be made to fail (undoing that call's earlier pins, as the
/// real one does).
#[cfg(test)]
pub mod fake {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    use super::*;

    /// One pin or unpin the fake saw: the pin's path.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum NsCall {
        Pin(PathBuf),
        Unpin(PathBuf),
    }

    #[derive(Debug, Default)]
    pub struct FakeNamespaces {
        fail: Mutex<Option<NamespaceKind>>,
        calls: Mutex<Vec<NsCall>>,
        pinned: Mutex<BTreeSet<PathBuf>>,
    }

    impl FakeNamespaces {
        /// Makes every later pin of `kind` fail (`None`: none fails).
        pub fn fail_at(&self, kind: Option<NamespaceKind>) {
            *self.fail.lock().unwrap() = kind;
        }

        /// Every pin and unpin so far, in order.
        pub fn calls(&self) -> Vec<NsCall> {
            self.calls.lock().unwrap().clone()
        }

        /// The pins held now.
        pub fn pinned(&self) -> Vec<PathBuf> {
            self.pinned.lock().unwrap().iter().cloned().collect()
        }

        fn remove_pin(&self, path: &Path) -> Result<(), NsError> {
            if self.pinned.lock().unwrap().remove(path) {
                self.calls.lock().unwrap().push(NsCall::Unpin(path.into()));
            }
            match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", path)(e)),
                _ => Ok(()),
            }
        }
    }

    impl NamespacePinner for FakeNamespaces {
        fn pin(
            &self,
            dir: &Path,
            kinds: NamespaceKinds,
            _hostname: Option<&str>,
        ) -> Result<PinnedNamespaces, NsError> {
            fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
            let mut pinned = PinnedNamespaces::default();
            for kind in kinds.iter() {
                let target = dir.join(kind.name());
                if *self.fail.lock().unwrap() == Some(kind) {
                    for made in NamespaceKind::ALL.iter().filter_map(|k| pinned.get(*k)) {
                        self.remove_pin(made)?;
                    }
                    return Err(NsError::Injected(kind.name()));
                }
                File::create(&target).map_err(io_err("creating", &target))?;
                self.pinned.lock().unwrap().insert(target.clone());
                self.calls.lock().unwrap().push(NsCall::Pin(target.clone()));
                pinned.set(kind, target);
            }
            Ok(pinned)
        }

        fn unpin(&self, dir: &Path) -> Result<(), NsError> {
            for kind in NamespaceKind::ALL {
                self.remove_pin(&dir.join(kind.name()))?;
            }
            match fs::remove_dir(dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", dir)(e)),
                _ => Ok(()),
            }
        }
    }

    #[test]
    fn the_fake_pins_logs_and_fails_on_demand() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ns");
        let fake = FakeNamespaces::default();
        fake.fail_at(Some(NamespaceKind::Uts));
        let err = fake.pin(&dir, NamespaceKinds::ALL, None).unwrap_err();
        assert!(err.to_string().contains("uts"), "{err}");
        // Net and IPC were pinned, then undone.
        assert!(fake.pinned().is_empty());
        assert_eq!(fake.calls().len(), 4);
        fake.fail_at(None);
        let pinned = fake.pin(&dir, NamespaceKinds::ALL, None).unwrap();
        assert_eq!(pinned.net.as_deref(), Some(dir.join("net").as_path()));
        assert_eq!(fake.pinned().len(), 3);
        fake.unpin(&dir).unwrap();
        fake.unpin(&dir).unwrap();
        assert!(fake.pinned().is_empty() && !dir.exists());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        eprintln!("skipping: pinning namespaces needs root");
        false
    }

    fn mount_points() -> Vec<PathBuf> {
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .map(|l| PathBuf::from(l.split(' ').nth(4).unwrap()))
            .collect()
    }

    /// The links of the calling thread's network namespace: /proc/thread-self/net
    /// follows the thread's namespace, unlike /sys/class/net.
    fn link_names() -> Vec<String> {
        fs::read_to_string("/proc/thread-self/net/dev")
            .unwrap()
            .lines()
            .skip(2)
            .map(|l| l.split(':').next().unwrap().trim().to_string())
            .collect()
    }

    #[test]
    fn kinds_select_clone_flags() {
        let only_net = NamespaceKinds {
            net: true,
            ..Default::default()
        };
        assert_eq!(only_net.iter().collect::<Vec<_>>(), [NamespaceKind::Net]);
        assert_eq!(NamespaceKinds::ALL.iter().count(), 3);
        assert_eq!(NamespaceKind::Uts.name(), "uts");
    }

    #[test]
    fn pin_makes_bound_namespaces_and_unpin_removes_them() {
        if !is_root() {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("pod1");
        let pinned = pin(&dir, NamespaceKinds::ALL, Some("pod-host")).unwrap();
        let mounts = mount_points();
        for kind in NamespaceKind::ALL {
            let path = pinned.get(kind).unwrap();
            assert_eq!(path, dir.join(kind.name()));
            assert!(mounts.contains(&path.to_path_buf()), "{path:?} not mounted");
            let fs_type = nix::sys::statfs::statfs(path).unwrap().filesystem_type();
            assert_eq!(fs_type, nix::sys::statfs::NSFS_MAGIC);
        }
        // The pinned namespaces are new ones, not ours.
        for kind in NamespaceKind::ALL {
            let ours = fs::metadata(format!("/proc/self/ns/{}", kind.name())).unwrap();
            let pin = fs::metadata(pinned.get(kind).unwrap()).unwrap();
            use std::os::unix::fs::MetadataExt;
            assert_ne!(ours.ino(), pin.ino(), "{kind:?}");
        }

        let (names, lo_flags) = in_netns(pinned.net.as_deref().unwrap(), || {
            (link_names(), loopback_flags())
        })
        .unwrap();
        assert_eq!(names, ["lo"]);
        assert_ne!(lo_flags & libc::IFF_UP, 0, "lo is not up");

        let uts = File::open(pinned.uts.as_deref().unwrap()).unwrap();
        let hostname = std::thread::scope(|s| {
            s.spawn(|| {
                setns(&uts, CloneFlags::CLONE_NEWUTS).unwrap();
                nix::unistd::gethostname().unwrap()
            })
            .join()
            .unwrap()
        });
        assert_eq!(hostname, "pod-host");
        assert_ne!(nix::unistd::gethostname().unwrap(), "pod-host");

        unpin(&dir).unwrap();
        let mounts = mount_points();
        assert!(!mounts.iter().any(|m| m.starts_with(&dir)), "{mounts:?}");
        assert!(!dir.exists());
        unpin(&dir).unwrap();
    }

    fn loopback_flags() -> libc::c_int {
        let sock = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
        assert_eq!(rc, 0);
        unsafe { req.ifr_ifru.ifru_flags as libc::c_int }
    }

    #[test]
    fn pin_of_some_kinds_only_and_refusal_of_a_second_pin() {
        if !is_root() {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("pod2");
        let only_net = NamespaceKinds {
            net: true,
            ..Default::default()
        };
        let pinned = pin(&dir, only_net, Some("ignored")).unwrap();
        assert!(pinned.ipc.is_none() && pinned.uts.is_none());
        assert!(!dir.join("uts").exists());
        let again = pin(&dir, only_net, None).unwrap_err();
        assert!(matches!(again, NsError::AlreadyPinned(_)), "{again}");
        // The refused call left the first pin alone.
        assert!(mount_points().contains(&dir.join("net")));
        unpin(&dir).unwrap();
        assert!(!dir.exists());
    }

    #[test]
    fn failed_pin_leaves_nothing_behind() {
        if !is_root() {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("pod3");
        // A hostname longer than the kernel's 64 bytes fails after unshare.
        let err = pin(&dir, NamespaceKinds::ALL, Some(&"h".repeat(65))).unwrap_err();
        assert!(err.to_string().contains("sethostname"), "{err}");
        assert!(!dir.exists());
        assert!(!mount_points().iter().any(|m| m.starts_with(&dir)));
    }

    #[test]
    fn unpin_reaches_copies_in_other_mount_namespaces() {
        if !is_root() {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("pod4");
        let only_ipc = NamespaceKinds {
            ipc: true,
            ..Default::default()
        };
        pin(&dir, only_ipc, None).unwrap();
        let pin_path = dir.join("ipc");
        let (to_copy, copy_rx) = std::sync::mpsc::channel::<()>();
        let (from_copy, copy_says) = std::sync::mpsc::channel::<bool>();
        let copy_sees_pin = |path: &Path| {
            fs::read_to_string("/proc/thread-self/mountinfo")
                .unwrap()
                .lines()
                .any(|l| Path::new(l.split(' ').nth(4).unwrap()) == path)
        };
        std::thread::scope(|s| {
            s.spawn(move || {
                // A copy of our mount namespace, as a container's starts out.
                unshare(CloneFlags::CLONE_NEWNS).unwrap();
                from_copy.send(copy_sees_pin(&pin_path)).unwrap();
                copy_rx.recv().unwrap();
                from_copy.send(copy_sees_pin(&pin_path)).unwrap();
            });
            assert!(copy_says.recv().unwrap(), "the copy lacks the pin");
            unpin(&dir).unwrap();
            to_copy.send(()).unwrap();
            assert!(!copy_says.recv().unwrap(), "the copy still holds the pin");
        });
    }
}

#[cfg(test)]
mod error_tests {
    use super::*;
    use tonic::{Code, Status};

    #[test]
    fn every_namespace_error_is_internal_naming_what_failed() {
        for (e, named) in [
            (
                NsError::Io {
                    op: "bind-mounting",
                    path: "/run/crius/pods/p1/ns/net".into(),
                    source: io::Error::from_raw_os_error(libc::EPERM),
                },
                "/run/crius/pods/p1/ns/net",
            ),
            (
                NsError::Sys {
                    op: "unshare",
                    source: Errno::EPERM,
                },
                "unshare",
            ),
            (
                NsError::AlreadyPinned("/run/crius/pods/p1/ns/ipc".into()),
                "/run/crius/pods/p1/ns/ipc",
            ),
            (NsError::ThreadPanicked, "panicked"),
        ] {
            let s: Status = CriError::from(e).into();
            assert_eq!(s.code(), Code::Internal);
            assert!(
                s.message().starts_with("pod namespaces: "),
                "{}",
                s.message()
            );
            assert!(s.message().contains(named), "{}", s.message());
        }
    }
}
