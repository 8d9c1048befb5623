//! The last steps before a container process runs, shared by a container's
//! init (after `start`) and by `exec`: drop privileges, install the seccomp
//! filter, and execve — in runc's order (the filter before the capability
//! drop unless no_new_privs is set, since the kernel then requires
//! CAP_SYS_ADMIN; with no_new_privs as late as possible, so few syscalls of
//! ours run under it).

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use crate::capabilities;
use crate::error::{Context, Result};
use crate::process::{self, ExecArgs};
use crate::sys;

pub struct Launch<'a> {
    pub process: &'a oci::Process,
    pub caps: &'a capabilities::Resolved,
    pub filter: Option<&'a seccomp::Filter>,
    /// Connected socket of the seccomp agent (linux.seccomp.listenerPath).
    pub listener: Option<UnixStream>,
    pub listener_metadata: Option<&'a str>,
    /// The container state and the pid the agent is told about.
    pub state: Option<oci::State>,
    pub pid: i32,
    /// chdir to process.cwd already done (as root, before the user switch).
    pub chdir_done: bool,
    pub preserve_fds: u32,
    pub exec: &'a ExecArgs,
}

pub fn launch(l: Launch<'_>) -> Result<std::convert::Infallible> {
    let p = l.process;
    let mut listener = l.listener;
    let (state, pid, meta) = (l.state, l.pid, l.listener_metadata);
    let mut install = |filter: &seccomp::Filter| -> Result<()> {
        let notify = filter.install()?;
        if let (Some(fd), Some(sock), Some(st)) = (notify, listener.take(), state.as_ref()) {
            // Hand the notify fd to the agent (runtime-spec "listenerPath"):
            // only then can it answer the syscalls the filter defers to it.
            seccomp::send_state(&sock, fd.as_fd(), pid, st, meta)?;
        }
        Ok(())
    };
    if let (Some(f), false) = (l.filter, p.no_new_privileges) {
        install(f)?;
    }
    capabilities::drop_bounding(l.caps.bounding)?;
    process::switch_user(&p.user)?;
    if !l.chdir_done {
        rustix::process::chdir(p.cwd.as_str()).ctx(|| format!("chdir to process.cwd {}", p.cwd))?;
    }
    capabilities::apply(l.caps)?;
    if p.no_new_privileges {
        rustix::thread::set_no_new_privs(true).ctx(|| "set no_new_privs".into())?;
        if let Some(f) = l.filter {
            install(f)?;
        }
    }
    if let Some(cpus) = p
        .exec_cpu_affinity
        .as_ref()
        .and_then(|a| a.final_.as_deref())
    {
        process::set_cpu_affinity(cpus, "process.execCPUAffinity.final")?;
    }
    process::reset_signals();
    // Nothing of the runtime's survives execve but stdio and preserved fds.
    sys::cloexec_from(3 + l.preserve_fds).ctx(|| "close inherited file descriptors".into())?;
    let err = sys::execve(&l.exec.path, &l.exec.argv, &l.exec.envp);
    Err(err).ctx(|| format!("exec {:?}", l.exec.path))
}
