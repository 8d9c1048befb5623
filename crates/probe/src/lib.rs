//! A breakout-probe battery: run as a process inside any isolation (a bulkhead sandbox, an
//! OCI container of any runtime, a plain shell on the host), it tries for real each operation
//! a container escape or a kernel exploit needs and reports, per probe, whether the isolation
//! let it through (`allowed`), stopped it (`blocked`, with the errno) or whether it could not
//! be tried here (`not_applicable`, with the reason — never counted as blocked).
//!
//! | module | probes |
//! | --- | --- |
//! | [`mounts`] | mount proc, cgroup2, tmpfs; fsopen |
//! | [`kernel_files`] | write sysrq-trigger, core_pattern, /sys/kernel, cgroup.procs; read kcore, kallsyms |
//! | [`devices`] | read /dev/mem, mknod a block device, open /dev/kvm |
//! | [`kernel_apis`] | modules, kexec, reboot, raw and packet sockets, keyrings, bpf, perf, userfaultfd, io_uring, open_by_handle_at |
//! | [`namespaces`] | unshare of each namespace kind, clone and clone3 with CLONE_NEWUSER |
//! | [`process`] | ptrace of pid 1, chroot escape, host pids, leaked descriptors, no_new_privs, seccomp, CAP_SYS_ADMIN |
//! | [`compare`] | the battery in a busybox bundle under several OCI runtimes, side by side |
//!
//! # Safety of the attempts
//! The battery must be harmless even where everything is allowed: run as root on a host.
//! Every probe is built so that success proves the permission without using it:
//! - calls that would act are given an argument the kernel validates *after* its permission
//!   checks and refuses: `reboot` with a wrong magic number (EINVAL), `kexec_load` with an
//!   undefined flag (EINVAL), `finit_module` with an invalid descriptor (EBADF);
//! - writes write nothing new: zero bytes to the sysrq trigger, the current value back to
//!   core_pattern and to a /sys/kernel setting, the probe's own pid to its own cgroup;
//! - whatever changes the process (namespaces, keyrings, chroot, ptrace attach) happens in a
//!   forked child that exits at once, which undoes it; mounts are made in such a child, in a
//!   private mount namespace where it can make one, on a fresh temporary directory, and
//!   unmounted; created files (the device node) are removed;
//! - `ptrace` uses PTRACE_SEIZE, which does not stop the tracee; the kernel detaches when
//!   the tracing child exits.
//!
//! The exit code of `bulkhead probe` is 0 whatever the score: it is a measurement.

pub mod compare;
pub mod devices;
pub mod kernel_apis;
pub mod kernel_files;
pub mod mounts;
pub mod namespaces;
pub mod process;
mod sys;

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or command the comparison needs.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A probe name, runtime or fixture the command line asks for that cannot be used.
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// What the isolation did with one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The operation went through (or passed every permission check).
    Allowed,
    /// The isolation stopped it.
    Blocked,
    /// It could not be attempted here (the kernel lacks the feature...).
    NotApplicable,
}

impl Outcome {
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Allowed => "ALLOWED",
            Outcome::Blocked => "blocked",
            Outcome::NotApplicable => "n/a",
        }
    }
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub name: String,
    pub result: Outcome,
    pub detail: String,
}

/// One probe's answer before it is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub result: Outcome,
    pub detail: String,
}

impl Verdict {
    pub fn allowed(detail: impl Into<String>) -> Verdict {
        Verdict {
            result: Outcome::Allowed,
            detail: detail.into(),
        }
    }

    pub fn blocked(detail: impl Into<String>) -> Verdict {
        Verdict {
            result: Outcome::Blocked,
            detail: detail.into(),
        }
    }

    pub fn not_applicable(detail: impl Into<String>) -> Verdict {
        Verdict {
            result: Outcome::NotApplicable,
            detail: detail.into(),
        }
    }

    /// A call refused with errno `e`. ENOSYS without any seccomp filter means the kernel
    /// lacks the syscall (`what`): not applicable; with a filter it may be the filter's
    /// answer, and the call reaches nothing either way: blocked.
    pub fn refused(e: i32, what: &str) -> Verdict {
        if e == libc::ENOSYS && sys::seccomp_mode() == Some(0) {
            return Verdict::not_applicable(format!("this kernel does not implement {what}"));
        }
        Verdict::blocked(sys::errno_text(e))
    }

    /// A probe's forked child: exit 0 = allowed (`ok`), an errno = refused, a signal =
    /// blocked (a seccomp KILL action ends the child that way).
    fn from_child(end: std::io::Result<sys::ChildEnd>, what: &str, ok: &str) -> Verdict {
        match end {
            Ok(sys::ChildEnd::Code(0)) => Verdict::allowed(ok),
            Ok(sys::ChildEnd::Code(e)) => Verdict::refused(e, what),
            Ok(sys::ChildEnd::Signal(s)) => Verdict::blocked(format!("killed by signal {s}")),
            Err(e) => Verdict::not_applicable(format!("fork failed: {e}")),
        }
    }
}

/// What the probes may need to know about the run.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// A file outside the isolated root (on the host): the chroot escape reports whether it
    /// can see it.
    pub marker: Option<PathBuf>,
}

/// One probe of the battery.
pub struct Probe {
    pub name: &'static str,
    /// What it attempts, in a few words.
    pub attempt: &'static str,
    pub run: fn(&Context) -> Verdict,
}

/// The battery, in report order.
pub static PROBES: &[Probe] = &[
    Probe {
        name: "mount-proc",
        attempt: "mount(2) a new proc filesystem",
        run: mounts::proc,
    },
    Probe {
        name: "mount-cgroup",
        attempt: "mount(2) the cgroup2 hierarchy",
        run: mounts::cgroup,
    },
    Probe {
        name: "mount-tmpfs",
        attempt: "mount(2) a tmpfs",
        run: mounts::tmpfs,
    },
    Probe {
        name: "fsopen",
        attempt: "fsopen(2) a tmpfs (the new mount API)",
        run: mounts::fsopen,
    },
    Probe {
        name: "write-sysrq-trigger",
        attempt: "open /proc/sysrq-trigger for writing, write 0 bytes",
        run: kernel_files::sysrq_trigger,
    },
    Probe {
        name: "write-core-pattern",
        attempt: "write kernel.core_pattern's current value back",
        run: kernel_files::core_pattern,
    },
    Probe {
        name: "write-sys-kernel",
        attempt: "write a /sys/kernel setting's current value back",
        run: kernel_files::sys_kernel,
    },
    Probe {
        name: "write-cgroup-procs",
        attempt: "write the own pid to the own cgroup's cgroup.procs",
        run: kernel_files::cgroup_procs,
    },
    Probe {
        name: "read-kcore",
        attempt: "read the ELF header of /proc/kcore",
        run: kernel_files::kcore,
    },
    Probe {
        name: "read-dev-mem",
        attempt: "read 16 bytes of /dev/mem",
        run: devices::dev_mem,
    },
    Probe {
        name: "read-kallsyms",
        attempt: "read a non-zero kernel address from /proc/kallsyms",
        run: kernel_files::kallsyms,
    },
    Probe {
        name: "load-module",
        attempt: "finit_module(2) with an invalid descriptor (EBADF = permitted)",
        run: kernel_apis::load_module,
    },
    Probe {
        name: "mknod-block-device",
        attempt: "mknod(2) a node of the block device holding /, open it, remove it",
        run: devices::mknod_block,
    },
    Probe {
        name: "open-dev-kvm",
        attempt: "open /dev/kvm",
        run: devices::dev_kvm,
    },
    Probe {
        name: "socket-raw",
        attempt: "socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)",
        run: kernel_apis::socket_raw,
    },
    Probe {
        name: "socket-packet",
        attempt: "socket(AF_PACKET, SOCK_RAW, ETH_P_ALL)",
        run: kernel_apis::socket_packet,
    },
    Probe {
        name: "unshare-user",
        attempt: "unshare(CLONE_NEWUSER)",
        run: namespaces::user,
    },
    Probe {
        name: "unshare-mount",
        attempt: "unshare(CLONE_NEWNS)",
        run: namespaces::mount,
    },
    Probe {
        name: "unshare-pid",
        attempt: "unshare(CLONE_NEWPID)",
        run: namespaces::pid,
    },
    Probe {
        name: "unshare-net",
        attempt: "unshare(CLONE_NEWNET)",
        run: namespaces::net,
    },
    Probe {
        name: "unshare-ipc",
        attempt: "unshare(CLONE_NEWIPC)",
        run: namespaces::ipc,
    },
    Probe {
        name: "unshare-uts",
        attempt: "unshare(CLONE_NEWUTS)",
        run: namespaces::uts,
    },
    Probe {
        name: "unshare-cgroup",
        attempt: "unshare(CLONE_NEWCGROUP)",
        run: namespaces::cgroup,
    },
    Probe {
        name: "unshare-time",
        attempt: "unshare(CLONE_NEWTIME)",
        run: namespaces::time,
    },
    Probe {
        name: "clone-newuser",
        attempt: "clone(2) with CLONE_NEWUSER",
        run: namespaces::clone_newuser,
    },
    Probe {
        name: "clone3-newuser",
        attempt: "clone3(2) with CLONE_NEWUSER",
        run: namespaces::clone3_newuser,
    },
    Probe {
        name: "keyctl-session",
        attempt: "join a new session keyring (keyctl)",
        run: kernel_apis::keyctl_session,
    },
    Probe {
        name: "add-key",
        attempt: "add_key(2) to the process keyring",
        run: kernel_apis::add_key,
    },
    Probe {
        name: "bpf-map",
        attempt: "bpf(BPF_MAP_CREATE) of a one-entry array",
        run: kernel_apis::bpf_map,
    },
    Probe {
        name: "perf-event-open",
        attempt: "perf_event_open(2) a task-clock counter of the own process",
        run: kernel_apis::perf_event,
    },
    Probe {
        name: "userfaultfd",
        attempt: "userfaultfd(2) (user-mode faults only)",
        run: kernel_apis::userfaultfd,
    },
    Probe {
        name: "io-uring-setup",
        attempt: "io_uring_setup(2) of a one-entry ring",
        run: kernel_apis::io_uring,
    },
    Probe {
        name: "open-by-handle-at",
        attempt: "open_by_handle_at(2) the root inode of /'s filesystem",
        run: kernel_apis::open_by_handle,
    },
    Probe {
        name: "kexec-load",
        attempt: "kexec_load(2) with an undefined flag (EINVAL = permitted)",
        run: kernel_apis::kexec_load,
    },
    Probe {
        name: "reboot",
        attempt: "reboot(2) with a wrong magic number (EINVAL = permitted)",
        run: kernel_apis::reboot,
    },
    Probe {
        name: "ptrace-pid1",
        attempt: "PTRACE_SEIZE pid 1 from a child",
        run: process::ptrace_pid1,
    },
    Probe {
        name: "chroot-escape",
        attempt: "chroot into a subdirectory, walk up with .., chroot there",
        run: process::chroot_escape,
    },
    Probe {
        name: "host-pids-visible",
        attempt: "count the processes of other pid namespaces /proc shows",
        run: process::host_pids,
    },
    Probe {
        name: "leaked-fds",
        attempt: "descriptors above 2 inherited across exec (not LISTEN_FDS)",
        run: process::leaked_fds,
    },
    Probe {
        name: "no-new-privs-off",
        attempt: "PR_GET_NO_NEW_PRIVS is 0 (setuid binaries raise privileges)",
        run: process::no_new_privs_off,
    },
    Probe {
        name: "seccomp-off",
        attempt: "PR_GET_SECCOMP is 0",
        run: process::seccomp_off,
    },
    Probe {
        name: "cap-sys-admin",
        attempt: "CAP_SYS_ADMIN in the effective set",
        run: process::cap_sys_admin,
    },
];

/// The battery's results and score (`--format json` prints this).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub allowed: usize,
    pub blocked: usize,
    pub not_applicable: usize,
    pub probes: Vec<Finding>,
}

impl Report {
    pub fn from_findings(probes: Vec<Finding>) -> Report {
        let count = |o| probes.iter().filter(|f| f.result == o).count();
        Report {
            allowed: count(Outcome::Allowed),
            blocked: count(Outcome::Blocked),
            not_applicable: count(Outcome::NotApplicable),
            probes,
        }
    }

    /// The finding of the probe named `name`.
    pub fn get(&self, name: &str) -> Option<&Finding> {
        self.probes.iter().find(|f| f.name == name)
    }

    /// "0 of 41 applicable probes allowed (41 blocked, 2 not applicable)".
    pub fn score(&self) -> String {
        format!(
            "{} of {} applicable probes allowed ({} blocked, {} not applicable)",
            self.allowed,
            self.allowed + self.blocked,
            self.blocked,
            self.not_applicable
        )
    }

    /// One line per probe and the score.
    pub fn table(&self) -> String {
        let w = self.probes.iter().map(|f| f.name.len()).max().unwrap_or(5);
        let mut out = format!("{:<w$}  {:<7}  DETAIL\n", "PROBE", "RESULT");
        for f in &self.probes {
            let _ = writeln!(out, "{:<w$}  {:<7}  {}", f.name, f.result.word(), f.detail);
        }
        let _ = writeln!(out, "\nscore: {}", self.score());
        out
    }
}

/// Run every probe, or only those named in `only` (an unknown name is an error naming it).
pub fn run(ctx: &Context, only: &[String]) -> Result<Report> {
    if let Some(bad) = only
        .iter()
        .find(|n| !PROBES.iter().any(|p| p.name == n.as_str()))
    {
        return Err(Error::Invalid(format!(
            "--only {bad}: no such probe (they are: {})",
            PROBES.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(Report::from_findings(
        PROBES
            .iter()
            .filter(|p| only.is_empty() || only.iter().any(|n| n == p.name))
            .map(|p| {
                let v = (p.run)(ctx);
                Finding {
                    name: p.name.to_string(),
                    result: v.result,
                    detail: v.detail,
                }
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_json_has_the_documented_shape() {
        let mut names: Vec<&str> = PROBES.iter().map(|p| p.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), PROBES.len());
        let r = Report::from_findings(vec![
            Finding {
                name: "a".into(),
                result: Outcome::Allowed,
                detail: "x".into(),
            },
            Finding {
                name: "b".into(),
                result: Outcome::NotApplicable,
                detail: "y".into(),
            },
        ]);
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["allowed"], 1);
        assert_eq!(v["blocked"], 0);
        assert_eq!(v["not_applicable"], 1);
        assert_eq!(v["probes"][1]["result"], "not_applicable");
        assert_eq!(v["probes"][0]["name"], "a");
        assert_eq!(v["probes"][0]["detail"], "x");
        assert!(r
            .table()
            .contains("score: 1 of 1 applicable probes allowed"));
    }
}
