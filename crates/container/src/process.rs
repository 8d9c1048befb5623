//! The container process's own attributes: user and groups, rlimits,
//! personality, scheduling, I/O priority, memory policy, CPU affinity,
//! environment and program lookup, signal state — applied by the init right
//! before execve.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use oci::{IoPriority, MemoryPolicy, Process, Rlimit, Scheduler, User};
use rustix::process::{Resource, Rlimit as RRlimit};
use rustix::thread::{set_thread_res_gid, set_thread_res_uid};

use crate::error::{msg, Context, Result};
use crate::sys;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn rlimit_resource(name: &str) -> Option<Resource> {
    Some(match name {
        "RLIMIT_AS" => Resource::As,
        "RLIMIT_CORE" => Resource::Core,
        "RLIMIT_CPU" => Resource::Cpu,
        "RLIMIT_DATA" => Resource::Data,
        "RLIMIT_FSIZE" => Resource::Fsize,
        "RLIMIT_LOCKS" => Resource::Locks,
        "RLIMIT_MEMLOCK" => Resource::Memlock,
        "RLIMIT_MSGQUEUE" => Resource::Msgqueue,
        "RLIMIT_NICE" => Resource::Nice,
        "RLIMIT_NOFILE" => Resource::Nofile,
        "RLIMIT_NPROC" => Resource::Nproc,
        "RLIMIT_RSS" => Resource::Rss,
        "RLIMIT_RTPRIO" => Resource::Rtprio,
        "RLIMIT_RTTIME" => Resource::Rttime,
        "RLIMIT_SIGPENDING" => Resource::Sigpending,
        "RLIMIT_STACK" => Resource::Stack,
        _ => return None,
    })
}

/// Check rlimits against what this process may set, before anything is created:
/// a hard limit above the runtime's own cannot be granted without
/// CAP_SYS_RESOURCE in the initial user namespace, and even root is refused on
/// some hosts. Probing with prlimit on ourselves would change us, so compare.
pub fn check_rlimits(rlimits: &[Rlimit]) -> Result<()> {
    let privileged = crate::userns::host_capable(rustix::thread::CapabilitySet::SYS_RESOURCE);
    for (i, r) in rlimits.iter().enumerate() {
        let res = rlimit_resource(&r.typ)
            .ok_or_else(|| msg(format!("process.rlimits[{i}]: unknown type {}", r.typ)))?;
        let cur = rustix::process::getrlimit(res);
        let hard = cur.maximum.unwrap_or(u64::MAX);
        if !privileged && r.hard > hard {
            return Err(msg(format!(
                "process.rlimits[{i}]: {} hard limit {} is above the runtime's own hard limit {hard}, which cannot be raised without CAP_SYS_RESOURCE{}",
                r.typ,
                r.hard,
                if crate::userns::unprivileged() {
                    " (an unprivileged runtime never has it over the host)"
                } else {
                    ""
                }
            )));
        }
    }
    Ok(())
}

/// The runtime's own oom_score_adj, which a new process inherits.
fn own_oom_score_adj() -> Option<i32> {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Check `process.oomScoreAdj` before anything is created: the kernel lets only a holder
/// of CAP_SYS_RESOURCE over the host lower the value a process inherits (raising it is
/// always allowed), so an unprivileged runtime asked for less than its own value fails now,
/// with a message saying why, instead of in the middle of `create`.
pub fn check_oom_score_adj(adj: i32) -> Result<()> {
    let Some(cur) = own_oom_score_adj() else {
        return Ok(());
    };
    if adj < cur && !crate::userns::host_capable(rustix::thread::CapabilitySet::SYS_RESOURCE) {
        return Err(msg(format!(
            "process.oomScoreAdj {adj}: below the runtime's own value {cur}, which the container inherits; lowering it needs CAP_SYS_RESOURCE over the host, which {} lacks (raising it is always allowed)",
            if crate::userns::unprivileged() {
                "an unprivileged runtime"
            } else {
                "this runtime"
            }
        )));
    }
    Ok(())
}

/// Write `process.oomScoreAdj` for process `pid`.
pub fn set_oom_score_adj(pid: i32, adj: i32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/oom_score_adj"), adj.to_string()).map_err(|e| {
        let why = match (e.raw_os_error(), own_oom_score_adj()) {
            (Some(libc::EACCES), Some(cur)) if adj < cur => format!(
                " (below the current value {cur}: lowering it needs CAP_SYS_RESOURCE over the host)"
            ),
            _ => String::new(),
        };
        msg(format!(
            "process.oomScoreAdj {adj}: write /proc/{pid}/oom_score_adj: {e}{why}"
        ))
    })
}

pub fn set_rlimits(rlimits: &[Rlimit]) -> Result<()> {
    for (i, r) in rlimits.iter().enumerate() {
        let res = rlimit_resource(&r.typ).expect("validated rlimit name");
        let lim = |v: u64| if v == u64::MAX { None } else { Some(v) };
        let new = RRlimit {
            current: lim(r.soft),
            maximum: lim(r.hard),
        };
        rustix::process::setrlimit(res, new).map_err(|e| {
            let cur = rustix::process::getrlimit(res).maximum.map_or("unlimited".into(), |m| m.to_string());
            msg(format!(
                "process.rlimits[{i}]: setrlimit {} soft {} hard {}: {} (current hard limit {cur}; hard limits cannot be raised here)",
                r.typ,
                r.soft,
                r.hard,
                std::io::Error::from(e)
            ))
        })?;
    }
    Ok(())
}

pub fn set_personality(p: &oci::Personality) -> Result<()> {
    const PER_LINUX: libc::c_ulong = 0x0000;
    const PER_LINUX32: libc::c_ulong = 0x0008;
    let persona = if p.domain == "LINUX32" {
        PER_LINUX32
    } else {
        PER_LINUX
    };
    sys::personality(persona).ctx(|| format!("linux.personality {}", p.domain))
}

pub fn set_scheduler(s: &Scheduler) -> Result<()> {
    let policy = match s.policy.as_str() {
        "SCHED_OTHER" => 0,
        "SCHED_FIFO" => 1,
        "SCHED_RR" => 2,
        "SCHED_BATCH" => 3,
        "SCHED_ISO" => 4,
        "SCHED_IDLE" => 5,
        "SCHED_DEADLINE" => 6,
        p => return Err(msg(format!("process.scheduler.policy: unknown policy {p}"))),
    };
    let mut flags = 0u64;
    for f in &s.flags {
        flags |= match f.as_str() {
            "SCHED_FLAG_RESET_ON_FORK" => 0x01,
            "SCHED_FLAG_RECLAIM" => 0x02,
            "SCHED_FLAG_DL_OVERRUN" => 0x04,
            "SCHED_FLAG_KEEP_POLICY" => 0x08,
            "SCHED_FLAG_KEEP_PARAMS" => 0x10,
            "SCHED_FLAG_UTIL_CLAMP_MIN" => 0x20,
            "SCHED_FLAG_UTIL_CLAMP_MAX" => 0x40,
            other => {
                return Err(msg(format!(
                    "process.scheduler.flags: unknown flag {other}"
                )))
            }
        };
    }
    let mut attr = sys::SchedAttr {
        sched_policy: policy,
        sched_flags: flags,
        sched_nice: s.nice,
        sched_priority: s.priority,
        sched_runtime: s.runtime,
        sched_deadline: s.deadline,
        sched_period: s.period,
        ..Default::default()
    };
    sys::sched_setattr(&mut attr).ctx(|| format!("process.scheduler: sched_setattr({})", s.policy))
}

pub fn set_io_priority(io: &IoPriority) -> Result<()> {
    let class = match io.class.as_str() {
        "IOPRIO_CLASS_RT" => 1,
        "IOPRIO_CLASS_BE" => 2,
        "IOPRIO_CLASS_IDLE" => 3,
        c => return Err(msg(format!("process.ioPriority.class: unknown class {c}"))),
    };
    sys::ioprio_set(class, io.priority).ctx(|| {
        format!(
            "process.ioPriority: ioprio_set({}, {})",
            io.class, io.priority
        )
    })
}

/// Parse `linux.memoryPolicy` into set_mempolicy(2) arguments.
pub fn mempolicy_args(mp: &MemoryPolicy) -> Result<(i32, Vec<libc::c_ulong>)> {
    let mut mode = match mp.mode.as_str() {
        "MPOL_DEFAULT" => 0,
        "MPOL_PREFERRED" => 1,
        "MPOL_BIND" => 2,
        "MPOL_INTERLEAVE" => 3,
        "MPOL_LOCAL" => 4,
        "MPOL_PREFERRED_MANY" => 5,
        "MPOL_WEIGHTED_INTERLEAVE" => 6,
        m => return Err(msg(format!("linux.memoryPolicy.mode: unknown mode {m}"))),
    };
    for f in &mp.flags {
        mode |= match f.as_str() {
            "MPOL_F_NUMA_BALANCING" => 1 << 13,
            "MPOL_F_RELATIVE_NODES" => 1 << 14,
            "MPOL_F_STATIC_NODES" => 1 << 15,
            other => {
                return Err(msg(format!(
                    "linux.memoryPolicy.flags: unknown flag {other}"
                )))
            }
        };
    }
    let mut mask: Vec<libc::c_ulong> = Vec::new();
    if let Some(nodes) = mp.nodes.as_deref().filter(|n| !n.is_empty()) {
        let ids = sys::parse_id_list(nodes).ok_or_else(|| {
            msg(format!(
                "linux.memoryPolicy.nodes: {nodes:?} is not a node list like 0-3,7"
            ))
        })?;
        let bits = libc::c_ulong::BITS as usize;
        for id in ids {
            if mask.len() <= id / bits {
                mask.resize(id / bits + 1, 0);
            }
            mask[id / bits] |= 1 << (id % bits);
        }
    }
    Ok((mode, mask))
}

pub fn set_memory_policy(mp: &MemoryPolicy) -> Result<()> {
    let (mode, mask) = mempolicy_args(mp)?;
    sys::set_mempolicy(mode, &mask)
        .ctx(|| format!("linux.memoryPolicy: set_mempolicy({})", mp.mode))
}

pub fn set_cpu_affinity(list: &str, field: &str) -> Result<()> {
    let cpus = sys::parse_id_list(list)
        .ok_or_else(|| msg(format!("{field}: {list:?} is not a cpu list like 0-3,7")))?;
    sys::sched_setaffinity(&cpus).ctx(|| format!("{field}: sched_setaffinity({list})"))
}

/// Switch to the configured user, keeping the permitted capabilities across
/// the uid change (PR_SET_KEEPCAPS) so they can be set explicitly afterwards.
pub fn switch_user(u: &User) -> Result<()> {
    // SAFETY: plain prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    if crate::userns::setgroups_denied() {
        // A user namespace whose gid map an unprivileged runtime wrote (its own gid alone):
        // the kernel forbids setgroups in it. The process keeps the supplementary groups
        // the user had on the host (unmapped, they show as the overflow gid), which grant
        // it nothing the user did not have; asking for more is an error (as with runc).
        if !u.additional_gids.is_empty() {
            return Err(msg(format!(
                "process.user.additionalGids {:?}: setgroups is denied in this user namespace (an unprivileged user mapping only its own gid); map more gids through newgidmap and /etc/subgid",
                u.additional_gids
            )));
        }
    } else {
        sys::setgroups(&u.additional_gids).ctx(|| {
            format!(
                "setgroups({:?}) (process.user.additionalGids)",
                u.additional_gids
            )
        })?;
    }
    let gid = rustix::process::Gid::from_raw(u.gid);
    set_thread_res_gid(gid, gid, gid).ctx(|| format!("setresgid({}) (process.user.gid)", u.gid))?;
    let uid = rustix::process::Uid::from_raw(u.uid);
    set_thread_res_uid(uid, uid, uid).ctx(|| format!("setresuid({}) (process.user.uid)", u.uid))?;
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    Ok(())
}

/// The container's environment: process.env, then `extra` (variables the
/// runtime adds), with one entry per name where the later one wins, at the
/// position of its last occurrence (runc's rule: `exec --env K=V` and a
/// `--process` file that repeats a name replace the earlier value instead of
/// adding a second entry, which getenv would never see). HOME comes from the
/// container's /etc/passwd when it is unset (as runc does); `passwd` is only
/// called, to read the file, in that case.
pub fn environment(
    p: &Process,
    extra: &[String],
    passwd: impl FnOnce() -> Option<String>,
) -> Vec<String> {
    let name = |kv: &str| kv.split_once('=').map_or(kv, |(k, _)| k).to_string();
    let all: Vec<&String> = p.env.iter().chain(extra).collect();
    let mut seen = std::collections::HashSet::new();
    let mut env: Vec<String> = all
        .iter()
        .rev()
        .filter(|kv| seen.insert(name(kv)))
        .map(|kv| kv.to_string())
        .collect();
    env.reverse();
    if !seen.contains("HOME") {
        let home = passwd()
            .as_deref()
            .and_then(|text| {
                text.lines().find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() >= 6 && f[2].parse() == Ok(p.user.uid)).then(|| f[5].to_string())
                })
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "/".into());
        env.push(format!("HOME={home}"));
    }
    env
}

fn is_executable(p: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(p) else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
}

/// Find the program to execute, as execvp would, in the container (after pivot_root).
pub fn find_program(arg0: &str, env: &[String], cwd: &str) -> Result<PathBuf> {
    if arg0.contains('/') {
        let p = if arg0.starts_with('/') {
            PathBuf::from(arg0)
        } else {
            Path::new(cwd).join(arg0)
        };
        if is_executable(&p) {
            return Ok(p);
        }
        let why = match std::fs::metadata(&p) {
            Err(e) => e.to_string(),
            Ok(m) if m.is_dir() => "is a directory".into(),
            Ok(_) => "permission denied".into(),
        };
        return Err(msg(format!("exec: {arg0:?}: {why}")));
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand = Path::new(dir).join(arg0);
        if is_executable(&cand) {
            return Ok(cand);
        }
    }
    Err(msg(format!(
        "exec: {arg0:?}: executable file not found in $PATH"
    )))
}

/// The process's own attributes, set in the container right before the
/// user and capability switch (shared by a container's init and `exec`):
/// LSM labels, rlimits, personality, scheduling, I/O priority, memory policy,
/// umask; then the program is resolved, so a missing binary fails early.
/// Returns what execve needs and whether chdir to process.cwd (as root)
/// already succeeded.
pub fn prepare(
    p: &Process,
    linux: &oci::Linux,
    lsm: &crate::lsm::Lsm,
    memory_policy: Option<&MemoryPolicy>,
    extra_env: &[String],
) -> Result<(ExecArgs, bool)> {
    lsm.set_exec_labels(p)?;
    set_rlimits(&p.rlimits)?;
    if let Some(pers) = &linux.personality {
        set_personality(pers)?;
    }
    if let Some(s) = &p.scheduler {
        set_scheduler(s)?;
    }
    if let Some(io) = &p.io_priority {
        set_io_priority(io)?;
    }
    if let Some(mp) = memory_policy {
        set_memory_policy(mp)?;
    }
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(
        p.user.umask.unwrap_or(0o022),
    ));
    let env = environment(p, extra_env, || std::fs::read_to_string("/etc/passwd").ok());
    let chdir_done = rustix::process::chdir(p.cwd.as_str()).is_ok();
    let program = find_program(&p.args[0], &env, &p.cwd)?;
    Ok((exec_args(&program, &p.args, &env)?, chdir_done))
}

/// What execve needs, prepared before the seccomp filter is installed: the
/// pointer arrays are built here so the call itself allocates nothing.
pub struct ExecArgs {
    pub path: CString,
    argv: Vec<CString>,
    /// Owns the strings `envp_ptrs` points into.
    #[allow(dead_code)]
    envp: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
    /// The environment as text (for startContainer hooks without their own).
    pub env: Vec<String>,
}

impl ExecArgs {
    /// execve(2); returns only on failure.
    pub fn execve(&self) -> std::io::Error {
        sys::execve(&self.path, &self.argv_ptrs, &self.envp_ptrs)
    }

    pub fn argv(&self) -> &[CString] {
        &self.argv
    }
}

fn ptrs(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

pub fn exec_args(path: &Path, args: &[String], env: &[String]) -> Result<ExecArgs> {
    let c = |s: &str, what: &str| {
        CString::new(s).map_err(|_| msg(format!("{what} contains a NUL byte: {s:?}")))
    };
    let argv: Vec<CString> = args
        .iter()
        .map(|a| c(a, "process.args"))
        .collect::<Result<_>>()?;
    let envp: Vec<CString> = env
        .iter()
        .map(|e| c(e, "process.env"))
        .collect::<Result<_>>()?;
    // The pointers point into the CStrings' own buffers, which do not move
    // when the vectors holding them do.
    Ok(ExecArgs {
        path: CString::new(path.as_os_str().as_bytes())
            .map_err(|_| msg("program path contains a NUL byte"))?,
        argv_ptrs: ptrs(&argv),
        envp_ptrs: ptrs(&envp),
        argv,
        envp,
        env: env.to_vec(),
    })
}

/// The container starts with an empty signal mask and default dispositions:
/// execve keeps both (ignored signals stay ignored), and the runtime may have
/// changed them.
pub fn reset_signals() {
    // SAFETY: sigset manipulation on a local, then sigprocmask/signal with valid arguments.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in 1..libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
}

/// Make fds 3..3+n inheritable (the engine's preserved descriptors).
pub fn inherit_fds(n: u32) -> Result<()> {
    for fd in 3..3 + n as i32 {
        // SAFETY: fcntl on a descriptor number; errors are reported.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags < 0 {
            return Err(std::io::Error::last_os_error())
                .ctx(|| format!("--preserve-fds: fd {fd} is not open"));
        }
        // SAFETY: as above.
        unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_from_passwd() {
        let p = Process {
            user: User {
                uid: 1000,
                ..Default::default()
            },
            env: vec!["PATH=/bin".into()],
            ..Default::default()
        };
        let passwd = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        let read = || Some(passwd.to_string());
        assert_eq!(
            environment(&p, &[], read),
            vec!["PATH=/bin", "HOME=/home/alice"]
        );
        assert_eq!(environment(&p, &[], || None), vec!["PATH=/bin", "HOME=/"]);
        let mut q = p.clone();
        q.env.push("HOME=/x".into());
        let unread = || -> Option<String> { panic!("passwd read although HOME is set") };
        assert_eq!(environment(&q, &[], unread), vec!["PATH=/bin", "HOME=/x"]);
    }

    #[test]
    fn one_entry_per_name_and_the_later_wins() {
        let p = Process {
            env: vec![
                "A=1".into(),
                "B=2".into(),
                "A=3".into(),
                "HOME=/h".into(),
                "FLAG".into(),
            ],
            ..Default::default()
        };
        assert_eq!(
            environment(&p, &["B=4".into(), "C=5".into()], || None),
            vec!["A=3", "HOME=/h", "FLAG", "B=4", "C=5"]
        );
    }

    #[test]
    fn exec_args_are_null_terminated() {
        let e = exec_args(Path::new("/bin/sh"), &["sh".into()], &["A=1".into()]).unwrap();
        assert_eq!(e.argv_ptrs.len(), 2);
        assert!(e.argv_ptrs[1].is_null() && e.envp_ptrs[1].is_null());
        // SAFETY: the pointer points into e.envp[0], alive with `e`.
        let first = unsafe { std::ffi::CStr::from_ptr(e.envp_ptrs[0]) };
        assert_eq!(first.to_str().unwrap(), "A=1");
        assert!(exec_args(Path::new("/x"), &["a\0b".into()], &[]).is_err());
    }

    #[test]
    fn program_lookup() {
        assert_eq!(
            find_program("sh", &["PATH=/nonexistent:/bin".into()], "/").unwrap(),
            PathBuf::from("/bin/sh")
        );
        let e = find_program("no-such-prog-xyz", &[], "/")
            .unwrap_err()
            .to_string();
        assert!(e.contains("executable file not found in $PATH"), "{e}");
        assert!(find_program("/etc", &[], "/")
            .unwrap_err()
            .to_string()
            .contains("is a directory"));
        assert!(find_program("./nope", &[], "/").is_err());
    }

    #[test]
    fn mempolicy() {
        let mp = MemoryPolicy {
            mode: "MPOL_BIND".into(),
            nodes: Some("0,2-3,65".into()),
            flags: vec!["MPOL_F_STATIC_NODES".into()],
        };
        let (mode, mask) = mempolicy_args(&mp).unwrap();
        assert_eq!(mode, 2 | (1 << 15));
        assert_eq!(mask, vec![0b1101, 0b10]);
        let bad = MemoryPolicy {
            nodes: Some("x".into()),
            ..mp
        };
        assert!(mempolicy_args(&bad).is_err());
    }

    #[test]
    fn rlimit_names_cover_validation() {
        for n in oci::RLIMIT_NAMES {
            assert!(rlimit_resource(n).is_some(), "{n}");
        }
    }
}
