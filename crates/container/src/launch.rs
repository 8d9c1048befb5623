//! The last steps before a container process runs, shared by a container's
//! init (after `start`) and by `exec`, and the runtime's side of them.
//!
//! # Order, and why
//! The seccomp profile is written for the container's program, not for us:
//! a profile whose default is `SCMP_ACT_ERRNO` and whose allow list predates
//! `close_range`, `clone3`, `openat2`... must not break the start. So the
//! filter is the very last change before execve, and everything else happens
//! first:
//!
//! 1. drop the bounding set (needs CAP_SETPCAP, so before the user switch);
//! 2. switch to the process's user and groups, keeping the permitted set
//!    (PR_SET_KEEPCAPS);
//! 3. chdir to `process.cwd` if it failed as root (a directory only the user
//!    may enter);
//! 4. set the capability sets (capset, then the ambient ones). Without
//!    `noNewPrivileges`, installing a filter needs CAP_SYS_ADMIN, which is
//!    why runc installs it *before* dropping capabilities and then runs its
//!    user/capability/fd steps under the filter. We instead keep
//!    CAP_SYS_ADMIN in effective and permitted only; execve derives the
//!    program's permitted and effective sets from bounding, inheritable,
//!    ambient and the file, never from the old permitted set, so the program
//!    still gets exactly the configured sets (see [`capabilities::apply`]);
//! 5. no_new_privs, when asked;
//! 6. `execCPUAffinity.final`, default signal dispositions and an empty mask;
//! 7. mark every descriptor but stdio and the preserved ones close-on-exec
//!    (close_range, falling back to /proc/self/fd);
//! 8. the startContainer hooks (the init only): after the steps above, so a
//!    hook — a program of the container's image — runs with no more
//!    privilege than the container process and inherits no runtime fd;
//! 9. install the filter; with a notify rule, hand the listener fd to the
//!    runtime in one sendmsg (the runtime talks to `listenerPath`);
//! 10. execve.
//!
//! After step 9 only execve follows (the seccomp crate's notes list the
//! exact system calls); the argument arrays are built beforehand so nothing
//! allocates.

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

use crate::capabilities;
use crate::error::{msg, Context, Result};
use crate::process::{self, ExecArgs};
use crate::sys;

/// The byte that accompanies a seccomp listener fd sent to the runtime. Error
/// texts never start with it.
const LISTENER_FD: u8 = 0;

pub struct Launch<'a> {
    pub process: &'a oci::Process,
    pub caps: &'a capabilities::Resolved,
    pub filter: Option<&'a seccomp::Filter>,
    /// The socket to the runtime, which receives a seccomp listener fd.
    pub runtime: BorrowedFd<'a>,
    /// chdir to process.cwd already done (as root, before the user switch).
    pub chdir_done: bool,
    pub preserve_fds: u32,
    pub exec: &'a ExecArgs,
    /// startContainer hooks and the state they read (a container's init only).
    pub start_hooks: Option<(&'a [oci::Hook], &'a str)>,
}

pub fn launch(l: Launch<'_>) -> Result<std::convert::Infallible> {
    let p = l.process;
    capabilities::drop_bounding(l.caps.bounding)?;
    process::switch_user(&p.user)?;
    if !l.chdir_done {
        rustix::process::chdir(p.cwd.as_str()).ctx(|| format!("chdir to process.cwd {}", p.cwd))?;
    }
    let keep = if l.filter.is_some() && !p.no_new_privileges {
        held_permitted() & capabilities::SYS_ADMIN
    } else {
        0
    };
    capabilities::apply(l.caps, keep)?;
    if p.no_new_privileges {
        rustix::thread::set_no_new_privs(true).ctx(|| "set no_new_privs".into())?;
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
    if let Some((hooks, state)) = l.start_hooks {
        crate::hooks::run_in_container("startContainer", hooks, state, &l.exec.env)?;
    }
    if let Some(f) = l.filter {
        if let Some(fd) = f.install()? {
            // Without a listener the container would wait forever on the
            // notified syscalls: failing here is better.
            seccomp::send_with_fd(l.runtime.as_raw_fd(), &[LISTENER_FD], fd.as_fd())
                .ctx(|| "pass the seccomp listener fd to the runtime".into())?;
        }
    }
    let err = l.exec.execve();
    Err(err).ctx(|| format!("exec {:?}", l.exec.path))
}

/// The permitted capabilities this process holds now.
fn held_permitted() -> u64 {
    rustix::thread::capabilities(None).map_or(0, |c| c.permitted.bits())
}

/// The runtime's side: read `sock` until the launching process executes (EOF:
/// the socket is close-on-exec) or reports why it could not (the text it
/// wrote, returned). A seccomp listener fd arriving meanwhile goes to
/// `forward` at once (the process may already wait on the listener); if that
/// fails, process `pid` is killed — it could never be answered — and the
/// error returned.
pub fn wait_for_exec(
    sock: BorrowedFd<'_>,
    pid: i32,
    mut forward: impl FnMut(BorrowedFd<'_>) -> Result<()>,
) -> Result<Vec<u8>> {
    let mut text = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut cmsg = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let r = match rustix::net::recvmsg(sock, &mut iov, &mut cmsg, RecvFlags::CMSG_CLOEXEC) {
            Ok(r) => r,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e).ctx(|| "wait for the container process".into()),
        };
        if r.bytes == 0 {
            return Ok(text);
        }
        let mut listener: Option<OwnedFd> = None;
        for m in cmsg.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = m {
                for fd in fds {
                    listener.get_or_insert(fd);
                }
            }
        }
        let mut data = &buf[..r.bytes];
        if let Some(fd) = listener {
            data = data.strip_prefix(&[LISTENER_FD]).unwrap_or(data);
            if let Err(e) = forward(fd.as_fd()) {
                // SAFETY: kill(2) of the process we launched.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                return Err(e);
            }
        }
        text.extend_from_slice(data);
    }
}

/// Hand a listener fd to `linux.seccomp.listenerPath` of `spec` for process
/// `pid` of a container in `state` (what `start` and `exec` forward).
pub fn send_to_listener(
    spec: &oci::Spec,
    fd: BorrowedFd<'_>,
    pid: i32,
    state: &oci::State,
) -> Result<()> {
    let linux = spec.linux();
    let sc = linux.seccomp.as_ref();
    let path = sc
        .and_then(|s| s.listener_path.as_deref())
        .ok_or_else(|| msg("linux.seccomp: SCMP_ACT_NOTIFY needs a listenerPath"))?;
    let meta = sc.and_then(|s| s.listener_metadata.as_deref());
    seccomp::send_to_listener(std::path::Path::new(path), fd, pid, state, meta)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn wait_for_exec_forwards_the_fd_and_collects_the_error_text() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let f = std::fs::File::open("/proc/self/status").unwrap();
        seccomp::send_with_fd(theirs.as_raw_fd(), &[LISTENER_FD], f.as_fd()).unwrap();
        std::io::Write::write_all(&mut &theirs, b"exec: no such file").unwrap();
        drop(theirs);
        let mut got = Vec::new();
        let text = wait_for_exec(ours.as_fd(), 0, |fd| {
            got.push(rustix::fs::fstat(fd).unwrap().st_ino);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, vec![rustix::fs::fstat(&f).unwrap().st_ino]);
        assert_eq!(text, b"exec: no such file");
    }
}
