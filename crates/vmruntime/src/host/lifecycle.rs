//! The OCI operations on VM-backed containers, with the container library's semantics:
//! `create` leaves a created container (in the guest, its init waits before `execve`)
//! and a monitor process whose pid `state` reports; `start` runs the program; `kill`
//! signals the monitor, which passes the signal on; any failure undoes everything.

use std::fs;
use std::io::BufRead;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::SystemTime;

use container::exec::ExecOptions;
use container::state::{proc_stat, rfc3339, Saved, StateDir};
use container::CreateOptions;
use serde::{Deserialize, Serialize};

use crate::error::{msg, Context, Error, Result};
use crate::host::control::Control;
use crate::host::files;
use crate::host::monitor::{self, MonitorArgs, Report};
use crate::host::plan::{self, Overrides};
use crate::host::relay::{host_pty, Relay};
use crate::protocol::{GuestProcess, ToAgent, ToHost};

/// What `vm.json` records about a container's VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmInfo {
    pub backend: String,
    pub image: PathBuf,
    /// None: the root is the host's, over 9p.
    pub disk: Option<PathBuf>,
    pub memory_mib: u64,
    pub cpus: u8,
}

/// VM-backed containers under a state root, with images and disks under `cache`.
#[derive(Debug, Clone)]
pub struct VmRuntime {
    pub root: PathBuf,
    pub cache: PathBuf,
}

/// Undo a partial create: the monitor (and with it the VM), the cgroup, the state directory.
struct Guard {
    sd: Option<StateDir>,
    cgroup: Option<cgroups::Cgroup>,
    pid: Option<i32>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            // SAFETY: kill/waitpid on our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        if let Some(cg) = &self.cgroup {
            let _ = cg.kill_all(libc::SIGKILL);
            let _ = cg.destroy();
        }
        if let Some(sd) = self.sd.take() {
            let _ = sd.remove();
        }
    }
}

/// The host cgroup's limits: the CPU ones bound the VM's host threads as they would bound
/// the container; memory, pids and devices apply inside the guest (the guest's RAM is
/// sized to the memory limit), where the container's own cgroup enforces them.
fn host_resources(spec: &oci::Spec) -> oci::Resources {
    oci::Resources {
        cpu: spec
            .linux
            .as_ref()
            .and_then(|l| l.resources.as_ref())
            .and_then(|r| r.cpu.clone()),
        ..Default::default()
    }
}

impl VmRuntime {
    pub fn new(root: impl Into<PathBuf>, cache: impl Into<PathBuf>) -> VmRuntime {
        VmRuntime {
            root: root.into(),
            cache: cache.into(),
        }
    }

    /// True when container `id` exists and is VM-backed.
    pub fn is_vm(&self, id: &str) -> bool {
        oci::validate_id(id).is_ok() && self.root.join(id).join(files::INFO).is_file()
    }

    /// True when `create` should make a VM for this bundle: `force` (the `--vm` flag) or
    /// the config's `run.bulkhead.vm=true` annotation.
    pub fn wants_vm(opts: &CreateOptions, force: bool) -> Result<bool> {
        if force {
            return Ok(true);
        }
        let ann = match &opts.spec {
            Some(s) => s.annotations.clone(),
            None => {
                // Every plain container's create comes through here: a config without our
                // annotation's name is not parsed twice.
                let path = opts.bundle.join("config.json");
                let Ok(text) = fs::read(&path) else {
                    return Ok(false); // create reports the missing config
                };
                let key = crate::protocol::annotations::VM.as_bytes();
                if !text.windows(key.len()).any(|w| w == key) {
                    return Ok(false);
                }
                let spec: oci::Spec = oci::from_json(&text, &path.display().to_string())?;
                spec.annotations
            }
        };
        Ok(crate::protocol::wants_vm(&ann))
    }

    /// `create`: returns the monitor's pid.
    pub fn create(&self, id: &str, opts: &CreateOptions, over: &Overrides) -> Result<i32> {
        oci::validate_id(id)?;
        let bundle =
            fs::canonicalize(&opts.bundle).ctx(|| format!("bundle {}", opts.bundle.display()))?;
        let spec = match &opts.spec {
            Some(s) => s.clone(),
            None => oci::Spec::load(&bundle)?,
        };
        oci::validate(&spec)?;
        if opts.preserve_fds > 0 {
            return Err(msg(
                "--preserve-fds: descriptors cannot be passed into a VM-backed container",
            ));
        }
        let root = spec.root.as_ref().expect("validated");
        let rootfs = bundle.join(&root.path);
        let rootfs = fs::canonicalize(&rootfs)
            .map_err(|e| msg(format!("root.path {}: {e}", rootfs.display())))?;
        if !rootfs.is_dir() {
            return Err(msg(format!(
                "root.path {}: not a directory",
                rootfs.display()
            )));
        }
        let plan = plan::plan(&spec, &rootfs, over, &self.cache)?;
        let terminal = spec.process.as_ref().is_some_and(|p| p.terminal);
        let console = match (terminal, opts.console_fd, &opts.console_socket) {
            (false, _, _) => None,
            (true, Some(fd), _) => {
                // SAFETY: the caller keeps this descriptor open during create.
                let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                Some(
                    fd.try_clone_to_owned()
                        .ctx(|| "dup the console socket".into())?,
                )
            }
            (true, None, Some(path)) => Some(container::console::connect(path)?),
            (true, None, None) => {
                return Err(msg(
                    "process.terminal is true: --console-socket is required",
                ))
            }
        };
        let t = std::time::Instant::now();
        let disk = match plan.host_root {
            true => None,
            false => Some(crate::disk::rootfs_disk(
                &rootfs,
                &self.cache,
                plan.disk_max,
            )?),
        };
        tracing::debug!(
            "vm {id}: disk ready in {} ms: {disk:?}",
            t.elapsed().as_millis()
        );

        let sd = StateDir::create(&self.root, id)?;
        let mut guard = Guard {
            sd: Some(sd),
            cgroup: None,
            pid: None,
        };
        let sd = guard.sd.as_ref().expect("state dir");
        // sun_path holds 108 bytes; the builtin VMM's listener adds "_1024".
        let longest = sd.dir.join(files::AGENT).as_os_str().len() + 5;
        if longest >= 108 {
            return Err(msg(format!(
                "state directory {} is too long for the VM's sockets (a Unix socket path holds 107 bytes): use a shorter --root",
                sd.dir.display()
            )));
        }
        let info = VmInfo {
            backend: plan.backend.name().into(),
            image: plan.image.dir.clone(),
            disk: disk.clone(),
            memory_mib: plan.memory_mib,
            cpus: plan.cpus,
        };
        let info_path = sd.dir.join(files::INFO);
        fs::write(
            &info_path,
            serde_json::to_vec_pretty(&info).expect("serialises"),
        )
        .ctx(|| format!("write {}", info_path.display()))?;
        let linux = spec.linux();
        let hier = cgroups::Hierarchies::detect()?;
        let mut cg = cgroups::Cgroup::resolve(&hier, linux.cgroups_path.as_deref(), id)?;
        cg.plan_create();
        // The record of what this create makes, before any of it exists: a create killed
        // at any later point leaves a container `delete` removes completely (the monitor
        // joins the cgroup first thing, and dies with this process until it is created).
        let mut saved = Saved {
            id: id.to_string(),
            status: oci::Status::Creating,
            pid: 0,
            pid_start: 0,
            bundle: bundle.display().to_string(),
            rootfs: rootfs.display().to_string(),
            created: rfc3339(SystemTime::now()),
            annotations: spec.annotations.clone(),
            cgroup: Some(cg.saved()),
            hooks: None,
            private_pid_ns: true,
            notify_socket: None,
            pid_file: opts.pid_file.clone(),
            // `start` goes to the agent through the monitor, and saves `running` itself.
            start_socket: false,
        };
        sd.save(&saved)?;
        cg.create_planned()?;
        guard.cgroup = Some(cg.clone());
        cg.apply(&host_resources(&spec))?;

        let (report_r, report_w) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).ctx(|| "pipe".into())?;
        let lock_fd = sd.lock_fd();
        let args = MonitorArgs {
            id: id.to_string(),
            dir: sd.dir.clone(),
            plan,
            disk,
            console,
            report: report_w,
        };
        let parent = std::process::id() as i32;
        // SAFETY: bulkhead is single-threaded here; the child runs the monitor to its end
        // (process exit) and never returns into this function.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error()).ctx(|| "fork the VM monitor".into());
        }
        if pid == 0 {
            // SAFETY: our copy of the state lock must not keep it held; until the container
            // exists the monitor dies with this create (the monitor clears it then).
            unsafe {
                libc::close(lock_fd);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                // (Dead before the prctl: no signal will come.)
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
            }
            drop(report_r);
            if let Err(e) = cg.add(std::process::id() as i32, false) {
                let mut f = fs::File::from(args.report.try_clone().expect("dup"));
                let _ = std::io::Write::write_all(
                    &mut f,
                    format!(
                        "{}\n",
                        serde_json::to_string(&Report::Failed {
                            message: e.to_string()
                        })
                        .expect("serialises")
                    )
                    .as_bytes(),
                );
                std::process::exit(1);
            }
            monitor::run(args);
        }
        guard.pid = Some(pid);
        drop(args);
        let mut line = String::new();
        let _ = std::io::BufReader::new(fs::File::from(report_r)).read_line(&mut line);
        match serde_json::from_str::<Report>(line.trim()) {
            Ok(Report::Created { .. }) => {}
            Ok(Report::Failed { message }) => return Err(Error::Msg(message)),
            Err(_) => {
                let mut st = 0;
                // SAFETY: waitpid on our own child.
                unsafe { libc::waitpid(pid, &mut st, 0) };
                guard.pid = None;
                return Err(msg(format!(
                    "the VM monitor exited during create (wait status {st:#x})"
                )));
            }
        }
        let (_, pid_start) =
            proc_stat(pid).ok_or_else(|| msg("the VM monitor exited right after create"))?;
        saved.status = oci::Status::Created;
        saved.pid = pid;
        saved.pid_start = pid_start;
        sd.save(&saved)?;
        container::exec::save_config(sd, &spec)?;
        if let Some(pf) = &opts.pid_file {
            container::create::write_pid_file(pf, pid)?;
        }
        guard.pid = None;
        guard.cgroup = None;
        guard.sd = None;
        Ok(pid)
    }

    /// `start`: run the program of a created container.
    pub fn start(&self, id: &str) -> Result<()> {
        let sd = StateDir::open(&self.root, id, true)?;
        let mut saved = sd.load()?;
        let status = saved.status();
        if status != oci::Status::Created {
            return Err(container::Error::State {
                op: "start",
                id: id.into(),
                status,
            }
            .into());
        }
        let mut c = Control::connect(&sd)?;
        c.request(|id| ToAgent::Start { id })?;
        saved.status = oci::Status::Running;
        sd.save(&saved)?;
        Ok(())
    }

    /// `kill`: the monitor passes a signal on to the init; `all` signals every process of
    /// the container in the guest. SIGKILL ends the monitor itself, and with it the VM.
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<()> {
        let rt = container::Runtime::new(&self.root);
        if !all {
            return Ok(rt.kill(id, signal, false)?);
        }
        let sd = StateDir::open(&self.root, id, false)?;
        let saved = sd.load()?;
        let status = saved.status();
        if status == oci::Status::Stopped {
            return Err(container::Error::State {
                op: "kill",
                id: id.into(),
                status,
            }
            .into());
        }
        if status == oci::Status::Paused {
            // A frozen monitor cannot pass anything on: signal it (SIGKILL ends the VM).
            return Ok(rt.kill(id, signal, false)?);
        }
        let mut c = Control::connect(&sd)?;
        c.request(|rid| ToAgent::Signal {
            id: rid,
            process: 0,
            signal,
            all: true,
        })?;
        Ok(())
    }

    /// `ps`: the container's processes in the guest.
    pub fn ps(&self, id: &str) -> Result<Vec<GuestProcess>> {
        let sd = StateDir::open(&self.root, id, false)?;
        let saved = sd.load()?;
        if saved.status() == oci::Status::Stopped {
            return Ok(Vec::new());
        }
        let mut c = Control::connect(&sd)?;
        match c.request(|id| ToAgent::Ps { id })? {
            ToHost::Ok { processes, .. } => Ok(processes.unwrap_or_default()),
            _ => Ok(Vec::new()),
        }
    }

    /// `exec`: run `opts.process` in the container; with `detach` a relay process (whose
    /// pid goes to the pid file, and which exits with the process's code) holds its
    /// stdio, otherwise this process does and returns the exit code.
    pub fn exec(&self, id: &str, opts: &ExecOptions) -> Result<i32> {
        let sd = StateDir::open(&self.root, id, false)?;
        let saved = sd.load()?;
        let status = saved.status();
        if !matches!(status, oci::Status::Created | oci::Status::Running) {
            return Err(container::Error::State {
                op: "exec in",
                id: id.into(),
                status,
            }
            .into());
        }
        let p = &opts.process;
        oci::validate_process(p, "process")?;
        if opts.preserve_fds > 0 {
            return Err(msg(
                "--preserve-fds: descriptors cannot be passed into a VM-backed container",
            ));
        }
        if opts.cgroup.is_some() {
            return Err(msg("--cgroup: not supported for a VM-backed container"));
        }
        let console =
            match (p.terminal, &opts.console_socket, opts.detach) {
                (true, Some(path), _) => Some(container::console::connect(path)?),
                (true, None, true) => return Err(msg(
                    "exec --tty --detach needs --console-socket (nothing would hold the terminal)",
                )),
                _ => None,
            };
        let mut c = Control::connect(&sd)?;
        drop(sd); // a long exec must not block delete
        let tty = match &console {
            Some(sock) => {
                let (master, slave) = host_pty(p.console_size)?;
                container::console::send_fd(sock, "bulkhead-vm", &master)
                    .ctx(|| "send the pty master to the console socket".into())?;
                Some(slave)
            }
            None => None,
        };
        let reply = c.request(|rid| ToAgent::Exec {
            id: rid,
            process: 1,
            spec: Box::new(p.clone()),
        })?;
        let guest_pid = match reply {
            ToHost::Ok { pid, .. } => pid.unwrap_or(0),
            _ => 0,
        };
        tracing::debug!("exec in VM container {id:?}: guest pid {guest_pid}");
        if !opts.detach {
            let _raw = (p.terminal && tty.is_none()).then(container::console::RawMode::stdin);
            let mut relay = match &tty {
                Some(t) => Relay::terminal(1, t)?,
                None => Relay::stdio(1, true)?,
            };
            if let Some(pf) = &opts.pid_file {
                container::create::write_pid_file(pf, std::process::id() as i32)?;
            }
            let size_of = match &tty {
                Some(t) => Some(t.as_fd()),
                None => p.terminal.then(rustix::stdio::stdin),
            };
            return c.relay(1, &mut relay, size_of);
        }
        // SAFETY: single-threaded; the child relays until the process exits, then exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error()).ctx(|| "fork the exec relay".into());
        }
        if pid == 0 {
            let _ = rustix::process::setsid();
            if let Some(t) = &tty {
                let _ = rustix::process::ioctl_tiocsctty(t);
            }
            let code = match &tty {
                Some(t) => Relay::terminal(1, t),
                None => Relay::stdio(1, true),
            }
            .and_then(|mut r| c.relay(1, &mut r, tty.as_ref().map(|t| t.as_fd())))
            .unwrap_or_else(|e| {
                eprintln!("bulkhead: exec: {e}");
                crate::host::monitor::VM_LOST_CODE
            });
            std::process::exit(code);
        }
        if let Some(pf) = &opts.pid_file {
            container::create::write_pid_file(pf, pid)?;
        }
        Ok(0)
    }

    /// `run`: create + start; in the foreground, forward signals, relay a terminal,
    /// wait, delete, and return the container's exit code.
    pub fn run(
        &self,
        id: &str,
        opts: &CreateOptions,
        over: &Overrides,
        detach: bool,
    ) -> Result<i32> {
        let old = (!detach).then(container::block_forwarded_signals);
        let res = self.run_inner(id, opts, over, detach);
        if let Some(m) = old {
            container::foreground::restore_signals(&m);
        }
        res
    }

    fn run_inner(
        &self,
        id: &str,
        opts: &CreateOptions,
        over: &Overrides,
        detach: bool,
    ) -> Result<i32> {
        // In the foreground without a console socket, this process holds the terminal.
        let mut opts = opts.clone();
        let relay = if !detach && opts.console_socket.is_none() && opts.console_fd.is_none() {
            let r = container::console::Receiver::new()?;
            opts.console_fd = Some(r.console_fd());
            Some(r)
        } else {
            None
        };
        let pid = self.create(id, &opts, over)?;
        let master = relay.and_then(container::console::Receiver::master);
        let rt = container::Runtime::new(&self.root);
        if let Err(e) = self.start(id) {
            let _ = rt.delete(id, true);
            // SAFETY: reap our child (the monitor).
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
            return Err(e);
        }
        if detach {
            return Ok(0);
        }
        let status = container::foreground::wait(pid, master);
        let del = rt.delete(id, true);
        let code = container::exit_code(status?);
        del?;
        Ok(code)
    }
}
