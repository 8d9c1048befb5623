//! cgroup v1 controller files (Documentation/admin-guide/cgroup-v1/).

use std::path::Path;

use crate::{read_file, write_file, Cgroup, Error, Result};

fn limit(v: i64) -> String {
    // v1 takes -1 for "no limit".
    if v < 0 {
        "-1".to_string()
    } else {
        v.to_string()
    }
}

/// Copy the parent's cpuset.cpus / cpuset.mems into a freshly made cpuset.
pub fn inherit_cpuset(dir: &Path) -> Result<()> {
    let parent = dir.parent().expect("a created cgroup has a parent");
    for f in ["cpuset.cpus", "cpuset.mems"] {
        let cur = read_file(&dir.join(f))?;
        if cur.trim().is_empty() {
            let v = read_file(&parent.join(f))?;
            write_file(&dir.join(f), v.trim())?;
        }
    }
    Ok(())
}

pub fn memory(dir: &Path, m: &oci::Memory) -> Result<()> {
    if let Some(s) = m.swappiness {
        if s > 100 {
            return Err(Error::Invalid(format!(
                "linux.resources.memory.swappiness: {s} is above 100"
            )));
        }
    }
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    if m.swap.is_some() && !memsw.exists() {
        return Err(Error::Unsupported(
            "linux.resources.memory.swap: swap accounting (memory.memsw.*) is not enabled on this host"
                .into(),
        ));
    }
    if let (Some(l), Some(true)) = (m.limit, m.check_before_update) {
        if l >= 0 {
            crate::check_usage(&dir.join("memory.usage_in_bytes"), l)?;
        }
    }
    match (m.limit, m.swap) {
        (Some(l), Some(s)) => {
            // memsw must stay >= limit at every step: raise memsw first when
            // the new limit would exceed the current memsw.
            let cur: i64 = read_file(&memsw)?.trim().parse().unwrap_or(i64::MAX);
            let new_limit = if l < 0 { i64::MAX } else { l };
            let mem = dir.join("memory.limit_in_bytes");
            if new_limit > cur {
                write_file(&memsw, &limit(s))?;
                write_file(&mem, &limit(l)).map_err(|e| explain_busy(e, dir))?;
            } else {
                write_file(&mem, &limit(l)).map_err(|e| explain_busy(e, dir))?;
                write_file(&memsw, &limit(s))?;
            }
        }
        (Some(l), None) => write_file(&dir.join("memory.limit_in_bytes"), &limit(l))
            .map_err(|e| explain_busy(e, dir))?,
        (None, Some(s)) => write_file(&memsw, &limit(s))?,
        (None, None) => {}
    }
    if let Some(r) = m.reservation {
        write_file(&dir.join("memory.soft_limit_in_bytes"), &limit(r))?;
    }
    // Kernel memory limits were removed from the kernel (5.4+ deprecated,
    // 6.x gone); the spec marks them NOT RECOMMENDED and runtimes ignore them.
    if let Some(k) = m.kernel {
        let f = dir.join("memory.kmem.limit_in_bytes");
        if f.exists() {
            write_file(&f, &limit(k))?;
        }
    }
    if let Some(k) = m.kernel_tcp {
        let f = dir.join("memory.kmem.tcp.limit_in_bytes");
        if !f.exists() {
            return Err(Error::Unsupported(
                "linux.resources.memory.kernelTCP: memory.kmem.tcp.limit_in_bytes does not exist on this host".into(),
            ));
        }
        write_file(&f, &limit(k))?;
    }
    if let Some(s) = m.swappiness {
        write_file(&dir.join("memory.swappiness"), &s.to_string())?;
    }
    if let Some(d) = m.disable_oom_killer {
        write_file(&dir.join("memory.oom_control"), if d { "1" } else { "0" })?;
    }
    if let Some(h) = m.use_hierarchy {
        let f = dir.join("memory.use_hierarchy");
        // Recent kernels fix use_hierarchy at 1 and reject changes.
        let cur = read_file(&f)?;
        let want = if h { "1" } else { "0" };
        if cur.trim() != want {
            write_file(&f, want)?;
        }
    }
    Ok(())
}

/// The kernel answers EBUSY to a limit below the current usage: say so.
fn explain_busy(e: Error, dir: &Path) -> Error {
    match &e {
        Error::Write { err, .. } if err.raw_os_error() == Some(libc::EBUSY) => {
            let usage = read_file(&dir.join("memory.usage_in_bytes")).unwrap_or_default();
            Error::Invalid(format!(
                "{e} (the memory in use, {} bytes, does not fit under the new limit)",
                usage.trim()
            ))
        }
        _ => e,
    }
}

pub fn check_cpu(c: &oci::Cpu) -> Result<()> {
    if let Some(q) = c.quota {
        if q == 0 || (q > 0 && q < 1000) {
            return Err(Error::Invalid(format!(
                "linux.resources.cpu.quota: {q} is below the kernel's minimum of 1000us (use -1 for no limit)"
            )));
        }
    }
    if let Some(p) = c.period {
        if !(1000..=1_000_000).contains(&p) {
            return Err(Error::Invalid(format!(
                "linux.resources.cpu.period: {p} is outside 1000..1000000us"
            )));
        }
    }
    if c.shares == Some(1) {
        return Err(Error::Invalid(
            "linux.resources.cpu.shares: must be at least 2".into(),
        ));
    }
    Ok(())
}

fn need_file(dir: &Path, file: &str, field: &str) -> Result<std::path::PathBuf> {
    let f = dir.join(file);
    if f.exists() {
        Ok(f)
    } else {
        Err(Error::Unsupported(format!(
            "{field}: {file} does not exist on this host"
        )))
    }
}

pub fn cpu(dir: &Path, c: &oci::Cpu) -> Result<()> {
    if let Some(s) = c.shares {
        write_file(&dir.join("cpu.shares"), &s.to_string())?;
    }
    if let Some(p) = c.period {
        write_file(&dir.join("cpu.cfs_period_us"), &p.to_string())?;
    }
    if let Some(q) = c.quota {
        write_file(&dir.join("cpu.cfs_quota_us"), &limit(q))?;
    }
    if let Some(b) = c.burst {
        let f = need_file(dir, "cpu.cfs_burst_us", "linux.resources.cpu.burst")?;
        write_file(&f, &b.to_string())?;
    }
    // Realtime: the period before the runtime, so a runtime that fits the new
    // period is accepted.
    if let Some(p) = c.realtime_period {
        let f = need_file(
            dir,
            "cpu.rt_period_us",
            "linux.resources.cpu.realtimePeriod",
        )?;
        write_file(&f, &p.to_string())?;
    }
    if let Some(r) = c.realtime_runtime {
        let f = need_file(
            dir,
            "cpu.rt_runtime_us",
            "linux.resources.cpu.realtimeRuntime",
        )?;
        write_file(&f, &r.to_string())?;
    }
    if let Some(i) = c.idle {
        let f = need_file(dir, "cpu.idle", "linux.resources.cpu.idle")?;
        write_file(&f, &i.to_string())?;
    }
    Ok(())
}

/// cpuset.cpus / cpuset.mems: same file names and syntax in v1 and v2.
pub fn cpuset(dir: &Path, c: &oci::Cpu) -> Result<()> {
    if let Some(cpus) = &c.cpus {
        write_file(&dir.join("cpuset.cpus"), cpus)?;
    }
    if let Some(mems) = &c.mems {
        write_file(&dir.join("cpuset.mems"), mems)?;
    }
    Ok(())
}

pub fn blkio(dir: &Path, b: &oci::BlockIo) -> Result<()> {
    // The CFQ files are gone with the legacy block layer; BFQ has its own.
    let weight_file = ["blkio.weight", "blkio.bfq.weight"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists());
    if let Some(w) = b.weight {
        let f = weight_file.clone().ok_or_else(|| {
            Error::Unsupported(
                "linux.resources.blockIO.weight: no blkio.weight or blkio.bfq.weight (no CFQ/BFQ scheduler)".into(),
            )
        })?;
        write_file(&f, &w.to_string())?;
    }
    if let Some(w) = b.leaf_weight {
        let f = need_file(
            dir,
            "blkio.leaf_weight",
            "linux.resources.blockIO.leafWeight",
        )?;
        write_file(&f, &w.to_string())?;
    }
    for (i, wd) in b.weight_device.iter().enumerate() {
        if let Some(w) = wd.weight {
            let f = ["blkio.weight_device", "blkio.bfq.weight_device"]
                .iter()
                .map(|f| dir.join(f))
                .find(|p| p.exists())
                .ok_or_else(|| {
                    Error::Unsupported(format!(
                        "linux.resources.blockIO.weightDevice[{i}]: no per-device weight file on this host"
                    ))
                })?;
            write_file(&f, &format!("{}:{} {w}", wd.major, wd.minor))?;
        }
        if let Some(w) = wd.leaf_weight {
            let f = need_file(
                dir,
                "blkio.leaf_weight_device",
                &format!("linux.resources.blockIO.weightDevice[{i}].leafWeight"),
            )?;
            write_file(&f, &format!("{}:{} {w}", wd.major, wd.minor))?;
        }
    }
    for (file, list) in [
        (
            "blkio.throttle.read_bps_device",
            &b.throttle_read_bps_device,
        ),
        (
            "blkio.throttle.write_bps_device",
            &b.throttle_write_bps_device,
        ),
        (
            "blkio.throttle.read_iops_device",
            &b.throttle_read_iops_device,
        ),
        (
            "blkio.throttle.write_iops_device",
            &b.throttle_write_iops_device,
        ),
    ] {
        for t in list {
            write_file(
                &dir.join(file),
                &format!("{}:{} {}", t.major, t.minor, t.rate),
            )?;
        }
    }
    Ok(())
}

/// net_cls / net_prio exist only in cgroup v1.
pub fn network(cg: &Cgroup, n: &oci::Network) -> Result<()> {
    if let Some(id) = n.class_id {
        let d = cg.dir_for("net_cls").filter(|d| !d.v2).ok_or_else(|| {
            Error::Unsupported(
                "linux.resources.network.classID: no v1 net_cls hierarchy is mounted on this host"
                    .into(),
            )
        })?;
        write_file(&d.path.join("net_cls.classid"), &id.to_string())?;
    }
    if !n.priorities.is_empty() {
        let d = cg
            .dir_for("net_prio")
            .filter(|d| !d.v2)
            .ok_or_else(|| {
                Error::Unsupported(
                    "linux.resources.network.priorities: no v1 net_prio hierarchy is mounted on this host"
                        .into(),
                )
            })?;
        for p in &n.priorities {
            write_file(
                &d.path.join("net_prio.ifpriomap"),
                &format!("{} {}", p.name, p.priority),
            )?;
        }
    }
    Ok(())
}
