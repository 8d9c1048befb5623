//! The device allow list: v1 `devices.allow`/`devices.deny` files, or on
//! cgroup v2 (no device files there) an eBPF program built by [`crate::ebpf`]
//! with the same semantics.

use crate::{ebpf, write_file, Cgroup, Error, Result};

/// One rule in the kernel's v1 syntax: "c 1:3 rwm", "a *:* rwm".
pub fn v1_rule(r: &oci::DeviceRule) -> String {
    let t = r.typ.as_deref().unwrap_or("a");
    let num = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_else(|| "*".into());
    let access = r.access.as_deref().unwrap_or("rwm");
    if t == "a" {
        // The kernel accepts "a" only as the wildcard for everything.
        format!("a *:* {access}")
    } else {
        format!("{t} {}:{} {access}", num(r.major), num(r.minor))
    }
}

/// Apply `rules` in order. v1: written one by one to devices.allow /
/// devices.deny, on top of the cgroup's current list. v2: the whole list
/// becomes the new filter program (evaluated from allow-all, as a fresh v1
/// cgroup would), replacing the previous one.
pub fn apply(cg: &Cgroup, rules: &[oci::DeviceRule]) -> Result<()> {
    if rules.is_empty() {
        return Ok(());
    }
    // Check every rule before the first write.
    for (i, r) in rules.iter().enumerate() {
        ebpf::parse_rule(r, &format!("linux.resources.devices[{i}]"))?;
    }
    if let Some(d) = cg.dirs.iter().find(|d| !d.v2 && d.has("devices")) {
        for r in rules {
            let file = if r.allow {
                "devices.allow"
            } else {
                "devices.deny"
            };
            write_file(&d.path.join(file), &v1_rule(r))?;
        }
        return Ok(());
    }
    match cg.v2_dir() {
        Some(d) => ebpf::apply(&d.path, rules),
        None => Err(Error::Unsupported(
            "linux.resources.devices: no v1 devices hierarchy and no cgroup v2 hierarchy on this host".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        let deny_all = oci::DeviceRule {
            allow: false,
            typ: None,
            major: None,
            minor: None,
            access: Some("rwm".into()),
        };
        assert_eq!(v1_rule(&deny_all), "a *:* rwm");
        let null = oci::DeviceRule {
            allow: true,
            typ: Some("c".into()),
            major: Some(1),
            minor: Some(3),
            access: Some("rw".into()),
        };
        assert_eq!(v1_rule(&null), "c 1:3 rw");
        let pts = oci::DeviceRule {
            minor: None,
            major: Some(136),
            ..null
        };
        assert_eq!(v1_rule(&pts), "c 136:* rw");
    }
}
