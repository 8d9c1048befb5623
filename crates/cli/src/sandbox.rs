//! `sandbox` and `inspect` (issue 8).

use anyhow::{bail, Result};
use clap::Args;
use container::Runtime;

#[derive(Args, Debug)]
pub struct SandboxArgs {
    /// The command and its arguments.
    #[arg(trailing_var_arg = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Container ID.
    pub id: Option<String>,
}

pub fn sandbox(_rt: &Runtime, _a: SandboxArgs) -> Result<i32> {
    bail!("sandbox: not implemented yet")
}

pub fn inspect(_rt: &Runtime, _a: InspectArgs) -> Result<i32> {
    bail!("inspect: not implemented yet")
}
