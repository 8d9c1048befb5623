//! Device nodes in the container's /dev: the spec's default devices, the
//! config's `linux.devices`, the /dev symlinks, and the matching allow rules
//! for the device cgroup.

use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileTypeExt;

use oci::{Device, DeviceRule};
use rustix::fs::{mknodat, openat, FileType, Gid, Mode, OFlags, Uid};
use rustix::io::Errno;

use crate::error::{msg, Context, Result};
use crate::paths::{ensure_in_root, fd_path, open_in_root};
use crate::sys;

/// The devices runtime-spec requires in every container ("Default Devices").
pub const DEFAULT: [(&str, u32, u32); 6] = [
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

fn rule(typ: &str, major: Option<i64>, minor: Option<i64>, access: &str) -> DeviceRule {
    DeviceRule {
        allow: true,
        typ: Some(typ.into()),
        major,
        minor,
        access: Some(access.into()),
    }
}

/// The device cgroup rules: the config's own, then allowances for the default
/// devices, the pty devices and every `linux.devices` node (as runc does:
/// a device the runtime creates must also be usable).
pub fn cgroup_rules(config_rules: &[DeviceRule], devices: &[Device]) -> Vec<DeviceRule> {
    let mut v = config_rules.to_vec();
    if v.is_empty() {
        return v; // no device policy requested: leave the cgroup's default (allow all)
    }
    for (_, maj, min) in DEFAULT {
        v.push(rule("c", Some(maj.into()), Some(min.into()), "rwm"));
    }
    v.push(rule("c", Some(5), Some(1), "rwm")); // /dev/console
    v.push(rule("c", Some(5), Some(2), "rwm")); // /dev/ptmx
    v.push(rule("c", Some(136), None, "rwm")); // /dev/pts/*
    for d in devices {
        if d.typ == "c" || d.typ == "b" || d.typ == "u" {
            let t = if d.typ == "b" { "b" } else { "c" };
            v.push(rule(t, Some(d.major), Some(d.minor), "rwm"));
        }
    }
    v
}

fn file_type(t: &str) -> FileType {
    match t {
        "b" => FileType::BlockDevice,
        "p" => FileType::Fifo,
        _ => FileType::CharacterDevice,
    }
}

/// Create one node under `root`. In a user namespace mknod is not allowed, so
/// the host's node is bind-mounted onto an empty file instead (as runc does).
fn make_node(root: BorrowedFd<'_>, d: &Device, in_userns: bool, replace: bool) -> Result<()> {
    let (parent, name) = d.path.rsplit_once('/').unwrap_or(("", &d.path));
    let dir = ensure_in_root(root, if parent.is_empty() { "/" } else { parent }, false)?;
    let dirfd = openat(
        &dir,
        ".",
        OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open {parent} in the container root"))?;
    let ft = file_type(&d.typ);
    let rdev = rustix::fs::makedev(d.major as u32, d.minor as u32);

    // An existing node must be the requested one (spec), unless it is one of
    // the defaults we may replace.
    if let Ok(st) = rustix::fs::statat(&dirfd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
        let same =
            FileType::from_raw_mode(st.st_mode) == ft && (d.typ == "p" || st.st_rdev == rdev);
        if same {
            return Ok(());
        }
        if !replace {
            return Err(msg(format!(
                "linux.devices: {} already exists and is not the requested device",
                d.path
            )));
        }
        rustix::fs::unlinkat(&dirfd, name, rustix::fs::AtFlags::empty())
            .ctx(|| format!("remove stale {}", d.path))?;
    }
    let mode = Mode::from_raw_mode(d.file_mode.unwrap_or(0o666) & 0o7777);
    if !in_userns {
        mknodat(&dirfd, name, ft, mode, rdev).ctx(|| format!("mknod {}", d.path))?;
        // mknod honours the umask; set the exact mode and owner asked for.
        rustix::fs::chmodat(&dirfd, name, mode, rustix::fs::AtFlags::empty())
            .ctx(|| format!("chmod {}", d.path))?;
        rustix::fs::chownat(
            &dirfd,
            name,
            Some(Uid::from_raw(d.uid.unwrap_or(0))),
            Some(Gid::from_raw(d.gid.unwrap_or(0))),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .ctx(|| format!("chown {}", d.path))?;
        return Ok(());
    }
    // User namespace: bind the host node (it must exist on the host).
    let host = std::fs::metadata(&d.path).ctx(|| {
        format!(
            "linux.devices: {} (needed on the host to bind into a user-namespaced container)",
            d.path
        )
    })?;
    let ok = match d.typ.as_str() {
        "b" => host.file_type().is_block_device(),
        "p" => host.file_type().is_fifo(),
        _ => host.file_type().is_char_device(),
    };
    if !ok {
        return Err(msg(format!(
            "linux.devices: host {} is not the requested device type",
            d.path
        )));
    }
    let f = openat(
        &dirfd,
        name,
        OFlags::CREATE | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .ctx(|| format!("create {} mount point", d.path))?;
    let target = openat(
        &dirfd,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open {}", d.path))?;
    drop(f);
    sys::mount(Some(&d.path), &fd_path(&target), None, libc::MS_BIND, None)
        .ctx(|| format!("bind mount host {} into the container", d.path))?;
    Ok(())
}

/// Create the default devices and `linux.devices` under `root`.
pub fn create_all(root: BorrowedFd<'_>, devices: &[Device], in_userns: bool) -> Result<()> {
    for (path, major, minor) in DEFAULT {
        // A config entry for the same path takes precedence.
        if devices.iter().any(|d| d.path == path) {
            continue;
        }
        let d = Device {
            typ: "c".into(),
            path: path.into(),
            major: major.into(),
            minor: minor.into(),
            file_mode: Some(0o666),
            uid: Some(0),
            gid: Some(0),
        };
        make_node(root, &d, in_userns, true)?;
    }
    for d in devices {
        make_node(root, d, in_userns, false)?;
    }
    Ok(())
}

/// /dev/fd, /dev/std{in,out,err}, /dev/core and /dev/ptmx -> pts/ptmx.
pub fn symlinks(root: BorrowedFd<'_>, has_devpts: bool) -> Result<()> {
    let dev = open_in_root(root, "/dev", OFlags::DIRECTORY)
        .ctx(|| "open /dev in the container root".into())?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    if std::path::Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    for (target, name) in links {
        match rustix::fs::symlinkat(target, &dev, name) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e).ctx(|| format!("symlink /dev/{name}")),
        }
    }
    if has_devpts {
        // The container's ptmx must be its own devpts instance's.
        match rustix::fs::unlinkat(&dev, "ptmx", rustix::fs::AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(e).ctx(|| "remove /dev/ptmx".into()),
        }
        rustix::fs::symlinkat("pts/ptmx", &dev, "ptmx").ctx(|| "symlink /dev/ptmx".into())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_add_defaults_only_with_a_policy() {
        assert!(cgroup_rules(&[], &[]).is_empty());
        let deny = DeviceRule {
            allow: false,
            typ: None,
            major: None,
            minor: None,
            access: Some("rwm".into()),
        };
        let fuse = Device {
            typ: "c".into(),
            path: "/dev/fuse".into(),
            major: 10,
            minor: 229,
            file_mode: None,
            uid: None,
            gid: None,
        };
        let r = cgroup_rules(std::slice::from_ref(&deny), std::slice::from_ref(&fuse));
        assert_eq!(r[0], deny);
        assert!(r
            .iter()
            .any(|x| x.major == Some(1) && x.minor == Some(3) && x.allow));
        assert!(r
            .iter()
            .any(|x| x.major == Some(10) && x.minor == Some(229)));
        assert!(r.iter().any(|x| x.major == Some(136) && x.minor.is_none()));
    }
}
