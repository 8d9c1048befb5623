//! The host side of VM-backed containers, behind the OCI commands.
//!
//! A VM-backed container has the same state directory as any container
//! (`container::state`), plus `vm.json` (which marks it) and the monitor's sockets and
//! logs. Its `pid` is the monitor's ([`monitor`]); `state`, `list`, `delete`, `pause`
//! and `resume` are the container library's own (they act on the pid and the host cgroup,
//! which holds the monitor and the hypervisor); `create`, `start`, `kill`, `exec`, `ps`
//! and `run` are here ([`lifecycle`]).

pub mod backend;
pub mod control;
pub mod lifecycle;
pub mod monitor;
pub mod network;
pub mod plan;
pub mod relay;
pub mod signals;

use std::path::Path;

/// Files in a VM-backed container's state directory.
pub mod files {
    /// Marks the container as VM-backed and records its VM ([`super::lifecycle::VmInfo`]).
    pub const INFO: &str = "vm.json";
    /// The monitor's control socket.
    pub const CONTROL: &str = "control.sock";
    /// The agent's transport socket (QEMU's chardev; the builtin VMM's vsock uds).
    pub const AGENT: &str = "agent.sock";
    /// The guest's serial console.
    pub const CONSOLE_LOG: &str = "console.log";
    /// The hypervisor's own output.
    pub const HYPERVISOR_LOG: &str = "hypervisor.log";
}

/// The non-empty lines of a log file (none if it cannot be read).
fn log_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(&text)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// The last `n` non-empty lines of a log file, joined for a one-line error.
pub fn tail(path: &Path, n: usize) -> String {
    let lines = log_lines(path);
    if lines.is_empty() {
        return "(empty)".into();
    }
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// What a guest's console says about why it stopped, in one line: the agent's own error
/// lines or a panic (with the line after it, the message), else its last lines.
pub fn console_summary(path: &Path) -> String {
    let lines = log_lines(path);
    let mut picked: Vec<&str> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.contains("bulkhead agent:") || l.contains("Kernel panic") {
            picked.push(l);
        } else if l.contains("panicked at") {
            picked.push(l);
            if let Some(next) = lines.get(i + 1) {
                picked.push(next);
            }
        }
    }
    if picked.is_empty() {
        return tail(path, 3);
    }
    picked[picked.len().saturating_sub(4)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_summaries_pick_the_cause() {
        let dir = std::env::temp_dir().join(format!("bh-console-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("console.log");
        std::fs::write(&log, "boot\nthread 'main' (1) panicked at x.rs:1:2:\nthe reason\n[ 1.0] Kernel panic - not syncing: Attempted to kill init!\n[ 1.0] Call Trace:\n[ 1.0]  ? panic+0x1\n").unwrap();
        let s = console_summary(&log);
        assert_eq!(s, "thread 'main' (1) panicked at x.rs:1:2: | the reason | [ 1.0] Kernel panic - not syncing: Attempted to kill init!");
        std::fs::write(&log, "a\n\nb\nc\nd\n").unwrap();
        assert_eq!(console_summary(&log), "b | c | d");
        assert_eq!(console_summary(&dir.join("none")), "(empty)");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
