//! The container's init: the child cloned by `create`, which builds the
//! container around itself step by step and finally executes the user's program.
//!
//! It is not a re-exec of the runtime binary: it is the runtime process's own
//! clone, running on a copy of its memory, so the parsed config and every
//! resolved value are simply there. It talks to the runtime over one
//! SEQPACKET socket ([`crate::sync`]) and, once created, waits on the start
//! socket for `start`.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use oci::Spec;

use crate::capabilities;
use crate::console;
use crate::error::{msg, Context, Result};
use crate::lsm::Lsm;
use crate::namespaces::{self, Plan};
use crate::process;
use crate::rootfs::Rootfs;
use crate::sync::{self, Channel, Msg};
use crate::sys;

/// Everything the init needs, prepared by the runtime before clone.
pub struct InitCtx<'a> {
    pub spec: &'a Spec,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    pub plan: &'a Plan,
    pub cgroup: Option<&'a cgroups::Cgroup>,
    /// The v1 `tasks` files the init writes itself into, first thing; `None` when the
    /// runtime places it.
    pub self_join: Option<&'a cgroups::SelfJoin>,
    /// The parsed options of `spec.mounts`, in order.
    pub mount_opts: &'a [crate::mounts::Options],
    pub caps: capabilities::Resolved,
    pub seccomp: Option<&'a seccomp::Filter>,
    pub lsm: &'a Lsm,
    pub no_pivot: bool,
    pub preserve_fds: u32,
    /// Descriptors to make the init's stdin, stdout and stderr.
    pub stdio: Option<[std::os::fd::RawFd; 3]>,
    pub console: Option<OwnedFd>,
    pub listener: OwnedFd,
    pub chan: Channel,
    /// Variables the runtime adds (LISTEN_FDS, NOTIFY_SOCKET).
    pub extra_env: Vec<String>,
    pub runtime_pid: i32,
    pub has_runtime_hooks: bool,
    /// The state directory's lock, inherited through clone: closed at once.
    pub lock_fd: std::os::fd::RawFd,
    /// The runtime's end of `chan`, inherited through clone: closed at once,
    /// so that the runtime's death closes it and we see EOF.
    pub runtime_chan_fd: std::os::fd::RawFd,
}

/// Run the init; never returns. Errors go to the runtime over the channel.
pub fn run(ctx: InitCtx<'_>) -> ! {
    let chan_fd = ctx.chan.as_fd().try_clone_to_owned().ok();
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| setup_and_exec(ctx)));
    let text = match res {
        Ok(Ok(never)) => match never {},
        Ok(Err(e)) => e.to_string(),
        Err(p) => format!(
            "container init panicked: {}",
            p.downcast_ref::<&str>()
                .copied()
                .or(p.downcast_ref::<String>().map(|s| s.as_str()))
                .unwrap_or("?")
        ),
    };
    if let Some(fd) = chan_fd {
        let _ = Channel::from_fd(fd).send(&Msg::Error(text));
    }
    sys::exit_now(1)
}

fn setup_and_exec(mut ctx: InitCtx<'_>) -> Result<std::convert::Infallible> {
    // SAFETY: closing our copies of the lock and of the runtime's end of the
    // channel; nothing else in this process uses them (the objects owning
    // them live in the parent's half). A copy would keep the lock held, and
    // the channel open after the runtime's death.
    unsafe {
        libc::close(ctx.lock_fd);
        libc::close(ctx.runtime_chan_fd);
    }
    // Until the handoff, the init dies with the runtime: nothing half-made
    // may outlive a killed `create`.
    sync::die_with_runtime(&ctx.chan);
    if let Some(j) = ctx.self_join {
        // Into the container's cgroup before anything is charged to the runtime's.
        j.join()?;
    }
    if let Some(fds) = ctx.stdio {
        sys::dup_stdio(fds)?;
    }
    let spec = ctx.spec;
    let linux = spec.linux();
    let plan = ctx.plan;
    // Not dumpable: other processes in the container cannot open our
    // /proc/PID/exe (the runtime binary) or ptrace us (CVE-2019-5736). With a
    // new user namespace, only once the runtime has written our /proc files
    // (id maps, oom_score_adj, time offsets): those of a non-dumpable process
    // belong to root, which an unprivileged runtime is not. Until then no
    // process of the container exists (ours is being made).
    if !plan.new_user {
        set_non_dumpable();
    }

    for (t, path) in &plan.joins {
        namespaces::join(*t, path)?;
    }
    if plan.unshare_flags & namespaces::clone_flag(oci::NamespaceType::User) != 0 {
        namespaces::unshare(namespaces::clone_flag(oci::NamespaceType::User))?;
    }
    if plan.new_user {
        ctx.chan
            .send(&Msg::UsernsReady)
            .ctx(|| "sync with the runtime".into())?;
        ctx.chan
            .wait_go()
            .ctx(|| "wait for the uid/gid maps".into())?;
        // Become root of the new namespace (if mapped) so created files and
        // later checks use the container's root.
        if namespaces::is_mapped(&linux.uid_mappings, 0)
            && namespaces::is_mapped(&linux.gid_mappings, 0)
        {
            let z = rustix::process::Gid::from_raw(0);
            set_res_ids(z)?;
        }
    }
    if !plan.joins.is_empty() || plan.new_user {
        // New credentials (setns into a user namespace, setresuid) cleared
        // the death signal.
        sync::die_with_runtime(&ctx.chan);
    }
    namespaces::unshare(plan.unshare_flags & !namespaces::clone_flag(oci::NamespaceType::User))?;
    if plan.double_fork {
        // The new pid namespace takes our next child as its pid 1. CLONE_PARENT
        // makes it the runtime's child, so `run` can wait for it.
        // SAFETY: single-threaded; the intermediate process exits right away.
        let pid = unsafe { sys::clone3(libc::CLONE_PARENT as u64, None) }
            .ctx(|| "fork the container init".into())?;
        if pid != 0 {
            let _ = ctx.chan.send(&Msg::Pid(pid));
            sys::exit_now(0);
        }
        // A new child has no death signal: set it again (our parent is the
        // runtime, through CLONE_PARENT).
        sync::die_with_runtime(&ctx.chan);
        // Wait until the runtime knows our pid (and has put us in our
        // cgroup): our messages must not overtake our parent's Pid message.
        ctx.chan
            .wait_go()
            .ctx(|| "wait for the runtime to adopt the init".into())?;
    }

    // We moved ourselves into the v1 hierarchies above, or the runtime moves us while we
    // build the container (on cgroup v1 its first migration waits for an RCU grace period,
    // which our own work then hides); we only need to be in the cgroup to unshare the
    // cgroup namespace, last. (The runtime's hooks run after the move.) On
    // pure v2 we were born in the cgroup (CLONE_INTO_CGROUP) and the cgroup2
    // mount needs the cgroup namespace first, so there we wait at once.
    let wait_early = ctx.cgroup.is_some_and(|c| c.layout == cgroups::Layout::V2);
    let in_cgroup = |chan: &Channel| -> Result<()> {
        chan.send(&Msg::Ready)
            .ctx(|| "sync with the runtime".into())?;
        chan.wait_go().ctx(|| "wait for the cgroup".into())?;
        // Now inside our cgroup: a new cgroup namespace is rooted there.
        if plan.new_cgroup {
            namespaces::unshare(namespaces::clone_flag(oci::NamespaceType::Cgroup))?;
        }
        Ok(())
    };
    if wait_early {
        in_cgroup(&ctx.chan)?;
    }
    if plan.new_time {
        namespaces::unshare(namespaces::clone_flag(oci::NamespaceType::Time))?;
        if plan.new_user && !linux.time_offsets.is_empty() {
            // The new time namespace belongs to our new user namespace, but
            // /proc/self/timens_offsets of a non-dumpable process belongs to
            // the host's root: the runtime writes the offsets for us.
            ctx.chan
                .send(&Msg::TimeOffsets)
                .ctx(|| "sync with the runtime".into())?;
            ctx.chan
                .wait_go()
                .ctx(|| "wait for the time offsets".into())?;
        } else {
            namespaces::write_time_offsets("self", &linux)?;
        }
    }
    if plan.new_user {
        set_non_dumpable();
    }
    if let Some(cpus) = spec
        .process
        .as_ref()
        .and_then(|p| p.exec_cpu_affinity.as_ref())
        .and_then(|a| a.initial.as_deref())
    {
        process::set_cpu_affinity(cpus, "process.execCPUAffinity.initial")?;
    }
    if linux.new_namespace(oci::NamespaceType::Network) {
        namespaces::loopback_up()?;
    }
    // Namespaced sysctls: /proc/sys resolves per the writer's namespaces.
    for (k, v) in &linux.sysctl {
        let path = format!("/proc/sys/{}", k.replace('.', "/"));
        std::fs::write(&path, v).ctx(|| format!("linux.sysctl {k}={v}"))?;
    }

    let rootfs = Rootfs {
        spec,
        rootfs: ctx.rootfs,
        bundle: ctx.bundle,
        cgroup: ctx.cgroup,
        mount_opts: ctx.mount_opts,
        // Also when the runtime itself runs in a user namespace (rootless podman, an
        // unprivileged sandbox): no device node can be made there either.
        in_userns: plan.new_user
            || plan
                .joins
                .iter()
                .any(|(t, _)| *t == oci::NamespaceType::User)
            || !crate::userns::in_initial(),
        new_cgroupns: plan.new_cgroup,
    };
    let setup_root = !plan.join_mount;
    if setup_root {
        rootfs.prepare()?;
    }

    if ctx.has_runtime_hooks {
        ctx.chan
            .send(&Msg::Hooks)
            .ctx(|| "sync with the runtime".into())?;
        let state = ctx
            .chan
            .wait_go()
            .ctx(|| "wait for the runtime hooks".into())?;
        if let Some(h) = &spec.hooks {
            crate::hooks::run("createContainer", &h.create_container, &state)?;
        }
    }

    if setup_root {
        rootfs.switch_root(ctx.no_pivot)?;
    }
    let p = spec
        .process
        .as_ref()
        .ok_or_else(|| msg("process is required"))?;
    match ctx.console.take() {
        Some(sock) => {
            let (slave, name) = console::setup(sock, p.console_size)?;
            console::attach(&slave, &name)?;
        }
        None => {
            // Our own session: the engine's terminal signals must not reach us.
            let _ = rustix::process::setsid();
        }
    }
    if setup_root {
        rootfs.protect_paths()?;
        rootfs.make_root_readonly()?;
        rootfs.finish()?;
    }
    if let Some(h) = spec.hostname.as_deref().filter(|h| !h.is_empty()) {
        rustix::system::sethostname(h.as_bytes()).ctx(|| format!("sethostname {h:?}"))?;
    }
    if let Some(d) = spec.domainname.as_deref().filter(|d| !d.is_empty()) {
        rustix::system::setdomainname(d.as_bytes()).ctx(|| format!("setdomainname {d:?}"))?;
    }
    // Resolves the program now, so a missing binary fails `create`, not `start`.
    let (exec, chdir_done) = process::prepare(
        p,
        &linux,
        ctx.lsm,
        linux.memory_policy.as_ref(),
        &ctx.extra_env,
    )?;
    if plan.new_user && !namespaces::is_mapped(&linux.uid_mappings, p.user.uid) {
        return Err(msg(format!(
            "process.user.uid {} has no mapping in linux.uidMappings",
            p.user.uid
        )));
    }
    process::inherit_fds(ctx.preserve_fds)?;

    if !wait_early {
        in_cgroup(&ctx.chan)?;
    }

    // Created. The handoff: once the runtime has recorded us it may exit,
    // and we must outlive it; if it dies before (EOF), we exit instead.
    sync::outlive_runtime();
    ctx.chan
        .send(&Msg::Created)
        .ctx(|| "sync with the runtime".into())?;
    if ctx.chan.wait_go().is_err() {
        sys::exit_now(1);
    }
    // A created container may wait for `start` for a long time (engines create pods
    // ahead): give back the heap pages the runtime's work left free (the parsed command
    // line, the config's text, ...), which this copy of its memory would otherwise keep.
    // (Only glibc has malloc_trim. The static release build's allocator, dlmalloc on musl,
    // keeps free memory below 2 MiB: the init holds ~25 KiB more heap while it waits.)
    // SAFETY: malloc_trim only releases free heap memory; nothing in use moves.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0)
    };

    // Wait for `start`: it connects and sends the state for startContainer hooks.
    let conn = loop {
        match rustix::net::accept_with(&ctx.listener, rustix::net::SocketFlags::CLOEXEC) {
            Ok(c) => break c,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e).ctx(|| "wait for start".into()),
        }
    };
    drop(ctx.listener);
    let mut conn = UnixStream::from(conn);
    let mut state = String::new();
    conn.read_to_string(&mut state)
        .ctx(|| "read the start request".into())?;
    // From here errors go to `start` over this connection.
    let res = crate::launch::launch(crate::launch::Launch {
        process: p,
        caps: &ctx.caps,
        filter: ctx.seccomp,
        runtime: conn.as_fd(),
        chdir_done,
        preserve_fds: ctx.preserve_fds,
        exec: &exec,
        start_hooks: spec
            .hooks
            .as_ref()
            .filter(|h| !h.start_container.is_empty())
            .map(|h| (h.start_container.as_slice(), state.as_str())),
    });
    let text = match res {
        Ok(never) => match never {},
        Err(e) => e.to_string(),
    };
    let _ = conn.write_all(text.as_bytes());
    sys::exit_now(127)
}

fn set_non_dumpable() {
    // SAFETY: plain prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}

fn set_res_ids(z: rustix::process::Gid) -> Result<()> {
    rustix::thread::set_thread_res_gid(z, z, z)
        .ctx(|| "setresgid(0) in the user namespace".into())?;
    let u = rustix::process::Uid::from_raw(0);
    rustix::thread::set_thread_res_uid(u, u, u).ctx(|| "setresuid(0) in the user namespace".into())
}
