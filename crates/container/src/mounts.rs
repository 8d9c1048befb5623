//! Mount options of config.json (fstab words) turned into what mount(2) and
//! mount_setattr(2) take. Pure functions: unit-tested without mounting.

use libc::c_ulong;

/// A parsed `mounts[].options` list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// MS_* flags to pass to mount(2) (never MS_BIND/MS_REC: see `bind`).
    pub flags: c_ulong,
    /// MS_* flags explicitly cleared (`rw`, `suid`...): they matter for remounts.
    pub cleared: c_ulong,
    /// `bind` or `rbind`.
    pub bind: bool,
    /// `rbind`: the bind is recursive.
    pub recursive: bool,
    /// Propagation changes in order (MS_SHARED, MS_SLAVE... with MS_REC).
    pub propagation: Vec<c_ulong>,
    /// Recursive attributes (`rro`, `rnosuid`...): MOUNT_ATTR_* to set and clear
    /// with mount_setattr(AT_RECURSIVE).
    pub rec_set: u64,
    pub rec_clr: u64,
    /// Filesystem-specific options passed through as mount data ("size=64m").
    pub data: Vec<String>,
    /// `tmpcopyup`: copy the image's content under the tmpfs into it.
    pub tmpcopyup: bool,
}

/// (name, set?, flag)
const FLAGS: &[(&str, bool, c_ulong)] = &[
    ("async", false, libc::MS_SYNCHRONOUS),
    ("atime", false, libc::MS_NOATIME),
    ("defaults", true, 0),
    ("dev", false, libc::MS_NODEV),
    ("diratime", false, libc::MS_NODIRATIME),
    ("dirsync", true, libc::MS_DIRSYNC),
    ("exec", false, libc::MS_NOEXEC),
    ("iversion", true, libc::MS_I_VERSION),
    ("lazytime", true, libc::MS_LAZYTIME),
    ("loud", false, libc::MS_SILENT),
    ("mand", true, libc::MS_MANDLOCK),
    ("noatime", true, libc::MS_NOATIME),
    ("nodev", true, libc::MS_NODEV),
    ("nodiratime", true, libc::MS_NODIRATIME),
    ("noexec", true, libc::MS_NOEXEC),
    ("noiversion", false, libc::MS_I_VERSION),
    ("nolazytime", false, libc::MS_LAZYTIME),
    ("nomand", false, libc::MS_MANDLOCK),
    ("norelatime", false, libc::MS_RELATIME),
    ("nostrictatime", false, libc::MS_STRICTATIME),
    ("nosuid", true, libc::MS_NOSUID),
    ("nosymfollow", true, libc::MS_NOSYMFOLLOW),
    ("relatime", true, libc::MS_RELATIME),
    // Changes the flags of what an earlier entry mounted at the destination.
    ("remount", true, libc::MS_REMOUNT),
    ("ro", true, libc::MS_RDONLY),
    ("rw", false, libc::MS_RDONLY),
    ("silent", true, libc::MS_SILENT),
    ("strictatime", true, libc::MS_STRICTATIME),
    ("suid", false, libc::MS_NOSUID),
    ("sync", true, libc::MS_SYNCHRONOUS),
    ("symfollow", false, libc::MS_NOSYMFOLLOW),
];

const PROPAGATION: &[(&str, c_ulong)] = &[
    ("private", libc::MS_PRIVATE),
    ("rprivate", libc::MS_PRIVATE | libc::MS_REC),
    ("shared", libc::MS_SHARED),
    ("rshared", libc::MS_SHARED | libc::MS_REC),
    ("slave", libc::MS_SLAVE),
    ("rslave", libc::MS_SLAVE | libc::MS_REC),
    ("unbindable", libc::MS_UNBINDABLE),
    ("runbindable", libc::MS_UNBINDABLE | libc::MS_REC),
];

/// (name, set?, MOUNT_ATTR_*)
const RECURSIVE: &[(&str, bool, u64)] = &[
    ("rro", true, libc::MOUNT_ATTR_RDONLY),
    ("rrw", false, libc::MOUNT_ATTR_RDONLY),
    ("rnosuid", true, libc::MOUNT_ATTR_NOSUID),
    ("rsuid", false, libc::MOUNT_ATTR_NOSUID),
    ("rnodev", true, libc::MOUNT_ATTR_NODEV),
    ("rdev", false, libc::MOUNT_ATTR_NODEV),
    ("rnoexec", true, libc::MOUNT_ATTR_NOEXEC),
    ("rexec", false, libc::MOUNT_ATTR_NOEXEC),
    ("rnodiratime", true, libc::MOUNT_ATTR_NODIRATIME),
    ("rdiratime", false, libc::MOUNT_ATTR_NODIRATIME),
    ("rrelatime", true, libc::MOUNT_ATTR_RELATIME),
    ("rnorelatime", false, libc::MOUNT_ATTR_RELATIME),
    ("rnoatime", true, libc::MOUNT_ATTR_NOATIME),
    ("ratime", false, libc::MOUNT_ATTR_NOATIME),
    ("rstrictatime", true, libc::MOUNT_ATTR_STRICTATIME),
    ("rnostrictatime", false, libc::MOUNT_ATTR_STRICTATIME),
    ("rnosymfollow", true, libc::MOUNT_ATTR_NOSYMFOLLOW),
    ("rsymfollow", false, libc::MOUNT_ATTR_NOSYMFOLLOW),
];

/// Every option word this parser gives a meaning to (for `features`).
pub fn known_options() -> Vec<String> {
    let mut v: Vec<String> = FLAGS
        .iter()
        .map(|f| f.0)
        .chain(PROPAGATION.iter().map(|p| p.0))
        .chain(RECURSIVE.iter().map(|r| r.0))
        .chain(["bind", "rbind", "tmpcopyup"])
        .map(String::from)
        .collect();
    v.sort();
    v
}

/// Options the spec defines that this runtime does not implement: rejected
/// instead of passed to the filesystem, where they would fail obscurely.
const UNSUPPORTED: &[&str] = &["idmap", "ridmap"];

pub fn parse(options: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    for word in options {
        let w = word.as_str();
        if let Some(&(_, set, flag)) = FLAGS.iter().find(|f| f.0 == w) {
            if set {
                o.flags |= flag;
                o.cleared &= !flag;
            } else {
                o.flags &= !flag;
                o.cleared |= flag;
            }
            // The atime modes exclude each other.
            if set && (flag & (libc::MS_NOATIME | libc::MS_RELATIME | libc::MS_STRICTATIME)) != 0 {
                let others = (libc::MS_NOATIME | libc::MS_RELATIME | libc::MS_STRICTATIME) & !flag;
                o.flags &= !others;
            }
        } else if let Some(&(_, p)) = PROPAGATION.iter().find(|p| p.0 == w) {
            o.propagation.push(p);
        } else if let Some(&(_, set, attr)) = RECURSIVE.iter().find(|r| r.0 == w) {
            if set {
                o.rec_set |= attr;
                o.rec_clr &= !attr;
            } else {
                o.rec_clr |= attr;
                o.rec_set &= !attr;
            }
            // The atime attributes form one field in mount_setattr: clearing
            // MOUNT_ATTR__ATIME is needed to change it.
            if attr
                & (libc::MOUNT_ATTR_NOATIME
                    | libc::MOUNT_ATTR_RELATIME
                    | libc::MOUNT_ATTR_STRICTATIME)
                != 0
            {
                o.rec_clr |= libc::MOUNT_ATTR__ATIME;
            }
        } else if w == "bind" {
            o.bind = true;
        } else if w == "rbind" {
            o.bind = true;
            o.recursive = true;
        } else if w == "tmpcopyup" {
            o.tmpcopyup = true;
        } else if UNSUPPORTED.contains(&w) {
            return Err(format!("mount option {w:?} is not supported by bulkhead"));
        } else {
            o.data.push(w.to_string());
        }
    }
    Ok(o)
}

impl Options {
    pub fn data(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }

    /// MS_* flags relevant to a bind remount (MS_RDONLY, MS_NOSUID...).
    pub fn remount_flags(&self) -> c_ulong {
        self.flags
            & (libc::MS_RDONLY
                | libc::MS_NOSUID
                | libc::MS_NODEV
                | libc::MS_NOEXEC
                | libc::MS_NOATIME
                | libc::MS_NODIRATIME
                | libc::MS_RELATIME
                | libc::MS_STRICTATIME
                | libc::MS_NOSYMFOLLOW)
    }

    /// The same, as MOUNT_ATTR_* for mount_setattr (non-recursive).
    pub fn attr_set(&self) -> u64 {
        to_attrs(self.flags, &MS_TO_ATTR)
    }

    pub fn attr_clr(&self) -> u64 {
        // The atime modes are one field: cleared as a whole, never bit by bit.
        let mut a = to_attrs(self.cleared, &MS_TO_ATTR[..6]);
        // Any atime mode change must clear the whole atime field first.
        if self.attr_set()
            & (libc::MOUNT_ATTR_NOATIME | libc::MOUNT_ATTR_RELATIME | libc::MOUNT_ATTR_STRICTATIME)
            != 0
        {
            a |= libc::MOUNT_ATTR__ATIME;
        }
        a
    }
}

/// mount(2) flags and their mount_setattr(2) equivalents; the atime modes last.
const MS_TO_ATTR: [(c_ulong, u64); 9] = [
    (libc::MS_RDONLY, libc::MOUNT_ATTR_RDONLY),
    (libc::MS_NOSUID, libc::MOUNT_ATTR_NOSUID),
    (libc::MS_NODEV, libc::MOUNT_ATTR_NODEV),
    (libc::MS_NOEXEC, libc::MOUNT_ATTR_NOEXEC),
    (libc::MS_NODIRATIME, libc::MOUNT_ATTR_NODIRATIME),
    (libc::MS_NOSYMFOLLOW, libc::MOUNT_ATTR_NOSYMFOLLOW),
    (libc::MS_NOATIME, libc::MOUNT_ATTR_NOATIME),
    (libc::MS_RELATIME, libc::MOUNT_ATTR_RELATIME),
    (libc::MS_STRICTATIME, libc::MOUNT_ATTR_STRICTATIME),
];

fn to_attrs(flags: c_ulong, table: &[(c_ulong, u64)]) -> u64 {
    table
        .iter()
        .filter(|(ms, _)| flags & ms != 0)
        .fold(0, |a, (_, attr)| a | attr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(words: &[&str]) -> Options {
        parse(&words.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn flags_and_data() {
        let o = p(&["nosuid", "strictatime", "mode=755", "size=65536k"]);
        assert_eq!(o.flags, libc::MS_NOSUID | libc::MS_STRICTATIME);
        assert_eq!(o.data().as_deref(), Some("mode=755,size=65536k"));
        assert!(!o.bind);
    }

    #[test]
    fn later_words_win() {
        let o = p(&["ro", "rw"]);
        assert_eq!(o.flags & libc::MS_RDONLY, 0);
        assert_ne!(o.cleared & libc::MS_RDONLY, 0);
        let o = p(&["noatime", "relatime"]);
        assert_eq!(o.flags, libc::MS_RELATIME);
    }

    #[test]
    fn bind_propagation_recursive() {
        let o = p(&["rbind", "ro", "rprivate", "rro", "rnosuid"]);
        assert!(o.bind && o.recursive);
        assert_eq!(o.propagation, vec![libc::MS_PRIVATE | libc::MS_REC]);
        assert_eq!(o.rec_set, libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID);
        assert_eq!(o.remount_flags(), libc::MS_RDONLY);
        assert_eq!(o.attr_set(), libc::MOUNT_ATTR_RDONLY);
    }

    #[test]
    fn remount_is_a_flag() {
        assert_eq!(
            p(&["remount", "ro"]).flags,
            libc::MS_REMOUNT | libc::MS_RDONLY
        );
    }

    #[test]
    fn unsupported_options_are_errors() {
        assert!(parse(&["idmap".to_string()]).unwrap_err().contains("idmap"));
    }

    #[test]
    fn known_list_is_sorted_and_complete() {
        let k = known_options();
        assert!(k.windows(2).all(|w| w[0] < w[1]));
        for w in &k {
            parse(std::slice::from_ref(w)).unwrap();
        }
        assert!(k.contains(&"rro".to_string()) && k.contains(&"rbind".to_string()));
    }
}
