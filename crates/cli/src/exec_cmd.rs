//! `exec`: runc's flags, building the process from the container's own
//! `process` (or `--process FILE`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use container::exec::ExecOptions;
use container::Runtime;
use vmruntime::host::lifecycle::VmRuntime;

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Path to a process.json (the `process` object of config.json).
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Allocate a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Unix socket that receives the pty master (with --tty).
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Working directory in the container.
    #[arg(long)]
    pub cwd: Option<String>,
    /// Set an environment variable (NAME=value); repeatable.
    #[arg(short, long)]
    pub env: Vec<String>,
    /// UID[:GID] to run as.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Additional group ids; repeatable.
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<u32>,
    /// Add a capability (to the bounding, effective and permitted sets); repeatable.
    #[arg(short, long)]
    pub cap: Vec<String>,
    /// Set no_new_privs.
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    /// AppArmor profile for the process.
    #[arg(long)]
    pub apparmor: Option<String>,
    /// SELinux label for the process.
    #[arg(long = "process-label")]
    pub process_label: Option<String>,
    /// Return once the process has started.
    #[arg(short, long)]
    pub detach: bool,
    /// Write the process's pid to this file.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Pass this many extra fds (from 3 on) to the process.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Run in this sub-cgroup of the container's (cgroup v2).
    #[arg(long)]
    pub cgroup: Option<String>,
    /// Accepted for runc compatibility (exec into a paused container is refused).
    #[arg(long = "ignore-paused")]
    pub ignore_paused: bool,
    /// Container ID.
    pub id: String,
    /// The command and its arguments (when not using --process).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub fn exec(rt: &Runtime, vm: &VmRuntime, a: ExecArgs) -> Result<i32> {
    let process = match &a.process {
        Some(path) => {
            if !a.command.is_empty() {
                bail!("exec: give either --process or a command, not both");
            }
            oci::Process::load(path)?
        }
        None => {
            if a.command.is_empty() {
                bail!("exec: no command given (and no --process)");
            }
            let spec = rt.config(&a.id)?;
            let mut p = spec.process.unwrap_or_default();
            p.args = a.command.clone();
            p.terminal = a.tty;
            p.console_size = None;
            if let Some(cwd) = &a.cwd {
                p.cwd = cwd.clone();
            }
            p.env.extend(a.env.iter().cloned());
            if let Some(u) = &a.user {
                let (uid, gid) = match u.split_once(':') {
                    Some((u, g)) => (
                        u.parse().context("--user UID")?,
                        g.parse().context("--user GID")?,
                    ),
                    None => (u.parse().context("--user UID")?, 0),
                };
                p.user.uid = uid;
                p.user.gid = gid;
            }
            if !a.additional_gids.is_empty() {
                p.user.additional_gids = a.additional_gids.clone();
            }
            if !a.cap.is_empty() {
                let caps = p.capabilities.get_or_insert_with(Default::default);
                for c in &a.cap {
                    for set in [&mut caps.bounding, &mut caps.effective, &mut caps.permitted] {
                        let v = set.get_or_insert_with(Vec::new);
                        if !v.contains(c) {
                            v.push(c.clone());
                        }
                    }
                }
            }
            if a.no_new_privs {
                p.no_new_privileges = true;
            }
            if a.apparmor.is_some() {
                p.apparmor_profile = a.apparmor.clone();
            }
            if a.process_label.is_some() {
                p.selinux_label = a.process_label.clone();
            }
            p
        }
    };
    let opts = ExecOptions {
        process,
        console_socket: a.console_socket,
        detach: a.detach,
        pid_file: a.pid_file,
        preserve_fds: a.preserve_fds,
        cgroup: a.cgroup,
        console_fd: None,
        stdio: None,
    };
    if vm.is_vm(&a.id) {
        return crate::vm_cmds::exec(vm, &a.id, &opts);
    }
    Ok(rt.exec(&a.id, &opts)?)
}
