//! `bulkhead vm ...`: the micro-VM monitor's command line (glue over the `vmm` crate).
//!
//! Flags and `--config FILE.json` describe the same [`vmm::VmConfig`]; flags given on the
//! command line override the file's values, and list flags (`--disk`, `--net`) add to the
//! file's lists. `restore` runs a snapshot with the same jail flags; `pause`, `resume`,
//! `status`, `shutdown` and `snapshot` are clients of a running VM's `--api-socket`.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

// `bulkhead vm`'s arguments. A struct around the subcommands rather than a nested
// `#[command(subcommand)]` variant: clap's `defer` then covers it, so a container command
// does not build the dozens of VM arguments (heap, stack and code it would touch at every
// start), and `defer` on `VmCommand` builds only the VM command given. (Plain comments, not
// doc comments: clap would take those for the help text.)
#[derive(Args, Debug)]
pub struct VmArgs {
    #[command(subcommand)]
    pub command: VmCommand,
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum VmCommand {
    /// Boot a micro-VM from a kernel image and run it to completion.
    Run(RunArgs),
    /// Run a micro-VM from a snapshot (bulkhead vm snapshot), where it was.
    Restore(RestoreArgs),
    /// Pause a running VM's vCPUs (through its API socket).
    Pause(ApiArgs),
    /// Let a paused VM run again.
    Resume(ApiArgs),
    /// Print a running VM's state, uptime and device counters (JSON).
    Status(ApiArgs),
    /// Ask the guest to shut down (Ctrl+Alt+Del); stop the VM if it does not.
    Shutdown(ShutdownArgs),
    /// Pause a running VM and write a snapshot of it (it stays paused until resumed).
    Snapshot(SnapshotArgs),
    /// Write the full memory file of a diff snapshot: the diff's pages over a copy of the
    /// memory file of the snapshot it follows (then `vm restore` the diff's state with it).
    MergeSnapshot(MergeArgs),
    /// The guest image VM-backed containers boot.
    #[command(subcommand)]
    Image(ImageCommand),
}

#[derive(Args, Debug)]
pub struct ApiArgs {
    /// The VM's control socket (`vm run --api-socket`).
    #[arg(long, value_name = "PATH")]
    pub api_socket: PathBuf,
}

#[derive(Args, Debug)]
pub struct ShutdownArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Seconds the guest gets to shut down before the VM is stopped.
    #[arg(long, value_name = "SECONDS", default_value = "10")]
    pub timeout: f64,
}

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The state file to write (registers, devices, configuration).
    #[arg(long, value_name = "STATE_FILE")]
    pub snapshot: PathBuf,
    /// The memory file to write (guest RAM).
    #[arg(long, value_name = "MEM_FILE")]
    pub mem: PathBuf,
    /// Write only the pages written since the previous snapshot (or the restore) into the
    /// memory file, as a sparse file (needs `vm run --track-dirty-pages`).
    #[arg(long)]
    pub diff: bool,
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The full memory file of the snapshot the diff follows (read, not changed).
    #[arg(long, value_name = "MEM_FILE")]
    pub base: PathBuf,
    /// The diff snapshot's memory file.
    #[arg(long, value_name = "DIFF_MEM_FILE")]
    pub diff: PathBuf,
    /// The full memory file to write (a new file).
    #[arg(long, value_name = "MEM_FILE")]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The state file of the snapshot.
    #[arg(long, value_name = "STATE_FILE")]
    pub snapshot: PathBuf,
    /// Its memory file (mapped, not copied: keep it unchanged while the VM runs).
    #[arg(long, value_name = "MEM_FILE")]
    pub mem: PathBuf,
    /// Start the vCPUs at once (otherwise the VM waits paused for `vm resume`).
    #[arg(long)]
    pub resume: bool,
    /// The restored VM's control socket.
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
    /// Write the serial console to FILE instead of stdout (stdin is then not connected).
    #[arg(long, value_name = "FILE")]
    pub console: Option<PathBuf>,
    /// Track written pages for diff snapshots (a snapshot taken with it keeps it anyway).
    #[arg(long)]
    pub track_dirty_pages: bool,
    #[command(flatten)]
    pub jail: JailArgs,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Build (or find cached) the guest image: a kernel and an initramfs whose /init is a
    /// static bulkhead; it becomes the default image.
    Build(crate::vm_cmds::ImageBuildArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// JSON VM config (same fields as the flags; see docs/vm.md).
    #[arg(long, value_name = "FILE.json")]
    pub config: Option<PathBuf>,
    /// Kernel image: bzImage, or ELF vmlinux (64-bit entry, or PVH with --boot-protocol pvh).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk.
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line (default: "console=ttyS0 reboot=k panic=1 pci=off").
    #[arg(long)]
    pub cmdline: Option<String>,
    /// Number of vCPUs.
    #[arg(long)]
    pub cpus: Option<u8>,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MiB")]
    pub memory: Option<u64>,
    /// virtio-blk disk backed by a raw file; repeatable.
    #[arg(long, value_name = "PATH[,ro]")]
    pub disk: Vec<vmm::DiskConfig>,
    /// virtio-net device on a host tap interface; repeatable.
    #[arg(long, value_name = "tap=NAME[,mac=MAC]")]
    pub net: Vec<vmm::NetConfig>,
    /// virtio-vsock device; host side is a Unix socket (Firecracker's hybrid vsock).
    #[arg(long, value_name = "CID,uds=PATH")]
    pub vsock: Option<vmm::VsockConfig>,
    /// virtio-rng device fed from the host's getrandom().
    #[arg(long)]
    pub rng: bool,
    /// Write the serial console to FILE instead of stdout (stdin is then not connected).
    #[arg(long, value_name = "FILE")]
    pub console: Option<PathBuf>,
    /// How to enter an ELF kernel: linux (64-bit boot protocol) or pvh.
    #[arg(long, value_name = "linux|pvh")]
    pub boot_protocol: Option<vmm::BootProtocol>,
    /// A control socket for the running VM: pause, resume, status, snapshot, shutdown
    /// (docs/vm-api.md).
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
    /// Track the pages the guest and the devices write, for `vm snapshot --diff` (costs the
    /// guest KVM's write-protection faults; off by default).
    #[arg(long)]
    pub track_dirty_pages: bool,
    /// Give the VM the legacy i8254 PIT, for guest kernels without kvmclock (off by default:
    /// Linux with CONFIG_KVM_GUEST does not use it, and tearing it down costs ~15 ms).
    #[arg(long)]
    pub pit: bool,
    #[command(flatten)]
    pub jail: JailArgs,
}

// How the VMM is jailed (`run` and `restore`). A plain comment: as a doc comment, clap would
// make it the help text of the (deferred) commands that flatten these flags.
#[derive(Args, Debug)]
pub struct JailArgs {
    /// Run the VMM unconfined (as the caller, with every capability, the host's filesystem and
    /// no seccomp filter): for debugging only.
    #[arg(long)]
    pub no_jail: bool,
    /// The jailed VMM's user: a uid or a name from /etc/passwd (default 77777, an id no account
    /// uses).
    #[arg(long, value_name = "UID|NAME", conflicts_with = "no_jail")]
    pub jail_uid: Option<String>,
    /// The jailed VMM's group: a gid or a name from /etc/group (default: the user's primary
    /// group, else 77777).
    #[arg(long, value_name = "GID|NAME", conflicts_with = "no_jail")]
    pub jail_gid: Option<String>,
    /// Parent of the VM's cgroup, vm-<id> (absolute, or relative to bulkhead's own cgroup).
    #[arg(long, value_name = "PATH", default_value = jail::DEFAULT_CGROUP_PARENT, conflicts_with = "no_jail")]
    pub cgroup_parent: String,
    /// CPU limit of the jailed VMM, in CPUs (e.g. 0.5, 2).
    #[arg(long, value_name = "N", conflicts_with = "no_jail")]
    pub jail_cpus: Option<String>,
    /// Print the isolation layers around the jailed VMM (bulkhead inspect) on stderr once the
    /// jail is complete.
    #[arg(long, conflicts_with = "no_jail")]
    pub jail_report: bool,
}

/// How the VMM is confined, from the flags.
enum Confinement {
    None,
    Jail {
        opts: vmm::jailed::JailOptions,
        report: bool,
    },
}

impl JailArgs {
    fn confinement(&self) -> anyhow::Result<Confinement> {
        if self.no_jail {
            return Ok(Confinement::None);
        }
        let root = std::path::Path::new("/");
        let (uid, primary) = match &self.jail_uid {
            Some(u) => crate::sandbox::parse_user("--jail-uid", u, root)?,
            None => (jail::DEFAULT_ID, jail::DEFAULT_ID),
        };
        let gid = match &self.jail_gid {
            Some(g) => crate::sandbox::group_id(g, root)
                .ok_or_else(|| anyhow::anyhow!("--jail-gid {g:?}: no group {g:?} in /etc/group"))?,
            None => primary,
        };
        let cpu_quota = self
            .jail_cpus
            .as_deref()
            .map(|c| crate::sandbox::parse_cpus("--jail-cpus", c))
            .transpose()?;
        Ok(Confinement::Jail {
            opts: vmm::jailed::JailOptions {
                id: crate::sandbox::random_hex()?,
                uid,
                gid,
                cgroup_parent: self.cgroup_parent.clone(),
                cpu_quota,
                // The VMM writes its log lines itself.
                keep_fds: crate::log::log_fd().into_iter().collect(),
            },
            report: self.jail_report,
        })
    }
}

impl RunArgs {
    fn into_config(self) -> anyhow::Result<vmm::VmConfig> {
        let mut config = match (&self.config, &self.kernel) {
            (Some(path), _) => vmm::VmConfig::from_json_file(path)?,
            (None, Some(kernel)) => vmm::VmConfig::new(kernel),
            (None, None) => anyhow::bail!("vm run: --kernel or --config is required"),
        };
        if let Some(k) = self.kernel {
            config.kernel = k;
        }
        if self.initrd.is_some() {
            config.initrd = self.initrd;
        }
        if let Some(c) = self.cmdline {
            config.cmdline = c;
        }
        if let Some(c) = self.cpus {
            config.cpus = c;
        }
        if let Some(m) = self.memory {
            config.memory_mib = m;
        }
        config.disks.extend(self.disk);
        config.net.extend(self.net);
        if self.vsock.is_some() {
            config.vsock = self.vsock;
        }
        config.rng |= self.rng;
        if self.console.is_some() {
            config.console = self.console;
        }
        if let Some(p) = self.boot_protocol {
            config.boot_protocol = p;
        }
        if self.api_socket.is_some() {
            config.api_socket = self.api_socket;
        }
        config.track_dirty_pages |= self.track_dirty_pages;
        config.pit |= self.pit;
        Ok(config)
    }
}

/// Logging goes through the process-wide `tracing` subscriber the CLI installs (`--log`,
/// `--debug`); the boot measurements are printed on stderr in any case (by the VMM process
/// itself when it is jailed), because they are the VMM's main report and must not depend on
/// the log level.
pub fn main(cmd: VmCommand) -> anyhow::Result<i32> {
    vmm::logger::mark_process_start();
    match cmd {
        VmCommand::Image(ImageCommand::Build(a)) => crate::vm_cmds::image_build(a),
        VmCommand::Run(args) => {
            let confinement = args.jail.confinement()?;
            let config = args.into_config()?;
            match confinement {
                Confinement::None => {
                    warn_unjailed();
                    let report = vmm::Vm::new(&config)?.run()?;
                    eprintln!("{report}");
                    Ok(0)
                }
                Confinement::Jail { opts, report } => {
                    run_jailed(&vmm::jailed::Source::Boot(&config), &opts, report)
                }
            }
        }
        VmCommand::Restore(args) => restore(args),
        VmCommand::Pause(a) => api_call(&a.api_socket, vmm::api::Op::Pause),
        VmCommand::Resume(a) => api_call(&a.api_socket, vmm::api::Op::Resume),
        VmCommand::Status(a) => api_call(&a.api_socket, vmm::api::Op::Status),
        VmCommand::Shutdown(a) => {
            if !(a.timeout.is_finite() && a.timeout >= 0.0) {
                anyhow::bail!(
                    "vm shutdown: --timeout {}: not a number of seconds",
                    a.timeout
                );
            }
            let timeout_ms = Some((a.timeout * 1000.0) as u64);
            api_call(&a.api.api_socket, vmm::api::Op::Shutdown { timeout_ms })
        }
        VmCommand::Snapshot(a) => {
            let report =
                vmm::api::client::snapshot(&a.api.api_socket, &a.snapshot, &a.mem, a.diff)?;
            println!("{report}");
            Ok(0)
        }
        VmCommand::MergeSnapshot(a) => {
            let merged = vmm::snapshot::memory::merge(&a.base, &a.diff, &a.out)
                .map_err(|e| anyhow::anyhow!("vm merge-snapshot: {e}"))?;
            println!("{}", serde_json::to_string(&merged)?);
            Ok(0)
        }
    }
}

fn warn_unjailed() {
    eprintln!(
        "bulkhead vm: --no-jail: the VMM runs unconfined, as the caller, with every \
         capability, the host's filesystem and no seccomp filter"
    );
}

/// One request on a VM's API socket; its answer (JSON) on stdout.
fn api_call(socket: &Path, op: vmm::api::Op) -> anyhow::Result<i32> {
    let answer = vmm::api::client::request(socket, op, &[])?;
    println!("{answer}");
    Ok(0)
}

/// `vm restore`: every check on the snapshot (checksum, version, CPU, memory file, devices)
/// before anything is created; then the VM runs as `vm run` would.
fn restore(args: RestoreArgs) -> anyhow::Result<i32> {
    if !args.resume && args.api_socket.is_none() {
        anyhow::bail!(
            "vm restore: --resume or --api-socket is required (a paused VM without an API \
             socket could never be resumed)"
        );
    }
    let confinement = args.jail.confinement()?;
    let mut snapshot = vmm::Restore::open(&args.snapshot, &args.mem)?;
    snapshot.state.config.track_dirty_pages |= args.track_dirty_pages;
    match confinement {
        Confinement::None => {
            warn_unjailed();
            let vm =
                vmm::Vm::restore_with(&snapshot, args.console, args.api_socket, args.resume, None)?;
            eprintln!("{}", vm.run()?);
            Ok(0)
        }
        Confinement::Jail { opts, report } => {
            let source = vmm::jailed::Source::Restore {
                snapshot: &snapshot,
                console: args.console,
                api_socket: args.api_socket,
                resume: args.resume,
            };
            run_jailed(&source, &opts, report)
        }
    }
}

fn run_jailed(
    source: &vmm::jailed::Source<'_>,
    opts: &vmm::jailed::JailOptions,
    report: bool,
) -> anyhow::Result<i32> {
    let mut on_ready = |r: &vmm::jailed::Ready<'_>| {
        if !report {
            return;
        }
        let mut text = format!(
            "bulkhead vm: jailed VMM pid {}, uid {} gid {}, cgroup {}\n",
            r.pid,
            r.jail.uid,
            r.jail.gid,
            r.cgroup.unwrap_or("-")
        );
        match ::inspect::inspect(r.pid) {
            Ok(rep) => text.push_str(&crate::sandbox::table(&rep, None)),
            Err(e) => text.push_str(&format!("bulkhead vm: inspect: {e}\n")),
        }
        eprint!("{text}");
    };
    let exit = vmm::jailed::run(source, opts, &mut on_ready)?;
    if let jail::Exit::Killed(sig) = exit {
        let why = match sig {
            libc::SIGSYS => " (a system call outside its thread's seccomp allow list)",
            libc::SIGKILL => " (its cgroup's memory limit, or a kill from outside)",
            _ => "",
        };
        eprintln!("bulkhead vm: the jailed VMM was killed by signal {sig}{why}");
    }
    Ok(exit.code())
}
