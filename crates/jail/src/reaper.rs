//! Removal of the jail's cgroup when its supervisor dies without removing it.
//!
//! The supervisor removes the cgroup once the jailed process has ended, however it ended --
//! unless the supervisor itself is killed with SIGKILL (an engine's timeout, the OOM killer).
//! Its jailed child then dies with it (parent-death signal), but the cgroup's directories
//! stay: cgroupfs directories last until someone calls rmdir, and there is no removal that
//! needs no live process (v1's `release_agent` is one program per hierarchy, the host's to
//! set; v2 has nothing of the kind). So, before it creates the directories, the supervisor
//! forks a **reaper**: a small process (`bulkhead-jailrp` in `ps`) that holds the read end
//! of a pipe whose write end stays in the supervisor (close-on-exec; the jailed child closes
//! its copy with every other inherited descriptor first thing).
//!
//! - A normal end **disarms** it: the supervisor writes one byte *before* it removes the
//!   cgroup, and the reaper exits touching nothing. So a later jail of the same name is
//!   never the reaper's business; the price is a leak if the supervisor is killed in the
//!   microseconds between the byte and the removal.
//! - End of file without that byte means the supervisor died: the reaper waits for the
//!   directories to empty (the jailed process is being killed; a VM's memory takes a moment
//!   to free) and removes them, then the parents the supervisor created, if they are empty.
//!
//! The reaper is in its own session with every signal blocked, holds no other descriptor
//! (its stdio is /dev/null: whoever reads the supervisor's output sees EOF when the
//! supervisor ends), and nobody waits for it. Cost: one fork per jail. A SIGKILL sent to the
//! reaper itself still leaves the directories behind; `rmdir` removes them by hand.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{sys_err, Result};

/// How long the reaper waits for the jailed process to leave the cgroup.
const EMPTY_WAIT: Duration = Duration::from_secs(60);

/// The supervisor's end: dropping it without [`Reaper::disarm`] is the supervisor's death.
pub(crate) struct Reaper {
    disarm: OwnedFd,
}

impl Reaper {
    /// Fork the reaper of `cg`, a cgroup resolved and planned but not yet created
    /// ([`crate::cgroup::resolve`]). The caller must be single-threaded.
    pub(crate) fn start(cg: &cgroups::Cgroup) -> Result<Reaper> {
        let saved = cg.saved();
        let leaves: Vec<CString> = saved.dirs.iter().map(|d| c_path(&d.path)).collect();
        // Parents last, deepest first; a parent another jail uses is not empty and stays.
        let parents: Vec<CString> = saved
            .created
            .iter()
            .rev()
            .filter(|p| !saved.dirs.iter().any(|d| &d.path == *p))
            .map(|p| c_path(p))
            .collect();
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two-element array on success.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(sys_err("pipe for the jail's reaper")(
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: both descriptors were just created and are owned by nothing else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: the caller is single-threaded, so the child may run any code; `reap` never
        // returns (it ends with _exit).
        match unsafe { libc::fork() } {
            -1 => Err(sys_err("fork the jail's reaper")(
                std::io::Error::last_os_error(),
            )),
            0 => {
                drop(write);
                reap(read, &leaves, &parents)
            }
            _ => Ok(Reaper { disarm: write }),
        }
    }

    /// The supervisor is about to remove the cgroup itself: the reaper exits.
    pub(crate) fn disarm(self) {
        // A failed write (the reaper was killed) leaves nothing to do.
        let _ = rustix::io::write(&self.disarm, &[1]);
    }
}

fn c_path(p: &Path) -> CString {
    // Cgroup paths come from mountinfo and a validated name: no NUL inside.
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

/// The reaper's life: wait for the byte or the end of file, clean up after the latter.
fn reap(pipe: OwnedFd, leaves: &[CString], parents: &[CString]) -> ! {
    let fd = pipe.as_raw_fd();
    // SAFETY: plain syscalls on this process's own session, name, signal mask and
    // descriptors; /dev/null is opened before the descriptors above 2 are closed.
    unsafe {
        libc::setsid();
        libc::prctl(libc::PR_SET_NAME, c"bulkhead-jailrp".as_ptr(), 0, 0, 0);
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null >= 0 {
            for std_fd in 0..3 {
                libc::dup2(null, std_fd);
            }
        }
        if fd > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (fd - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (fd + 1) as u32, u32::MAX, 0u32);
    }
    let mut byte = [0u8; 1];
    loop {
        match rustix::io::read(&pipe, &mut byte) {
            Ok(1) => container::sys::exit_now(0),
            Err(rustix::io::Errno::INTR) => continue,
            // End of file (or a broken pipe, which cannot tell us more): the supervisor is gone.
            _ => break,
        }
    }
    let deadline = Instant::now() + EMPTY_WAIT;
    for dir in leaves {
        loop {
            // SAFETY: rmdir of a NUL-terminated path.
            if unsafe { libc::rmdir(dir.as_ptr()) } == 0 {
                break;
            }
            let busy = std::io::Error::last_os_error().raw_os_error() == Some(libc::EBUSY);
            if !busy || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    for dir in parents {
        // SAFETY: rmdir of a NUL-terminated path; a non-empty parent is refused by the kernel.
        unsafe { libc::rmdir(dir.as_ptr()) };
    }
    container::sys::exit_now(0)
}
