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
    #[arg(long)]
    root: Option<PathBuf>,
    /// Write log lines to this file (default: stderr).
    #[arg(long)]
    log: Option<PathBuf>,
    /// Log line format [default: text (runc's), or plain `bulkhead: warning: ...`
    /// lines when stderr is a terminal and --log is not given].
    #[arg(long = "log-format", value_enum)]
    log_format: Option<log::Format>,
    /// Log debug messages too.
    #[arg(long)]
    debug: bool,
    /// Use systemd to manage cgroups (not supported: bulkhead drives cgroupfs).
    #[arg(long = "systemd-cgroup")]
    systemd_cgroup: bool,
    /// Run the containers `create` and `run` make in a micro-VM (as the config
    /// annotation run.bulkhead.vm=true does).
    #[arg(long)]
    vm: bool,
    /// Hypervisor of those VMs: builtin or qemu (default: builtin where KVM is
    /// hardware-backed, else qemu; the annotation run.bulkhead.vm.backend wins).
    #[arg(long = "vm-backend", value_name = "builtin|qemu")]
    vm_backend: Option<String>,
    /// Guest image directory (default: the one `vm image build` made last; the annotation
    /// run.bulkhead.vm.image wins).
    #[arg(long = "vm-image", value_name = "DIR")]
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

/// Parses the command line. The top-level options may also follow the subcommand
/// (`bulkhead sandbox --vm ...`), as clap's global args allow; but clap copies every global
/// arg into every subcommand as it builds the command, ~110 KiB of heap in each runtime
/// process with this many subcommands, paid three times per container start. So the options
/// are declared on the top level only and copied, as globals, into the one subcommand the
/// command line names (clap then carries their values up to the top level).
fn parse_args() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut cmd = Cli::command();
    if let Some(name) = subcommand_named(&cmd, argv.get(1..).unwrap_or_default()) {
        let globals: Vec<clap::Arg> = cmd
            .get_arguments()
            .map(|a| a.clone().global(true))
            .collect();
        // They keep their top-level places in the subcommand's help, and its own options
        // theirs (added with clap's display-order counter off), as with clap's propagation.
        cmd = cmd.mut_subcommand(name, |sc| {
            sc.next_display_order(None)
                .args(globals)
                .next_display_order(0)
        });
    }
    let matches = cmd.get_matches_from(argv);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// The subcommand `args` name: the first word that is neither a top-level option nor the
/// value of one. `None` if there is none; clap then says what is wrong.
fn subcommand_named(cmd: &clap::Command, args: &[std::ffi::OsString]) -> Option<String> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let arg = arg.to_str()?;
        if let Some(long) = arg.strip_prefix("--") {
            let takes_value = cmd
                .get_arguments()
                .any(|a| a.get_long() == Some(long) && a.get_action().takes_values());
            if takes_value {
                args.next();
            }
        } else if !arg.starts_with('-') {
            return cmd.find_subcommand(arg).map(|s| s.get_name().to_owned());
        }
    }
    None
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
    let cli = parse_args();
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
