//! The `bulkhead` command line: clap definitions and a thin call into the
//! libraries for each subcommand. Flags follow runc's, because engines
//! (podman, containerd) call the runtime with runc's command line.

mod cgroup_cmds;
mod exec_cmd;
mod features;
mod log;
mod oci_cmds;
mod probe_cmd;
mod sandbox;
mod vm;
mod vm_cmds;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "bulkhead",
    version,
    about = "OCI container runtime and KVM micro-VM monitor",
    disable_help_subcommand = true
)]
struct Cli {
    /// State directory for containers [default: /run/bulkhead; for an unprivileged
    /// user $XDG_RUNTIME_DIR/bulkhead, else /run/user/UID/bulkhead or /tmp/bulkhead-UID].
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Write log lines to this file (default: stderr).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Log line format [default: text (runc's), or plain `bulkhead: warning: ...`
    /// lines when stderr is a terminal and --log is not given].
    #[arg(long = "log-format", global = true, value_enum)]
    log_format: Option<log::Format>,
    /// Log debug messages too.
    #[arg(long, global = true)]
    debug: bool,
    /// Use systemd to manage cgroups (not supported: bulkhead drives cgroupfs).
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    /// Run the containers `create` and `run` make in a micro-VM (as the config
    /// annotation run.bulkhead.vm=true does).
    #[arg(long, global = true)]
    vm: bool,
    /// Hypervisor of those VMs: builtin or qemu (default: builtin where KVM is
    /// hardware-backed, else qemu; the annotation run.bulkhead.vm.backend wins).
    #[arg(long = "vm-backend", global = true, value_name = "builtin|qemu")]
    vm_backend: Option<String>,
    /// Guest image directory (default: the one `vm image build` made last; the annotation
    /// run.bulkhead.vm.image wins).
    #[arg(long = "vm-image", global = true, value_name = "DIR")]
    vm_image: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
enum Command {
    /// Create a container from a bundle; its process waits for `start`.
    Create(oci_cmds::CreateArgs),
    /// Run the user process of a created container.
    Start(oci_cmds::IdArg),
    /// Create and start a container; wait for it unless --detach.
    Run(oci_cmds::RunArgs),
    /// Run a process in a running container.
    Exec(exec_cmd::ExecArgs),
    /// Print the OCI state of a container as JSON.
    State(oci_cmds::IdArg),
    /// Send a signal to a container's init (or to all its processes).
    Kill(oci_cmds::KillArgs),
    /// Delete a container and release its resources.
    Delete(oci_cmds::DeleteArgs),
    /// List containers.
    #[command(alias = "ls")]
    List(oci_cmds::ListArgs),
    /// Write a default config.json into a bundle directory.
    Spec(oci_cmds::SpecArgs),
    /// Print the OCI features document of this runtime.
    Features,
    /// Freeze every process of a container.
    Pause(oci_cmds::IdArg),
    /// Thaw a paused container.
    Resume(oci_cmds::IdArg),
    /// Change a container's resource limits.
    Update(cgroup_cmds::UpdateArgs),
    /// Resource usage and OOM events of a container (runc's JSON shape).
    Events(cgroup_cmds::EventsArgs),
    /// List the processes of a container.
    Ps(cgroup_cmds::PsArgs),
    /// Run one command isolated, with good defaults and no bundle.
    Sandbox(sandbox::SandboxArgs),
    /// Show the isolation layers around a container or process.
    Inspect(sandbox::InspectArgs),
    /// Try each operation a container breakout needs; report what gets through.
    Probe(probe_cmd::ProbeArgs),
    /// Micro-VM commands.
    Vm(vm::VmArgs),
    /// The guest agent: PID 1 of a bulkhead micro-VM (the guest image's /init).
    Agent,
}

/// An error that ends the process with a specific exit code (the message is
/// printed and logged like any other error).
#[derive(Debug)]
pub struct ExitWith {
    pub code: i32,
    pub message: String,
}

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExitWith {}

pub fn main() -> i32 {
    if vm_cmds::started_as_guest_init() {
        return report(vm_cmds::agent(), false);
    }
    let cli = Cli::parse();
    let format = log::Format::choose(
        cli.log.as_deref(),
        cli.log_format,
        rustix::termios::isatty(rustix::stdio::stderr()),
    );
    if let Err(e) = log::Logger::install(cli.log.as_deref(), format, cli.debug) {
        eprintln!(
            "bulkhead: --log {}: {e}",
            cli.log.as_deref().unwrap_or("".as_ref()).display()
        );
        return 1;
    }
    // The state root is found (and, for a user without XDG_RUNTIME_DIR, checked) only by
    // the commands that use it.
    let root = || -> anyhow::Result<PathBuf> {
        Ok(match &cli.root {
            Some(r) => r.clone(),
            None => container::state::default_root()?,
        })
    };
    let rt = || -> anyhow::Result<container::Runtime> { Ok(container::Runtime::new(root()?)) };
    let vm = || -> anyhow::Result<vmruntime::host::lifecycle::VmRuntime> {
        Ok(vm_cmds::runtime(&root()?))
    };
    let over = match vm_cmds::overrides(cli.vm_backend.as_deref(), cli.vm_image.clone()) {
        Ok(o) => o,
        Err(e) => return report(Err(e), cli.log.is_some()),
    };
    let res = if cli.systemd_cgroup {
        Err(anyhow::anyhow!("--systemd-cgroup: the systemd cgroup driver is not supported; bulkhead manages cgroupfs directly"))
    } else {
        (|| match cli.command {
            Command::Create(a) => oci_cmds::create(&rt()?, &vm()?, &over, a, cli.vm),
            Command::Start(a) => oci_cmds::start(&rt()?, &vm()?, a),
            Command::Run(a) => oci_cmds::run(&rt()?, &vm()?, &over, a, cli.vm),
            Command::Exec(a) => exec_cmd::exec(&rt()?, &vm()?, a),
            Command::State(a) => oci_cmds::state(&rt()?, a),
            Command::Kill(a) => oci_cmds::kill(&rt()?, &vm()?, a),
            Command::Delete(a) => oci_cmds::delete(&rt()?, a),
            Command::List(a) => oci_cmds::list(&rt()?, a),
            Command::Pause(a) => oci_cmds::pause(&rt()?, a, true),
            Command::Resume(a) => oci_cmds::pause(&rt()?, a, false),
            Command::Update(a) if vm()?.is_vm(&a.id) => Err(anyhow::anyhow!(
                "update: container {:?} runs in a VM; its limits cannot be changed after create",
                a.id
            )),
            Command::Update(a) => cgroup_cmds::update(&rt()?, a),
            Command::Events(a) => cgroup_cmds::events(&rt()?, a),
            Command::Ps(a) if vm()?.is_vm(&a.id) => vm_cmds::ps(&vm()?, &a),
            Command::Ps(a) => cgroup_cmds::ps(&rt()?, a),
            Command::Sandbox(a) if cli.vm => sandbox::vm::sandbox(&rt()?, &vm()?, &over, a),
            Command::Sandbox(a) => sandbox::sandbox(&rt()?, a),
            Command::Inspect(a) => sandbox::inspect(&rt()?, a),
            Command::Spec(a) => oci_cmds::spec(a),
            Command::Features => features::print(),
            Command::Probe(a) => probe_cmd::probe(a),
            Command::Vm(vm::VmArgs { command }) => vm::main(command),
            Command::Agent => vm_cmds::agent(),
        })()
    };
    report(res, cli.log.is_some())
}

/// Print an error (and log it, when logging to a file) and give the exit code.
fn report(res: anyhow::Result<i32>, logged: bool) -> i32 {
    match res {
        Ok(code) => code,
        Err(e) => {
            let text = format!("{e:#}");
            // The log file (if any) gets the error for engines; the terminal always does.
            if logged {
                tracing::error!("{text}");
            }
            eprintln!("bulkhead: {text}");
            e.downcast_ref::<ExitWith>().map_or(1, |x| x.code)
        }
    }
}
