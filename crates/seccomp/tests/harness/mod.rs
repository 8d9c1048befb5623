//! The behaviour harness: run a closure in a forked child under an installed filter and see
//! how it ended. Shared with other crates' filter tests (`#[path]` to this file), so every
//! filter bulkhead compiles is checked against the kernel the same way.
#![allow(dead_code)] // each user takes what it needs

use seccomp::Filter;

/// How a forked child ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    Exit(i32),
    Signal(i32),
}

/// Fork; the child sets no_new_privs, installs `filter`, runs `body` and _exits with its
/// value (100 if the install failed). The child only makes raw syscalls after fork (glibc's
/// malloc is fork-safe, but nothing here needs it on the success path).
pub fn in_child(filter: &Filter, body: impl FnOnce() -> i32) -> End {
    // SAFETY: see above; the child never returns into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: plain syscalls, and _exit without running destructors.
        unsafe {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            if filter.install().is_err() {
                libc::_exit(100);
            }
            libc::_exit(body());
        }
    }
    wait(pid)
}

pub fn wait(pid: i32) -> End {
    let mut status = 0;
    // SAFETY: reaping our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    if libc::WIFSIGNALED(status) {
        End::Signal(libc::WTERMSIG(status))
    } else {
        End::Exit(libc::WEXITSTATUS(status))
    }
}

pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
