//! cgroup v2 controller files (Documentation/admin-guide/cgroup-v2.rst), and
//! the conversions from the v1-shaped OCI values that runc and crun agree on.

use std::collections::BTreeMap;
use std::path::Path;

use crate::{read_file, write_file, Cgroup, Dir, Error, Result};

/// Enable `controller` in cgroup.subtree_control of every ancestor of `d`
/// (from the hierarchy root down), so the leaf gets its interface files.
pub fn enable(cg: &Cgroup, d: &Dir, controller: &str) -> Result<()> {
    let _ = cg;
    // A controller is usable in a cgroup when its parent delegates it, which
    // the cgroup's own cgroup.controllers lists.
    let listed = read_file(&d.path.join("cgroup.controllers"))?;
    if listed.split_whitespace().any(|c| c == controller) {
        return Ok(());
    }
    let mut chain: Vec<&Path> = d.path.ancestors().skip(1).collect();
    chain.reverse();
    for dir in chain {
        let ctl = dir.join("cgroup.subtree_control");
        if !ctl.exists() {
            continue; // above the cgroup2 mount
        }
        let cur = read_file(&ctl)?;
        if cur.split_whitespace().any(|c| c == controller) {
            continue;
        }
        write_file(&ctl, &format!("+{controller}"))?;
    }
    Ok(())
}

/// OCI memory.swap is memory+swap; v2 memory.swap.max is swap alone.
pub fn swap_max(limit: Option<i64>, swap: i64) -> Result<String> {
    if swap < 0 {
        return Ok("max".into());
    }
    match limit {
        None | Some(-1) => Err(Error::Invalid(
            "linux.resources.memory.swap: on cgroup v2 a swap limit needs a memory limit".into(),
        )),
        Some(l) if swap < l => Err(Error::Invalid(format!(
            "linux.resources.memory.swap: {swap} is below the memory limit {l} (swap counts memory+swap)"
        ))),
        Some(l) => Ok((swap - l).to_string()),
    }
}

fn max(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

pub fn memory(cg: &Cgroup, d: &Dir, m: &oci::Memory) -> Result<()> {
    enable(cg, d, "memory")?;
    if m.swappiness.is_some() {
        return Err(Error::Unsupported(
            "linux.resources.memory.swappiness: cgroup v2 has no per-cgroup swappiness".into(),
        ));
    }
    if m.disable_oom_killer == Some(true) {
        return Err(Error::Unsupported(
            "linux.resources.memory.disableOOMKiller: cgroup v2 cannot disable the OOM killer"
                .into(),
        ));
    }
    if let Some(l) = m.limit {
        // v2 does not refuse a limit below the usage (it reclaims, then
        // OOM-kills): checkBeforeUpdate asks for v1's refusal.
        if m.check_before_update == Some(true) && l >= 0 {
            crate::check_usage(&d.path.join("memory.current"), l)?;
        }
        write_file(&d.path.join("memory.max"), &max(l))?;
    }
    if let Some(s) = m.swap {
        let f = d.path.join("memory.swap.max");
        if !f.exists() {
            return Err(Error::Unsupported(
                "linux.resources.memory.swap: memory.swap.max does not exist (no swap accounting)"
                    .into(),
            ));
        }
        write_file(&f, &swap_max(m.limit, s)?)?;
    }
    if let Some(r) = m.reservation {
        write_file(&d.path.join("memory.low"), &max(r))?;
    }
    Ok(())
}

/// cpu.shares (2..262144) to cpu.weight (1..10000), the mapping runc and crun use.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
}

pub fn cpu(cg: &Cgroup, d: &Dir, c: &oci::Cpu) -> Result<()> {
    enable(cg, d, "cpu")?;
    if c.realtime_period.is_some() || c.realtime_runtime.is_some() {
        return Err(Error::Unsupported(
            "linux.resources.cpu.realtimePeriod/realtimeRuntime: cgroup v2 has no realtime group scheduling".into(),
        ));
    }
    if let Some(s) = c.shares {
        write_file(&d.path.join("cpu.weight"), &shares_to_weight(s).to_string())?;
    }
    if c.quota.is_some() || c.period.is_some() {
        let q = c.quota.map(max).unwrap_or_else(|| "max".into());
        let v = match c.period {
            Some(p) => format!("{q} {p}"),
            None => q,
        };
        write_file(&d.path.join("cpu.max"), &v)?;
    }
    if let Some(b) = c.burst {
        write_file(&d.path.join("cpu.max.burst"), &b.to_string())?;
    }
    if let Some(i) = c.idle {
        write_file(&d.path.join("cpu.idle"), &i.to_string())?;
    }
    Ok(())
}

/// blkio weight (10..1000) to io.weight (1..10000).
pub fn blkio_to_io_weight(w: u16) -> u64 {
    let w = u64::from(w.clamp(10, 1000));
    1 + (w - 10) * 9999 / 990
}

pub fn io(cg: &Cgroup, d: &Dir, b: &oci::BlockIo) -> Result<()> {
    enable(cg, d, "io")?;
    if b.leaf_weight.is_some() || b.weight_device.iter().any(|w| w.leaf_weight.is_some()) {
        return Err(Error::Unsupported(
            "linux.resources.blockIO.leafWeight: cgroup v2 has no leaf weights".into(),
        ));
    }
    let bfq = d.path.join("io.bfq.weight");
    if let Some(w) = b.weight {
        if bfq.exists() {
            write_file(&bfq, &w.to_string())?;
        } else {
            write_file(
                &d.path.join("io.weight"),
                &blkio_to_io_weight(w).to_string(),
            )?;
        }
    }
    for wd in &b.weight_device {
        if let Some(w) = wd.weight {
            if bfq.exists() {
                write_file(&bfq, &format!("{}:{} {w}", wd.major, wd.minor))?;
            } else {
                write_file(
                    &d.path.join("io.weight"),
                    &format!("{}:{} {}", wd.major, wd.minor, blkio_to_io_weight(w)),
                )?;
            }
        }
    }
    for (key, list) in [
        ("rbps", &b.throttle_read_bps_device),
        ("wbps", &b.throttle_write_bps_device),
        ("riops", &b.throttle_read_iops_device),
        ("wiops", &b.throttle_write_iops_device),
    ] {
        for t in list {
            write_file(
                &d.path.join("io.max"),
                &format!("{}:{} {key}={}", t.major, t.minor, t.rate),
            )?;
        }
    }
    Ok(())
}

/// `linux.resources.unified`: raw v2 files, checked to be plain names of an
/// available controller's interface.
pub fn unified(cg: &Cgroup, map: &BTreeMap<String, String>) -> Result<()> {
    let d = cg.v2_dir().ok_or_else(|| {
        Error::Unsupported("linux.resources.unified: this host has no cgroup v2 hierarchy".into())
    })?;
    for (k, v) in map {
        if k.contains('/') || k.starts_with('.') || !k.contains('.') {
            return Err(Error::Invalid(format!(
                "linux.resources.unified: {k:?} is not a cgroup interface file name"
            )));
        }
        let controller = k.split('.').next().unwrap_or_default();
        if controller != "cgroup" {
            if !d.has(controller) {
                return Err(Error::Unsupported(format!(
                    "linux.resources.unified.{k}: the {controller} controller is not in this host's cgroup v2 hierarchy"
                )));
            }
            enable(cg, d, controller)?;
        }
        let f = d.path.join(k);
        if !f.exists() {
            return Err(Error::Unsupported(format!(
                "linux.resources.unified.{k}: {} does not exist",
                f.display()
            )));
        }
        write_file(&f, v)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(1000), 10_000);
        assert_eq!(swap_max(Some(100), 300).unwrap(), "200");
        assert_eq!(swap_max(Some(100), -1).unwrap(), "max");
        assert!(swap_max(None, 300).is_err());
        assert!(swap_max(Some(300), 100).is_err());
    }
}
