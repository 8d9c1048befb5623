//! The jail's root filesystem: an empty tmpfs, read-only, made the root with pivot_root; the
//! host's root is detached. Only explicit read-only binds are added.

use std::path::{Path, PathBuf};

use container::sys::mount;

use crate::{sys_err, Error, Result};

/// Where the new root is mounted before pivot_root. Any directory of the (private) mount
/// namespace copy works; /proc exists wherever this crate can run, and covering it in the
/// jail's own namespace hides nothing the jailed process could still use afterwards.
const STAGING: &str = "/proc";

/// tmpfs options: tiny (it only holds mount points for binds), not world-writable.
const TMPFS_OPTIONS: &str = "size=64k,nr_inodes=256,mode=0555";

/// Replace the root of this (new) mount namespace with an empty read-only tmpfs holding only
/// `ro_binds`. The process's cwd ends at "/".
pub(crate) fn enter_empty_root(ro_binds: &[PathBuf]) -> Result<()> {
    // Our mount namespace is a copy of the host's: make it private, so nothing we mount or
    // unmount propagates to the host, and nothing the host mounts later appears here.
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_PRIVATE | libc::MS_REC,
        None,
    )
    .map_err(sys_err("make the mount namespace private"))?;
    let staging = Path::new(STAGING);
    let base = libc::MS_NOSUID | libc::MS_NODEV;
    mount(
        Some("tmpfs"),
        staging,
        Some("tmpfs"),
        base | libc::MS_NOEXEC,
        Some(TMPFS_OPTIONS),
    )
    .map_err(sys_err(format!("mount the jail's tmpfs on {STAGING}")))?;
    for src in ro_binds {
        bind_read_only(src, staging)?;
    }
    container::rootfs::pivot_root_to(staging)?;
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | base | libc::MS_NOEXEC,
        None,
    )
    .map_err(sys_err("make the jail's root read-only"))
}

/// A bind source must be absolute, not "/", and without "." or ".." components; returns it
/// relative to "/".
pub(crate) fn check_bind(src: &Path) -> Result<&Path> {
    let bad = |why: &str| Error::Invalid(format!("read-only bind {}: {why}", src.display()));
    let rel = src
        .strip_prefix("/")
        .ok()
        .filter(|r| !r.as_os_str().is_empty())
        .ok_or_else(|| bad("must be an absolute path other than /"))?;
    if rel
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(bad("no '.' or '..' components"));
    }
    if !src.exists() {
        return Err(bad("does not exist"));
    }
    Ok(rel)
}

/// Bind `src` read-only at the same path under `root`.
fn bind_read_only(src: &Path, root: &Path) -> Result<()> {
    let rel = check_bind(src)?;
    let meta = std::fs::metadata(src).map_err(sys_err(format!("bind {}", src.display())))?;
    let target = root.join(rel);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(sys_err(format!("mkdir {}", parent.display())))?;
    }
    if meta.is_dir() {
        std::fs::create_dir_all(&target)
    } else {
        std::fs::File::create(&target).map(drop)
    }
    .map_err(sys_err(format!("create {}", target.display())))?;
    mount(
        Some(&src.to_string_lossy()),
        &target,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(sys_err(format!("bind {}", src.display())))?;
    mount(
        None,
        &target,
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        None,
    )
    .map_err(sys_err(format!(
        "make the bind of {} read-only",
        src.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_sources_are_checked() {
        assert_eq!(check_bind(Path::new("/usr")).unwrap(), Path::new("usr"));
        for bad in ["usr", "/", "/usr/../etc", "/nonexistent-bind-source"] {
            assert!(check_bind(Path::new(bad)).is_err(), "{bad}");
        }
    }
}
