//! Thin wrappers for the system calls that neither rustix nor std expose.
//! Every `unsafe` here is an FFI call whose arguments are checked by the kernel.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// clone3(2) with fork semantics (no new stack): returns 0 in the child and the
/// child's pid in the parent. `cgroup` places the child in a cgroup v2 directory
/// atomically (CLONE_INTO_CGROUP), so it never runs outside its cgroup.
///
/// # Safety
/// The caller must be single-threaded (as after fork(2), only async-signal-safe
/// work is otherwise allowed in the child), and the child must never return into
/// code that assumes it is the parent: it must end with `_exit`.
pub unsafe fn clone3(flags: u64, cgroup: Option<RawFd>) -> io::Result<libc::pid_t> {
    // SAFETY: clone_args is plain old data; zero is the documented default for every field.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = flags;
    // With CLONE_PARENT the child inherits our own exit signal; clone3
    // refuses an explicit one (EINVAL).
    if flags & libc::CLONE_PARENT as u64 == 0 {
        args.exit_signal = libc::SIGCHLD as u64;
    }
    if let Some(fd) = cgroup {
        // CLONE_INTO_CGROUP (linux/sched.h); libc's constant is typed too narrow.
        args.flags |= 0x2_0000_0000;
        args.cgroup = fd as u64;
    }
    // SAFETY: args is a valid clone_args of the size we pass; with stack = 0 the
    // child continues on a copy of our stack, like fork(2).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    check(ret).map(|p| p as libc::pid_t)
}

/// mount_setattr(2) on the mount `fd` refers to (AT_EMPTY_PATH).
pub fn mount_setattr(
    fd: BorrowedFd<'_>,
    recursive: bool,
    set: u64,
    clr: u64,
    propagation: u64,
) -> io::Result<()> {
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: clr,
        propagation,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: valid fd, NUL-terminated empty path, and a mount_attr of the passed size.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    check(ret).map(|_| ())
}

/// The kernel's `struct sched_attr` (sched_setattr(2)); libc does not define it.
#[repr(C)]
#[derive(Default)]
pub struct SchedAttr {
    pub size: u32,
    pub sched_policy: u32,
    pub sched_flags: u64,
    pub sched_nice: i32,
    pub sched_priority: u32,
    pub sched_runtime: u64,
    pub sched_deadline: u64,
    pub sched_period: u64,
    pub sched_util_min: u32,
    pub sched_util_max: u32,
}

pub fn sched_setattr(attr: &mut SchedAttr) -> io::Result<()> {
    attr.size = std::mem::size_of::<SchedAttr>() as u32;
    // SAFETY: attr is a valid sched_attr whose size field matches its layout.
    let ret = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, attr as *mut SchedAttr, 0) };
    check(ret).map(|_| ())
}

pub fn ioprio_set(class: u32, prio: u32) -> io::Result<()> {
    const IOPRIO_WHO_PROCESS: libc::c_int = 1;
    let value = (class << 13) | prio;
    // SAFETY: plain integer arguments.
    let ret = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, value) };
    check(ret).map(|_| ())
}

pub fn set_mempolicy(mode: i32, nodemask: &[libc::c_ulong]) -> io::Result<()> {
    let maxnode = (nodemask.len() * libc::c_ulong::BITS as usize) as libc::c_ulong;
    let ptr = if nodemask.is_empty() {
        std::ptr::null()
    } else {
        nodemask.as_ptr()
    };
    // SAFETY: ptr is null or points to `maxnode` bits of mask.
    let ret = unsafe { libc::syscall(libc::SYS_set_mempolicy, mode, ptr, maxnode) };
    check(ret).map(|_| ())
}

pub fn personality(persona: libc::c_ulong) -> io::Result<()> {
    // SAFETY: plain integer argument.
    let ret = unsafe { libc::personality(persona) };
    check(ret as libc::c_long).map(|_| ())
}

/// Mark every fd >= `first` close-on-exec, so the container process inherits
/// nothing of the runtime's (CVE-2024-21626) while we may still use them until execve.
/// close_range(CLOSE_RANGE_CLOEXEC) (Linux 5.11) does it in one call; where it is
/// missing (ENOSYS), too old for the flag (EINVAL) or denied (EPERM), each open
/// descriptor listed in /proc/self/fd is marked with fcntl(F_SETFD), as runc does.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    // The raw syscall: musl has no close_range wrapper.
    // SAFETY: plain integer arguments.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    match check(ret) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOSYS | libc::EINVAL | libc::EPERM)
            ) =>
        {
            cloexec_from_proc(first)
        }
        Err(e) => Err(e),
    }
}

/// The fallback of [`cloexec_from`]: walk /proc/self/fd.
pub fn cloexec_from_proc(first: u32) -> io::Result<()> {
    // The directory's own descriptor is listed too; it is close-on-exec already.
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Some(fd) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if fd < first as i32 {
            continue;
        }
        // SAFETY: fcntl on a descriptor number; a stale one (the directory's,
        // closed by now) fails with EBADF, which is ignored.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

/// setgroups(2) for the whole process (we are single-threaded where this runs).
pub fn setgroups(gids: &[libc::gid_t]) -> io::Result<()> {
    // SAFETY: pointer and length describe `gids`.
    let ret = unsafe { libc::setgroups(gids.len(), gids.as_ptr()) };
    check(ret as libc::c_long).map(|_| ())
}

pub fn sched_setaffinity(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only touch it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        if c >= libc::CPU_SETSIZE as usize {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: c is within CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: valid cpu_set_t of the passed size.
    let ret = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    check(ret as libc::c_long).map(|_| ())
}

/// execve(2) that returns only on failure. `argv` and `envp` are
/// NULL-terminated arrays prepared in advance: this runs after the seccomp
/// filter is installed, where nothing else may be called (not even malloc,
/// which may need brk or mmap).
pub fn execve(
    path: &CString,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> io::Error {
    debug_assert!(argv.last() == Some(&std::ptr::null()) && envp.last() == Some(&std::ptr::null()));
    // SAFETY: NUL-terminated strings in NULL-terminated arrays that outlive the call.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    io::Error::last_os_error()
}

/// execveat(2) of the file `fd` refers to (AT_EMPTY_PATH): for a program opened before its
/// path stopped being reachable (a sealed memfd, a jail's empty root). Returns only on failure.
pub fn execveat(fd: BorrowedFd<'_>, argv: &[CString], envp: &[CString]) -> io::Error {
    let mut av: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    av.push(std::ptr::null());
    let mut ev: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    ev.push(std::ptr::null());
    // SAFETY: an open fd, an empty NUL-terminated path, and NUL-terminated strings in
    // NULL-terminated arrays that outlive the call.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd(),
            c"".as_ptr(),
            av.as_ptr(),
            ev.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    io::Error::last_os_error()
}

/// Exit immediately without running destructors or atexit handlers: used by
/// cloned children, which share the parent's buffered state (stdio, locks).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and is always safe to call.
    unsafe { libc::_exit(code) }
}

/// Parse a cpu or node list such as "0-3,7" (cpuset / mempolicy syntax).
pub fn parse_id_list(s: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if a > b || b > 65535 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    if out.is_empty() {
        None
    } else {
        Some(out)
    }
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// mount(2) with the MS_* flags of [`crate::mounts`].
pub fn mount(
    source: Option<&str>,
    target: &std::path::Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let src = source.map(cstr).transpose()?;
    let tgt = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let fs = fstype.map(cstr).transpose()?;
    let dat = data.map(cstr).transpose()?;
    let p = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: NUL-terminated strings (or null) that outlive the call.
    let ret = unsafe { libc::mount(p(&src), tgt.as_ptr(), p(&fs), flags, p(&dat).cast()) };
    check(ret as libc::c_long).map(|_| ())
}

pub fn umount_detach(target: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let tgt = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: NUL-terminated path.
    let ret = unsafe { libc::umount2(tgt.as_ptr(), libc::MNT_DETACH) };
    check(ret as libc::c_long).map(|_| ())
}

/// Make `fds` this process's stdin, stdout and stderr (dup2 clears close-on-exec).
pub fn dup_stdio(fds: [RawFd; 3]) -> crate::Result<()> {
    use crate::error::Context;
    for (target, fd) in fds.into_iter().enumerate() {
        // SAFETY: dup2 of descriptors the caller keeps open onto the standard ones.
        if unsafe { libc::dup2(fd, target as RawFd) } < 0 {
            return Err(io::Error::last_os_error()).ctx(|| format!("dup fd {fd} to {target}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_lists() {
        assert_eq!(parse_id_list("0-3,7"), Some(vec![0, 1, 2, 3, 7]));
        assert_eq!(parse_id_list("2"), Some(vec![2]));
        assert_eq!(parse_id_list("3-1"), None);
        assert_eq!(parse_id_list("x"), None);
        assert_eq!(parse_id_list(""), None);
    }

    #[test]
    fn cloexec_fallback_marks_every_descriptor() {
        let f = std::fs::File::open("/proc/self/status").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        // SAFETY: clear the flag on our own descriptor, then read it back.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        cloexec_from_proc(fd as u32).unwrap();
        // SAFETY: as above.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    }
}
