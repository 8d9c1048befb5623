//! `exec`: run another process in an existing container. It joins every
//! namespace of the container's init, its cgroup, and runs under the
//! container's seccomp filter and the process's own capabilities, user and
//! LSM label — like the init, through [`crate::launch`].

use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use oci::{NamespaceType, Spec};
use rustix::fs::{Mode, OFlags};

use crate::error::{msg, Context, Error, Result};
use crate::lsm::Lsm;
use crate::state::StateDir;
use crate::sync::{self, Channel, Msg};
use crate::{capabilities, console, foreground, namespaces, process, sys, Runtime};

#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub process: oci::Process,
    pub console_socket: Option<PathBuf>,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub preserve_fds: u32,
    /// A sub-cgroup of the container's (cgroup v2) to run the process in.
    pub cgroup: Option<String>,
    /// An already connected console socket (kept open by the caller), used instead of
    /// `console_socket`.
    pub console_fd: Option<std::os::fd::RawFd>,
    /// The process's stdin, stdout and stderr when they are not the runtime's own
    /// (descriptors above 2, kept open by the caller until the process runs).
    pub stdio: Option<[std::os::fd::RawFd; 3]>,
}

const CONFIG_COPY: &str = "config.json";

/// Keep the container's config next to its state: `exec` needs it (namespaces,
/// seccomp) and the bundle may change or go away after `create`.
pub fn save_config(sd: &StateDir, spec: &Spec) -> Result<()> {
    let path = sd.dir.join(CONFIG_COPY);
    fs::write(&path, serde_json::to_vec(spec).expect("spec serialises"))
        .ctx(|| format!("write {}", path.display()))
}

pub(crate) fn load_config(sd: &StateDir) -> Result<Spec> {
    let path = sd.dir.join(CONFIG_COPY);
    let text = fs::read(&path).ctx(|| format!("read {}", path.display()))?;
    Ok(oci::from_json(&text, &path.display().to_string())?)
}

impl Runtime {
    /// The config the container was created with.
    pub fn config(&self, id: &str) -> Result<Spec> {
        let sd = StateDir::open(&self.root, id, false)?;
        sd.load()?;
        load_config(&sd)
    }

    /// Run `opts.process` in container `id`; returns its exit code (or 0
    /// once started, with `detach`).
    pub fn exec(&self, id: &str, opts: &ExecOptions) -> Result<i32> {
        let old_mask = (!opts.detach).then(foreground::block_forwarded_signals);
        let res = self.exec_inner(id, opts);
        if let Some(m) = old_mask {
            foreground::restore_signals(&m);
        }
        res
    }

    /// Start `opts.process` in container `id` and return its pid once it runs, without
    /// waiting for it (for library callers that hold its stdio, such as the VM agent; the
    /// process is their child to reap).
    pub fn exec_spawn(&self, id: &str, opts: &ExecOptions) -> Result<i32> {
        let opts = ExecOptions {
            detach: true,
            ..opts.clone()
        };
        Ok(self.spawn(id, &opts)?.0)
    }

    fn exec_inner(&self, id: &str, opts: &ExecOptions) -> Result<i32> {
        let (child, master) = self.spawn(id, opts)?;
        if opts.detach {
            return Ok(0);
        }
        let status = foreground::wait(child, master)?;
        Ok(crate::exit_code(status))
    }

    /// Everything of exec up to the running process: its pid, and the pty master when
    /// this process relays the terminal.
    fn spawn(&self, id: &str, opts: &ExecOptions) -> Result<(i32, Option<OwnedFd>)> {
        let sd = StateDir::open(&self.root, id, false)?;
        let saved = sd.load()?;
        let status = saved.status();
        if !matches!(status, oci::Status::Created | oci::Status::Running) {
            return Err(Error::State {
                op: "exec in",
                id: id.into(),
                status,
            });
        }
        let spec = load_config(&sd)?;
        let p = &opts.process;
        oci::validate_process(p, "process")?;
        let lsm = Lsm::host();
        lsm.check(p)?;
        process::check_rlimits(&p.rlimits)?;
        let (caps, skipped) = capabilities::resolve(p.capabilities.as_ref());
        if !skipped.is_empty() {
            tracing::warn!("ignoring capabilities: {}", skipped.join(", "));
        }
        let linux = spec.linux();
        let filter = linux.seccomp.as_ref().map(seccomp::compile).transpose()?;
        if crate::exe::needs_sealed_copy(&spec) && !crate::exe::is_sealed_copy() {
            let e = crate::exe::reexec_sealed();
            return Err(e)
                .ctx(|| "re-execute from a sealed copy of the runtime (CVE-2019-5736)".into());
        }
        if let Some(path) = linux
            .seccomp
            .as_ref()
            .and_then(|s| s.listener_path.as_deref())
        {
            if filter.as_ref().is_some_and(|f| f.uses_notify()) {
                seccomp::check_listener_path(std::path::Path::new(path))?;
            }
        }
        if p.terminal && opts.detach && opts.console_socket.is_none() && opts.console_fd.is_none() {
            return Err(msg(
                "exec --tty --detach needs --console-socket (nothing would hold the terminal)",
            ));
        }
        for fd in 3..3 + opts.preserve_fds as i32 {
            // SAFETY: fcntl probe of a descriptor number.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                return Err(msg(format!("--preserve-fds: fd {fd} is not open")));
            }
        }

        // The namespaces of the running init, opened now (it could exit).
        let init = saved.pid;
        let mut joins: Vec<(NamespaceType, OwnedFd)> = Vec::new();
        let mut pid_ns = None;
        for ns in &linux.namespaces {
            let path = format!("/proc/{init}/ns/{}", ns.typ.proc_name());
            if namespaces::is_own(ns.typ, &path) {
                continue; // setns to one's own user namespace is even an error
            }
            let f = fs::File::open(&path).ctx(|| format!("open {path}"))?;
            if ns.typ == NamespaceType::Pid {
                pid_ns = Some(f);
            } else {
                joins.push((ns.typ, f.into()));
            }
        }
        joins.sort_by_key(|(t, _)| *t != NamespaceType::User);
        if !saved.init_alive() {
            return Err(Error::State {
                op: "exec in",
                id: id.into(),
                status: oci::Status::Stopped,
            });
        }

        // The terminal: the engine's console socket, or ours to relay.
        let (console_sock, relay) = match (p.terminal, &opts.console_socket) {
            (false, _) => (None, None),
            (true, _) if opts.console_fd.is_some() => {
                // SAFETY: the caller keeps this descriptor open during exec.
                let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(opts.console_fd.unwrap()) };
                let fd = fd
                    .try_clone_to_owned()
                    .ctx(|| "dup the console socket".into())?;
                (Some(fd), None)
            }
            (true, Some(path)) => (Some(console::connect(path)?), None),
            (true, None) => {
                let (ours, theirs) = console::relay_pair()?;
                (Some(theirs), Some(ours))
            }
        };

        let cg = saved.cgroup.as_ref().map(cgroups::Cgroup::from_saved);
        let mut v2_target = cg.as_ref().and_then(|c| c.v2_dir()).map(|d| d.path.clone());
        if let Some(sub) = &opts.cgroup {
            let base = v2_target
                .clone()
                .ok_or_else(|| msg("--cgroup needs cgroup v2"))?;
            cgroups::validate_path(sub)?;
            let dir = base.join(sub.trim_start_matches('/'));
            if !dir.is_dir() {
                return Err(msg(format!(
                    "--cgroup {sub}: {} does not exist",
                    dir.display()
                )));
            }
            v2_target = Some(dir);
        }
        let cg_fd = match &v2_target {
            Some(d) => Some(
                rustix::fs::open(
                    d,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .ctx(|| format!("open {}", d.display()))?,
            ),
            None => None,
        };
        let (chan, chan_child) = Channel::pair().ctx(|| "socketpair".into())?;
        // setns to a pid namespace needs CAP_SYS_ADMIN over the user namespace that owns
        // it. Root on the host has that and joins here, so the child is born in it; an
        // unprivileged runtime gets it only by joining the container's user namespace,
        // which it cannot leave again: its child joins both and forks the process that
        // runs in the container (the double fork of `create`, see namespaces.rs).
        let pid_ns_in_child = pid_ns.is_some()
            && crate::userns::unprivileged()
            && joins.iter().any(|(t, _)| *t == NamespaceType::User);
        let pid_ns = match pid_ns {
            Some(f) if !pid_ns_in_child => {
                namespaces::join_fd(NamespaceType::Pid, f.as_fd())?;
                None
            }
            other => other.map(OwnedFd::from),
        };
        let lock_fd = sd.lock_fd();
        let runtime_chan_fd = chan.as_fd().as_raw_fd();
        // The child moves itself into the v1 hierarchies (no RCU grace period to wait for,
        // see `cgroups::Cgroup::self_join`), unless the process that stays is its child.
        let self_join = match &cg {
            Some(cg) if !pid_ns_in_child => Some(cg.self_join()?),
            _ => None,
        };

        // SAFETY: single-threaded; the child ends in execve or _exit.
        let child = unsafe { sys::clone3(0, cg_fd.as_ref().map(|f| f.as_raw_fd())) }
            .ctx(|| "clone3 for exec".into())?;
        if child == 0 {
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                exec_child(
                    &spec,
                    p,
                    &caps,
                    filter.as_ref(),
                    &lsm,
                    joins,
                    pid_ns,
                    console_sock,
                    &chan_child,
                    opts,
                    [lock_fd, runtime_chan_fd],
                    self_join.as_ref(),
                )
            }));
            let text = match res {
                Ok(Ok(never)) => match never {},
                Ok(Err(e)) => e.to_string(),
                Err(_) => "exec: the runtime panicked in the new process".into(),
            };
            let _ = chan_child.send(&Msg::Error(text));
            sys::exit_now(127);
        }
        drop(chan_child);
        drop(console_sock);
        let mut child = child;
        if pid_ns_in_child {
            // The intermediate process names the real one, then exits: reap it.
            let adopted = chan.recv();
            // SAFETY: waitpid on our own child.
            unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
            match adopted {
                Ok(Some(Msg::Pid(p))) => child = p,
                Ok(Some(Msg::Error(e))) => return Err(Error::Msg(e)),
                other => return Err(msg(format!("exec: unexpected answer {other:?}"))),
            }
            chan.send(&Msg::Go(String::new()))
                .ctx(|| "exec: sync".into())?;
        }
        let child = child;
        // A stranded child must not outlive a failed exec.
        let fail = |e: Error| -> Error {
            // SAFETY: kill/waitpid on our own child.
            unsafe {
                libc::kill(child, libc::SIGKILL);
                libc::waitpid(child, std::ptr::null_mut(), 0);
            }
            e
        };
        if let (Some(cg), None) = (&cg, &self_join) {
            let procs_v2 = cg_fd.is_some();
            if let Err(e) = cg.add(child, procs_v2) {
                return Err(fail(e.into()));
            }
        }
        drop(self_join);
        match chan.recv() {
            Ok(Some(Msg::Ready)) => {}
            Ok(Some(Msg::Error(e))) => return Err(fail(Error::Msg(e))),
            Ok(other) => return Err(fail(msg(format!("exec: unexpected answer {other:?}")))),
            Err(e) => {
                return Err(fail(Error::Sys {
                    context: "exec: sync".into(),
                    source: e,
                }))
            }
        }
        let master = match &relay {
            Some(r) => console::recv_fd(r, false).ctx(|| "receive the pty".into())?,
            None => None,
        };
        // The pid file goes first: once released, the process runs, and a
        // process the engine does not know of must not exist (if we are
        // killed between the two, the child exits on EOF instead).
        if let Some(pf) = &opts.pid_file {
            if let Err(e) = crate::create::write_pid_file(pf, child) {
                let _ = fs::remove_file(crate::create::pid_file_tmp(pf));
                return Err(fail(e));
            }
        }
        let unrecord = || {
            if let Some(pf) = &opts.pid_file {
                let _ = fs::remove_file(pf);
            }
        };
        // The handoff.
        if let Err(e) = chan.send(&Msg::Go(String::new())) {
            unrecord();
            return Err(fail(Error::Sys {
                context: "exec: sync".into(),
                source: e,
            }));
        }
        // EOF: the process executed (close-on-exec); a message: it could not.
        let state = saved.oci_state(status);
        let answer = crate::launch::wait_for_exec(chan.as_fd(), child, |fd| {
            crate::launch::send_to_listener(&spec, fd, child, &state)
        })
        .map_err(|e| {
            unrecord();
            fail(e)
        })?;
        if !answer.is_empty() {
            unrecord();
            // SAFETY: reap our child.
            unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
            let text = String::from_utf8_lossy(&answer);
            return Err(Error::Msg(
                text.strip_prefix('E').unwrap_or(&text).to_string(),
            ));
        }
        drop(sd); // release the state lock: a long exec must not block delete
        Ok((child, master))
    }
}

#[allow(clippy::too_many_arguments)]
fn exec_child(
    spec: &Spec,
    p: &oci::Process,
    caps: &capabilities::Resolved,
    filter: Option<&seccomp::Filter>,
    lsm: &Lsm,
    joins: Vec<(NamespaceType, OwnedFd)>,
    pid_ns: Option<OwnedFd>,
    console_sock: Option<OwnedFd>,
    chan: &Channel,
    opts: &ExecOptions,
    inherited: [std::os::fd::RawFd; 2],
    self_join: Option<&cgroups::SelfJoin>,
) -> Result<std::convert::Infallible> {
    // SAFETY: closing our copies of the state lock (which would keep it
    // held) and of the runtime's end of the channel (which would hide the
    // runtime's death from us).
    unsafe {
        for fd in inherited {
            libc::close(fd);
        }
    }
    // Still outside the container, with the runtime's credentials: set our own
    // oom_score_adj before the next step makes our /proc files root's (which an
    // unprivileged runtime could then not write for us).
    if let Some(adj) = p.oom_score_adj {
        process::set_oom_score_adj(std::process::id() as i32, adj)?;
    }
    // Not dumpable while we are the runtime binary inside the container
    // (CVE-2019-5736): container processes cannot open our /proc/PID/exe.
    // SAFETY: plain prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    // Until the handoff we die with the runtime: a killed exec leaves no
    // half-made process in the container.
    sync::die_with_runtime(chan);
    if let Some(j) = self_join {
        j.join()?;
    }
    if let Some(fds) = opts.stdio {
        sys::dup_stdio(fds)?;
    }
    for (t, fd) in &joins {
        namespaces::join_fd(*t, fd.as_fd())?;
    }
    if joins.iter().any(|(t, _)| *t == NamespaceType::User) {
        // New credentials cleared the death signal.
        sync::die_with_runtime(chan);
    }
    drop(joins);
    if let Some(ns) = pid_ns {
        namespaces::join_fd(NamespaceType::Pid, ns.as_fd())?;
        drop(ns);
        // The pid namespace takes our next child: it runs in the container, as the
        // runtime's child (CLONE_PARENT) so that it can wait for it.
        // SAFETY: single-threaded; the intermediate process exits right away.
        let pid = unsafe { sys::clone3(libc::CLONE_PARENT as u64, None) }
            .ctx(|| "fork the process in the container's pid namespace".into())?;
        if pid != 0 {
            let _ = chan.send(&Msg::Pid(pid));
            sys::exit_now(0);
        }
        // A new process has no death signal; and our messages must not overtake
        // our parent's: wait until the runtime has adopted us.
        sync::die_with_runtime(chan);
        chan.wait_go()
            .ctx(|| "exec: wait for the runtime to adopt the process".into())?;
    }
    match console_sock {
        Some(sock) => {
            let (slave, _) = console::setup(sock, p.console_size)?;
            console::make_controlling(&slave)?;
        }
        None => {
            if opts.detach {
                let _ = rustix::process::setsid();
            }
        }
    }
    let linux = spec.linux();
    let (exec, chdir_done) = process::prepare(p, &linux, lsm, None, &[])?;
    process::inherit_fds(opts.preserve_fds)?;
    // The handoff: once the runtime has recorded us (pid file) it may go
    // (--detach); if it dies before its Go, we exit.
    sync::outlive_runtime();
    chan.send(&Msg::Ready).ctx(|| "exec: sync".into())?;
    // EOF instead of the runtime's Go: it died before recording us.
    if chan.wait_go().is_err() {
        sys::exit_now(127);
    }
    crate::launch::launch(crate::launch::Launch {
        process: p,
        caps,
        filter,
        runtime: chan.as_fd(),
        chdir_done,
        preserve_fds: opts.preserve_fds,
        start_hooks: None,
        exec: &exec,
    })
}
