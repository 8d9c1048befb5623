//! no_new_privs: once set, execve cannot grant privileges (setuid bits and
//! file capabilities are ignored); `NoNewPrivs` in /proc/PID/status.

use serde::Serialize;

use crate::proc::Status;

#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    pub status: String,
    pub in_force: bool,
    pub value: bool,
    pub host_value: bool,
    /// False when the kernel does not report it (before 4.10).
    pub reported: bool,
}

pub fn inspect(s: &Status, host: Option<&Status>) -> Layer {
    let v = s.u64("NoNewPrivs");
    let value = v == Some(1);
    let host_value = host.and_then(|h| h.u64("NoNewPrivs")) == Some(1);
    let in_force = value && !host_value;
    Layer {
        status: if v.is_none() {
            "unknown"
        } else if in_force {
            "set"
        } else {
            "host"
        }
        .into(),
        in_force,
        value,
        host_value,
        reported: v.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_versus_host() {
        let on = Status {
            text: "NoNewPrivs:\t1\n".into(),
        };
        let off = Status {
            text: "NoNewPrivs:\t0\n".into(),
        };
        assert!(inspect(&on, Some(&off)).in_force);
        assert_eq!(inspect(&on, None).status, "set");
        assert!(!inspect(&off, Some(&off)).in_force);
        assert!(!inspect(&on, Some(&on)).in_force);
        let none = Status { text: "".into() };
        assert_eq!(inspect(&none, None).status, "unknown");
    }
}
