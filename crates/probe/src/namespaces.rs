//! New namespaces. A user namespace gives an unprivileged process every capability over the
//! kernel code that trusts namespaced privilege (netfilter, mounts of many filesystems...);
//! the others need CAP_SYS_ADMIN, so they succeed only where privilege is already loose.
//!
//! Each attempt runs in a forked child that exits at once, taking its namespaces with it.
//! clone(2) and clone3(2) are tried separately because a seccomp filter can read clone's flags
//! (a register) but not clone3's (a struct in memory).

use crate::sys::{self, in_child};
use crate::{Context, Verdict};

fn unshare(flag: libc::c_int, kind: &str) -> Verdict {
    let end = in_child(|| {
        // SAFETY: unshare takes flags only; the child exits right after.
        if unsafe { libc::unshare(flag) } == 0 {
            0
        } else {
            sys::errno()
        }
    });
    match end {
        // EINVAL: the kernel was built without this namespace type.
        Ok(sys::ChildEnd::Code(libc::EINVAL)) => {
            Verdict::not_applicable(format!("this kernel has no {kind} namespaces"))
        }
        end => Verdict::from_child(
            end,
            "unshare(2)",
            &format!("created a new {kind} namespace"),
        ),
    }
}

pub fn user(_: &Context) -> Verdict {
    unshare(libc::CLONE_NEWUSER, "user")
}

pub fn mount(_: &Context) -> Verdict {
    unshare(libc::CLONE_NEWNS, "mount")
}

pub fn pid(_: &Context) -> Verdict {
    unshare(libc::CLONE_NEWPID, "pid")
}

pub fn net(_: &Context) -> Verdict {
    unshare(libc::CLONE_NEWNET, "network")
}

pub fn ipc(_: &Context) -> Verdict {
    unshare(libc::CLONE_NEWIPC, "ipc")
}

pub fn uts(_: &Context) -> Verdict {
    unshare(libc::CLONE_NEWUTS, "uts")
}

pub fn cgroup(_: &Context) -> Verdict {
    unshare(libc::CLONE_NEWCGROUP, "cgroup")
}

pub fn time(_: &Context) -> Verdict {
    unshare(libc::CLONE_NEWTIME, "time")
}

/// Reap a process created by a raw clone: its exit code 0 means it ran.
fn reaped(pid: libc::c_long, what: &str) -> Verdict {
    if pid < 0 {
        return Verdict::refused(sys::errno(), what);
    }
    match sys::wait(pid as libc::pid_t) {
        Ok(_) => Verdict::allowed("a child started in a new user namespace"),
        Err(e) => Verdict::blocked(format!("{what} returned pid {pid} but waiting failed: {e}")),
    }
}

pub fn clone_newuser(_: &Context) -> Verdict {
    let flags = (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: clone without CLONE_VM and with a NULL stack behaves as fork: the child gets a
    // copy of the address space and exits at once without touching it.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if pid == 0 {
        // SAFETY: the child ends here.
        unsafe { libc::_exit(0) };
    }
    reaped(pid, "clone(2)")
}

pub fn clone3_newuser(_: &Context) -> Verdict {
    // struct clone_args (CLONE_ARGS_SIZE_VER0 = 64 bytes): flags, pidfd, child_tid,
    // parent_tid, exit_signal, stack, stack_size, tls.
    let mut args = [0u64; 8];
    args[0] = libc::CLONE_NEWUSER as u64;
    args[4] = libc::SIGCHLD as u64;
    // SAFETY: as fork (no CLONE_VM, no new stack); the child exits at once.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args.as_ptr(),
            std::mem::size_of_val(&args),
        )
    };
    if pid == 0 {
        // SAFETY: the child ends here.
        unsafe { libc::_exit(0) };
    }
    reaped(pid, "clone3(2)")
}
