//! The supervisor's half: checking the jail, creating its cgroup, cloning the child into its
//! namespaces, placing it in the cgroup, serving its setup requests, then waiting for it with
//! the signals handled, and removing the cgroup whatever happens.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use container::foreground::Supervisor;
use container::sync::{Channel, Msg};
use rustix::fs::{Mode, OFlags};
use rustix::process::{pidfd_send_signal, Signal};

use crate::reaper::Reaper;
use crate::{cgroup, child, namespaces, root, sys_err, Error, Inside, Jail, Result};

/// A checked jail whose cgroup exists. Dropping it removes the cgroup.
pub struct Prepared {
    jail: Jail,
    cgroup: Option<cgroups::Cgroup>,
    /// Removes the cgroup if this process dies without doing it.
    reaper: Option<Reaper>,
}

impl Jail {
    /// Check everything that can be wrong with the jail and create its cgroup (with its
    /// limits), after forking the cgroup's [reaper](crate::reaper). On error nothing exists.
    /// The caller must be single-threaded.
    pub fn prepare(self) -> Result<Prepared> {
        for (what, id) in [("uid", self.uid), ("gid", self.gid)] {
            if id == 0 {
                return Err(Error::Invalid(format!(
                    "jail {what} 0: the jailed process must not be root"
                )));
            }
            if id == u32::MAX {
                return Err(Error::Invalid(format!(
                    "jail {what} {id}: not a valid id ((uid_t)-1 means \"unchanged\")"
                )));
            }
        }
        for b in self.ro_binds.iter().chain(&self.rw_binds) {
            root::check_bind(b)?;
        }
        if let Some(at) = &self.host_root {
            root::check_target(at)?;
            // Its own directory: a bind inside or around it would mix host paths into the view.
            let clash = self
                .ro_binds
                .iter()
                .chain(&self.rw_binds)
                .find(|b| b.starts_with(at) || at.starts_with(b));
            if let Some(b) = clash {
                return Err(Error::Invalid(format!(
                    "jail host root at {}: overlaps the bind of {}",
                    at.display(),
                    b.display()
                )));
            }
        }
        for d in &self.devices {
            root::check_device(d)?;
        }
        let beyond = u32::from(container::capabilities::last_cap()) + 1;
        if self.keep_caps.checked_shr(beyond).unwrap_or(0) != 0 {
            return Err(Error::Invalid(format!(
                "jail capabilities {:#x}: beyond this kernel's last capability",
                self.keep_caps
            )));
        }
        for &fd in &self.keep_fds {
            // SAFETY: fcntl(F_GETFD) only probes the descriptor number.
            if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                return Err(Error::Invalid(format!(
                    "descriptor {fd} to keep in the jail is not open (or is stdio)"
                )));
            }
        }
        for r in &self.rlimits {
            if container::process::rlimit_resource(&r.typ).is_none() || r.soft > r.hard {
                return Err(Error::Invalid(format!(
                    "jail rlimit {}: unknown type or soft limit above hard",
                    r.typ
                )));
            }
        }
        container::process::check_rlimits(&self.rlimits)?;
        let Some(plan) = &self.cgroup else {
            return Ok(Prepared {
                jail: self,
                cgroup: None,
                reaper: None,
            });
        };
        let mut cg = cgroup::resolve(&self.name, plan)?;
        let reaper = Reaper::start(&cg)?;
        if let Err(e) = cgroup::make(&mut cg, plan) {
            reaper.disarm();
            return Err(e);
        }
        Ok(Prepared {
            jail: self,
            cgroup: Some(cg),
            reaper: Some(reaper),
        })
    }
}

impl Prepared {
    pub fn jail(&self) -> &Jail {
        &self.jail
    }

    /// The jail's cgroup (its directories, one per hierarchy).
    pub fn cgroup(&self) -> Option<&cgroups::Cgroup> {
        self.cgroup.as_ref()
    }

    /// Clone the child into the jail's namespaces (and, on cgroup v2, its cgroup) and run `f`
    /// there. `f` runs before confinement, with everything of the caller's memory; it confines
    /// itself with [`Inside::confine`] (or [`Inside::exec`]) and returns the process's exit
    /// code or an error text, which the supervisor gets as [`Error::Child`].
    ///
    /// The caller must be single-threaded: the child is a fork-like copy with only the calling
    /// thread, and locks other threads held would stay locked in it.
    pub fn spawn<F>(self, f: F) -> Result<Running>
    where
        F: FnOnce(Inside<'_>) -> std::result::Result<i32, String>,
    {
        let threads = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Threads:"))
                    .and_then(|v| v.trim().parse::<u32>().ok())
            });
        if threads != Some(1) {
            return Err(Error::Invalid(
                "jail: the supervisor must be single-threaded when it spawns the jailed process"
                    .into(),
            ));
        }
        let v2_dir: Option<OwnedFd> = match self.cgroup.as_ref().and_then(|c| c.v2_dir()) {
            Some(d) => Some(
                rustix::fs::open(
                    &d.path,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| sys_err(format!("open {}", d.path.display()))(e.into()))?,
            ),
            None => None,
        };
        let self_join = match &self.cgroup {
            Some(cg) => Some(cg.self_join()?),
            None => None,
        };
        let (chan, chan_child) = Channel::pair().map_err(sys_err("socketpair"))?;
        let old_mask = container::foreground::block_forwarded_signals();
        let flags = namespaces::flags(&namespaces::AT_CLONE);
        // SAFETY: the caller is single-threaded (checked above); the child runs child::run,
        // which ends with _exit and never returns here.
        let pid = unsafe { container::sys::clone3(flags, v2_dir.as_ref().map(|f| f.as_raw_fd())) };
        let pid = match pid {
            Ok(0) => child::run(&self.jail, chan_child, &old_mask, self_join.as_ref(), f),
            Ok(pid) => pid,
            Err(e) => {
                container::foreground::restore_signals(&old_mask);
                return Err(sys_err(format!("clone3 with namespaces {flags:#x}"))(e));
            }
        };
        drop(chan_child);
        let running = Running {
            pid,
            chan,
            old_mask,
            status: None,
            prepared: self,
        };
        // v2: clone3 placed the child (CLONE_INTO_CGROUP); v1: the child moves itself through
        // the descriptors it inherited, whose copies we close now.
        drop(self_join);
        Ok(running)
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if let Some(r) = self.reaper.take() {
            r.disarm();
        }
        if let Some(cg) = self.cgroup.take() {
            let _ = cg.destroy();
        }
    }
}

/// A jailed child. Dropping it kills the child (if still running), reaps it and removes the
/// cgroup.
pub struct Running {
    pid: i32,
    chan: Channel,
    old_mask: libc::sigset_t,
    /// The wait status, once reaped.
    status: Option<i32>,
    // Dropped last: the cgroup goes after the child is reaped.
    prepared: Prepared,
}

impl Running {
    /// The child's pid (in the supervisor's pid namespace).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn prepared(&self) -> &Prepared {
        &self.prepared
    }

    /// Serve the child's setup until it reports the jail complete; its error (or its death)
    /// otherwise.
    pub fn wait_ready(&mut self) -> Result<()> {
        loop {
            let m = self
                .chan
                .recv()
                .map_err(sys_err("read from the jailed process"))?;
            match m {
                // The cgroup placement was done in spawn: the child may go on.
                Some(Msg::Ready) => self
                    .chan
                    .send(&Msg::Go(String::new()))
                    .map_err(sys_err("answer the jailed process"))?,
                Some(Msg::Created) => return Ok(()),
                Some(Msg::Error(text)) => {
                    self.reap();
                    return Err(Error::Child(text));
                }
                Some(other) => {
                    return Err(Error::Child(format!(
                        "unexpected message from the jailed process: {other:?}"
                    )))
                }
                None => {
                    let st = self.reap();
                    return Err(Error::Child(format!(
                        "the jailed process ended during setup ({})",
                        describe(st)
                    )));
                }
            }
        }
    }

    /// Wait for the child to end: how it ended, or the error it reported.
    pub fn wait(mut self) -> Result<Exit> {
        let mut stop = Stop { signal: None };
        let status = container::foreground::supervise(self.pid, None, &mut stop)?;
        self.status = Some(status);
        // The child is gone, so its end of the channel is closed: what it left is all there.
        let mut reported = None;
        while let Ok(Some(m)) = self.chan.recv() {
            if let Msg::Error(text) = m {
                reported = Some(text);
            }
        }
        match (stop.signal, reported) {
            (Some(n), _) => Ok(Exit::Stopped(n)),
            (None, Some(text)) if status != 0 => Err(Error::Child(text)),
            (None, _) if libc::WIFSIGNALED(status) => Ok(Exit::Killed(libc::WTERMSIG(status))),
            (None, _) => Ok(Exit::Code(libc::WEXITSTATUS(status))),
        }
    }

    fn reap(&mut self) -> i32 {
        if let Some(s) = self.status {
            return s;
        }
        let mut st = 0;
        // SAFETY: waitpid on our own child.
        unsafe { libc::waitpid(self.pid, &mut st, 0) };
        self.status = Some(st);
        st
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.status.is_none() {
            // SAFETY: the child is ours and not reaped, so its pid is not reused.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            self.reap();
        }
        container::foreground::restore_signals(&self.old_mask);
    }
}

/// How a jailed process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// Signal N killed it (SIGSYS: a seccomp filter; SIGKILL: the cgroup's OOM killer, or
    /// someone else).
    Killed(i32),
    /// The supervisor received terminating signal N and killed it.
    Stopped(i32),
}

impl Exit {
    /// The shell's exit code for it: the code, or 128+N.
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Killed(n) | Exit::Stopped(n) => 128 + n,
        }
    }
}

fn describe(status: i32) -> String {
    if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("exit status {}", libc::WEXITSTATUS(status))
    }
}

/// Terminating signals end the jailed process with SIGKILL (pid 1 of its namespace ignores
/// anything it has no handler for); job-control and informational ones are not passed on.
struct Stop {
    signal: Option<i32>,
}

impl Supervisor for Stop {
    fn signal(&mut self, signo: i32, process: BorrowedFd<'_>) -> bool {
        let ignored = [
            libc::SIGCHLD,
            libc::SIGWINCH,
            libc::SIGURG,
            libc::SIGCONT,
            libc::SIGTSTP,
            libc::SIGTTIN,
            libc::SIGTTOU,
        ];
        if !ignored.contains(&signo) {
            self.signal.get_or_insert(signo);
            let _ = pidfd_send_signal(process.as_fd(), Signal::KILL);
        }
        false
    }
}
