//! Cleanup of a sandbox whose bulkhead process dies without cleaning up
//! (SIGKILL, the OOM killer, a crash).
//!
//! A sandbox leaves up to four things: its container (state directory,
//! cgroup directories in every hierarchy, processes), and the directory
//! `<root>/.sandbox/<id>.<pid>` on which its init mounts the host's root. The
//! mounts go with the container's mount namespace, but directories do not
//! remove themselves: an empty cgroup stays until someone
//! calls rmdir, and cgroupfs offers no removal that does not need a live
//! process (v1's `release_agent` is one global program per hierarchy, the
//! host's to set; v2 has nothing of the kind). So someone alive must do it:
//!
//! - not the next invocation: there may never be one, and until then the
//!   leftovers hold memory and names;
//! - a **reaper**: before it creates anything, the sandbox forks a small
//!   process that waits (on a pidfd) for the sandbox process to exit, by any
//!   means, and then removes whatever is left with the runtime's own
//!   `delete --force` (which finds everything: `create` records what it makes
//!   before making it) and the directory. When the sandbox ended normally it
//!   has removed everything itself, and the reaper only sees that the
//!   directory is gone. The reaper is in its own session, so a Ctrl-C or a
//!   signal to the terminal's process group does not reach it, and it keeps
//!   every catchable signal blocked; SIGKILL sent to the reaper itself
//!   still leaves the leftovers (that is the one case left, and
//!   `bulkhead delete --force ID` plus `rmdir` clean it by hand).
//!
//! Nobody waits for the reaper: the sandbox forks it and goes on. What the
//! reaper may remove is fixed before the fork: the sandbox's directory is
//! named by the sandbox's ID *and pid* (`.sandbox/<id>.<pid>`), so it can
//! only be this sandbox's (another sandbox of the same name has another
//! pid), and the sandbox makes it right after the fork, before anything
//! else; and the container's state carries the sandbox process's identity
//! in an annotation ([`OWNER`]), so another sandbox of the same name, or a
//! plain `create` of that ID, is never deleted. (Waiting for the reaper to
//! report, as a first version did, cost a scheduler time slice on a busy
//! machine: the parent blocked until the new child got a CPU.)
//!
//! Cost: one fork per sandbox.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use container::Runtime;

/// Where sandboxes' directories live, under the state root. Not a valid
/// container ID, so `list` skips it.
pub const SANDBOX_DIR: &str = ".sandbox";

/// Annotation naming the process that owns a sandbox's container ("PID
/// START", START from /proc/PID/stat, so a reused pid does not match).
pub const OWNER: &str = "org.bulkhead.sandbox.owner";

/// The sandbox's directory `<root>/.sandbox/<id>.<pid>`; removed (with `.sandbox` if
/// empty) when dropped, after everything else.
pub struct Claim {
    pub dir: PathBuf,
    parent: PathBuf,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.dir);
        // Gone when the last sandbox of this state root ends.
        let _ = fs::remove_dir(&self.parent);
    }
}

/// This process's identity, as [`OWNER`] records it.
pub fn owner() -> String {
    let pid = std::process::id() as i32;
    let start = container::state::proc_stat(pid).map_or(0, |(_, s)| s);
    format!("{pid} {start}")
}

/// Fork the reaper of sandbox `id`, then make the sandbox's directory.
/// The caller must be single-threaded, and should have blocked the signals
/// it handles (the reaper keeps that mask: they stay pending, harmless).
pub fn start(rt: &Runtime, id: &str) -> Result<Claim> {
    let parent = rt.root.join(SANDBOX_DIR);
    let dir = parent.join(format!("{id}.{}", std::process::id()));
    let owner = owner();
    // Opened here, so the reaper watches this process even if it exits
    // before the reaper runs (its pid could be reused by then).
    let me = rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    )
    .context("pidfd_open of the sandbox process")?;
    // SAFETY: the caller is single-threaded, so the child may run any code;
    // it never returns from `reap` (it ends with _exit).
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()).context("fork the sandbox's reaper"),
        0 => reap(rt, id, &dir, &parent, &owner, me),
        _ => {
            drop(me);
            make_dir(&dir, &parent).with_context(|| format!("create {}", dir.display()))?;
            Ok(Claim { dir, parent })
        }
    }
}

/// The reaper's life: wait for the sandbox process, clean up.
fn reap(rt: &Runtime, id: &str, dir: &Path, parent: &Path, owner: &str, sandbox: OwnedFd) -> ! {
    // Out of the terminal's process group and session: job-control signals
    // and a kill of the sandbox's process group do not reach us.
    let _ = rustix::process::setsid();
    // SAFETY: PR_SET_NAME with a NUL-terminated name of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"bulkhead-reaper".as_ptr(), 0, 0, 0) };
    // Hold none of the caller's stdio: a shell reading the sandbox's output
    // must see EOF when the sandbox ends.
    if let Ok(null) = fs::File::options().read(true).write(true).open("/dev/null") {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    wait_exit(&sandbox);
    // The sandbox makes its directory first and removes it last: if it is
    // absent, there is nothing (left) to remove.
    if dir.exists() {
        let res = rt.delete_if(id, true, |s| match s {
            Some(s) => s.annotations.get(OWNER).map(String::as_str) == Some(owner),
            // A directory without state is a create killed before its first
            // write: garbage whoever made it (its lock is free, we hold it).
            None => true,
        });
        if let Err(e) = res {
            tracing::warn!("sandbox {id}: cleanup after the sandbox process died: {e}");
        }
        drop(Claim {
            dir: dir.to_path_buf(),
            parent: parent.to_path_buf(),
        });
    }
    container::sys::exit_now(0)
}

/// mkdir `dir`, creating `parent` as needed.
fn make_dir(dir: &Path, parent: &Path) -> std::io::Result<()> {
    // Another sandbox may remove an empty parent between our two mkdirs.
    let mut tries = 0;
    loop {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(parent)?;
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 5 => tries += 1,
            other => return other,
        }
    }
}

/// Block until the process behind the pidfd has exited (readable pidfd):
/// nothing else may start the cleanup of a sandbox that still runs.
fn wait_exit(pidfd: &OwnedFd) {
    use rustix::event::{poll, PollFd, PollFlags};
    loop {
        let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
        match poll(&mut fds, None) {
            Ok(_) if fds[0].revents().contains(PollFlags::IN) => return,
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => std::thread::sleep(std::time::Duration::from_secs(1)),
        }
    }
}
