//! `sandbox` and `inspect`.
//!
//! `bulkhead sandbox [OPTIONS] -- COMMAND [ARGS...]` runs one command in a
//! throw-away container built in memory — no bundle, no image: the container
//! library does the work from an `oci::Spec` made here, and this file only
//! adds what a one-shot sandbox needs around it (the host's root as the
//! container's root, a supervisor for timeout and Ctrl-C, cleanup).
//!
//! ## Design notes
//! - **The host's root, read-only.** The container library bind-mounts
//!   `root.path` onto itself in the container's mount namespace and pivots
//!   into it; `root.path` cannot be `/` itself (pivot_root refuses the current
//!   root). So the root is an empty directory `<state root>/.sandbox/<id>.<pid>`
//!   (the reaper's to remove, see below), and the spec's first mount binds the
//!   host's `/` onto it, recursively, with `rro,rnosuid,rnodev`: read-only,
//!   nosuid and nodev all the way down. The spec's other mounts (fresh /proc,
//!   /dev, /tmp, /run, sysfs...) go on top of it (the library resolves the
//!   mounts after one on "/" in it). All of it happens in the container's
//!   mount namespace: the host's mount table never holds any of it, and the
//!   runtime's own namespace is the host's, untouched. (The host's /proc,
//!   /dev, /tmp... stay under the fresh mounts, unreachable without
//!   CAP_SYS_ADMIN to unmount them, which the sandbox never has.)
//! - **Unprivileged callers.** A user cannot create those namespaces in the
//!   host's user namespace, so bulkhead first moves itself into a user
//!   namespace of its own (after forking the reaper, which stays outside)
//!   where the user's uid and gid map to themselves (or to root with
//!   `--map-root`), and builds the sandbox from there with the same code: the
//!   container library knows it runs in a user namespace (devices are
//!   bind-mounted, `setgroups` is denied). Without `--memory`, `--cpus` or
//!   `--pids` the sandbox makes no cgroup (the caller's are not writable, and
//!   its pid namespace holds its processes); with them, only a cgroup v2
//!   subtree delegated to the user can hold the limits, and anything else is
//!   refused before anything is made, saying why. `/sys/fs/cgroup` is left
//!   out then (it would show the caller's cgroups).
//! - **What stays reachable.** Every file the sandbox's uid may read on the
//!   host can be read (that is the point of "host root read-only"); writes
//!   fail everywhere except the private tmpfs /tmp, /run, /dev/shm and
//!   `--bind`/`--tmpfs` targets. A read-only mount does not stop connect(2)
//!   on a Unix socket, so /run and /tmp (where daemons put theirs: docker,
//!   containerd, dbus, X11) are fresh tmpfs; sockets elsewhere on the host
//!   stay reachable. `--net host` also shares the host's abstract Unix
//!   sockets. For untrusted code, add `--user 65534` (nobody) or `--rootfs`.
//! - **seccomp.** bulkhead's default profile (the seccomp crate's
//!   `default_profile`, built into the binary) for the sandbox's bounding
//!   set, so nothing outside bulkhead decides what a sandbox may call;
//!   `--seccomp-profile FILE` takes a containers/podman profile instead (a
//!   missing file is an error, never a silent fallback), `unconfined` none.
//! - **Capabilities.** docker's default set without CAP_NET_RAW: raw and
//!   packet sockets (ping, packet capture) are the kernel's favourite network
//!   attack surface, and ping is their only common user (`--cap-add NET_RAW`).
//! - **Exit codes.** The command's own exit code, or 128+N if a signal N
//!   killed it; 124 when `--timeout` expired (timeout(1)'s code) — the
//!   sandbox is killed with SIGKILL, every process of it; 128+N when
//!   bulkhead received SIGINT/SIGTERM/SIGHUP/SIGQUIT and killed the sandbox
//!   (130 for Ctrl-C); 125 when the sandbox could not be set up or the
//!   command could not be started (docker/podman `run`'s code), with a
//!   one-line message.
//! - **Ctrl-C.** The sandbox runs in a session of its own (the container
//!   library calls setsid), so the terminal's SIGINT reaches bulkhead only.
//!   The command is pid 1 of a pid namespace, which ignores signals it has no
//!   handler for. So: if it catches the signal (SigCgt in its status), it gets
//!   it, and 2 s to exit (a second signal ends the wait); otherwise, or after
//!   that, every process of the sandbox gets SIGKILL. Other signals are
//!   forwarded to the command as `run` does.
//! - **Terminal.** When stdin and stdout are bulkhead's terminal (and
//!   bulkhead is its foreground job), or with `--tty`, the command gets a
//!   new pty of the sandbox's devpts as controlling terminal, stdio and
//!   /dev/console (`process.terminal`, its size from ours); its master comes
//!   to bulkhead over a console socket bulkhead holds itself, and the
//!   container library's foreground loop relays it (raw mode, SIGWINCH,
//!   restored on every way out). Ctrl-C, Ctrl-Z and Ctrl-\ are then bytes
//!   the pty turns into signals for its foreground job, so job control in a
//!   shell works and bulkhead gets no SIGINT. One exception keeps Ctrl-C
//!   stopping a plain command: the kernel drops a terminal's SIGINT/SIGQUIT
//!   for pid 1 without a handler, so when the command itself is the pty's
//!   foreground and leaves the signal at its default, bulkhead ends the
//!   sandbox (130/131) as the signal would have ended the command. SIGTERM,
//!   SIGHUP to bulkhead and `--timeout` end the sandbox as without a
//!   terminal. Output redirected to a file keeps plain streams (a pty would
//!   turn newlines into CR LF and merge stderr into stdout); `--no-tty`
//!   keeps them in a terminal too.
//! - **Cleanup.** The container is deleted whatever happens after it was
//!   created (a guard kills and deletes it), and the library undoes a failed
//!   create; every input is checked before anything is created. If bulkhead
//!   itself is killed (SIGKILL, OOM), no guard runs: a reaper process forked
//!   before anything is created removes what is left ([`reaper`]).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::fd::BorrowedFd;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{ArgGroup, Args};
use container::{CreateOptions, Runtime};
use oci::{Mount, NamespaceType, Spec};

mod reaper;
pub mod vm;

/// How long a command that handles SIGINT/SIGTERM gets to exit.
const SIGNAL_GRACE: Duration = Duration::from_secs(2);
/// The smallest --memory accepted (docker's minimum).
const MIN_MEMORY: i64 = 6 << 20;
const CPU_PERIOD: u64 = 100_000;
/// Exit code when the sandbox itself fails.
const EXIT_SETUP_FAILED: i32 = 125;
/// Exit code when --timeout expired.
const EXIT_TIMEOUT: i32 = 124;

#[derive(Args, Debug)]
pub struct SandboxArgs {
    /// Use DIR as the root filesystem instead of the host's root (also read-only).
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,
    /// Network: "none" (a network namespace with only loopback) or "host".
    #[arg(long, value_name = "MODE", default_value = "none", value_parser = ["none", "host"])]
    pub net: String,
    /// seccomp profile in the containers (podman/docker) format, converted
    /// for the sandbox's capabilities; "unconfined" for none (default:
    /// bulkhead's built-in profile).
    #[arg(long = "seccomp-profile", value_name = "FILE")]
    pub seccomp_profile: Option<String>,
    /// Add a capability to the default set (CAP_NET_ADMIN, net_raw, all).
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Remove a capability from the default set ("all" for none).
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Memory limit: bytes, or a number with k, m, g or t (powers of 1024).
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// CPU bandwidth limit in CPUs (1.5 = one and a half CPUs).
    #[arg(long, value_name = "N")]
    pub cpus: Option<String>,
    /// Maximum number of processes (and threads).
    #[arg(long, value_name = "N")]
    pub pids: Option<String>,
    /// Kill the sandbox after this long (seconds, or with s, m, h, d); exit code 124.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Bind-mount a host path into the sandbox, read-write unless ":ro".
    #[arg(long, value_name = "SRC:DST[:ro]")]
    pub bind: Vec<String>,
    /// Mount an empty, writable tmpfs at DIR.
    #[arg(long, value_name = "DIR")]
    pub tmpfs: Vec<String>,
    /// Set an environment variable (KEY alone: take the caller's value).
    #[arg(short, long, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory (default: the current directory; / with --rootfs).
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Host name inside the sandbox.
    #[arg(long, default_value = "sandbox")]
    pub hostname: String,
    /// Run as this user: UID[:GID] or NAME[:GROUP] (default root with the caps above).
    #[arg(short, long, value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// As an unprivileged user: be root (uid 0) in the sandbox's user namespace
    /// instead of your own uid (it grants nothing on the host).
    #[arg(long = "map-root")]
    pub map_root: bool,
    /// Container ID of the sandbox (default: sandbox-<random>).
    #[arg(long, value_name = "ID")]
    pub name: Option<String>,
    /// Give the command a new terminal (default: when stdin and stdout are
    /// bulkhead's terminal).
    #[arg(short = 't', long, conflicts_with = "no_tty")]
    pub tty: bool,
    /// Never give the command a terminal: plain stdin, stdout and stderr.
    #[arg(short = 'T', long = "no-tty")]
    pub no_tty: bool,
    /// The command and its arguments (after --).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("target").required(true).args(["id", "pid", "self_"])))]
pub struct InspectArgs {
    /// Container ID.
    pub id: Option<String>,
    /// Inspect this process (a pid of the caller's pid namespace).
    #[arg(long, value_name = "PID")]
    pub pid: Option<i32>,
    /// Inspect the inspecting process itself (e.g. run inside a sandbox).
    #[arg(long = "self")]
    pub self_: bool,
    /// Output format.
    #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
}

// ---------------------------------------------------------------------------
// sandbox: the plan (every input checked, nothing created)

/// A sandbox ready to create.
#[derive(Debug)]
struct Plan {
    id: String,
    spec: Spec,
    /// None: the host's root; Some: --rootfs (canonical).
    rootfs: Option<PathBuf>,
    timeout: Option<Duration>,
    /// An unprivileged caller: the uid and gid bulkhead takes in the user namespace it
    /// makes for itself (its own ids mapped to themselves, or to 0 with --map-root).
    userns: Option<(u32, u32)>,
    /// --memory, --cpus or --pids was given.
    limits: bool,
}

fn plan(a: &SandboxArgs) -> Result<Plan> {
    if a.command.is_empty() {
        bail!("missing command: usage: bulkhead sandbox [OPTIONS] -- COMMAND [ARGS...]");
    }
    let id = match &a.name {
        Some(n) => n.clone(),
        None => random_id()?,
    };
    oci::validate_id(&id).map_err(|e| anyhow!("--name: {e}"))?;
    let rootfs = match &a.rootfs {
        Some(d) => {
            let c = fs::canonicalize(d).with_context(|| format!("--rootfs {}", d.display()))?;
            if !c.is_dir() {
                bail!("--rootfs {}: not a directory", d.display());
            }
            Some(c)
        }
        None => None,
    };
    let root_dir = rootfs.clone().unwrap_or_else(|| PathBuf::from("/"));
    let caps = capability_set(&a.cap_add, &a.cap_drop)?;
    let memory = a.memory.as_deref().map(parse_memory).transpose()?;
    let cpus = a
        .cpus
        .as_deref()
        .map(|c| parse_cpus("--cpus", c))
        .transpose()?;
    let pids = a.pids.as_deref().map(parse_pids).transpose()?;
    let timeout = a.timeout.as_deref().map(parse_duration).transpose()?;
    let user = a
        .user
        .as_deref()
        .map(|u| parse_user("--user", u, &root_dir))
        .transpose()?;
    let userns = rootless_ids(a.map_root, user, a.user.as_deref())?;
    let env = environment(&a.env)?;
    let cwd = match &a.workdir {
        Some(w) => {
            if !w.starts_with('/') {
                bail!("--workdir {w:?}: must be an absolute path");
            }
            w.clone()
        }
        None if rootfs.is_none() => std::env::current_dir()
            .ok()
            .filter(|d| d.is_absolute() && d.is_dir())
            .and_then(|d| d.to_str().map(String::from))
            .unwrap_or_else(|| "/".into()),
        None => "/".into(),
    };
    let host_net = a.net == "host";
    let terminal = a.tty || (!a.no_tty && container::console::interactive());

    let mut extra = vec![tmpfs_mount("/tmp", "1777"), tmpfs_mount("/run", "755")];
    // Writable places where new mount points can be made in a read-only host root.
    let mut writable: Vec<String> = vec!["/tmp".into(), "/run".into(), "/dev".into()];
    for t in &a.tmpfs {
        let dst = clean_abs(t).with_context(|| format!("--tmpfs {t}"))?;
        if rootfs.is_none() {
            check_mount_point(&dst, true, &writable).with_context(|| format!("--tmpfs {t}"))?;
        }
        extra.push(tmpfs_mount(&dst, "1777"));
        writable.push(dst);
    }
    for b in &a.bind {
        let (src, dst, ro) = parse_bind(b)?;
        if rootfs.is_none() {
            check_mount_point(&dst, src.is_dir(), &writable)
                .with_context(|| format!("--bind {b}"))?;
        }
        let mut options = vec!["rbind".to_string()];
        if ro {
            options.push("rro".into());
        }
        extra.push(Mount {
            destination: dst.clone(),
            typ: Some("bind".into()),
            source: Some(src.to_string_lossy().into_owned()),
            options,
            ..Default::default()
        });
        if !ro && src.is_dir() {
            writable.push(dst);
        }
    }
    // The caller's directory may lie where the sandbox has fresh, empty
    // mounts: it starts there anyway (created), but say so.
    if a.workdir.is_none() && rootfs.is_none() {
        let here = Path::new(&cwd);
        let private = ["/tmp", "/run"]
            .into_iter()
            .map(String::from)
            .chain(a.tmpfs.iter().cloned())
            .find(|w| here.starts_with(w));
        let shared = a
            .bind
            .iter()
            .filter_map(|b| b.split(':').nth(1))
            .any(|dst| here.starts_with(dst));
        if let (Some(w), false) = (private, shared) {
            tracing::warn!(
                "sandbox: the current directory {cwd} is under {w}, which is private and empty in the sandbox; the command starts in an empty {cwd} (share it with --bind {cwd}:{cwd})"
            );
        }
    }
    // With the host's network, the host's resolver must work: on systemd
    // hosts /etc/resolv.conf points into /run, which the sandbox replaces.
    if host_net && rootfs.is_none() {
        if let Ok(target) = fs::canonicalize("/etc/resolv.conf") {
            if target.starts_with("/run") && target.is_file() {
                let t = target.to_string_lossy().into_owned();
                extra.push(Mount {
                    destination: t.clone(),
                    typ: Some("bind".into()),
                    source: Some(t),
                    options: vec!["bind".into(), "ro".into()],
                    ..Default::default()
                });
            }
        }
    }

    let seccomp = crate::oci_cmds::seccomp_choice(a.seccomp_profile.as_deref(), &caps)?;

    let mut spec = oci::default_spec(None);
    if rootfs.is_none() {
        // The host's root, read-only, nosuid and nodev all the way down, as the
        // sandbox's root: the first mount, on "/" (the claimed directory, see
        // run_sandbox), so the spec's own mounts (fresh /proc, /dev, /tmp...) go
        // on top of it.
        spec.mounts.insert(
            0,
            Mount {
                destination: "/".into(),
                typ: Some("bind".into()),
                source: Some("/".into()),
                options: ["rbind", "rro", "rnosuid", "rnodev"]
                    .map(String::from)
                    .to_vec(),
                ..Default::default()
            },
        );
    }
    if host_net && rootfs.is_none() {
        // sysfs shows the network namespace of whoever mounts it: with the host's, the
        // host's /sys is the one, and the host's root already holds it, read-only (a
        // second mount of the same sysfs on it is refused, EBUSY).
        spec.mounts.retain(|m| m.destination != "/sys");
    }
    spec.hostname = Some(a.hostname.clone());
    spec.root = Some(oci::Root {
        path: ".".into(),
        readonly: true,
    });
    spec.mounts.extend(extra);
    spec.annotations.insert(
        "org.bulkhead.sandbox".into(),
        if rootfs.is_some() {
            "rootfs"
        } else {
            "host-root"
        }
        .into(),
    );
    let p = spec.process.as_mut().expect("default spec has a process");
    p.terminal = terminal;
    p.console_size = terminal.then(container::console::console_size).flatten();
    p.args = a.command.clone();
    p.env = env;
    p.cwd = cwd;
    // The caller's resource limits carry over (runc's default caps nofile at 1024).
    p.rlimits.clear();
    p.no_new_privileges = true;
    if let Some((uid, gid)) = user.or(userns) {
        p.user.uid = uid;
        p.user.gid = gid;
    }
    p.capabilities = Some(oci::Capabilities {
        bounding: Some(caps.clone()),
        effective: Some(caps.clone()),
        permitted: Some(caps),
        inheritable: None,
        ambient: None,
    });
    let linux = spec.linux.get_or_insert_with(Default::default);
    if host_net {
        linux.namespaces.retain(|n| n.typ != NamespaceType::Network);
    }
    linux.seccomp = seccomp;
    let res = linux.resources.get_or_insert_with(Default::default);
    if let Some(m) = memory {
        res.memory = Some(oci::Memory {
            limit: Some(m),
            // No swapping past the limit, where the host can account swap.
            swap: cgroups::swap_accounted().then_some(m),
            ..Default::default()
        });
    }
    if let Some(q) = cpus {
        res.cpu = Some(oci::Cpu {
            quota: Some(q),
            period: Some(CPU_PERIOD),
            ..Default::default()
        });
    }
    if let Some(n) = pids {
        res.pids = Some(oci::Pids { limit: Some(n) });
    }
    let limits = memory.is_some() || cpus.is_some() || pids.is_some();
    if userns.is_some() {
        // Only the caller's own gid exists in the user namespace: devpts cannot give
        // ptys to group tty (gid 5).
        for m in &mut spec.mounts {
            m.options.retain(|o| o != "gid=5");
        }
        if !limits {
            // No cgroup of its own (the caller's is not writable, or not asked for):
            // /sys/fs/cgroup would only show the caller's, read-only.
            spec.mounts.retain(|m| m.destination != "/sys/fs/cgroup");
        }
        check_limits_rootless(
            &id,
            &[
                ("--memory", "memory", memory.is_some()),
                ("--cpus", "cpu", cpus.is_some()),
                ("--pids", "pids", pids.is_some()),
            ],
        )?;
    }
    oci::validate(&spec).context("the sandbox's config")?;
    Ok(Plan {
        id,
        spec,
        rootfs,
        timeout,
        userns,
        limits,
    })
}

/// The ids an unprivileged caller takes in the user namespace it makes for its sandbox:
/// its own, or root with `--map-root`; None for root on the host (no user namespace).
/// `--user` can only name that one id: nothing else is mapped.
fn rootless_ids(
    map_root: bool,
    user: Option<(u32, u32)>,
    user_arg: Option<&str>,
) -> Result<Option<(u32, u32)>> {
    if !container::userns::unprivileged() {
        if map_root {
            bail!("--map-root: only for an unprivileged user (a sandbox of root on the host has no user namespace)");
        }
        return Ok(None);
    }
    let own = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    let inside = if map_root { (0, 0) } else { own };
    let Some((uid, gid)) = user else {
        return Ok(Some(inside));
    };
    let arg = user_arg.unwrap_or_default();
    let mapped = format!(
        "which maps only uid {} and gid {} ({}your own ids {} and {})",
        inside.0,
        inside.1,
        if map_root {
            "--map-root: root for "
        } else {
            ""
        },
        own.0,
        own.1
    );
    if uid != inside.0 {
        bail!("--user {arg}: uid {uid} does not exist in an unprivileged sandbox's user namespace, {mapped}");
    }
    if gid != inside.1 {
        bail!("--user {arg}: gid {gid} does not exist in an unprivileged sandbox's user namespace, {mapped}");
    }
    Ok(Some(inside))
}

/// An unprivileged sandbox can limit resources only in a cgroup delegated to the user:
/// check, before anything is made, that each requested limit has one, and say why not.
fn check_limits_rootless(id: &str, wanted: &[(&str, &str, bool)]) -> Result<()> {
    if !wanted.iter().any(|w| w.2) {
        return Ok(());
    }
    let h = cgroups::Hierarchies::detect()?;
    let mut cg = cgroups::Cgroup::resolve(&h, None, id)?;
    cg.leave_out_unwritable(&h)?;
    for (flag, controller, _) in wanted.iter().filter(|w| w.2) {
        cg.need(controller, flag)?;
    }
    Ok(())
}

fn tmpfs_mount(dst: &str, mode: &str) -> Mount {
    Mount {
        destination: dst.into(),
        typ: Some("tmpfs".into()),
        source: Some("tmpfs".into()),
        options: vec!["nosuid".into(), "nodev".into(), format!("mode={mode}")],
        ..Default::default()
    }
}

fn random_id() -> Result<String> {
    Ok(format!("sandbox-{}", random_hex()?))
}

/// 12 random hex digits: the id part of sandbox and VM names.
pub(crate) fn random_hex() -> Result<String> {
    let mut b = [0u8; 6];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        return Err(std::io::Error::last_os_error()).context("getrandom");
    }
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The sandbox's default set (docker's without CAP_NET_RAW), minus `drop`,
/// plus `add` ("all" in either works on every capability the kernel knows;
/// specific names are applied after "all").
fn capability_set(add: &[String], drop: &[String]) -> Result<Vec<String>> {
    let known = container::capabilities::known_names();
    let norm = |flag: &str, s: &str| -> Result<String> {
        let up = s.trim().to_ascii_uppercase();
        let n = if up.starts_with("CAP_") {
            up
        } else {
            format!("CAP_{up}")
        };
        if known.contains(&n) {
            Ok(n)
        } else {
            bail!(
                "{flag} {s:?}: unknown capability (this kernel knows CAP_CHOWN ... {})",
                known.last().map(String::as_str).unwrap_or("?")
            )
        }
    };
    // A capability bulkhead itself lacks cannot be given (capset would fail).
    let own = own_bounding_set();
    let have = |n: &String| {
        known
            .iter()
            .position(|k| k == n)
            .is_some_and(|bit| own & (1u64 << bit) != 0)
    };
    let is_all = |s: &String| s.eq_ignore_ascii_case("all");
    let mut set: Vec<String> = if add.iter().any(is_all) {
        known.iter().filter(|n| have(n)).cloned().collect()
    } else if drop.iter().any(is_all) {
        Vec::new()
    } else {
        oci::DEFAULT_CAPS
            .iter()
            .filter(|c| **c != "CAP_NET_RAW")
            .map(|s| s.to_string())
            .collect()
    };
    for d in drop.iter().filter(|d| !is_all(d)) {
        let n = norm("--cap-drop", d)?;
        set.retain(|c| *c != n);
    }
    for a in add.iter().filter(|a| !is_all(a)) {
        let n = norm("--cap-add", a)?;
        if !have(&n) {
            bail!("--cap-add {a:?}: bulkhead itself does not have {n} (it is not in its bounding set), so it cannot give it");
        }
        if !set.contains(&n) {
            set.push(n);
        }
    }
    Ok(set)
}

/// The calling process's bounding set (CapBnd); all bits if unreadable.
fn own_bounding_set() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

/// "64m", "1.5g", "1048576", "512KiB" -> bytes.
fn parse_memory(s: &str) -> Result<i64> {
    let bytes = match crate::cgroup_cmds::size_in_bytes(s) {
        Some(Ok(v)) => v,
        _ => {
            bail!("--memory {s:?}: not a size (use bytes or a number with k, m, g or t, e.g. 512m)")
        }
    };
    if bytes < MIN_MEMORY {
        bail!("--memory {s:?}: at least 6m is needed to start a process");
    }
    Ok(bytes)
}

/// CPUs -> quota in microseconds per CPU_PERIOD (`flag` names the option in errors).
pub(crate) fn parse_cpus(flag: &str, s: &str) -> Result<i64> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| anyhow!("{flag} {s:?}: not a number (e.g. 0.5, 2)"))?;
    if !v.is_finite() || v <= 0.0 || v > 1_000_000.0 {
        bail!("{flag} {s:?}: must be a positive number of CPUs");
    }
    let quota = (v * CPU_PERIOD as f64).round() as i64;
    if quota < 1000 {
        bail!("{flag} {s:?}: at least 0.01 (the kernel's smallest quota is 1 ms per period)");
    }
    Ok(quota)
}

fn parse_pids(s: &str) -> Result<i64> {
    match s.trim().parse::<i64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => bail!("--pids {s:?}: must be a whole number of processes, at least 1"),
    }
}

/// timeout(1)'s syntax: a number with an optional s, m, h or d suffix.
fn parse_duration(s: &str) -> Result<Duration> {
    let bad =
        || anyhow!("--timeout {s:?}: not a duration (seconds, or a number with s, m, h or d)");
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('s') => (&t[..t.len() - 1], 1.0),
        Some('m') => (&t[..t.len() - 1], 60.0),
        Some('h') => (&t[..t.len() - 1], 3600.0),
        Some('d') => (&t[..t.len() - 1], 86400.0),
        _ => (t, 1.0),
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    let secs = v * mult;
    if !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
        bail!("--timeout {s:?}: must be more than 0");
    }
    Ok(Duration::from_secs_f64(secs))
}

/// UID[:GID] or NAME[:GROUP], names from `root`'s /etc/passwd and /etc/group (`flag` names
/// the option in errors).
pub(crate) fn parse_user(flag: &str, s: &str, root: &Path) -> Result<(u32, u32)> {
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    let entry = |pred: &dyn Fn(&[&str]) -> bool| -> Option<(u32, u32)> {
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() >= 4 && pred(&f) {
                Some((f[2].parse().ok()?, f[3].parse().ok()?))
            } else {
                None
            }
        })
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(uid) => (uid, entry(&|f| f[2] == u).map(|(_, g)| g).unwrap_or(uid)),
        Err(_) => entry(&|f| f[0] == u).ok_or_else(|| {
            anyhow!(
                "{flag} {s:?}: no user {u:?} in {}",
                root.join("etc/passwd").display()
            )
        })?,
    };
    let gid = match g {
        None => primary,
        Some(g) => group_id(g, root).ok_or_else(|| {
            anyhow!(
                "{flag} {s:?}: no group {g:?} in {}",
                root.join("etc/group").display()
            )
        })?,
    };
    Ok((uid, gid))
}

/// A gid, or a group name from `root`'s /etc/group.
pub(crate) fn group_id(g: &str, root: &Path) -> Option<u32> {
    if let Ok(n) = g.parse::<u32>() {
        return Some(n);
    }
    let group = fs::read_to_string(root.join("etc/group")).unwrap_or_default();
    group.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[0] == g)
            .then(|| f[2].parse().ok())
            .flatten()
    })
}

/// PATH, the caller's TERM, then each --env.
fn environment(args: &[String]) -> Result<Vec<String>> {
    let mut env: Vec<String> =
        vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()];
    if let Ok(t) = std::env::var("TERM") {
        env.push(format!("TERM={t}"));
    }
    for e in args {
        let (k, v) = match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => {
                let v = std::env::var(e).map_err(|_| {
                    anyhow!("--env {e:?}: no value given and {e} is not set in the caller's environment")
                })?;
                (e.clone(), v)
            }
        };
        if k.is_empty() || k.contains('\0') || v.contains('\0') {
            bail!("--env {e:?}: expected KEY=VALUE");
        }
        env.retain(|x| x.split_once('=').map(|(a, _)| a) != Some(k.as_str()));
        env.push(format!("{k}={v}"));
    }
    Ok(env)
}

/// An absolute path without `..`, normalised ("/a//b/" -> "/a/b").
fn clean_abs(p: &str) -> Result<String> {
    let path = Path::new(p);
    if !path.is_absolute() {
        bail!("{p:?} is not an absolute path");
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => bail!("{p:?} must not contain '..'"),
        }
    }
    Ok(out.to_string_lossy().into_owned())
}

/// SRC:DST[:ro|:rw] with SRC existing (made absolute) and DST absolute.
fn parse_bind(b: &str) -> Result<(PathBuf, String, bool)> {
    let parts: Vec<&str> = b.split(':').collect();
    let (src, dst, ro) = match parts.as_slice() {
        [s, d] => (*s, *d, false),
        [s, d, "ro"] => (*s, *d, true),
        [s, d, "rw"] => (*s, *d, false),
        _ => bail!("--bind {b:?}: expected SRC:DST or SRC:DST:ro"),
    };
    if src.is_empty() || dst.is_empty() {
        bail!("--bind {b:?}: expected SRC:DST or SRC:DST:ro");
    }
    let src = fs::canonicalize(src).map_err(|e| anyhow!("--bind {b}: source {src}: {e}"))?;
    let dst = clean_abs(dst).with_context(|| format!("--bind {b}: destination"))?;
    Ok((src, dst, ro))
}

/// In the read-only host root a mount point must already exist, unless it
/// is under a writable place (/tmp, /run, /dev, a --tmpfs or rw --bind).
fn check_mount_point(dst: &str, want_dir: bool, writable: &[String]) -> Result<()> {
    let under_writable = writable
        .iter()
        .any(|w| Path::new(dst).starts_with(w) && dst != w);
    if under_writable {
        return Ok(());
    }
    if dst == "/" || Path::new(dst).starts_with("/proc") || Path::new(dst).starts_with("/sys") {
        bail!("destination {dst}: cannot mount there in a sandbox");
    }
    match fs::metadata(dst) {
        Ok(m) if m.is_dir() != want_dir => bail!(
            "destination {dst} is a {} but the source is a {}",
            if m.is_dir() { "directory" } else { "file" },
            if want_dir { "directory" } else { "file" }
        ),
        Ok(_) => Ok(()),
        Err(_) => bail!(
            "destination {dst} does not exist, and the sandbox's root (the host's, read-only) cannot get new mount points; use an existing path, or one under /tmp, /run or a --tmpfs"
        ),
    }
}

// ---------------------------------------------------------------------------
// sandbox: running it

pub fn sandbox(rt: &Runtime, a: SandboxArgs) -> Result<i32> {
    run_sandbox(rt, a).map_err(setup_failed)
}

/// The command's own exit codes pass through: the sandbox's failures get 125 (as
/// `podman run`), so they can be told apart.
fn setup_failed(e: anyhow::Error) -> anyhow::Error {
    crate::ExitWith {
        code: EXIT_SETUP_FAILED,
        message: format!("sandbox: {}", format!("{e:#}").replace('\n', " ")),
    }
    .into()
}

fn run_sandbox(rt: &Runtime, a: SandboxArgs) -> Result<i32> {
    let plan = plan(&a)?;
    // A sandbox granted CAP_SYS_PTRACE needs the runtime to run from a sealed
    // copy (CVE-2019-5736): re-execute now, before anything exists, rather
    // than from inside create.
    if container::exe::needs_sealed_copy(&plan.spec) && !container::exe::is_sealed_copy() {
        let e = container::exe::reexec_sealed();
        return Err(e).context("re-execute from a sealed copy of bulkhead (CVE-2019-5736 protection for CAP_SYS_PTRACE)");
    }
    // Signals wait in the mask from here on, so a Ctrl-C during setup is
    // acted on (by killing the sandbox) once it runs, not lost half-way.
    let old_mask = container::block_forwarded_signals();
    let res = (|| {
        // Before anything exists: whoever kills us, the reaper cleans up.
        let claim = reaper::start(rt, &plan.id)?;
        if let Some((uid, gid)) = plan.userns {
            // An unprivileged caller: a user namespace of our own, where we hold the
            // capabilities the rest needs (our mount namespace, the container's
            // namespaces), all confined to what the user owns. The reaper stays outside.
            container::userns::enter_own(uid, gid)?;
        }
        // The host's root is bound onto the claimed directory by the
        // container's init, in its own mount namespace (the first mount of
        // the spec): nothing of it reaches a mount table outside.
        let bundle = plan.rootfs.clone().unwrap_or_else(|| claim.dir.clone());
        let mut spec = plan.spec.clone();
        spec.annotations
            .insert(reaper::OWNER.into(), reaper::owner());
        let opts = CreateOptions {
            bundle,
            spec: Some(spec),
            // An unprivileged sandbox without limits has no use for a cgroup: its
            // pid namespace holds its processes.
            no_cgroup: plan.userns.is_some() && !plan.limits,
            ..Default::default()
        };
        let res = supervise(rt, &plan, &opts);
        // The claimed directory goes after the container.
        drop(claim);
        res
    })();
    // SAFETY: restoring the mask saved above (a signal still pending now
    // takes its default action, as it would have without us).
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()) };
    res
}

/// Kills and deletes the container on every path out of `supervise`.
struct ContainerGuard<'a> {
    rt: &'a Runtime,
    id: &'a str,
    pid: i32,
    reaped: bool,
}

impl Drop for ContainerGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.rt.delete(self.id, true) {
            let _ = writeln!(
                std::io::stderr(),
                "bulkhead: sandbox: warning: delete {}: {e}",
                self.id
            );
        }
        if !self.reaped {
            // SAFETY: waitpid on our own child (the init is a clone of this process).
            unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), 0) };
        }
    }
}

/// With a terminal, the pty's master comes to us (see the module notes).
fn console_receiver(plan: &Plan) -> Result<Option<container::console::Receiver>> {
    Ok(plan
        .spec
        .process
        .as_ref()
        .is_some_and(|p| p.terminal)
        .then(container::console::Receiver::new)
        .transpose()?)
}

/// Why the sandbox ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Timeout,
    Signal(i32),
}

fn supervise(rt: &Runtime, plan: &Plan, opts: &CreateOptions) -> Result<i32> {
    let id = plan.id.as_str();
    let console = console_receiver(plan)?;
    let opts = CreateOptions {
        console_fd: console.as_ref().map(|c| c.console_fd()),
        ..opts.clone()
    };
    let created = rt.create(id, &opts)?;
    let mut guard = ContainerGuard {
        rt,
        id,
        pid: created.pid,
        reaped: false,
    };
    let master = console.and_then(container::console::Receiver::master);
    rt.start(id)?;
    let code = wait_code(rt, id, created.pid, plan.timeout, master)?;
    guard.reaped = true;
    drop(guard);
    Ok(code)
}

/// [`wait`], then the sandbox's exit code: 124 on timeout, 128+N when we killed it for
/// signal N, else the command's own.
fn wait_code(
    rt: &Runtime,
    id: &str,
    pid: i32,
    timeout: Option<Duration>,
    master: Option<std::os::fd::OwnedFd>,
) -> Result<i32> {
    let (status, ending, killed) = wait(rt, id, pid, timeout, master)?;
    Ok(match ending {
        Some(Ending::Timeout) => EXIT_TIMEOUT,
        Some(Ending::Signal(n)) if killed => 128 + n,
        _ => container::exit_code(status),
    })
}

/// Wait for the sandbox's init (the container library's foreground loop),
/// forwarding signals, enforcing the timeout and the stop policy, relaying
/// the terminal if `master` is the sandbox's pty.
/// Returns (wait status, why it ended early, whether we killed it).
fn wait(
    rt: &Runtime,
    id: &str,
    pid: i32,
    timeout: Option<Duration>,
    master: Option<std::os::fd::OwnedFd>,
) -> Result<(i32, Option<Ending>, bool)> {
    let mut sup = Supervisor {
        rt,
        id,
        pid,
        deadline: timeout.map(|t| Instant::now() + t),
        ending: None,
        killed: false,
        grace_until: None,
    };
    let status = container::foreground::supervise(pid, master, &mut sup)?;
    Ok((status, sup.ending, sup.killed))
}

/// The sandbox's policy: a timeout, and a stop signal (Ctrl-C...) goes to
/// the command only if it handles it, with a grace period; otherwise, or on
/// a second one, everything in the sandbox is killed.
struct Supervisor<'a> {
    rt: &'a Runtime,
    id: &'a str,
    pid: i32,
    deadline: Option<Instant>,
    ending: Option<Ending>,
    killed: bool,
    grace_until: Option<Instant>,
}

impl Supervisor<'_> {
    fn kill_all(&mut self, process: BorrowedFd<'_>) {
        self.killed = true;
        let _ = self.rt.kill(self.id, libc::SIGKILL, true);
        let _ = rustix::process::pidfd_send_signal(process, rustix::process::Signal::KILL);
    }
}

impl container::foreground::Supervisor for Supervisor<'_> {
    fn deadline(&self) -> Option<Instant> {
        [
            self.deadline.filter(|_| self.ending.is_none()),
            self.grace_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn timer(&mut self, process: BorrowedFd<'_>) {
        let now = Instant::now();
        if self.ending.is_none() && self.deadline.is_some_and(|d| now >= d) {
            self.ending = Some(Ending::Timeout);
            self.kill_all(process);
        } else if self.grace_until.is_some_and(|g| now >= g) {
            self.grace_until = None;
            self.kill_all(process);
        }
    }

    fn signal(&mut self, signo: i32, process: BorrowedFd<'_>) -> bool {
        let stopping = matches!(
            signo,
            libc::SIGINT | libc::SIGTERM | libc::SIGHUP | libc::SIGQUIT
        );
        if !stopping {
            return true;
        }
        if self.ending.is_some() {
            // A second one, or one after the timeout: no more waiting.
            self.grace_until = None;
            self.kill_all(process);
            return false;
        }
        self.ending = Some(Ending::Signal(signo));
        if catches(self.pid, signo) {
            self.grace_until = Some(Instant::now() + SIGNAL_GRACE);
            true
        } else {
            self.kill_all(process);
            false
        }
    }

    fn terminal_signal(&mut self, signo: i32, foreground: i32, process: BorrowedFd<'_>) {
        // Ctrl-C or Ctrl-\ for the command itself (its group is the
        // terminal's foreground), which leaves the signal's default action:
        // outside a pid namespace that ends it, as pid 1 the kernel drops the
        // signal. End the sandbox as Ctrl-C without a terminal does. A job in
        // the foreground (a shell's `sleep`) gets the signal from the kernel.
        let ends = matches!(signo, libc::SIGINT | libc::SIGQUIT);
        if !ends || foreground != self.pid || self.ending.is_some() {
            return;
        }
        if catches(self.pid, signo) || signal_mask(self.pid, "SigIgn", signo) {
            return;
        }
        self.ending = Some(Ending::Signal(signo));
        self.kill_all(process);
    }
}

/// Does process `pid` have a handler for `signo` (SigCgt in its status)?
fn catches(pid: i32, signo: i32) -> bool {
    signal_mask(pid, "SigCgt", signo)
}

/// Is `signo` in the signal mask `field` (SigCgt, SigIgn...) of `pid`'s status?
fn signal_mask(pid: i32, field: &str, signo: i32) -> bool {
    let Ok(s) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|mask| (1..=64).contains(&signo) && mask & (1u64 << (signo - 1)) != 0)
}

// ---------------------------------------------------------------------------
// inspect

pub fn inspect(rt: &Runtime, a: InspectArgs) -> Result<i32> {
    let (pid, container) = if a.self_ {
        (std::process::id() as i32, None)
    } else if let Some(pid) = a.pid {
        if pid <= 0 {
            bail!("--pid {pid}: not a process id");
        }
        (pid, None)
    } else {
        let id = a.id.as_deref().expect("clap requires a target");
        let saved = rt.load(id)?;
        let status = saved.status();
        if status == oci::Status::Stopped {
            bail!("container {id:?} is stopped: it has no process to inspect");
        }
        (saved.pid, Some((id.to_string(), status)))
    };
    let report = ::inspect::inspect(pid)?;
    let mut out = std::io::stdout().lock();
    if a.format == "json" {
        #[derive(serde::Serialize)]
        struct Json<'a> {
            /// The container, when inspected by ID.
            #[serde(skip_serializing_if = "Option::is_none")]
            container: Option<serde_json::Value>,
            #[serde(flatten)]
            report: &'a ::inspect::Report,
        }
        let j = Json {
            container: container
                .as_ref()
                .map(|(id, st)| serde_json::json!({"id": id, "status": st})),
            report: &report,
        };
        writeln!(out, "{}", serde_json::to_string(&j)?)?;
    } else {
        write!(out, "{}", table(&report, container.as_ref()))?;
    }
    Ok(0)
}

/// Bytes as "64 MiB".
fn human_bytes(v: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = v;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if v.fract() == 0.0 {
        format!("{v:.0} {}", units[i])
    } else {
        format!("{v:.1} {}", units[i])
    }
}

fn limits_text(l: &::inspect::cgroup::Limits) -> String {
    let one =
        |name: &str, lim: &Option<::inspect::cgroup::Limit>, fmt: &dyn Fn(f64) -> String| match lim
        {
            None => format!("{name} ?"),
            Some(l) => match l.value {
                None => format!("{name} max"),
                Some(v) => format!("{name} {}", fmt(v)),
            },
        };
    [
        one("memory", &l.memory, &human_bytes),
        one("cpu", &l.cpu, &|v| format!("{v:.2} CPUs")),
        one("pids", &l.pids, &|v| format!("{v:.0}")),
    ]
    .join(", ")
}

fn caps_text(names: &[String], max: usize) -> String {
    let short: Vec<&str> = names
        .iter()
        .map(|n| n.strip_prefix("CAP_").unwrap_or(n))
        .collect();
    if short.len() <= max {
        short.join(" ")
    } else {
        format!("{} ... (+{})", short[..max].join(" "), short.len() - max)
    }
}

/// The text report: one row per layer (and per namespace), this process
/// against the host, and the summary line.
pub(crate) fn table(r: &::inspect::Report, container: Option<&(String, oci::Status)>) -> String {
    let mut rows: Vec<(String, String, String, String)> = Vec::new();
    let mut row = |a: &str, b: &str, c: String, d: String| {
        rows.push((a.to_string(), b.to_string(), c, d));
    };
    let ns = &r.namespaces;
    row(
        "namespaces",
        &ns.status,
        format!("{} of {} private", ns.private, ns.items.len()),
        String::new(),
    );
    for n in &ns.items {
        let ino = |i: Option<u64>| i.map(|i| format!("{}:[{i}]", n.kind)).unwrap_or("?".into());
        row(
            &format!("  {}", n.kind),
            n.share.word(),
            ino(n.inode),
            ino(n.host_inode),
        );
    }
    let cg = &r.cgroup;
    row(
        "cgroup",
        &cg.status,
        limits_text(&cg.limits),
        cg.host_limits
            .as_ref()
            .map(limits_text)
            .unwrap_or_else(|| "no limits (no host process visible)".into()),
    );
    let mut paths: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for m in &cg.cgroups {
        let name = if m.controllers.is_empty() {
            "unified"
        } else {
            m.controllers.as_str()
        };
        paths.entry(m.path.as_str()).or_default().push(name);
    }
    for (p, ctrls) in &paths {
        row("", "", format!("{p} ({})", ctrls.join(" ")), String::new());
    }
    if let Some(e) = &cg.error {
        row("", "", e.clone(), String::new());
    }
    let sc = &r.seccomp;
    let mode = |m: &::inspect::seccomp::ModeNum, f: Option<u64>| {
        format!(
            "mode {} ({}), {}",
            m,
            ::inspect::seccomp::mode_name(m.0),
            match f {
                Some(1) => "1 filter".to_string(),
                Some(n) => format!("{n} filters"),
                None => "? filters".into(),
            }
        )
    };
    row(
        "seccomp",
        &sc.status,
        mode(&sc.mode, sc.filters),
        mode(&sc.host_mode, sc.host_filters),
    );
    if sc.threads.len() > 1 {
        // Filters are per thread: show each thread's count (by name).
        let each: Vec<String> = sc
            .threads
            .iter()
            .map(|t| {
                let n = t.filters.map_or("?".into(), |n| n.to_string());
                format!("{} {n}", t.comm)
            })
            .collect();
        row(
            "",
            "",
            format!(
                "{} threads, filters each: {}",
                each.len(),
                caps_text(&each, 6)
            ),
            String::new(),
        );
    }
    let c = &r.capabilities;
    row(
        "capabilities",
        &c.status,
        format!(
            "bounding {} of {}: {}",
            c.sets.bounding.names.len(),
            c.kernel_caps,
            caps_text(&c.sets.bounding.names, 5)
        ),
        format!("bounding {}", c.host_bounding.names.len()),
    );
    row(
        "",
        "",
        format!(
            "effective {}: {}",
            c.sets.effective.names.len(),
            caps_text(&c.sets.effective.names, 5)
        ),
        String::new(),
    );
    if !c.sets.ambient.names.is_empty() {
        row(
            "",
            "",
            format!("ambient: {}", caps_text(&c.sets.ambient.names, 8)),
            String::new(),
        );
    }
    let n = &r.no_new_privs;
    row(
        "no_new_privs",
        &n.status,
        (n.value as u8).to_string(),
        (n.host_value as u8).to_string(),
    );
    let ids = &r.ids;
    let map = |m: &[::inspect::ids::Range]| {
        if m.is_empty() {
            "(empty)".to_string()
        } else {
            m.iter()
                .map(|x| format!("{} {} {}", x.inside, x.outside, x.count))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    row(
        "user ids",
        &ids.status,
        format!(
            "uid {} gid {}; uid_map {}",
            ids.uids
                .first()
                .map(|u| u.to_string())
                .unwrap_or("?".into()),
            ids.gids
                .first()
                .map(|g| g.to_string())
                .unwrap_or("?".into()),
            map(&ids.uid_map)
        ),
        "0 0 4294967295".into(),
    );
    if ids.gid_map != ids.uid_map {
        row(
            "",
            "",
            format!("gid_map {}", map(&ids.gid_map)),
            String::new(),
        );
    }
    let l = &r.lsm;
    row(
        "lsm",
        &l.status,
        l.label
            .clone()
            .or_else(|| l.note.clone())
            .unwrap_or_default(),
        l.host_label.clone().unwrap_or_else(|| "-".into()),
    );
    let rt = &r.root;
    let root_text = match (&rt.root_mount, &rt.root) {
        (Some(m), Some(id)) => format!(
            "{} {} {} {} (mount {}, dev {} ino {})",
            m.fstype,
            m.source,
            m.root,
            if m.read_only { "ro" } else { "rw" },
            m.id,
            id.dev,
            id.ino
        ),
        (None, Some(id)) => format!("dev {} ino {}", id.dev, id.ino),
        _ => rt.error.clone().unwrap_or_else(|| "?".into()),
    };
    let host_root = match &rt.host_root {
        Some(h) => format!(
            "mount {}, dev {} ino {}",
            h.mnt_id.map(|m| m.to_string()).unwrap_or("?".into()),
            h.dev,
            h.ino
        ),
        None => "-".into(),
    };
    row("root", &rt.status, root_text, host_root);
    row(
        "",
        "",
        format!(
            "{} mounts, {} read-only",
            rt.mount_count.map(|c| c.to_string()).unwrap_or("?".into()),
            rt.read_only_mounts
                .map(|c| c.to_string())
                .unwrap_or("?".into())
        ),
        rt.host_mount_count
            .map(|c| format!("{c} mounts"))
            .unwrap_or_default(),
    );
    let vm = &r.vm;
    row(
        "vm",
        &vm.status,
        vm.kernel.clone(),
        if vm.machine_is_vm {
            format!(
                "the machine is a VM ({})",
                vm.hypervisor.as_deref().unwrap_or("hypervisor unnamed")
            )
        } else {
            "no hypervisor detected".into()
        },
    );
    for e in &vm.evidence {
        row("", "", String::new(), e.clone());
    }

    let mut s = String::new();
    let who = match container {
        Some((id, st)) => format!("container {id} ({st}), "),
        None => String::new(),
    };
    s.push_str(&format!("{who}pid {} ({})\n", r.pid, r.comm));
    s.push_str(&format!("host: {}\n\n", r.reference.description));
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(5);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(6);
    let w2 = rows
        .iter()
        .map(|r| r.2.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(12, 60);
    s.push_str(&format!(
        "{:<w0$}  {:<w1$}  {:<w2$}  HOST\n",
        "LAYER", "STATUS", "THIS PROCESS"
    ));
    for (a, b, c, d) in &rows {
        let line = format!("{a:<w0$}  {b:<w1$}  {c:<w2$}  {d}");
        s.push_str(line.trim_end());
        s.push('\n');
    }
    let sm = &r.summary;
    s.push_str(&format!(
        "\nsummary: {} of {} layers in force{}{}\n",
        sm.in_force,
        sm.total,
        if sm.layers.is_empty() {
            String::new()
        } else {
            format!(": {}", sm.layers.join(", "))
        },
        if sm.unknown.is_empty() {
            String::new()
        } else {
            format!(" (unknown: {})", sm.unknown.join(", "))
        }
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("64m").unwrap(), 64 << 20);
        assert_eq!(parse_memory("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_memory("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_memory("10485760").unwrap(), 10 << 20);
        assert_eq!(parse_memory("1t").unwrap(), 1 << 40);
        for bad in [
            "",
            "m",
            "12q",
            "-5m",
            "1..2m",
            "lots",
            "1e3m",
            "99999999999t",
        ] {
            let e = parse_memory(bad).unwrap_err().to_string();
            assert!(e.contains("not a size"), "{bad}: {e}");
        }
        assert!(parse_memory("1m")
            .unwrap_err()
            .to_string()
            .contains("at least 6m"));
    }

    #[test]
    fn cpus_pids_durations() {
        assert_eq!(parse_cpus("--cpus", "0.5").unwrap(), 50_000);
        assert_eq!(parse_cpus("--cpus", "2").unwrap(), 200_000);
        assert!(parse_cpus("--cpus", "0").is_err());
        assert!(parse_cpus("--cpus", "0.001").is_err());
        assert!(parse_cpus("--cpus", "x").is_err());
        assert_eq!(parse_pids("10").unwrap(), 10);
        assert!(parse_pids("0").is_err());
        assert!(parse_pids("-1").is_err());
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn capabilities() {
        let d = capability_set(&[], &[]).unwrap();
        assert_eq!(d.len(), 13);
        assert!(!d.contains(&"CAP_NET_RAW".to_string()));
        let ping = capability_set(&["net_raw".into()], &[]).unwrap();
        assert!(ping.contains(&"CAP_NET_RAW".to_string()) && ping.len() == 14);
        let none = capability_set(&[], &["all".into()]).unwrap();
        assert!(none.is_empty());
        let one = capability_set(&["net_admin".into()], &["ALL".into()]).unwrap();
        assert_eq!(one, ["CAP_NET_ADMIN"]);
        let fewer = capability_set(&[], &["CAP_CHOWN".into(), "kill".into()]).unwrap();
        assert_eq!(fewer.len(), 11);
        assert!(!fewer.contains(&"CAP_KILL".to_string()));
        // "all" is every capability bulkhead itself holds.
        let own = own_bounding_set();
        let held = (0..container::capabilities::known_names().len())
            .filter(|b| own & (1 << b) != 0)
            .count();
        let all_but = capability_set(&["all".into()], &["sys_admin".into()]).unwrap();
        assert_eq!(all_but.len(), held - 1);
        let e = capability_set(&["CAP_NOPE".into()], &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--cap-add \"CAP_NOPE\": unknown capability"),
            "{e}"
        );
    }

    #[test]
    fn binds_and_paths() {
        let (src, dst, ro) = parse_bind("/etc:/mnt/etc:ro").unwrap();
        assert_eq!(src, PathBuf::from("/etc"));
        assert_eq!(dst, "/mnt/etc");
        assert!(ro);
        assert!(!parse_bind("/etc:/x").unwrap().2);
        let e = parse_bind("/no/such/dir/here:/x").unwrap_err().to_string();
        assert!(e.contains("source /no/such/dir/here"), "{e}");
        assert!(parse_bind("/etc").is_err());
        assert!(parse_bind("/etc:/x:rx").is_err());
        assert!(parse_bind("/etc:relative").is_err());
        assert!(parse_bind("/etc:/a/../b").is_err());
        assert_eq!(clean_abs("/a//b/./c/").unwrap(), "/a/b/c");
        let w = vec!["/tmp".to_string()];
        assert!(check_mount_point("/tmp/x/y", true, &w).is_ok());
        assert!(check_mount_point("/etc", true, &w).is_ok());
        assert!(check_mount_point("/etc/hostname", true, &w)
            .unwrap_err()
            .to_string()
            .contains("is a file"));
        assert!(check_mount_point("/no-such-dir-xyz", true, &w)
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
        assert!(check_mount_point("/proc/x", true, &w).is_err());
    }

    #[test]
    fn users() {
        let dir = std::env::temp_dir().join(format!("bh-sb-user-{}", std::process::id()));
        fs::create_dir_all(dir.join("etc")).unwrap();
        fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:100:a:/home/a:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            dir.join("etc/group"),
            "root:x:0:\nusers:x:100:\nstaff:x:50:\n",
        )
        .unwrap();
        assert_eq!(parse_user("--user", "1000", &dir).unwrap(), (1000, 100));
        assert_eq!(parse_user("--user", "2000", &dir).unwrap(), (2000, 2000));
        assert_eq!(parse_user("--user", "1000:7", &dir).unwrap(), (1000, 7));
        assert_eq!(parse_user("--user", "alice", &dir).unwrap(), (1000, 100));
        assert_eq!(
            parse_user("--user", "alice:staff", &dir).unwrap(),
            (1000, 50)
        );
        assert!(parse_user("--user", "bob", &dir).is_err());
        assert!(parse_user("--user", "alice:nogroup", &dir).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn environment_defaults_and_overrides() {
        let e = environment(&["A=1".into(), "PATH=/x".into(), "A=2".into()]).unwrap();
        assert!(e.contains(&"A=2".to_string()));
        assert!(!e.contains(&"A=1".to_string()));
        assert_eq!(e.iter().filter(|v| v.starts_with("PATH=")).count(), 1);
        assert!(e.contains(&"PATH=/x".to_string()));
        assert!(environment(&["=x".into()]).is_err());
        assert!(environment(&["BULKHEAD_SURELY_UNSET_VAR".into()]).is_err());
    }

    fn args(cmd: &[&str]) -> SandboxArgs {
        SandboxArgs {
            rootfs: None,
            net: "none".into(),
            seccomp_profile: Some("unconfined".into()),
            cap_add: vec![],
            cap_drop: vec![],
            memory: None,
            cpus: None,
            pids: None,
            timeout: None,
            bind: vec![],
            tmpfs: vec![],
            env: vec![],
            workdir: Some("/".into()),
            hostname: "sandbox".into(),
            user: None,
            map_root: false,
            name: Some("t1".into()),
            tty: false,
            no_tty: true,
            command: cmd.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn plan_builds_a_valid_spec() {
        let mut a = args(&["true"]);
        a.memory = Some("64m".into());
        a.pids = Some("10".into());
        a.cpus = Some("0.5".into());
        a.net = "host".into();
        a.bind = vec!["/etc:/tmp/etc:ro".into()];
        let p = plan(&a).unwrap();
        let s = &p.spec;
        let l = s.linux.as_ref().unwrap();
        assert!(!l.namespaces.iter().any(|n| n.typ == NamespaceType::Network));
        assert!(l.namespaces.iter().any(|n| n.typ == NamespaceType::Pid));
        let r = l.resources.as_ref().unwrap();
        assert_eq!(r.memory.as_ref().unwrap().limit, Some(64 << 20));
        assert_eq!(r.pids.as_ref().unwrap().limit, Some(10));
        assert_eq!(r.cpu.as_ref().unwrap().quota, Some(50_000));
        let pr = s.process.as_ref().unwrap();
        assert!(pr.no_new_privileges && !pr.terminal);
        assert_eq!(pr.args, ["true"]);
        assert!(s.root.as_ref().unwrap().readonly);
        let dests: Vec<&str> = s.mounts.iter().map(|m| m.destination.as_str()).collect();
        let tmp = dests.iter().position(|d| *d == "/tmp").unwrap();
        let bind = dests.iter().position(|d| *d == "/tmp/etc").unwrap();
        assert!(
            tmp < bind,
            "the bind under /tmp comes after the tmpfs: {dests:?}"
        );
        assert!(dests.contains(&"/run"));
        assert!(l.seccomp.is_none());
    }

    #[test]
    fn plan_terminal() {
        let p = plan(&args(&["sh"])).unwrap();
        assert!(!p.spec.process.as_ref().unwrap().terminal);
        let mut a = args(&["sh"]);
        (a.tty, a.no_tty) = (true, false);
        let p = plan(&a).unwrap();
        let pr = p.spec.process.as_ref().unwrap();
        assert!(pr.terminal);
        oci::validate(&p.spec).unwrap();
    }

    #[test]
    fn plan_refusals() {
        let e = plan(&args(&[])).unwrap_err().to_string();
        assert!(e.starts_with("missing command"), "{e}");
        let mut a = args(&["true"]);
        a.seccomp_profile = Some("/no/such/profile.json".into());
        let e = plan(&a).unwrap_err().to_string();
        assert!(
            e.contains("--seccomp-profile /no/such/profile.json: no such file"),
            "{e}"
        );
        let mut a = args(&["true"]);
        a.name = Some("../x".into());
        assert!(plan(&a).is_err());
        let mut a = args(&["true"]);
        a.workdir = Some("relative".into());
        assert!(plan(&a).is_err());
    }

    #[test]
    fn default_profile_is_bulkheads_own_for_the_sandbox_caps() {
        let mut a = args(&["true"]);
        a.seccomp_profile = None;
        let p = plan(&a).unwrap();
        let sc = p.spec.linux.as_ref().unwrap().seccomp.as_ref().unwrap();
        let caps = capability_set(&[], &[]).unwrap();
        assert_eq!(*sc, seccomp::default_profile::profile(&caps));
        seccomp::compile(sc).unwrap();
    }

    #[test]
    fn podman_profile_converts_for_the_sandbox_caps() {
        let path = Path::new(seccomp::profile::PODMAN_PROFILE_PATH);
        if !path.exists() {
            eprintln!("skipped: {} is not installed", path.display());
            return;
        }
        let mut a = args(&["true"]);
        a.seccomp_profile = Some(path.display().to_string());
        let p = plan(&a).unwrap();
        let sc = p.spec.linux.as_ref().unwrap().seccomp.as_ref().unwrap();
        assert!(!sc.syscalls.is_empty());
        // Compiles with the runtime's compiler.
        seccomp::compile(sc).unwrap();
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(64.0 * 1024.0 * 1024.0), "64 MiB");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(10.0), "10 B");
    }

    #[test]
    fn signal_handlers() {
        // The test process has no SIGUSR2 handler... unless the harness adds one.
        let me = std::process::id() as i32;
        let s = fs::read_to_string("/proc/self/status").unwrap();
        let cgt = s
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap();
        for sig in [libc::SIGINT, libc::SIGUSR2, libc::SIGTERM] {
            assert_eq!(catches(me, sig), cgt & (1 << (sig - 1)) != 0);
        }
        assert!(!catches(i32::MAX, libc::SIGINT));
    }
}
