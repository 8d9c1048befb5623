//! The device allow list: v1 `devices.allow`/`devices.deny` files.
//! (cgroup v2 has no device files; an eBPF program does the job there.)

use crate::{write_file, Cgroup, Error, Result};

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

pub fn apply(cg: &Cgroup, rules: &[oci::DeviceRule]) -> Result<()> {
    if rules.is_empty() {
        return Ok(());
    }
    match cg.dir_for("devices") {
        Some(d) if !d.v2 => {
            for r in rules {
                let file = if r.allow { "devices.allow" } else { "devices.deny" };
                write_file(&d.path.join(file), &v1_rule(r))?;
            }
            Ok(())
        }
        _ => Err(Error::Unsupported(
            "linux.resources.devices: no v1 devices hierarchy on this host (the cgroup v2 eBPF device filter is not implemented yet)".into(),
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
