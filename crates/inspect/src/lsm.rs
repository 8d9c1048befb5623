//! Linux security modules: the process's label (`/proc/PID/attr/current`,
//! and AppArmor's own `/proc/PID/attr/apparmor/current`) and the LSMs the
//! kernel runs (`/sys/kernel/security/lsm`, when securityfs is mounted).
//!
//! Without an LSM that labels processes (AppArmor, SELinux, Smack) the attr
//! files answer EINVAL: there is no label and no confinement to report. A
//! label counts as confinement when it differs from the host's and is not one
//! of the unconfined ones (AppArmor `unconfined`, SELinux `unconfined_t`,
//! `init_t`, `kernel_t`).

use serde::Serialize;

use crate::proc::{reason, Proc};
use crate::Host;

#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    pub status: String,
    pub in_force: bool,
    /// The process's label, if an LSM gives one.
    pub label: Option<String>,
    pub host_label: Option<String>,
    /// Active LSMs, if the kernel lists them to us.
    pub active: Option<Vec<String>>,
    /// Why there is no label.
    pub note: Option<String>,
}

/// The label of `p`: Ok(None) when no LSM labels processes.
pub fn label(p: &Proc) -> Result<Option<String>, String> {
    for f in ["attr/apparmor/current", "attr/current"] {
        match p.read(f) {
            Ok(t) => {
                let t = t.trim_end_matches(['\n', '\0']).to_string();
                if !t.is_empty() {
                    return Ok(Some(t));
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{}: {}", p.path(f).display(), reason(&e))),
        }
    }
    Ok(None)
}

pub fn is_unconfined(label: &str) -> bool {
    // AppArmor: "unconfined" (or "unconfined (enforce)"-style suffixes).
    if label.split_whitespace().next() == Some("unconfined") {
        return true;
    }
    // SELinux: user:role:type:level.
    let ty = label.split(':').nth(2).unwrap_or("");
    matches!(ty, "unconfined_t" | "init_t" | "kernel_t")
}

pub fn inspect(p: &Proc, host: &Host) -> Layer {
    let active = std::fs::read_to_string("/sys/kernel/security/lsm")
        .ok()
        .map(|s| s.trim().split(',').map(String::from).collect::<Vec<_>>());
    let host_label = host.proc.as_ref().and_then(|h| label(h).ok().flatten());
    match label(p) {
        Ok(Some(l)) => {
            let in_force = !is_unconfined(&l) && host_label.as_deref() != Some(l.as_str());
            Layer {
                status: if in_force { "confined" } else { "host" }.into(),
                in_force,
                label: Some(l),
                host_label,
                active,
                note: None,
            }
        }
        Ok(None) => Layer {
            status: "host".into(),
            in_force: false,
            label: None,
            host_label,
            active,
            note: Some("no label: no LSM labels processes on this kernel".into()),
        },
        Err(e) => Layer {
            status: "unknown".into(),
            in_force: false,
            label: None,
            host_label,
            active,
            note: Some(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unconfined_labels() {
        assert!(is_unconfined("unconfined"));
        assert!(is_unconfined("unconfined (enforce)"));
        assert!(!is_unconfined("docker-default (enforce)"));
        assert!(is_unconfined("unconfined_u:unconfined_r:unconfined_t:s0"));
        assert!(is_unconfined("system_u:system_r:init_t:s0"));
        assert!(!is_unconfined("system_u:system_r:container_t:s0:c1,c2"));
    }
}
