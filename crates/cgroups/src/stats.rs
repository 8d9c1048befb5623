//! Resource usage of a container's cgroup in the JSON shape of runc's
//! `events --stats` (runc's types/events.go: same field names, and Go's
//! `omitempty` rules: zero numbers and empty lists left out where runc leaves
//! them out), read from the v1 or v2 files of each controller; and the OOM
//! watcher behind `events`.
//!
//! Each controller is read from the hierarchy that drives it, so on a hybrid
//! host memory comes from v1 and hugetlb from v2. Pressure (PSI) figures are
//! reported for controllers driven by v2, as runc does.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{Cgroup, Dir, Error, Result};

fn zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub cpu: Cpu,
    pub cpuset: CpuSet,
    pub memory: Memory,
    pub pids: Pids,
    pub blkio: Blkio,
    pub hugetlb: BTreeMap<String, Hugetlb>,
    pub intel_rdt: IntelRdt,
    /// runc fills this only for interfaces it created itself: always null here.
    pub network_interfaces: Option<Vec<NetworkInterface>>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Cpu {
    pub usage: CpuUsage,
    pub throttling: Throttling,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psi: Option<Psi>,
}

/// Nanoseconds.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct CpuUsage {
    #[serde(skip_serializing_if = "zero")]
    pub total: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu_kernel: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu_user: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Throttling {
    #[serde(skip_serializing_if = "zero")]
    pub periods: u64,
    #[serde(skip_serializing_if = "zero")]
    pub throttled_periods: u64,
    /// Nanoseconds.
    #[serde(skip_serializing_if = "zero")]
    pub throttled_time: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct CpuSet {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<u16>,
    pub cpu_exclusive: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mems: Vec<u16>,
    pub mem_hardwall: u64,
    pub mem_exclusive: u64,
    pub memory_migrate: u64,
    pub memory_spread_page: u64,
    pub memory_spread_slab: u64,
    pub memory_pressure: u64,
    pub sched_load_balance: u64,
    pub sched_relax_domain_level: i64,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct MemoryEntry {
    pub limit: u64,
    #[serde(skip_serializing_if = "zero")]
    pub usage: u64,
    #[serde(skip_serializing_if = "zero")]
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Memory {
    #[serde(skip_serializing_if = "zero")]
    pub cache: u64,
    pub usage: MemoryEntry,
    /// memory+swap, as runc reports it on v1 and v2 alike.
    pub swap: MemoryEntry,
    pub kernel: MemoryEntry,
    #[serde(rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    /// memory.stat, every key.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psi: Option<Psi>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Pids {
    #[serde(skip_serializing_if = "zero")]
    pub current: u64,
    /// 0 when there is no limit ("max"), as in runc.
    #[serde(skip_serializing_if = "zero")]
    pub limit: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct BlkioEntry {
    #[serde(skip_serializing_if = "zero")]
    pub major: u64,
    #[serde(skip_serializing_if = "zero")]
    pub minor: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub op: String,
    #[serde(skip_serializing_if = "zero")]
    pub value: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Blkio {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
    #[serde(rename = "ioQueueRecursive", skip_serializing_if = "Vec::is_empty")]
    pub io_queued_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_service_time_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_wait_time_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_merged_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_time_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sectors_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psi: Option<Psi>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Hugetlb {
    #[serde(skip_serializing_if = "zero")]
    pub usage: u64,
    #[serde(skip_serializing_if = "zero")]
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct IntelRdt {}

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkInterface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct PsiData {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    pub total: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Psi {
    pub some: PsiData,
    pub full: PsiData,
}

/// A number file; "max" reads as u64::MAX, a missing file as None.
fn num(dir: &Path, file: &str) -> Option<u64> {
    let t = fs::read_to_string(dir.join(file)).ok()?;
    let t = t.trim();
    if t == "max" {
        Some(u64::MAX)
    } else {
        t.parse().ok()
    }
}

/// "key value" lines (memory.stat, cpu.stat, memory.events...).
fn keyed(dir: &Path, file: &str) -> BTreeMap<String, u64> {
    fs::read_to_string(dir.join(file))
        .map(|t| parse_keyed(&t))
        .unwrap_or_default()
}

fn parse_keyed(t: &str) -> BTreeMap<String, u64> {
    t.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Space-separated numbers (cpuacct.usage_percpu).
fn numbers(dir: &Path, file: &str) -> Vec<u64> {
    fs::read_to_string(dir.join(file))
        .map(|t| {
            t.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// "0-2,5" -> [0, 1, 2, 5].
pub fn parse_list(s: &str) -> Vec<u16> {
    let mut v = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) {
                    v.extend(a..=b);
                }
            }
            None => v.extend(part.parse::<u16>().ok()),
        }
    }
    v
}

fn psi(dir: &Path, file: &str) -> Option<Psi> {
    let t = fs::read_to_string(dir.join(file)).ok()?;
    Some(parse_psi(&t))
}

/// "some avg10=0.00 avg60=0.00 avg300=0.00 total=0" lines.
fn parse_psi(t: &str) -> Psi {
    let mut p = Psi::default();
    for line in t.lines() {
        let mut it = line.split_whitespace();
        let d = match it.next() {
            Some("some") => &mut p.some,
            Some("full") => &mut p.full,
            _ => continue,
        };
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            match k {
                "avg10" => d.avg10 = v.parse().unwrap_or(0.0),
                "avg60" => d.avg60 = v.parse().unwrap_or(0.0),
                "avg300" => d.avg300 = v.parse().unwrap_or(0.0),
                "total" => d.total = v.parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    p
}

fn v1_dir<'a>(cg: &'a Cgroup, controller: &str) -> Option<&'a Dir> {
    cg.dirs.iter().find(|d| !d.v2 && d.has(controller))
}

/// Ticks of USER_HZ in nanoseconds (cpuacct.stat counts in USER_HZ).
fn tick_ns() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        1_000_000_000 / hz as u64
    } else {
        10_000_000
    }
}

fn cpu(cg: &Cgroup) -> Cpu {
    let mut c = Cpu::default();
    let v2 = cg.v2_dir();
    if let Some(d) = v1_dir(cg, "cpuacct") {
        let p = &d.path;
        c.usage.total = num(p, "cpuacct.usage").unwrap_or(0);
        c.usage.percpu = numbers(p, "cpuacct.usage_percpu");
        c.usage.percpu_kernel = numbers(p, "cpuacct.usage_percpu_sys");
        c.usage.percpu_user = numbers(p, "cpuacct.usage_percpu_user");
        let st = keyed(p, "cpuacct.stat");
        let t = tick_ns();
        c.usage.user = st.get("user").copied().unwrap_or(0) * t;
        c.usage.kernel = st.get("system").copied().unwrap_or(0) * t;
    } else if let Some(d) = v2 {
        let st = keyed(&d.path, "cpu.stat");
        c.usage.total = st.get("usage_usec").copied().unwrap_or(0) * 1000;
        c.usage.user = st.get("user_usec").copied().unwrap_or(0) * 1000;
        c.usage.kernel = st.get("system_usec").copied().unwrap_or(0) * 1000;
    }
    if let Some(d) = v1_dir(cg, "cpu") {
        let st = keyed(&d.path, "cpu.stat");
        c.throttling.periods = st.get("nr_periods").copied().unwrap_or(0);
        c.throttling.throttled_periods = st.get("nr_throttled").copied().unwrap_or(0);
        c.throttling.throttled_time = st.get("throttled_time").copied().unwrap_or(0);
    } else if let Some(d) = v2 {
        let st = keyed(&d.path, "cpu.stat");
        c.throttling.periods = st.get("nr_periods").copied().unwrap_or(0);
        c.throttling.throttled_periods = st.get("nr_throttled").copied().unwrap_or(0);
        c.throttling.throttled_time = st.get("throttled_usec").copied().unwrap_or(0) * 1000;
        c.psi = psi(&d.path, "cpu.pressure");
    }
    c
}

fn cpuset(cg: &Cgroup) -> CpuSet {
    let mut s = CpuSet::default();
    if let Some(d) = v1_dir(cg, "cpuset") {
        let p = &d.path;
        let read = |f: &str| fs::read_to_string(p.join(f)).unwrap_or_default();
        s.cpus = parse_list(&read("cpuset.cpus"));
        s.mems = parse_list(&read("cpuset.mems"));
        let n = |f: &str| num(p, f).unwrap_or(0);
        s.cpu_exclusive = n("cpuset.cpu_exclusive");
        s.mem_hardwall = n("cpuset.mem_hardwall");
        s.mem_exclusive = n("cpuset.mem_exclusive");
        s.memory_migrate = n("cpuset.memory_migrate");
        s.memory_spread_page = n("cpuset.memory_spread_page");
        s.memory_spread_slab = n("cpuset.memory_spread_slab");
        s.memory_pressure = n("cpuset.memory_pressure");
        s.sched_load_balance = n("cpuset.sched_load_balance");
        s.sched_relax_domain_level = fs::read_to_string(p.join("cpuset.sched_relax_domain_level"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
    } else if let Some(d) = cg.v2_dir() {
        let read = |f: &str| fs::read_to_string(d.path.join(f)).unwrap_or_default();
        s.cpus = parse_list(&read("cpuset.cpus.effective"));
        s.mems = parse_list(&read("cpuset.mems.effective"));
    }
    s
}

fn v1_entry(p: &Path, prefix: &str) -> MemoryEntry {
    let n = |f: &str| num(p, &format!("{prefix}.{f}")).unwrap_or(0);
    MemoryEntry {
        limit: n("limit_in_bytes"),
        usage: n("usage_in_bytes"),
        max: n("max_usage_in_bytes"),
        failcnt: n("failcnt"),
    }
}

fn memory(cg: &Cgroup) -> Memory {
    let mut m = Memory::default();
    let Some(d) = cg.dir_for("memory") else {
        return m;
    };
    let p = &d.path;
    m.raw = keyed(p, "memory.stat");
    if !d.v2 {
        m.cache = m.raw.get("cache").copied().unwrap_or(0);
        m.usage = v1_entry(p, "memory");
        m.swap = v1_entry(p, "memory.memsw");
        m.kernel = v1_entry(p, "memory.kmem");
        m.kernel_tcp = v1_entry(p, "memory.kmem.tcp");
        return m;
    }
    m.cache = m.raw.get("file").copied().unwrap_or(0);
    let events = keyed(p, "memory.events");
    m.usage = MemoryEntry {
        limit: num(p, "memory.max").unwrap_or(u64::MAX),
        usage: num(p, "memory.current").unwrap_or(0),
        max: num(p, "memory.peak").unwrap_or(0),
        failcnt: events.get("max").copied().unwrap_or(0),
    };
    // runc reports memory+swap under "swap" on v2 too.
    if let Some(sw) = num(p, "memory.swap.current") {
        m.swap = MemoryEntry {
            limit: num(p, "memory.swap.max")
                .unwrap_or(u64::MAX)
                .saturating_add(m.usage.limit),
            usage: sw.saturating_add(m.usage.usage),
            max: 0,
            failcnt: keyed(p, "memory.swap.events")
                .get("max")
                .copied()
                .unwrap_or(0),
        };
    }
    m.psi = psi(p, "memory.pressure");
    m
}

fn pids(cg: &Cgroup) -> Pids {
    let Some(d) = cg.dir_for("pids") else {
        return Pids::default();
    };
    Pids {
        current: num(&d.path, "pids.current").unwrap_or(0),
        limit: match num(&d.path, "pids.max") {
            Some(u64::MAX) | None => 0,
            Some(n) => n,
        },
    }
}

/// v1 blkio lines: "8:0 Read 4096" (a last "Total N" line is skipped).
fn parse_blkio(t: &str) -> Vec<BlkioEntry> {
    t.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (maj, min) = f.first()?.split_once(':')?;
            let (op, value) = match f.len() {
                3 => (f[1].to_string(), f[2].parse().ok()?),
                2 => (String::new(), f[1].parse().ok()?),
                _ => return None,
            };
            Some(BlkioEntry {
                major: maj.parse().ok()?,
                minor: min.parse().ok()?,
                op,
                value,
            })
        })
        .collect()
}

/// v2 io.stat: "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0".
fn parse_io_stat(t: &str) -> (Vec<BlkioEntry>, Vec<BlkioEntry>) {
    let (mut bytes, mut ios) = (Vec::new(), Vec::new());
    for line in t.lines() {
        let mut it = line.split_whitespace();
        let Some((maj, min)) = it.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (maj.parse::<u64>(), min.parse::<u64>()) else {
            continue;
        };
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let Ok(value) = v.parse::<u64>() else {
                continue;
            };
            let (list, op) = match k {
                "rbytes" => (&mut bytes, "Read"),
                "wbytes" => (&mut bytes, "Write"),
                "dbytes" => (&mut bytes, "Discard"),
                "rios" => (&mut ios, "Read"),
                "wios" => (&mut ios, "Write"),
                "dios" => (&mut ios, "Discard"),
                _ => continue,
            };
            list.push(BlkioEntry {
                major,
                minor,
                op: op.into(),
                value,
            });
        }
    }
    (bytes, ios)
}

fn blkio(cg: &Cgroup) -> Blkio {
    let mut b = Blkio::default();
    if let Some(d) = v1_dir(cg, "blkio") {
        // runc's order: CFQ's files, else BFQ's, else the throttling layer's.
        let read_first = |names: &[&str]| -> Vec<BlkioEntry> {
            names
                .iter()
                .find_map(|f| fs::read_to_string(d.path.join(f)).ok())
                .map(|t| parse_blkio(&t))
                .unwrap_or_default()
        };
        let pick = |stem: &str| -> Vec<BlkioEntry> {
            for prefix in ["blkio.", "blkio.bfq.", "blkio.throttle."] {
                let v = read_first(&[
                    &format!("{prefix}{stem}_recursive"),
                    &format!("{prefix}{stem}"),
                ]);
                if !v.is_empty() {
                    return v;
                }
            }
            Vec::new()
        };
        b.io_service_bytes_recursive = pick("io_service_bytes");
        b.io_serviced_recursive = pick("io_serviced");
        return b;
    }
    if let Some(d) = cg.v2_dir() {
        if let Ok(t) = fs::read_to_string(d.path.join("io.stat")) {
            let (bytes, ios) = parse_io_stat(&t);
            b.io_service_bytes_recursive = bytes;
            b.io_serviced_recursive = ios;
        }
        b.psi = psi(&d.path, "io.pressure");
    }
    b
}

fn hugetlb(cg: &Cgroup) -> BTreeMap<String, Hugetlb> {
    let mut out = BTreeMap::new();
    let Some(d) = cg.dir_for("hugetlb") else {
        return out;
    };
    for size in crate::host_page_sizes() {
        let p = &d.path;
        let h = if d.v2 {
            let Some(usage) = num(p, &format!("hugetlb.{size}.current")) else {
                continue;
            };
            Hugetlb {
                usage,
                max: 0,
                failcnt: keyed(p, &format!("hugetlb.{size}.events"))
                    .get("max")
                    .copied()
                    .unwrap_or(0),
            }
        } else {
            let Some(usage) = num(p, &format!("hugetlb.{size}.usage_in_bytes")) else {
                continue;
            };
            Hugetlb {
                usage,
                max: num(p, &format!("hugetlb.{size}.max_usage_in_bytes")).unwrap_or(0),
                failcnt: num(p, &format!("hugetlb.{size}.failcnt")).unwrap_or(0),
            }
        };
        out.insert(size, h);
    }
    out
}

/// Read the container's usage. Fails when its cgroup no longer exists.
pub fn collect(cg: &Cgroup) -> Result<Stats> {
    if let Some(d) = cg.dirs.iter().find(|d| !d.path.is_dir()) {
        return Err(Error::io(
            format!("cgroup {}", d.path.display()),
            std::io::Error::from(ErrorKind::NotFound),
        ));
    }
    Ok(Stats {
        cpu: cpu(cg),
        cpuset: cpuset(cg),
        memory: memory(cg),
        pids: pids(cg),
        blkio: blkio(cg),
        hugetlb: hugetlb(cg),
        intel_rdt: IntelRdt {},
        network_interfaces: None,
    })
}

/// OOM kills in the container's memory cgroup, with a descriptor to poll:
/// v1 an eventfd registered on memory.oom_control through
/// cgroup.event_control; v2 an inotify watch on memory.events. The count is
/// the `oom_kill` counter of memory.oom_control (v1) or memory.events (v2).
pub struct OomWatch {
    fd: OwnedFd,
    counter: PathBuf,
    last: u64,
    v2: bool,
    /// v1: memory.oom_control, open for the registration's lifetime.
    _ctl: Option<fs::File>,
}

fn oom_kills(counter: &Path) -> u64 {
    fs::read_to_string(counter)
        .map(|t| parse_keyed(&t).get("oom_kill").copied().unwrap_or(0))
        .unwrap_or(0)
}

impl OomWatch {
    /// None when the container has no memory controller.
    pub fn new(cg: &Cgroup) -> Result<Option<OomWatch>> {
        let Some(d) = cg.dir_for("memory") else {
            return Ok(None);
        };
        let w = if d.v2 {
            use rustix::fs::inotify;
            let counter = d.path.join("memory.events");
            let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
                .map_err(|e| Error::io("inotify_init1", e.into()))?;
            inotify::add_watch(&fd, &counter, inotify::WatchFlags::MODIFY)
                .map_err(|e| Error::io(format!("inotify watch {}", counter.display()), e.into()))?;
            OomWatch {
                fd,
                last: oom_kills(&counter),
                counter,
                v2: true,
                _ctl: None,
            }
        } else {
            use rustix::event::{eventfd, EventfdFlags};
            use std::os::fd::AsRawFd;
            let counter = d.path.join("memory.oom_control");
            let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
                .map_err(|e| Error::io("eventfd", e.into()))?;
            let ctl = fs::File::open(&counter)
                .map_err(|e| Error::io(format!("open {}", counter.display()), e))?;
            crate::write_file(
                &d.path.join("cgroup.event_control"),
                &format!("{} {}", fd.as_raw_fd(), ctl.as_raw_fd()),
            )?;
            OomWatch {
                fd,
                last: oom_kills(&counter),
                counter,
                v2: false,
                _ctl: Some(ctl),
            }
        };
        Ok(Some(w))
    }

    /// Poll this for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Consume pending notifications; true if there were any.
    pub fn drain(&self) -> bool {
        let mut buf = [0u8; 4096];
        let mut any = false;
        while let Ok(n) = rustix::io::read(&self.fd, &mut buf) {
            if n == 0 {
                break;
            }
            any = true;
            if !self.v2 {
                break; // an eventfd read returns the whole count at once
            }
        }
        any
    }

    /// OOM kills since the last call (or since the watch began).
    pub fn new_kills(&mut self) -> u64 {
        let now = oom_kills(&self.counter);
        let n = now.saturating_sub(self.last);
        self.last = now;
        n
    }

    /// True for the v1 eventfd, which also fires for an OOM that killed
    /// nothing (disableOOMKiller).
    pub fn is_v1(&self) -> bool {
        !self.v2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_stats_have_runcs_shape() {
        // What runc 1.1 prints for an idle container's empty sections.
        let s = Stats::default();
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(
            j["cpu"],
            serde_json::json!({"usage": {"kernel": 0, "user": 0}, "throttling": {}})
        );
        assert_eq!(j["pids"], serde_json::json!({}));
        assert_eq!(j["blkio"], serde_json::json!({}));
        assert_eq!(j["hugetlb"], serde_json::json!({}));
        assert_eq!(j["intel_rdt"], serde_json::json!({}));
        assert_eq!(j["network_interfaces"], serde_json::Value::Null);
        assert_eq!(
            j["memory"]["kernelTCP"],
            serde_json::json!({"limit": 0, "failcnt": 0})
        );
        assert_eq!(j["cpuset"]["sched_relax_domain_level"], 0);
        let keys: Vec<_> = j.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "blkio",
                "cpu",
                "cpuset",
                "hugetlb",
                "intel_rdt",
                "memory",
                "network_interfaces",
                "pids"
            ]
        );
    }

    #[test]
    fn parsers() {
        assert_eq!(parse_list("0-2,5"), vec![0, 1, 2, 5]);
        assert_eq!(parse_list("\n"), Vec::<u16>::new());
        let b = parse_blkio("8:0 Read 4096\n8:0 Write 0\nTotal 4096\n");
        assert_eq!(b.len(), 2);
        assert_eq!(
            (b[0].major, b[0].op.as_str(), b[0].value),
            (8, "Read", 4096)
        );
        let (bytes, ios) =
            parse_io_stat("259:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n");
        assert_eq!(bytes.len(), 3);
        assert_eq!(bytes[1].op, "Write");
        assert_eq!(ios[0].value, 1);
        let p = parse_psi("some avg10=1.50 avg60=0.00 avg300=0.00 total=42\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n");
        assert_eq!(p.some.avg10, 1.5);
        assert_eq!(p.full.total, 7);
        assert_eq!(
            parse_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n").get("oom_kill"),
            Some(&3)
        );
    }

    /// A fake v2 directory: the readers and the OOM watch of the v2 memory
    /// controller, which this host's cgroup2 does not have.
    fn fake_v2(files: &[(&str, &str)]) -> (Cgroup, PathBuf) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let d = std::env::temp_dir().join(format!("bh-fake-v2-{}-{n}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        for (f, t) in files {
            fs::write(d.join(f), t).unwrap();
        }
        let cg = Cgroup {
            layout: crate::Layout::V2,
            path: "/fake".into(),
            dirs: vec![Dir {
                v2: true,
                controllers: vec!["memory".into(), "pids".into(), "cpu".into(), "io".into()],
                path: d.clone(),
            }],
            created: Vec::new(),
            outside: Vec::new(),
        };
        (cg, d)
    }

    #[test]
    fn v2_files() {
        let (cg, d) = fake_v2(&[
            ("memory.current", "4096\n"),
            ("memory.max", "max\n"),
            ("memory.peak", "8192\n"),
            ("memory.stat", "anon 100\nfile 300\n"),
            ("memory.events", "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n"),
            ("memory.swap.current", "10\n"),
            ("memory.swap.max", "100\n"),
            ("pids.current", "3\n"),
            ("pids.max", "max\n"),
            ("cpu.stat", "usage_usec 5\nuser_usec 3\nsystem_usec 2\nnr_periods 4\nnr_throttled 1\nthrottled_usec 7\n"),
            ("io.stat", "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n"),
        ]);
        let s = collect(&cg).unwrap();
        fs::remove_dir_all(&d).unwrap();
        assert_eq!(s.memory.usage.usage, 4096);
        assert_eq!(s.memory.usage.limit, u64::MAX);
        assert_eq!(s.memory.usage.max, 8192);
        assert_eq!(s.memory.usage.failcnt, 2);
        assert_eq!(s.memory.cache, 300);
        assert_eq!(s.memory.swap.usage, 4106);
        assert_eq!(s.memory.swap.limit, u64::MAX, "saturates: max + 100");
        assert_eq!((s.pids.current, s.pids.limit), (3, 0));
        assert_eq!(s.cpu.usage.total, 5000);
        assert_eq!((s.cpu.usage.user, s.cpu.usage.kernel), (3000, 2000));
        assert_eq!(s.cpu.throttling.throttled_time, 7000);
        assert_eq!(s.blkio.io_service_bytes_recursive.len(), 3);
        assert_eq!(s.blkio.io_serviced_recursive[1].value, 4);
    }

    #[test]
    fn v2_oom_watch_counts_kills() {
        let (cg, d) = fake_v2(&[("memory.events", "oom 0\noom_kill 0\n")]);
        let mut w = OomWatch::new(&cg).unwrap().unwrap();
        assert!(!w.is_v1());
        assert!(!w.drain());
        assert_eq!(w.new_kills(), 0);
        fs::write(d.join("memory.events"), "oom 2\noom_kill 2\n").unwrap();
        let mut fds = [rustix::event::PollFd::new(
            &w.fd,
            rustix::event::PollFlags::IN,
        )];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        assert_eq!(rustix::event::poll(&mut fds, Some(&zero)).unwrap(), 1);
        assert!(w.drain());
        assert_eq!(w.new_kills(), 2);
        assert_eq!(w.new_kills(), 0);
        fs::remove_dir_all(&d).unwrap();
    }
}
