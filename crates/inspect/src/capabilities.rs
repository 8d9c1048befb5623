//! Capabilities: the five sets of /proc/PID/status (`CapInh`, `CapPrm`,
//! `CapEff`, `CapBnd`, `CapAmb`), decoded to names.
//!
//! The layer is "in force" when the bounding set lacks capabilities the
//! host's has: the bounding set is what a container runtime cuts, and no
//! execve can bring a capability back once it is gone from it. (A non-root
//! process on the host has empty effective sets too; that is not isolation.)

use serde::Serialize;

use crate::proc::Status;

#[derive(Debug, Clone, Serialize)]
pub struct Set {
    pub mask: u64,
    pub names: Vec<String>,
}

impl Set {
    fn new(mask: u64) -> Set {
        Set {
            mask,
            names: names(mask),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Sets {
    pub inheritable: Set,
    pub permitted: Set,
    pub effective: Set,
    pub bounding: Set,
    pub ambient: Set,
}

#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    pub status: String,
    pub in_force: bool,
    pub sets: Sets,
    /// The reference's bounding set (pid 1's, or every capability the kernel knows).
    pub host_bounding: Set,
    /// In the host's bounding set but not in the process's.
    pub dropped: Vec<String>,
    /// Capabilities this kernel knows (cap_last_cap + 1).
    pub kernel_caps: u32,
}

/// The highest capability number of the running kernel.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// The name of capability `n` ("CAP_SYS_ADMIN"), or "CAP_<n>" for numbers
/// newer than this build knows.
pub fn name(n: u32) -> String {
    caps::all()
        .into_iter()
        .find(|c| u32::from(c.index()) == n)
        .map(|c| c.to_string())
        .unwrap_or_else(|| format!("CAP_{n}"))
}

pub fn names(mask: u64) -> Vec<String> {
    (0..64).filter(|b| mask & (1 << b) != 0).map(name).collect()
}

pub fn inspect(s: &Status, host: Option<&Status>) -> Layer {
    let get = |f: &str| s.hex(f).unwrap_or(0);
    let last = last_cap();
    let all = if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    };
    let host_bnd = host.and_then(|h| h.hex("CapBnd")).unwrap_or(all);
    let sets = Sets {
        inheritable: Set::new(get("CapInh")),
        permitted: Set::new(get("CapPrm")),
        effective: Set::new(get("CapEff")),
        bounding: Set::new(get("CapBnd")),
        ambient: Set::new(get("CapAmb")),
    };
    let reported = s.hex("CapBnd").is_some();
    let dropped_mask = host_bnd & !sets.bounding.mask;
    let in_force = reported && dropped_mask != 0;
    Layer {
        status: if !reported {
            "unknown"
        } else if in_force {
            "reduced"
        } else {
            "host"
        }
        .into(),
        in_force,
        sets,
        host_bounding: Set::new(host_bnd),
        dropped: names(dropped_mask),
        kernel_caps: last + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_names() {
        assert_eq!(name(0), "CAP_CHOWN");
        assert_eq!(name(21), "CAP_SYS_ADMIN");
        assert_eq!(name(63), "CAP_63");
        // runc's default set.
        let runc = 0x00000000a80425fb_u64;
        let n = names(runc);
        assert_eq!(n.len(), 14);
        assert!(n.contains(&"CAP_NET_BIND_SERVICE".to_string()));
        assert!(!n.contains(&"CAP_SYS_ADMIN".to_string()));
    }

    #[test]
    fn bounding_set_cut() {
        let host = Status {
            text: "CapBnd:\t000001ffffffffff\n".into(),
        };
        let c = Status {
            text: "CapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\nCapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\nCapAmb:\t0000000000000000\n".into(),
        };
        let l = inspect(&c, Some(&host));
        assert!(l.in_force);
        assert_eq!(l.status, "reduced");
        assert_eq!(l.sets.effective.names.len(), 14);
        assert!(l.dropped.contains(&"CAP_SYS_ADMIN".to_string()));
        assert_eq!(l.dropped.len(), 41 - 14);
        // The host itself: nothing dropped.
        assert!(!inspect(&host, Some(&host)).in_force);
        // A non-root host process: empty effective set, full bounding set.
        let user = Status {
            text: "CapEff:\t0000000000000000\nCapBnd:\t000001ffffffffff\n".into(),
        };
        assert_eq!(inspect(&user, Some(&host)).status, "host");
    }
}
