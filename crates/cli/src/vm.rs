//! `bulkhead vm ...`: the micro-VM monitor's command line (glue over the `vmm` crate).

use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum VmCommand {
    /// Boot a micro-VM from a kernel image and run it to completion.
    Run(RunArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Kernel image (bzImage or ELF vmlinux).
    #[arg(long)]
    pub kernel: Option<std::path::PathBuf>,
}

pub fn main(cmd: VmCommand) -> anyhow::Result<i32> {
    match cmd {
        VmCommand::Run(_) => anyhow::bail!("vm run: the VMM is not built yet (issue 6)"),
    }
}
