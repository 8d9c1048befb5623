//! Devices: physical memory (/dev/mem), a node of the host's disk made with mknod (raw access
//! to every file of the host), and /dev/kvm (the hypervisor's ioctl surface).
//!
//! A device node missing from the view is blocked only when the kernel has the device (its
//! char-device entry in /sys/dev/char, or the misc class); when the kernel lacks it the probe
//! is not applicable.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::sys::{self, cstr, errno_text, TempDir, SYSFS_MAGIC};
use crate::{Context, Verdict};

/// A device node that is absent here: does the kernel have the device? (`sysfs_entry` is the
/// device's sysfs path, e.g. /sys/dev/char/1:1.)
fn absent(node: &str, sysfs_entry: &str) -> Verdict {
    if Path::new(sysfs_entry).exists() {
        Verdict::blocked(format!(
            "{node}: no such file (the kernel has the device, {sysfs_entry}; this view has no node)"
        ))
    } else if sys::fs_magic("/sys") == Some(SYSFS_MAGIC) {
        Verdict::not_applicable(format!("this kernel has no {node} (no {sysfs_entry})"))
    } else {
        Verdict::blocked(format!(
            "{node}: no such file (whether the kernel has it is unknown: no sysfs here)"
        ))
    }
}

pub fn dev_mem(_: &Context) -> Verdict {
    let f = match File::open("/dev/mem") {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            return absent("/dev/mem", "/sys/dev/char/1:1")
        }
        Err(e) => return Verdict::refused(e.raw_os_error().unwrap_or(0), "/dev/mem"),
    };
    if sys::is_char_device(&f) && !is_devmem(&f) {
        return Verdict::blocked("/dev/mem is masked (another device node)");
    }
    // The first page of physical memory (the real-mode vector table): readable under
    // STRICT_DEVMEM, and reading it changes nothing.
    let mut buf = [0u8; 16];
    match f.read_at(&mut buf, 0) {
        Ok(n) => Verdict::allowed(format!("read {n} bytes of physical memory at address 0")),
        Err(e) => Verdict::refused(e.raw_os_error().unwrap_or(0), "reading /dev/mem"),
    }
}

fn is_devmem(f: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    f.metadata().is_ok_and(|m| m.rdev() == libc::makedev(1, 1))
}

pub fn mknod_block(_: &Context) -> Verdict {
    // The disk holding /, the one a node would expose; loop0 when / is not on a block device
    // (overlay, tmpfs: anonymous device numbers).
    let root_dev = std::fs::metadata("/")
        .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
        .unwrap_or(0);
    let (major, minor) = match (libc::major(root_dev), libc::minor(root_dev)) {
        (0, _) => (7, 0),
        mm => mm,
    };
    let Some(dir) = TempDir::new() else {
        return Verdict::blocked("no writable directory to make a node in");
    };
    let node = dir.0.join("blockdev");
    let c = cstr(&node);
    let mode = libc::S_IFBLK | 0o600;
    // SAFETY: mknod on a NUL-terminated path in our own fresh directory.
    if unsafe { libc::mknod(c.as_ptr(), mode, libc::makedev(major, minor)) } != 0 {
        return Verdict::refused(sys::errno(), "mknod(2)");
    }
    let open = match OpenOptions::new().read(true).open(&node) {
        Ok(_) => "and opened it for reading".to_string(),
        Err(e) => format!("open: {}", errno_text(e.raw_os_error().unwrap_or(0))),
    };
    let _ = std::fs::remove_file(&node);
    Verdict::allowed(format!(
        "made block device {major}:{minor} in {} ({open}), removed",
        dir.0.display()
    ))
}

pub fn dev_kvm(_: &Context) -> Verdict {
    match OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => Verdict::allowed("opened /dev/kvm read-write"),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            absent("/dev/kvm", "/sys/class/misc/kvm")
        }
        Err(e) => Verdict::refused(e.raw_os_error().unwrap_or(0), "/dev/kvm"),
    }
}
