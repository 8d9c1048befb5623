//! The client side of the monitor's control socket: the OCI commands that act on a running
//! VM-backed container (start, kill --all, exec, ps) speak the agent protocol to the
//! monitor, which forwards them to the agent.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use container::state::StateDir;

use crate::conn::Conn;
use crate::error::{msg, Error, Result};
use crate::host::files;
use crate::host::relay::Relay;
use crate::host::signals::Signals;
use crate::protocol::{self, Frame, ToAgent, ToHost};

/// How long a simple request (start, ps, signal) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Control {
    conn: Conn,
    next_id: u64,
}

impl Control {
    /// Connect to the monitor of the container whose (locked) state directory is `sd`.
    pub fn connect(sd: &StateDir) -> Result<Control> {
        let path = sd.fd_path(files::CONTROL);
        let s = std::os::unix::net::UnixStream::connect(&path).map_err(|e| {
            msg(format!(
                "container {:?}: its VM monitor does not answer ({e}): the container has stopped",
                sd.id
            ))
        })?;
        let mut c = Control {
            conn: Conn::new(OwnedFd::from(s))?,
            next_id: 1,
        };
        let deadline = Some(Instant::now() + REQUEST_TIMEOUT);
        match c.conn.recv_blocking(deadline)? {
            Frame::Message(m) => match protocol::parse::<ToHost>(&m)? {
                ToHost::Hello { version, .. } if version == protocol::VERSION => Ok(c),
                ToHost::Hello { version, .. } => Err(msg(format!(
                    "the container's monitor speaks protocol version {version}, this bulkhead {}",
                    protocol::VERSION
                ))),
                other => Err(Error::Protocol(format!("expected hello, got {other:?}"))),
            },
            Frame::Data { .. } => Err(Error::Protocol("expected hello, got data".into())),
        }
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Send a request (its `id` is set here) and wait for its answer.
    pub fn request(&mut self, make: impl FnOnce(u64) -> ToAgent) -> Result<ToHost> {
        let id = self.id();
        self.conn.send(&make(id));
        let deadline = Some(Instant::now() + REQUEST_TIMEOUT);
        self.conn.flush_blocking(deadline)?;
        loop {
            let f = self.conn.recv_blocking(deadline).map_err(|e| match e {
                Error::Msg(m) if m == "timed out" => msg(format!(
                    "the VM did not answer within {} s",
                    REQUEST_TIMEOUT.as_secs()
                )),
                e => e,
            })?;
            let Frame::Message(m) = f else { continue };
            match protocol::parse::<ToHost>(&m)? {
                ToHost::Error { id: i, message } if i == id => return Err(Error::Msg(message)),
                r @ ToHost::Ok { id: i, .. } if i == id => return Ok(r),
                _ => continue,
            }
        }
    }

    /// Relay process `process` (already started with `exec`) between `relay` and the
    /// VM until it exits; returns its exit code. Signals this process receives go to it;
    /// window size changes of `tty` (the terminal it is relayed to) resize its terminal.
    pub fn relay(
        &mut self,
        process: u32,
        relay: &mut Relay,
        tty: Option<BorrowedFd<'_>>,
    ) -> Result<i32> {
        let signals = Signals::forwarded()?;
        // The engine may have sized the terminal before it was ours to watch (no SIGWINCH
        // then): pass on the size it has now.
        self.send_size(process, tty);
        loop {
            self.conn.flush()?;
            let mut fds = vec![
                rustix::event::PollFd::from_borrowed_fd(self.conn.fd(), self.conn.events()),
                rustix::event::PollFd::from_borrowed_fd(signals.fd(), rustix::event::PollFlags::IN),
            ];
            if let Some(i) = relay.input() {
                fds.push(rustix::event::PollFd::from_borrowed_fd(
                    i,
                    rustix::event::PollFlags::IN,
                ));
            }
            match rustix::event::poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    return Err(Error::Sys {
                        context: "poll".into(),
                        source: e.into(),
                    })
                }
            }
            let ev: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
            drop(fds);
            if ev[0] {
                self.conn.fill()?;
                while let Some(f) = self.conn.next_frame()? {
                    match f {
                        Frame::Data {
                            process: p,
                            stream,
                            bytes,
                        } if p == process => relay.on_output(stream, &bytes),
                        Frame::Data { .. } => {}
                        Frame::Message(m) => {
                            if let ToHost::Exit {
                                process: p, code, ..
                            } = protocol::parse(&m)?
                            {
                                if p == process {
                                    return Ok(code);
                                }
                            }
                        }
                    }
                }
                if self.conn.closed() {
                    return Err(msg("the VM ended before the process exited"));
                }
            }
            if ev[1] {
                for s in signals.read() {
                    if s.signo == libc::SIGWINCH && !s.from_process {
                        self.send_size(process, tty);
                    } else if s.from_process || s.signo == libc::SIGINT {
                        let id = self.id();
                        self.conn.send(&ToAgent::Signal {
                            id,
                            process,
                            signal: s.signo,
                            all: false,
                        });
                    }
                }
            }
            if ev.len() > 2 && ev[2] {
                relay.on_input(&mut self.conn);
            }
        }
    }

    /// Resize `process`'s terminal to the size of `tty`.
    fn send_size(&mut self, process: u32, tty: Option<BorrowedFd<'_>>) {
        let ws = tty.and_then(|t| rustix::termios::tcgetwinsize(t).ok());
        if let Some(ws) = ws.filter(|w| w.ws_row > 0 && w.ws_col > 0) {
            let id = self.id();
            self.conn.send(&ToAgent::Resize {
                id,
                process,
                rows: ws.ws_row,
                cols: ws.ws_col,
            });
        }
    }
}
