//! The root directory and the mount table: is the process's `/` the host's
//! (same device and inode, same mount), another mount of the host's
//! filesystem (a bind, maybe read-only), or a root of its own; and how many
//! mounts it sees (`/proc/PID/mountinfo`), how many of them read-only.
//!
//! The root is read with statx on the `/proc/PID/root` magic link (following
//! it reaches the process's root dentry and mount; `STATX_MNT_ID` names the
//! mount). That needs ptrace read access to the process. The host's root is
//! pid 1's, or — when /proc/1/root is closed to us — the inspector's own if
//! it runs in the host's mount namespace.

use serde::Serialize;

use crate::namespaces::{self, Share};
use crate::proc::{reason, Proc};
use crate::Host;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RootId {
    /// "major:minor" of the filesystem.
    pub dev: String,
    pub ino: u64,
    /// The mount's id (unique across namespaces), when the kernel reports it.
    pub mnt_id: Option<u64>,
}

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountLine {
    pub id: u64,
    pub parent: u64,
    pub dev: String,
    /// The directory of the filesystem mounted here.
    pub root: String,
    pub mount_point: String,
    pub options: String,
    pub fstype: String,
    pub source: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    pub status: String,
    pub in_force: bool,
    pub root: Option<RootId>,
    /// The mount that is the process's `/`.
    pub root_mount: Option<MountLine>,
    pub mount_count: Option<usize>,
    pub read_only_mounts: Option<usize>,
    pub host_root: Option<RootId>,
    pub host_mount_count: Option<usize>,
    /// Whose root `host_root` is.
    pub host_reference: Option<String>,
    pub error: Option<String>,
}

pub fn parse_mountinfo(text: &str) -> Vec<MountLine> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            if l.len() < 6 || r.len() < 2 {
                return None;
            }
            let options = l[5].to_string();
            Some(MountLine {
                id: l[0].parse().ok()?,
                parent: l[1].parse().ok()?,
                dev: l[2].to_string(),
                root: crate::cgroup::unescape(l[3]),
                mount_point: crate::cgroup::unescape(l[4]),
                read_only: options.split(',').any(|o| o == "ro"),
                options,
                fstype: r[0].to_string(),
                source: crate::cgroup::unescape(r[1]),
            })
        })
        .collect()
}

/// statx of a process's root (following the /proc/PID/root link).
pub fn root_id(p: &Proc) -> std::io::Result<RootId> {
    use rustix::fs::{statx, AtFlags, StatxFlags, CWD};
    let st = statx(
        CWD,
        p.path("root"),
        AtFlags::empty(),
        StatxFlags::BASIC_STATS | StatxFlags::MNT_ID,
    )?;
    Ok(RootId {
        dev: format!("{}:{}", st.stx_dev_major, st.stx_dev_minor),
        ino: st.stx_ino,
        mnt_id: (st.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(st.stx_mnt_id),
    })
}

/// The host's root and mount count, and whose they are.
fn host_root(host: &Host) -> Option<(RootId, Option<usize>, String)> {
    let count = |p: &Proc| p.read("mountinfo").ok().map(|t| t.lines().count());
    if let Some(h) = &host.proc {
        if let Ok(id) = root_id(h) {
            return Some((id, count(h), format!("pid {}", h.pid)));
        }
    }
    // The inspector itself, if it is in the host's mount namespace.
    let me = &host.inspector;
    let mine = namespaces::inode(me, "mnt").ok()?;
    let hosts = match namespaces::initial_inode("mnt", host.reference.kernel) {
        Some(i) => Some(i),
        None => host
            .proc
            .as_ref()
            .and_then(|h| namespaces::inode(h, "mnt").ok()),
    }?;
    if mine != hosts {
        return None;
    }
    let id = root_id(me).ok()?;
    Some((
        id,
        count(me),
        "the inspector (pid 1's root cannot be read; the inspector runs in the host's mount namespace)"
            .into(),
    ))
}

pub fn inspect(p: &Proc, host: &Host, ns: &namespaces::Layer) -> Layer {
    let (root, mut error) = match root_id(p) {
        Ok(r) => (Some(r), None),
        Err(e) => (
            None,
            Some(format!("{}: {}", p.path("root").display(), reason(&e))),
        ),
    };
    let mounts = match p.read("mountinfo") {
        Ok(t) => Some(parse_mountinfo(&t)),
        Err(e) => {
            error.get_or_insert(format!("{}: {}", p.path("mountinfo").display(), reason(&e)));
            None
        }
    };
    let root_mount = mounts.as_ref().and_then(|ms| {
        let by_id = root
            .as_ref()
            .and_then(|r| r.mnt_id)
            .and_then(|id| ms.iter().find(|m| m.id == id));
        by_id
            .or_else(|| ms.iter().rev().find(|m| m.mount_point == "/"))
            .cloned()
    });
    let read_only = root_mount.as_ref().map(|m| m.read_only);
    let host = host_root(host);
    let mnt_private = ns
        .items
        .iter()
        .find(|n| n.kind == "mnt")
        .is_some_and(|n| n.share == Share::Private);
    let (status, in_force) = match (&root, &host) {
        (Some(r), Some((h, _, _))) => {
            if r.mnt_id.is_some() && r.mnt_id == h.mnt_id {
                ("host", false)
            } else if r.dev == h.dev && r.ino == h.ino {
                if read_only == Some(true) {
                    ("host root ro", true)
                } else {
                    // Another mount of the host's root, writable: nothing withheld.
                    ("host", false)
                }
            } else {
                ("own root", true)
            }
        }
        (Some(_), None) if read_only == Some(true) => ("read-only", true),
        (Some(_), None) if mnt_private => ("own mounts", true),
        _ => ("unknown", false),
    };
    Layer {
        status: status.into(),
        in_force,
        root,
        mount_count: mounts.as_ref().map(Vec::len),
        read_only_mounts: mounts
            .as_ref()
            .map(|ms| ms.iter().filter(|m| m.read_only).count()),
        root_mount,
        host_mount_count: host.as_ref().and_then(|(_, c, _)| *c),
        host_reference: host.as_ref().map(|(_, _, w)| w.clone()),
        host_root: host.map(|(h, _, _)| h),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        let t = "24 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                 900 899 254:0 / / ro,nosuid,nodev,relatime master:1 - ext4 /dev/vda rw\n\
                 901 900 0:55 / /tmp rw,nosuid,nodev - tmpfs tmpfs rw,mode=1777\n";
        let m = parse_mountinfo(t);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].id, 24);
        assert!(!m[0].read_only);
        assert!(m[1].read_only);
        assert_eq!(m[1].parent, 899);
        assert_eq!(m[2].fstype, "tmpfs");
        assert_eq!(m[2].mount_point, "/tmp");
    }

    #[test]
    fn own_root_id() {
        let p = Proc::new(std::process::id() as i32);
        let r = root_id(&p).unwrap();
        let st = rustix::fs::stat("/").unwrap();
        assert_eq!(r.ino, st.st_ino);
        assert!(r.mnt_id.is_some(), "kernels since 5.8 report STATX_MNT_ID");
    }
}
