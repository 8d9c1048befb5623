//! The runtime's side of `create`: validate everything, claim the ID, make
//! the cgroup, clone the init and answer its requests until it reports
//! "created". Any failure undoes all of it (see [`Guard`]).
//!
//! A runtime killed at any moment (an engine's timeout, the OOM killer)
//! runs no guard, so two more rules hold:
//! - everything is recorded before it is made: the state file (status
//!   `creating`) names the cgroup directories of every hierarchy and the pid
//!   file before they exist, and the init's pid as soon as it exists, so
//!   `delete` finds and removes all of it (see [`crate::state`]);
//! - the init dies with the runtime until the handoff
//!   ([`crate::sync::die_with_runtime`]): the runtime writes the final state
//!   and the pid file, then sends its last `Go`; the init stops tying its
//!   life to ours just before it reports "created", and exits if the channel
//!   closes before that `Go` arrives. Once `create` has returned, the
//!   container outlives the runtime, as it must.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use oci::Spec;
use rustix::fs::{Mode, OFlags};

use crate::capabilities;
use crate::console;
use crate::devices;
use crate::error::{msg, Context, Error, Result};
use crate::hooks;
use crate::init::{self, InitCtx};
use crate::lsm::Lsm;
use crate::namespaces;
use crate::process;
use crate::state::{proc_stat, rfc3339, Saved, StateDir};
use crate::sync::{Channel, Msg};
use crate::sys;

#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub bundle: PathBuf,
    /// Use this config instead of reading `<bundle>/config.json` (library
    /// callers such as `sandbox` build one in memory). `root.path` is still
    /// relative to `bundle`.
    pub spec: Option<Spec>,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    /// An already connected console socket (the caller keeps it open);
    /// used instead of `console_socket`.
    pub console_fd: Option<std::os::fd::RawFd>,
    pub no_pivot: bool,
    /// Pass fds 3..3+N to the container (runc's --preserve-fds).
    pub preserve_fds: u32,
    /// The container's stdin, stdout and stderr, when they are not the runtime's own
    /// (a library caller relaying the container's stdio itself, such as the VM agent).
    /// Descriptors above 2, kept open by the caller during create.
    pub stdio: Option<[std::os::fd::RawFd; 3]>,
    /// Make no cgroup: the container stays in the caller's, and the config may ask for no
    /// resources but device rules. For a caller that has no use for one (an unprivileged
    /// user's sandbox without limits, whose processes its pid namespace holds): finding
    /// the hierarchies and whether one is delegated costs a noticeable part of a start.
    pub no_cgroup: bool,
}

/// Undo a partial create that failed (returned an error): the process, the
/// cgroup, the pid file, the state directory. A create that is killed cannot
/// run this: for that case everything is recorded in the state directory
/// before it is made, and `delete` undoes it.
struct Guard {
    sd: Option<StateDir>,
    cgroup: Option<cgroups::Cgroup>,
    pids: Vec<i32>,
    pid_file: Option<PathBuf>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for &pid in &self.pids {
            // SAFETY: kill/waitpid on our own children.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        if let Some(cg) = &self.cgroup {
            let _ = cg.destroy();
        }
        if let Some(pf) = &self.pid_file {
            let _ = fs::remove_file(pid_file_tmp(pf));
            let _ = fs::remove_file(pf);
        }
        if let Some(sd) = self.sd.take() {
            let _ = sd.remove();
        }
    }
}

impl Guard {
    fn disarm(mut self) -> StateDir {
        self.pids.clear();
        self.cgroup = None;
        self.pid_file = None;
        self.sd.take().expect("state dir")
    }
}

/// Once the create-phase hooks have started, a failed create also runs the
/// poststop hooks (runtime.md: a failing prestart, createRuntime or
/// createContainer hook stops the container and the lifecycle continues with
/// its destruction, then poststop, as runc does). Declared before the
/// [`Guard`], it runs after the Guard has undone the create.
struct PoststopOnFailure<'a> {
    hooks: Option<&'a oci::Hooks>,
    /// The state the hooks get; `None` until armed, and again on success.
    state: Option<String>,
}

impl Drop for PoststopOnFailure<'_> {
    fn drop(&mut self) {
        if let (Some(h), Some(state)) = (self.hooks, &self.state) {
            if let Err(e) = hooks::run("poststop", &h.poststop, state) {
                tracing::warn!("{e}");
            }
        }
    }
}

/// Everything checked and derived from the config before any system change.
struct Prepared {
    spec: Spec,
    bundle: PathBuf,
    rootfs: PathBuf,
    plan: namespaces::Plan,
    caps: capabilities::Resolved,
    filter: Option<seccomp::Filter>,
    lsm: Lsm,
    /// `spec.mounts[i].options`, parsed once here for the init to use.
    mount_opts: Vec<crate::mounts::Options>,
}

/// `notify_dir`: the state directory's sd_notify directory, when the engine
/// passed NOTIFY_SOCKET (the config then gets a mount and a variable for it).
fn prepare(opts: &CreateOptions, notify_dir: Option<&Path>) -> Result<Prepared> {
    let bundle =
        fs::canonicalize(&opts.bundle).ctx(|| format!("bundle {}", opts.bundle.display()))?;
    let mut spec = match &opts.spec {
        Some(s) => s.clone(),
        None => Spec::load(&bundle)?,
    };
    if let Some(dir) = notify_dir {
        crate::notify::add_to_spec(&mut spec, dir);
    }
    oci::validate(&spec)?;
    let linux = spec.linux();
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
    let plan = namespaces::plan(&linux);
    if !plan.new_mount && !plan.join_mount {
        return Err(msg(
            "linux.namespaces: a mount namespace is required (the root filesystem is set up in it)",
        ));
    }
    namespaces::check_paths(&linux)?;
    if let Some(h) = &spec.hooks {
        hooks::check_exist(h)?;
    }
    if let Some(res) = &linux.resources {
        // Values wrong on any host are refused before a cgroup exists.
        cgroups::validate::resources(res)?;
    }
    let p = spec.process.as_ref().expect("validated");
    let lsm = Lsm::host();
    lsm.check(p)?;
    process::check_rlimits(&p.rlimits)?;
    crate::userns::check_groups(&linux, &p.user)?;
    if let Some(adj) = p.oom_score_adj {
        process::check_oom_score_adj(adj)?;
    }
    if let Some(mp) = &linux.memory_policy {
        process::mempolicy_args(mp)?;
    }
    let mount_opts = spec
        .mounts
        .iter()
        .map(|m| {
            crate::mounts::parse(&m.options)
                .map_err(|e| msg(format!("mounts ({}): {e}", m.destination)))
        })
        .collect::<Result<Vec<_>>>()?;
    let (caps, skipped) = capabilities::resolve(p.capabilities.as_ref());
    if !skipped.is_empty() {
        tracing::warn!("ignoring capabilities: {}", skipped.join(", "));
    }
    let filter = linux.seccomp.as_ref().map(seccomp::compile).transpose()?;
    if let Some(f) = &filter {
        if !f.skipped_names().is_empty() {
            tracing::debug!(
                "seccomp: syscalls unknown to this kernel skipped: {}",
                f.skipped_names().join(", ")
            );
        }
        // The init hands the notify fd to the runtime with sendmsg (and
        // reports errors with write): deferring those to the agent would deadlock.
        if let Some(n) = f
            .notified_names()
            .iter()
            .find(|n| *n == "sendmsg" || *n == "write")
        {
            return Err(msg(format!(
                "linux.seccomp: SCMP_ACT_NOTIFY on {n:?} is not supported (the runtime needs it to hand the notify fd to the listener)"
            )));
        }
    }
    Ok(Prepared {
        spec,
        bundle,
        rootfs,
        plan,
        caps,
        filter,
        lsm,
        mount_opts,
    })
}

/// The result of a successful create.
pub struct Created {
    pub pid: i32,
}

fn listen_fds() -> u32 {
    let Some(n) = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    else {
        return 0;
    };
    match std::env::var("LISTEN_PID")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        Some(pid) if pid != std::process::id() => 0,
        _ => n,
    }
}

pub fn create(root: &Path, id: &str, opts: &CreateOptions) -> Result<Created> {
    oci::validate_id(id)?;
    // sd_notify (podman --sdnotify=container): the container gets a socket
    // directory of ours at /run/notify; `start` relays READY=1 to the engine.
    let notify = std::env::var("NOTIFY_SOCKET")
        .ok()
        .filter(|s| !s.is_empty());
    let notify_dir = notify
        .as_ref()
        .map(|_| root.join(id).join(crate::notify::DIR));
    let prep = prepare(opts, notify_dir.as_deref())?;
    if crate::exe::needs_sealed_copy(&prep.spec) && !crate::exe::is_sealed_copy() {
        let e = crate::exe::reexec_sealed();
        return Err(e).ctx(|| "re-execute from a sealed copy of the runtime (CVE-2019-5736 protection for a container with CAP_SYS_PTRACE)".into());
    }
    let spec = &prep.spec;
    let linux = spec.linux();
    let p = spec.process.as_ref().expect("validated");

    // Connections made before clone: a bad path fails before anything exists.
    let console = match (p.terminal, &opts.console_socket) {
        (true, _) if opts.console_fd.is_some() => {
            // SAFETY: the caller keeps this descriptor open during create.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(opts.console_fd.unwrap()) };
            Some(
                fd.try_clone_to_owned()
                    .ctx(|| "dup the console socket".into())?,
            )
        }
        (true, Some(path)) => Some(console::connect(path)?),
        (true, None) => {
            return Err(msg(
                "process.terminal is true: --console-socket is required",
            ));
        }
        (false, _) => None,
    };
    // The listener gets the notify fd at `start` (see launch.rs); a bad path fails now.
    if let Some(path) = linux
        .seccomp
        .as_ref()
        .and_then(|s| s.listener_path.as_deref())
    {
        if prep.filter.as_ref().is_some_and(|f| f.uses_notify()) {
            seccomp::check_listener_path(Path::new(path))?;
        }
    }
    let listen = listen_fds();
    let preserve = opts.preserve_fds + listen;
    for fd in 3..3 + preserve as i32 {
        // SAFETY: fcntl probe of a descriptor number.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(msg(format!(
                "--preserve-fds/LISTEN_FDS: fd {fd} is not open"
            )));
        }
    }
    let mut extra_env = Vec::new();
    if listen > 0 {
        extra_env.push(format!("LISTEN_FDS={listen}"));
        extra_env.push("LISTEN_PID=1".to_string());
    }

    let mut poststop = PoststopOnFailure {
        hooks: spec.hooks.as_ref(),
        state: None,
    };
    let sd = StateDir::create(root, id)?;
    let mut guard = Guard {
        sd: Some(sd),
        cgroup: None,
        pids: Vec::new(),
        pid_file: None,
    };
    let unprivileged = crate::userns::unprivileged();
    let mut cg = if opts.no_cgroup {
        let res = linux.resources.clone().unwrap_or_default();
        let limits = oci::Resources {
            devices: Vec::new(),
            ..res
        };
        if limits != oci::Resources::default() {
            return Err(msg(
                "linux.resources: the container is made without a cgroup, so it can have no resource limits",
            ));
        }
        cgroups::Cgroup::none()
    } else {
        let hier = cgroups::Hierarchies::detect()?;
        let mut cg = cgroups::Cgroup::resolve(&hier, linux.cgroups_path.as_deref(), id)?;
        if unprivileged {
            // Rootless: only the hierarchies delegated to us; the container stays in our
            // own cgroup in the others (a resource needing one of them fails in `apply`).
            cg.leave_out_unwritable(&hier)?;
        }
        cg
    };
    cg.plan_create();
    // The record of everything this create is about to make, written before
    // any of it exists: a create killed at any later point leaves a
    // container that `list` shows and `delete` removes completely. (State
    // lives on tmpfs: no fsync; a host crash takes it with the cgroups.)
    let mut saved = Saved {
        id: id.to_string(),
        status: oci::Status::Creating,
        pid: 0,
        pid_start: 0,
        bundle: prep.bundle.display().to_string(),
        rootfs: prep.rootfs.display().to_string(),
        created: rfc3339(SystemTime::now()),
        annotations: spec.annotations.clone(),
        cgroup: has_cgroup(&cg).then(|| cg.saved()),
        hooks: spec.hooks.clone(),
        private_pid_ns: linux.new_namespace(oci::NamespaceType::Pid),
        notify_socket: notify.clone(),
        pid_file: opts.pid_file.clone(),
        start_socket: true,
    };
    let sd = guard.sd.as_ref().expect("state dir");
    sd.save(&saved)?;
    if notify.is_some() {
        crate::notify::make_dir(sd)?;
    }
    cg.create_planned()?;
    guard.cgroup = Some(cg.clone());
    let mut res = linux.resources.clone().unwrap_or_default();
    res.devices = if unprivileged || opts.no_cgroup {
        // As runc: no device cgroup without privilege (v1's is not delegated, v2's needs
        // CAP_SYS_ADMIN for its BPF program). In a user namespace no device node can be
        // made; host nodes are bind-mounted and keep the host's permissions.
        Vec::new()
    } else {
        devices::cgroup_rules(&res.devices, &linux.devices)
    };
    cg.apply(&res)?;
    // cgroup v2: clone3 puts the child straight into its cgroup.
    let cg_fd: Option<OwnedFd> = match cg.v2_dir() {
        Some(d) => Some(
            rustix::fs::open(
                &d.path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ctx(|| format!("open {}", d.path.display()))?,
        ),
        None => None,
    };

    let listener = bind_start_socket(sd)?;
    let (chan, chan_child) = Channel::pair().ctx(|| "socketpair".into())?;
    if let Some(path) = &prep.plan.parent_pid_join {
        namespaces::join_pid_for_children(path)?;
    }
    // The init moves itself into the v1 hierarchies first thing (see
    // `cgroups::Cgroup::self_join`: no RCU grace period to wait for). Not when it changes
    // user namespace or is re-forked: there the runtime moves the final init, as before.
    let self_join = if !prep.plan.new_user && !prep.plan.double_fork {
        Some(cg.self_join()?)
    } else {
        None
    };
    let runtime_pid = std::process::id() as i32;
    let has_runtime_hooks = spec.hooks.as_ref().is_some_and(|h| {
        !h.prestart.is_empty() || !h.create_runtime.is_empty() || !h.create_container.is_empty()
    });
    let ctx = InitCtx {
        spec,
        bundle: &prep.bundle,
        rootfs: &prep.rootfs,
        plan: &prep.plan,
        cgroup: Some(&cg),
        self_join: self_join.as_ref(),
        mount_opts: &prep.mount_opts,
        caps: prep.caps,
        seccomp: prep.filter.as_ref(),
        lsm: &prep.lsm,
        no_pivot: opts.no_pivot,
        preserve_fds: preserve,
        stdio: opts.stdio,
        console,
        listener,
        chan: chan_child,
        extra_env,
        runtime_pid,
        has_runtime_hooks,
        lock_fd: sd.lock_fd(),
        runtime_chan_fd: chan.as_fd().as_raw_fd(),
    };

    // SAFETY: the runtime is single-threaded; the child runs init::run, which
    // ends in execve or _exit and never returns here.
    let child =
        unsafe { sys::clone3(prep.plan.clone_flags, cg_fd.as_ref().map(|f| f.as_raw_fd())) };
    let child = match child {
        Ok(0) => init::run(ctx),
        Ok(pid) => pid,
        Err(e) => {
            return Err(e).ctx(|| format!("clone3 with namespaces {:#x}", prep.plan.clone_flags))
        }
    };
    drop(ctx);
    guard.pids.push(child);
    let into_cgroup = cg_fd.is_some();
    // If we are killed before the handoff, the init dies with us, but not
    // necessarily before `delete` looks: it must find the init and wait for
    // it. Born in the container's v2 cgroup (CLONE_INTO_CGROUP), the init is
    // found there (`delete` cannot remove that directory before the init
    // has left it), and a write is saved on the fast path; on pure v1 it
    // starts outside every container cgroup, so its pid is recorded.
    let mut record_init = |pid: i32| -> Result<()> {
        if into_cgroup {
            return Ok(());
        }
        saved.pid = pid;
        saved.pid_start = proc_stat(pid).map_or(0, |(_, start)| start);
        sd.save(&saved)
    };
    record_init(child)?;

    let mut init_pid = child;
    // Otherwise the runtime joins the init to the cgroup as early as its pid is known,
    // while it builds its root filesystem: on cgroup v1 the first migration by pid waits
    // for an RCU grace period (~10 ms here), which then overlaps with the init's own work.
    // oom_score_adj is written by us, not the init: lowering it needs CAP_SYS_RESOURCE over
    // the host, which an init in a new user namespace lacks. With a new user namespace it
    // is written while the init is still dumpable (see init.rs): the /proc files of a
    // non-dumpable process belong to root, which an unprivileged runtime is not.
    let set_oom = |pid: i32| -> Result<()> {
        match p.oom_score_adj {
            Some(adj) => process::set_oom_score_adj(pid, adj),
            None => Ok(()),
        }
    };
    let join = |pid: i32| -> Result<()> {
        // With CLONE_INTO_CGROUP the first child already sits in v2; a
        // double-forked init inherited that placement from its parent.
        cg.add(pid, into_cgroup)?;
        Ok(())
    };
    let mut joined = false;
    if self_join.is_some() {
        // The init joins v1 itself; v2 it was born in.
        set_oom(child)?;
        joined = true;
    }
    loop {
        let m = chan.recv().ctx(|| "read from the container init".into())?;
        match m {
            Some(Msg::UsernsReady) => {
                namespaces::write_id_maps(child, &linux)?;
                if !prep.plan.double_fork && !joined {
                    set_oom(child)?;
                }
                chan.send(&Msg::Go(String::new())).ctx(|| "sync".into())?;
                if !prep.plan.double_fork && !joined {
                    join(child)?;
                    joined = true;
                }
            }
            Some(Msg::Pid(p)) => {
                // The intermediate process of a double fork exits now: reap it.
                // SAFETY: waitpid on our own child.
                unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
                guard.pids = vec![p];
                init_pid = p;
                record_init(p)?;
                if !joined {
                    join(p)?;
                    set_oom(p)?;
                    joined = true;
                }
                chan.send(&Msg::Go(String::new())).ctx(|| "sync".into())?;
            }
            Some(Msg::Ready) => {
                if !joined {
                    join(init_pid)?;
                    set_oom(init_pid)?;
                    joined = true;
                }
                chan.send(&Msg::Go(String::new())).ctx(|| "sync".into())?;
            }
            Some(Msg::TimeOffsets) => {
                namespaces::write_time_offsets(&init_pid.to_string(), &linux)?;
                chan.send(&Msg::Go(String::new())).ctx(|| "sync".into())?;
            }
            Some(Msg::Hooks) => {
                let state = oci::State {
                    oci_version: oci::OCI_VERSION.into(),
                    id: id.into(),
                    status: oci::Status::Creating,
                    pid: Some(init_pid),
                    bundle: prep.bundle.display().to_string(),
                    annotations: spec.annotations.clone(),
                };
                let json = serde_json::to_string(&state).expect("state serialises");
                let stopped = oci::State {
                    status: oci::Status::Stopped,
                    pid: None,
                    ..state
                };
                poststop.state = Some(serde_json::to_string(&stopped).expect("state serialises"));
                if let Some(h) = &spec.hooks {
                    hooks::run("prestart", &h.prestart, &json)?;
                    hooks::run("createRuntime", &h.create_runtime, &json)?;
                }
                chan.send(&Msg::Go(json)).ctx(|| "sync".into())?;
            }
            Some(Msg::Created) => break,
            Some(Msg::Error(e)) => return Err(Error::Msg(e)),
            Some(Msg::Go(_)) => return Err(msg("unexpected message from the container init")),
            None => {
                let mut status = 0;
                // SAFETY: waitpid on our own child.
                unsafe { libc::waitpid(init_pid, &mut status, libc::WNOHANG) };
                return Err(msg(format!(
                    "the container init exited during setup (wait status {status:#x})"
                )));
            }
        }
    }

    let (_, pid_start) =
        proc_stat(init_pid).ok_or_else(|| msg("the container init exited right after setup"))?;
    saved.status = oci::Status::Created;
    saved.pid = init_pid;
    saved.pid_start = pid_start;
    // The directories actually made (one may have appeared meanwhile).
    saved.cgroup = has_cgroup(&cg).then(|| cg.saved());
    crate::exec::save_config(sd, spec)?;
    sd.save(&saved)?;
    if let Some(pf) = &opts.pid_file {
        guard.pid_file = Some(pf.clone());
        write_pid_file(pf, init_pid)?;
    }
    // The handoff: the init outlives us from here on (until this message,
    // our death makes it exit).
    chan.send(&Msg::Go(String::new()))
        .ctx(|| "hand the container over to its init".into())?;
    guard.disarm();
    poststop.state = None;
    Ok(Created { pid: init_pid })
}

/// Does the container have a cgroup of its own? Not when an unprivileged runtime could
/// write none of the hierarchies: it then runs in the runtime's cgroup, and `pause`,
/// `update`, `events` and `ps` have nothing to act on.
fn has_cgroup(cg: &cgroups::Cgroup) -> bool {
    !cg.dirs.is_empty()
}

fn bind_start_socket(sd: &StateDir) -> Result<OwnedFd> {
    // The start socket lives in the state directory.
    let l = UnixListener::bind(sd.fd_path(crate::state::START_SOCKET))
        .ctx(|| format!("bind {}", sd.start_socket().display()))?;
    Ok(l.into())
}

/// The temporary file a pid file is written to before it is renamed into
/// place (recorded in the state through the pid file's path, so `delete`
/// removes it if a create is killed between the write and the rename).
pub fn pid_file_tmp(path: &Path) -> PathBuf {
    path.with_extension("bulkhead-tmp")
}

/// Write `pid` to the pid file `path` as engines expect it: whole or not at all (a temporary
/// file, [`pid_file_tmp`], renamed into place).
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let tmp = pid_file_tmp(path);
    fs::write(&tmp, pid.to_string())
        .and_then(|_| fs::rename(&tmp, path))
        .ctx(|| format!("write pid file {}", path.display()))
}
