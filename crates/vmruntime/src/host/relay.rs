//! The host end of one container process's stdio: what the engine gave bulkhead (pipes,
//! a pty, or a user's terminal) on one side, the protocol's data frames on the other.
//! The monitor relays the container's init with it, `exec` relays the process it started.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;

use crate::conn::Conn;
use crate::error::{Context, Result};
use crate::protocol::{Stream, DATA_CHUNK};

pub struct Relay {
    pub process: u32,
    input: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

fn dup(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    fd.try_clone_to_owned()
        .ctx(|| "dup a stdio descriptor".into())
}

impl Relay {
    /// Relay this process's own stdin, stdout and stderr (`stdin: false` when nothing is
    /// to be read from it).
    pub fn stdio(process: u32, stdin: bool) -> Result<Relay> {
        Ok(Relay {
            process,
            input: stdin.then(|| dup(rustix::stdio::stdin())).transpose()?,
            stdout: dup(rustix::stdio::stdout())?,
            stderr: dup(rustix::stdio::stderr())?,
        })
    }

    /// Relay a terminal: one descriptor both ways (the guest sends everything on stdout).
    pub fn terminal(process: u32, tty: &OwnedFd) -> Result<Relay> {
        Ok(Relay {
            process,
            input: Some(dup(tty.as_fd())?),
            stdout: dup(tty.as_fd())?,
            stderr: dup(tty.as_fd())?,
        })
    }

    /// The descriptor to poll for input, while there is any.
    pub fn input(&self) -> Option<BorrowedFd<'_>> {
        self.input.as_ref().map(|f| f.as_fd())
    }

    /// Input is readable: pass what is there on (end of input ends the process's stdin).
    pub fn on_input(&mut self, conn: &mut Conn) {
        let Some(fd) = &self.input else { return };
        let mut buf = [0u8; DATA_CHUNK];
        match rustix::io::read(fd, &mut buf) {
            Ok(0) | Err(Errno::IO) | Err(Errno::BADF) => {
                conn.send_data(self.process, Stream::Stdin, &[]);
                self.input = None;
            }
            Ok(n) => conn.send_data(self.process, Stream::Stdin, &buf[..n]),
            Err(Errno::AGAIN) | Err(Errno::INTR) => {}
            Err(_) => {
                conn.send_data(self.process, Stream::Stdin, &[]);
                self.input = None;
            }
        }
    }

    /// Output of the process. Blocking writes: while the engine does not read, the
    /// agent's queue fills and it stops reading the process's output (back-pressure).
    pub fn on_output(&mut self, stream: Stream, bytes: &[u8]) {
        let fd = if stream == Stream::Stderr {
            &self.stderr
        } else {
            &self.stdout
        };
        let mut rest = bytes;
        while !rest.is_empty() {
            match rustix::io::write(fd, rest) {
                Ok(n) => rest = &rest[n..],
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => {
                    let _ = crate::conn::wait_fd(fd.as_fd(), rustix::event::PollFlags::OUT, None);
                }
                // Nobody reads any more (the engine went away): drop the output.
                Err(_) => return,
            }
        }
    }
}

/// A new pty for a container process on the host side: the master goes to the engine's
/// console socket, the slave (raw, so the guest's line discipline is the only one) stays
/// with the relay. `size`: the initial window size.
pub fn host_pty(size: Option<oci::ConsoleSize>) -> Result<(OwnedFd, OwnedFd)> {
    let (master, slave, _) = container::console::open_pty(size)?;
    let mut t = rustix::termios::tcgetattr(&slave).ctx(|| "tcgetattr".into())?;
    t.make_raw();
    rustix::termios::tcsetattr(&slave, rustix::termios::OptionalActions::Now, &t)
        .ctx(|| "make the host pty raw".into())?;
    Ok((master, slave))
}
