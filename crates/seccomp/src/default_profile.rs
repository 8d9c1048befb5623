//! bulkhead's own default seccomp profile: what `bulkhead spec` writes into config.json and
//! what `bulkhead sandbox` runs under unless told otherwise.
//!
//! It is data: [`ALLOWED`] lists every group of syscalls a container may make, each with what
//! it is for and the capability it needs, and [`DENIED`] lists the groups a container never
//! gets, each with the reason. [`profile`] turns the data into an OCI `linux.seccomp` for a
//! given bounding set (as podman's profile format does with `includes.caps`). Every syscall
//! of the tables is in exactly one of the two lists (a unit test checks it), so a syscall
//! added to the tables must be placed here deliberately.
//!
//! # Design
//! - **An allow list.** The default action is `ERRNO(EPERM)`: a syscall not listed fails
//!   like a call the kernel refused for lack of privilege, which programs handle. Syscalls
//!   newer than the highest number named here get `ENOSYS` instead (the compiler's
//!   [`Options::enosys_above_profile`](crate::Options)), so a libc probing a future syscall
//!   falls back to an older one rather than failing.
//! - **`clone3` gets `ENOSYS`.** Its flags live in a struct in memory, which a seccomp filter
//!   cannot read; with ENOSYS, glibc and musl fall back to `clone`, whose flags are a
//!   register the filter inspects.
//! - **Namespaces.** `clone` and `unshare` are allowed only without namespace flags, unless
//!   the bounding set holds CAP_SYS_ADMIN; `CLONE_NEWUSER` is refused even then: a user
//!   namespace hands an unprivileged process a full capability set over most of the kernel's
//!   namespaced code, which is where the kernel exploits of recent years start.
//! - **Capability-gated groups** are allowed only when the bounding set holds the capability
//!   the kernel would check anyway (mount needs CAP_SYS_ADMIN, chroot CAP_SYS_CHROOT...):
//!   without it the call could only fail, and refusing it in the filter keeps the kernel code
//!   behind it out of reach.
//! - **Architectures** x86_64, i386 and x32 get the same rules by name; i386's `socketcall`
//!   and `ipc` multiplexers are not named: the compiler allows through them exactly the
//!   socket and SysV IPC calls allowed here (see the crate notes).

use oci::{Arch, Seccomp, SeccompAction, SeccompArg, SeccompOp, Syscall};

/// EPERM: what every syscall outside the allow list returns.
pub const DEFAULT_ERRNO: u32 = libc::EPERM as u32;

/// Every namespace flag of clone(2) and unshare(2) (CLONE_NEWTIME exists only for unshare
/// and clone3; in clone's flags its bit belongs to the exit signal).
const CLONE_NAMESPACES: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;
const UNSHARE_NAMESPACES: u64 = CLONE_NAMESPACES | libc::CLONE_NEWTIME as u64;
const CLONE_NEWUSER: u64 = libc::CLONE_NEWUSER as u64;

/// personality(2) values a program may set: PER_LINUX, PER_LINUX32, both with UNAME26, and
/// 0xffffffff (query). Not ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC and the other flags that
/// weaken the address-space layout the kernel gives a process.
const SAFE_PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// When a group's rule is part of the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Always.
    Nothing,
    /// Only when the bounding set holds this capability.
    Cap(&'static str),
}

/// What the filter does with a group's syscalls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Allowed when argument `index` has none of the bits of `mask` set.
    AllowIfClear {
        index: u32,
        mask: u64,
    },
    /// Allowed when argument `index` is one of `values`.
    AllowIfOneOf {
        index: u32,
        values: &'static [u64],
    },
    /// Fails with this errno.
    Errno(u32),
}

/// Syscalls that share one purpose and one rule.
#[derive(Debug)]
pub struct Group {
    /// What the syscalls are for (or, in [`DENIED`], why a container never gets them).
    pub purpose: &'static str,
    pub needs: Needs,
    pub verdict: Verdict,
    pub names: &'static [&'static str],
}

const fn allow(purpose: &'static str, names: &'static [&'static str]) -> Group {
    Group {
        purpose,
        needs: Needs::Nothing,
        verdict: Verdict::Allow,
        names,
    }
}

const fn allow_with(
    cap: &'static str,
    purpose: &'static str,
    names: &'static [&'static str],
) -> Group {
    Group {
        purpose,
        needs: Needs::Cap(cap),
        verdict: Verdict::Allow,
        names,
    }
}

const fn deny(purpose: &'static str, names: &'static [&'static str]) -> Group {
    Group {
        purpose,
        needs: Needs::Nothing,
        verdict: Verdict::Errno(DEFAULT_ERRNO),
        names,
    }
}

/// What a container may call.
#[rustfmt::skip]
pub static ALLOWED: &[Group] = &[
    allow(
        "files: open, read, write, seek, duplicate and close descriptors, lock, sync, copy \
         between descriptors, device-specific requests (ioctl)",
        &[
            "read", "write", "open", "openat", "openat2", "creat", "close", "close_range",
            "lseek", "_llseek", "pread64", "pwrite64", "readv", "writev", "preadv", "preadv2",
            "pwritev", "pwritev2", "dup", "dup2", "dup3", "fcntl", "fcntl64", "flock", "fsync",
            "fdatasync", "sync", "syncfs", "sync_file_range", "fallocate", "fadvise64",
            "fadvise64_64", "readahead", "truncate", "truncate64", "ftruncate", "ftruncate64",
            "sendfile", "sendfile64", "splice", "tee", "copy_file_range", "ioctl",
        ],
    ),
    allow(
        "the file tree: metadata, directories, links, permissions (the kernel checks \
         ownership and CAP_CHOWN/CAP_FOWNER), extended attributes, timestamps, device nodes \
         (CAP_MKNOD and the device cgroup decide), change notification",
        &[
            "stat", "fstat", "lstat", "newfstatat", "stat64", "fstat64", "lstat64", "fstatat64",
            "statx", "statfs", "fstatfs", "statfs64", "fstatfs64", "access", "faccessat",
            "faccessat2", "getcwd", "chdir", "fchdir", "umask", "mkdir", "mkdirat", "rmdir",
            "rename", "renameat", "renameat2", "link", "linkat", "unlink", "unlinkat", "symlink",
            "symlinkat", "readlink", "readlinkat", "getdents", "getdents64", "chmod", "fchmod",
            "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat", "chown32",
            "fchown32", "lchown32", "utime", "utimes", "futimesat", "utimensat",
            "utimensat_time64", "mknod", "mknodat", "getxattr", "lgetxattr", "fgetxattr",
            "getxattrat", "setxattr", "lsetxattr", "fsetxattr", "setxattrat", "listxattr",
            "llistxattr", "flistxattr", "listxattrat", "removexattr", "lremovexattr",
            "fremovexattr", "removexattrat", "file_getattr", "file_setattr", "inotify_init",
            "inotify_init1", "inotify_add_watch", "inotify_rm_watch", "fanotify_mark",
        ],
    ),
    allow(
        "memory of the process itself: mappings, protection keys, locking (bounded by \
         RLIMIT_MEMLOCK), memory policy, anonymous and secret memory files, page-cache \
         residency queries",
        &[
            "brk", "mmap", "mmap2", "munmap", "mremap", "mprotect", "madvise", "mincore",
            "msync", "mlock", "mlock2", "munlock", "mlockall", "munlockall", "remap_file_pages",
            "memfd_create", "memfd_secret", "membarrier", "pkey_alloc", "pkey_free",
            "pkey_mprotect", "mseal", "map_shadow_stack", "get_mempolicy", "set_mempolicy",
            "set_mempolicy_home_node", "mbind", "cachestat", "process_mrelease",
        ],
    ),
    allow(
        "processes and threads: fork, exec, exit, wait, thread ids and robust futexes, \
         thread-local storage, resource limits and usage, scheduling and I/O priorities \
         (raising them needs CAP_SYS_NICE, which the kernel checks), process controls, random \
         numbers",
        &[
            "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid",
            "waitpid", "getpid", "getppid", "gettid", "getpgid", "setpgid", "getpgrp", "getsid",
            "setsid", "set_tid_address", "set_robust_list", "get_robust_list", "futex",
            "futex_time64", "futex_waitv", "futex_wake", "futex_wait", "futex_requeue", "rseq",
            "arch_prctl", "set_thread_area", "get_thread_area", "prctl", "prlimit64",
            "getrlimit", "setrlimit", "ugetrlimit", "getrusage", "times", "getpriority",
            "setpriority", "nice", "sched_yield", "sched_getaffinity", "sched_setaffinity",
            "sched_getparam", "sched_setparam", "sched_getscheduler", "sched_setscheduler",
            "sched_getattr", "sched_setattr", "sched_get_priority_max",
            "sched_get_priority_min", "sched_rr_get_interval", "sched_rr_get_interval_time64",
            "ioprio_get", "ioprio_set", "getcpu", "restart_syscall", "getrandom",
        ],
    ),
    allow(
        "confining oneself further: capabilities (only ever lowered without privilege), \
         nested seccomp filters, Landlock rulesets, LSM attributes of the process",
        &[
            "capget", "capset", "seccomp", "landlock_create_ruleset", "landlock_add_rule",
            "landlock_restrict_self", "lsm_get_self_attr", "lsm_set_self_attr",
            "lsm_list_modules",
        ],
    ),
    allow(
        "user and group ids (changing them needs CAP_SETUID/CAP_SETGID, which the kernel \
         checks)",
        &[
            "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
            "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid",
            "setfsgid", "setgroups", "getuid32", "geteuid32", "getgid32", "getegid32",
            "getresuid32", "getresgid32", "getgroups32", "setuid32", "setgid32", "setreuid32",
            "setregid32", "setresuid32", "setresgid32", "setfsuid32", "setfsgid32",
            "setgroups32",
        ],
    ),
    allow(
        "signals: handlers, masks, waiting, sending (to processes the pid namespace shows \
         and the kernel's permission check allows), pidfds",
        &[
            "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigsuspend",
            "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_sigqueueinfo",
            "rt_tgsigqueueinfo", "sigaltstack", "signalfd", "signalfd4", "sigaction", "signal",
            "sigprocmask", "sigpending", "sigsuspend", "sigreturn", "pause", "alarm", "kill",
            "tkill", "tgkill", "pidfd_open", "pidfd_send_signal",
        ],
    ),
    allow(
        "time and timers: reading clocks, sleeping, interval and POSIX timers, timer fds; \
         adjtimex/clock_adjtime only read without CAP_SYS_TIME (the kernel checks)",
        &[
            "time", "gettimeofday", "clock_gettime", "clock_gettime64", "clock_getres",
            "clock_getres_time64", "clock_nanosleep", "clock_nanosleep_time64", "nanosleep",
            "getitimer", "setitimer", "timer_create", "timer_delete", "timer_gettime",
            "timer_gettime64", "timer_settime", "timer_settime64", "timer_getoverrun",
            "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
            "timerfd_settime64", "adjtimex", "clock_adjtime", "clock_adjtime64",
        ],
    ),
    allow(
        "waiting for descriptors: poll, select, epoll, eventfd",
        &[
            "poll", "ppoll", "ppoll_time64", "select", "_newselect", "pselect6",
            "pselect6_time64", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait",
            "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2",
        ],
    ),
    allow(
        "sockets (raw and packet sockets need CAP_NET_RAW, which the kernel checks; the \
         network namespace bounds what they reach)",
        &[
            "socket", "socketpair", "bind", "listen", "accept", "accept4", "connect",
            "getsockname", "getpeername", "getsockopt", "setsockopt", "sendto", "recvfrom",
            "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "recvmmsg_time64", "shutdown",
        ],
    ),
    allow(
        "inter-process communication inside the IPC namespace: pipes, SysV message queues, \
         semaphores and shared memory, POSIX message queues",
        &[
            "pipe", "pipe2", "msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop",
            "semtimedop", "semtimedop_time64", "semctl", "shmget", "shmat", "shmdt", "shmctl",
            "mq_open", "mq_unlink", "mq_timedsend", "mq_timedsend_time64", "mq_timedreceive",
            "mq_timedreceive_time64", "mq_notify", "mq_getsetattr",
        ],
    ),
    allow(
        "asynchronous I/O (the io_submit family, not io_uring)",
        &[
            "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
            "io_pgetevents_time64",
        ],
    ),
    allow(
        "identity of the system as the UTS namespace shows it, and the mounts of the own \
         mount namespace (read-only queries)",
        &["uname", "sysinfo", "statmount", "listmount"],
    ),
    Group {
        purpose: "new processes and threads without new namespaces (clone3 gets ENOSYS, \
                  below, so libcs use clone)",
        needs: Needs::Nothing,
        verdict: Verdict::AllowIfClear {
            index: 0,
            mask: CLONE_NAMESPACES,
        },
        names: &["clone"],
    },
    Group {
        purpose: "unsharing process attributes (files, fs, SysV semaphore undo lists) \
                  without new namespaces",
        needs: Needs::Nothing,
        verdict: Verdict::AllowIfClear {
            index: 0,
            mask: UNSHARE_NAMESPACES,
        },
        names: &["unshare"],
    },
    Group {
        purpose: "clone3: its flags are in memory the filter cannot read; ENOSYS makes libcs \
                  fall back to clone",
        needs: Needs::Nothing,
        verdict: Verdict::Errno(libc::ENOSYS as u32),
        names: &["clone3"],
    },
    Group {
        purpose: "personality: the Linux and 32-bit personalities and the query, not the \
                  flags that weaken address-space randomisation or execute protection",
        needs: Needs::Nothing,
        verdict: Verdict::AllowIfOneOf {
            index: 0,
            values: SAFE_PERSONALITIES,
        },
        names: &["personality"],
    },
    Group {
        purpose: "with CAP_SYS_ADMIN: new namespaces other than user namespaces",
        needs: Needs::Cap("CAP_SYS_ADMIN"),
        verdict: Verdict::AllowIfClear {
            index: 0,
            mask: CLONE_NEWUSER,
        },
        names: &["clone", "unshare"],
    },
    allow_with(
        "CAP_SYS_ADMIN",
        "with CAP_SYS_ADMIN: mounts (old and new mount API), pivot_root, joining \
         namespaces, host and domain names, fanotify groups",
        &[
            "mount", "umount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount",
            "fspick", "move_mount", "open_tree", "open_tree_attr", "mount_setattr", "setns",
            "sethostname", "setdomainname", "fanotify_init",
        ],
    ),
    allow_with("CAP_SYS_CHROOT", "with CAP_SYS_CHROOT: chroot", &["chroot"]),
    allow_with(
        "CAP_SYS_PTRACE",
        "with CAP_SYS_PTRACE: tracing and inspecting other processes (strace, gdb)",
        &[
            "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp",
            "pidfd_getfd",
        ],
    ),
    allow_with(
        "CAP_SYS_TIME",
        "with CAP_SYS_TIME: setting the system clock",
        &["settimeofday", "clock_settime", "clock_settime64", "stime"],
    ),
    allow_with(
        "CAP_SYS_NICE",
        "with CAP_SYS_NICE: moving pages of other processes between NUMA nodes",
        &["move_pages", "migrate_pages"],
    ),
    allow_with(
        "CAP_SYSLOG",
        "with CAP_SYSLOG: the kernel log, which is the host's",
        &["syslog"],
    ),
    allow_with(
        "CAP_SYS_TTY_CONFIG",
        "with CAP_SYS_TTY_CONFIG: hanging up the terminal",
        &["vhangup"],
    ),
];

/// What a container never gets, whatever its capabilities: these syscalls fall to the default
/// action (EPERM). Listed so the reason is written down, and tested.
#[rustfmt::skip]
pub static DENIED: &[Group] = &[
    deny(
        "replacing or extending the running kernel: loading and removing modules, kexec, \
         rebooting",
        &[
            "init_module", "finit_module", "delete_module", "create_module", "query_module",
            "get_kernel_syms", "kexec_load", "kexec_file_load", "reboot",
        ],
    ),
    deny(
        "kernel interfaces that are a frequent first step of kernel exploits: io_uring, eBPF, \
         perf events, userfaultfd (stalls the kernel at a chosen copy), the keyrings (not \
         namespaced), vmsplice (page-reference bugs)",
        &[
            "io_uring_setup", "io_uring_enter", "io_uring_register", "bpf", "perf_event_open",
            "userfaultfd", "keyctl", "add_key", "request_key", "vmsplice",
        ],
    ),
    deny(
        "host-wide state no container owns: swap, process accounting, disk quotas, I/O ports, \
         the kernel's profiling cookies",
        &[
            "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "iopl", "ioperm",
            "lookup_dcookie",
        ],
    ),
    deny(
        "opening files by handle: a handle names an inode on the whole filesystem, so it \
         reaches past the container's root (the 'shocker' escape)",
        &["open_by_handle_at", "name_to_handle_at"],
    ),
    deny(
        "legacy x86 modes with a history of kernel bugs: vm86, per-process LDT entries",
        &["vm86", "vm86old", "modify_ldt"],
    ),
    deny(
        "obsolete interfaces no current libc calls (most return ENOSYS anyway)",
        &[
            "_sysctl", "uselib", "ustat", "sysfs", "bdflush", "nfsservctl", "oldstat",
            "oldfstat", "oldlstat", "olduname", "oldolduname", "readdir", "sgetmask", "ssetmask",
            "epoll_ctl_old", "epoll_wait_old", "afs_syscall", "tuxcall", "security", "putpmsg",
            "getpmsg", "vserver", "break", "ftime", "gtty", "stty", "lock", "mpx", "prof",
            "profil", "idle", "ulimit",
        ],
    ),
];

/// i386 multiplexers the profile does not name: the compiler routes each socket and SysV IPC
/// call through them by the rules of the call's own name.
pub const MULTIPLEXERS: [&str; 2] = ["socketcall", "ipc"];

/// The default profile for a process whose bounding capability set is `bounding_caps`
/// (names like "CAP_SYS_ADMIN").
pub fn profile(bounding_caps: &[String]) -> Seccomp {
    let has = |c: &str| bounding_caps.iter().any(|b| b == c);
    let mut syscalls = Vec::new();
    for g in ALLOWED {
        if let Needs::Cap(c) = g.needs {
            if !has(c) {
                continue;
            }
        }
        let names: Vec<String> = g.names.iter().map(|s| s.to_string()).collect();
        let rule = |action, errno_ret, args| Syscall {
            names: names.clone(),
            action,
            errno_ret,
            args,
        };
        match g.verdict {
            Verdict::Allow => syscalls.push(rule(SeccompAction::Allow, None, vec![])),
            Verdict::AllowIfClear { index, mask } => syscalls.push(rule(
                SeccompAction::Allow,
                None,
                vec![SeccompArg {
                    index,
                    value: mask,
                    value_two: 0,
                    op: SeccompOp::MaskedEqual,
                }],
            )),
            Verdict::AllowIfOneOf { index, values } => {
                for &v in values {
                    syscalls.push(rule(
                        SeccompAction::Allow,
                        None,
                        vec![SeccompArg {
                            index,
                            value: v,
                            value_two: 0,
                            op: SeccompOp::Equal,
                        }],
                    ));
                }
            }
            Verdict::Errno(e) => syscalls.push(rule(SeccompAction::Errno, Some(e), vec![])),
        }
    }
    Seccomp {
        default_action: SeccompAction::Errno,
        default_errno_ret: Some(DEFAULT_ERRNO),
        architectures: vec![Arch::X86_64, Arch::X86, Arch::X32],
        flags: vec![],
        listener_path: None,
        listener_metadata: None,
        syscalls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::SeccompData;
    use crate::{
        action_name, compile, syscall_number, Abi, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, RET_ALLOW,
        RET_ERRNO,
    };
    use std::collections::BTreeSet;

    fn caps(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// runc's `spec` set, the sandbox's set, and every capability.
    fn cap_sets() -> Vec<Vec<String>> {
        let all: Vec<&str> = vec![
            "CAP_SYS_ADMIN",
            "CAP_SYS_CHROOT",
            "CAP_SYS_PTRACE",
            "CAP_SYS_TIME",
            "CAP_SYS_NICE",
            "CAP_SYSLOG",
            "CAP_SYS_TTY_CONFIG",
            "CAP_SYS_MODULE",
            "CAP_SYS_BOOT",
            "CAP_SYS_RAWIO",
            "CAP_BPF",
            "CAP_PERFMON",
            "CAP_DAC_READ_SEARCH",
            "CAP_NET_ADMIN",
        ];
        vec![
            vec![],
            caps(&["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]),
            caps(&all),
        ]
    }

    fn eval(caps: &[String], abi: Abi, name: &str, args: [u64; 6]) -> Option<u32> {
        let f = compile(&profile(caps)).unwrap();
        let nr = syscall_number(abi, name)?;
        let arch = match abi {
            Abi::I386 => AUDIT_ARCH_I386,
            _ => AUDIT_ARCH_X86_64,
        };
        Some(f.evaluate(&SeccompData {
            nr,
            arch,
            instruction_pointer: 0,
            args,
        }))
    }

    const EPERM: u32 = RET_ERRNO | DEFAULT_ERRNO;

    #[test]
    fn every_syscall_of_the_tables_is_placed_once() {
        let mut allowed = BTreeSet::new();
        for g in ALLOWED {
            for n in g.names {
                assert!(
                    syscall_number(Abi::X86_64, n).is_some()
                        || syscall_number(Abi::I386, n).is_some(),
                    "{n}: not in the syscall tables"
                );
                allowed.insert(*n);
            }
        }
        let mut denied = BTreeSet::new();
        for g in DENIED {
            for n in g.names {
                assert!(denied.insert(*n), "{n} is denied twice");
                assert!(!allowed.contains(n), "{n} is both allowed and denied");
            }
        }
        let unplaced: Vec<&str> = crate::tables::SYSCALLS
            .iter()
            .map(|e| e.0)
            .filter(|n| !allowed.contains(n) && !denied.contains(n) && !MULTIPLEXERS.contains(n))
            .collect();
        assert!(
            unplaced.is_empty(),
            "neither allowed nor denied by the default profile (place them): {unplaced:?}"
        );
    }

    #[test]
    fn compiles_small_for_every_capability_set() {
        for c in cap_sets() {
            let f = compile(&profile(&c)).unwrap();
            assert!(f.skipped_names().is_empty(), "{:?}", f.skipped_names());
            assert!(f.len() < 600, "{} instructions", f.len());
        }
    }

    #[test]
    fn denied_groups_get_eperm_whatever_the_capabilities() {
        for c in cap_sets() {
            for g in DENIED {
                for n in g.names {
                    for abi in [Abi::X86_64, Abi::I386] {
                        if let Some(r) = eval(&c, abi, n, [0; 6]) {
                            assert_eq!(action_name(r), action_name(EPERM), "{n} {abi:?} {c:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn namespaces_need_cap_sys_admin_and_user_namespaces_are_refused() {
        let none = caps(&[]);
        let admin = caps(&["CAP_SYS_ADMIN"]);
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        let fork = libc::SIGCHLD as u64;
        for abi in [Abi::X86_64, Abi::I386] {
            for c in [&none, &admin] {
                assert_eq!(
                    eval(c, abi, "clone", [thread, 0, 0, 0, 0, 0]),
                    Some(RET_ALLOW)
                );
                assert_eq!(
                    eval(c, abi, "clone", [fork, 0, 0, 0, 0, 0]),
                    Some(RET_ALLOW)
                );
                let user = fork | CLONE_NEWUSER;
                assert_eq!(eval(c, abi, "clone", [user, 0, 0, 0, 0, 0]), Some(EPERM));
                assert_eq!(
                    eval(c, abi, "unshare", [CLONE_NEWUSER, 0, 0, 0, 0, 0]),
                    Some(EPERM)
                );
                let files = libc::CLONE_FILES as u64;
                assert_eq!(
                    eval(c, abi, "unshare", [files, 0, 0, 0, 0, 0]),
                    Some(RET_ALLOW)
                );
                assert_eq!(
                    eval(c, abi, "clone3", [0; 6]),
                    Some(RET_ERRNO | libc::ENOSYS as u32)
                );
            }
            for flag in [
                libc::CLONE_NEWNS,
                libc::CLONE_NEWCGROUP,
                libc::CLONE_NEWUTS,
                libc::CLONE_NEWIPC,
                libc::CLONE_NEWPID,
                libc::CLONE_NEWNET,
                libc::CLONE_NEWTIME,
            ] {
                let f = flag as u64;
                assert_eq!(eval(&none, abi, "unshare", [f, 0, 0, 0, 0, 0]), Some(EPERM));
                assert_eq!(
                    eval(&admin, abi, "unshare", [f, 0, 0, 0, 0, 0]),
                    Some(RET_ALLOW)
                );
                if flag != libc::CLONE_NEWTIME {
                    let f = f | fork;
                    assert_eq!(eval(&none, abi, "clone", [f, 0, 0, 0, 0, 0]), Some(EPERM));
                    assert_eq!(
                        eval(&admin, abi, "clone", [f, 0, 0, 0, 0, 0]),
                        Some(RET_ALLOW)
                    );
                }
            }
        }
        // The high half of a 64-bit flags word does not hide a namespace flag.
        let sneaky = (1u64 << 32) | CLONE_NEWUSER;
        assert_eq!(
            eval(&admin, Abi::X86_64, "unshare", [sneaky, 0, 0, 0, 0, 0]),
            Some(EPERM)
        );
    }

    #[test]
    fn capability_gated_groups_follow_the_bounding_set() {
        for g in ALLOWED {
            let (Needs::Cap(cap), Verdict::Allow) = (g.needs, g.verdict) else {
                continue;
            };
            for n in g.names {
                for abi in [Abi::X86_64, Abi::I386] {
                    let Some(without) = eval(&[], abi, n, [0; 6]) else {
                        continue;
                    };
                    assert_eq!(without, EPERM, "{n} without {cap}");
                    assert_eq!(eval(&caps(&[cap]), abi, n, [0; 6]), Some(RET_ALLOW), "{n}");
                }
            }
        }
    }

    #[test]
    fn personality_keeps_to_the_safe_values() {
        for v in SAFE_PERSONALITIES {
            assert_eq!(
                eval(&[], Abi::X86_64, "personality", [*v, 0, 0, 0, 0, 0]),
                Some(RET_ALLOW)
            );
        }
        let addr_no_randomize = 0x0040000;
        let read_implies_exec = 0x0400000;
        for v in [
            addr_no_randomize,
            read_implies_exec,
            0x8 | addr_no_randomize,
        ] {
            assert_eq!(
                eval(&[], Abi::X86_64, "personality", [v, 0, 0, 0, 0, 0]),
                Some(EPERM)
            );
        }
    }

    #[test]
    fn unknown_numbers_get_eperm_and_newer_ones_enosys() {
        let f = compile(&profile(&[])).unwrap();
        let run = |nr| {
            f.evaluate(&SeccompData {
                nr,
                arch: AUDIT_ARCH_X86_64,
                instruction_pointer: 0,
                args: [0; 6],
            })
        };
        // 335..=423 is a gap in the x86_64 table.
        assert_eq!(run(400), EPERM);
        assert_eq!(run(1000), RET_ERRNO | libc::ENOSYS as u32);
        assert_eq!(
            run(syscall_number(Abi::X86_64, "getpid").unwrap()),
            RET_ALLOW
        );
    }
}
