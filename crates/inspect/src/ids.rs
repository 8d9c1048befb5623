//! User and group ids: the uid/gid maps of the process's user namespace
//! (`/proc/PID/uid_map`, `gid_map`) and its ids (`Uid`, `Gid` in status).
//!
//! The maps are shown relative to the inspector's user namespace, as the
//! kernel presents them to the reader. The identity map (`0 0 4294967295`)
//! is the host's: the process's root is the host's root. With the host's
//! maps, a process none of whose uids is 0 is "unprivileged" (a layer: it is
//! not root on the host).

use serde::Serialize;

use crate::proc::{reason, Proc, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Range {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    pub status: String,
    pub in_force: bool,
    pub uid_map: Vec<Range>,
    pub gid_map: Vec<Range>,
    /// Real, effective, saved, filesystem.
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
    pub error: Option<String>,
}

pub fn parse_map(text: &str) -> Vec<Range> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace().map(|v| v.parse::<u32>());
            Some(Range {
                inside: it.next()?.ok()?,
                outside: it.next()?.ok()?,
                count: it.next()?.ok()?,
            })
        })
        .collect()
}

pub fn is_identity(map: &[Range]) -> bool {
    map == [Range {
        inside: 0,
        outside: 0,
        count: u32::MAX,
    }]
}

fn id_list(s: &Status, field: &str) -> Vec<u32> {
    s.field(field)
        .map(|v| {
            v.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

pub fn inspect(p: &Proc, s: &Status) -> Layer {
    let uid = p.read("uid_map");
    let gid = p.read("gid_map");
    let error = match (&uid, &gid) {
        (Err(e), _) => Some(format!("{}: {}", p.path("uid_map").display(), reason(e))),
        (_, Err(e)) => Some(format!("{}: {}", p.path("gid_map").display(), reason(e))),
        _ => None,
    };
    let uid_map = uid.map(|t| parse_map(&t)).unwrap_or_default();
    let gid_map = gid.map(|t| parse_map(&t)).unwrap_or_default();
    let uids = id_list(s, "Uid");
    let mapped = error.is_none() && !(is_identity(&uid_map) && is_identity(&gid_map));
    // Not root in the host's user namespace by any of its four uids (a saved uid of 0 could
    // be taken back).
    let unprivileged = error.is_none() && !mapped && !uids.is_empty() && !uids.contains(&0);
    Layer {
        status: if error.is_some() {
            "unknown"
        } else if mapped {
            "mapped"
        } else if unprivileged {
            "unprivileged"
        } else {
            "host"
        }
        .into(),
        in_force: mapped || unprivileged,
        uid_map,
        gid_map,
        uids,
        gids: id_list(s, "Gid"),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps() {
        let id = parse_map("         0          0 4294967295\n");
        assert!(is_identity(&id));
        let m = parse_map("0 1000 1\n1 100000 65536\n");
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[1],
            Range {
                inside: 1,
                outside: 100000,
                count: 65536
            }
        );
        assert!(!is_identity(&m));
        // A namespace without maps yet maps nothing.
        assert!(!is_identity(&parse_map("")));
    }

    #[test]
    fn self_is_host() {
        let p = Proc::new(std::process::id() as i32);
        let l = inspect(&p, &p.status().unwrap());
        // Unit tests run as root in the initial user namespace (see the README).
        if is_identity(&l.uid_map) {
            assert_eq!(l.status, "host");
        }
        assert_eq!(l.uids.len(), 4);
    }

    #[test]
    fn a_non_root_process_with_host_maps_is_unprivileged() {
        let dir = std::env::temp_dir().join(format!("inspect-ids-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let identity = "         0          0 4294967295\n";
        std::fs::write(dir.join("uid_map"), identity).unwrap();
        std::fs::write(dir.join("gid_map"), identity).unwrap();
        let p = Proc::at(dir.clone());
        let st = |uids: &str| Status {
            text: format!("Uid:\t{uids}\nGid:\t77777\t77777\t77777\t77777\n"),
        };
        let l = inspect(&p, &st("77777\t77777\t77777\t77777"));
        assert_eq!((l.status.as_str(), l.in_force), ("unprivileged", true));
        // A saved uid of 0 can be taken back: still root.
        let l = inspect(&p, &st("77777\t77777\t0\t77777"));
        assert_eq!((l.status.as_str(), l.in_force), ("host", false));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
