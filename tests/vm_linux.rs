//! Boots a real Linux guest (a kernel from guest/build-kernel.sh plus a busybox initramfs
//! whose init writes the boot-timer port and reboots) and checks the VMM reports the boot
//! time and exits 0.
//!
//! Runs only where KVM is hardware-backed (`vmx` or `svm` in /proc/cpuinfo) and a kernel was
//! built: on the software (nested) KVM of the development machines Linux does not boot, so
//! the test prints why it skips and returns.

mod vm_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use vm_common::{run, shutdown_report, TempDir};

fn hardware_virtualization() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| {
            c.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
        })
        .unwrap_or(false)
}

fn kernel() -> PathBuf {
    std::env::var_os("BULKHEAD_GUEST_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/out/linux/bzImage"))
}

/// A newc cpio archive entry.
fn cpio_entry(out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8], ino: u32) {
    let header = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        0, 0, 1, 0, data.len(), 0, 0, 0, 0, name.len() + 1, 0
    );
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn initramfs(busybox: &Path) -> Vec<u8> {
    let init = b"#!/bin/busybox sh\n\
/bin/busybox mkdir -p /proc /dev\n\
/bin/busybox mount -t proc proc /proc\n\
/bin/busybox mount -t devtmpfs dev /dev\n\
/bin/busybox devmem 0xd0000000 8 123\n\
echo linux-guest: init ran on $(/bin/busybox uname -r)\n\
/bin/busybox reboot -f\n";
    let mut out = Vec::new();
    cpio_entry(&mut out, "bin", 0o040755, b"", 1);
    cpio_entry(
        &mut out,
        "bin/busybox",
        0o100755,
        &std::fs::read(busybox).unwrap(),
        2,
    );
    cpio_entry(&mut out, "init", 0o100755, init, 3);
    cpio_entry(&mut out, "TRAILER!!!", 0, b"", 4);
    out
}

#[test]
fn linux_guest_boots_writes_boot_timer_and_reboots() {
    if !hardware_virtualization() {
        eprintln!(
            "SKIPPED linux_guest_boots_writes_boot_timer_and_reboots: /proc/cpuinfo shows neither \
             vmx nor svm; on a software (nested) KVM Linux guests do not boot (see docs/vm.md)"
        );
        return;
    }
    let kernel = kernel();
    if !kernel.exists() {
        eprintln!(
            "SKIPPED linux_guest_boots_writes_boot_timer_and_reboots: no guest kernel at {} \
             (build it with guest/build-kernel.sh or set BULKHEAD_GUEST_KERNEL)",
            kernel.display()
        );
        return;
    }
    let busybox = Path::new("/bin/busybox");
    assert!(busybox.exists(), "install busybox-static for the initramfs");
    let dir = TempDir::new("vm-linux");
    let initrd = dir.path("initramfs.cpio");
    std::fs::write(&initrd, initramfs(busybox)).unwrap();
    let out = run(
        &[
            "vm",
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
            "--cmdline",
            "console=ttyS0 reboot=k panic=1 pci=off rdinit=/init",
            "--cpus",
            "2",
            "--memory",
            "256",
        ],
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.contains("linux-guest: init ran on"), "{out}");
    eprintln!("{}", shutdown_report(&out));
}
