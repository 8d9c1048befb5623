//! `bulkhead agent`: PID 1 of the guest. The initramfs holds one file, the static bulkhead
//! binary as `/init`, and the kernel command line ends in `-- agent`, so the kernel starts
//! it in agent mode. It mounts what a minimal Linux needs ([`boot`]), opens the channel to
//! the host named on the command line ([`transport`]), serves the protocol of
//! docs/agent-protocol.md ([`server`]) — the container itself is built by the same container
//! library as on the host — and powers the guest off when the container is gone.

pub mod boot;
pub mod network;
pub mod server;
pub mod transport;

use std::time::Duration;

use crate::error::{msg, Result};

/// How long the agent waits for its transport device to appear.
const TRANSPORT_WAIT: Duration = Duration::from_secs(30);

/// Run as the guest's init; returns only on errors before the protocol starts (the caller
/// prints them; the kernel then panics on init's exit, which ends the VM).
pub fn main() -> Result<i32> {
    if std::process::id() != 1 {
        return Err(msg(
            "agent: runs only as PID 1 of a bulkhead micro-VM (the guest image's /init)",
        ));
    }
    boot::leave_initramfs()?;
    boot::mount_basics()?;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let spec = transport::from_cmdline(&cmdline)?;
    let fd = transport::open(&spec, TRANSPORT_WAIT)?;
    let mut server = server::Server::new(fd, server::Layout::guest())?;
    if let Err(e) = server.run() {
        eprintln!("bulkhead agent: {e}");
    }
    boot::power_off()
}
