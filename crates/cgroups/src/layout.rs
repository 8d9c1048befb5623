//! Which cgroup hierarchies the host has, read from /proc/self/mountinfo,
//! and where the calling process sits in each (/proc/self/cgroup).
//!
//! Three layouts exist in the wild: pure v1 (one mount per controller or
//! group of controllers), pure v2 (one cgroup2 mount holding every controller)
//! and hybrid (v1 controllers plus a cgroup2 mount, usually
//! /sys/fs/cgroup/unified, holding the controllers no v1 hierarchy took).

use std::fs;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    V1,
    V2,
    Hybrid,
}

/// One mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// True for the cgroup2 hierarchy.
    pub v2: bool,
    /// v1: controllers bound to it (`cpu`, `memory`...) and `name=systemd`
    /// style names; v2: controllers listed in the root's cgroup.controllers.
    pub controllers: Vec<String>,
    pub mount_point: PathBuf,
    /// The cgroup the mount's root directory corresponds to (usually "/").
    pub mount_root: String,
}

impl Hierarchy {
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }

    /// Key identifying this hierarchy in /proc/PID/cgroup: the v1 controller
    /// list ("cpu,cpuacct", "name=systemd") or "" for v2.
    pub fn key(&self) -> String {
        if self.v2 {
            String::new()
        } else {
            self.controllers.join(",")
        }
    }

    /// Short label used in state files and messages: "v2" or the first controller.
    pub fn label(&self) -> String {
        if self.v2 {
            "unified".to_string()
        } else {
            self.controllers.join(",")
        }
    }

    /// The directory of `cgroup` (a path from the hierarchy root) in this mount.
    pub fn dir_of(&self, cgroup: &str) -> PathBuf {
        let rel = cgroup
            .strip_prefix(self.mount_root.trim_end_matches('/'))
            .unwrap_or(cgroup);
        let rel = rel.trim_start_matches('/');
        if rel.is_empty() {
            self.mount_point.clone()
        } else {
            self.mount_point.join(rel)
        }
    }
}

/// The host's hierarchies as seen from this process.
#[derive(Debug, Clone)]
pub struct Hierarchies {
    pub layout: Layout,
    pub list: Vec<Hierarchy>,
}

impl Hierarchies {
    pub fn detect() -> Result<Hierarchies> {
        let text = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| Error::io("read /proc/self/mountinfo", e))?;
        Self::from_mountinfo(&text, |p| fs::read_to_string(p).ok())
    }

    /// Parse mountinfo text; `read` reads a file (for cgroup2's controller list).
    pub fn from_mountinfo(
        text: &str,
        read: impl Fn(&Path) -> Option<String>,
    ) -> Result<Hierarchies> {
        let mut list: Vec<Hierarchy> = Vec::new();
        for mut h in parse_mounts(text) {
            if h.v2 {
                h.controllers = read(&h.mount_point.join("cgroup.controllers"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(String::from)
                    .collect();
            } else if list.iter().any(|x| !x.v2 && x.controllers == h.controllers) {
                // The same hierarchy can be mounted twice (bind mounts): keep the first.
                continue;
            }
            list.push(h);
        }
        let v1 = list.iter().any(|h| !h.v2);
        let v2 = list.iter().filter(|h| h.v2).count();
        if v2 > 1 {
            // Keep one cgroup2 mount: prefer the standard location.
            let keep = list
                .iter()
                .position(|h| {
                    h.v2 && (h.mount_point == Path::new("/sys/fs/cgroup")
                        || h.mount_point == Path::new("/sys/fs/cgroup/unified"))
                })
                .or_else(|| list.iter().position(|h| h.v2))
                .unwrap();
            let mut i = 0;
            list.retain(|h| {
                let k = !h.v2 || i == keep;
                i += 1;
                k
            });
        }
        let layout = match (v1, v2 > 0) {
            (true, true) => Layout::Hybrid,
            (true, false) => Layout::V1,
            (false, true) => Layout::V2,
            (false, false) => return Err(Error::NoCgroups),
        };
        Ok(Hierarchies { layout, list })
    }

    pub fn v2(&self) -> Option<&Hierarchy> {
        self.list.iter().find(|h| h.v2)
    }

    /// The hierarchy that owns `controller`: a v1 mount binding it, else v2 if
    /// the v2 root lists it.
    pub fn owner(&self, controller: &str) -> Option<&Hierarchy> {
        self.list
            .iter()
            .find(|h| !h.v2 && h.has(controller))
            .or_else(|| self.list.iter().find(|h| h.v2 && h.has(controller)))
    }
}

/// Every cgroup and cgroup2 mount in a mountinfo text, in order, duplicates
/// included; cgroup2 controllers are left empty (they live in a file).
pub fn parse_mounts(text: &str) -> Vec<Hierarchy> {
    let mut list = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 3 {
            continue;
        }
        let v2 = match r[0] {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        let controllers = if v2 {
            Vec::new()
        } else {
            r[2].split(',')
                .filter(|o| {
                    !matches!(
                        *o,
                        "rw" | "ro" | "xattr" | "clone_children" | "noprefix" | "cpuset_v2_mode"
                    ) && !o.starts_with("release_agent=")
                })
                .map(String::from)
                .collect()
        };
        list.push(Hierarchy {
            v2,
            controllers,
            mount_point: PathBuf::from(unescape(l[4])),
            mount_root: unescape(l[3]),
        });
    }
    list
}

/// Octal escapes in mountinfo fields (`\040` for space).
pub fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or(""), 8)
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where process `pid` (or self) sits: pairs of (hierarchy key, cgroup path),
/// the key as in [`Hierarchy::key`].
pub fn proc_cgroups(pid: Option<i32>) -> Result<Vec<(String, String)>> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/cgroup"),
        None => "/proc/self/cgroup".to_string(),
    };
    let text = fs::read_to_string(&path).map_err(|e| Error::io(format!("read {path}"), e))?;
    Ok(parse_proc_cgroup(&text))
}

pub fn parse_proc_cgroup(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let key = it.next()?;
            let path = it.next()?;
            Some((key.to_string(), path.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
22 1 0:20 / /sys rw,nosuid - sysfs sysfs rw
30 22 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
34 30 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
35 30 0:27 / /mnt/cpu\\040again rw,relatime - cgroup cgroup rw,cpu
";

    #[test]
    fn hybrid_layout() {
        let h = Hierarchies::from_mountinfo(HYBRID, |p| {
            assert_eq!(p, Path::new("/sys/fs/cgroup/unified/cgroup.controllers"));
            Some("hugetlb\n".into())
        })
        .unwrap();
        assert_eq!(h.layout, Layout::Hybrid);
        assert_eq!(h.list.len(), 4, "{:?}", h.list);
        assert_eq!(
            h.owner("memory").unwrap().mount_point,
            Path::new("/sys/fs/cgroup/memory")
        );
        assert!(h.owner("hugetlb").unwrap().v2);
        assert!(h.owner("io").is_none());
        assert_eq!(h.list[2].controllers, vec!["name=systemd"]);
    }

    #[test]
    fn pure_v2_and_v1() {
        let v2 = "34 30 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let h = Hierarchies::from_mountinfo(v2, |_| Some("cpu io memory pids".into())).unwrap();
        assert_eq!(h.layout, Layout::V2);
        assert!(h.owner("io").unwrap().v2);
        let v1: String = HYBRID
            .lines()
            .filter(|l| !l.contains("cgroup2"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            Hierarchies::from_mountinfo(&v1, |_| None).unwrap().layout,
            Layout::V1
        );
        assert!(matches!(
            Hierarchies::from_mountinfo("", |_| None),
            Err(Error::NoCgroups)
        ));
    }

    #[test]
    fn dirs_and_escapes() {
        let h = Hierarchy {
            v2: false,
            controllers: vec!["memory".into()],
            mount_point: "/sys/fs/cgroup/memory".into(),
            mount_root: "/".into(),
        };
        assert_eq!(h.dir_of("/a/b"), Path::new("/sys/fs/cgroup/memory/a/b"));
        assert_eq!(h.dir_of("/"), Path::new("/sys/fs/cgroup/memory"));
        let nested = Hierarchy {
            mount_root: "/outer".into(),
            ..h
        };
        assert_eq!(
            nested.dir_of("/outer/c"),
            Path::new("/sys/fs/cgroup/memory/c")
        );
        assert_eq!(unescape("/mnt/a\\040b"), "/mnt/a b");
    }

    #[test]
    fn proc_cgroup_lines() {
        let v = parse_proc_cgroup("4:memory:/process_api/x\n1:name=systemd:/\n0::/\n");
        assert_eq!(v[0], ("memory".into(), "/process_api/x".into()));
        assert_eq!(v[2], ("".into(), "/".into()));
    }
}
