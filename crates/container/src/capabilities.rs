//! Capability sets (capabilities(7)) from their names in config.json.
//!
//! Names are resolved once, in the runtime, so the container's init only does
//! bit operations. Like runc, names that this runtime or the running kernel
//! does not know are skipped with a warning (a config written for a newer
//! kernel still runs); malformed names are rejected earlier by validation.

use std::str::FromStr;

use caps::Capability;
use oci::Capabilities;
use rustix::thread::{CapabilitySet, CapabilitySets};

use crate::error::{Context, Result};

/// The five sets as bit masks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resolved {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

/// Highest capability number of the running kernel (/proc/sys/kernel/cap_last_cap).
pub fn last_cap() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Every capability name the kernel and this runtime both know (for `features`).
pub fn known_names() -> Vec<String> {
    let last = last_cap();
    let mut v: Vec<(u8, String)> = caps::all()
        .into_iter()
        .filter(|c| c.index() <= last)
        .map(|c| (c.index(), c.to_string()))
        .collect();
    v.sort();
    v.into_iter().map(|(_, n)| n).collect()
}

/// Resolve names to masks; returns the masks and the names that were skipped.
pub fn resolve(c: Option<&Capabilities>) -> (Resolved, Vec<String>) {
    let mut skipped = Vec::new();
    let last = last_cap();
    let mut mask = |list: &Option<Vec<String>>| -> u64 {
        let mut m = 0u64;
        for name in list.iter().flatten() {
            match Capability::from_str(name) {
                Ok(cap) if cap.index() <= last => m |= 1u64 << cap.index(),
                _ => {
                    if !skipped.contains(name) {
                        skipped.push(name.clone());
                    }
                }
            }
        }
        m
    };
    let Some(c) = c else {
        // No capabilities object: the process gets none (spec: the sets are
        // what the process keeps).
        return (Resolved::default(), skipped);
    };
    let mut r = Resolved {
        bounding: mask(&c.bounding),
        effective: mask(&c.effective),
        permitted: mask(&c.permitted),
        inheritable: mask(&c.inheritable),
        ambient: mask(&c.ambient),
    };
    // The kernel keeps an ambient capability only if it is also permitted and
    // inheritable. runc's own default spec lists ambient capabilities without
    // inheritable ones and runc skips them with a warning; so do we.
    let unusable = r.ambient & !(r.inheritable & r.permitted);
    if unusable != 0 {
        for (i, name) in caps::all().into_iter().map(|c| (c.index(), c.to_string())) {
            if unusable & (1u64 << i) != 0 {
                skipped.push(format!(
                    "{name} (ambient, but not permitted and inheritable)"
                ));
            }
        }
        r.ambient &= r.inheritable & r.permitted;
    }
    (r, skipped)
}

/// Drop every capability not in `bounding` from the bounding set. Needs
/// CAP_SETPCAP, so it runs before the user switch.
pub fn drop_bounding(bounding: u64) -> Result<()> {
    for i in 0..=last_cap() {
        if bounding & (1 << i) != 0 {
            continue;
        }
        // SAFETY: plain prctl with integer arguments.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(i), 0, 0, 0) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                continue; // not a capability this kernel has
            }
            return Err(e).ctx(|| format!("drop capability {i} from the bounding set"));
        }
    }
    Ok(())
}

/// CAP_SYS_ADMIN: what seccomp(2) needs without no_new_privs.
pub const SYS_ADMIN: u64 = 1 << 21;

/// Set effective, permitted and inheritable in one capset(2) (each set alone
/// could violate the kernel's subset rules part-way), then raise ambient.
///
/// `keep` is added to effective and permitted: capabilities the runtime
/// itself still needs before execve (CAP_SYS_ADMIN to install a seccomp
/// filter without no_new_privs). They never reach the program: execve
/// recomputes permitted and effective from the bounding, inheritable and
/// ambient sets and the file's capabilities, never from the old permitted
/// set (capabilities(7), "Transformation of capabilities during execve()";
/// only no_new_privs caps the new permitted set by the old one, and with it
/// `keep` is empty).
pub fn apply(r: &Resolved, keep: u64) -> Result<()> {
    let sets = CapabilitySets {
        effective: CapabilitySet::from_bits_retain(r.effective | keep),
        permitted: CapabilitySet::from_bits_retain(r.permitted | keep),
        inheritable: CapabilitySet::from_bits_retain(r.inheritable),
    };
    rustix::thread::set_capabilities(None, sets).ctx(|| {
        "set capabilities (process.capabilities: effective must be within permitted, inheritable within bounding)".into()
    })?;
    for i in 0..64u64 {
        if r.ambient & (1 << i) == 0 {
            continue;
        }
        // SAFETY: plain prctl with integer arguments.
        let ret = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                i as libc::c_ulong,
                0,
                0,
            )
        };
        if ret != 0 {
            return Err(std::io::Error::last_os_error()).ctx(|| {
                format!("raise ambient capability {i} (it must be permitted and inheritable)")
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_to_bits_and_unknown_skipped() {
        let c = Capabilities {
            bounding: Some(vec![
                "CAP_CHOWN".into(),
                "CAP_KILL".into(),
                "CAP_FUTURE_THING".into(),
            ]),
            effective: Some(vec!["CAP_KILL".into()]),
            permitted: None,
            inheritable: None,
            ambient: Some(vec![]),
        };
        let (r, skipped) = resolve(Some(&c));
        assert_eq!(r.bounding, (1 << 0) | (1 << 5));
        assert_eq!(r.effective, 1 << 5);
        assert_eq!(r.permitted, 0);
        assert_eq!(skipped, vec!["CAP_FUTURE_THING".to_string()]);
        // runc's default: ambient listed without inheritable is dropped (warned).
        let c2 = Capabilities {
            permitted: Some(vec!["CAP_KILL".into()]),
            ambient: Some(vec!["CAP_KILL".into()]),
            ..Default::default()
        };
        let (r2, skipped2) = resolve(Some(&c2));
        assert_eq!(r2.ambient, 0);
        assert!(skipped2[0].starts_with("CAP_KILL (ambient"), "{skipped2:?}");
        assert_eq!(resolve(None).0, Resolved::default());
    }

    #[test]
    fn known_names_are_kernel_names() {
        let n = known_names();
        assert_eq!(n[0], "CAP_CHOWN");
        assert!(n.contains(&"CAP_SYS_ADMIN".to_string()));
        assert!(
            n.len() as u8 == last_cap() + 1,
            "{} vs {}",
            n.len(),
            last_cap()
        );
    }
}
