//! The OCI runtime commands (runtime.md "Operations" + runc's command line).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use container::{CreateOptions, Runtime};
use vmruntime::host::lifecycle::VmRuntime;
use vmruntime::host::plan::Overrides;

#[derive(Args, Debug)]
pub struct IdArg {
    /// Container ID.
    pub id: String,
}

#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    /// Path to the bundle (the directory holding config.json).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Write the container's init pid to this file.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master when process.terminal is true.
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Do not use pivot_root (for a ramfs root): MS_MOVE + chroot instead.
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Accepted for runc compatibility: bulkhead never creates a session keyring.
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// Pass this many extra fds (from 3 on) to the container.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Container ID.
    pub id: String,
}

impl CreateArgs {
    fn options(&self) -> CreateOptions {
        CreateOptions {
            bundle: self.bundle.clone(),
            spec: None,
            pid_file: self.pid_file.clone(),
            console_socket: self.console_socket.clone(),
            console_fd: None,
            no_pivot: self.no_pivot,
            preserve_fds: self.preserve_fds,
            stdio: None,
            no_cgroup: false,
        }
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub create: CreateArgs,
    /// Return once the container has started instead of waiting for it.
    #[arg(short, long)]
    pub detach: bool,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Container ID.
    pub id: String,
    /// Signal name or number (default SIGTERM).
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
    /// Signal every process of the container, not only its init.
    #[arg(short, long)]
    pub all: bool,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Kill the container first if it is running.
    #[arg(short, long)]
    pub force: bool,
    /// Container ID.
    pub id: String,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Output format.
    #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
    /// Print only IDs.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct SpecArgs {
    /// Bundle directory to write config.json into.
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// A spec for an unprivileged user: a user namespace mapping you to root.
    #[arg(long)]
    pub rootless: bool,
    /// seccomp profile: bulkhead's built-in default unless a containers/podman
    /// profile FILE (e.g. /usr/share/containers/seccomp.json, converted for the
    /// spec's capabilities) or "unconfined" (no filter) is given.
    #[arg(long = "seccomp-profile", value_name = "FILE")]
    pub seccomp_profile: Option<String>,
}

pub fn create(
    rt: &Runtime,
    vm: &VmRuntime,
    over: &Overrides,
    a: CreateArgs,
    force_vm: bool,
) -> Result<i32> {
    let opts = a.options();
    if VmRuntime::wants_vm(&opts, force_vm)? {
        vm.create(&a.id, &opts, over)?;
        return Ok(0);
    }
    rt.create(&a.id, &opts)?;
    Ok(0)
}

pub fn start(rt: &Runtime, vm: &VmRuntime, a: IdArg) -> Result<i32> {
    if vm.is_vm(&a.id) {
        vm.start(&a.id)?;
    } else {
        rt.start(&a.id)?;
    }
    Ok(0)
}

pub fn run(
    rt: &Runtime,
    vm: &VmRuntime,
    over: &Overrides,
    a: RunArgs,
    force_vm: bool,
) -> Result<i32> {
    let opts = a.create.options();
    if VmRuntime::wants_vm(&opts, force_vm)? {
        return Ok(vm.run(&a.create.id, &opts, over, a.detach)?);
    }
    Ok(rt.run(&a.create.id, &opts, a.detach)?)
}

pub fn state(rt: &Runtime, a: IdArg) -> Result<i32> {
    let r = rt.state(&a.id)?;
    println!("{}", serde_json::to_string_pretty(&r)?);
    Ok(0)
}

pub fn kill(rt: &Runtime, vm: &VmRuntime, a: KillArgs) -> Result<i32> {
    let sig = container::parse_signal(&a.signal)?;
    if vm.is_vm(&a.id) {
        vm.kill(&a.id, sig, a.all)?;
    } else {
        rt.kill(&a.id, sig, a.all)?;
    }
    Ok(0)
}

pub fn delete(rt: &Runtime, a: DeleteArgs) -> Result<i32> {
    rt.delete(&a.id, a.force)?;
    Ok(0)
}

pub fn pause(rt: &Runtime, a: IdArg, pause: bool) -> Result<i32> {
    rt.set_paused(&a.id, pause)?;
    Ok(0)
}

pub fn list(rt: &Runtime, a: ListArgs) -> Result<i32> {
    let all = rt.list()?;
    let mut out = std::io::stdout().lock();
    if a.quiet {
        for r in &all {
            writeln!(out, "{}", r.id)?;
        }
    } else if a.format == "json" {
        writeln!(out, "{}", serde_json::to_string(&all)?)?;
    } else {
        writeln!(
            out,
            "{:<24} {:<8} {:<10} {:<40} {:<31} OWNER",
            "ID", "PID", "STATUS", "BUNDLE", "CREATED"
        )?;
        for r in &all {
            writeln!(
                out,
                "{:<24} {:<8} {:<10} {:<40} {:<31} {}",
                r.id,
                r.pid,
                r.status,
                r.bundle,
                r.created,
                if r.owner.is_empty() { "root" } else { &r.owner }
            )?;
        }
    }
    Ok(0)
}

pub fn spec(a: SpecArgs) -> Result<i32> {
    let path = a.bundle.join("config.json");
    if path.exists() {
        bail!("{} already exists; remove it first", path.display());
    }
    let ids = a.rootless.then(|| {
        (
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        )
    });
    let mut spec = oci::default_spec(ids);
    let caps = oci::SPEC_CAPS.map(String::from);
    spec.linux.get_or_insert_with(Default::default).seccomp =
        seccomp_choice(a.seccomp_profile.as_deref(), &caps)?;
    let text = serde_json::to_string_pretty(&spec)?;
    std::fs::write(&path, text + "\n").with_context(|| format!("write {}", path.display()))?;
    Ok(0)
}

/// `--seccomp-profile` of `spec` and `sandbox`: None = bulkhead's default profile, "unconfined"
/// = no filter, else a containers/podman profile file converted for the bounding set `caps`.
pub fn seccomp_choice(arg: Option<&str>, caps: &[String]) -> Result<Option<oci::Seccomp>> {
    match arg {
        None => Ok(Some(seccomp::default_profile::profile(caps))),
        Some("unconfined") => Ok(None),
        Some(file) => {
            let path = std::path::Path::new(file);
            if !path.exists() {
                bail!(
                    "--seccomp-profile {file}: no such file (podman's profile is {}, installed with podman; \"unconfined\" runs without a filter; without the option bulkhead's default profile applies)",
                    seccomp::profile::PODMAN_PROFILE_PATH
                );
            }
            let sc = seccomp::profile::load_containers_profile(path, caps)
                .with_context(|| format!("--seccomp-profile {file}"))?;
            Ok(Some(sc))
        }
    }
}
