//! `update`, `events`, `ps`: the cgroup-facing commands, with runc's flags
//! and output shapes (engines call them as they call runc).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use container::Runtime;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{pidfd_open, Pid, PidfdFlags};
use serde::Serialize;

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Read the new resources (OCI LinuxResources JSON) from FILE, or from stdin with "-".
    #[arg(short = 'r', long, value_name = "FILE")]
    pub resources: Option<PathBuf>,
    /// Memory limit in bytes (units k, m, g, t, p accepted; -1 for none).
    #[arg(long, allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// Memory reservation (soft limit) in bytes.
    #[arg(long = "memory-reservation", allow_hyphen_values = true)]
    pub memory_reservation: Option<String>,
    /// Total memory+swap limit in bytes; -1 for unlimited swap.
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Kernel memory limit in bytes (deprecated by the kernel).
    #[arg(long = "kernel-memory", allow_hyphen_values = true)]
    pub kernel_memory: Option<String>,
    /// Kernel TCP buffer memory limit in bytes (cgroup v1 only).
    #[arg(long = "kernel-memory-tcp", allow_hyphen_values = true)]
    pub kernel_memory_tcp: Option<String>,
    /// CPU shares (relative weight).
    #[arg(long = "cpu-shares", visible_alias = "cpu-share")]
    pub cpu_shares: Option<u64>,
    /// CPU CFS quota in microseconds per period; -1 for none.
    #[arg(long = "cpu-quota", allow_negative_numbers = true)]
    pub cpu_quota: Option<i64>,
    /// CPU CFS period in microseconds.
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<u64>,
    /// Realtime runtime in microseconds per realtime period.
    #[arg(long = "cpu-rt-runtime", allow_negative_numbers = true)]
    pub cpu_rt_runtime: Option<i64>,
    /// Realtime period in microseconds.
    #[arg(long = "cpu-rt-period")]
    pub cpu_rt_period: Option<u64>,
    /// CPUs to run on ("0-2,4").
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes to allocate from.
    #[arg(long = "cpuset-mems")]
    pub cpuset_mems: Option<String>,
    /// Block IO weight (10..1000).
    #[arg(long = "blkio-weight")]
    pub blkio_weight: Option<u16>,
    /// Maximum number of pids; -1 for no limit.
    #[arg(long = "pids-limit", allow_negative_numbers = true)]
    pub pids_limit: Option<i64>,
    /// Intel RDT L3 cache schema (not supported).
    #[arg(long = "l3-cache-schema")]
    pub l3_cache_schema: Option<String>,
    /// Intel RDT memory bandwidth schema (not supported).
    #[arg(long = "mem-bw-schema")]
    pub mem_bw_schema: Option<String>,
    /// Container ID.
    pub id: String,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Time between two stats events ("5s", "500ms", "1m").
    #[arg(long, default_value = "5s")]
    pub interval: String,
    /// Print the stats once and exit.
    #[arg(long)]
    pub stats: bool,
    /// Container ID.
    pub id: String,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Output format: table (host ps output, filtered) or json (an array of pids).
    #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
    /// Container ID.
    pub id: String,
    /// Options for ps(1) (default: -ef).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

/// Bytes with runc's (go-units RAMInBytes) syntax: "512", "64k", "32m",
/// "1.5g", "2GiB", binary multiples; "-1" means no limit.
pub fn parse_bytes(flag: &str, s: &str) -> Result<i64> {
    if s.trim() == "-1" {
        return Ok(-1);
    }
    match size_in_bytes(s) {
        Some(Ok(v)) => Ok(v),
        Some(Err(())) => Err(anyhow!("{flag}: {s:?} is too large")),
        None => Err(anyhow!(
            "{flag}: {s:?} is not a size (like 512, 64k, 32m, 1g; -1 for no limit)"
        )),
    }
}

/// A size with a binary unit ("512", "64k", "1.5g", "2GiB", "10 mb"):
/// `None` if it does not parse, `Some(Err)` if it does not fit an i64.
/// Shared by `update` and `sandbox`, which phrase their own errors.
pub fn size_in_bytes(s: &str) -> Option<std::result::Result<i64, ()>> {
    let t = s.trim();
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(end);
    if num.is_empty() || num.starts_with('.') || num.matches('.').count() > 1 {
        return None;
    }
    let unit = unit.trim_start().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return None,
    };
    let v: f64 = num.parse().ok()?;
    let bytes = v * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= i64::MAX as f64 {
        return Some(Err(()));
    }
    Some(Ok(bytes as i64))
}

/// Go's time.ParseDuration subset: "5s", "100ms", "1m30s", "1.5s", "2h".
pub fn parse_duration(s: &str) -> Result<Duration> {
    let bad = || anyhow!("--interval: {s:?} is not a duration (like 5s, 500ms, 1m)");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(end);
        let v: f64 = num.parse().map_err(|_| bad())?;
        let uend = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(uend);
        let secs = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += v * secs;
        rest = tail;
    }
    if total <= 0.0 || !total.is_finite() {
        return Err(anyhow!("--interval: {s:?} must be positive"));
    }
    Ok(Duration::from_secs_f64(total))
}

impl UpdateArgs {
    fn has_flags(&self) -> bool {
        self.memory.is_some()
            || self.memory_reservation.is_some()
            || self.memory_swap.is_some()
            || self.kernel_memory.is_some()
            || self.kernel_memory_tcp.is_some()
            || self.cpu_shares.is_some()
            || self.cpu_quota.is_some()
            || self.cpu_period.is_some()
            || self.cpu_rt_runtime.is_some()
            || self.cpu_rt_period.is_some()
            || self.cpuset_cpus.is_some()
            || self.cpuset_mems.is_some()
            || self.blkio_weight.is_some()
            || self.pids_limit.is_some()
    }

    /// The OCI resources the flags (or the --resources document) ask for.
    fn resources(&self) -> Result<oci::Resources> {
        if self.l3_cache_schema.is_some() || self.mem_bw_schema.is_some() {
            bail!("--l3-cache-schema/--mem-bw-schema: Intel RDT (resctrl) is not supported by bulkhead");
        }
        if let Some(path) = &self.resources {
            if self.has_flags() {
                bail!("--resources cannot be combined with other resource flags: put every value in the document");
            }
            let (text, name) = if path.as_os_str() == "-" {
                let mut t = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut t)
                    .context("read the resources from stdin")?;
                (t, "resources (stdin)".to_string())
            } else {
                let t = std::fs::read(path)
                    .with_context(|| format!("--resources {}", path.display()))?;
                (t, path.display().to_string())
            };
            return Ok(oci::from_json(&text, &name)?);
        }
        let mut r = oci::Resources::default();
        let bytes = |flag: &str, v: &Option<String>| -> Result<Option<i64>> {
            v.as_deref().map(|s| parse_bytes(flag, s)).transpose()
        };
        let mem = oci::Memory {
            limit: bytes("--memory", &self.memory)?,
            reservation: bytes("--memory-reservation", &self.memory_reservation)?,
            swap: bytes("--memory-swap", &self.memory_swap)?,
            kernel: bytes("--kernel-memory", &self.kernel_memory)?,
            kernel_tcp: bytes("--kernel-memory-tcp", &self.kernel_memory_tcp)?,
            ..Default::default()
        };
        if mem != oci::Memory::default() {
            r.memory = Some(mem);
        }
        let cpu = oci::Cpu {
            shares: self.cpu_shares,
            quota: self.cpu_quota,
            period: self.cpu_period,
            realtime_runtime: self.cpu_rt_runtime,
            realtime_period: self.cpu_rt_period,
            cpus: self.cpuset_cpus.clone(),
            mems: self.cpuset_mems.clone(),
            ..Default::default()
        };
        if cpu != oci::Cpu::default() {
            r.cpu = Some(cpu);
        }
        if let Some(w) = self.blkio_weight {
            r.block_io = Some(oci::BlockIo {
                weight: Some(w),
                ..Default::default()
            });
        }
        if let Some(l) = self.pids_limit {
            r.pids = Some(oci::Pids { limit: Some(l) });
        }
        Ok(r)
    }
}

/// The container's cgroup, refusing stopped containers.
fn live_cgroup(
    rt: &Runtime,
    id: &str,
    op: &str,
) -> Result<(container::state::Saved, cgroups::Cgroup)> {
    let saved = rt.load(id)?;
    if saved.status() == oci::Status::Stopped {
        bail!("{op}: container {id:?} is stopped");
    }
    let cg = saved
        .cgroup
        .as_ref()
        .map(cgroups::Cgroup::from_saved)
        .ok_or_else(|| {
            anyhow!(
                "{op}: container {id:?} has no cgroup: {}",
                container::NO_CGROUP
            )
        })?;
    Ok((saved, cg))
}

pub fn update(rt: &Runtime, a: UpdateArgs) -> Result<i32> {
    let mut res = a.resources()?;
    let (saved, cg) = live_cgroup(rt, &a.id, "update")?;
    if !res.devices.is_empty() {
        // A new device policy replaces the old one: deny-all unless the list
        // starts with its own wildcard, then the rules, then (as at create)
        // allowances for the default devices and the config's linux.devices.
        let wildcard = res.devices[0].typ.as_deref().unwrap_or("a") == "a";
        if !wildcard {
            res.devices.insert(
                0,
                oci::DeviceRule {
                    allow: false,
                    typ: Some("a".into()),
                    major: None,
                    minor: None,
                    access: Some("rwm".into()),
                },
            );
        }
        let devices = oci::Spec::load(std::path::Path::new(&saved.bundle))
            .map(|s| s.linux().devices.clone())
            .unwrap_or_default();
        res.devices = container::devices::cgroup_rules(&res.devices, &devices);
    }
    cg.update(&res)
        .with_context(|| format!("update container {:?}", a.id))?;
    Ok(0)
}

#[derive(Serialize)]
struct Event<'a, T: Serialize> {
    #[serde(rename = "type")]
    typ: &'a str,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<T>,
}

/// Print one JSON line; false once stdout is gone (the reader quit).
fn emit<T: Serialize>(typ: &str, id: &str, data: Option<T>) -> bool {
    let line = serde_json::to_string(&Event { typ, id, data }).expect("events serialise");
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|_| out.flush()).is_ok()
}

pub fn events(rt: &Runtime, a: EventsArgs) -> Result<i32> {
    let interval = parse_duration(&a.interval)?;
    let (saved, cg) = live_cgroup(rt, &a.id, "events")?;
    if a.stats {
        let s = cgroups::stats::collect(&cg)?;
        emit("stats", &a.id, Some(s));
        return Ok(0);
    }
    // The stream ends when the init exits: watch it through a pidfd, checked
    // against pid reuse after opening.
    let pid = Pid::from_raw(saved.pid).ok_or_else(|| anyhow!("bad pid {}", saved.pid))?;
    let pidfd = pidfd_open(pid, PidfdFlags::empty())
        .with_context(|| format!("pidfd_open({})", saved.pid))?;
    if !saved.init_alive() {
        bail!("events: container {:?} is stopped", a.id);
    }
    let mut oom = cgroups::stats::OomWatch::new(&cg)?;
    let mut next = Instant::now() + interval;
    // v1 eventfd fired but no kill counted yet: the killer may still be at work.
    let mut pending: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let mut wake = next;
        if let Some(p) = pending {
            wake = wake.min(p);
        }
        let left = wake.saturating_duration_since(now);
        let ts = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: left.subsec_nanos() as i64,
        };
        let (exited, oom_ready) = {
            let mut fds = vec![PollFd::new(&pidfd, PollFlags::IN)];
            if let Some(w) = &oom {
                fds.push(PollFd::from_borrowed_fd(w.fd(), PollFlags::IN));
            }
            match poll(&mut fds, Some(&ts)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e).context("poll"),
            }
            (
                fds[0].revents().contains(PollFlags::IN),
                fds.get(1)
                    .is_some_and(|f| f.revents().contains(PollFlags::IN)),
            )
        };
        if let Some(w) = oom.as_mut() {
            let woke = oom_ready && w.drain();
            let kills = w.new_kills();
            for _ in 0..kills {
                if !emit::<()>("oom", &a.id, None) {
                    return Ok(0);
                }
            }
            if kills > 0 {
                pending = None;
            } else if woke && w.is_v1() {
                pending = Some(Instant::now() + Duration::from_millis(500));
            } else if pending.is_some_and(|p| Instant::now() >= p) {
                // Under OOM without a kill (disableOOMKiller): still an OOM event.
                pending = None;
                if !emit::<()>("oom", &a.id, None) {
                    return Ok(0);
                }
            }
        }
        if exited {
            return Ok(0);
        }
        if Instant::now() >= next {
            let Ok(s) = cgroups::stats::collect(&cg) else {
                return Ok(0); // the cgroup went away with the container
            };
            if !emit("stats", &a.id, Some(s)) {
                return Ok(0);
            }
            next += interval;
            if next < Instant::now() {
                next = Instant::now() + interval;
            }
        }
    }
}

/// PID, PPID, STAT and command line of `pid` from /proc (when there is no ps).
fn proc_line(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rp = stat.rfind(')')?;
    let comm = &stat[stat.find('(')? + 1..rp];
    let f: Vec<&str> = stat[rp + 2..].split(' ').collect();
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default();
    let cmd = if cmd.is_empty() {
        format!("[{comm}]")
    } else {
        cmd
    };
    Some(format!("{pid:>7} {:>7} {:<4} {cmd}", f.get(1)?, f.first()?))
}

pub fn ps(rt: &Runtime, a: PsArgs) -> Result<i32> {
    let (_, cg) = live_cgroup(rt, &a.id, "ps")?;
    let pids = cg.all_procs()?;
    let mut out = std::io::stdout().lock();
    if a.format == "json" {
        if !a.ps_args.is_empty() {
            bail!("ps: --format json takes no ps options");
        }
        writeln!(out, "{}", serde_json::to_string(&pids)?)?;
        return Ok(0);
    }
    let set: BTreeSet<i32> = pids.iter().copied().collect();
    let args: Vec<String> = if a.ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        a.ps_args.clone()
    };
    // As runc: the host's ps with the given options, keeping the header and
    // the lines whose PID column is a process of the container.
    match std::process::Command::new("ps").args(&args).output() {
        Ok(o) => {
            if !o.status.success() {
                bail!(
                    "ps {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&o.stderr).trim()
                );
            }
            let text = String::from_utf8_lossy(&o.stdout);
            let mut lines = text.lines();
            let header = lines.next().unwrap_or_default();
            let col = header
                .split_whitespace()
                .position(|h| h == "PID")
                .ok_or_else(|| anyhow!("ps {}: no PID column in its output", args.join(" ")))?;
            writeln!(out, "{header}")?;
            for l in lines {
                let keep = l
                    .split_whitespace()
                    .nth(col)
                    .and_then(|p| p.parse::<i32>().ok())
                    .is_some_and(|p| set.contains(&p));
                if keep {
                    writeln!(out, "{l}")?;
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && a.ps_args.is_empty() => {
            writeln!(out, "{:>7} {:>7} {:<4} CMD", "PID", "PPID", "STAT")?;
            for p in pids {
                if let Some(l) = proc_line(p) {
                    writeln!(out, "{l}")?;
                }
            }
        }
        Err(e) => return Err(e).context("run ps"),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("--memory", "512").unwrap(), 512);
        assert_eq!(parse_bytes("--memory", "64k").unwrap(), 64 << 10);
        assert_eq!(parse_bytes("--memory", "32M").unwrap(), 32 << 20);
        assert_eq!(parse_bytes("--memory", "1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("--memory", "2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("--memory", "10 mb").unwrap(), 10 << 20);
        assert_eq!(parse_bytes("--memory", "-1").unwrap(), -1);
        for bad in ["", "-5", "1x", "m", "1.2.3k", "99999999p"] {
            let e = parse_bytes("--memory", bad).unwrap_err().to_string();
            assert!(e.starts_with("--memory"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        for bad in ["", "5", "0s", "5x", "s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn proc_lines() {
        let l = proc_line(std::process::id() as i32).unwrap();
        assert!(
            l.trim_start().starts_with(&std::process::id().to_string()),
            "{l}"
        );
    }
}
