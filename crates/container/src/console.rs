//! Terminals: `process.terminal` with `--console-socket`. The container's
//! init opens a pty from its own devpts instance, sends the master to the
//! engine over the console socket (SCM_RIGHTS, as runc does), and makes the
//! slave its controlling terminal, stdio and /dev/console.

use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use oci::ConsoleSize;
use rustix::fs::{Mode, OFlags};
use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};

use crate::error::{Context, Result};
use crate::sys;

/// Connect to the engine's console socket (done by the runtime before clone,
/// so a bad path fails before anything is created).
pub fn connect(path: &Path) -> Result<OwnedFd> {
    let s = UnixStream::connect(path)
        .ctx(|| format!("connect to console socket {}", path.display()))?;
    Ok(s.into())
}

/// Send `fd` with `name` as the message body over a Unix socket.
pub fn send_fd(sock: &impl AsFd, name: &str, fd: &impl AsFd) -> std::io::Result<()> {
    let fds = [fd.as_fd()];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    cmsg.push(SendAncillaryMessage::ScmRights(&fds));
    sendmsg(
        sock,
        &[IoSlice::new(name.as_bytes())],
        &mut cmsg,
        SendFlags::NOSIGNAL,
    )?;
    Ok(())
}

/// A new pty from this process's /dev/ptmx: (master, slave, the slave's name), the window
/// size set to `size` when given. Both descriptors are close-on-exec.
pub fn open_pty(size: Option<ConsoleSize>) -> Result<(OwnedFd, OwnedFd, String)> {
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
        .ctx(|| "open /dev/ptmx".into())?;
    grantpt(&master).ctx(|| "grantpt".into())?;
    unlockpt(&master).ctx(|| "unlockpt".into())?;
    let name = ptsname(&master, Vec::new()).ctx(|| "ptsname".into())?;
    let name = name.to_string_lossy().into_owned();
    let slave = rustix::fs::open(
        name.as_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open {name}"))?;
    if let Some(sz) = size {
        let ws = rustix::termios::Winsize {
            ws_row: sz.height,
            ws_col: sz.width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&master, ws).ctx(|| "set process.consoleSize".into())?;
    }
    Ok((master, slave, name))
}

/// Create the pty inside the container (after pivot_root, so /dev/ptmx is the
/// container's), hand the master to the console socket, and return the slave.
pub fn setup(console_socket: OwnedFd, size: Option<ConsoleSize>) -> Result<(OwnedFd, String)> {
    let (master, slave, name) = open_pty(size)?;
    send_fd(&console_socket, &name, &master)
        .ctx(|| "send the pty master to the console socket".into())?;
    Ok((slave, name))
}

/// Make `slave` the controlling terminal and stdio of this process, and bind
/// it over /dev/console.
pub fn attach(slave: &OwnedFd, name: &str) -> Result<()> {
    make_controlling(slave)?;
    let console = Path::new("/dev/console");
    if !console.exists() {
        std::fs::File::create(console).ctx(|| "create /dev/console".into())?;
    }
    sys::mount(Some(name), console, None, libc::MS_BIND, None)
        .ctx(|| "bind the pty over /dev/console".into())
}

/// A new session with `slave` as its controlling terminal and as stdio.
pub fn make_controlling(slave: &OwnedFd) -> Result<()> {
    rustix::process::setsid().ctx(|| "setsid".into())?;
    rustix::process::ioctl_tiocsctty(slave)
        .ctx(|| "make the pty the controlling terminal".into())?;
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors, which we own.
        if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(slave), fd) } < 0 {
            return Err(std::io::Error::last_os_error()).ctx(|| format!("dup the pty to fd {fd}"));
        }
    }
    Ok(())
}

/// A connected socket pair: the runtime keeps one end to receive the pty
/// master the container process sends over the other (its console socket).
pub fn relay_pair() -> Result<(OwnedFd, OwnedFd)> {
    rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .ctx(|| "socketpair".into())
}

/// A console socket the runtime holds itself, when no engine takes the pty
/// (`run` in the foreground, `sandbox`): create the container with
/// `console_fd: Some(r.console_fd())`, then [`Receiver::master`] is the pty
/// master its process sent, for [`crate::foreground::supervise`] to relay.
pub struct Receiver {
    ours: OwnedFd,
    theirs: OwnedFd,
}

impl Receiver {
    pub fn new() -> Result<Receiver> {
        let (ours, theirs) = relay_pair()?;
        Ok(Receiver { ours, theirs })
    }

    /// The end to pass as `CreateOptions::console_fd` (valid while `self` lives).
    pub fn console_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.theirs)
    }

    /// The pty master, once `create` has returned (it is sent before then);
    /// None if the process sent none.
    pub fn master(self) -> Option<OwnedFd> {
        recv_fd(&self.ours, true).ok().flatten()
    }
}

/// Receive an fd sent with [`send_fd`] (blocking unless `nonblock`).
pub fn recv_fd(sock: &impl AsFd, nonblock: bool) -> std::io::Result<Option<OwnedFd>> {
    use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut buf = [0u8; 256];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let flags = if nonblock {
        RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC
    } else {
        RecvFlags::CMSG_CLOEXEC
    };
    match recvmsg(sock, &mut iov, &mut cmsg, flags) {
        Ok(_) => {}
        Err(rustix::io::Errno::AGAIN) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut got = None;
    for m in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = m {
            got = fds.into_iter().next();
        }
    }
    Ok(got)
}

/// The terminal of this process in raw mode for as long as the guard lives
/// (keystrokes, ^C included, go to the container's pty untouched).
pub struct RawMode {
    saved: Option<rustix::termios::Termios>,
}

impl RawMode {
    pub fn stdin() -> RawMode {
        let stdin = rustix::stdio::stdin();
        let saved = rustix::termios::tcgetattr(stdin).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            raw.make_raw();
            let _ = rustix::termios::tcsetattr(stdin, rustix::termios::OptionalActions::Now, &raw);
        }
        RawMode { saved }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = rustix::termios::tcsetattr(
                rustix::stdio::stdin(),
                rustix::termios::OptionalActions::Now,
                t,
            );
        }
    }
}

/// Is this process run interactively: stdin and stdout a terminal, and this
/// process in its foreground (a job started with `&` is not: switching the
/// terminal it shares with the shell to raw mode would break the shell)?
/// Output redirected to a file keeps plain streams (a pty would turn its
/// newlines into CR LF and merge stderr into it).
pub fn interactive() -> bool {
    let (stdin, stdout) = (rustix::stdio::stdin(), rustix::stdio::stdout());
    rustix::termios::isatty(stdin)
        && rustix::termios::isatty(stdout)
        && rustix::termios::tcgetpgrp(stdin).is_ok_and(|pg| pg == rustix::process::getpgrp())
}

/// The window size of our own terminal (stdin's, else stdout's), if we have one.
pub fn winsize() -> Option<rustix::termios::Winsize> {
    [rustix::stdio::stdin(), rustix::stdio::stdout()]
        .into_iter()
        .find_map(|fd| rustix::termios::tcgetwinsize(fd).ok())
}

/// Our terminal's size as `process.consoleSize`, so a container's pty has
/// it from the start (before the relay's first resize).
pub fn console_size() -> Option<ConsoleSize> {
    winsize()
        .filter(|ws| ws.ws_row > 0 && ws.ws_col > 0)
        .map(|ws| ConsoleSize {
            height: ws.ws_row,
            width: ws.ws_col,
        })
}

/// Give the pty the size of our own terminal (if we have one).
pub fn copy_winsize(master: &impl AsFd) {
    if let Some(ws) = winsize() {
        let _ = rustix::termios::tcsetwinsize(master, ws);
    }
}

/// The signal the pty's line discipline sends to its foreground process
/// group when `input` is written to `master`, decided as the kernel does:
/// with ISIG on, a byte equal to VINTR, VQUIT or VSUSP (and not disabled),
/// unless quoted by VLNEXT (ICANON and IEXTEN on). `quoted` carries a VLNEXT
/// at the end of one input over to the next. The first such signal, if any.
pub fn input_signal(master: &impl AsFd, input: &[u8], quoted: &mut bool) -> Option<i32> {
    use rustix::termios::{LocalModes, SpecialCodeIndex as I};
    let t = rustix::termios::tcgetattr(master).ok()?;
    let modes = t.local_modes;
    let code = |i: I| Some(t.special_codes[i]).filter(|c| *c != 0);
    let keys = [
        (code(I::VINTR), libc::SIGINT),
        (code(I::VQUIT), libc::SIGQUIT),
        (code(I::VSUSP), libc::SIGTSTP),
    ];
    let lnext = code(I::VLNEXT)
        .filter(|_| modes.contains(LocalModes::ICANON) && modes.contains(LocalModes::IEXTEN));
    let mut found = None;
    for &b in input {
        if std::mem::take(quoted) {
            continue;
        }
        if modes.contains(LocalModes::ISIG) {
            if let Some((_, sig)) = keys.iter().find(|(k, _)| *k == Some(b)) {
                found = found.or(Some(*sig));
                continue;
            }
        }
        if lnext == Some(b) {
            *quoted = true;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions, SpecialCodeIndex};

    #[test]
    fn input_signal_follows_the_ptys_line_discipline() {
        let master =
            openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let mut q = false;
        // A new pty is cooked: ^C, ^\, ^Z signal; other bytes do not.
        assert_eq!(input_signal(&master, b"ls\r", &mut q), None);
        assert_eq!(input_signal(&master, b"x\x03", &mut q), Some(libc::SIGINT));
        assert_eq!(input_signal(&master, b"\x1c", &mut q), Some(libc::SIGQUIT));
        assert_eq!(
            input_signal(&master, b"\x1a\x03", &mut q),
            Some(libc::SIGTSTP)
        );
        // ^V quotes the next byte, also across two inputs.
        assert_eq!(input_signal(&master, b"\x16\x03", &mut q), None);
        assert_eq!(input_signal(&master, b"\x16", &mut q), None);
        assert!(q);
        assert_eq!(input_signal(&master, b"\x03", &mut q), None);
        assert_eq!(input_signal(&master, b"\x03", &mut q), Some(libc::SIGINT));
        // The program inside chose other keys, or none (vi's raw mode).
        let mut t = tcgetattr(&master).unwrap();
        t.special_codes[SpecialCodeIndex::VINTR] = b'\x07';
        t.special_codes[SpecialCodeIndex::VQUIT] = 0;
        tcsetattr(&master, OptionalActions::Now, &t).unwrap();
        assert_eq!(input_signal(&master, b"\x03\x1c", &mut q), None);
        assert_eq!(input_signal(&master, b"\x07", &mut q), Some(libc::SIGINT));
        t.local_modes.remove(LocalModes::ISIG);
        tcsetattr(&master, OptionalActions::Now, &t).unwrap();
        assert_eq!(input_signal(&master, b"\x07\x1a", &mut q), None);
    }
}
