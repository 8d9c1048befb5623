//! Running the measured commands: in a given mount namespace, optionally in a
//! cgroup, with wall time and the child's own rusage (wait4).

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

#[derive(Debug, Clone, Default)]
pub struct Run {
    pub wall_ms: f64,
    /// User + system CPU time of the command itself.
    pub cpu_ms: f64,
    pub maxrss_kb: i64,
    pub status: i32,
    pub stderr: String,
}

/// Where and how commands run.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// setns() into this mount namespace before exec (the pure-v1 view).
    pub mntns: Option<RawFd>,
    /// Write "0" here before exec (a cgroup's `tasks` or `cgroup.procs` file): the child
    /// moves itself.
    pub cgroup_procs: Option<PathBuf>,
    /// Run as this uid and gid (no supplementary groups): an unprivileged user.
    pub user: Option<(u32, u32)>,
    /// Give the child this descriptor as its fd 3.
    pub fd3: Option<RawFd>,
}

/// Run `cmd` to completion and measure it.
pub fn run(cmd: &mut Command, env: &Env) -> io::Result<Run> {
    // Stderr goes to a memfd of this call: a file on disk would cost every command an inode
    // (this host's root is ext4 without a journal, where each new inode first scans for
    // recently deleted ones), and concurrent calls would share one path.
    let mut errf = memfd("bench-stderr")?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(errf.try_clone()?);
    let mntns = env.mntns;
    let procs = env.cgroup_procs.clone();
    let (user, fd3) = (env.user, env.fd3);
    // SAFETY: only async-signal-safe calls between fork and exec (setns, open,
    // write, dup2, setgroups, setresgid, setresuid); the path bytes were
    // prepared before the fork.
    let procs_c = procs.map(|p| std::ffi::CString::new(p.to_string_lossy().as_bytes()).unwrap());
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = mntns {
                if libc::setns(fd, libc::CLONE_NEWNS) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(p) = &procs_c {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                // "0" means the writing process itself.
                libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
            }
            if let Some(fd) = fd3 {
                if libc::dup2(fd, 3) != 3 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some((uid, gid)) = user {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setresgid(gid, gid, gid) != 0
                    || libc::setresuid(uid, uid, uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let t0 = Instant::now();
    let child = cmd.spawn()?;
    let (status, ru) = wait4(child.id() as i32)?;
    let wall_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let mut stderr = String::new();
    errf.seek(SeekFrom::Start(0))?;
    let _ = errf.read_to_string(&mut stderr);
    Ok(Run {
        wall_ms,
        cpu_ms: tv_ms(ru.ru_utime) + tv_ms(ru.ru_stime),
        maxrss_kb: ru.ru_maxrss,
        status,
        stderr,
    })
}

/// An anonymous in-memory file.
fn memfd(name: &str) -> io::Result<fs::File> {
    let c = std::ffi::CString::new(name).expect("no NUL");
    // SAFETY: memfd_create with a NUL-terminated name; the fd is then owned by the File.
    let fd = unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nothing else owns.
    Ok(unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

fn tv_ms(t: libc::timeval) -> f64 {
    t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0
}

/// wait4 on one child: (exit status, its rusage).
pub fn wait4(pid: i32) -> io::Result<(i32, libc::rusage)> {
    let mut status = 0;
    // SAFETY: rusage is plain data filled by the kernel.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            return Ok((status, ru));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Become the reaper of orphaned descendants: a runtime's `create` exits and
/// leaves the container's init to us, so we can wait for it like a shim does.
pub fn become_subreaper() {
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Wait for a container's init (reparented to us) to exit.
pub fn wait_init(pid: i32) -> io::Result<()> {
    wait4(pid).map(|_| ())
}

/// Reap whatever else was reparented to us.
pub fn reap_orphans() {
    loop {
        // SAFETY: waitpid with WNOHANG on any child.
        let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if r <= 0 {
            break;
        }
    }
}

pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

pub fn file_size(p: &Path) -> u64 {
    fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}
