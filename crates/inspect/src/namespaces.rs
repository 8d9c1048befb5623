//! Namespaces: which of the eight the process shares with the host.
//!
//! A namespace is identified by the inode of `/proc/PID/ns/TYPE`. The kernel
//! gives its initial namespaces fixed inode numbers (uapi `linux/nsfs.h`,
//! `enum init_ns_ino`): ipc, uts, user, pid and cgroup since 3.8/4.6, time
//! since 5.6, net and mnt since 6.18. Dynamically allocated namespace inodes
//! start at 0xF0000000, so a fixed number can never be mistaken for a private
//! namespace. For net and mnt on older kernels the host's inode is pid 1's.

use serde::Serialize;

use crate::proc::{reason, Proc};
use crate::Host;

pub const IPC_NS_INIT_INO: u64 = 0xEFFF_FFFF;
pub const UTS_NS_INIT_INO: u64 = 0xEFFF_FFFE;
pub const USER_NS_INIT_INO: u64 = 0xEFFF_FFFD;
pub const PID_NS_INIT_INO: u64 = 0xEFFF_FFFC;
pub const CGROUP_NS_INIT_INO: u64 = 0xEFFF_FFFB;
pub const TIME_NS_INIT_INO: u64 = 0xEFFF_FFFA;
pub const NET_NS_INIT_INO: u64 = 0xEFFF_FFF9;
pub const MNT_NS_INIT_INO: u64 = 0xEFFF_FFF8;

/// The namespace types, by their /proc/PID/ns names.
pub const KINDS: [&str; 8] = ["cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"];

/// The initial namespace's fixed inode on a kernel of this version, if it has one.
pub fn initial_inode(kind: &str, kernel: (u32, u32)) -> Option<u64> {
    match kind {
        "ipc" => Some(IPC_NS_INIT_INO),
        "uts" => Some(UTS_NS_INIT_INO),
        "user" => Some(USER_NS_INIT_INO),
        "pid" => Some(PID_NS_INIT_INO),
        "cgroup" => Some(CGROUP_NS_INIT_INO),
        "time" => Some(TIME_NS_INIT_INO),
        "net" if kernel >= (6, 18) => Some(NET_NS_INIT_INO),
        "mnt" if kernel >= (6, 18) => Some(MNT_NS_INIT_INO),
        _ => None,
    }
}

/// The inode of the process's namespace of type `kind`.
pub fn inode(p: &Proc, kind: &str) -> std::io::Result<u64> {
    let link = std::fs::read_link(p.path(&format!("ns/{kind}")))?;
    parse_link(&link.to_string_lossy(), kind)
        .ok_or_else(|| std::io::Error::other(format!("unexpected link {}", link.display())))
}

fn parse_link(link: &str, kind: &str) -> Option<u64> {
    link.strip_prefix(kind)?
        .strip_prefix(":[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Share {
    /// The host's namespace.
    Host,
    /// A namespace of its own.
    Private,
    /// Could not be determined (see `evidence`).
    Unknown,
}

impl Share {
    pub fn word(self) -> &'static str {
        match self {
            Share::Host => "host",
            Share::Private => "private",
            Share::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Namespace {
    pub kind: &'static str,
    pub inode: Option<u64>,
    pub host_inode: Option<u64>,
    pub share: Share,
    /// How `share` was decided (or why it could not be).
    pub evidence: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    pub status: String,
    pub in_force: bool,
    /// How many namespaces are private.
    pub private: usize,
    pub items: Vec<Namespace>,
}

pub fn inspect(p: &Proc, host: &Host) -> Layer {
    let kernel = host.reference.kernel;
    let mut items = Vec::new();
    for kind in KINDS {
        let ino = inode(p, kind);
        let (host_inode, how) = match initial_inode(kind, kernel) {
            Some(i) => (Some(i), "the kernel's initial namespace"),
            None => (
                host.proc.as_ref().and_then(|h| inode(h, kind).ok()),
                "pid 1's namespace",
            ),
        };
        let (inode, share, evidence) = match (&ino, host_inode) {
            (Ok(i), Some(h)) if *i == h => (Some(*i), Share::Host, format!("is {how}")),
            (Ok(i), Some(_)) => (Some(*i), Share::Private, format!("differs from {how}")),
            (Ok(i), None) => (
                Some(*i),
                Share::Unknown,
                format!(
                    "no reference: this kernel ({}.{}) has no fixed number for the initial {kind} namespace and pid 1's cannot be read",
                    kernel.0, kernel.1
                ),
            ),
            // A kernel without this namespace type (time before 5.6):
            // everything shares the one implicit namespace.
            (Err(e), _)
                if e.kind() == std::io::ErrorKind::NotFound && p.path("ns").exists() =>
            {
                (
                    None,
                    Share::Host,
                    format!("this kernel has no {kind} namespaces"),
                )
            }
            (Err(e), _) => (
                None,
                Share::Unknown,
                format!("{}: {}", p.path(&format!("ns/{kind}")).display(), reason(e)),
            ),
        };
        items.push(Namespace {
            kind,
            inode,
            host_inode,
            share,
            evidence,
        });
    }
    let private = items.iter().filter(|n| n.share == Share::Private).count();
    let unknown = items.iter().filter(|n| n.share == Share::Unknown).count();
    let status = if private > 0 {
        "private"
    } else if unknown > 0 {
        "unknown"
    } else {
        "host"
    };
    Layer {
        status: status.into(),
        in_force: private > 0,
        private,
        items,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links() {
        assert_eq!(parse_link("net:[4026531833]", "net"), Some(4026531833));
        assert_eq!(parse_link("net:[4026531833]", "mnt"), None);
        assert_eq!(parse_link("pid:[x]", "pid"), None);
    }

    #[test]
    fn initial_numbers_by_kernel() {
        assert_eq!(initial_inode("pid", (4, 19)), Some(4026531836));
        assert_eq!(initial_inode("user", (6, 1)), Some(4026531837));
        assert_eq!(initial_inode("net", (6, 1)), None);
        assert_eq!(initial_inode("net", (6, 18)), Some(4026531833));
        assert_eq!(initial_inode("mnt", (7, 0)), Some(4026531832));
        // Dynamically allocated inodes start above every fixed number.
        for k in KINDS {
            assert!(initial_inode(k, (6, 18)).unwrap() < 0xF000_0000);
        }
    }
}
