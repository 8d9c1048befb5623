//! A framed, non-blocking connection over any stream descriptor (a Unix or vsock socket, a
//! virtio-serial port): frames out are queued and written as the descriptor accepts them,
//! frames in are decoded as bytes arrive. Both ends of the protocol and the host's control
//! socket use it from a poll loop, so a peer that stops reading never blocks the other
//! work of the loop.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use serde::Serialize;

use crate::error::{msg, Context, Error, Result};
use crate::protocol::{self, Decoder, Frame, Stream};

/// Above this many queued bytes a sender stops reading the sources that feed the queue.
pub const HIGH_WATER: usize = 1 << 20;

pub struct Conn {
    fd: OwnedFd,
    dec: Decoder,
    out: Vec<u8>,
    out_pos: usize,
    eof: bool,
}

impl Conn {
    pub fn new(fd: OwnedFd) -> Result<Conn> {
        set_nonblocking(&fd)?;
        Ok(Conn {
            fd,
            dec: Decoder::default(),
            out: Vec::new(),
            out_pos: 0,
            eof: false,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn send<T: Serialize>(&mut self, m: &T) {
        self.queue(&protocol::message(m));
    }

    /// Queue `bytes` of a stream, split into frames of at most [`protocol::DATA_CHUNK`];
    /// empty `bytes` queue the end-of-stream frame.
    pub fn send_data(&mut self, process: u32, stream: Stream, bytes: &[u8]) {
        if bytes.is_empty() {
            self.queue(&protocol::data(process, stream, &[]));
        }
        for chunk in bytes.chunks(protocol::DATA_CHUNK) {
            self.queue(&protocol::data(process, stream, chunk));
        }
    }

    fn queue(&mut self, frame: &[u8]) {
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        self.out.extend_from_slice(frame);
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// True once the peer closed its side (or the descriptor failed).
    pub fn closed(&self) -> bool {
        self.eof
    }

    /// What to poll for: input always, output while something is queued.
    pub fn events(&self) -> PollFlags {
        if self.pending() > 0 {
            PollFlags::IN | PollFlags::OUT
        } else {
            PollFlags::IN
        }
    }

    /// Write as much of the queue as the descriptor takes now.
    pub fn flush(&mut self) -> Result<()> {
        while self.out_pos < self.out.len() {
            match rustix::io::write(&self.fd, &self.out[self.out_pos..]) {
                Ok(0) => return Err(msg("connection closed while writing")),
                Ok(n) => self.out_pos += n,
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => continue,
                Err(e) => {
                    self.eof = true;
                    return Err(e).ctx(|| "write to the peer".into());
                }
            }
        }
        Ok(())
    }

    /// Read what is available now into the decoder; marks the connection closed on EOF.
    pub fn fill(&mut self) -> Result<()> {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match rustix::io::read(&self.fd, &mut buf) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => self.dec.push(&buf[..n]),
                Err(Errno::AGAIN) => return Ok(()),
                Err(Errno::INTR) => continue,
                Err(e) => {
                    self.eof = true;
                    return Err(e).ctx(|| "read from the peer".into());
                }
            }
        }
    }

    /// The next decoded frame, if a whole one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        self.dec.next_frame()
    }

    /// Blocking helpers for short-lived clients: write everything queued.
    pub fn flush_blocking(&mut self, deadline: Option<Instant>) -> Result<()> {
        while self.pending() > 0 {
            wait_fd(self.fd.as_fd(), PollFlags::OUT, deadline)?;
            self.flush()?;
        }
        Ok(())
    }

    /// Blocking helper: the next frame, waiting until `deadline`.
    pub fn recv_blocking(&mut self, deadline: Option<Instant>) -> Result<Frame> {
        loop {
            if let Some(f) = self.next_frame()? {
                return Ok(f);
            }
            if self.eof {
                return Err(msg("the peer closed the connection"));
            }
            wait_fd(self.fd.as_fd(), PollFlags::IN, deadline)?;
            self.fill()?;
        }
    }
}

/// Wait until `fd` is ready for `flags`, or fail at `deadline`.
pub fn wait_fd(fd: BorrowedFd<'_>, flags: PollFlags, deadline: Option<Instant>) -> Result<()> {
    loop {
        let timeout = deadline.map(|d| timespec(d.saturating_duration_since(Instant::now())));
        let mut fds = [PollFd::from_borrowed_fd(fd, flags)];
        match poll(&mut fds, timeout.as_ref()) {
            Ok(0) => return Err(Error::Msg("timed out".into())),
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e).ctx(|| "poll".into()),
        }
    }
}

pub fn timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: d.as_secs() as i64,
        tv_nsec: d.subsec_nanos() as i64,
    }
}

pub fn set_nonblocking(fd: &impl AsFd) -> Result<()> {
    let fl = rustix::fs::fcntl_getfl(fd).ctx(|| "fcntl(F_GETFL)".into())?;
    rustix::fs::fcntl_setfl(fd, fl | rustix::fs::OFlags::NONBLOCK)
        .ctx(|| "fcntl(F_SETFL, O_NONBLOCK)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ToAgent, ToHost};

    fn pair() -> (Conn, Conn) {
        let (a, b) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        (Conn::new(a).unwrap(), Conn::new(b).unwrap())
    }

    #[test]
    fn frames_cross_a_socket_in_order() {
        let (mut a, mut b) = pair();
        a.send(&ToAgent::Start { id: 9 });
        let big = vec![7u8; protocol::DATA_CHUNK * 2 + 5];
        a.send_data(1, Stream::Stdin, &big);
        a.send_data(1, Stream::Stdin, &[]);
        let deadline = Some(Instant::now() + Duration::from_secs(10));
        // The queue is larger than a socket buffer may take at once: interleave.
        let mut got = Vec::new();
        while got.len() < 5 {
            a.flush().unwrap();
            if let Ok(f) = b.recv_blocking(deadline) {
                got.push(f);
            }
        }
        assert_eq!(
            got[0],
            Frame::Message(serde_json::to_vec(&ToAgent::Start { id: 9 }).unwrap())
        );
        let mut data = Vec::new();
        for f in &got[1..4] {
            match f {
                Frame::Data {
                    process: 1, bytes, ..
                } => data.extend_from_slice(bytes),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(data, big);
        assert!(matches!(&got[4], Frame::Data { bytes, .. } if bytes.is_empty()));
        drop(a);
        b.fill().unwrap();
        assert!(b.closed());
        assert!(b.recv_blocking(deadline).is_err());
        let _ = ToHost::ok(0);
    }

    #[test]
    fn recv_times_out() {
        let (_a, mut b) = pair();
        let e = b
            .recv_blocking(Some(Instant::now() + Duration::from_millis(50)))
            .unwrap_err();
        assert!(e.to_string().contains("timed out"), "{e}");
    }
}
