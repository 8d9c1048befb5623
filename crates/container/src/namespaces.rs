//! Namespaces (namespaces(7)): which to create at clone time, which to join
//! with setns(2), and the user/time namespace details that need the parent.
//!
//! The fast path is one clone3() with every new namespace flag: the child is
//! pid 1 of its pid namespace and owns all new namespaces through its new user
//! namespace (clone creates the user namespace first). Two namespaces are left
//! out of the clone on purpose:
//! - cgroup: unshared by the child only after the parent has put it in its
//!   cgroup, so the namespace's root is the container's cgroup;
//! - time: offsets can only be written before any process lives in the new
//!   namespace, so the child unshares it, writes its offsets and enters it at execve.
//!
//! Joining namespaces by path needs a slower path when a *new* user namespace
//! is also requested: the joins must happen while still privileged in the
//! host user namespace, i.e. before the user namespace is created, so the child
//! clones with no flags, joins, unshares, and forks the real init.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use oci::{IdMapping, Linux, NamespaceType};
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

use crate::error::{Context, Result};

pub fn clone_flag(t: NamespaceType) -> u64 {
    (match t {
        NamespaceType::Pid => libc::CLONE_NEWPID,
        NamespaceType::Network => libc::CLONE_NEWNET,
        NamespaceType::Mount => libc::CLONE_NEWNS,
        NamespaceType::Ipc => libc::CLONE_NEWIPC,
        NamespaceType::Uts => libc::CLONE_NEWUTS,
        NamespaceType::User => libc::CLONE_NEWUSER,
        NamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        NamespaceType::Time => libc::CLONE_NEWTIME,
    }) as u32 as u64
}

fn link_type(t: NamespaceType) -> LinkNameSpaceType {
    match t {
        NamespaceType::Pid => LinkNameSpaceType::ProcessID,
        NamespaceType::Network => LinkNameSpaceType::Network,
        NamespaceType::Mount => LinkNameSpaceType::Mount,
        NamespaceType::Ipc => LinkNameSpaceType::InterProcessCommunication,
        NamespaceType::Uts => LinkNameSpaceType::HostNameAndNISDomainName,
        NamespaceType::User => LinkNameSpaceType::User,
        NamespaceType::Cgroup => LinkNameSpaceType::ControlGroup,
        NamespaceType::Time => LinkNameSpaceType::Time,
    }
}

/// How the container's namespaces come to be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Flags for clone3 (the fast path puts every new namespace here).
    pub clone_flags: u64,
    /// Namespaces to join, user first (parent joins pid itself, see `parent_pid_join`).
    pub joins: Vec<(NamespaceType, String)>,
    /// Flags the child unshares after its joins (slow path only).
    pub unshare_flags: u64,
    /// The child unshared a pid namespace and must fork the real init.
    pub double_fork: bool,
    /// The pid namespace to join, done by the parent before clone so the child
    /// is born in it.
    pub parent_pid_join: Option<String>,
    pub new_user: bool,
    pub new_cgroup: bool,
    pub new_time: bool,
    pub new_mount: bool,
    pub join_mount: bool,
}

pub fn plan(linux: &Linux) -> Plan {
    let mut p = Plan::default();
    let mut new_flags = 0u64;
    for ns in &linux.namespaces {
        match (&ns.path, ns.typ) {
            (Some(path), NamespaceType::Pid) => p.parent_pid_join = Some(path.clone()),
            (Some(path), t) => p.joins.push((t, path.clone())),
            (None, NamespaceType::Cgroup) => p.new_cgroup = true,
            (None, NamespaceType::Time) => p.new_time = true,
            (None, t) => new_flags |= clone_flag(t),
        }
    }
    // setns(user) must come first: later joins need the caps it grants.
    p.joins.sort_by_key(|(t, _)| *t != NamespaceType::User);
    p.new_user = new_flags & clone_flag(NamespaceType::User) != 0;
    p.new_mount = new_flags & clone_flag(NamespaceType::Mount) != 0;
    p.join_mount = p.joins.iter().any(|(t, _)| *t == NamespaceType::Mount);
    if p.joins.is_empty() || !p.new_user {
        // Joins that happen after clone are still privileged (no new userns):
        // everything new goes into clone3.
        p.clone_flags = new_flags;
    } else {
        // New userns + joins: create the userns only after joining.
        p.unshare_flags = new_flags;
        p.double_fork = new_flags & clone_flag(NamespaceType::Pid) != 0;
    }
    p
}

/// Join one namespace by path, checking it is of the expected type.
pub fn join(t: NamespaceType, path: &str) -> Result<()> {
    let f = File::open(path).ctx(|| format!("open {t} namespace {path}"))?;
    join_fd(t, f.as_fd()).map_err(|e| crate::error::msg(format!("{path}: {e}")))
}

/// Join the namespace an open namespace file refers to (setns(2), the type checked).
pub fn join_fd(t: NamespaceType, fd: BorrowedFd<'_>) -> Result<()> {
    move_into_link_name_space(fd, Some(link_type(t))).ctx(|| format!("setns to the {t} namespace"))
}

/// The parent joins the target pid namespace so its next child is born there.
pub fn join_pid_for_children(path: &str) -> Result<()> {
    join(NamespaceType::Pid, path)
}

pub fn unshare(flags: u64) -> Result<()> {
    if flags == 0 {
        return Ok(());
    }
    // SAFETY: plain unshare(2); the process is single-threaded here.
    let r = unsafe { libc::unshare(flags as libc::c_int) };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| format!("unshare({flags:#x})"));
    }
    Ok(())
}

/// Write the uid/gid maps of `pid`'s new user namespace (done by the parent, from the
/// namespace above it: see [`crate::userns`] for how an unprivileged runtime does it).
pub fn write_id_maps(pid: i32, linux: &Linux) -> Result<()> {
    crate::userns::write_maps(pid, &linux.uid_mappings, &linux.gid_mappings)
}

/// Does `id` have a mapping in the namespace (so setuid to it can work)?
pub fn is_mapped(maps: &[IdMapping], id: u32) -> bool {
    maps.iter()
        .any(|m| id >= m.container_id && (id - m.container_id) < m.size)
}

/// Write the time namespace offsets of process `pid` ("self" or a number):
/// /proc/PID/timens_offsets sets them for the time namespace that process
/// has unshared (its children's). The kernel accepts them only before any
/// process has entered that namespace, and only from a writer with
/// CAP_SYS_TIME over the namespace's user namespace that may open the file,
/// which a non-dumpable process's root-owned /proc files refuse to a
/// container root mapped to another host uid: with a new user namespace the
/// runtime writes them for the init.
pub fn write_time_offsets(pid: &str, linux: &Linux) -> Result<()> {
    if linux.time_offsets.is_empty() {
        return Ok(());
    }
    let text: String = linux
        .time_offsets
        .iter()
        .map(|(clock, o)| format!("{clock} {} {}\n", o.secs, o.nanosecs))
        .collect();
    let path = format!("/proc/{pid}/timens_offsets");
    std::fs::write(&path, text).ctx(|| format!("write linux.timeOffsets to {path}"))
}

/// Check, before anything is created, that every path names a namespace of
/// the right type (runtime-spec: "MUST generate an error if path is not
/// associated with a namespace of type type").
pub fn check_paths(linux: &Linux) -> Result<()> {
    for (i, ns) in linux.namespaces.iter().enumerate() {
        let Some(path) = &ns.path else { continue };
        let f = File::open(path).ctx(|| format!("linux.namespaces[{i}].path: open {path}"))?;
        // NS_GET_NSTYPE (linux/nsfs.h) returns the CLONE_NEW* type of an nsfs file.
        const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
        // SAFETY: ioctl on an owned fd with no argument.
        let t = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), NS_GET_NSTYPE as _) };
        if t < 0 {
            return Err(crate::error::msg(format!(
                "linux.namespaces[{i}].path: {path} is not a namespace file"
            )));
        }
        if t as u64 != clone_flag(ns.typ) {
            return Err(crate::error::msg(format!(
                "linux.namespaces[{i}].path: {path} is not a {} namespace",
                ns.typ
            )));
        }
    }
    Ok(())
}

/// Send `signal` to every process in the pid namespace of process `init` (its pid 1),
/// found by the namespace link of each /proc entry. Processes forked meanwhile may be
/// missed, except with SIGKILL: the kernel kills the whole namespace with its pid 1.
pub fn signal_pid_namespace(init: i32, signal: i32) -> Result<()> {
    let target = std::fs::read_link(format!("/proc/{init}/ns/pid"))
        .ctx(|| format!("read the pid namespace of {init}"))?;
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .ctx(|| "read /proc".into())?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|l| l == target))
        .collect();
    // The init last: with SIGKILL its death takes the others anyway.
    pids.sort_by_key(|p| *p == init);
    for pid in pids {
        // SAFETY: plain kill(2) on a pid of the container's namespace.
        if unsafe { libc::kill(pid, signal) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(e).ctx(|| format!("kill {pid}"));
            }
        }
    }
    Ok(())
}

/// Bring up the loopback interface of this process's (new) network namespace, which the
/// kernel creates down, as runc does for every container with a network namespace of its
/// own: programs expect 127.0.0.1 to work. Done by the init, which holds CAP_NET_ADMIN
/// over the namespace whoever the runtime is.
pub fn loopback_up() -> Result<()> {
    set_lo_up().ctx(|| "bring up the loopback interface lo of the new network namespace".into())
}

fn set_lo_up() -> std::io::Result<()> {
    // SAFETY: a plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass.
    unsafe {
        if libc::ioctl(raw, libc::SIOCGIFFLAGS as _, &mut ifr) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(raw, libc::SIOCSIFFLAGS as _, &ifr) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// True if `path` is a namespace file of the current process's own namespace
/// of that type (joining it is a no-op).
pub fn is_own(t: NamespaceType, path: &str) -> bool {
    let own = format!("/proc/self/ns/{}", t.proc_name());
    match (std::fs::metadata(own), std::fs::metadata(Path::new(path))) {
        (Ok(a), Ok(b)) => {
            use std::os::unix::fs::MetadataExt;
            a.ino() == b.ino() && a.dev() == b.dev()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci::Namespace;

    fn ns(t: NamespaceType, path: Option<&str>) -> Namespace {
        Namespace {
            typ: t,
            path: path.map(String::from),
        }
    }

    #[test]
    fn fast_path_puts_everything_in_clone() {
        let linux = Linux {
            namespaces: vec![
                ns(NamespaceType::Pid, None),
                ns(NamespaceType::Mount, None),
                ns(NamespaceType::Cgroup, None),
                ns(NamespaceType::Time, None),
                ns(NamespaceType::Network, Some("/run/netns/x")),
            ],
            ..Default::default()
        };
        let p = plan(&linux);
        assert_eq!(
            p.clone_flags,
            (libc::CLONE_NEWPID | libc::CLONE_NEWNS) as u64
        );
        assert!(p.new_cgroup && p.new_time && !p.double_fork);
        assert_eq!(
            p.joins,
            vec![(NamespaceType::Network, "/run/netns/x".into())]
        );
    }

    #[test]
    fn userns_with_joins_unshares_after_joining() {
        let linux = Linux {
            namespaces: vec![
                ns(NamespaceType::Network, Some("/n")),
                ns(NamespaceType::User, None),
                ns(NamespaceType::Pid, None),
                ns(NamespaceType::Ipc, Some("/i")),
            ],
            ..Default::default()
        };
        let p = plan(&linux);
        assert_eq!(p.clone_flags, 0);
        assert!(p.double_fork && p.new_user);
        assert_eq!(
            p.unshare_flags,
            (libc::CLONE_NEWUSER | libc::CLONE_NEWPID) as u64
        );
    }

    #[test]
    fn pid_join_is_done_by_parent_and_user_join_first() {
        let linux = Linux {
            namespaces: vec![
                ns(NamespaceType::Ipc, Some("/i")),
                ns(NamespaceType::User, Some("/u")),
                ns(NamespaceType::Pid, Some("/p")),
            ],
            ..Default::default()
        };
        let p = plan(&linux);
        assert_eq!(p.parent_pid_join.as_deref(), Some("/p"));
        assert_eq!(p.joins[0].0, NamespaceType::User);
    }

    #[test]
    fn mapping_lookup() {
        let m = [IdMapping {
            container_id: 0,
            host_id: 100_000,
            size: 1000,
        }];
        assert!(is_mapped(&m, 0) && is_mapped(&m, 999));
        assert!(!is_mapped(&m, 1000));
    }

    #[test]
    fn check_paths_verifies_type() {
        let ok = Linux {
            namespaces: vec![ns(NamespaceType::Network, Some("/proc/self/ns/net"))],
            ..Default::default()
        };
        check_paths(&ok).unwrap();
        let wrong = Linux {
            namespaces: vec![ns(NamespaceType::Ipc, Some("/proc/self/ns/net"))],
            ..Default::default()
        };
        assert!(check_paths(&wrong)
            .unwrap_err()
            .to_string()
            .contains("not a ipc namespace"));
        let missing = Linux {
            namespaces: vec![ns(NamespaceType::Ipc, Some("/nonexistent/ns"))],
            ..Default::default()
        };
        assert!(check_paths(&missing).is_err());
        assert!(is_own(NamespaceType::Network, "/proc/self/ns/net"));
    }
}
