//! What the process itself holds: ptrace reach over pid 1, a root it can climb out of (the
//! chroot escape), other pid namespaces' processes in /proc, descriptors inherited from
//! whoever started it, and the three switches of the container recipe: no_new_privs, seccomp,
//! CAP_SYS_ADMIN.

use std::fs;

use crate::sys::{self, cstr, dev_ino, in_child, ChildEnd};
use crate::{Context, Verdict};

pub fn ptrace_pid1(_: &Context) -> Verdict {
    // From a child, since a process cannot attach to itself (and the probe may be pid 1).
    // PTRACE_SEIZE attaches without stopping pid 1; the kernel detaches when the child exits.
    let end = in_child(|| {
        // SAFETY: PTRACE_SEIZE with no data or options; no memory is passed.
        let r = unsafe {
            libc::ptrace(
                libc::PTRACE_SEIZE,
                1 as libc::pid_t,
                std::ptr::null_mut::<libc::c_void>(),
                std::ptr::null_mut::<libc::c_void>(),
            )
        };
        if r == 0 {
            0
        } else {
            sys::errno()
        }
    });
    let who = if std::process::id() == 1 {
        "pid 1 (this probe, the container's init)".to_string()
    } else {
        let comm = fs::read_to_string("/proc/1/comm").unwrap_or_default();
        format!("pid 1 ({})", comm.trim())
    };
    Verdict::from_child(end, "ptrace(2)", &format!("attached to {who}"))
}

/// Exit codes of the chroot child beyond errnos.
const STAYED: i32 = 200;
const ESCAPED: i32 = 201;
const ESCAPED_MARKER: i32 = 202;

pub fn chroot_escape(ctx: &Context) -> Verdict {
    let Some(before) = dev_ino("/") else {
        return Verdict::not_applicable("cannot stat /");
    };
    let Some(sub) = ["/proc", "/dev", "/sys", "/etc", "/tmp"]
        .into_iter()
        .find(|d| fs::symlink_metadata(d).is_ok_and(|m| m.is_dir()))
    else {
        return Verdict::not_applicable("no subdirectory of / to chroot into");
    };
    let (root, sub_c, dotdot, dot) = (cstr("/"), cstr(sub), cstr(".."), cstr("."));
    let marker = ctx.marker.as_ref().map(cstr);
    let end = in_child(|| {
        // SAFETY: plain syscalls on NUL-terminated strings prepared before the fork, and
        // stat into a local.
        unsafe {
            // The working directory stays at the old root, outside the new one: ".." from
            // there is not stopped by the new root.
            if libc::chdir(root.as_ptr()) != 0 || libc::chroot(sub_c.as_ptr()) != 0 {
                return sys::errno();
            }
            for _ in 0..64 {
                libc::chdir(dotdot.as_ptr());
            }
            if libc::chroot(dot.as_ptr()) != 0 {
                return sys::errno();
            }
            let mut st: libc::stat = std::mem::zeroed();
            if libc::stat(root.as_ptr(), &mut st) != 0 {
                return sys::errno();
            }
            if (st.st_dev, st.st_ino) == before {
                return STAYED;
            }
            match &marker {
                Some(m) if libc::access(m.as_ptr(), libc::F_OK) == 0 => ESCAPED_MARKER,
                _ => ESCAPED,
            }
        }
    });
    match end {
        Ok(ChildEnd::Code(STAYED)) => Verdict::blocked(
            "chroot is permitted, but .. from the root leads nowhere (the root is the top of \
             the mount namespace)",
        ),
        Ok(ChildEnd::Code(ESCAPED_MARKER)) => Verdict::allowed(format!(
            "reached a directory above the root; the host's marker {} is visible there",
            ctx.marker
                .as_ref()
                .map(|m| m.display().to_string())
                .unwrap_or_default()
        )),
        Ok(ChildEnd::Code(ESCAPED)) => Verdict::allowed(if ctx.marker.is_some() {
            "reached a directory above the root (the host's marker is not visible there)"
        } else {
            "reached a directory above the root"
        }),
        end => Verdict::from_child(end, "chroot(2)", "reached a directory above the root"),
    }
}

/// The number of NSpid entries of a /proc/PID/status: 1 + how deep the process's pid
/// namespace lies below the one /proc was mounted for.
fn nspid_depth(status: &str) -> Option<usize> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|v| v.split_whitespace().count())
}

pub fn host_pids(_: &Context) -> Verdict {
    let own_ns = match fs::read_link("/proc/self/ns/pid") {
        Ok(l) => l.to_string_lossy().into_owned(),
        Err(_) => return Verdict::blocked("no /proc: processes cannot be listed"),
    };
    let pids: Vec<String> = match fs::read_dir("/proc") {
        Ok(rd) => rd
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            .collect(),
        Err(e) => return Verdict::blocked(format!("/proc: {e}")),
    };
    let initial = format!("pid:[{}]", inspect::namespaces::PID_NS_INIT_INO);
    if own_ns == initial {
        return Verdict::allowed(format!(
            "in the host's pid namespace: {} processes visible",
            pids.len()
        ));
    }
    let own_depth = fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(nspid_depth)
        .unwrap_or(1);
    if own_depth == 1 {
        return Verdict::blocked(format!(
            "own pid namespace; /proc shows only its own processes ({})",
            pids.len()
        ));
    }
    // /proc belongs to an ancestor pid namespace: processes less deep than this one are
    // outside its namespace.
    let foreign = pids
        .iter()
        .filter_map(|p| fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter(|s| nspid_depth(s).is_some_and(|d| d < own_depth))
        .count();
    if foreign > 0 {
        Verdict::allowed(format!(
            "/proc is an outer pid namespace's: {foreign} processes outside this one visible"
        ))
    } else {
        Verdict::blocked("no process outside the own pid namespace is visible")
    }
}

pub fn leaked_fds(_: &Context) -> Verdict {
    // Descriptors opened by this program carry FD_CLOEXEC (Rust opens everything so); one
    // without it above 2 was inherited across exec from whoever started the process.
    let listen: i32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut max: libc::rlimit = libc::rlimit {
        rlim_cur: 1024,
        rlim_max: 1024,
    };
    // SAFETY: getrlimit writes into a local.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut max) };
    let top = max.rlim_cur.min(65536) as i32;
    let mut leaked = Vec::new();
    for fd in 3..top {
        if fd < 3 + listen {
            continue;
        }
        // SAFETY: F_GETFD only reads the descriptor's flags.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
            let target = fs::read_link(format!("/proc/self/fd/{fd}"))
                .map(|t| t.display().to_string())
                .unwrap_or_else(|_| "?".into());
            leaked.push(format!("{fd} -> {target}"));
        }
    }
    if leaked.is_empty() {
        Verdict::blocked("only stdio (and LISTEN_FDS) reached the process")
    } else {
        Verdict::allowed(format!("inherited: {}", leaked.join(", ")))
    }
}

pub fn no_new_privs_off(_: &Context) -> Verdict {
    // SAFETY: PR_GET_NO_NEW_PRIVS takes no pointers.
    match unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) } {
        1 => Verdict::blocked("no_new_privs is set: exec cannot gain privileges"),
        0 => Verdict::allowed(
            "no_new_privs is off: setuid and file-capability binaries raise privileges",
        ),
        _ => Verdict::refused(sys::errno(), "prctl(2)"),
    }
}

pub fn seccomp_off(_: &Context) -> Verdict {
    let filters = fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Seccomp_filters:"))
            .map(|v| v.trim().to_string())
    });
    match sys::seccomp_mode() {
        Some(0) => Verdict::allowed("no seccomp filter: every syscall reaches the kernel"),
        Some(2) => Verdict::blocked(match filters {
            Some(n) => format!("seccomp filter mode, {n} filter(s)"),
            None => "seccomp filter mode".into(),
        }),
        Some(m) => Verdict::blocked(format!("seccomp mode {m}")),
        None => Verdict::refused(sys::errno(), "prctl(2)"),
    }
}

pub fn cap_sys_admin(_: &Context) -> Verdict {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget fills two Data structs for version 3.
    if unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut Header, d.as_mut_ptr()) } != 0 {
        return Verdict::refused(sys::errno(), "capget(2)");
    }
    const CAP_SYS_ADMIN: u32 = 21;
    let bit = CAP_SYS_ADMIN;
    let eff = u64::from(d[0].effective) | (u64::from(d[1].effective) << 32);
    if eff & (1 << bit) != 0 {
        Verdict::allowed("CAP_SYS_ADMIN is effective")
    } else {
        Verdict::blocked(format!("effective set {eff:#x} has no CAP_SYS_ADMIN"))
    }
}
