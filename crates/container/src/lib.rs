//! Build and run OCI containers: the library under bulkhead's runtime commands.
//!
//! ## Architecture notes
//! - One module per kernel concept: [`namespaces`], [`userns`] (what an
//!   unprivileged runtime may do: id maps, newuidmap), [`rootfs`] (mounts,
//!   pivot_root, masked paths), [`devices`], [`process`] (user, rlimits,
//!   scheduling...), [`capabilities`], [`hooks`], [`console`], [`lsm`], [`state`]
//!   (state dir and locking), [`sync`] (runtime ↔ init channel). [`create`] and
//!   [`init`] are the two halves of container creation; [`Runtime`] is the
//!   lifecycle API the CLI calls.
//! - Rootless is the same code, not a mode: the runtime asks
//!   [`userns::unprivileged`] where privilege matters (cgroups it may not write
//!   are left out, device rules dropped, rlimits and oom_score_adj checked
//!   against its own), and the init bind-mounts devices whenever it is in a user
//!   namespace, whether the config made one or the runtime already runs in one
//!   (rootless podman, an unprivileged `sandbox`).
//! - The start path is designed for speed: the container's init is a clone3()
//!   child of the runtime (no re-exec of the binary), the config is parsed and
//!   validated once, and parent and child synchronise over one socketpair.
//! - Syscalls go through `rustix` (typed, no libc allocation surprises), with
//!   `libc` for the few it lacks (clone3, mount_setattr, sched_setattr...), in
//!   [`sys`]. Capability names resolve through the `caps` crate.
//! - The runtime binary is protected from being overwritten through
//!   /proc/PID/exe (CVE-2019-5736) by making the init non-dumpable until it
//!   executes the user's program: processes in the container then cannot open
//!   its /proc/PID/exe without CAP_SYS_PTRACE over the host user namespace.
//!   See [`exe`] for the remaining case and its cost.

pub mod capabilities;
pub mod console;
pub mod create;
pub mod devices;
pub mod error;
pub mod exe;
pub mod exec;
pub mod foreground;
pub mod hooks;
pub mod init;
pub mod launch;
pub mod lsm;
pub mod mounts;
pub mod namespaces;
pub mod notify;
pub mod paths;
pub mod process;
pub mod rootfs;
pub mod state;
pub mod sync;
pub mod sys;
pub mod userns;

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

pub use create::{CreateOptions, Created};
use error::{msg, Context};
pub use error::{Error, Result};
use state::{Saved, StateDir};

/// Why a container may have no cgroup: said wherever a command needs one.
pub const NO_CGROUP: &str = "it was created by an unprivileged runtime that could write no cgroup hierarchy, and runs in that runtime's cgroup; a cgroup v2 subtree delegated to the user gives it one";

/// The container runtime, rooted at a state directory (`--root`).
#[derive(Debug, Clone)]
pub struct Runtime {
    pub root: PathBuf,
}

/// Open a pidfd for the container init, checking it is still the same
/// process (pid reuse) after the open, so signals cannot hit a stranger.
fn init_pidfd(s: &Saved) -> Result<Option<std::os::fd::OwnedFd>> {
    let Some(pid) = Pid::from_raw(s.pid) else {
        return Ok(None);
    };
    let fd = match pidfd_open(pid, PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::SRCH) => return Ok(None),
        Err(e) => return Err(e).ctx(|| format!("pidfd_open({})", s.pid)),
    };
    if !s.init_alive() {
        return Ok(None);
    }
    Ok(Some(fd))
}

/// Wait until the process behind `fd` has exited (or the timeout passes).
fn wait_exit(fd: &impl AsFd, timeout: Duration) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let ts = Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: timeout.subsec_nanos() as i64,
    };
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    loop {
        match poll(&mut fds, Some(&ts)) {
            Ok(n) => return n > 0,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return false,
        }
    }
}

/// Signal numbers from names: "KILL", "SIGKILL", "9".
pub fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        return Err(msg(format!("invalid signal number {n}")));
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => {
            if let Some(off) = name
                .strip_prefix("RTMIN+")
                .and_then(|o| o.parse::<i32>().ok())
            {
                return Ok(libc::SIGRTMIN() + off);
            }
            return Err(msg(format!("unknown signal {s:?}")));
        }
    };
    Ok(n)
}

impl Runtime {
    pub fn new(root: impl Into<PathBuf>) -> Runtime {
        Runtime { root: root.into() }
    }

    pub fn create(&self, id: &str, opts: &CreateOptions) -> Result<Created> {
        create::create(&self.root, id, opts)
    }

    /// Run the user's program of a created container.
    pub fn start(&self, id: &str) -> Result<()> {
        let sd = StateDir::open(&self.root, id, true)?;
        let saved = sd.load()?;
        let status = saved.status();
        if status != oci::Status::Created {
            return Err(Error::State {
                op: "start",
                id: id.into(),
                status,
            });
        }
        let state_json = serde_json::to_string(&saved.oci_state(oci::Status::Created))
            .expect("state serialises");
        let notify = match &saved.notify_socket {
            Some(_) => Some(notify::bind(&sd)?),
            None => None,
        };
        let path = sd.fd_path(state::START_SOCKET);
        let mut conn = UnixStream::connect(&path).map_err(|e| {
            msg(format!(
                "container {id:?}: its init is not waiting for start ({e})"
            ))
        })?;
        conn.write_all(state_json.as_bytes())
            .ctx(|| "send the start request".into())?;
        conn.shutdown(std::net::Shutdown::Write)
            .ctx(|| "send the start request".into())?;
        // The init closes the connection by executing (close-on-exec), or
        // writes why it could not; a seccomp listener fd goes to the agent.
        let answer = launch::wait_for_exec(conn.as_fd(), saved.pid, |fd| {
            let spec = exec::load_config(&sd)?;
            let state = saved.oci_state(oci::Status::Created);
            launch::send_to_listener(&spec, fd, saved.pid, &state)
        })?;
        // Without the socket the state reads `running` (see `StateDir::load`): nothing to save.
        let removed = std::fs::remove_file(sd.start_socket());
        if !answer.is_empty() {
            return Err(Error::Msg(String::from_utf8_lossy(&answer).into_owned()));
        }
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).ctx(|| format!("remove {}", sd.start_socket().display()))
            }
            _ => {}
        }
        if let (Some(sock), Some(host)) = (&notify, &saved.notify_socket) {
            if let Some(fd) = init_pidfd(&saved)? {
                notify::relay_ready(sock, host, &fd, saved.pid)?;
            }
        }
        if let Some(h) = &saved.hooks {
            let json = serde_json::to_string(&saved.oci_state(oci::Status::Running))
                .expect("state serialises");
            if let Err(e) = hooks::run("poststart", &h.poststart, &json) {
                tracing::warn!("{e}");
            }
        }
        Ok(())
    }

    /// The state of one container; `creating` while its create runs.
    pub fn state(&self, id: &str) -> Result<state::Report> {
        let (sd, busy) = StateDir::peek(&self.root, id)?;
        sd.report(busy)
    }

    /// Every container, including those whose create runs (`creating`) or
    /// was killed (`stopped`).
    pub fn list(&self) -> Result<Vec<state::Report>> {
        state::list(&self.root)
    }

    /// The saved state (for engines-facing commands that need more than the report).
    pub fn load(&self, id: &str) -> Result<Saved> {
        StateDir::open(&self.root, id, false)?.load()
    }

    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<()> {
        let sd = StateDir::open(&self.root, id, false)?;
        let saved = sd.load()?;
        let status = saved.status();
        if status == oci::Status::Stopped {
            return Err(Error::State {
                op: "kill",
                id: id.into(),
                status,
            });
        }
        if all {
            if let Some(cg) = &saved.cgroup {
                return Ok(cgroups::Cgroup::from_saved(cg).kill_all(signal)?);
            }
            if saved.private_pid_ns && init_pidfd(&saved)?.is_some() {
                // No cgroup of its own (an unprivileged runtime could write none): its
                // pid namespace holds every process of the container.
                return namespaces::signal_pid_namespace(saved.pid, signal);
            }
        }
        let fd = init_pidfd(&saved)?.ok_or(Error::State {
            op: "kill",
            id: id.into(),
            status: oci::Status::Stopped,
        })?;
        // SAFETY: the signal number was parsed from a known list or range.
        let sig = unsafe { Signal::from_raw_unchecked(signal) };
        pidfd_send_signal(&fd, sig).ctx(|| format!("send signal {signal} to container {id:?}"))?;
        // A frozen process cannot act on SIGKILL: thaw a paused container so
        // the kill takes effect (as runc does); other signals wait for resume.
        if signal == libc::SIGKILL && status == oci::Status::Paused {
            if let Some(cg) = &saved.cgroup {
                cgroups::Cgroup::from_saved(cg).thaw()?;
            }
        }
        Ok(())
    }

    /// Delete a container: stopped or created ones always, running ones with `force`.
    /// A container whose create was killed reads `stopped`: everything its
    /// create recorded goes (processes, cgroup directories, pid file, state).
    /// One whose create is still running is waited for (its lock).
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        self.delete_if(id, force, |_| true).map(|_| ())
    }

    /// [`Runtime::delete`], if `owned` accepts the container's saved state
    /// (`None`: a directory without state, left by a create killed right
    /// after claiming the ID; nothing else exists then). The decision is
    /// taken under the directory's lock. Returns whether it was deleted.
    pub fn delete_if(
        &self,
        id: &str,
        force: bool,
        owned: impl FnOnce(Option<&Saved>) -> bool,
    ) -> Result<bool> {
        let sd = match StateDir::open(&self.root, id, true) {
            Ok(sd) => sd,
            Err(Error::NotFound(_)) if force => return Ok(false),
            Err(e) => return Err(e),
        };
        let saved = match sd.load() {
            Ok(s) => s,
            // A directory without state: nothing else can own it (we hold
            // its lock, so its create is gone): remove it.
            Err(Error::NotFound(_)) if owned(None) => return sd.remove().map(|_| true),
            Err(Error::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        if !owned(Some(&saved)) {
            return Ok(false);
        }
        let status = saved.status();
        if matches!(status, oci::Status::Running | oci::Status::Paused) && !force {
            return Err(Error::State {
                op: "delete",
                id: id.into(),
                status,
            });
        }
        let cg = saved.cgroup.as_ref().map(cgroups::Cgroup::from_saved);
        if saved.unfinished() || status != oci::Status::Stopped || !saved.private_pid_ns {
            // Everything still running in the container goes (without a pid
            // namespace, processes can outlive the init).
            if let Some(cg) = &cg {
                let _ = cg.kill_all(libc::SIGKILL);
            }
            // (The init of a killed create is dying already: wait for it.)
            if let Some(fd) = init_pidfd(&saved)? {
                let _ = pidfd_send_signal(&fd, Signal::KILL);
                if !wait_exit(&fd, Duration::from_secs(10)) {
                    return Err(msg(format!(
                        "container {id:?}: init {} did not exit after SIGKILL",
                        saved.pid
                    )));
                }
            }
        }
        if let Some(cg) = &cg {
            if cg.is_frozen() {
                let _ = cg.thaw();
            }
            cg.destroy()?;
        }
        if let Some(h) = &saved.hooks {
            let json = serde_json::to_string(&saved.oci_state(oci::Status::Stopped))
                .expect("state serialises");
            if let Err(e) = hooks::run("poststop", &h.poststop, &json) {
                tracing::warn!("{e}");
            }
        }
        if let Some(pf) = &saved.pid_file {
            // Only the temporary file is ours: the pid file is the engine's.
            let _ = std::fs::remove_file(create::pid_file_tmp(pf));
        }
        sd.remove().map(|_| true)
    }

    /// Freeze (`pause`) or thaw (`resume`) every process of the container.
    pub fn set_paused(&self, id: &str, pause: bool) -> Result<()> {
        let sd = StateDir::open(&self.root, id, true)?;
        let saved = sd.load()?;
        let status = saved.status();
        let ok = if pause {
            status == oci::Status::Running
        } else {
            status == oci::Status::Paused
        };
        if !ok {
            return Err(Error::State {
                op: if pause { "pause" } else { "resume" },
                id: id.into(),
                status,
            });
        }
        let cg = saved.cgroup.as_ref().ok_or_else(|| {
            msg(format!(
                "cannot {} container {id:?}: it has no cgroup, so no freezer ({NO_CGROUP})",
                if pause { "pause" } else { "resume" }
            ))
        })?;
        let cg = cgroups::Cgroup::from_saved(cg);
        if pause {
            cg.freeze()?
        } else {
            cg.thaw()?
        }
        Ok(())
    }
}

/// Exit code of a wait status, shell style (128+signal when killed).
pub fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}

pub use foreground::block_forwarded_signals;

impl Runtime {
    /// `run`: create + start; in the foreground, forward signals, wait, delete,
    /// and return the process's exit code.
    pub fn run(&self, id: &str, opts: &CreateOptions, detach: bool) -> Result<i32> {
        let old_mask = if detach {
            None
        } else {
            Some(block_forwarded_signals())
        };
        let res = self.run_inner(id, opts, detach);
        if let Some(m) = old_mask {
            foreground::restore_signals(&m);
        }
        res
    }

    fn run_inner(&self, id: &str, opts: &CreateOptions, detach: bool) -> Result<i32> {
        // In the foreground without a console socket, the runtime holds the
        // pty itself (if the config asks for a terminal) and relays it.
        let mut opts = opts.clone();
        let relay = if !detach && opts.console_socket.is_none() && opts.console_fd.is_none() {
            let r = console::Receiver::new()?;
            opts.console_fd = Some(r.console_fd());
            Some(r)
        } else {
            None
        };
        let created = self.create(id, &opts)?;
        let master = relay.and_then(console::Receiver::master);
        if let Err(e) = self.start(id) {
            let _ = self.delete(id, true);
            // SAFETY: reap our child so it does not linger as a zombie.
            unsafe { libc::waitpid(created.pid, std::ptr::null_mut(), libc::WNOHANG) };
            return Err(e);
        }
        if detach {
            return Ok(0);
        }
        let status = foreground::wait(created.pid, master);
        let del = self.delete(id, true);
        let code = exit_code(status?);
        del?;
        Ok(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("sigterm").unwrap(), 15);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("SIGRTMIN+1").unwrap(), libc::SIGRTMIN() + 1);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("0").is_err());
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(9), 137);
    }
}
