//! Signals a host-side process (the monitor, an exec relay) passes on to its process in the
//! guest, read from a signalfd.

use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::error::{Context, Result};

pub struct Signals {
    fd: OwnedFd,
}

/// One signal as the kernel reported it.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub signo: i32,
    /// Sent by a process (kill, sigqueue, tgkill): to be forwarded. Signals the kernel
    /// raises itself (SIGWINCH from a terminal, SIGPIPE from our own writes) are not.
    pub from_process: bool,
}

impl Signals {
    /// Block every signal that can be forwarded and read them from a signalfd from now
    /// on. Processes spawned later get an empty mask (std's Command resets it).
    pub fn forwarded() -> Result<Signals> {
        let _ = container::block_forwarded_signals();
        // SAFETY: sigprocmask reads the current mask into a local; signalfd takes it.
        let fd = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigprocmask(libc::SIG_BLOCK, std::ptr::null(), &mut set);
            libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).ctx(|| "signalfd".into());
        }
        // SAFETY: a fresh descriptor we own.
        Ok(Signals {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Every signal pending now.
    pub fn read(&self) -> Vec<Received> {
        let mut out = Vec::new();
        let mut info = [0u8; 128]; // struct signalfd_siginfo
        while let Ok(128) = rustix::io::read(&self.fd, &mut info) {
            let signo = u32::from_ne_bytes(info[0..4].try_into().expect("4 bytes")) as i32;
            let code = i32::from_ne_bytes(info[8..12].try_into().expect("4 bytes"));
            out.push(Received {
                signo,
                from_process: code <= 0,
            });
        }
        out
    }
}
