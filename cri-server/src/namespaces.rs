//! A pod's network, IPC and UTS namespaces, pinned by bind mounts as CRI-O's
//! pinns does, but without a process: a throwaway thread unshares them (these
//! three kinds are per-thread), and the binds keep them alive after it exits.
//!
//! Any directory will do for the pins. A mount namespace copied from ours (a
//! container's, until its pivot_root drops the copy) holds a copy of each pin;
//! `unpin` unlinks the pin file, and the kernel (since 3.18) then detaches the
//! copies in every namespace, so no copy keeps a pod's namespaces alive.
//!
//! A pod with a user namespace of its own (KEP-127) gets it from a forked
//! child instead: a multithreaded process may neither unshare nor join a
//! user namespace, and the namespaces made in the same `unshare` call as
//! the user namespace are owned by it. The child reports back, the parent
//! writes its ID maps and pins all four, then the child exits.
//!
//! Every call here blocks on syscalls; call it from `spawn_blocking` in async code.
//!
//! The daemon pins through the [`NamespacePinner`] seam: [`HostNamespaces`]
//! is the real one (the functions of this module); unit tests use
//! `fake::FakeNamespaces`.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

use crate::error::CriError;
use crate::state::sandbox::{IdMapping, UserMappings};

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
/// `user`, when pinned, owns the other three.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinnedNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    pub user: Option<PathBuf>,
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
    #[error("the user namespace's child process ended before it made the namespaces")]
    ChildGone,
    /// A failure a test injected through `fake::FakeNamespaces`.
    #[cfg(test)]
    #[error("injected failure at pinning the {0} namespace")]
    Injected(&'static str),
}

/// The namespace pinning seam: makes a pod's own namespaces and keeps them
/// alive under a directory of the state dir, and releases them. Blocking.
pub trait NamespacePinner: Send + Sync + fmt::Debug {
    /// New namespaces of the asked kinds pinned at `<dir>/<kind>` (see
    /// [`pin`]), inside a new user namespace with `user`'s ID maps pinned
    /// at `<dir>/user` when given: where each is. All or nothing: on error
    /// nothing of this call is left behind. Errors: `AlreadyPinned`, a
    /// syscall or mount failing.
    fn pin(
        &self,
        dir: &Path,
        kinds: NamespaceKinds,
        hostname: Option<&str>,
        user: Option<&UserMappings>,
    ) -> Result<PinnedNamespaces, NsError>;

    /// Pins the PID namespace of process `pid` at `<dir>/pid` (see
    /// [`pin_pid`]): where it is. Errors: `AlreadyPinned`, the mount failing.
    fn pin_pid(&self, dir: &Path, pid: u32) -> Result<PathBuf, NsError>;

    /// SIGKILLs process `pid` if its PID namespace is the one pinned at
    /// `pin` (see [`kill_pinned_pid`]): whether it was. Errors: the checks'
    /// syscalls failing other than for a process that is gone.
    fn kill_pinned_pid(&self, pin: &Path, pid: u32) -> Result<bool, NsError>;

    /// Releases every pin under `dir` (the PID and user ones too) and `dir` itself
    /// (see [`unpin`]). Idempotent: what is already gone is fine. Errors: an
    /// unmount or removal failing, named.
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
        user: Option<&UserMappings>,
    ) -> Result<PinnedNamespaces, NsError> {
        pin(dir, kinds, hostname, user)
    }

    fn pin_pid(&self, dir: &Path, pid: u32) -> Result<PathBuf, NsError> {
        pin_pid(dir, pid)
    }

    fn kill_pinned_pid(&self, pin: &Path, pid: u32) -> Result<bool, NsError> {
        kill_pinned_pid(pin, pid)
    }

    fn unpin(&self, dir: &Path) -> Result<(), NsError> {
        unpin(dir)
    }
}

/// The file name of a pod's pinned PID namespace in its pins' dir.
const PID_PIN: &str = "pid";

/// The file name of a pod's pinned user namespace in its pins' dir.
const USER_PIN: &str = "user";

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
/// new network namespace has `lo` up and no other link. With `user`, they
/// are made inside a new user namespace with those ID maps, pinned at
/// `<dir>/user`. On error nothing of this call is left behind.
pub fn pin(
    dir: &Path,
    kinds: NamespaceKinds,
    hostname: Option<&str>,
    user: Option<&UserMappings>,
) -> Result<PinnedNamespaces, NsError> {
    let user_pin = user.map(|_| dir.join(USER_PIN));
    for target in kinds.iter().map(|k| dir.join(k.name())).chain(user_pin) {
        if target.exists() {
            return Err(NsError::AlreadyPinned(target));
        }
    }
    let created_dir = !dir.exists();
    fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let mut pinned = PinnedNamespaces::default();
    let result = match user {
        Some(maps) => pin_in_user_namespace(dir, kinds, hostname, maps, &mut pinned),
        None => std::thread::scope(|s| {
            s.spawn(|| pin_in_this_thread(dir, kinds, hostname, &mut pinned))
                .join()
                .unwrap_or(Err(NsError::ThreadPanicked))
        }),
    };
    match result {
        Ok(()) => Ok(pinned),
        Err(e) => {
            // Undo only what this call made: a racing pin of the same dir keeps its own.
            let made = NamespaceKind::ALL.iter().filter_map(|k| pinned.get(*k));
            for path in made.chain(pinned.user.as_deref()) {
                if let Err(undo) = remove_pin(path) {
                    tracing::warn!(error = %undo, "undoing a failed pin");
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
        create_pin_file(&target)?;
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

/// What the user namespace's child reports through its pipe: the step that
/// failed and its errno, or success.
const CHILD_OK: u8 = 0;
const CHILD_UNSHARE: u8 = 1;
const CHILD_SETHOSTNAME: u8 = 2;
const CHILD_LOOPBACK: u8 = 3;

/// Forks a child that unshares a user namespace together with the asked
/// kinds (so that it owns them), sets the hostname and brings `lo` up, then
/// waits; writes the child's ID maps, pins its namespaces, and ends it.
/// Every pin is recorded in `pinned` before it is mounted.
fn pin_in_user_namespace(
    dir: &Path,
    kinds: NamespaceKinds,
    hostname: Option<&str>,
    maps: &UserMappings,
    pinned: &mut PinnedNamespaces,
) -> Result<(), NsError> {
    let flags = kinds
        .iter()
        .fold(CloneFlags::CLONE_NEWUSER, |f, k| f | k.clone_flag());
    let hostname = hostname.filter(|_| kinds.uts);
    let (report_rx, report_tx) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys_err("pipe"))?;
    let (release_rx, release_tx) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys_err("pipe"))?;
    // SAFETY: the child runs only async-signal-safe syscalls (close,
    // unshare, sethostname, socket, ioctl, write, read) on data made before
    // the fork, allocates nothing, and leaves by _exit.
    match unsafe { nix::unistd::fork() }.map_err(sys_err("fork"))? {
        nix::unistd::ForkResult::Child => {
            drop(report_rx);
            drop(release_tx);
            let (step, errno) = make_namespaces_in_child(flags, hostname, kinds.net);
            let mut report = [step, 0, 0, 0, 0];
            report[1..].copy_from_slice(&(errno as i32).to_ne_bytes());
            let _ = nix::unistd::write(&report_tx, &report);
            if step == CHILD_OK {
                // Returns at EOF: the parent closed its end (or died).
                let _ = nix::unistd::read(release_rx.as_raw_fd(), &mut [0u8; 1]);
            }
            // SAFETY: _exit ends the child without running the parent's
            // atexit handlers or destructors.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(report_tx);
            drop(release_rx);
            let result = pin_child_namespaces(dir, kinds, maps, child, &report_rx, pinned);
            drop(release_tx);
            // A child that failed or lost its parent's end exits by itself;
            // the kill covers one still blocked for any other reason.
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(child, None);
            result
        }
    }
}

/// In the forked child: the namespaces, the hostname and `lo`: the failed
/// step and its errno, or `(CHILD_OK, 0)`.
fn make_namespaces_in_child(flags: CloneFlags, hostname: Option<&str>, net: bool) -> (u8, Errno) {
    if let Err(e) = unshare(flags) {
        return (CHILD_UNSHARE, e);
    }
    if let Some(name) = hostname {
        if let Err(e) = nix::unistd::sethostname(name) {
            return (CHILD_SETHOSTNAME, e);
        }
    }
    if net {
        if let Err(NsError::Sys { source, .. }) = bring_loopback_up() {
            return (CHILD_LOOPBACK, source);
        }
    }
    (CHILD_OK, Errno::UnknownErrno)
}

/// In the parent: waits for the child's report, writes its ID maps and
/// bind-mounts its user namespace and the asked kinds.
fn pin_child_namespaces(
    dir: &Path,
    kinds: NamespaceKinds,
    maps: &UserMappings,
    child: nix::unistd::Pid,
    report_rx: &OwnedFd,
    pinned: &mut PinnedNamespaces,
) -> Result<(), NsError> {
    let mut report = [0u8; 5];
    let mut got = 0;
    while got < report.len() {
        match nix::unistd::read(report_rx.as_raw_fd(), &mut report[got..]) {
            Ok(0) => return Err(NsError::ChildGone),
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(sys_err("reading the child's report")(e)),
        }
    }
    let errno = Errno::from_raw(i32::from_ne_bytes([
        report[1], report[2], report[3], report[4],
    ]));
    match report[0] {
        CHILD_OK => {}
        CHILD_UNSHARE => return Err(sys_err("unshare")(errno)),
        CHILD_SETHOSTNAME => return Err(sys_err("sethostname")(errno)),
        _ => return Err(sys_err("bringing lo up")(errno)),
    }
    for (file, map) in [("uid_map", maps.uids), ("gid_map", maps.gids)] {
        let path = PathBuf::from(format!("/proc/{child}/{file}"));
        fs::write(&path, id_map_line(&map)).map_err(io_err("writing", &path))?;
    }
    let user = dir.join(USER_PIN);
    create_pin_file(&user)?;
    pinned.user = Some(user.clone());
    bind_namespace(&format!("/proc/{child}/ns/user"), &user)?;
    for kind in kinds.iter() {
        let target = dir.join(kind.name());
        create_pin_file(&target)?;
        pinned.set(kind, target.clone());
        bind_namespace(&format!("/proc/{child}/ns/{}", kind.name()), &target)?;
    }
    Ok(())
}

/// One line of `/proc/<pid>/uid_map` (or `gid_map`): inside, outside, length.
fn id_map_line(map: &IdMapping) -> String {
    format!("{} {} {}\n", map.container_id, map.host_id, map.length)
}

fn bind_namespace(source: &str, target: &Path) -> Result<(), NsError> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(sys_err("bind-mounting a namespace"))
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

/// Bind-mounts `/proc/<pid>/ns/pid` onto `<dir>/pid`: the pod's shared PID
/// namespace, made by its pause process. Its containers join the pin, never
/// `/proc/<pid>`, which a later process may reuse once the pause process is
/// gone (joining a pinned namespace whose PID 1 died fails instead: the
/// kernel refuses new processes there). Call it while `pid` cannot be
/// reaped (created, not yet started). On error no pin is left.
pub fn pin_pid(dir: &Path, pid: u32) -> Result<PathBuf, NsError> {
    fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let target = dir.join(PID_PIN);
    create_pin_file(&target)?;
    let source = format!("/proc/{pid}/ns/pid");
    let bound = mount(
        Some(source.as_str()),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    );
    if let Err(e) = bound {
        remove_pin(&target)?;
        return Err(sys_err("bind-mounting the PID namespace")(e));
    }
    Ok(target)
}

/// SIGKILLs process `pid` when its PID namespace is the one pinned at `pin`:
/// true if it was signalled, false if it is gone or in another namespace
/// (the pid was reused) or the pin is gone. The process is held by a pidfd
/// across the check, so the signal reaches the process checked.
pub fn kill_pinned_pid(pin: &Path, pid: u32) -> Result<bool, NsError> {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return Ok(false);
    };
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = match Errno::result(fd) {
        Ok(fd) => fd as RawFd,
        Err(Errno::ESRCH) => return Ok(false),
        Err(e) => return Err(sys_err("pidfd_open")(e)),
    };
    // SAFETY: the syscall returned a new fd that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let ns = PathBuf::from(format!("/proc/{pid}/ns/pid"));
    let (pinned, current) = match (fs::metadata(pin), fs::metadata(&ns)) {
        (Ok(p), Ok(c)) => (p, c),
        (Err(e), _) | (_, Err(e)) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        (Err(e), _) => return Err(io_err("reading", pin)(e)),
        (_, Err(e)) => return Err(io_err("reading", &ns)(e)),
    };
    if (pinned.dev(), pinned.ino()) != (current.dev(), current.ino()) {
        return Ok(false);
    }
    // SAFETY: pidfd_send_signal takes the pidfd, a signal, a null siginfo
    // and flags 0.
    let sent = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    match Errno::result(sent) {
        Ok(_) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(e) => Err(sys_err("pidfd_send_signal")(e)),
    }
}

/// Creates the empty file a pin is mounted on. Errors: `AlreadyPinned` when
/// it exists (a pin is never mounted twice over).
fn create_pin_file(target: &Path) -> Result<(), NsError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .map(drop)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => NsError::AlreadyPinned(target.to_path_buf()),
            _ => NsError::Io {
                op: "creating",
                path: target.to_path_buf(),
                source: e,
            },
        })
}

/// Unmounts and removes the pins under `dir`, and `dir` itself. Idempotent:
/// what is already gone is fine.
pub fn unpin(dir: &Path) -> Result<(), NsError> {
    for kind in NamespaceKind::ALL {
        remove_pin(&dir.join(kind.name()))?;
    }
    remove_pin(&dir.join(PID_PIN))?;
    remove_pin(&dir.join(USER_PIN))?;
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
        /// A SIGKILL of the pid if it is in the namespace pinned there.
        Kill(PathBuf, u32),
    }

    #[derive(Debug, Default)]
    pub struct FakeNamespaces {
        fail: Mutex<Option<NamespaceKind>>,
        fail_pid: Mutex<bool>,
        calls: Mutex<Vec<NsCall>>,
        pinned: Mutex<BTreeSet<PathBuf>>,
    }

    impl FakeNamespaces {
        /// Makes every later pin of `kind` fail (`None`: none fails).
        pub fn fail_at(&self, kind: Option<NamespaceKind>) {
            *self.fail.lock().unwrap() = kind;
        }

        /// Makes every later PID namespace pin fail (or not).
        pub fn fail_pid_pin(&self, fail: bool) {
            *self.fail_pid.lock().unwrap() = fail;
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
            user: Option<&UserMappings>,
        ) -> Result<PinnedNamespaces, NsError> {
            fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
            let mut pinned = PinnedNamespaces::default();
            if user.is_some() {
                let target = dir.join(USER_PIN);
                File::create(&target).map_err(io_err("creating", &target))?;
                self.pinned.lock().unwrap().insert(target.clone());
                self.calls.lock().unwrap().push(NsCall::Pin(target.clone()));
                pinned.user = Some(target);
            }
            for kind in kinds.iter() {
                let target = dir.join(kind.name());
                if *self.fail.lock().unwrap() == Some(kind) {
                    let made = NamespaceKind::ALL.iter().filter_map(|k| pinned.get(*k));
                    for made in made.chain(pinned.user.as_deref()) {
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

        fn pin_pid(&self, dir: &Path, _pid: u32) -> Result<PathBuf, NsError> {
            fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
            let target = dir.join(PID_PIN);
            if *self.fail_pid.lock().unwrap() {
                return Err(NsError::Injected(PID_PIN));
            }
            File::create(&target).map_err(io_err("creating", &target))?;
            self.pinned.lock().unwrap().insert(target.clone());
            self.calls.lock().unwrap().push(NsCall::Pin(target.clone()));
            Ok(target)
        }

        fn kill_pinned_pid(&self, pin: &Path, pid: u32) -> Result<bool, NsError> {
            self.calls
                .lock()
                .unwrap()
                .push(NsCall::Kill(pin.into(), pid));
            Ok(self.pinned.lock().unwrap().contains(pin))
        }

        fn unpin(&self, dir: &Path) -> Result<(), NsError> {
            for kind in NamespaceKind::ALL {
                self.remove_pin(&dir.join(kind.name()))?;
            }
            self.remove_pin(&dir.join(PID_PIN))?;
            self.remove_pin(&dir.join(USER_PIN))?;
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
        let err = fake.pin(&dir, NamespaceKinds::ALL, None, None).unwrap_err();
        assert!(err.to_string().contains("uts"), "{err}");
        // Net and IPC were pinned, then undone.
        assert!(fake.pinned().is_empty());
        assert_eq!(fake.calls().len(), 4);
        fake.fail_at(None);
        let pinned = fake.pin(&dir, NamespaceKinds::ALL, None, None).unwrap();
        assert_eq!(pinned.net.as_deref(), Some(dir.join("net").as_path()));
        assert_eq!(pinned.user, None);
        assert_eq!(fake.pinned().len(), 3);
        fake.unpin(&dir).unwrap();
        assert!(fake.pinned().is_empty() && !dir.exists());
        let maps = UserMappings {
            uids: IdMapping {
                container_id: 0,
                host_id: 200000,
                length: 65536,
            },
            gids: IdMapping {
                container_id: 0,
                host_id: 200000,
                length: 65536,
            },
        };
        let pinned = fake
            .pin(&dir, NamespaceKinds::ALL, None, Some(&maps))
            .unwrap();
        assert_eq!(pinned.user.as_deref(), Some(dir.join("user").as_path()));
        assert_eq!(fake.pinned().len(), 4);
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
        let pinned = pin(&dir, NamespaceKinds::ALL, Some("pod-host"), None).unwrap();
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

    /// The user namespace has the asked maps and owns the pod's other
    /// namespaces; unpin releases it with them; a failure undoes it too.
    #[test]
    fn pin_in_a_user_namespace_owns_the_others_and_unpin_removes_it() {
        if !is_root() {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("pod6");
        let maps = UserMappings {
            uids: IdMapping {
                container_id: 0,
                host_id: 200000,
                length: 65536,
            },
            gids: IdMapping {
                container_id: 0,
                host_id: 300000,
                length: 1000,
            },
        };
        let pinned = pin(&dir, NamespaceKinds::ALL, Some("pod-host"), Some(&maps)).unwrap();
        let user = pinned.user.clone().unwrap();
        assert_eq!(user, dir.join("user"));
        let inside = |ns: &str, args: &[&str]| {
            let out = std::process::Command::new("nsenter")
                .arg(format!("--user={}", user.display()))
                .arg(format!("--{ns}={}", dir.join(ns).display()))
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        let words = |s: String| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            words(inside("uts", &["cat", "/proc/self/uid_map"])),
            ["0", "200000", "65536"]
        );
        assert_eq!(
            words(inside("uts", &["cat", "/proc/self/gid_map"])),
            ["0", "300000", "1000"]
        );
        assert_eq!(inside("uts", &["hostname"]).trim(), "pod-host");
        // NS_GET_USERNS: the owner of each namespace is the pinned one.
        let user_ino = fs::metadata(&user).unwrap().ino();
        for kind in NamespaceKind::ALL {
            let ns = File::open(pinned.get(kind).unwrap()).unwrap();
            let owner = unsafe { libc::ioctl(ns.as_raw_fd(), 0xb701) };
            assert!(owner >= 0, "NS_GET_USERNS {kind:?}");
            let owner = unsafe { File::from_raw_fd(owner) };
            assert_eq!(owner.metadata().unwrap().ino(), user_ino, "{kind:?}");
        }
        unpin(&dir).unwrap();
        assert!(!mount_points().iter().any(|m| m.starts_with(&dir)));
        assert!(!dir.exists());

        let err = pin(
            &dir,
            NamespaceKinds::ALL,
            Some(&"h".repeat(65)),
            Some(&maps),
        )
        .unwrap_err();
        assert!(err.to_string().contains("sethostname"), "{err}");
        assert!(!dir.exists());
        // The kernel refuses an empty range (the pod concern never asks one).
        let empty = UserMappings {
            uids: IdMapping {
                length: 0,
                ..maps.uids
            },
            ..maps
        };
        let err = pin(&dir, NamespaceKinds::ALL, None, Some(&empty)).unwrap_err();
        assert!(err.to_string().contains("uid_map"), "{err}");
        assert!(!dir.exists());
        assert!(!mount_points().iter().any(|m| m.starts_with(&dir)));
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
        let pinned = pin(&dir, only_net, Some("ignored"), None).unwrap();
        assert!(pinned.ipc.is_none() && pinned.uts.is_none());
        assert!(!dir.join("uts").exists());
        let again = pin(&dir, only_net, None, None).unwrap_err();
        assert!(matches!(again, NsError::AlreadyPinned(_)), "{again}");
        // The refused call left the first pin alone.
        assert!(mount_points().contains(&dir.join("net")));
        unpin(&dir).unwrap();
        assert!(!dir.exists());
    }

    /// The pin is the process's PID namespace and outlives the process;
    /// a pin of a process that does not exist leaves nothing.
    #[test]
    fn pin_pid_binds_the_process_pid_namespace_and_unpin_removes_it() {
        if !is_root() {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("pod5");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pin = pin_pid(&dir, child.id()).unwrap();
        assert_eq!(pin, dir.join("pid"));
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
        assert_eq!(inode(&pin), inode(Path::new("/proc/self/ns/pid")));
        // A file that is not the child's namespace spares it; the pin kills it.
        let other = root.path().join("not-a-namespace");
        fs::write(&other, "").unwrap();
        assert!(!kill_pinned_pid(&other, child.id()).unwrap());
        assert!(kill_pinned_pid(&pin, child.id()).unwrap());
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        assert!(!kill_pinned_pid(&pin, child.id()).unwrap(), "reaped: gone");
        assert!(
            mount_points().contains(&pin),
            "the pin outlives the process"
        );
        let again = pin_pid(&dir, std::process::id()).unwrap_err();
        assert!(matches!(again, NsError::AlreadyPinned(_)), "{again}");
        unpin(&dir).unwrap();
        assert!(!dir.exists());

        let err = pin_pid(&dir, u32::MAX).unwrap_err();
        assert!(err.to_string().contains("PID namespace"), "{err}");
        assert!(!dir.join("pid").exists());
        assert!(!mount_points().iter().any(|m| m.starts_with(&dir)));
    }

    #[test]
    fn failed_pin_leaves_nothing_behind() {
        if !is_root() {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("pod3");
        // A hostname longer than the kernel's 64 bytes fails after unshare.
        let err = pin(&dir, NamespaceKinds::ALL, Some(&"h".repeat(65)), None).unwrap_err();
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
        pin(&dir, only_ipc, None, None).unwrap();
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
