//! Bad input to `bulkhead vm run`: each case must end with exit status 1, exactly one
//! error line naming the problem, and nothing left behind on the host (no vsock socket file,
//! no console file).

mod vm_common;

use std::time::Duration;

use vm_common::{guest, run, Finished, TempDir, BULKHEAD};

const T: Duration = Duration::from_secs(30);

/// Runs with a vsock socket and a console file configured, so the test can check that a
/// refused VM created neither.
fn refused(dir: &TempDir, args: &[&str]) -> Finished {
    let uds = dir.path("v.sock");
    let console = dir.path("console.log");
    let mut all = vec!["vm", "run"];
    all.extend_from_slice(args);
    let vs = format!("3,uds={}", uds.display());
    all.extend_from_slice(&["--vsock", &vs, "--console", console.to_str().unwrap()]);
    let out = run(&all, T);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line\n{out}");
    assert!(lines[0].starts_with("bulkhead: "), "{out}");
    assert!(!uds.exists(), "vsock socket created by a refused VM");
    assert!(!console.exists(), "console file created by a refused VM");
    out
}

#[test]
fn kernel_that_is_neither_bzimage_nor_elf() {
    let dir = TempDir::new("bad-kernel");
    let k = dir.path("kernel");
    std::fs::write(&k, b"#!/bin/sh\necho this is not a kernel\n").unwrap();
    let out = refused(&dir, &["--kernel", k.to_str().unwrap()]);
    assert!(out.stderr.contains("neither a bzImage"), "{out}");
    assert!(out.stderr.contains(k.to_str().unwrap()), "{out}");
}

#[test]
fn initrd_that_does_not_fit() {
    let dir = TempDir::new("bad-initrd");
    let initrd = dir.path("initrd");
    std::fs::File::create(&initrd)
        .unwrap()
        .set_len(40 << 20)
        .unwrap();
    let out = refused(
        &dir,
        &[
            "--kernel",
            guest().elf.to_str().unwrap(),
            "--memory",
            "32",
            "--initrd",
            initrd.to_str().unwrap(),
        ],
    );
    assert!(out.stderr.contains("initrd"), "{out}");
    assert!(out.stderr.contains("do not fit in guest memory"), "{out}");
}

#[test]
fn zero_cpus() {
    let dir = TempDir::new("bad-cpus");
    let out = refused(
        &dir,
        &["--kernel", guest().elf.to_str().unwrap(), "--cpus", "0"],
    );
    assert!(out.stderr.contains("cpus: must be at least 1"), "{out}");
}

#[test]
fn more_memory_than_the_host_has() {
    let dir = TempDir::new("bad-mem");
    let out = refused(
        &dir,
        &[
            "--kernel",
            guest().elf.to_str().unwrap(),
            "--memory",
            "100000000",
        ],
    );
    assert!(
        out.stderr
            .contains("memory: 100000000 MiB is more than the host has"),
        "{out}"
    );
}

#[test]
fn missing_disk() {
    let dir = TempDir::new("bad-disk");
    let disk = dir.path("no-such-disk.img");
    let out = refused(
        &dir,
        &[
            "--kernel",
            guest().elf.to_str().unwrap(),
            "--disk",
            disk.to_str().unwrap(),
        ],
    );
    assert!(
        out.stderr
            .contains(&format!("disk {}: No such file", disk.display())),
        "{out}"
    );
}

#[test]
fn missing_kernel_and_bad_json() {
    let dir = TempDir::new("bad-json");
    let out = refused(&dir, &["--kernel", dir.path("vmlinux").to_str().unwrap()]);
    assert!(out.stderr.contains("kernel"), "{out}");
    let cfg = dir.path("vm.json");
    std::fs::write(&cfg, r#"{"kernel": "/k", "cpu": 2}"#).unwrap();
    let out = refused(&dir, &["--config", cfg.to_str().unwrap()]);
    assert!(out.stderr.contains("unknown field `cpu`"), "{out}");
}

/// Runs a shell script in a private mount namespace (so it can change mounts for bulkhead
/// alone): exit code and stderr.
fn in_private_mount_ns(script: &str) -> (Option<i32>, String) {
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .output()
        .expect("unshare");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// /dev/kvm hidden by a private mount namespace with an empty /dev.
#[test]
fn missing_dev_kvm() {
    let dir = TempDir::new("bad-kvm");
    let script = format!(
        "mount -t tmpfs none /dev && exec {BULKHEAD} vm run --kernel {} --vsock 3,uds={} --console {}",
        guest().elf.display(),
        dir.path("v.sock").display(),
        dir.path("console.log").display()
    );
    let (code, stderr) = in_private_mount_ns(&script);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "bulkhead: /dev/kvm: does not exist (no KVM on this host, or the kvm module is not loaded)"
    );
    assert!(!dir.path("v.sock").exists() && !dir.path("console.log").exists());
}

// --- the jail's own input ---

#[test]
fn a_jail_user_or_group_that_does_not_exist() {
    let dir = TempDir::new("bad-jail-uid");
    let k = guest().elf.to_str().unwrap().to_string();
    let out = refused(
        &dir,
        &["--kernel", &k, "--jail-uid", "no-such-user-bulkhead"],
    );
    assert!(
        out.stderr
            .contains("--jail-uid \"no-such-user-bulkhead\": no user"),
        "{out}"
    );
    let out = refused(
        &dir,
        &["--kernel", &k, "--jail-gid", "no-such-group-bulkhead"],
    );
    assert!(
        out.stderr.contains("no group \"no-such-group-bulkhead\""),
        "{out}"
    );
}

#[test]
fn a_privileged_jail_user_or_a_bad_cpu_limit() {
    let dir = TempDir::new("bad-jail-root");
    let k = guest().elf.to_str().unwrap().to_string();
    let out = refused(&dir, &["--kernel", &k, "--jail-uid", "root"]);
    assert!(
        out.stderr
            .contains("jail uid 0: the jailed process must not be root"),
        "{out}"
    );
    let out = refused(&dir, &["--kernel", &k, "--jail-cpus", "0"]);
    assert!(
        out.stderr
            .contains("--jail-cpus \"0\": must be a positive number of CPUs"),
        "{out}"
    );
}

/// The memory hierarchy read-only (as inside a container with a read-only cgroupfs): the
/// cgroup cannot be made; the hierarchies before it in the list got directories, which must
/// all be removed again.
#[test]
fn an_unwritable_cgroup_parent() {
    let dir = TempDir::new("bad-jail-cgroup");
    let parent = format!(
        "bh-ro-{}-{}",
        std::process::id(),
        dir.0.file_name().unwrap().to_string_lossy().len()
    );
    let uds = dir.path("v.sock");
    let console = dir.path("console.log");
    let script = format!(
        "mount -o remount,bind,ro /sys/fs/cgroup/memory && exec {BULKHEAD} vm run --kernel {} \
         --cgroup-parent /{parent} --vsock 3,uds={} --console {}",
        guest().elf.display(),
        uds.display(),
        console.display()
    );
    let (code, stderr) = in_private_mount_ns(&script);
    assert_eq!(code, Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with(&format!(
            "bulkhead: create cgroup /sys/fs/cgroup/memory/{parent}"
        )) && lines[0].contains("Read-only file system"),
        "{stderr}"
    );
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap() {
        let p = h.unwrap().path().join(&parent);
        assert!(!p.exists(), "{} left behind", p.display());
    }
    assert!(!uds.exists() && !console.exists());
}

/// The console file is created after the vsock socket is bound, in the VMM process: when it
/// fails, the socket the (jailed) VMM made is removed by `bulkhead vm run`.
#[test]
fn a_console_that_cannot_be_created_leaves_no_socket() {
    let dir = TempDir::new("bad-console");
    let uds = dir.path("v.sock");
    let console = dir.path("no-such-dir/console.log");
    let out = run(
        &[
            "vm",
            "run",
            "--kernel",
            guest().elf.to_str().unwrap(),
            "--vsock",
            &format!("3,uds={}", uds.display()),
            "--console",
            console.to_str().unwrap(),
        ],
        T,
    );
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert_eq!(out.stderr.lines().count(), 1, "{out}");
    assert!(
        out.stderr
            .starts_with(&format!("bulkhead: console {}", console.display())),
        "{out}"
    );
    assert!(!uds.exists(), "vsock socket left behind");
}

/// A minimal ELF64 kernel: one PT_LOAD at 1 MiB holding the headers and `code`, entered in
/// 64-bit mode at the code.
fn tiny_elf(code: &[u8]) -> Vec<u8> {
    const BASE: u64 = 0x10_0000;
    const HEADERS: u64 = 64 + 56;
    let total = HEADERS + code.len() as u64;
    let mut e = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&(BASE + HEADERS).to_le_bytes()); // e_entry
    e.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    e.extend_from_slice(&0u32.to_le_bytes());
    for half in [64u16, 56, 1, 64, 0, 0] {
        e.extend_from_slice(&half.to_le_bytes()); // ehsize, phentsize, phnum, shentsize..
    }
    e.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    e.extend_from_slice(&5u32.to_le_bytes()); // R+X
    for word in [0, BASE, BASE, total, total, 0x1000] {
        e.extend_from_slice(&word.to_le_bytes());
    }
    e.extend_from_slice(code);
    e
}

/// A kernel that resets the machine through the i8042 without printing anything and
/// without touching its disk: the VMM exits 0 and names the likely missing options.
#[test]
fn silent_kernel_that_ignores_its_disk_gets_hints() {
    let dir = TempDir::new("silent-reset");
    let kernel = dir.path("reset.elf");
    // mov al, 0xfe; out 0x64, al; cli; hlt
    std::fs::write(&kernel, tiny_elf(&[0xb0, 0xfe, 0xe6, 0x64, 0xfa, 0xf4])).unwrap();
    let disk = dir.path("disk.img");
    std::fs::write(&disk, vec![0u8; 4096]).unwrap();
    let out = run(
        &[
            "vm",
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--disk",
            disk.to_str().unwrap(),
        ],
        T,
    );
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.is_empty(), "{out}");
    assert!(
        out.stderr.contains(
            "the guest printed nothing on the serial console before it shut down: is \
             CONFIG_SERIAL_8250_CONSOLE set and console=ttyS0 on the command line?"
        ),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("virtio-blk0 at 0xd0001000 was never set up by the guest")
            && out.stderr.contains("CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES"),
        "{out}"
    );
}

/// A kernel that halts forever without printing: the VMM keeps it running (a guest may be
/// quiet on purpose) but says on stderr, after its silence limit, what is probably missing.
#[test]
fn silent_kernel_that_keeps_running_gets_a_warning() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = TempDir::new("silent-halt");
    let kernel = dir.path("halt.elf");
    // cli; hlt; jmp back to hlt
    std::fs::write(&kernel, tiny_elf(&[0xfa, 0xf4, 0xeb, 0xfd])).unwrap();
    let mut child = Command::new(BULKHEAD)
        .args(["vm", "run", "--kernel", kernel.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = child.stderr.take().unwrap();
    let _guard = Kill(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The VMM warns after 30 s of silence; the limit here only bounds a broken VMM.
    let expected = "the guest printed nothing on the serial console in its first 30 s: is \
                    CONFIG_SERIAL_8250_CONSOLE set and console=ttyS0 on the command line?";
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        let Ok(line) = rx.recv_timeout(left) else {
            break;
        };
        if line.contains("level=warning") && line.contains(expected) {
            return;
        }
        seen.push(line);
    }
    panic!(
        "no silence warning from the VMM; stderr so far:\n{}",
        seen.join("\n")
    );
}
