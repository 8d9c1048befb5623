//! seccomp: the mode (0 off, 1 strict, 2 filter) and the number of filters
//! stacked on the process (`Seccomp`, `Seccomp_filters` in /proc/PID/status), and on each of
//! its threads (`/proc/PID/task/TID/status`): filters are per thread, and a program may give
//! each thread its own (a jailed VMM does).

use serde::Serialize;

use crate::proc::{Proc, Status};

/// One thread's seccomp state.
#[derive(Debug, Clone, Serialize)]
pub struct Thread {
    pub tid: i32,
    pub comm: String,
    pub mode: ModeNum,
    pub filters: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    pub status: String,
    pub in_force: bool,
    /// 0 disabled, 1 strict, 2 filter; None if the kernel does not say.
    pub mode: ModeNum,
    pub filters: Option<u64>,
    pub host_mode: ModeNum,
    pub host_filters: Option<u64>,
    /// Every thread of the process (threads that exit while being read are left out).
    pub threads: Vec<Thread>,
}

/// A seccomp mode number (printed as the number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ModeNum(pub Option<u64>);

impl std::fmt::Display for ModeNum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(m) => write!(f, "{m}"),
            None => write!(f, "?"),
        }
    }
}

/// The mode in words.
pub fn mode_name(mode: Option<u64>) -> &'static str {
    match mode {
        Some(0) => "disabled",
        Some(1) => "strict",
        Some(2) => "filter",
        Some(_) => "unknown mode",
        None => "not reported (kernel without CONFIG_SECCOMP)",
    }
}

/// The seccomp state of every thread of `p`.
pub fn threads(p: &Proc) -> Vec<Thread> {
    p.threads()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| {
            let s = t.status().ok()?;
            Some(Thread {
                tid: t.pid,
                comm: t.comm().unwrap_or_default(),
                mode: ModeNum(s.u64("Seccomp")),
                filters: s.u64("Seccomp_filters"),
            })
        })
        .collect()
}

pub fn inspect(s: &Status, host: Option<&Status>, threads: Vec<Thread>) -> Layer {
    let mode = s.u64("Seccomp");
    let filters = s.u64("Seccomp_filters");
    // Without a host process, the reference is an unfiltered one.
    let (host_mode, host_filters) = match host {
        Some(h) => (h.u64("Seccomp"), h.u64("Seccomp_filters")),
        None => (Some(0), Some(0)),
    };
    let in_force = mode.unwrap_or(0) > host_mode.unwrap_or(0)
        || filters.unwrap_or(0) > host_filters.unwrap_or(0);
    let status = match (in_force, mode) {
        (false, None) => "unknown",
        (false, _) => "host",
        (true, Some(1)) => "strict",
        (true, _) => "filtered",
    };
    Layer {
        status: status.into(),
        in_force,
        mode: ModeNum(mode),
        filters,
        host_mode: ModeNum(host_mode),
        host_filters,
        threads,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inspect_(s: &Status, host: Option<&Status>) -> Layer {
        inspect(s, host, Vec::new())
    }

    fn st(t: &str) -> Status {
        Status { text: t.into() }
    }

    #[test]
    fn filtered_versus_host() {
        let host = st("Seccomp:\t0\nSeccomp_filters:\t0\n");
        let l = inspect_(&st("Seccomp:\t2\nSeccomp_filters:\t1\n"), Some(&host));
        assert!(l.in_force);
        assert_eq!(l.status, "filtered");
        assert_eq!(l.mode.to_string(), "2");
        let l = inspect_(&st("Seccomp:\t0\nSeccomp_filters:\t0\n"), Some(&host));
        assert!(!l.in_force);
        assert_eq!(l.status, "host");
        // A host that is itself filtered: the same filters are not a layer.
        let fhost = st("Seccomp:\t2\nSeccomp_filters:\t1\n");
        assert!(!inspect_(&fhost, Some(&fhost)).in_force);
        assert!(inspect_(&st("Seccomp:\t2\nSeccomp_filters:\t2\n"), Some(&fhost)).in_force);
        // No host process: compared with an unfiltered process.
        assert!(inspect_(&st("Seccomp:\t2\nSeccomp_filters:\t1\n"), None).in_force);
        assert_eq!(mode_name(Some(2)), "filter");
    }

    #[test]
    fn threads_of_self() {
        let me = Proc::new(std::process::id() as i32);
        let t = threads(&me);
        assert!(t.iter().any(|t| t.tid == me.pid));
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let filters = status
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp_filters:"))
            .map(|v| v.trim().parse::<u64>().unwrap());
        assert_eq!(t.iter().find(|t| t.tid == me.pid).unwrap().filters, filters);
    }
}
