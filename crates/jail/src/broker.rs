//! Descriptors the supervisor opens for the jailed process, which can reach no path: the child
//! sends a request on a SEQPACKET socket, the supervisor's handler opens (or connects) what it
//! names and sends the descriptor back with SCM_RIGHTS -- or a message without one when it
//! refuses or fails. libvirt hands QEMU its files the same way.
//!
//! The handler decides what a request may name: a jailed process that has been taken over can
//! send anything, so it must map requests onto a fixed set of paths, never take a path from
//! the request.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::thread::JoinHandle;

use rustix::net::{self, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

use crate::{sys_err, Result};

/// Largest request.
const MAX_REQUEST: usize = 256;

/// The jailed process's end. Requests need `sendto` and `recvmsg`.
#[derive(Debug)]
pub struct Client(OwnedFd);

/// The supervisor's end.
#[derive(Debug)]
pub struct Broker(OwnedFd);

/// A connected pair; keep the client's descriptor in the jail ([`Client::raw_fd`]).
pub fn pair() -> Result<(Broker, Client)> {
    let (a, b) = net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| sys_err("socketpair (descriptor broker)")(e.into()))?;
    Ok((Broker(a), Client(b)))
}

impl Client {
    pub fn raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Ask for the descriptor `request` names. A refusal or a failure on the supervisor's side
    /// is ECONNREFUSED.
    pub fn request(&self, request: &[u8]) -> std::io::Result<OwnedFd> {
        net::send(&self.0, request, SendFlags::NOSIGNAL)?;
        container::console::recv_fd(&self.0, false)?
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ECONNREFUSED))
    }
}

impl Broker {
    /// Answer requests on a thread until the client's end closes (the jailed process exited).
    /// Start it after [`crate::Prepared::spawn`]: the supervisor must be single-threaded then.
    pub fn serve<H>(self, mut handler: H) -> std::io::Result<JoinHandle<()>>
    where
        H: FnMut(&[u8]) -> std::io::Result<OwnedFd> + Send + 'static,
    {
        std::thread::Builder::new()
            .name("jail-broker".into())
            .spawn(move || {
                let mut buf = [0u8; MAX_REQUEST];
                loop {
                    let n = match net::recv(&self.0, &mut buf, RecvFlags::empty()) {
                        Ok((0, _)) => return,
                        Ok((n, _)) => n,
                        Err(rustix::io::Errno::INTR) => continue,
                        Err(_) => return,
                    };
                    let sent = match handler(&buf[..n]) {
                        Ok(fd) => container::console::send_fd(&self.0, "ok", &fd.as_fd()),
                        Err(_) => net::send(&self.0, b"refused", SendFlags::NOSIGNAL)
                            .map(drop)
                            .map_err(Into::into),
                    };
                    if sent.is_err() {
                        return;
                    }
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn requests_get_descriptors_or_a_refusal() {
        let (broker, client) = pair().unwrap();
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let mut theirs = Some(OwnedFd::from(theirs));
        let t = broker
            .serve(move |req| match (req, theirs.take()) {
                (b"give", Some(fd)) => Ok(fd),
                _ => Err(std::io::Error::from_raw_os_error(libc::EPERM)),
            })
            .unwrap();
        let got = client.request(b"give").unwrap();
        let mut got = UnixStream::from(got);
        got.write_all(b"through the broker").unwrap();
        let mut buf = [0u8; 18];
        ours.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"through the broker");
        let e = client.request(b"/etc/shadow").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED));
        drop(client);
        t.join().unwrap();
    }
}
