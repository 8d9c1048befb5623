//! `jail`: put one process inside container isolation -- the layers of a container around a
//! program that is not a container's workload. Written for VMMs (the seed's "QEMU is a process
//! too"), with no knowledge of any VMM.
//!
//! ```text
//! let mut jail = Jail::new(name);         // then: uid, gid, cgroup, rlimits, keep_fds, binds...
//! jail.cgroup = Some(CgroupPlan { .. });
//! let prepared = jail.prepare()?;          // checks input, forks the cgroup's reaper, creates the cgroup
//! let mut child = prepared.spawn(|inside| {
//!     // in the child: new pid/mount/ipc/uts/time namespaces, host filesystem still visible
//!     let vm = open_everything()?;          // files, devices, sockets: by path, as root
//!     let confined = inside.confine(&late_rlimits)?;   // see "Layers"
//!     run_threads_each_installing_its_seccomp_filter(vm, confined) // confined.complete()
//! })?;                                      // ...or: inside.exec(program_fd, argv, env, filter)
//! child.wait_ready()?;                      // every layer in force (or the child's error)
//! let code = child.wait()?;                 // signals -> SIGKILL, exit code, cgroup removed
//! ```
//!
//! # Layers, in the order the child takes them
//! 1. **namespaces** at clone3: pid (the child is pid 1 of its own), mount, ipc, uts, time.
//!    Network and cgroup come later, by unshare: a tap device must be opened in the host's
//!    network namespace, and the cgroup namespace's root must be the jail's cgroup.
//! 2. **cgroup**: `<parent>/<name>`, its memory / pids / cpu limits written before the child
//!    exists (the `cgroups` crate, so v1, v2 and hybrid hosts alike). On v2 clone3 places the
//!    child (CLONE_INTO_CGROUP); on v1 the child moves itself first thing, writing "0" to
//!    the `tasks` files the supervisor opened for it: a `cgroup.procs` write by pid would
//!    wait for an RCU grace period (5-12 ms here), a thread moving itself does not.
//! 3. **descriptors**: everything but stdio and [`Jail::keep_fds`] is closed first thing, so
//!    nothing of the supervisor's leaks in; what the child opens afterwards is its own.
//!
//!    The caller's setup runs here: opening files, devices and sockets by path, as root.
//! 4. **network namespace** (empty: only a down loopback), then the **root**: an empty tmpfs,
//!    read-only, nosuid, nodev, noexec, made the root with pivot_root (the container crate's
//!    [`container::rootfs::pivot_root_to`]); the old root is detached. Nothing of the host is
//!    reachable by path: whatever the process needs it opened before, and uses by descriptor.
//!    [`Jail::ro_binds`] adds read-only binds (a program to exec needs its loader and
//!    libraries); a VMM that shares host files with its guest (QEMU's 9p) also gets
//!    [`Jail::rw_binds`], a read-only view of the host's root ([`Jail::host_root`]) and the
//!    file capability it needs to serve them ([`Jail::keep_caps`]) and its own /proc
//!    ([`Jail::proc`]); one that opens a device
//!    by path after confinement (QEMU and /dev/kvm) gets a node of its own
//!    ([`Jail::devices`]).
//! 5. the child waits until the supervisor has placed it, then unshares the **cgroup
//!    namespace**, rooted at its cgroup.
//! 6. **rlimits** (the jail's, then the caller's late ones, e.g. NOFILE from the descriptors it
//!    actually opened: [`rlimits`]), **user**: every capability out of the bounding set,
//!    setgroups([]) + setresgid + setresuid to the unprivileged ids, then the other four
//!    capability sets cleared (all but [`Jail::keep_caps`], which are raised as ambient) ([`container::capabilities`], [`container::process::switch_user`]),
//!    **no_new_privs**, **non-dumpable** (no ptrace, no core, /proc/PID owned by root), the
//!    parent-death signal re-armed (the uid change clears it).
//! 7. **seccomp**: the caller's. A builtin VMM installs one filter per thread, each thread on
//!    itself before it does any work, then calls [`Confined::complete`]; the exec path installs
//!    one filter right before execve.
//!
//! # Decisions
//! - **A supervisor and a cloned child**, not "confine myself": a new pid namespace only
//!   applies to children, and someone outside the jail has to remove its cgroup and whatever
//!   the jailed process created by path (it can no longer reach any path). The supervisor is
//!   the process that called [`Prepared::spawn`]; the child gets SIGKILL when it dies
//!   (PR_SET_PDEATHSIG), and a reaper process forked by [`Jail::prepare`] removes the cgroup
//!   when the supervisor could not (see `reaper.rs`). The child is a clone3() copy of the caller, not a re-exec: whatever
//!   the caller computed is simply there, and a builtin VMM's child keeps running Rust code.
//! - **Signals**: the child is pid 1 of its namespace, which the kernel shields from every
//!   signal it has no handler for; the supervisor turns a terminating signal (INT, TERM,
//!   HUP, QUIT...) into SIGKILL for the child and reports 128+N, as the shell would.
//! - **Paths the jailed process still needs** are opened for it by the supervisor:
//!   [`broker`] passes descriptors over a socket (what libvirt does for QEMU), so the root can
//!   stay empty.
//! - **Reuse**: clone3, namespaces, pivot_root, capabilities, user switch, rlimits, the
//!   sync channel and the foreground signal loop are the container crate's; cgroups are the
//!   cgroups crate's; filters are compiled by the seccomp crate. This crate only orders them.
//! - **Only the cgroup hierarchies it limits** (memory, pids, cpu with a quota; plus cgroup v2
//!   if mounted): in a v1 cpu (or blkio) group of its own, a process on a loaded host gets one
//!   group's share instead of one share per thread. Measured on the shared 2-core machine:
//!   the test guest ran 3x slower in its own cpu group. No device cgroup: once confined the
//!   child can reach no device node anyway, and what it opens before is its own choice.
//! - **Not a user namespace**: the child keeps the host's user namespace and becomes an
//!   unprivileged uid with no capabilities. A user namespace would own the jail's other
//!   namespaces and give the process a full capability set inside it (dropped, but present),
//!   and would expose the kernel's userns-only code paths; the time namespace is the 7th
//!   private one instead (it costs nothing).

pub mod broker;
mod cgroup;
mod child;
mod fds;
pub mod namespaces;
mod privileges;
mod reaper;
pub mod rlimits;
mod root;
mod supervisor;

use std::os::fd::RawFd;
use std::path::PathBuf;

pub use cgroup::CgroupPlan;
pub use child::{Confined, Inside};
pub use supervisor::{Exit, Prepared, Running};

/// The unprivileged uid and gid a jail uses unless told otherwise. Outside the ranges Debian
/// hands out (adduser: up to 59999 and the 16-bit 65534/65535; useradd's subordinate ranges
/// start at 100000), so no account or file of the host has it.
pub const DEFAULT_ID: u32 = 77_777;

/// The parent cgroup of jails when the caller names none.
pub const DEFAULT_CGROUP_PARENT: &str = "/bulkhead";

/// What the confined process gets.
#[derive(Debug, Clone)]
pub struct Jail {
    /// The jail's name: its cgroup is `<parent>/<name>`.
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// The cgroup and its limits; `None`: the child stays in the caller's cgroups.
    pub cgroup: Option<CgroupPlan>,
    /// Set in the child before it drops its privileges (lowering only; a hard limit above the
    /// supervisor's cannot be granted).
    pub rlimits: Vec<oci::Rlimit>,
    /// Descriptors the child keeps besides 0, 1 and 2.
    pub keep_fds: Vec<RawFd>,
    /// Host paths bind-mounted read-only (nosuid, nodev, all the way down) at the same path
    /// in the empty root.
    pub ro_binds: Vec<PathBuf>,
    /// Host directories bind-mounted writable (nosuid, nodev) at the same path: what a VMM
    /// serves its guest for writing (QEMU's 9p export of a shared directory).
    pub rw_binds: Vec<PathBuf>,
    /// The host's root filesystem, read-only (nosuid, nodev, all the way down), at this path
    /// of the empty root, without the host's /proc, /sys, /dev, /run and /tmp: for a VMM
    /// that shares the host's files with its guest. It widens what the process can read to
    /// every host file its uid and capabilities allow; nothing of it is writable.
    pub host_root: Option<PathBuf>,
    /// Host character devices the process opens by path after confinement (QEMU opens
    /// /dev/kvm itself): each is made anew at the same path, in a tmpfs that is the only
    /// mount of the root allowing device nodes, owned by the jail's uid, mode 0600.
    pub devices: Vec<PathBuf>,
    /// A /proc of the jail's own pid namespace, read-only, showing only processes
    /// (`subset=pid`: nothing of the kernel's, no /proc/sys) and only those of the jail's
    /// uid (`hidepid=invisible`): for a program that names its own descriptors by path
    /// (QEMU's 9p server changes modes and extended attributes through /proc/self/fd/N).
    pub proc: bool,
    /// Capabilities kept (a bit per capability number) in every set, ambient included, so
    /// they survive the uid change and an exec; nothing else is kept. Empty for a VMM that
    /// opens its files as root before confinement; a VMM that serves host files to its
    /// guest by path afterwards may need `CAP_DAC_OVERRIDE`.
    pub keep_caps: u64,
}

impl Jail {
    /// A jail with the default ids, no cgroup, no rlimits, nothing kept, nothing bound, no
    /// device, no capability.
    pub fn new(name: impl Into<String>) -> Jail {
        Jail {
            name: name.into(),
            uid: DEFAULT_ID,
            gid: DEFAULT_ID,
            cgroup: None,
            rlimits: Vec::new(),
            keep_fds: Vec::new(),
            ro_binds: Vec::new(),
            rw_binds: Vec::new(),
            host_root: None,
            devices: Vec::new(),
            proc: false,
            keep_caps: 0,
        }
    }
}

/// The jail library's error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input the jail cannot use; the message names the setting.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Cgroup(#[from] cgroups::Error),
    #[error(transparent)]
    Container(#[from] container::Error),
    #[error(transparent)]
    Seccomp(#[from] seccomp::Error),
    /// A system call failed; `context` names what was attempted.
    #[error("{context}: {source}")]
    Sys {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The confined process reported this failure (its own words).
    #[error("{0}")]
    Child(String),
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn sys_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Sys { context, source }
}
