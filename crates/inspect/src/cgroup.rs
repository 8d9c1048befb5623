//! cgroups: where the process sits in each hierarchy and the limits in
//! force there — memory, cpu bandwidth, pids — in cgroup v1 and v2 files.
//!
//! The effective limit is the smallest one on the path from the process's
//! cgroup up to the root of the mounted hierarchy (limits are hierarchical).
//! Paths in `/proc/PID/cgroup` and the `root` field of cgroup mounts in
//! mountinfo are both relative to the *inspector's* cgroup namespace, so they
//! line up: the directory is `mount point + (path - mount root)`. Inside a
//! container with its own cgroup namespace, only the container's subtree is
//! visible and the walk stops at its top.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::proc::{reason, Proc};
use crate::Host;

/// One line of /proc/PID/cgroup, with its directory when it is mounted here.
#[derive(Debug, Clone, Serialize)]
pub struct Membership {
    /// v1 controllers ("cpu,cpuacct", "name=systemd"); "" for cgroup v2.
    pub controllers: String,
    pub path: String,
    pub dir: Option<PathBuf>,
}

/// A limit and where its effective value comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Limit {
    /// The effective limit (bytes, pids, or CPUs for cpu); None: no limit.
    pub value: Option<f64>,
    /// The file that sets `value`.
    pub set_by: Option<PathBuf>,
    /// "v1" or "v2".
    pub version: &'static str,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Limits {
    /// None when no hierarchy with the controller is visible.
    pub memory: Option<Limit>,
    pub cpu: Option<Limit>,
    pub pids: Option<Limit>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    pub status: String,
    pub in_force: bool,
    pub cgroups: Vec<Membership>,
    pub limits: Limits,
    /// The reference's limits (pid 1's when it is the host's init).
    pub host_limits: Option<Limits>,
    /// The process is in the same cgroups as the reference.
    pub same_cgroups_as_host: Option<bool>,
    pub error: Option<String>,
}

/// A cgroup mount of the inspector's view (duplicates included: a process
/// may only see a bind of a hierarchy).
pub type Mount = cgroups::Hierarchy;

/// The cgroup mounts in a mountinfo text.
pub fn mounts(mountinfo: &str) -> Vec<Mount> {
    cgroups::layout::parse_mounts(mountinfo)
}

pub use cgroups::layout::unescape;

/// The lines of a /proc/PID/cgroup text, placed on `mounts`.
pub fn memberships(text: &str, mounts: &[Mount]) -> Vec<Membership> {
    let mut v = Vec::new();
    for line in text.lines() {
        let mut it = line.splitn(3, ':');
        let (Some(_), Some(ctrl), Some(path)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let want: Vec<&str> = ctrl.split(',').filter(|c| !c.is_empty()).collect();
        let dir = mounts
            .iter()
            .filter(|m| {
                if ctrl.is_empty() {
                    m.v2
                } else {
                    !m.v2 && want.iter().all(|c| m.controllers.iter().any(|mc| mc == c))
                }
            })
            .find_map(|m| dir_in(m, path));
        v.push(Membership {
            controllers: ctrl.to_string(),
            path: path.to_string(),
            dir,
        });
    }
    v
}

/// The directory of cgroup `path` under mount `m`, if the mount shows it.
fn dir_in(m: &Mount, path: &str) -> Option<PathBuf> {
    let root = m.mount_root.trim_end_matches('/');
    let rel = path.strip_prefix(root)?;
    if !(rel.is_empty() || rel.starts_with('/')) {
        return None;
    }
    let rel = rel.trim_start_matches('/');
    Some(if rel.is_empty() {
        m.mount_point.clone()
    } else {
        m.mount_point.join(rel)
    })
}

/// The directory chain from `dir` up to `top` (both included).
fn chain<'a>(dir: &'a Path, top: &Path) -> Vec<&'a Path> {
    let mut v = Vec::new();
    let mut d = Some(dir);
    while let Some(p) = d {
        v.push(p);
        if p == top || !p.starts_with(top) {
            break;
        }
        d = p.parent();
    }
    v
}

/// v1 memory.limit_in_bytes at or above this is "no limit" (LONG_MAX rounded to pages).
const V1_UNLIMITED: u64 = 0x7FFF_FFFF_FFFF_0000;

type Parse = fn(&Path) -> Option<Option<f64>>;

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn v1_memory(dir: &Path) -> Option<Option<f64>> {
    let v: u64 = read(&dir.join("memory.limit_in_bytes"))?.parse().ok()?;
    Some((v < V1_UNLIMITED).then_some(v as f64))
}

fn v2_memory(dir: &Path) -> Option<Option<f64>> {
    max_or_number(&read(&dir.join("memory.max"))?)
}

fn pids_max(dir: &Path) -> Option<Option<f64>> {
    max_or_number(&read(&dir.join("pids.max"))?)
}

fn v1_cpu(dir: &Path) -> Option<Option<f64>> {
    let quota: i64 = read(&dir.join("cpu.cfs_quota_us"))?.parse().ok()?;
    let period: u64 = read(&dir.join("cpu.cfs_period_us"))?.parse().ok()?;
    Some((quota > 0 && period > 0).then(|| quota as f64 / period as f64))
}

fn v2_cpu(dir: &Path) -> Option<Option<f64>> {
    let text = read(&dir.join("cpu.max"))?;
    let mut it = text.split_whitespace();
    let quota = it.next()?;
    let period: u64 = it.next()?.parse().ok()?;
    if quota == "max" {
        return Some(None);
    }
    let q: u64 = quota.parse().ok()?;
    Some((period > 0).then(|| q as f64 / period as f64))
}

fn max_or_number(s: &str) -> Option<Option<f64>> {
    if s == "max" {
        Some(None)
    } else {
        s.parse::<u64>().ok().map(|v| Some(v as f64))
    }
}

/// The effective limit along the chain: the smallest value, and who sets it.
fn effective(
    dir: &Path,
    top: &Path,
    parse: Parse,
    file: &str,
    version: &'static str,
) -> Option<Limit> {
    let mut found = false;
    let mut best: Option<(f64, PathBuf)> = None;
    for d in chain(dir, top) {
        let Some(v) = parse(d) else { continue };
        found = true;
        if let Some(v) = v {
            if best.as_ref().is_none_or(|(b, _)| v < *b) {
                best = Some((v, d.join(file)));
            }
        }
    }
    // The root cgroup has no limit files (v1 and v2): a hierarchy that has
    // the controller (v1: bound to the mount; v2: listed in
    // cgroup.controllers) but no file on the path means "no limit".
    if !found && dir.is_dir() && (version == "v1" || controller_enabled(top, file)) {
        found = true;
    }
    found.then(|| Limit {
        value: best.as_ref().map(|(v, _)| *v),
        set_by: best.map(|(_, p)| p),
        version,
    })
}

fn controller_enabled(top: &Path, file: &str) -> bool {
    let ctrl = file.split('.').next().unwrap_or("");
    read(&top.join("cgroup.controllers")).is_some_and(|c| c.split_whitespace().any(|x| x == ctrl))
}

/// The limits of a process whose cgroups are `ms`, seen through `mounts`.
pub fn limits(ms: &[Membership], mounts: &[Mount]) -> Limits {
    let find = |ctrl: &str| -> Option<(&Membership, &Mount)> {
        ms.iter().find_map(|m| {
            if m.controllers.split(',').any(|c| c == ctrl) {
                let mount = mounts.iter().find(|mt| {
                    !mt.v2
                        && mt.controllers.iter().any(|c| c == ctrl)
                        && m.dir
                            .as_ref()
                            .is_some_and(|d| d.starts_with(&mt.mount_point))
                })?;
                Some((m, mount))
            } else {
                None
            }
        })
    };
    let v2 = ms.iter().find(|m| m.controllers.is_empty()).and_then(|m| {
        let mount = mounts.iter().find(|mt| {
            mt.v2
                && m.dir
                    .as_ref()
                    .is_some_and(|d| d.starts_with(&mt.mount_point))
        })?;
        Some((m, mount))
    });
    let one = |ctrl: &str, v1: Parse, v1_file: &str, v2p: Parse, v2_file: &str| {
        if let Some((m, mount)) = find(ctrl) {
            let dir = m.dir.as_ref()?;
            return effective(dir, &mount.mount_point, v1, v1_file, "v1");
        }
        let (m, mount) = v2?;
        let dir = m.dir.as_ref()?;
        effective(dir, &mount.mount_point, v2p, v2_file, "v2")
    };
    Limits {
        memory: one(
            "memory",
            v1_memory,
            "memory.limit_in_bytes",
            v2_memory,
            "memory.max",
        ),
        cpu: one("cpu", v1_cpu, "cpu.cfs_quota_us", v2_cpu, "cpu.max"),
        pids: one("pids", pids_max, "pids.max", pids_max, "pids.max"),
    }
}

/// Is `l` stricter than `host`?
fn stricter(l: &Option<Limit>, host: Option<&Option<Limit>>) -> bool {
    let Some(v) = l.as_ref().and_then(|l| l.value) else {
        return false;
    };
    match host.and_then(|h| h.as_ref()).and_then(|h| h.value) {
        Some(h) => v < h,
        None => true,
    }
}

pub fn inspect(p: &Proc, host: &Host) -> Layer {
    let mountinfo = host.inspector.read("mountinfo").unwrap_or_default();
    let mounts = mounts(&mountinfo);
    let text = match p.read("cgroup") {
        Ok(t) => t,
        Err(e) => {
            return Layer {
                status: "unknown".into(),
                in_force: false,
                cgroups: Vec::new(),
                limits: Limits::default(),
                host_limits: None,
                same_cgroups_as_host: None,
                error: Some(format!("{}: {}", p.path("cgroup").display(), reason(&e))),
            }
        }
    };
    let cgroups = memberships(&text, &mounts);
    let lim = limits(&cgroups, &mounts);
    let host_text = host.proc.as_ref().and_then(|h| h.read("cgroup").ok());
    let host_limits = host_text
        .as_deref()
        .map(|t| limits(&memberships(t, &mounts), &mounts));
    let hl = host_limits.as_ref();
    let in_force = stricter(&lim.memory, hl.map(|h| &h.memory))
        || stricter(&lim.cpu, hl.map(|h| &h.cpu))
        || stricter(&lim.pids, hl.map(|h| &h.pids));
    Layer {
        status: if in_force { "limited" } else { "host" }.into(),
        in_force,
        same_cgroups_as_host: host_text.map(|t| t == text),
        cgroups,
        limits: lim,
        host_limits,
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
24 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid shared:6 - cgroup2 cgroup2 rw,nsdelegate
31 25 0:27 / /sys/fs/cgroup/memory rw,nosuid shared:7 - cgroup cgroup rw,memory
32 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:8 - cgroup cgroup rw,cpu,cpuacct
33 25 0:29 / /sys/fs/cgroup/systemd rw,nosuid shared:9 - cgroup cgroup rw,xattr,name=systemd
34 25 0:30 /sub /mnt/sub\\040dir rw - cgroup cgroup rw,pids
";

    #[test]
    fn parses_cgroup_mounts() {
        let m = mounts(HYBRID);
        assert_eq!(m.len(), 5);
        assert!(m[0].v2 && m[0].controllers.is_empty());
        assert_eq!(m[1].controllers, ["memory"]);
        assert_eq!(m[2].controllers, ["cpu", "cpuacct"]);
        assert_eq!(m[3].controllers, ["name=systemd"]);
        assert_eq!(m[4].mount_point, PathBuf::from("/mnt/sub dir"));
        assert_eq!(m[4].mount_root, "/sub");
    }

    #[test]
    fn places_memberships_on_mounts() {
        let m = mounts(HYBRID);
        let text = "4:memory:/a/b\n2:cpu,cpuacct:/\n9:name=systemd:/x\n8:pids:/sub/c\n7:pids:/other\n0::/u\n5:blkio:/z\n";
        let ms = memberships(text, &m);
        let dir = |i: usize| ms[i].dir.clone();
        assert_eq!(dir(0), Some(PathBuf::from("/sys/fs/cgroup/memory/a/b")));
        assert_eq!(dir(1), Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")));
        assert_eq!(dir(2), Some(PathBuf::from("/sys/fs/cgroup/systemd/x")));
        assert_eq!(dir(3), Some(PathBuf::from("/mnt/sub dir/c")));
        // Outside the mount's root: not visible.
        assert_eq!(dir(4), None);
        assert_eq!(dir(5), Some(PathBuf::from("/sys/fs/cgroup/unified/u")));
        // No mount binds blkio.
        assert_eq!(dir(6), None);
        assert_eq!(ms[5].controllers, "");
    }

    #[test]
    fn prefix_is_a_path_component() {
        let m = Mount {
            v2: true,
            controllers: vec![],
            mount_root: "/a".into(),
            mount_point: "/m".into(),
        };
        assert_eq!(dir_in(&m, "/a"), Some(PathBuf::from("/m")));
        assert_eq!(dir_in(&m, "/a/b"), Some(PathBuf::from("/m/b")));
        assert_eq!(dir_in(&m, "/ab"), None);
    }

    #[test]
    fn effective_limit_is_the_smallest_on_the_path() {
        let tmp = std::env::temp_dir().join(format!("bh-inspect-cg-{}", std::process::id()));
        let leaf = tmp.join("a/b");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(tmp.join("pids.max"), "max\n").unwrap();
        std::fs::write(tmp.join("a/pids.max"), "50\n").unwrap();
        std::fs::write(leaf.join("pids.max"), "100\n").unwrap();
        std::fs::write(leaf.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        std::fs::write(leaf.join("cpu.cfs_quota_us"), "50000\n").unwrap();
        std::fs::write(leaf.join("cpu.cfs_period_us"), "100000\n").unwrap();
        std::fs::write(leaf.join("cpu.max"), "max 100000\n").unwrap();
        let l = effective(&leaf, &tmp, pids_max, "pids.max", "v1").unwrap();
        assert_eq!(l.value, Some(50.0));
        assert_eq!(l.set_by, Some(tmp.join("a/pids.max")));
        let m = effective(&leaf, &tmp, v1_memory, "memory.limit_in_bytes", "v1").unwrap();
        assert_eq!(m.value, None);
        let c = effective(&leaf, &tmp, v1_cpu, "cpu.cfs_quota_us", "v1").unwrap();
        assert_eq!(c.value, Some(0.5));
        assert_eq!(v2_cpu(&leaf), Some(None));
        // No file anywhere on a v1 hierarchy of the controller: no limit.
        let none = effective(&leaf, &tmp, v2_memory, "memory.max", "v1").unwrap();
        assert_eq!(none.value, None);
        // v2 without the controller in cgroup.controllers: not there.
        assert!(effective(&leaf, &tmp, v2_memory, "memory.max", "v2").is_none());
        std::fs::write(tmp.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let v2 = effective(&leaf, &tmp, v2_memory, "memory.max", "v2").unwrap();
        assert_eq!(v2.value, None);
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape("/a\\040b\\011c"), "/a b\tc");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/trail\\04"), "/trail\\04");
    }

    #[test]
    fn stricter_than_host() {
        let l = |v: Option<f64>| {
            Some(Limit {
                value: v,
                set_by: None,
                version: "v1",
            })
        };
        assert!(stricter(&l(Some(10.0)), None));
        assert!(stricter(&l(Some(10.0)), Some(&l(None))));
        assert!(stricter(&l(Some(10.0)), Some(&l(Some(20.0)))));
        assert!(!stricter(&l(Some(20.0)), Some(&l(Some(20.0)))));
        assert!(!stricter(&l(None), Some(&l(Some(20.0)))));
        assert!(!stricter(&None, None));
    }
}
