//! The child's half: what runs in the clone3() child, from its first instruction to
//! confinement, and how it reports to the supervisor.
//!
//! Every message goes over the container crate's sync channel, written with write(2): after
//! confinement the child's seccomp filters may allow `write` but not `sendto`.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use container::sync::{Channel, Msg};

use crate::{fds, namespaces, privileges, root, sys_err, Error, Jail, Result};

/// The child before confinement: in its new pid, mount, ipc, uts and time namespaces and (on
/// v2) its cgroup, with the host's filesystem and its root privileges.
pub struct Inside<'a> {
    pub(crate) jail: &'a Jail,
    pub(crate) chan: &'a Channel,
}

/// The child after confinement. [`Confined::complete`] tells the supervisor that every layer
/// is in force; an error the child's closure returns (before or after) reaches the supervisor
/// as [`Error::Child`].
pub struct Confined {
    chan: Channel,
}

impl Confined {
    /// Report that the jail is complete (every thread has its seccomp filter). Needs `write`.
    pub fn complete(&self) -> Result<()> {
        self.chan
            .send_write(&Msg::Created)
            .map_err(sys_err("tell the supervisor the jail is complete"))
    }
}

impl Inside<'_> {
    /// Confine this process: unshare the network namespace, switch to the empty read-only
    /// root, sync with the supervisor, unshare the cgroup
    /// namespace (rooted there), set the jail's
    /// rlimits and then `late` ones (the last value of a type wins), become the unprivileged
    /// user with no capabilities, no_new_privs, non-dumpable. Single-threaded callers only
    /// (setresuid and unshare act on the calling thread).
    pub fn confine(self, late: &[oci::Rlimit]) -> Result<Confined> {
        use oci::NamespaceType::{Cgroup, Network};
        container::namespaces::unshare(namespaces::flags(&[Network]))?;
        root::enter_empty_root(self.jail)?;
        // The supervisor's go-ahead: every cgroup placement is done (on v2 by clone3, on v1
        // by this process itself, first thing).
        self.chan
            .send_write(&Msg::Ready)
            .map_err(sys_err("ask the supervisor for the cgroup"))?;
        self.chan
            .wait_go()
            .map_err(sys_err("wait for the supervisor to place us in the cgroup"))?;
        container::namespaces::unshare(namespaces::flags(&[Cgroup]))?;
        let mut limits: Vec<oci::Rlimit> = Vec::new();
        for r in self.jail.rlimits.iter().chain(late) {
            limits.retain(|l| l.typ != r.typ);
            limits.push(r.clone());
        }
        for (i, r) in limits.iter().enumerate() {
            if container::process::rlimit_resource(&r.typ).is_none() {
                return Err(Error::Invalid(format!(
                    "rlimit {i}: unknown type {}",
                    r.typ
                )));
            }
        }
        container::process::set_rlimits(&limits)?;
        privileges::drop_all(self.jail.uid, self.jail.gid, self.jail.keep_caps)?;
        let chan = self
            .chan
            .as_fd()
            .try_clone_to_owned()
            .map_err(sys_err("dup the sync channel"))?;
        Ok(Confined {
            chan: Channel::from_fd(chan),
        })
    }

    /// Confine this process, install `filter` (if any), report the jail complete, and execute
    /// `program` (opened before, e.g. with O_PATH: the jail's root holds no programs) with the
    /// kept descriptors inherited. Returns only on failure. The filter must allow `write` (the
    /// report) and `execveat`.
    pub fn exec(
        self,
        program: &OwnedFd,
        argv: &[CString],
        envp: &[CString],
        late: &[oci::Rlimit],
        filter: Option<&seccomp::Filter>,
    ) -> Result<std::convert::Infallible> {
        let keep = self.jail.keep_fds.clone();
        let confined = self.confine(late)?;
        for fd in keep {
            inherit(fd)?;
        }
        container::process::reset_signals();
        if let Some(f) = filter {
            f.install()?;
        }
        confined.complete()?;
        Err(sys_err("execveat the jailed program")(
            container::sys::execveat(program.as_fd(), argv, envp),
        ))
    }
}

/// Clear close-on-exec on a kept descriptor.
fn inherit(fd: RawFd) -> Result<()> {
    // SAFETY: fcntl on a descriptor number; errors are reported.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
        return Err(sys_err(format!("keep descriptor {fd} across exec"))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// The child's life: it never returns into the supervisor's code.
pub(crate) fn run<F>(
    jail: &Jail,
    chan: Channel,
    old_mask: &libc::sigset_t,
    self_join: Option<&cgroups::SelfJoin>,
    f: F,
) -> !
where
    F: FnOnce(Inside<'_>) -> std::result::Result<i32, String>,
{
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        privileges::parent_death_kills().map_err(|e| e.to_string())?;
        // Into the v1 hierarchies by ourselves, while we are single-threaded: no RCU grace
        // period to wait for (see `cgroups::Cgroup::self_join`). The descriptors are closed
        // with the others below.
        if let Some(j) = self_join {
            j.join().map_err(|e| e.to_string())?;
        }
        container::foreground::restore_signals(old_mask);
        let mut keep = vec![0, 1, 2, chan.as_fd().as_raw_fd()];
        keep.extend(&jail.keep_fds);
        fds::close_all_but(&keep).map_err(|e| e.to_string())?;
        f(Inside { jail, chan: &chan })
    }));
    let text = match res {
        Ok(Ok(code)) => {
            use std::io::Write;
            let _ = std::io::stdout().flush();
            container::sys::exit_now(code)
        }
        Ok(Err(text)) => text,
        Err(p) => format!(
            "the jailed process panicked: {}",
            p.downcast_ref::<&str>()
                .copied()
                .or(p.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("?")
        ),
    };
    let _ = chan.send_write(&Msg::Error(text));
    container::sys::exit_now(1)
}
