//! `update`, `events`, `ps`: the cgroup-facing commands (issue 3).

use anyhow::{bail, Result};
use clap::Args;
use container::Runtime;

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Container ID.
    pub id: String,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Container ID.
    pub id: String,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Container ID.
    pub id: String,
}

pub fn update(_rt: &Runtime, _a: UpdateArgs) -> Result<i32> {
    bail!("update: not implemented yet")
}

pub fn events(_rt: &Runtime, _a: EventsArgs) -> Result<i32> {
    bail!("events: not implemented yet")
}

pub fn ps(_rt: &Runtime, _a: PsArgs) -> Result<i32> {
    bail!("ps: not implemented yet")
}
