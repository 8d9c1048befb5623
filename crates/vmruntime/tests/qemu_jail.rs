//! QEMU with KVM, jailed: the backend's one place that starts a hypervisor
//! (`backend::spawn`), with the KVM accelerator forced, boots the project's freestanding test
//! guest (guest/build.sh) and the guest reports on the serial console, while QEMU runs as the
//! jail's unprivileged uid, with no capabilities, no_new_privs, a seccomp filter, and a root
//! holding no device node but its own /dev/kvm.
//!
//! Why the test guest and not the Linux guest image: on this project's development machines
//! KVM emulates guest kernel code, and its emulator rejects the `int3` of Linux's boot-time
//! self-test; the builtin VMM completes it itself, QEMU cannot, so Linux does not boot under
//! QEMU with KVM there (it does under TCG, which is why TCG is QEMU's default on such hosts).
//! The test guest uses no such instruction and boots under QEMU with KVM on either kind of
//! KVM. `harness = false`: the jail needs a single-threaded supervisor.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vmruntime::host::backend::{self, Accel, Backend, HvIo, Hypervisor, VmDesc};

fn main() {
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED qemu_jail: needs root (namespaces, cgroups, setuid)");
        return;
    }
    if backend::find_program(backend::QEMU).is_none() {
        println!(
            "SKIPPED qemu_jail: {} is not installed (scripts/deps.sh installs it)",
            backend::QEMU
        );
        return;
    }
    if !Path::new("/dev/kvm").exists() {
        println!("SKIPPED qemu_with_kvm_runs_jailed: no /dev/kvm on this host");
        return;
    }
    qemu_with_kvm_runs_jailed();
    println!("qemu_jail: 1 check passed");
}

/// A directory removed on drop (also when a check fails).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn qemu_with_kvm_runs_jailed() {
    let dir = TempDir(std::env::temp_dir().join(format!("bh-qemu-jail-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let guest = dir.0.join("guest");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guest/build.sh");
    let st = Command::new("sh").arg(root).arg(&guest).status().unwrap();
    assert!(st.success(), "guest/build.sh failed: {st}");
    let initrd = dir.0.join("initrd");
    std::fs::write(&initrd, b"").unwrap();
    let vm = VmDesc {
        kernel: guest.join("guest.elf"),
        initramfs: initrd,
        disk: None,
        shares: Vec::new(),
        memory_mib: 64,
        cpus: 1,
        socket: dir.0.join("unused.sock"),
        accel: Accel::Kvm,
        net_mac: None,
    };
    let (_ours, theirs) = container::console::relay_pair().unwrap();
    let console = dir.0.join("console.log");
    let io = HvIo {
        console: console.clone(),
        log: dir.0.join("qemu.log"),
        agent: Some(theirs),
        tap: None,
        netns: None,
    };
    let hv = backend::spawn(Backend::Qemu, &vm, io).expect("spawn QEMU with KVM, jailed");
    assert!(matches!(hv, Hypervisor::Jailed(_)), "QEMU runs jailed");
    let pid = hv.pid();
    let proc = |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap_or_default();
    let end = Instant::now() + Duration::from_secs(60);
    let mut out = String::new();
    while !out.contains("guest: done") && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
        out = std::fs::read_to_string(&console).unwrap_or_default();
    }
    // Read while it runs (its own seccomp filter is in place once the guest runs): its
    // identity, and what its root holds.
    let status = proc("status");
    let cmdline = proc("cmdline").replace('\0', " ");
    let dev: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/root/dev"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    // What it opened: /dev/kvm and a KVM VM.
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|l| l.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    hv.kill();
    let how = hv.finish();
    let log = std::fs::read_to_string(dir.0.join("qemu.log")).unwrap_or_default();
    assert!(cmdline.contains("-accel kvm"), "{cmdline}");
    assert!(
        out.contains("bulkhead test guest: entered via pvh") && out.contains("guest: done"),
        "the guest did not run under QEMU with KVM: console {out:?}, QEMU {log:?} ({how})"
    );
    for want in [
        "Uid:\t77777",
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
    ] {
        assert!(
            status.contains(want),
            "{want:?} not in QEMU's status:\n{status}"
        );
    }
    assert_eq!(dev, ["kvm"], "QEMU's /dev holds its own kvm node only");
    assert!(fds.iter().any(|f| f == "/dev/kvm"), "{fds:?}");
    assert!(fds.iter().any(|f| f == "anon_inode:kvm-vm"), "{fds:?}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "QEMU outlived finish()"
    );
}
