//! The `bulkhead` command line.
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "bulkhead", version, about = "OCI runtime and micro-VM monitor")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Micro-VM commands.
    #[command(subcommand)]
    Vm(vm::VmCommand),
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Vm(cmd) => vm::main(cmd),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bulkhead: {e:#}");
            1
        }
    }
}
