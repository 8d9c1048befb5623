//! A container process in the foreground of the runtime (`run` and `exec`
//! without --detach, `sandbox`): every signal the runtime receives goes to
//! the process (SIGWINCH resizes its terminal), and with a terminal but no
//! engine to hold it, the runtime relays between its own stdio and the pty.
//!
//! The terminal relay, for any caller that holds a pty master (a container's,
//! or a host pty whose other side a VM monitor relays to a guest): our
//! terminal goes to raw mode (keystrokes, ^C included, reach the pty's line
//! discipline untouched, which signals the pty's foreground job), the pty
//! gets our window size at the start and on every SIGWINCH, output still in
//! the pty when the process exits is passed on, and our terminal's mode is
//! restored whichever way the loop ends. Signals to the runtime arrive on a
//! signalfd (the caller blocked them), so SIGTERM or SIGHUP end the loop
//! through the [`Supervisor`], never the runtime half-way with the terminal
//! raw; only SIGKILL can leave it raw.

use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Instant;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
use rustix::termios::tcgetpgrp;

use crate::console;
use crate::error::{msg, Context, Result};

/// Block the signals the foreground forwards, returning the previous mask;
/// container processes reset their mask before execve.
pub fn block_forwarded_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on locals and sigprocmask with valid pointers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        for s in [
            libc::SIGCHLD,
            libc::SIGKILL,
            libc::SIGSTOP,
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGILL,
            libc::SIGFPE,
        ] {
            libc::sigdelset(&mut set, s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old);
        old
    }
}

pub fn restore_signals(old: &libc::sigset_t) {
    // SAFETY: restoring a mask saved by block_forwarded_signals.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, old, std::ptr::null_mut()) };
}

fn write_all(fd: &impl AsFd, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        match rustix::io::write(fd, buf) {
            Ok(0) => return false,
            Ok(n) => buf = &buf[n..],
            Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => continue,
            Err(_) => return false,
        }
    }
    true
}

/// What to do, beyond relaying, while a foreground process runs: the default
/// forwards every signal; `sandbox` adds a timeout and its stop policy.
pub trait Supervisor {
    /// When [`Supervisor::timer`] is next due, if ever.
    fn deadline(&self) -> Option<Instant> {
        None
    }
    /// The deadline has passed.
    fn timer(&mut self, _process: BorrowedFd<'_>) {}
    /// A signal reached the runtime; return true to forward it to the process.
    fn signal(&mut self, _signo: i32, _process: BorrowedFd<'_>) -> bool {
        true
    }
    /// Input relayed to the pty makes its line discipline send `signo`
    /// (Ctrl-C, Ctrl-\, Ctrl-Z) to the pty's foreground process group
    /// `foreground` (a pid of our namespace). The kernel delivers it; this is
    /// for what it will not do (a pid namespace's init with the default
    /// action ignores it).
    fn terminal_signal(&mut self, _signo: i32, _foreground: i32, _process: BorrowedFd<'_>) {}
}

/// Forward every signal.
pub struct Forward;

impl Supervisor for Forward {}

/// Forward signals (and relay the pty, if `master` is given) until `pid`, a
/// child of ours, exits; return its wait status.
pub fn wait(pid: i32, master: Option<OwnedFd>) -> Result<i32> {
    supervise(pid, master, &mut Forward)
}

/// [`wait`] with a [`Supervisor`] deciding about signals and timers.
pub fn supervise(pid: i32, master: Option<OwnedFd>, sup: &mut dyn Supervisor) -> Result<i32> {
    // SAFETY: a signalfd for the signals blocked by block_forwarded_signals.
    let sfd = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_BLOCK, std::ptr::null(), &mut set);
        libc::signalfd(-1, &set, libc::SFD_CLOEXEC)
    };
    if sfd < 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| "signalfd".into());
    }
    // SAFETY: sfd is a fresh descriptor we own.
    let sfd = unsafe { OwnedFd::from_raw_fd(sfd) };
    let pidfd = pidfd_open(
        Pid::from_raw(pid).ok_or_else(|| msg("bad pid"))?,
        PidfdFlags::empty(),
    )
    .ctx(|| format!("pidfd_open({pid})"))?;
    let _raw = master.as_ref().map(|m| {
        console::copy_winsize(m);
        console::RawMode::stdin()
    });
    let stdin = rustix::stdio::stdin();
    let stdout = rustix::stdio::stdout();
    let mut stdin_open = master.is_some();
    let mut master_open = master.is_some();
    let mut buf = vec![0u8; 16 * 1024];
    let mut quoted = false;
    loop {
        let mut fds = vec![
            PollFd::new(&sfd, PollFlags::IN),
            PollFd::new(&pidfd, PollFlags::IN),
        ];
        if let (Some(m), true) = (&master, master_open) {
            fds.push(PollFd::new(m, PollFlags::IN));
        }
        if stdin_open {
            fds.push(PollFd::new(&stdin, PollFlags::IN));
        }
        let deadline = sup.deadline();
        let timeout = deadline.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: left.subsec_nanos() as i64,
            }
        });
        match poll(&mut fds, timeout.as_ref()) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e).ctx(|| "poll".into()),
        }
        let ready: Vec<PollFlags> = fds.iter().map(|f| f.revents()).collect();
        drop(fds);
        if deadline.is_some_and(|d| Instant::now() >= d) {
            sup.timer(pidfd.as_fd());
        }
        if ready[0].contains(PollFlags::IN) {
            let mut info = [0u8; 128]; // struct signalfd_siginfo
            if rustix::io::read(&sfd, &mut info).unwrap_or(0) == 128 {
                let signo = u32::from_ne_bytes(info[0..4].try_into().expect("4 bytes")) as i32;
                match (&master, signo) {
                    (Some(m), libc::SIGWINCH) => console::copy_winsize(m),
                    _ => {
                        if sup.signal(signo, pidfd.as_fd()) {
                            // SAFETY: the kernel delivered this signal number.
                            let sig = unsafe { Signal::from_raw_unchecked(signo) };
                            let _ = pidfd_send_signal(&pidfd, sig);
                        }
                    }
                }
            }
        }
        let mut i = 2;
        if let (Some(m), true) = (&master, master_open) {
            let r = ready[i];
            i += 1;
            if r.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
                match rustix::io::read(m, &mut buf) {
                    Ok(n) if n > 0 => {
                        write_all(&stdout, &buf[..n]);
                    }
                    // EIO: the container side of the pty is closed.
                    _ => master_open = false,
                }
            }
        }
        if stdin_open {
            let r = ready[i];
            if r.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
                match rustix::io::read(stdin, &mut buf) {
                    Ok(n) if n > 0 => {
                        if let Some(m) = &master {
                            // The foreground group as the key was typed: the
                            // signal may end it and hand the terminal back.
                            let sig = console::input_signal(m, &buf[..n], &mut quoted)
                                .and_then(|s| Some((s, tcgetpgrp(m).ok()?.as_raw_nonzero())));
                            write_all(m, &buf[..n]);
                            if let Some((signo, pgrp)) = sig {
                                sup.terminal_signal(signo, pgrp.get(), pidfd.as_fd());
                            }
                        }
                    }
                    _ => stdin_open = false,
                }
            }
        }
        if ready[1].contains(PollFlags::IN) {
            // Exited: pass on whatever output is still in the pty.
            if let (Some(m), true) = (&master, master_open) {
                let _ = rustix::fs::fcntl_setfl(m, rustix::fs::OFlags::NONBLOCK);
                while let Ok(n) = rustix::io::read(m, &mut buf) {
                    if n == 0 || !write_all(&stdout, &buf[..n]) {
                        break;
                    }
                }
            }
            break;
        }
    }
    let mut status = 0;
    // SAFETY: waitpid on our own child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| format!("wait for {pid}"));
    }
    Ok(status)
}
