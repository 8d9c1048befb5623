//! Paths inside the container's root, resolved so that nothing in the rootfs
//! (symlinks, `..`) can make the runtime act outside it (CVE-2021-30465 class):
//! every lookup goes through openat2(RESOLVE_IN_ROOT), which treats the rootfs
//! as `/` for absolute symlinks and `..` alike, and mounts target the resolved
//! file descriptor (through /proc/self/fd) rather than a path string.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::{
    mkdirat, openat, openat2, readlinkat, statat, AtFlags, FileType, Mode, OFlags, ResolveFlags,
};
use rustix::io::Errno;

use crate::error::{Context, Result};

fn components(path: &str) -> Vec<&str> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

fn resolve_flags() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

/// Open `path` (as seen from inside the container) under `root`.
pub fn open_in_root(
    root: BorrowedFd<'_>,
    path: &str,
    flags: OFlags,
) -> rustix::io::Result<OwnedFd> {
    let rel = components(path).join("/");
    let rel = if rel.is_empty() { ".".to_string() } else { rel };
    openat2(
        root,
        rel.as_str(),
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        resolve_flags(),
    )
}

/// The /proc/self/fd path of an fd: how mount(2) is pointed at a resolved target.
pub fn fd_path(fd: &impl AsFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

/// Make sure `path` exists under `root` — as a directory, or as a regular
/// file when `file` is set — creating missing parents (mode 0755), and return
/// an O_PATH descriptor of it. Every step is resolved inside the root, and a
/// dangling symlink on the way is followed the way the container would
/// follow it (its target is created, inside the root).
pub fn ensure_in_root(root: BorrowedFd<'_>, path: &str, file: bool) -> Result<OwnedFd> {
    ensure_depth(root, path, file, 0)
}

fn ensure_depth(root: BorrowedFd<'_>, path: &str, file: bool, depth: u32) -> Result<OwnedFd> {
    if depth > 40 {
        return Err(Errno::LOOP).ctx(|| format!("resolve {path} in the container root"));
    }
    // Usually the whole path exists already: one lookup.
    match open_in_root(root, path, OFlags::PATH) {
        Ok(fd) => return Ok(fd),
        Err(Errno::NOENT) => {}
        Err(e) => return Err(e).ctx(|| format!("resolve {path} in the container root")),
    }
    let comps = components(path);
    // The deepest prefix that exists, searched from the parent up: usually only the last
    // component is missing (a mount point the image lacks), and one lookup finds its parent.
    let mut i = comps.len() - 1;
    let mut parent = loop {
        match open_in_root(
            root,
            &comps[..i].join("/"),
            OFlags::PATH | OFlags::DIRECTORY,
        ) {
            Ok(fd) => break fd,
            Err(Errno::NOENT) if i > 0 => i -= 1,
            Err(e) => return Err(e).ctx(|| format!("resolve {path} in the container root")),
        }
    };
    // comps[..i] exists; create comps[i..] one by one.
    for j in i..comps.len() {
        let name = comps[j];
        let prefix = comps[..=j].join("/");
        if let Ok(st) = statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                // A dangling symlink: continue from its target.
                let target = readlinkat(&parent, name, Vec::new())
                    .ctx(|| format!("read symlink {prefix} in the container root"))?;
                let target = target.to_string_lossy();
                let base = if target.starts_with('/') {
                    target.into_owned()
                } else {
                    format!("{}/{target}", comps[..j].join("/"))
                };
                let rest = comps[j + 1..].join("/");
                return ensure_depth(root, &format!("{base}/{rest}"), file, depth + 1);
            }
        }
        let last = j + 1 == comps.len();
        let made = if last && file {
            openat(
                &parent,
                name,
                OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .map(drop)
        } else {
            mkdirat(&parent, name, Mode::from_raw_mode(0o755))
        };
        match made {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e).ctx(|| format!("create {prefix} in the container root")),
        }
        if !last {
            // Looked up from the root again, not opened from `parent`: whatever is there
            // now (a directory someone else made first, even a symlink) resolves inside it.
            parent = open_in_root(root, &prefix, OFlags::PATH | OFlags::DIRECTORY)
                .ctx(|| format!("resolve {path} in the container root"))?;
        }
    }
    open_in_root(root, path, OFlags::PATH).ctx(|| format!("open {path} in the container root"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bh-paths-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn rootfd(p: &std::path::Path) -> OwnedFd {
        rustix::fs::open(
            p,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    }

    #[test]
    fn symlinks_cannot_escape_the_root() {
        let base = tmp("escape");
        let root = base.join("root");
        let outside = base.join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        // An absolute symlink and a ../ symlink that would leave the root.
        symlink(&outside, root.join("abs")).unwrap();
        symlink("../../outside", root.join("rel")).unwrap();
        let r = rootfd(&root);
        ensure_in_root(r.as_fd(), "/abs/x", false).unwrap();
        ensure_in_root(r.as_fd(), "/rel/y", false).unwrap();
        // Both were created inside the root, following the links as the container would.
        assert!(root
            .join(outside.strip_prefix("/").unwrap())
            .join("x")
            .is_dir());
        // `..` stops at the root: ../../outside is /outside of the container.
        assert!(root.join("outside/y").is_dir());
        assert!(!outside.join("x").exists() && !outside.join("y").exists());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn creates_files_and_dirs() {
        let base = tmp("create");
        let r = rootfd(&base);
        let fd = ensure_in_root(r.as_fd(), "/a/b/c.conf", true).unwrap();
        assert!(base.join("a/b/c.conf").is_file());
        assert!(fd_path(&fd).to_str().unwrap().starts_with("/proc/self/fd/"));
        ensure_in_root(r.as_fd(), "/a/b/d", false).unwrap();
        assert!(base.join("a/b/d").is_dir());
        // Existing entries are reused, not an error.
        ensure_in_root(r.as_fd(), "/a/b/c.conf", true).unwrap();
        ensure_in_root(r.as_fd(), "a/./b", false).unwrap();
        // Missing levels below a dangling relative symlink below an existing directory.
        symlink("x/y", base.join("a/link")).unwrap();
        ensure_in_root(r.as_fd(), "/a/link/e/f", false).unwrap();
        assert!(base.join("a/x/y/e/f").is_dir());
        fs::remove_dir_all(&base).unwrap();
    }
}
