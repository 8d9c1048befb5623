//! User namespaces (user_namespaces(7)) seen from an unprivileged runtime: whether this
//! process holds the host's privileges, the uid/gid maps of a container's new user
//! namespace (written directly, or through the setuid helpers `newuidmap`/`newgidmap`), and
//! a user namespace the runtime makes for itself (`sandbox` as a normal user).
//!
//! ## Why the maps are written the way they are
//! The kernel lets a process without CAP_SETUID over the parent namespace write exactly one
//! map line, mapping its own effective uid (gid) to one id, and a gid map only after
//! `setgroups` has been denied in the new namespace (otherwise the container's root could
//! drop a group the host uses to deny it access). Anything wider needs privilege, which
//! `newuidmap`/`newgidmap` (Debian package `uidmap`) lend for the ranges `/etc/subuid` and
//! `/etc/subgid` give the user. So, as runc and crun do: a map the runtime may write, it
//! writes; a gid map that is the caller's own gid alone gets `setgroups` denied first (so
//! `process.user.additionalGids` cannot be set in such a container); any other map goes
//! through the helper, and an error says which helper and which file when it cannot.

use std::fs;
use std::io;
use std::path::Path;
use std::process::Command;

use oci::IdMapping;

use crate::error::{msg, Context, Result};

/// Is this process in the host's (initial) user namespace? Its uid map is then the
/// identity over every id; any other namespace maps less.
pub fn in_initial() -> bool {
    fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| is_identity(&m))
}

fn is_identity(map: &str) -> bool {
    let fields: Vec<&str> = map.split_whitespace().collect();
    fields == ["0", "0", "4294967295"]
}

/// Does this process lack the host's privileges? True for a non-root user, and for root
/// of a user namespace (rootless podman runs its runtime so). Such a runtime can create no
/// device node, write no cgroup it was not delegated, raise no hard rlimit, and lower no
/// oom_score_adj; what it makes lives in user namespaces it owns.
pub fn unprivileged() -> bool {
    !rustix::process::geteuid().is_root() || !in_initial()
}

/// Does this process hold `cap` over the host — effective, in the initial user namespace?
/// (A capability held in a user namespace does not reach host-wide checks such as hard
/// rlimits or lowering oom_score_adj.)
pub fn host_capable(cap: rustix::thread::CapabilitySet) -> bool {
    in_initial() && rustix::thread::capabilities(None).is_ok_and(|c| c.effective.contains(cap))
}

/// The user namespace kind of a map file: names used in messages and helper lookups.
#[derive(Clone, Copy)]
enum Kind {
    Uid,
    Gid,
}

impl Kind {
    fn file(self) -> &'static str {
        match self {
            Kind::Uid => "uid_map",
            Kind::Gid => "gid_map",
        }
    }
    fn field(self) -> &'static str {
        match self {
            Kind::Uid => "linux.uidMappings",
            Kind::Gid => "linux.gidMappings",
        }
    }
    fn helper(self) -> &'static str {
        match self {
            Kind::Uid => "newuidmap",
            Kind::Gid => "newgidmap",
        }
    }
    fn ranges(self) -> &'static str {
        match self {
            Kind::Uid => "/etc/subuid",
            Kind::Gid => "/etc/subgid",
        }
    }
    fn own(self) -> u32 {
        match self {
            Kind::Uid => rustix::process::geteuid().as_raw(),
            Kind::Gid => rustix::process::getegid().as_raw(),
        }
    }
}

fn map_text(maps: &[IdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
        .collect()
}

/// Write the uid and gid maps of `pid`'s new user namespace (the runtime does it for the
/// container's init, from the parent namespace). The init must still be dumpable: the
/// map files of a non-dumpable process belong to root.
pub fn write_maps(pid: i32, uid: &[IdMapping], gid: &[IdMapping]) -> Result<()> {
    write_map(pid, Kind::Uid, uid)?;
    write_map(pid, Kind::Gid, gid)
}

fn write_map(pid: i32, kind: Kind, maps: &[IdMapping]) -> Result<()> {
    if maps.is_empty() {
        return Ok(());
    }
    let path = format!("/proc/{pid}/{}", kind.file());
    let own_only = maps.len() == 1 && maps[0].size == 1 && maps[0].host_id == kind.own();
    if matches!(kind, Kind::Gid) && own_only && unprivileged() {
        // The one gid map an unprivileged writer may write, once setgroups is denied.
        deny_setgroups(pid)?;
    }
    let err = match fs::write(&path, map_text(maps)) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let refused = matches!(err.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES));
    if !refused || own_only {
        return Err(err).ctx(|| format!("write {} to {path}", kind.field()));
    }
    run_helper(pid, kind, maps)
}

/// `setgroups` "deny" for `pid`'s user namespace ("self" for our own).
fn deny_setgroups(pid: impl std::fmt::Display) -> Result<()> {
    let path = format!("/proc/{pid}/setgroups");
    fs::write(&path, "deny").ctx(|| format!("write \"deny\" to {path}"))
}

/// `newuidmap PID ID HOST SIZE...` (or newgidmap): the setuid helper writes maps within the
/// ranges `/etc/subuid` (`/etc/subgid`) gives the calling user, and the user's own id.
fn run_helper(pid: i32, kind: Kind, maps: &[IdMapping]) -> Result<()> {
    let who = kind.own();
    let mut cmd = Command::new(kind.helper());
    cmd.arg(pid.to_string());
    for m in maps {
        cmd.args([
            m.container_id.to_string(),
            m.host_id.to_string(),
            m.size.to_string(),
        ]);
    }
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(msg(format!(
                "{}: {} (mapping more than your own {} {who}, as an unprivileged user) needs {} (Debian package uidmap) and a range for you in {}; it is not installed",
                kind.field(),
                map_text(maps).trim_end().replace('\n', ", "),
                if matches!(kind, Kind::Uid) { "uid" } else { "gid" },
                kind.helper(),
                kind.ranges()
            )))
        }
        Err(e) => return Err(e).ctx(|| format!("run {}", kind.helper())),
    };
    if out.status.success() {
        return Ok(());
    }
    Err(msg(format!(
        "{}: {} refused {} for pid {pid} ({}); the ranges it may map are yours in {}",
        kind.field(),
        kind.helper(),
        map_text(maps).trim_end().replace('\n', ", "),
        String::from_utf8_lossy(&out.stderr).trim(),
        kind.ranges()
    )))
}

/// Move this process into a new user namespace in which it is `uid`/`gid`, mapped to its
/// own ids outside (the only map an unprivileged process may write for itself), with every
/// capability over the namespace: what an unprivileged `sandbox` does before it builds
/// anything. `setgroups` is denied in it (the kernel's condition for the gid map). The
/// process must be single-threaded.
pub fn enter_own(uid: u32, gid: u32) -> Result<()> {
    let (outer_uid, outer_gid) = (Kind::Uid.own(), Kind::Gid.own());
    // SAFETY: plain unshare(2); the caller is single-threaded.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
        let e = io::Error::last_os_error();
        let hint =
            if e.raw_os_error() == Some(libc::EPERM) || e.raw_os_error() == Some(libc::ENOSPC) {
                unprivileged_userns_hint()
            } else {
                String::new()
            };
        return Err(e).ctx(|| format!("create a user namespace (unshare CLONE_NEWUSER){hint}"));
    }
    fs::write("/proc/self/uid_map", format!("{uid} {outer_uid} 1\n"))
        .ctx(|| format!("map uid {uid} to {outer_uid} in the new user namespace"))?;
    deny_setgroups("self")?;
    fs::write("/proc/self/gid_map", format!("{gid} {outer_gid} 1\n"))
        .ctx(|| format!("map gid {gid} to {outer_gid} in the new user namespace"))
}

/// Why an unprivileged user namespace may be refused, from the host's settings.
fn unprivileged_userns_hint() -> String {
    let read = |p: &str| fs::read_to_string(p).ok().map(|s| s.trim().to_string());
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return " (kernel.unprivileged_userns_clone is 0: unprivileged user namespaces are disabled on this host)".into();
    }
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return " (user.max_user_namespaces is 0 on this host)".into();
    }
    if Path::new("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").exists()
        && read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1")
    {
        return " (AppArmor restricts unprivileged user namespaces on this host)".into();
    }
    String::new()
}

/// Refuse, before anything is created, `process.user.additionalGids` in a new user
/// namespace whose gid map an unprivileged runtime writes itself (its own gid alone):
/// setgroups is denied there (see the module notes).
pub fn check_groups(linux: &oci::Linux, user: &oci::User) -> Result<()> {
    let new_userns = linux.new_namespace(oci::NamespaceType::User);
    let g = &linux.gid_mappings;
    let own_only = g.len() == 1 && g[0].size == 1 && g[0].host_id == Kind::Gid.own();
    if new_userns && own_only && unprivileged() && !user.additional_gids.is_empty() {
        return Err(msg(format!(
            "process.user.additionalGids {:?}: setgroups is denied in this user namespace (an unprivileged user mapping only its own gid); map more gids through newgidmap and /etc/subgid",
            user.additional_gids
        )));
    }
    Ok(())
}

/// Is `setgroups` denied in this process's user namespace? (Then no supplementary groups
/// can be set or dropped: the container keeps the groups it has.)
pub fn setgroups_denied() -> bool {
    fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_map() {
        assert!(is_identity("         0          0 4294967295\n"));
        assert!(!is_identity("0 1000 1\n"));
        assert!(!is_identity("0 0 4294967295\n1 1 1\n"));
    }

    #[test]
    fn map_lines() {
        let m = [
            IdMapping {
                container_id: 0,
                host_id: 1000,
                size: 1,
            },
            IdMapping {
                container_id: 1,
                host_id: 100_000,
                size: 65536,
            },
        ];
        assert_eq!(map_text(&m), "0 1000 1\n1 100000 65536\n");
    }
}
