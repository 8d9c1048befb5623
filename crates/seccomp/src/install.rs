//! Loading a filter into the kernel, and asking the kernel what it supports.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use oci::{SeccompFeatures, SeccompFlag};

use crate::compile::{
    flag_bit, FLAG_LOG, FLAG_NEW_LISTENER, FLAG_SPEC_ALLOW, FLAG_TSYNC, FLAG_TSYNC_ESRCH,
    FLAG_WAIT_KILLABLE_RECV, RET_ALLOW, RET_ERRNO, RET_KILL_PROCESS, RET_KILL_THREAD, RET_LOG,
    RET_TRACE, RET_TRAP, RET_USER_NOTIF,
};
use crate::{Error, Filter, Result};

const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
const SECCOMP_GET_ACTION_AVAIL: libc::c_ulong = 2;

fn seccomp(op: libc::c_ulong, flags: u32, args: *const libc::c_void) -> io::Result<i64> {
    // SAFETY: seccomp(2) reads `args` according to `op`; every caller passes either a valid
    // pointer for that operation or NULL (used only to probe, where the kernel reports
    // EFAULT before doing anything).
    let r = unsafe { libc::syscall(libc::SYS_seccomp, op, flags as libc::c_ulong, args) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Filter {
    /// Install the filter on the calling thread (all threads with TSYNC) with
    /// `seccomp(SECCOMP_SET_MODE_FILTER)`. Returns the listener fd when a rule uses
    /// SCMP_ACT_NOTIFY.
    ///
    /// Without no_new_privs the kernel requires CAP_SYS_ADMIN in the caller's effective
    /// set. The profile applies to everything the caller does after this call, so a
    /// runtime makes it its last step before execve: see "What runs under the filter" in
    /// the crate notes. No allocation happens here on success, so it is safe in a cloned
    /// child.
    pub fn install(&self) -> Result<Option<OwnedFd>> {
        let prog = libc::sock_fprog {
            len: self.program.len() as libc::c_ushort,
            // The kernel only reads the program; SockFilter is #[repr(C)] with the layout
            // of struct sock_filter.
            filter: self.program.as_ptr() as *mut libc::sock_filter,
        };
        let r = seccomp(
            SECCOMP_SET_MODE_FILTER,
            self.flags,
            &prog as *const libc::sock_fprog as *const libc::c_void,
        );
        match r {
            Ok(fd) if self.flags & FLAG_NEW_LISTENER != 0 => {
                // SAFETY: with NEW_LISTENER the kernel returns a new fd that nothing else
                // owns.
                Ok(Some(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
            }
            // With TSYNC (and no TSYNC_ESRCH), a positive value is the id of a thread that
            // could not be synchronised: the filter was not installed.
            Ok(tid) if tid > 0 && self.flags & FLAG_TSYNC != 0 => Err(Error::Tsync { tid }),
            Ok(_) => Ok(None),
            Err(source) => {
                let unsupported = if source.raw_os_error() == Some(libc::EINVAL) {
                    unsupported_flags(self.flags)
                } else {
                    0
                };
                Err(Error::Install {
                    flags: self.flags,
                    unsupported,
                    source,
                })
            }
        }
    }
}

/// Does the kernel know this filter flag? Asked by calling seccomp(2) with the flag and no
/// program: a known flag gets as far as reading the (NULL) program and fails with EFAULT,
/// an unknown one fails with EINVAL. Nothing is installed either way.
fn flag_known(flag: u32) -> bool {
    // WAIT_KILLABLE_RECV is only accepted together with NEW_LISTENER.
    let probe = if flag == FLAG_WAIT_KILLABLE_RECV {
        flag | FLAG_NEW_LISTENER
    } else {
        flag
    };
    matches!(
        seccomp(SECCOMP_SET_MODE_FILTER, probe, std::ptr::null()),
        Err(e) if e.raw_os_error() == Some(libc::EFAULT)
    )
}

fn unsupported_flags(flags: u32) -> u32 {
    let mut bad = 0;
    for bit in 0..32 {
        let f = 1u32 << bit;
        if flags & f != 0 && !flag_known(f) {
            bad |= f;
        }
    }
    bad
}

pub(crate) fn flag_names(flags: u32) -> Vec<String> {
    let names = [
        (FLAG_TSYNC, "SECCOMP_FILTER_FLAG_TSYNC"),
        (FLAG_LOG, "SECCOMP_FILTER_FLAG_LOG"),
        (FLAG_SPEC_ALLOW, "SECCOMP_FILTER_FLAG_SPEC_ALLOW"),
        (FLAG_NEW_LISTENER, "SECCOMP_FILTER_FLAG_NEW_LISTENER"),
        (FLAG_TSYNC_ESRCH, "SECCOMP_FILTER_FLAG_TSYNC_ESRCH"),
        (
            FLAG_WAIT_KILLABLE_RECV,
            "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
        ),
    ];
    (0..32)
        .map(|b| 1u32 << b)
        .filter(|f| flags & f != 0)
        .map(|f| match names.iter().find(|n| n.0 == f) {
            Some(n) => n.1.to_string(),
            None => format!("flag {f:#x}"),
        })
        .collect()
}

const ALL_FLAGS: [SeccompFlag; 4] = [
    SeccompFlag::Tsync,
    SeccompFlag::Log,
    SeccompFlag::SpecAllow,
    SeccompFlag::WaitKillableRecv,
];

fn spec_flag_name(f: SeccompFlag) -> &'static str {
    match f {
        SeccompFlag::Tsync => "SECCOMP_FILTER_FLAG_TSYNC",
        SeccompFlag::Log => "SECCOMP_FILTER_FLAG_LOG",
        SeccompFlag::SpecAllow => "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        SeccompFlag::WaitKillableRecv => "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
    }
}

/// The `flags` values of the spec that the running kernel accepts.
pub fn supported_flags() -> Vec<SeccompFlag> {
    ALL_FLAGS
        .into_iter()
        .filter(|&f| flag_known(flag_bit(f)))
        .collect()
}

/// Does the running kernel implement this `SECCOMP_RET_*` action?
/// (seccomp(SECCOMP_GET_ACTION_AVAIL), Linux 4.14+.)
pub fn action_available(ret: u32) -> bool {
    let action = ret & 0xffff_0000;
    seccomp(
        SECCOMP_GET_ACTION_AVAIL,
        0,
        &action as *const u32 as *const libc::c_void,
    )
    .is_ok()
}

/// The `linux.seccomp` part of the runtime's `features` output (features.md): everything
/// the compiler accepts, with actions and flags narrowed to what this kernel implements.
pub fn features() -> SeccompFeatures {
    let actions = [
        ("SCMP_ACT_KILL", RET_KILL_THREAD),
        ("SCMP_ACT_KILL_PROCESS", RET_KILL_PROCESS),
        ("SCMP_ACT_KILL_THREAD", RET_KILL_THREAD),
        ("SCMP_ACT_TRAP", RET_TRAP),
        ("SCMP_ACT_ERRNO", RET_ERRNO),
        ("SCMP_ACT_TRACE", RET_TRACE),
        ("SCMP_ACT_ALLOW", RET_ALLOW),
        ("SCMP_ACT_LOG", RET_LOG),
        ("SCMP_ACT_NOTIFY", RET_USER_NOTIF),
    ];
    let operators = [
        "SCMP_CMP_NE",
        "SCMP_CMP_LT",
        "SCMP_CMP_LE",
        "SCMP_CMP_EQ",
        "SCMP_CMP_GE",
        "SCMP_CMP_GT",
        "SCMP_CMP_MASKED_EQ",
    ];
    // Every arch name parses; filters are generated for the x86 ones, the others cannot
    // occur on this host (see the crate notes).
    let archs = [
        "SCMP_ARCH_X86",
        "SCMP_ARCH_X86_64",
        "SCMP_ARCH_X32",
        "SCMP_ARCH_ARM",
        "SCMP_ARCH_AARCH64",
        "SCMP_ARCH_MIPS",
        "SCMP_ARCH_MIPS64",
        "SCMP_ARCH_MIPS64N32",
        "SCMP_ARCH_MIPSEL",
        "SCMP_ARCH_MIPSEL64",
        "SCMP_ARCH_MIPSEL64N32",
        "SCMP_ARCH_PPC",
        "SCMP_ARCH_PPC64",
        "SCMP_ARCH_PPC64LE",
        "SCMP_ARCH_S390",
        "SCMP_ARCH_S390X",
        "SCMP_ARCH_PARISC",
        "SCMP_ARCH_PARISC64",
        "SCMP_ARCH_RISCV64",
        "SCMP_ARCH_LOONGARCH64",
        "SCMP_ARCH_M68K",
        "SCMP_ARCH_SH",
        "SCMP_ARCH_SHEB",
    ];
    SeccompFeatures {
        enabled: true,
        actions: actions
            .iter()
            .filter(|a| action_available(a.1))
            .map(|a| a.0.to_string())
            .collect(),
        operators: operators.iter().map(|s| s.to_string()).collect(),
        archs: archs.iter().map(|s| s.to_string()).collect(),
        known_flags: ALL_FLAGS
            .iter()
            .map(|&f| spec_flag_name(f).to_string())
            .collect(),
        supported_flags: supported_flags()
            .into_iter()
            .map(|f| spec_flag_name(f).to_string())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernel_reports_its_flags_and_actions() {
        // The hosts run Linux >= 6.0, which has all four flags and all actions; this test
        // documents that (and fails loudly on an older kernel, where the answer differs).
        let f = features();
        println!("supported flags: {:?}", f.supported_flags);
        println!("available actions: {:?}", f.actions);
        assert!(f
            .supported_flags
            .contains(&"SECCOMP_FILTER_FLAG_TSYNC".to_string()));
        assert!(f
            .supported_flags
            .contains(&"SECCOMP_FILTER_FLAG_SPEC_ALLOW".to_string()));
        assert_eq!(f.known_flags.len(), 4);
        assert!(f.actions.contains(&"SCMP_ACT_NOTIFY".to_string()));
        assert!(f.actions.contains(&"SCMP_ACT_KILL_PROCESS".to_string()));
        // An action value the kernel has never had.
        assert!(!action_available(0x1234_0000));
        // A flag bit the kernel does not define.
        assert!(!flag_known(1 << 20));
        assert_eq!(unsupported_flags(FLAG_TSYNC | (1 << 20)), 1 << 20);
        assert_eq!(
            flag_names(FLAG_LOG | (1 << 20)),
            ["SECCOMP_FILTER_FLAG_LOG", "flag 0x100000"]
        );
    }
}
