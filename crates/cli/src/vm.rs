//! `bulkhead vm ...`: the micro-VM monitor's command line (glue over the `vmm` crate).
//!
//! Flags and `--config FILE.json` describe the same [`vmm::VmConfig`]; flags given on the
//! command line override the file's values, and list flags (`--disk`, `--net`) add to the
//! file's lists.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum VmCommand {
    /// Boot a micro-VM from a kernel image and run it to completion.
    Run(RunArgs),
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
        Ok(config)
    }
}

/// Logging goes through the process-wide `tracing` subscriber the CLI installs (`--log`,
/// `--debug`); the boot measurements are printed here on stderr in any case, because they are
/// the VMM's main report and must not depend on the log level.
pub fn main(cmd: VmCommand) -> anyhow::Result<i32> {
    vmm::logger::mark_process_start();
    match cmd {
        VmCommand::Run(args) => {
            let config = args.into_config()?;
            let report = vmm::Vm::new(&config)?.run()?;
            let ms = vmm::logger::ms;
            let boot_timer = report.boot_timer.map_or("not written".to_string(), ms);
            eprintln!(
                "bulkhead vm: guest shut down ({}): first vCPU entry {}, boot-timer {}, \
                 shutdown {} after VMM start",
                report.reason,
                ms(report.guest_entry),
                boot_timer,
                ms(report.shutdown)
            );
            Ok(0)
        }
    }
}
