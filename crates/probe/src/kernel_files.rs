//! Kernel interfaces reached through files: the sysrq trigger (crash or reboot the host), the
//! core-dump pattern (a pipe to a program the host's kernel runs as root), /sys/kernel
//! settings, cgroupfs (leaving the own cgroup's limits), and the readable views of kernel
//! memory: /proc/kcore and the symbol addresses of /proc/kallsyms (defeating KASLR).
//!
//! A masked path is a bind of /dev/null (or an empty tmpfs): opening it may succeed, so the
//! probes check that what they opened is the kernel's file before calling a write allowed.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};

use crate::sys::{self, fs_magic, is_char_device, PROC_MAGIC, SYSFS_MAGIC};
use crate::{Context, Verdict};

/// Why a kernel file is missing: the kernel lacks it (the directory holding it is the
/// kernel's filesystem, `magic`) or the view hides it (the directory is masked by another
/// filesystem, or absent).
pub(crate) fn missing(path: &str, magic: i64, fs_name: &str) -> Verdict {
    let dir = std::path::Path::new(path)
        .parent()
        .and_then(|d| d.to_str())
        .unwrap_or("/");
    if fs_magic(dir) == Some(magic) {
        Verdict::not_applicable(format!("this kernel has no {path}"))
    } else {
        Verdict::blocked(format!(
            "{path}: no such file ({dir} is not {fs_name} here: masked or not mounted)"
        ))
    }
}

fn open_error(e: &std::io::Error, path: &str, magic: i64, fs: &str) -> Verdict {
    match e.raw_os_error() {
        Some(libc::ENOENT) => missing(path, magic, fs),
        Some(n) => Verdict::refused(n, path),
        None => Verdict::blocked(e.to_string()),
    }
}

/// Write `data` to the kernel file `path` (opened for writing only), refusing a masked one.
fn write_kernel_file(path: &str, data: &[u8], magic: i64, fs: &str) -> Verdict {
    let mut f = match OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) => return open_error(&e, path, magic, fs),
    };
    if is_char_device(&f) {
        return Verdict::blocked(format!("{path} is masked (a bind of /dev/null)"));
    }
    // One write(2), as a shell's echo does: a kernel setting takes its value in one call
    // (and write_all would not call write(2) at all for the sysrq probe's 0 bytes).
    match f.write(data) {
        Ok(n) => Verdict::allowed(format!(
            "{path} opened for writing and written ({n} bytes, its current value)"
        )),
        Err(e) => Verdict::refused(e.raw_os_error().unwrap_or(0), path),
    }
}

pub fn sysrq_trigger(_: &Context) -> Verdict {
    // Zero bytes: the kernel runs one command per byte written, so nothing runs; the open
    // and the write still pass every check a real command would.
    let mut v = write_kernel_file("/proc/sysrq-trigger", b"", PROC_MAGIC, "procfs");
    if v.result == crate::Outcome::Allowed {
        v.detail = "/proc/sysrq-trigger opened for writing; a 0-byte write succeeded (each \
                    byte written would run a sysrq command)"
            .into();
    }
    v
}

pub fn core_pattern(_: &Context) -> Verdict {
    let path = "/proc/sys/kernel/core_pattern";
    let current = match fs::read(path) {
        Ok(c) => c,
        Err(e) => return open_error(&e, path, PROC_MAGIC, "procfs"),
    };
    write_kernel_file(path, &current, PROC_MAGIC, "procfs")
}

/// Settings whose current value can be written back without effect.
const SYS_KERNEL_SETTINGS: [&str; 3] = [
    "/sys/kernel/uevent_helper",
    "/sys/kernel/rcu_expedited",
    "/sys/kernel/rcu_normal",
];

pub fn sys_kernel(_: &Context) -> Verdict {
    let Some(path) = SYS_KERNEL_SETTINGS
        .iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        return if fs_magic("/sys/kernel") == Some(SYSFS_MAGIC) {
            Verdict::not_applicable(format!(
                "this kernel has none of {}",
                SYS_KERNEL_SETTINGS.join(", ")
            ))
        } else {
            Verdict::blocked("/sys/kernel is not sysfs here (masked or not mounted)")
        };
    };
    let current = match fs::read(path) {
        Ok(c) => c,
        Err(e) => return open_error(&e, path, SYSFS_MAGIC, "sysfs"),
    };
    write_kernel_file(path, &current, SYSFS_MAGIC, "sysfs")
}

pub fn cgroup_procs(_: &Context) -> Verdict {
    let (Ok(mountinfo), Ok(cgroup)) = (
        fs::read_to_string("/proc/self/mountinfo"),
        fs::read_to_string("/proc/self/cgroup"),
    ) else {
        return Verdict::blocked("/proc/self is not readable: no cgroup to find");
    };
    let mounts = inspect::cgroup::mounts(&mountinfo);
    if mounts.is_empty() {
        return Verdict::blocked("no cgroup filesystem is mounted");
    }
    let pid = std::process::id().to_string();
    let mut first_refusal = None;
    for m in inspect::cgroup::memberships(&cgroup, &mounts) {
        let Some(dir) = m.dir else { continue };
        let file = dir.join("cgroup.procs");
        // Writing the own pid to the own cgroup moves nothing.
        match OpenOptions::new().write(true).open(&file) {
            Ok(mut f) => match f.write_all(pid.as_bytes()) {
                Ok(()) => {
                    return Verdict::allowed(format!(
                        "wrote the own pid to {} (any cgroup's would do)",
                        file.display()
                    ))
                }
                Err(e) => {
                    first_refusal.get_or_insert((file, e));
                }
            },
            Err(e) => {
                first_refusal.get_or_insert((file, e));
            }
        }
    }
    match first_refusal {
        Some((file, e)) => Verdict::blocked(format!(
            "{}: {}",
            file.display(),
            sys::errno_text(e.raw_os_error().unwrap_or(0))
        )),
        None => Verdict::blocked("the own cgroups are not under any mounted cgroup filesystem"),
    }
}

pub fn kcore(_: &Context) -> Verdict {
    let path = "/proc/kcore";
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) => return open_error(&e, path, PROC_MAGIC, "procfs"),
    };
    if is_char_device(&f) {
        return Verdict::blocked("/proc/kcore is masked (a bind of /dev/null)");
    }
    let mut head = [0u8; 64];
    match f.read(&mut head) {
        Ok(n) if n >= 4 && head[..4] == *b"\x7fELF" => {
            Verdict::allowed("read the ELF header of the kernel's memory image")
        }
        Ok(n) => Verdict::blocked(format!("read {n} bytes, not an ELF header")),
        Err(e) => Verdict::refused(e.raw_os_error().unwrap_or(0), path),
    }
}

pub fn kallsyms(_: &Context) -> Verdict {
    let path = "/proc/kallsyms";
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) => return open_error(&e, path, PROC_MAGIC, "procfs"),
    };
    let mut text = Vec::with_capacity(1 << 16);
    if let Err(e) = Read::by_ref(&mut f).take(1 << 16).read_to_end(&mut text) {
        return Verdict::refused(e.raw_os_error().unwrap_or(0), path);
    }
    let text = String::from_utf8_lossy(&text);
    let mut lines = 0;
    for line in text.lines() {
        lines += 1;
        let mut it = line.split_whitespace();
        let (Some(addr), Some(_), Some(sym)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if u64::from_str_radix(addr, 16).is_ok_and(|a| a != 0) {
            return Verdict::allowed(format!("{sym} at {addr}"));
        }
    }
    if lines == 0 {
        Verdict::blocked("/proc/kallsyms reads empty (masked)")
    } else {
        Verdict::blocked("every address reads as 0 (kptr_restrict, no CAP_SYSLOG)")
    }
}
