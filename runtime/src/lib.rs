//! OCI bundle → running process, in-process on youki's `libcontainer`, or through an OCI
//! runtime binary (runc, crun: [`BinaryRuntime`]); both are [`OciRuntime`]s.
//!
//! [`Runtime`] creates, starts, signals, execs into and deletes containers; a bundle annotated
//! as a pod sandbox ([`CONTAINER_TYPE`] = [`SANDBOX`]) runs the built-in pause workload
//! instead of an exec. It knows nothing of CRI or gRPC; its caller is the per-container shim, which must know these facts:
//!
//! - **Parentage.** A container's init and every exec'd process are children of the calling
//!   process (libcontainer clones them with `CLONE_PARENT` from an intermediate child), so the
//!   caller reaps them with `waitpid`. Each leads its own session and process group.
//! - **Reaping.** `create` and `exec` fork an intermediate child and reap it by pid. Do not
//!   reap with `waitpid(-1)` while they run, and keep the status of any pid reaped before it
//!   is known (a short-lived exec can exit before `exec` returns). When they fail, their
//!   children are left for the caller to reap. Reap everything: a zombie exec'd process in the
//!   container's pid namespace keeps the container's init from finishing its exit.
//! - **One thread.** libcontainer `chdir`s the whole process while it binds/connects its
//!   start sockets, and forks with a raw `clone3` (no `pthread_atfork` handlers), after which
//!   the child allocates: a lock held by another thread at that instant (malloc's, a logger's)
//!   stays locked in the child forever. Call from a single-threaded process, or at least with
//!   no other thread running Rust/libc code, and never two calls at once.
//! - **Side effects on the caller.** libcontainer marks the caller non-dumpable (prctl) during
//!   `create`/`exec` and leaves it so. It also writes the container's `oomScoreAdj` into the
//!   caller; this crate puts the caller's own score back.
//! - **Logging.** libcontainer's children log through the caller's `tracing` subscriber, after
//!   they have put the container's stdio on fds 0-2: a subscriber writing to stderr would write
//!   into the container's output. Log to a file.
//! - **The bundle.** `create` resolves every mount destination inside the rootfs and makes the
//!   mount points and the working directory there, as runc does (libcontainer does not), and
//!   hands libcontainer `<bundle>/resolved/config.json`, the spec with the resolved
//!   destinations, when a destination went through a symlink (else the caller's own). The
//!   caller's config.json stays as written; `resolved/` goes with the bundle.
//! - **Pid reuse.** Once init is reaped its pid may go to another process. This crate records
//!   init's start time at `create` and treats a pid held by another process as a stopped
//!   container: it is never signalled or exec'd into.
//!
//! Limits of libcontainer 0.7 that a spec builder must work around:
//!
//! - **Cgroups.** libcgroups picks v1 on a hybrid host (v1 controllers plus a cgroup2 mount at
//!   /sys/fs/cgroup/unified); a spec asking for a controller the host lacks fails `create`
//!   (e.g. hugepage limits when hugetlb lives only in the cgroup2 mount).
//! - **`noNewPrivileges: false` with seccomp.** libcontainer installs the filter before
//!   dropping capabilities only when the field is *absent*; an explicit `false` installs it
//!   after, which fails ("failed to load seccomp context") unless the process keeps
//!   CAP_SYS_ADMIN. Omit the field instead of writing `false` (same meaning in OCI).
//! - **Exec and seccomp.** libcontainer gives an exec'd process the container's namespaces and
//!   cgroup but not its seccomp filter; this crate loads the filter itself (see
//!   [`Runtime::exec`] for the `no_new_privs` this implies). AppArmor is not inherited either.

mod binary;
mod bundle;
mod console;
mod cwd;
mod error;
mod exec_executor;
mod executable;
mod in_root;
mod init_identity;
mod mountpoint;
mod oci;
mod oom_score;
mod pause;
mod runtime;
mod state;
mod stdio;

pub use binary::BinaryRuntime;
pub use error::{RuntimeError, Step};
pub use nix::sys::signal::Signal;
pub use nix::unistd::Pid;
pub use oci::OciRuntime;
pub use oci_spec;
pub use pause::{CONTAINER_TYPE, SANDBOX};
pub use runtime::Runtime;
pub use state::{ContainerState, ContainerStatus};
pub use stdio::Stdio;
