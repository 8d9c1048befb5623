//! The one channel between the runtime and the container's init while it is
//! being set up: a SOCK_SEQPACKET socketpair (message boundaries for free,
//! EOF when the other side dies, close-on-exec so the container never sees it).
//!
//! It also ties the child's life to the runtime's until the handoff: the
//! child closes its inherited copy of the runtime's end first thing, so only
//! the runtime holds that end and its death is seen here as EOF/HUP. See
//! [`die_with_runtime`] and [`outlive_runtime`].

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::buffer::spare_capacity;
use rustix::net::{self, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

/// Messages of the create protocol, in the order they normally flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// parent → child: continue (optionally carrying the OCI state JSON for hooks).
    Go(String),
    /// child → parent: I am in my new user namespace; write my uid/gid maps.
    UsernsReady,
    /// child → parent: the container init is this pid (after a double fork).
    Pid(i32),
    /// child → parent: namespaces are set up; put me in my cgroup.
    Ready,
    /// child → parent: write linux.timeOffsets into my new time namespace
    /// (it belongs to a new user namespace, see the init).
    TimeOffsets,
    /// child → parent: mounts are done, before pivot_root; run the runtime hooks.
    Hooks,
    /// child → parent: set up and blocked until `start`.
    Created,
    /// child → parent: setup failed; the text names the step.
    Error(String),
}

pub struct Channel(OwnedFd);

impl Channel {
    pub fn pair() -> io::Result<(Channel, Channel)> {
        let (a, b) = net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        Ok((Channel(a), Channel(b)))
    }

    pub fn from_fd(fd: OwnedFd) -> Channel {
        Channel(fd)
    }

    pub fn send(&self, m: &Msg) -> io::Result<()> {
        net::send(&self.0, &encode(m), SendFlags::NOSIGNAL)?;
        Ok(())
    }

    /// [`Channel::send`] through write(2), for a sender under a seccomp filter that allows
    /// `write` but not `sendto` (the VMM jail's threads). A closed peer raises SIGPIPE,
    /// which Rust programs ignore.
    pub fn send_write(&self, m: &Msg) -> io::Result<()> {
        rustix::io::write(&self.0, &encode(m))?;
        Ok(())
    }

    /// The next message, or `None` if the other side closed (exited).
    pub fn recv(&self) -> io::Result<Option<Msg>> {
        // Room for the largest message (the state JSON of `Go`), left uninitialised: zeroing
        // it would touch 16 pages on every message for the few bytes most of them carry.
        let mut buf = Vec::with_capacity(64 * 1024);
        let n = loop {
            match net::recv(&self.0, spare_capacity(&mut buf), RecvFlags::empty()) {
                Ok((n, _)) => break n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if n == 0 {
            return Ok(None);
        }
        let body = &buf[1..n];
        let text = || String::from_utf8_lossy(body).into_owned();
        let m = match buf[0] {
            b'G' => Msg::Go(text()),
            b'U' => Msg::UsernsReady,
            b'P' if body.len() == 4 => Msg::Pid(i32::from_le_bytes(body.try_into().unwrap())),
            b'R' => Msg::Ready,
            b'T' => Msg::TimeOffsets,
            b'H' => Msg::Hooks,
            b'C' => Msg::Created,
            b'E' => Msg::Error(text()),
            t => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected sync message tag {t}"),
                ))
            }
        };
        Ok(Some(m))
    }

    /// Wait for `Go` from the parent; anything else (or EOF) is an error.
    pub fn wait_go(&self) -> io::Result<String> {
        match self.recv()? {
            Some(Msg::Go(s)) => Ok(s),
            Some(other) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("expected Go from the runtime, got {other:?}"),
            )),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the runtime went away",
            )),
        }
    }
}

/// A message as one SEQPACKET datagram: a tag byte and the payload.
fn encode(m: &Msg) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16);
    match m {
        Msg::Go(s) => {
            buf.push(b'G');
            buf.extend_from_slice(s.as_bytes());
        }
        Msg::UsernsReady => buf.push(b'U'),
        Msg::Pid(p) => {
            buf.push(b'P');
            buf.extend_from_slice(&p.to_le_bytes());
        }
        Msg::Ready => buf.push(b'R'),
        Msg::TimeOffsets => buf.push(b'T'),
        Msg::Hooks => buf.push(b'H'),
        Msg::Created => buf.push(b'C'),
        Msg::Error(s) => {
            buf.push(b'E');
            buf.extend_from_slice(s.as_bytes());
        }
    }
    buf
}

impl Channel {
    /// True if the other end is closed (its process exited): POLLHUP, seen
    /// without waiting and even with unread messages queued.
    pub fn peer_gone(&self) -> bool {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut fds = [PollFd::new(&self.0, PollFlags::empty())];
        loop {
            match poll(&mut fds, Some(&zero)) {
                Ok(_) => return fds[0].revents().contains(PollFlags::HUP),
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return true,
            }
        }
    }
}

/// In a child of the runtime being set up (a container's init, an `exec`
/// process): die with the runtime. The kernel sends SIGKILL when the thread
/// that cloned us exits (the runtime is single-threaded, so that is the
/// runtime), but only for a death *after* the prctl; a runtime that died
/// before it has already closed its end of `chan` (a dying process closes
/// its files before its children are told), so the HUP check catches that.
/// `getppid()` cannot: in a new pid namespace it is always 0.
///
/// The kernel clears the death signal when a child is cloned and when the
/// credentials change (setresuid, setns into a user namespace), so call it
/// again after those. `chan` must be the child's end, with the child's copy
/// of the runtime's end already closed.
pub fn die_with_runtime(chan: &Channel) {
    // SAFETY: plain prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    if chan.peer_gone() {
        crate::sys::exit_now(1);
    }
}

/// The handoff: from here on the child must outlive the runtime (which may
/// exit as soon as it has recorded the child). Call it *before* telling the
/// runtime so, then wait for the runtime's last word with [`Channel::wait_go`]:
/// EOF there means the runtime died before it recorded the handoff, and the
/// child must exit on its own.
pub fn outlive_runtime() {
    // SAFETY: plain prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_eof() {
        let (a, b) = Channel::pair().unwrap();
        for m in [
            Msg::Go("{\"x\":1}".into()),
            Msg::Go(String::new()),
            Msg::UsernsReady,
            Msg::Pid(4242),
            Msg::Ready,
            Msg::TimeOffsets,
            Msg::Hooks,
            Msg::Created,
            Msg::Error("mount /proc: EPERM".into()),
        ] {
            a.send(&m).unwrap();
            assert_eq!(b.recv().unwrap(), Some(m));
        }
        // The write(2) path sends the same datagrams.
        a.send_write(&Msg::Error("vcpu0: KVM_RUN".into())).unwrap();
        assert_eq!(b.recv().unwrap(), Some(Msg::Error("vcpu0: KVM_RUN".into())));
        assert!(!b.peer_gone());
        drop(a);
        assert!(b.peer_gone());
        assert_eq!(b.recv().unwrap(), None);
    }
}
