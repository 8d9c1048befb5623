//! The monitor: the host process of one VM-backed container, forked by `create`. Its pid is
//! the container's pid in `state` (engines wait for it to learn the exit status: it exits
//! with the container's code). It
//! 1. starts the hypervisor (its child, dying with it) and waits for the agent's hello;
//! 2. has the agent create the container, then tells `create` (through a pipe) that the
//!    container exists, or why not;
//! 3. serves the other commands on `<state dir>/control.sock` (start, kill --all, exec, ps),
//!    multiplexing them over the one agent connection (request ids and exec process
//!    numbers are rewritten per client), relays the init's stdio between the engine's
//!    descriptors (or a pty) and the agent, and forwards the signals it receives to the
//!    init in the guest (`kill ID SIGNAL` signals this process, as runc's would the init);
//! 4. when the init exits, lets the VM power off (or kills it after a grace period) and
//!    exits with the init's code. A VM that ends first makes the container `stopped` with
//!    code 255 and a message on the container's stderr.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;
use rustix::process::{pidfd_open, Pid, PidfdFlags};

use crate::conn::{timespec, Conn, HIGH_WATER};
use crate::error::{msg, Context, Error, Result};
use crate::host::backend::{self, Backend, VmDesc};
use crate::host::network;
use crate::host::plan::VmPlan;
use crate::host::relay::{host_pty, Relay};
use crate::host::signals::Signals;
use crate::host::{console_summary, files, tail};
use crate::protocol::{self, Frame, Stream, ToAgent, ToHost};

/// How long the VM may take to power off after the container exited.
const POWER_OFF_GRACE: Duration = Duration::from_secs(3);
/// The exit code of a container whose VM ended before it reported the container's exit.
pub const VM_LOST_CODE: i32 = 255;

/// What `create` hands the monitor.
pub struct MonitorArgs {
    pub id: String,
    /// The container's state directory.
    pub dir: PathBuf,
    pub plan: VmPlan,
    /// The root filesystem disk; none when the root is the host's (over 9p).
    pub disk: Option<PathBuf>,
    /// The connected console socket, when the process has a terminal.
    pub console: Option<OwnedFd>,
    /// Where the monitor reports the outcome of create (one JSON line).
    pub report: OwnedFd,
}

/// The line the monitor writes to `create`.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    Created { guest_pid: i32 },
    Failed { message: String },
}

/// Run the monitor; never returns.
pub fn run(args: MonitorArgs) -> ! {
    let report = args.report.try_clone().ok();
    let send = |r: &Report| {
        if let Some(fd) = &report {
            let mut f = std::fs::File::from(fd.try_clone().expect("dup"));
            let _ = writeln!(f, "{}", serde_json::to_string(r).expect("serialises"));
        }
    };
    let started = Instant::now();
    let mut m = match Monitor::start(&args) {
        Ok(m) => m,
        Err(e) => {
            send(&Report::Failed {
                message: e.to_string(),
            });
            std::process::exit(1);
        }
    };
    // Created: from now on the container outlives its `create` (the engine waits for us).
    // Before the report, not after: `create` exits as soon as it has recorded it, and a
    // parent-death signal still armed then would kill us. (A `create` killed in between
    // leaves a record `delete` removes: we are in the container's cgroup.)
    // SAFETY: plain prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
    send(&Report::Created {
        guest_pid: m.guest_pid,
    });
    drop(report);
    drop(args.report);
    tracing::debug!(
        "vm {}: created in {} ms",
        args.id,
        started.elapsed().as_millis()
    );
    let code = m.serve();
    m.shutdown();
    std::process::exit(code)
}

enum Pending {
    /// A client's request: its own id, and for exec the process numbers (ours, theirs).
    Client {
        client: u64,
        id: u64,
        exec: Option<(u32, u32)>,
    },
    /// The monitor's own request (a forwarded signal, a resize, a kill for a lost client).
    Own,
}

struct Client {
    conn: Conn,
}

struct Monitor {
    /// The container's network carried into the VM: its redirect goes at the end.
    net: Option<network::Network>,
    id: String,
    dir: PathBuf,
    agent: Conn,
    listener: UnixListener,
    clients: HashMap<u64, Client>,
    next_client: u64,
    next_req: u64,
    next_proc: u32,
    pending: HashMap<u64, Pending>,
    /// Our process number -> (client, the client's number).
    owners: HashMap<u32, (u64, u32)>,
    relay: Relay,
    /// The host pty slave of a terminal: window size changes arrive as SIGWINCH.
    tty: Option<OwnedFd>,
    signals: Signals,
    child: Option<backend::Hypervisor>,
    child_fd: OwnedFd,
    guest_pid: i32,
    backend: Backend,
    started: Instant,
}

/// Wait for `fd` to be readable, failing when the hypervisor exits or the deadline passes.
fn wait_readable(
    fd: std::os::fd::BorrowedFd<'_>,
    child_fd: &OwnedFd,
    deadline: Instant,
) -> std::result::Result<(), WaitFail> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(WaitFail::Timeout);
        }
        let mut fds = [
            PollFd::from_borrowed_fd(fd, PollFlags::IN),
            PollFd::new(child_fd, PollFlags::IN),
        ];
        match poll(&mut fds, Some(&timespec(left))) {
            Ok(_) => {}
            Err(Errno::INTR) => continue,
            Err(e) => {
                return Err(WaitFail::Err(Error::Sys {
                    context: "poll".into(),
                    source: e.into(),
                }))
            }
        }
        if !fds[0].revents().is_empty() {
            return Ok(());
        }
        if !fds[1].revents().is_empty() {
            return Err(WaitFail::Exited);
        }
    }
}

enum WaitFail {
    Timeout,
    Exited,
    Err(Error),
}

impl Monitor {
    fn start(a: &MonitorArgs) -> Result<Monitor> {
        rustix::process::setsid().ctx(|| "setsid".into())?;
        let signals = Signals::forwarded()?;
        let plan = &a.plan;
        let control = a.dir.join(files::CONTROL);
        let _ = std::fs::remove_file(&control);
        let listener =
            UnixListener::bind(&control).ctx(|| format!("bind {}", control.display()))?;
        listener
            .set_nonblocking(true)
            .ctx(|| "set the control socket non-blocking".into())?;
        let process = plan.spec.process.clone().unwrap_or_default();
        let (relay, tty) = match (&a.console, process.terminal) {
            (Some(sock), true) => {
                let (master, slave) = host_pty(process.console_size)?;
                // Our terminal before the engine has the master: every resize it makes
                // then reaches us as SIGWINCH.
                rustix::process::ioctl_tiocsctty(&slave)
                    .ctx(|| "make the pty the monitor's terminal".into())?;
                container::console::send_fd(sock, "bulkhead-vm", &master)
                    .ctx(|| "send the pty master to the console socket".into())?;
                (Relay::terminal(0, &slave)?, Some(slave))
            }
            _ => (Relay::stdio(0, true)?, None),
        };

        // QEMU gets its end of a socket pair; the builtin VMM forwards the guest's vsock
        // connection to <socket>_<port>, where we listen.
        let socket = a.dir.join(files::AGENT);
        let (agent_ours, agent_theirs, listener_path) = match plan.backend {
            Backend::Qemu => {
                let (ours, theirs) = container::console::relay_pair()?;
                (Some(ours), Some(theirs), None)
            }
            Backend::Builtin => (
                None,
                None,
                Some(PathBuf::from(format!(
                    "{}_{}",
                    socket.display(),
                    crate::agent::transport::VSOCK_PORT
                ))),
            ),
        };
        let agent_listener = match &listener_path {
            Some(p) => {
                let _ = std::fs::remove_file(p);
                Some(UnixListener::bind(p).ctx(|| format!("bind {}", p.display()))?)
            }
            None => None,
        };
        // The container's network (an engine's namespace, joined by path): QEMU gets a tap
        // made now; the builtin VMM makes it, started inside the namespace.
        let mut net = match &plan.netns {
            Some(p) => network::prepare(p, plan.backend == Backend::Qemu)?,
            None => None,
        };
        for w in net.iter().flat_map(|n| &n.warnings) {
            tracing::warn!("{w}");
        }
        let desc = VmDesc {
            net_mac: net.as_ref().map(|n| n.mac.clone()),
            kernel: plan.image.kernel(),
            initramfs: plan.image.initramfs(),
            disk: a.disk.clone(),
            shares: plan.shares(),
            memory_mib: plan.memory_mib,
            cpus: plan.cpus,
            socket,
            accel: plan.accel,
        };
        let started = Instant::now();
        let io = backend::HvIo {
            console: a.dir.join(files::CONSOLE_LOG),
            log: a.dir.join(files::HYPERVISOR_LOG),
            agent: agent_theirs,
            tap: net.as_mut().and_then(|n| n.tap.take()),
            netns: net
                .as_ref()
                .filter(|_| plan.backend == Backend::Builtin)
                .map(|n| n.netns()),
        };
        let child = backend::spawn(plan.backend, &desc, io)?;
        let child_fd = match Pid::from_raw(child.pid())
            .and_then(|p| pidfd_open(p, PidfdFlags::empty()).ok())
        {
            Some(fd) => fd,
            None => {
                child.kill();
                child.finish();
                return Err(msg("pidfd_open of the hypervisor failed"));
            }
        };
        let mut m = MonitorStart {
            child: Some(child),
            child_fd,
            dir: a.dir.clone(),
            backend: plan.backend,
            timeout: plan.boot_timeout,
        };
        let deadline = started + plan.boot_timeout;
        let stream: OwnedFd = match (agent_ours, &agent_listener) {
            (Some(fd), _) => fd,
            (None, Some(l)) => m.accept(l, deadline)?.into(),
            (None, None) => unreachable!("one transport per backend"),
        };
        drop(agent_listener);
        if let Some(p) = &listener_path {
            let _ = std::fs::remove_file(p);
        }
        let mut agent = Conn::new(stream)?;
        let hello = m.recv(&mut agent, deadline, "say hello")?;
        match protocol::parse::<ToHost>(&hello)? {
            ToHost::Hello {
                version, boot_ms, ..
            } => {
                if version != protocol::VERSION {
                    return Err(m.fail(format!(
                        "the guest agent speaks protocol version {version}, this bulkhead {}: rebuild the guest image (`bulkhead vm image build`)",
                        protocol::VERSION
                    )));
                }
                tracing::debug!(
                    "vm {}: agent ready {} ms after the hypervisor started (guest kernel up {} ms)",
                    a.id,
                    started.elapsed().as_millis(),
                    boot_ms.unwrap_or(0)
                );
            }
            other => return Err(m.fail(format!("the agent's first message is {other:?}"))),
        }
        agent.send(&ToAgent::Hello {
            version: protocol::VERSION,
            software: protocol::software(),
        });
        let mut spec = plan.spec.clone();
        if let Some(n) = &mut net {
            // The tap exists now (the builtin VMM made it before the guest ran).
            if let Err(e) = n.redirect() {
                return Err(m.fail(format!("the container's network: {e}")));
            }
            // The container shares the guest's network: the VM is its boundary.
            if let Some(l) = spec.linux.as_mut() {
                l.namespaces
                    .retain(|ns| ns.typ != oci::NamespaceType::Network);
            }
        }
        agent.send(&ToAgent::Create {
            id: 0,
            container: a.id.clone(),
            rootfs: plan.rootfs_mount(),
            bind_files: plan.bind_files.clone(),
            shared_dirs: plan.shared_dirs.iter().map(|(d, _)| d.clone()).collect(),
            network: net.as_ref().map(|n| n.guest.clone()),
            spec: Box::new(spec),
        });
        agent.flush_blocking(Some(Instant::now() + plan.boot_timeout))?;
        let reply = m.recv(
            &mut agent,
            Instant::now() + plan.boot_timeout,
            "create the container",
        )?;
        let guest_pid = match protocol::parse::<ToHost>(&reply)? {
            ToHost::Ok { id: 0, pid, .. } => pid.unwrap_or(0),
            ToHost::Error { id: 0, message } => {
                m.stop();
                return Err(msg(message));
            }
            other => return Err(m.fail(format!("unexpected answer to create: {other:?}"))),
        };
        let MonitorStart {
            child, child_fd, ..
        } = m;
        Ok(Monitor {
            net,
            id: a.id.clone(),
            dir: a.dir.clone(),
            agent,
            listener,
            clients: HashMap::new(),
            next_client: 1,
            next_req: 1,
            next_proc: 1,
            pending: HashMap::new(),
            owners: HashMap::new(),
            relay,
            tty,
            signals,
            child,
            child_fd,
            guest_pid,
            backend: plan.backend,
            started,
        })
    }

    /// Serve until the container's init exits; returns its exit code.
    fn serve(&mut self) -> i32 {
        loop {
            if let Err(e) = self.agent.flush() {
                tracing::debug!("vm {}: {e}", self.id);
            }
            for c in self.clients.values_mut() {
                let _ = c.conn.flush();
            }
            self.clients
                .retain(|_, c| !c.conn.closed() || c.conn.pending() > 0);
            match self.step() {
                Ok(Some(code)) => return code,
                Ok(None) => {}
                Err(e) => {
                    return self.lost(&e.to_string());
                }
            }
        }
    }

    /// One poll round; `Some(code)` once the init has exited.
    fn step(&mut self) -> Result<Option<i32>> {
        let mut fds = vec![
            PollFd::from_borrowed_fd(self.agent.fd(), self.agent.events()),
            PollFd::new(&self.listener, PollFlags::IN),
            PollFd::from_borrowed_fd(self.signals.fd(), PollFlags::IN),
            PollFd::new(&self.child_fd, PollFlags::IN),
        ];
        let relay_in = self.agent.pending() < HIGH_WATER;
        let relay_at = fds.len();
        if let (true, Some(fd)) = (relay_in, self.relay.input()) {
            fds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN));
        }
        let clients_at = fds.len();
        let ids: Vec<u64> = self.clients.keys().copied().collect();
        for id in &ids {
            let c = &self.clients[id];
            fds.push(PollFd::from_borrowed_fd(c.conn.fd(), c.conn.events()));
        }
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(Errno::INTR) => return Ok(None),
            Err(e) => return Err(e).ctx(|| "poll".into()),
        }
        let ev: Vec<PollFlags> = fds.iter().map(|f| f.revents()).collect();
        drop(fds);
        if !ev[0].is_empty() {
            self.agent.fill()?;
            while let Some(f) = self.agent.next_frame()? {
                if let Some(code) = self.agent_frame(f)? {
                    return Ok(Some(code));
                }
            }
            if self.agent.closed() {
                return Err(msg("the agent closed its connection"));
            }
        }
        if !ev[1].is_empty() {
            self.accept();
        }
        if !ev[2].is_empty() {
            self.on_signals();
        }
        if !ev[3].is_empty() {
            // Read what the agent sent before it went (an exit among it).
            let _ = self.agent.fill();
            while let Ok(Some(f)) = self.agent.next_frame() {
                if let Some(code) = self.agent_frame(f)? {
                    return Ok(Some(code));
                }
            }
            return Err(msg("the hypervisor exited"));
        }
        if relay_at < clients_at && !ev[relay_at].is_empty() {
            self.relay.on_input(&mut self.agent);
        }
        for (k, id) in ids.iter().enumerate() {
            if !ev[clients_at + k].is_empty() {
                self.client_input(*id);
            }
        }
        Ok(None)
    }

    fn request_id(&mut self, p: Pending) -> u64 {
        let id = self.next_req;
        self.next_req += 1;
        self.pending.insert(id, p);
        id
    }

    fn agent_frame(&mut self, f: Frame) -> Result<Option<i32>> {
        match f {
            Frame::Data {
                process: 0,
                stream,
                bytes,
            } => {
                if !bytes.is_empty() {
                    self.relay.on_output(stream, &bytes);
                }
            }
            Frame::Data {
                process,
                stream,
                bytes,
            } => {
                if let Some((c, local)) = self.owners.get(&process).copied() {
                    if let Some(cl) = self.clients.get_mut(&c) {
                        cl.conn.send_data(local, stream, &bytes);
                    }
                }
            }
            Frame::Message(json) => match protocol::parse::<ToHost>(&json)? {
                ToHost::Hello { .. } => {}
                ToHost::Exit {
                    process: 0, code, ..
                } => {
                    tracing::debug!(
                        "vm {}: container exited with {code}, {} ms after the hypervisor started",
                        self.id,
                        self.started.elapsed().as_millis()
                    );
                    return Ok(Some(code));
                }
                ToHost::Exit {
                    process,
                    code,
                    signal,
                } => {
                    if let Some((c, local)) = self.owners.remove(&process) {
                        if let Some(cl) = self.clients.get_mut(&c) {
                            cl.conn.send(&ToHost::Exit {
                                process: local,
                                code,
                                signal,
                            });
                        }
                    }
                }
                ToHost::Ok { id, .. } | ToHost::Error { id, .. } => {
                    let reply = protocol::parse::<ToHost>(&json)?;
                    match self.pending.remove(&id) {
                        Some(Pending::Client {
                            client,
                            id: their,
                            exec,
                        }) => {
                            let failed = matches!(reply, ToHost::Error { .. });
                            if let (true, Some((ours, _))) = (failed, exec) {
                                self.owners.remove(&ours);
                            }
                            if let Some(cl) = self.clients.get_mut(&client) {
                                cl.conn.send(&with_id(reply, their));
                            }
                        }
                        Some(Pending::Own) => {
                            if let ToHost::Error { message, .. } = reply {
                                tracing::debug!("vm {}: {message}", self.id);
                            }
                        }
                        None => {
                            return Err(Error::Protocol(format!("answer to unknown request {id}")))
                        }
                    }
                }
            },
        }
        Ok(None)
    }

    fn accept(&mut self) {
        while let Ok((s, _)) = self.listener.accept() {
            let Ok(mut conn) = Conn::new(s.into()) else {
                continue;
            };
            conn.send(&ToHost::Hello {
                version: protocol::VERSION,
                software: protocol::software(),
                boot_ms: None,
            });
            self.clients.insert(self.next_client, Client { conn });
            self.next_client += 1;
        }
    }

    fn client_input(&mut self, cid: u64) {
        let mut frames = Vec::new();
        let mut broken = false;
        if let Some(c) = self.clients.get_mut(&cid) {
            if c.conn.fill().is_err() {
                broken = true;
            }
            loop {
                match c.conn.next_frame() {
                    Ok(Some(f)) => frames.push(f),
                    Ok(None) => break,
                    Err(_) => {
                        broken = true;
                        break;
                    }
                }
            }
            broken |= c.conn.closed();
        }
        for f in frames {
            self.client_frame(cid, f);
        }
        if broken {
            self.drop_client(cid);
        }
    }

    /// The process number of ours that client `cid` calls `local` (0 is the init for all).
    fn ours(&self, cid: u64, local: u32) -> Option<u32> {
        if local == 0 {
            return Some(0);
        }
        self.owners
            .iter()
            .find(|(_, (c, l))| *c == cid && *l == local)
            .map(|(o, _)| *o)
    }

    fn client_frame(&mut self, cid: u64, f: Frame) {
        let m = match f {
            Frame::Data {
                process,
                stream: Stream::Stdin,
                bytes,
            } => {
                if let Some(p) = self.ours(cid, process).filter(|p| *p != 0) {
                    self.agent.send_data(p, Stream::Stdin, &bytes);
                }
                return;
            }
            Frame::Data { .. } => return,
            Frame::Message(json) => match protocol::parse::<ToAgent>(&json) {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!("vm {}: client: {e}", self.id);
                    return;
                }
            },
        };
        let reply_err = |me: &mut Monitor, id: u64, message: String| {
            if let Some(c) = me.clients.get_mut(&cid) {
                c.conn.send(&ToHost::Error { id, message });
            }
        };
        let fwd = match m {
            ToAgent::Hello { .. } => return,
            ToAgent::Create { id, .. } => {
                return reply_err(self, id, "the container exists already".into());
            }
            ToAgent::Exec { id, process, spec } => {
                let ours = self.next_proc;
                self.next_proc += 1;
                self.owners.insert(ours, (cid, process));
                let g = self.request_id(Pending::Client {
                    client: cid,
                    id,
                    exec: Some((ours, process)),
                });
                ToAgent::Exec {
                    id: g,
                    process: ours,
                    spec,
                }
            }
            ToAgent::Start { id } => ToAgent::Start {
                id: self.request_id(Pending::Client {
                    client: cid,
                    id,
                    exec: None,
                }),
            },
            ToAgent::Ps { id } => ToAgent::Ps {
                id: self.request_id(Pending::Client {
                    client: cid,
                    id,
                    exec: None,
                }),
            },
            ToAgent::Signal {
                id,
                process,
                signal,
                all,
            } => {
                let Some(p) = self.ours(cid, process) else {
                    return reply_err(self, id, format!("no process {process}"));
                };
                ToAgent::Signal {
                    id: self.request_id(Pending::Client {
                        client: cid,
                        id,
                        exec: None,
                    }),
                    process: p,
                    signal,
                    all,
                }
            }
            ToAgent::Resize {
                id,
                process,
                rows,
                cols,
            } => {
                let Some(p) = self.ours(cid, process) else {
                    return reply_err(self, id, format!("no process {process}"));
                };
                ToAgent::Resize {
                    id: self.request_id(Pending::Client {
                        client: cid,
                        id,
                        exec: None,
                    }),
                    process: p,
                    rows,
                    cols,
                }
            }
        };
        self.agent.send(&fwd);
    }

    /// A client went away: what it exec'd goes too (its relay was that process's host
    /// side), and answers meant for it are dropped.
    fn drop_client(&mut self, cid: u64) {
        self.clients.remove(&cid);
        let orphans: Vec<u32> = self
            .owners
            .iter()
            .filter(|(_, (c, _))| *c == cid)
            .map(|(o, _)| *o)
            .collect();
        for p in orphans {
            self.owners.remove(&p);
            let id = self.request_id(Pending::Own);
            self.agent.send(&ToAgent::Signal {
                id,
                process: p,
                signal: libc::SIGKILL,
                all: false,
            });
        }
        for p in self.pending.values_mut() {
            if matches!(p, Pending::Client { client, .. } if *client == cid) {
                *p = Pending::Own;
            }
        }
    }

    fn on_signals(&mut self) {
        for s in self.signals.read() {
            if s.signo == libc::SIGWINCH && self.tty.is_some() && !s.from_process {
                if let Some(ws) = self
                    .tty
                    .as_ref()
                    .and_then(|t| rustix::termios::tcgetwinsize(t).ok())
                {
                    let id = self.request_id(Pending::Own);
                    self.agent.send(&ToAgent::Resize {
                        id,
                        process: 0,
                        rows: ws.ws_row,
                        cols: ws.ws_col,
                    });
                }
            } else if s.from_process {
                let id = self.request_id(Pending::Own);
                self.agent.send(&ToAgent::Signal {
                    id,
                    process: 0,
                    signal: s.signo,
                    all: false,
                });
            }
        }
    }

    /// The VM ended (or the agent broke) before the init's exit: say so on the container's
    /// stderr and stop with [`VM_LOST_CODE`].
    fn lost(&mut self, why: &str) -> i32 {
        let status = if exited(&self.child_fd) {
            self.child
                .take()
                .map(|c| format!(" ({})", c.finish()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let log = console_summary(&self.dir.join(files::CONSOLE_LOG));
        let line = format!(
            "bulkhead: VM of container {:?} ended before the container did: {why}{status}; backend {}; console: {log}\n",
            self.id,
            self.backend.name()
        );
        self.relay.on_output(Stream::Stderr, line.as_bytes());
        tracing::warn!("{}", line.trim_end());
        VM_LOST_CODE
    }

    /// Give clients their last messages, let the VM power off (or kill it), remove the
    /// sockets.
    fn shutdown(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        for c in self.clients.values_mut() {
            let _ = c.conn.flush_blocking(Some(deadline));
        }
        let grace = Instant::now() + POWER_OFF_GRACE;
        if let Some(child) = self.child.take() {
            loop {
                let left = grace.saturating_duration_since(Instant::now());
                if exited(&self.child_fd) {
                    break;
                }
                if left.is_zero() {
                    child.kill();
                    break;
                }
                let mut fds = [PollFd::new(&self.child_fd, PollFlags::IN)];
                let _ = poll(&mut fds, Some(&timespec(left)));
            }
            child.finish();
        }
        // The process exits without running destructors: the redirect goes here.
        if let Some(mut n) = self.net.take() {
            n.teardown();
        }
        for f in [files::CONTROL, files::AGENT] {
            let _ = std::fs::remove_file(self.dir.join(f));
        }
    }
}

fn with_id(m: ToHost, id: u64) -> ToHost {
    match m {
        ToHost::Ok { pid, processes, .. } => ToHost::Ok { id, pid, processes },
        ToHost::Error { message, .. } => ToHost::Error { id, message },
        other => other,
    }
}

/// The hypervisor and what the startup phase needs to report its failures.
struct MonitorStart {
    child: Option<backend::Hypervisor>,
    child_fd: OwnedFd,
    dir: PathBuf,
    backend: Backend,
    timeout: Duration,
}

/// Has the process behind the pidfd `fd` exited (without waiting)?
fn exited(fd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    matches!(poll(&mut fds, Some(&timespec(Duration::ZERO))), Ok(n) if n > 0)
}

impl MonitorStart {
    /// Kill the hypervisor (if it still runs) and reap it; how it ended.
    fn stop(&mut self) -> String {
        match self.child.take() {
            Some(c) => {
                c.kill();
                c.finish()
            }
            None => String::new(),
        }
    }

    /// Stop the hypervisor and phrase why, with the end of its logs.
    fn fail(&mut self, why: String) -> Error {
        let status = if exited(&self.child_fd) {
            format!("exited ({})", self.stop())
        } else {
            self.stop();
            "killed".into()
        };
        let console = console_summary(&self.dir.join(files::CONSOLE_LOG));
        let hv = tail(&self.dir.join(files::HYPERVISOR_LOG), 2);
        msg(format!(
            "{why} (backend {}, hypervisor {status}); console: {console}; hypervisor: {hv}",
            self.backend.name()
        ))
    }

    fn waited(&mut self, e: WaitFail, what: &str) -> Error {
        match e {
            WaitFail::Timeout => self.fail(format!(
                "the guest agent did not {what} within {} s (boot timeout; annotation run.bulkhead.vm.boot-timeout)",
                self.timeout.as_secs_f64()
            )),
            WaitFail::Exited => self.fail(format!("the VM ended before the agent could {what}")),
            WaitFail::Err(e) => self.fail(e.to_string()),
        }
    }

    fn accept(
        &mut self,
        l: &UnixListener,
        deadline: Instant,
    ) -> Result<std::os::unix::net::UnixStream> {
        if let Err(e) = wait_readable(l.as_fd(), &self.child_fd, deadline) {
            return Err(self.waited(e, "connect"));
        }
        let (s, _) = l.accept().ctx(|| "accept the agent's connection".into())?;
        Ok(s)
    }

    /// The next message from the agent (data frames are not expected yet).
    fn recv(&mut self, c: &mut Conn, deadline: Instant, what: &str) -> Result<Vec<u8>> {
        loop {
            if let Some(f) = c.next_frame()? {
                match f {
                    Frame::Message(m) => return Ok(m),
                    Frame::Data { .. } => continue,
                }
            }
            if c.closed() {
                // QEMU's chardev connects before the guest runs; a closed connection
                // means the hypervisor went.
                let _ = wait_readable(self.child_fd.as_fd(), &self.child_fd, deadline);
                return Err(self.waited(WaitFail::Exited, what));
            }
            c.flush()?;
            if let Err(e) = wait_readable(c.fd(), &self.child_fd, deadline) {
                return Err(self.waited(e, what));
            }
            c.fill()?;
        }
    }
}
