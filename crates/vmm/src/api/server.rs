//! The VMM's end of the control socket: an event-loop subscriber that accepts connections on
//! the listener bound before the jail, reads request lines (with the descriptors a snapshot
//! request carries) and answers each with one line.
//!
//! Requests are served on the event-loop thread, one at a time: while a snapshot is written
//! no device runs, which is what makes the devices' saved state consistent with guest memory.
//! A connection that sends more than [`MAX_REQUEST`] bytes without a newline, or whose answer
//! does not fit in its socket buffer, is closed.

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, IoSliceMut, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::time::Duration;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

use super::{error_response, ok_response, Op, Request, API_VERSION, MAX_REQUEST, MIN_API_VERSION};
use crate::control::{Machine, DEFAULT_SHUTDOWN_TIMEOUT};

const LISTENER_TOKEN: u32 = 0;
/// Connections open at once (the rest wait in the listen backlog).
pub const MAX_CONNECTIONS: usize = 8;
/// Descriptors one message may carry (a snapshot's two, with room to notice extras).
const MAX_FDS: usize = 4;

struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    fds: Vec<OwnedFd>,
}

pub struct ApiServer {
    listener: UnixListener,
    machine: Arc<Machine>,
    conns: HashMap<u32, Conn>,
    next_token: u32,
}

impl ApiServer {
    pub fn new(listener: UnixListener, machine: Arc<Machine>) -> ApiServer {
        ApiServer {
            listener,
            machine,
            conns: HashMap::new(),
            next_token: 1,
        }
    }

    fn accept(&mut self, ops: &mut EventOps) {
        while self.conns.len() < MAX_CONNECTIONS {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!("api socket: accept: {e}");
                    return;
                }
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let token = self.next_token;
            self.next_token = self.next_token.wrapping_add(1).max(1);
            if ops
                .add(Events::with_data(&stream, token, EventSet::IN))
                .is_err()
            {
                continue;
            }
            self.conns.insert(
                token,
                Conn {
                    stream,
                    buf: Vec::new(),
                    fds: Vec::new(),
                },
            );
        }
    }

    /// Reads what the connection sent; false when it is closed or broken.
    fn read(conn: &mut Conn) -> bool {
        let mut chunk = [0u8; 1024];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        loop {
            let mut cmsg = RecvAncillaryBuffer::new(&mut space);
            let mut iov = [IoSliceMut::new(&mut chunk)];
            match recvmsg(
                &conn.stream,
                &mut iov,
                &mut cmsg,
                RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
            ) {
                Ok(r) => {
                    for m in cmsg.drain() {
                        if let RecvAncillaryMessage::ScmRights(fds) = m {
                            conn.fds.extend(fds);
                        }
                    }
                    if r.bytes == 0 {
                        return false;
                    }
                    conn.buf.extend_from_slice(&chunk[..r.bytes]);
                    if conn.buf.len() > MAX_REQUEST && !conn.buf.contains(&b'\n') {
                        return false;
                    }
                }
                Err(rustix::io::Errno::AGAIN) => return true,
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => return false,
            }
        }
    }

    /// Answers one request line, in the request's protocol version.
    fn handle(&self, line: &[u8], fds: Vec<OwnedFd>) -> serde_json::Value {
        let value: serde_json::Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => return error_response(format!("not a JSON request: {e}")),
        };
        let version = match value.get("v").and_then(|v| v.as_u64()) {
            Some(v) if (u64::from(MIN_API_VERSION)..=u64::from(API_VERSION)).contains(&v) => v,
            Some(v) => {
                return error_response(format!(
                    "unsupported API version {v} (this VMM speaks {MIN_API_VERSION} to \
                     {API_VERSION})"
                ))
            }
            None => return error_response("the request has no \"v\" (API version)"),
        };
        let mut answer = match serde_json::from_value::<Request>(value) {
            Ok(req) if u64::from(req.op.version()) > version => error_response(format!(
                "bad request: this request needs API version {}",
                req.op.version()
            )),
            Ok(req) => self.serve_request(req, fds),
            Err(e) => error_response(format!("bad request: {e}")),
        };
        answer["v"] = version.into();
        answer
    }

    fn serve_request(&self, req: Request, fds: Vec<OwnedFd>) -> serde_json::Value {
        if !matches!(req.op, Op::Snapshot { .. }) && !fds.is_empty() {
            return error_response("only a snapshot request carries descriptors");
        }
        let m = &self.machine;
        match req.op {
            Op::Status => body(&m.status()),
            Op::Pause => match m.pause() {
                Ok(()) => ok_response(serde_json::json!({"state": "paused"})),
                Err(e) => error_response(format!("pause: {e}")),
            },
            Op::Resume => {
                m.resume();
                ok_response(serde_json::json!({"state": "running"}))
            }
            Op::Shutdown { timeout_ms } => {
                let t = timeout_ms.map_or(DEFAULT_SHUTDOWN_TIMEOUT, Duration::from_millis);
                body(&m.shutdown(t))
            }
            Op::Snapshot { diff } => {
                let mut fds = fds.into_iter();
                let (Some(state), Some(mem), None) = (fds.next(), fds.next(), fds.next()) else {
                    return error_response(
                        "a snapshot request carries exactly two descriptors (SCM_RIGHTS): \
                         the state file, then the memory file",
                    );
                };
                let (mut state, mut mem) = (File::from(state), File::from(mem));
                match m.snapshot(&mut state, &mut mem, diff) {
                    Ok(r) => body(&r),
                    Err(e) => error_response(format!("snapshot: {e}")),
                }
            }
        }
    }

    /// The next complete request line of a connection and the descriptors that came with it.
    fn next_request(conn: &mut Conn) -> Option<(Vec<u8>, Vec<OwnedFd>)> {
        let nl = conn.buf.iter().position(|b| *b == b'\n')?;
        let line: Vec<u8> = conn.buf.drain(..=nl).collect();
        Some((line, std::mem::take(&mut conn.fds)))
    }

    fn serve(&mut self, token: u32, ops: &mut EventOps) {
        let mut open = match self.conns.get_mut(&token) {
            Some(conn) => Self::read(conn),
            None => return,
        };
        while open {
            let Some((line, fds)) = self.conns.get_mut(&token).and_then(Self::next_request) else {
                break;
            };
            let line = line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            let mut text = self.handle(line, fds).to_string();
            text.push('\n');
            // Answers are small: one that does not fit in the socket buffer means a client
            // that does not read, which loses its connection.
            if let Some(conn) = self.conns.get_mut(&token) {
                open = conn.stream.write_all(text.as_bytes()).is_ok();
            }
        }
        if !open {
            if let Some(c) = self.conns.remove(&token) {
                let _ = ops.remove(Events::with_data(&c.stream, token, EventSet::IN));
            }
        }
    }
}

impl MutEventSubscriber for ApiServer {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            LISTENER_TOKEN => self.accept(ops),
            token => self.serve(token, ops),
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = self.listener.set_nonblocking(true) {
            tracing::error!("api socket: cannot make the listener non-blocking: {e}");
        }
        if let Err(e) = ops.add(Events::with_data(
            &self.listener,
            LISTENER_TOKEN,
            EventSet::IN,
        )) {
            tracing::error!(
                "api socket: cannot watch fd {}: {e:?}",
                self.listener.as_raw_fd()
            );
        }
    }
}

/// A success response with the fields of `v` (plain data: serializing it cannot fail).
fn body<T: serde::Serialize>(v: &T) -> serde_json::Value {
    ok_response(serde_json::to_value(v).unwrap_or_default())
}
