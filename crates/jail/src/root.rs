//! The jail's root filesystem: an empty tmpfs, read-only, made the root with pivot_root; the
//! host's root is detached. Only explicit read-only binds are added.

use std::path::{Path, PathBuf};

use container::sys::mount;

use crate::{sys_err, Error, Jail, Result};

/// Where the new root is mounted before pivot_root. Any directory of the (private) mount
/// namespace copy works; /proc exists wherever this crate can run, and covering it in the
/// jail's own namespace hides nothing the jailed process could still use afterwards.
const STAGING: &str = "/proc";

/// tmpfs options: tiny (it only holds mount points for binds), not world-writable.
const TMPFS_OPTIONS: &str = "size=64k,nr_inodes=256,mode=0555";

/// Replace the root of this (new) mount namespace with an empty read-only tmpfs holding only
/// what `jail` asks for: its binds, the host root's view, its device nodes. The process's cwd
/// ends at "/".
pub(crate) fn enter_empty_root(jail: &Jail) -> Result<()> {
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
    // First, while "/" is still the host's: its view copies what is mounted now.
    if let Some(at) = &jail.host_root {
        host_root_view(&staging.join(check_target(at)?))?;
    }
    for src in &jail.ro_binds {
        bind(src, staging, true)?;
    }
    for src in &jail.rw_binds {
        bind(src, staging, false)?;
    }
    if !jail.devices.is_empty() {
        device_nodes(staging, &jail.devices, jail.uid, jail.gid)?;
    }
    if jail.proc {
        let proc = staging.join("proc");
        std::fs::create_dir_all(&proc).map_err(sys_err(format!("mkdir {}", proc.display())))?;
        // This process is pid 1 of the jail's pid namespace: the mount shows that one.
        mount(
            Some("proc"),
            &proc,
            Some("proc"),
            base | libc::MS_NOEXEC | libc::MS_RDONLY,
            Some("subset=pid,hidepid=invisible"),
        )
        .map_err(sys_err("mount the jail's /proc"))?;
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

/// The host's filesystems of its own that a view of the host's root leaves out: the kernel's
/// (/proc, /sys, /dev) and the runtime state and sockets (/run, /tmp). The same set `sandbox`
/// leaves out of the host root it shows.
const HOST_ROOT_HIDDEN: [&str; 5] = ["proc", "sys", "dev", "run", "tmp"];

/// Bind the host's root (recursively) at `target`, without [`HOST_ROOT_HIDDEN`] (each
/// covered by an empty tmpfs, whether it was a mount point of the host or a directory of its
/// root filesystem), read-only, nosuid and nodev all the way down.
fn host_root_view(target: &Path) -> Result<()> {
    std::fs::create_dir_all(target).map_err(sys_err(format!("mkdir {}", target.display())))?;
    mount(Some("/"), target, None, libc::MS_BIND | libc::MS_REC, None).map_err(sys_err(
        format!("bind the host's root at {}", target.display()),
    ))?;
    for sub in HOST_ROOT_HIDDEN {
        let p = target.join(sub);
        // Several mounts may be stacked there (the jail's own staging tmpfs lies on /proc):
        // detach until none is left. EINVAL: not a mount point; ENOENT: no such directory.
        for _ in 0..16 {
            match container::sys::umount_detach(&p) {
                Ok(()) => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) => {
                    break
                }
                Err(e) => return Err(sys_err(format!("detach {}", p.display()))(e)),
            }
        }
        if p.is_dir() {
            mount(
                Some("tmpfs"),
                &p,
                Some("tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                Some("size=4k,nr_inodes=2,mode=0555"),
            )
            .map_err(sys_err(format!(
                "cover {} with an empty tmpfs",
                p.display()
            )))?;
        }
    }
    read_only_all_the_way(target)
}

/// mount_setattr(AT_RECURSIVE): read-only, nosuid and nodev on `target` and every mount
/// under it (a plain remount would only change the top one).
fn read_only_all_the_way(target: &Path) -> Result<()> {
    let fd = rustix::fs::open(
        target,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .or_else(|_| {
        rustix::fs::open(
            target,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
    })
    .map_err(|e| sys_err(format!("open {}", target.display()))(e.into()))?;
    container::sys::mount_setattr(
        std::os::fd::AsFd::as_fd(&fd),
        true,
        libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        0,
        0,
    )
    .map_err(sys_err(format!("make {} read-only", target.display())))
}

/// A path inside the jail's root: absolute, not "/", without "." or ".."; returned relative.
pub(crate) fn check_target(p: &Path) -> Result<&Path> {
    let bad = |why: &str| Error::Invalid(format!("jail path {}: {why}", p.display()));
    let rel = p
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
    Ok(rel)
}

/// A device node to recreate: a character device directly under /dev.
pub(crate) fn check_device(p: &Path) -> Result<u64> {
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::fs::MetadataExt;
    let bad = |why: String| Error::Invalid(format!("jail device {}: {why}", p.display()));
    if p.parent() != Some(Path::new("/dev")) || p.file_name().is_none() {
        return Err(bad("must be a node directly under /dev".into()));
    }
    let meta = std::fs::metadata(p).map_err(|e| bad(e.to_string()))?;
    if !meta.file_type().is_char_device() {
        return Err(bad("not a character device".into()));
    }
    Ok(meta.rdev())
}

/// A tmpfs on `<root>/dev` (nosuid, noexec, but device nodes allowed) holding a new node for
/// each of `devices` with the host's device number, owned by the jail's ids, mode 0600;
/// read-only once they exist.
fn device_nodes(root: &Path, devices: &[PathBuf], uid: u32, gid: u32) -> Result<()> {
    let dev = root.join("dev");
    std::fs::create_dir_all(&dev).map_err(sys_err(format!("mkdir {}", dev.display())))?;
    let flags = libc::MS_NOSUID | libc::MS_NOEXEC;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        flags,
        Some("size=4k,nr_inodes=16,mode=0755"),
    )
    .map_err(sys_err(format!("mount a tmpfs on {}", dev.display())))?;
    for d in devices {
        let rdev = check_device(d)?;
        let node = dev.join(d.file_name().expect("checked"));
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &node,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            rdev,
        )
        .map_err(|e| sys_err(format!("mknod {}", node.display()))(e.into()))?;
        rustix::fs::chown(
            &node,
            Some(rustix::process::Uid::from_raw(uid)),
            Some(rustix::process::Gid::from_raw(gid)),
        )
        .map_err(|e| sys_err(format!("chown {}", node.display()))(e.into()))?;
    }
    mount(
        None,
        &dev,
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | flags,
        None,
    )
    .map_err(sys_err(format!("make {} read-only", dev.display())))
}

/// A bind source must be absolute, not "/", without "." or ".." components, and exist;
/// returns it relative to "/".
pub(crate) fn check_bind(src: &Path) -> Result<&Path> {
    let rel = check_target(src)?;
    if !src.exists() {
        return Err(Error::Invalid(format!(
            "jail bind {}: does not exist",
            src.display()
        )));
    }
    Ok(rel)
}

/// Bind `src` at the same path under `root`: read-only all the way down, or writable; nosuid
/// and nodev either way.
fn bind(src: &Path, root: &Path, read_only: bool) -> Result<()> {
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
    if read_only {
        return read_only_all_the_way(&target);
    }
    mount(
        None,
        &target,
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NODEV,
        None,
    )
    .map_err(sys_err(format!(
        "make the bind of {} nosuid",
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
