//! The agent's protocol server: one poll loop over the host connection, the container's
//! processes (their pidfds and stdio) and, as PID 1, SIGCHLD for orphans it must reap.
//!
//! The container is built by [`container::Runtime`] exactly as on the host; this module
//! only prepares what the host cannot give the guest directly (the root filesystem from a
//! disk, the content of bind-mounted files) and relays stdio, signals and exit statuses.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use container::exec::ExecOptions;
use container::CreateOptions;
use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;
use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

use crate::conn::{set_nonblocking, Conn, HIGH_WATER};
use crate::error::{msg, Context, Error, Result};
use crate::protocol::{
    self, BindFile, Frame, GuestNetwork, GuestProcess, RootfsDisk, SharedDir, Stream, ToAgent,
    ToHost, NINEP_OPTIONS,
};

/// Where the agent keeps its files.
pub struct Layout {
    /// Mount points and copies of bind-mounted files.
    pub work: PathBuf,
    /// The container library's state root.
    pub state_root: PathBuf,
}

impl Layout {
    pub fn guest() -> Layout {
        Layout {
            work: PathBuf::from("/run/bulkhead-agent"),
            state_root: PathBuf::from("/run/bulkhead"),
        }
    }
}

/// What a create request brings besides the config.
struct Guest<'a> {
    rootfs: &'a RootfsDisk,
    files: &'a [BindFile],
    shared: &'a [SharedDir],
    network: Option<&'a GuestNetwork>,
}

/// What poll reported: the connection's events, SIGCHLD, each process's descriptors.
type Ready = (PollFlags, bool, Vec<(u32, ProcEvents)>);

/// What poll reported for one process.
struct ProcEvents {
    exited: bool,
    readable: Vec<bool>,
    writable: bool,
}

/// A process of the container: the init (number 0) or an exec'd one.
struct Proc {
    pid: i32,
    pidfd: OwnedFd,
    stdin: Option<OwnedFd>,
    stdin_buf: Vec<u8>,
    /// The host ended stdin: close it once the buffer is written.
    stdin_eof: bool,
    outputs: Vec<(Stream, OwnedFd)>,
    /// The pty master, for resize.
    master: Option<OwnedFd>,
    /// The wait status, once reaped.
    status: Option<i32>,
}

pub struct Server {
    conn: Conn,
    layout: Layout,
    rt: container::Runtime,
    container: Option<String>,
    procs: BTreeMap<u32, Proc>,
    sigchld: Option<OwnedFd>,
    greeted: bool,
    finished: bool,
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).ctx(|| "pipe".into())
}

/// A signalfd for SIGCHLD (blocked first, so it is queued for the descriptor).
fn sigchld_fd() -> Result<OwnedFd> {
    // SAFETY: sigset manipulation on a local, sigprocmask and signalfd with valid pointers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).ctx(|| "signalfd".into());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

impl Server {
    pub fn new(fd: OwnedFd, layout: Layout) -> Result<Server> {
        // As PID 1 the agent reaps every orphan of the guest.
        let sigchld = Some(sigchld_fd()?);
        Ok(Server {
            conn: Conn::new(fd)?,
            rt: container::Runtime::new(&layout.state_root),
            layout,
            container: None,
            procs: BTreeMap::new(),
            sigchld,
            greeted: false,
            finished: false,
        })
    }

    /// Serve until the container is gone (and the host has every message) or the host
    /// hangs up.
    pub fn run(&mut self) -> Result<()> {
        self.conn.send(&ToHost::Hello {
            version: protocol::VERSION,
            software: protocol::software(),
            boot_ms: Some(super::boot::uptime_ms()),
        });
        let res = self.run_loop();
        if res.is_err() || !self.finished {
            self.kill_container();
        }
        res
    }

    fn run_loop(&mut self) -> Result<()> {
        loop {
            self.conn.flush()?;
            if self.finished && self.conn.pending() == 0 {
                return Ok(());
            }
            let (conn_ev, sig_ev, proc_ev) = self.wait()?;
            if conn_ev.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
                self.conn.fill()?;
                while let Some(f) = self.conn.next_frame()? {
                    self.frame(f)?;
                }
                if self.conn.closed() {
                    return Err(msg("the host closed the connection"));
                }
            }
            if sig_ev {
                self.reap_orphans();
            }
            for (n, ev) in proc_ev {
                self.proc_event(n, ev);
            }
            self.finish_exited();
        }
    }

    /// Poll everything; returns the connection's events, whether SIGCHLD arrived, and
    /// what each process's descriptors reported.
    fn wait(&mut self) -> Result<Ready> {
        let mut fds = vec![PollFd::from_borrowed_fd(self.conn.fd(), self.conn.events())];
        if let Some(s) = &self.sigchld {
            fds.push(PollFd::new(s, PollFlags::IN));
        }
        let base = fds.len();
        let read_outputs = self.conn.pending() < HIGH_WATER;
        let mut layout = Vec::new();
        for (n, p) in &self.procs {
            let pidfd = p.status.is_none();
            if pidfd {
                fds.push(PollFd::new(&p.pidfd, PollFlags::IN));
            }
            let outputs = if read_outputs { p.outputs.len() } else { 0 };
            for (_, fd) in &p.outputs[..outputs] {
                fds.push(PollFd::new(fd, PollFlags::IN));
            }
            let stdin = match &p.stdin {
                Some(fd) if !p.stdin_buf.is_empty() || p.stdin_eof => {
                    fds.push(PollFd::new(fd, PollFlags::OUT));
                    true
                }
                _ => false,
            };
            layout.push((*n, pidfd, outputs, stdin));
        }
        loop {
            match poll(&mut fds, None) {
                Ok(_) => break,
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e).ctx(|| "poll".into()),
            }
        }
        let conn_ev = fds[0].revents();
        let sig_ev = self.sigchld.is_some() && !fds[1].revents().is_empty();
        let mut ev = fds[base..].iter().map(|f| !f.revents().is_empty());
        let mut per = Vec::new();
        for (n, pidfd, outputs, stdin) in layout {
            let exited = pidfd && ev.next().unwrap_or(false);
            let readable = (0..outputs).map(|_| ev.next().unwrap_or(false)).collect();
            let writable = stdin && ev.next().unwrap_or(false);
            per.push((
                n,
                ProcEvents {
                    exited,
                    readable,
                    writable,
                },
            ));
        }
        Ok((conn_ev, sig_ev, per))
    }

    /// Handle what process `n`'s descriptors reported.
    fn proc_event(&mut self, n: u32, ev: ProcEvents) {
        let Some(p) = self.procs.get_mut(&n) else {
            return;
        };
        if ev.exited && p.status.is_none() {
            p.status = waitpid(p.pid);
        }
        let mut closed = Vec::new();
        for (k, ready) in ev.readable.iter().enumerate() {
            if !ready {
                continue;
            }
            let (stream, fd) = &p.outputs[k];
            let mut buf = [0u8; protocol::DATA_CHUNK];
            match rustix::io::read(fd, &mut buf) {
                Ok(0) => closed.push(k),
                Ok(len) => self.conn.send_data(n, *stream, &buf[..len]),
                Err(Errno::AGAIN) | Err(Errno::INTR) => {}
                // EIO: every descriptor of the pty's other side is closed.
                Err(_) => closed.push(k),
            }
        }
        for k in closed.into_iter().rev() {
            let (stream, _) = p.outputs.remove(k);
            self.conn.send_data(n, stream, &[]);
        }
        if ev.writable {
            write_stdin(p);
        }
    }

    /// Send the end of every process that was reaped: its last output, then `exit`. When
    /// the init is gone, the container goes, and with it every other process.
    fn finish_exited(&mut self) {
        let done: Vec<u32> = self
            .procs
            .iter()
            .filter(|(_, p)| p.status.is_some())
            .map(|(n, _)| *n)
            .collect();
        for n in done {
            // The init's end takes every other process along (below).
            let Some(p) = self.procs.remove(&n) else {
                continue;
            };
            if n == 0 {
                // The others end with the container; the host hears of them first, since
                // the init's exit ends the VM.
                self.kill_container();
                let rest = std::mem::take(&mut self.procs);
                for (m, mut q) in rest {
                    if q.status.is_none() {
                        let mut st = 0;
                        // SAFETY: blocking waitpid on our own child, killed with its cgroup.
                        unsafe { libc::waitpid(q.pid, &mut st, 0) };
                        q.status = Some(st);
                    }
                    self.send_end(m, q);
                }
                self.finished = true;
            }
            self.send_end(n, p);
        }
    }

    fn send_end(&mut self, n: u32, mut p: Proc) {
        // Output written before the exit is in the pipes now: pass it on.
        for (stream, fd) in p.outputs.drain(..) {
            let mut buf = [0u8; protocol::DATA_CHUNK];
            while let Ok(len) = rustix::io::read(&fd, &mut buf) {
                if len == 0 {
                    break;
                }
                self.conn.send_data(n, stream, &buf[..len]);
            }
            self.conn.send_data(n, stream, &[]);
        }
        let status = p.status.unwrap_or(0);
        let signal = libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status));
        self.conn.send(&ToHost::Exit {
            process: n,
            code: container::exit_code(status),
            signal,
        });
    }

    /// Reap children nobody tracks (orphans re-parented to PID 1), keeping the status of
    /// tracked ones that a wildcard wait took first.
    fn reap_orphans(&mut self) {
        if let Some(s) = &self.sigchld {
            let mut info = [0u8; 128];
            while rustix::io::read(s, &mut info).is_ok() {}
        }
        loop {
            let mut st = 0;
            // SAFETY: waitpid with a valid status pointer.
            let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if let Some(p) = self.procs.values_mut().find(|p| p.pid == pid) {
                p.status = Some(st);
            }
        }
    }

    fn kill_container(&mut self) {
        if let Some(id) = self.container.take() {
            if let Err(e) = self.rt.delete(&id, true) {
                eprintln!("bulkhead agent: delete the container: {e}");
            }
        }
    }

    fn frame(&mut self, f: Frame) -> Result<()> {
        match f {
            Frame::Data {
                process,
                stream: Stream::Stdin,
                bytes,
            } => {
                if let Some(p) = self.procs.get_mut(&process) {
                    if bytes.is_empty() {
                        p.stdin_eof = true;
                    } else {
                        p.stdin_buf.extend_from_slice(&bytes);
                    }
                    write_stdin(p);
                }
                Ok(())
            }
            Frame::Data { stream, .. } => Err(Error::Protocol(format!(
                "the host sent data for {stream:?}"
            ))),
            Frame::Message(json) => {
                let m: ToAgent = protocol::parse(&json)?;
                if !self.greeted {
                    return match m {
                        ToAgent::Hello { version, .. } if version == protocol::VERSION => {
                            self.greeted = true;
                            Ok(())
                        }
                        ToAgent::Hello { version, .. } => Err(Error::Protocol(format!(
                            "host speaks version {version}, this agent {}",
                            protocol::VERSION
                        ))),
                        _ => Err(Error::Protocol("no hello from the host".into())),
                    };
                }
                self.request(m);
                Ok(())
            }
        }
    }

    fn request(&mut self, m: ToAgent) {
        let (id, res) = match m {
            ToAgent::Hello { .. } => return,
            ToAgent::Create {
                id,
                container,
                rootfs,
                bind_files,
                shared_dirs,
                network,
                spec,
            } => {
                let guest = Guest {
                    rootfs: &rootfs,
                    files: &bind_files,
                    shared: &shared_dirs,
                    network: network.as_ref(),
                };
                (id, self.create(&container, guest, *spec))
            }
            ToAgent::Start { id } => (id, self.start()),
            ToAgent::Signal {
                id,
                process,
                signal,
                all,
            } => (id, self.signal(process, signal, all)),
            ToAgent::Exec { id, process, spec } => (id, self.exec(process, *spec)),
            ToAgent::Resize {
                id,
                process,
                rows,
                cols,
            } => (id, self.resize(process, rows, cols)),
            ToAgent::Ps { id } => (
                id,
                self.ps().map(|list| ToHost::Ok {
                    id,
                    pid: None,
                    processes: Some(list),
                }),
            ),
        };
        let reply = match res {
            Ok(ToHost::Ok { pid, processes, .. }) => ToHost::Ok { id, pid, processes },
            Ok(other) => other,
            Err(e) => ToHost::Error {
                id,
                message: e.to_string(),
            },
        };
        self.conn.send(&reply);
    }

    fn container_id(&self) -> Result<&str> {
        self.container
            .as_deref()
            .ok_or_else(|| msg("no container has been created"))
    }

    fn create(&mut self, id: &str, g: Guest<'_>, mut spec: oci::Spec) -> Result<ToHost> {
        if self.container.is_some() || self.procs.contains_key(&0) {
            return Err(msg("this VM runs a container already"));
        }
        if let Some(n) = g.network {
            super::network::configure(n)?;
            super::network::apply_net_sysctls(&mut spec)?;
        }
        let root = spec
            .root
            .as_mut()
            .ok_or_else(|| msg("create: the config has no root"))?;
        let rootfs = mount_rootfs(&self.layout.work, g.rootfs)?;
        root.path = rootfs.display().to_string();
        write_bind_files(&self.layout.work, g.files, &mut spec)?;
        mount_shared_dirs(&self.layout.work, g.shared, &mut spec)?;
        let terminal = spec.process.as_ref().is_some_and(|p| p.terminal);
        let private_net = spec
            .linux
            .as_ref()
            .and_then(|l| l.namespace(oci::NamespaceType::Network))
            .is_some_and(|n| n.path.is_none());
        let io = Stdio::new(terminal)?;
        let opts = CreateOptions {
            bundle: self.layout.work.clone(),
            spec: Some(spec),
            console_fd: io.console_fd(),
            stdio: io.child_fds(),
            ..Default::default()
        };
        let created = self.rt.create(id, &opts)?;
        self.container = Some(id.to_string());
        if private_net {
            // Before `start`: the program finds it up. (On failure the container goes
            // with the VM: the host stops it on this error.)
            super::network::loopback_up_in(created.pid)?;
        }
        let p = io.into_proc(created.pid)?;
        self.procs.insert(0, p);
        Ok(ToHost::Ok {
            id: 0,
            pid: Some(created.pid),
            processes: None,
        })
    }

    fn start(&mut self) -> Result<ToHost> {
        let id = self.container_id()?.to_string();
        self.rt.start(&id)?;
        Ok(ToHost::ok(0))
    }

    fn signal(&mut self, process: u32, signal: i32, all: bool) -> Result<ToHost> {
        if process == 0 {
            let id = self.container_id()?.to_string();
            self.rt.kill(&id, signal, all)?;
            return Ok(ToHost::ok(0));
        }
        let p = self
            .procs
            .get(&process)
            .filter(|p| p.status.is_none())
            .ok_or_else(|| msg(format!("process {process} is not running")))?;
        if !(1..=64).contains(&signal) {
            return Err(msg(format!("invalid signal {signal}")));
        }
        // SAFETY: a signal number in the kernel's range.
        let sig = unsafe { Signal::from_raw_unchecked(signal) };
        pidfd_send_signal(&p.pidfd, sig).ctx(|| format!("signal process {process}"))?;
        Ok(ToHost::ok(0))
    }

    fn exec(&mut self, process: u32, spec: oci::Process) -> Result<ToHost> {
        let id = self.container_id()?.to_string();
        if process == 0 || self.procs.contains_key(&process) {
            return Err(msg(format!("process number {process} is in use")));
        }
        let io = Stdio::new(spec.terminal)?;
        let opts = ExecOptions {
            process: spec,
            console_fd: io.console_fd(),
            stdio: io.child_fds(),
            ..Default::default()
        };
        let pid = self.rt.exec_spawn(&id, &opts)?;
        let p = io.into_proc(pid)?;
        self.procs.insert(process, p);
        Ok(ToHost::Ok {
            id: 0,
            pid: Some(pid),
            processes: None,
        })
    }

    fn resize(&mut self, process: u32, rows: u16, cols: u16) -> Result<ToHost> {
        let m = self
            .procs
            .get(&process)
            .and_then(|p| p.master.as_ref())
            .ok_or_else(|| msg(format!("process {process} has no terminal")))?;
        let ws = rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(m, ws).ctx(|| "set the window size".into())?;
        Ok(ToHost::ok(0))
    }

    fn ps(&mut self) -> Result<Vec<GuestProcess>> {
        let id = self.container_id()?.to_string();
        let saved = self.rt.load(&id)?;
        let cg = saved
            .cgroup
            .as_ref()
            .ok_or_else(|| msg("the container has no cgroup"))?;
        let pids = cgroups::Cgroup::from_saved(cg).all_procs()?;
        Ok(pids
            .into_iter()
            .map(|pid| GuestProcess {
                pid,
                args: fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| {
                        c.split(|b| *b == 0)
                            .filter(|a| !a.is_empty())
                            .map(|a| String::from_utf8_lossy(a).into_owned())
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect())
    }
}

fn write_stdin(p: &mut Proc) {
    let Some(fd) = &p.stdin else { return };
    while !p.stdin_buf.is_empty() {
        match rustix::io::write(fd, &p.stdin_buf) {
            Ok(n) => {
                p.stdin_buf.drain(..n);
            }
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return,
            Err(_) => {
                // The process closed its stdin: drop what it will never read.
                p.stdin_buf.clear();
                p.stdin = None;
                return;
            }
        }
    }
    if p.stdin_eof && p.master.is_none() {
        p.stdin = None;
    }
}

fn waitpid(pid: i32) -> Option<i32> {
    let mut st = 0;
    // SAFETY: waitpid on our own child with a valid status pointer.
    let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
    (r == pid).then_some(st)
}

/// The stdio of a new container process: pipes, or a pty whose master the container
/// library sends over a socket pair.
enum Stdio {
    Pipes {
        child: [OwnedFd; 3],
        ours: [OwnedFd; 3],
    },
    Pty {
        ours: OwnedFd,
        theirs: OwnedFd,
    },
}

impl Stdio {
    fn new(terminal: bool) -> Result<Stdio> {
        if terminal {
            let (ours, theirs) = container::console::relay_pair()?;
            return Ok(Stdio::Pty { ours, theirs });
        }
        let (in_r, in_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        Ok(Stdio::Pipes {
            child: [in_r, out_w, err_w],
            ours: [in_w, out_r, err_r],
        })
    }

    fn console_fd(&self) -> Option<RawFd> {
        match self {
            Stdio::Pty { theirs, .. } => Some(theirs.as_raw_fd()),
            Stdio::Pipes { .. } => None,
        }
    }

    fn child_fds(&self) -> Option<[RawFd; 3]> {
        match self {
            Stdio::Pipes { child, .. } => Some(child.each_ref().map(|f| f.as_raw_fd())),
            Stdio::Pty { .. } => None,
        }
    }

    /// Our ends, for the process `pid` that now runs (the child's ends close here).
    fn into_proc(self, pid: i32) -> Result<Proc> {
        let pidfd = pidfd_open(
            Pid::from_raw(pid).ok_or_else(|| msg("bad pid"))?,
            PidfdFlags::empty(),
        )
        .ctx(|| format!("pidfd_open({pid})"))?;
        let (stdin, outputs, master) = match self {
            Stdio::Pipes { ours, .. } => {
                let [i, o, e] = ours;
                for fd in [&i, &o, &e] {
                    set_nonblocking(fd)?;
                }
                (i, vec![(Stream::Stdout, o), (Stream::Stderr, e)], None)
            }
            Stdio::Pty { ours, .. } => {
                let m = container::console::recv_fd(&ours, true)
                    .ctx(|| "receive the pty master".into())?
                    .ok_or_else(|| msg("the container did not send its pty master"))?;
                set_nonblocking(&m)?;
                let dup = |f: &OwnedFd| f.as_fd().try_clone_to_owned().ctx(|| "dup".into());
                (dup(&m)?, vec![(Stream::Stdout, dup(&m)?)], Some(m))
            }
        };
        Ok(Proc {
            pid,
            pidfd,
            stdin: Some(stdin),
            stdin_buf: Vec::new(),
            stdin_eof: false,
            outputs,
            master,
            status: None,
        })
    }
}

/// Mount the root filesystem read-only at `<work>/disk` and stack an overlay with a tmpfs
/// upper layer on it at `<work>/rootfs`: the container library creates mount points in the
/// root (even one the config wants read-only, which it remounts read-only after), and a
/// writable root's writes stay in guest memory; the disk is never written. A root shared by
/// the host over 9p is the host's own files: nosuid and nodev as well (its setuid bits and
/// device nodes are the host's, not the container's).
fn mount_rootfs(work: &Path, disk: &RootfsDisk) -> Result<PathBuf> {
    use container::sys::mount;
    let host_files = if disk.fstype == "9p" {
        libc::MS_NOSUID | libc::MS_NODEV
    } else {
        0
    };
    let lower = work.join("disk");
    fs::create_dir_all(&lower).ctx(|| format!("mkdir {}", lower.display()))?;
    mount(
        Some(&disk.device),
        &lower,
        Some(&disk.fstype),
        libc::MS_RDONLY | host_files,
        disk.options.as_deref(),
    )
    .ctx(|| format!("mount {} ({}) read-only", disk.device, disk.fstype))?;
    let rw = work.join("rw");
    let top = work.join("rootfs");
    for d in [&rw, &top] {
        fs::create_dir_all(d).ctx(|| format!("mkdir {}", d.display()))?;
    }
    mount(Some("tmpfs"), &rw, Some("tmpfs"), 0, Some("mode=0755"))
        .ctx(|| format!("mount tmpfs on {}", rw.display()))?;
    for d in ["upper", "work"] {
        fs::create_dir(rw.join(d)).ctx(|| format!("mkdir {}/{d}", rw.display()))?;
    }
    let data = format!(
        "lowerdir={},upperdir={}/upper,workdir={}/work",
        lower.display(),
        rw.display(),
        rw.display()
    );
    mount(
        Some("overlay"),
        &top,
        Some("overlay"),
        host_files,
        Some(&data),
    )
    .ctx(|| format!("mount overlay on {}", top.display()))?;
    Ok(top)
}

/// Mount each host directory the hypervisor exports over 9p at `<work>/shared/<mount>`
/// (nosuid, nodev: the host's setuid bits and device nodes; read-only when exported so) and
/// make it the source of its bind mount.
fn mount_shared_dirs(work: &Path, shared: &[SharedDir], spec: &mut oci::Spec) -> Result<()> {
    for d in shared {
        let m = spec.mounts.get_mut(d.mount).ok_or_else(|| {
            msg(format!(
                "shared directory for mounts[{}]: no such mount",
                d.mount
            ))
        })?;
        let dir = work.join("shared").join(d.mount.to_string());
        fs::create_dir_all(&dir).ctx(|| format!("mkdir {}", dir.display()))?;
        let ro = if d.readonly { libc::MS_RDONLY } else { 0 };
        container::sys::mount(
            Some(&d.tag),
            &dir,
            Some("9p"),
            libc::MS_NOSUID | libc::MS_NODEV | ro,
            Some(NINEP_OPTIONS),
        )
        .ctx(|| {
            format!(
                "mount the host directory shared as {} for {}",
                d.tag, m.destination
            )
        })?;
        m.source = Some(dir.display().to_string());
    }
    Ok(())
}

/// Write the host's bind-mounted files into `<work>/files/` and point their mounts there.
fn write_bind_files(work: &Path, files: &[BindFile], spec: &mut oci::Spec) -> Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let dir = work.join("files");
    fs::create_dir_all(&dir).ctx(|| format!("mkdir {}", dir.display()))?;
    for f in files {
        let m = spec
            .mounts
            .get_mut(f.mount)
            .ok_or_else(|| msg(format!("bind file for mounts[{}]: no such mount", f.mount)))?;
        let path = dir.join(f.mount.to_string());
        fs::write(&path, f.bytes()?).ctx(|| format!("write {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(f.mode & 0o7777))
            .ctx(|| format!("chmod {}", path.display()))?;
        m.source = Some(path.display().to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_files_replace_mount_sources() {
        let work = std::env::temp_dir().join(format!("bh-agent-files-{}", std::process::id()));
        let mut spec = oci::Spec {
            mounts: vec![
                oci::Mount {
                    destination: "/proc".into(),
                    ..Default::default()
                },
                oci::Mount {
                    destination: "/etc/hosts".into(),
                    typ: Some("bind".into()),
                    source: Some("/var/lib/x/hosts".into()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let files = [BindFile::new(1, 0o640, b"127.0.0.1 here\n")];
        write_bind_files(&work, &files, &mut spec).unwrap();
        let src = spec.mounts[1].source.clone().unwrap();
        assert_eq!(src, work.join("files/1").display().to_string());
        assert_eq!(fs::read(&src).unwrap(), b"127.0.0.1 here\n");
        let mode = fs::metadata(&src).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(spec.mounts[0].source, None);
        let bad = [BindFile::new(5, 0o644, b"x")];
        assert!(write_bind_files(&work, &bad, &mut spec).is_err());
        fs::remove_dir_all(&work).unwrap();
    }
}
