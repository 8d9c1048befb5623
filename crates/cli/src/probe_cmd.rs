//! `bulkhead probe`: the breakout-probe battery of the probe crate, run here or, with
//! `--compare`, in a busybox bundle under each given OCI runtime.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// Output format.
    #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
    /// A host file outside the isolated root: the chroot-escape probe reports whether it
    /// can see it.
    #[arg(long, value_name = "PATH")]
    pub marker: Option<PathBuf>,
    /// Run only these probes (comma-separated names, as the table shows them).
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    pub only: Vec<String>,
    /// Run the battery under bulkhead and each of these OCI runtimes (their own default
    /// spec each) and print the results side by side.
    #[arg(long, num_args = 1.., value_name = "RUNTIME")]
    pub compare: Vec<String>,
}

/// Exit code 0 whatever the score: the battery is a measurement, not a test.
pub fn probe(a: ProbeArgs) -> Result<i32> {
    if !a.compare.is_empty() {
        let exe = std::env::current_exe().context("finding the bulkhead binary")?;
        let columns = probe::compare::compare(&a.compare, &exe)?;
        if a.format == "json" {
            println!("{}", serde_json::json!({ "runtimes": columns }));
        } else {
            print!("{}", probe::compare::table(&columns));
        }
        return Ok(0);
    }
    let report = probe::run(&probe::Context { marker: a.marker }, &a.only)?;
    if a.format == "json" {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(0)
}
