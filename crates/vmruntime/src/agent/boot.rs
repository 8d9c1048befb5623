//! What PID 1 of a minimal Linux sets up before anything else runs, and how it ends.

use std::path::Path;

use container::sys::mount;

use crate::error::{Context, Result};

/// (source, target, fstype, flags, data) for the guest's own filesystems. The container
/// gets its own /proc, /dev... from the container library; these are the agent's.
const MOUNTS: &[(&str, &str, &str, libc::c_ulong, Option<&str>)] = &[
    (
        "devtmpfs",
        "/dev",
        "devtmpfs",
        libc::MS_NOSUID,
        Some("mode=0755"),
    ),
    ("proc", "/proc", "proc", NOSUID_NODEV_NOEXEC, None),
    ("sysfs", "/sys", "sysfs", NOSUID_NODEV_NOEXEC, None),
    (
        "devpts",
        "/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    ),
    (
        "tmpfs",
        "/run",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755"),
    ),
    (
        "tmpfs",
        "/tmp",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=1777"),
    ),
    (
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=1777"),
    ),
    (
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        NOSUID_NODEV_NOEXEC,
        None,
    ),
];

const NOSUID_NODEV_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// Leave the initramfs: the kernel's initial root (rootfs) cannot be pivoted away from,
/// and the container library pivot_roots into each container's root. A tmpfs moved over
/// `/` (and chrooted into, as switch_root does) is an ordinary mount that can.
pub fn leave_initramfs() -> Result<()> {
    let new = Path::new("/newroot");
    std::fs::create_dir_all(new).ctx(|| "mkdir /newroot".into())?;
    mount(Some("tmpfs"), new, Some("tmpfs"), 0, Some("mode=0755"))
        .ctx(|| "mount tmpfs on /newroot".into())?;
    std::env::set_current_dir(new).ctx(|| "chdir /newroot".into())?;
    mount(Some("."), Path::new("/"), None, libc::MS_MOVE, None)
        .ctx(|| "move /newroot to /".into())?;
    rustix::process::chroot(".").ctx(|| "chroot into the new root".into())?;
    std::env::set_current_dir("/").ctx(|| "chdir /".into())
}

/// Mount /dev, /proc, /sys, /dev/pts, /run, /tmp, /dev/shm and cgroup v2, then make
/// /dev/console this process's stdio (the kernel may have started us without one: the
/// initramfs holds no device nodes).
pub fn mount_basics() -> Result<()> {
    for &(src, dst, fstype, flags, data) in MOUNTS {
        std::fs::create_dir_all(dst).ctx(|| format!("mkdir {dst}"))?;
        mount(Some(src), Path::new(dst), Some(fstype), flags, data)
            .ctx(|| format!("mount {fstype} on {dst}"))?;
    }
    // /dev/ptmx of the devpts instance above (the container library gives containers
    // their own).
    let _ = std::fs::remove_file("/dev/ptmx");
    let _ = std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx");
    if let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    {
        container::sys::dup_stdio([std::os::fd::AsRawFd::as_raw_fd(&f); 3])?;
    }
    Ok(())
}

/// Milliseconds since the kernel started.
pub fn uptime_ms() -> u64 {
    // SAFETY: a zeroed timespec is valid; clock_gettime writes through a valid pointer.
    let t = unsafe {
        let mut t: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut t);
        t
    };
    t.tv_sec as u64 * 1000 + t.tv_nsec as u64 / 1_000_000
}

/// Flush and end the VM. The kernel command line picks how the reset reaches the
/// hypervisor (`reboot=k`: the i8042 reset the builtin VMM treats as shutdown; `reboot=t`:
/// a triple fault, which QEMU's `-no-reboot` turns into an exit).
pub fn power_off() -> ! {
    rustix::fs::sync();
    // SAFETY: plain reboot(2); as PID 1 with every capability it does not return.
    unsafe { libc::reboot(libc::RB_AUTOBOOT) };
    // Only without CAP_SYS_BOOT, which PID 1 of a guest always has.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
