//! Boots the project's Linux guest kernel (guest/build-kernel.sh, from its cache) on the
//! builtin VMM with a busybox initramfs, on whatever KVM this machine has: hardware, or the
//! software-emulating KVM of the development machines (where the VMM adds its kernel
//! parameters and instruction fallbacks). A boot costs 15-40 s on the emulating KVM, so each
//! boot checks several things: one vCPU with the init's marker, the boot-timer report and a
//! virtio-blk disk the guest reads and writes with `dd`; then two vCPUs; then a Linux guest
//! snapshotted mid-run and restored.
//!
//! The kernel must exist: `./test.sh` builds it (cached by its inputs) before `cargo test`.
//! Without it the tests fail and say how to build it; they never skip.

mod vm_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vm_common::{
    finish_by_reset, pattern, restore, run, shutdown_report, snapshot, spawn, vmm_pid, wait_file,
    TempDir,
};

/// Runs one of the guest/ scripts with bash; its stdout, or a panic with its stderr.
fn guest_script(name: &str, args: &[&Path]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("guest")
        .join(name);
    let out = Command::new("bash")
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run guest/{name}: {e}"));
    assert!(
        out.status.success(),
        "guest/{name} failed (scripts/deps.sh installs what it needs): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The cached kernel for the current guest/ inputs, or `$BULKHEAD_GUEST_KERNEL`.
fn kernel() -> PathBuf {
    if let Some(k) = std::env::var_os("BULKHEAD_GUEST_KERNEL") {
        return PathBuf::from(k);
    }
    let dir = guest_script("build-kernel.sh", &[Path::new("--print-path")]);
    let vmlinux = PathBuf::from(dir).join("vmlinux");
    assert!(
        vmlinux.exists(),
        "no guest kernel at {}: build it with `guest/build-kernel.sh` (about 10 minutes \
         on 2 cores; ./test.sh runs it), or set BULKHEAD_GUEST_KERNEL",
        vmlinux.display()
    );
    vmlinux
}

/// Whether this host's KVM emulates guest kernel code (the VMM's own rule).
fn emulating_kvm() -> bool {
    let hw = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    Path::new("/sys/module/kvm_pvm").exists() || !hw
}

/// An uncompressed initramfs (guest/build-initramfs.sh: busybox, `/dev/console`) with
/// [`PRELUDE`] and `script` as `/init`.
fn initramfs(dir: &TempDir, script: &str) -> PathBuf {
    let init = dir.path("init");
    std::fs::write(&init, format!("{PRELUDE}{script}")).unwrap();
    let cpio = dir.path("initramfs.cpio");
    guest_script("build-initramfs.sh", &[&cpio, &init]);
    cpio
}

/// Shell prelude of the guests' init scripts. On the emulating KVM of the development
/// machines a process started by `exec` sometimes dies at once of SIGSEGV (it reads zeroes
/// from its own thread-local storage; a host KVM defect, see docs/vm.md), so `try` reruns a
/// command that died of a signal (status > 128), at most 5 times, and says so on the console:
/// `linux-guest: retry`. A command that exits, whatever its output, is never rerun, and the
/// init's own work uses shell builtins where it can (`read`, `echo`).
const PRELUDE: &str = "#!/bin/busybox sh
bb=/bin/busybox
try() {
  n=0
  while :; do
    \"$@\"
    rc=$?
    if [ $rc -le 128 ] || [ $n -ge 5 ]; then return $rc; fi
    n=$((n+1))
    echo \"linux-guest: retry $n of $* (status $rc)\"
  done
}
try $bb mount -t proc proc /proc
echo 1 > /proc/sys/kernel/printk
";

/// Reports, reads sector 0 of the disk and writes sector 1 with `dd`, and reboots. It first
/// keeps kernel messages off the console, so none lands in the middle of its lines. The
/// sector's first bytes are also dumped in hex, so that a failed read shows what the guest
/// got.
const DISK_INIT: &str = "try $bb mount -t devtmpfs dev /dev
try $bb devmem 0xd0000000 8 123
read -r release < /proc/sys/kernel/osrelease
cpus=0
while read -r key rest; do [ \"$key\" = processor ] && cpus=$((cpus+1)); done < /proc/cpuinfo
echo \"linux-guest: init ran on $release with $cpus cpus\"
try $bb dd if=/dev/vda of=/sector0 bs=512 count=1 2>/dev/null
try $bb head -c 24 /sector0 > /marker
read -r marker < /marker
echo \"linux-guest: disk sector 0: $marker\"
try $bb hexdump -C -n 48 /sector0
echo 'written by the guest' > /written
try $bb dd if=/written of=/dev/vda bs=512 seek=1 conv=notrunc,fsync 2>/dev/null
echo \"linux-guest: disk write status $?\"
try $bb reboot -f
";

/// Reports the CPUs user space sees and reboots; `exec` so that the VM ends even if a
/// process dies (init's death panics the kernel, and `panic=1` reboots it).
const SMP_INIT: &str = "cpus=0
while read -r key rest; do [ \"$key\" = processor ] && cpus=$((cpus+1)); done < /proc/cpuinfo
echo \"linux-guest: init sees $cpus cpus\"
exec $bb reboot -f
";

/// `vm run` of `kernel` and `initrd` with 64 MiB, plus `extra`.
fn vm_run<'a>(kernel: &'a Path, initrd: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "vm",
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "--memory",
        "64",
    ];
    args.extend_from_slice(extra);
    args
}

fn boot(kernel: &Path, initrd: &Path, extra: &[&str]) -> vm_common::Finished {
    let mut args = vec!["--debug"];
    args.extend(vm_run(kernel, initrd, extra));
    run(&args, Duration::from_secs(300))
}

#[test]
fn linux_boots_reports_and_uses_a_virtio_disk() {
    let kernel = kernel();
    let dir = TempDir::new("vm-linux");
    let initrd = initramfs(&dir, DISK_INIT);
    // Sector 0 carries a marker the guest must read back; the rest is a pattern that must
    // survive except where the guest writes (sector 1).
    let disk = dir.path("disk.img");
    let mut image = pattern(64 << 10, 0x11_6e_c5);
    let marker = format!("host-marker-{:012x}", std::process::id());
    image[..24].copy_from_slice(&marker.as_bytes()[..24]);
    std::fs::write(&disk, &image).unwrap();

    let out = boot(&kernel, &initrd, &["--disk", disk.to_str().unwrap()]);
    assert!(out.status.success(), "{out}");
    assert!(
        out.stdout.contains("linux-guest: init ran on 6.1.") && out.stdout.contains("with 1 cpus"),
        "{out}"
    );
    assert!(
        out.stdout
            .contains(&format!("linux-guest: disk sector 0: {}", &marker[..24])),
        "the guest did not read the host's marker from /dev/vda\n{out}"
    );
    assert!(
        out.stdout.contains("linux-guest: disk write status 0"),
        "{out}"
    );
    let report = shutdown_report(&out);
    assert!(report.contains("(i8042 reset)"), "{report}");

    let after = std::fs::read(&disk).unwrap();
    let written = b"written by the guest\n";
    assert_eq!(
        &after[512..512 + written.len()],
        written,
        "guest write missing"
    );
    assert_eq!(&after[..512], &image[..512], "sector 0 changed");
    assert_eq!(
        &after[512 + written.len()..],
        &image[512 + written.len()..],
        "bytes the guest did not write changed"
    );

    if emulating_kvm() {
        // The kernel's int3 self-test and fwait on task exit reach the VMM's fallbacks.
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains("emulation fallbacks: int3 -> #BP "))
            .unwrap_or_else(|| panic!("no fallback counts with --debug\n{out}"));
        assert!(!line.contains("int3 -> #BP 0,"), "{line}");
        assert!(out.stderr.contains("pvm.syscall_fixup=1"), "{out}");
    }
    eprintln!("{report}; {}", retries(&out.stdout));
}

/// Two vCPUs: the kernel starts the second one (INIT-SIPI through the in-kernel LAPIC, the MP
/// table's processor entries) and runs init. On the emulating KVM, user space on more than one
/// vCPU is not reliable (processes sometimes read zeroes where their TLS was just written,
/// "segfault at 0" in the first TLS access; the same kernel and initramfs never show it with
/// one vCPU or under QEMU), so there the test checks the kernel's side and a clean end; on
/// hardware KVM also the CPU count user space sees.
#[test]
fn linux_brings_up_two_vcpus() {
    let kernel = kernel();
    let dir = TempDir::new("vm-linux-smp");
    let initrd = initramfs(&dir, SMP_INIT);
    let out = boot(&kernel, &initrd, &["--cpus", "2"]);
    assert!(out.status.success(), "{out}");
    assert!(
        out.stdout.contains("smp: Brought up 1 node, 2 CPUs"),
        "{out}"
    );
    assert!(out.stdout.contains("Run /init as init process"), "{out}");
    if !emulating_kvm() {
        assert!(
            out.stdout.contains("linux-guest: init sees 2 cpus"),
            "{out}"
        );
    }
}

/// A kernel that does not use kvmclock (`no-kvmclock` here) calibrates its TSC against the
/// legacy PIT and waits for its ticks at the IO-APIC timer check: it boots only on a VM given
/// one with `--pit` (without, it waits for those ticks forever; that hang is not tested, it
/// would only cost a timeout).
#[test]
fn a_kernel_without_kvmclock_boots_given_a_pit() {
    let kernel = kernel();
    let dir = TempDir::new("vm-linux-pit");
    let initrd = initramfs(&dir, SMP_INIT);
    let cmdline = "console=ttyS0 reboot=k panic=1 pci=off no-kvmclock";
    let out = boot(&kernel, &initrd, &["--pit", "--cmdline", cmdline]);
    assert!(out.status.success(), "{out}");
    // kvmclock really was off: it registers no clocksource.
    assert!(!out.stdout.contains("clocksource: kvm-clock"), "{out}");
    assert!(
        out.stdout.contains("linux-guest: init sees 1 cpus"),
        "{out}"
    );
    let tsc = out
        .stdout
        .lines()
        .filter(|l| l.contains("tsc: "))
        .collect::<Vec<_>>();
    eprintln!("{}; {}", tsc.join(" | "), retries(&out.stdout));
}

/// Prints `tick N UPTIME` once a second (timer interrupts, the clock, the serial port), then
/// reboots.
const TICK_INIT: &str = "i=0
while [ $i -lt 7 ]; do
  i=$((i+1))
  read -r up idle < /proc/uptime
  echo \"tick $i $up\"
  try $bb sleep 1
done
echo linux-guest: done ticking
try $bb reboot -f
";

/// How many commands the init reran after a crash (see [`PRELUDE`]), for the test's log.
fn retries(console: &str) -> String {
    let n = console.matches("linux-guest: retry ").count();
    format!("{n} guest command(s) rerun after a crash on this host's KVM")
}

/// The `tick N UPTIME` lines of a console log, in order.
fn ticks(text: &str) -> Vec<(u32, f64)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.strip_prefix("tick ")?.split_whitespace();
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .collect()
}

/// A Linux guest snapshotted while it ticks, its VMM killed, and the snapshot restored: the
/// same kernel and process go on (the tick count continues, the guest's clock does not jump
/// back), and the restored guest reboots cleanly.
#[test]
fn a_linux_guest_continues_after_snapshot_and_restore() {
    let kernel = kernel();
    let dir = TempDir::new("vm-linux-snap");
    let initrd = initramfs(&dir, TICK_INIT);
    let (api, state, mem) = (
        dir.path("api.sock"),
        dir.path("vm.state"),
        dir.path("vm.mem"),
    );
    let (first, second) = (dir.path("first.log"), dir.path("second.log"));
    let vm = spawn(&vm_run(
        &kernel,
        &initrd,
        &[
            "--api-socket",
            api.to_str().unwrap(),
            "--console",
            first.to_str().unwrap(),
        ],
    ));
    let boot = Duration::from_secs(300);
    if wait_file(&first, "tick 2 ", boot).is_none() {
        panic!("the guest never ticked twice\n{}", vm.finish(boot));
    }
    let report = snapshot(&api, &state, &mem);
    assert_eq!(report["ok"], true, "{report}");
    // SAFETY: kill(2) on the VMM process, a child of our child.
    assert_eq!(unsafe { libc::kill(vmm_pid(&vm), libc::SIGKILL) }, 0);
    let killed = vm.finish(boot);
    assert_eq!(killed.status.code(), Some(137), "{killed}");
    let before = std::fs::read_to_string(&first).unwrap();
    assert!(
        !before.contains("done ticking"),
        "the guest ended before the snapshot"
    );

    let restored = restore(
        &state,
        &mem,
        &["--resume", "--console", second.to_str().unwrap()],
    );
    finish_by_reset(restored, boot);
    let after = std::fs::read_to_string(&second).unwrap();
    assert!(after.contains("linux-guest: done ticking"), "{after}");
    assert!(
        !ticks(&after).is_empty(),
        "no tick after the restore\n{after}"
    );
    // Both consoles together: ticks 1..=7 once each, in order, on a clock that only goes
    // forward (the snapshot may have cut a line in two; the halves join).
    let all = ticks(&(before.clone() + &after));
    let numbers: Vec<u32> = all.iter().map(|t| t.0).collect();
    assert_eq!(
        numbers,
        (1..=7).collect::<Vec<_>>(),
        "{before}\n--- restored ---\n{after}"
    );
    assert!(
        all.windows(2).all(|w| w[1].1 > w[0].1),
        "the guest's uptime went back: {all:?}"
    );
    eprintln!("{}", retries(&(before + &after)));
}
