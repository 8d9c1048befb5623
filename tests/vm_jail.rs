//! The jail around the VMM, end to end: `bulkhead vm run` (jailed by default) with the test
//! guest driving its devices, inspected from the host while it runs; signals to the supervisor;
//! the supervisor's death; `--no-jail` and `--jail-report`. (Every test in vm_guest.rs runs
//! jailed as well: that the guest still drives every device proves the allow lists complete.)

mod vm_common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use vm_common::{
    cgroup_dirs, connect_1234, guest, run, serve_port_5000, shutdown_report, spawn, vmm_pid,
    Running, TempDir, BULKHEAD,
};

const T: Duration = Duration::from_secs(60);
/// The jail's default uid and gid (documented in the README).
const JAIL_ID: u64 = 77_777;

fn inspect_json(pid: i32) -> serde_json::Value {
    let out = std::process::Command::new(BULKHEAD)
        .args(["inspect", "--pid", &pid.to_string(), "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        // A zombie (not reaped yet by a dead supervisor's init) counts as gone.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(s)
                if s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z') =>
            {
                return true
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

fn limit(report: &serde_json::Value, name: &str) -> f64 {
    report["cgroup"]["limits"][name]["value"]
        .as_f64()
        .unwrap_or_else(|| panic!("no {name} limit: {}", report["cgroup"]))
}

#[test]
fn jailed_vmm_has_every_layer_and_sees_nothing_of_the_host() {
    let g = guest();
    let dir = TempDir::new("vm-jail");
    // A disk only root can reach: mode 0600 in a 0700 directory. The jailed uid could not
    // open it, but the VMM opens it before the jail.
    let private = dir.path("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let disk = private.join("rw.img");
    let mut data = vm_common::pattern(1 << 20, 7);
    data[..13].copy_from_slice(b"JAILED-DISK\0\0");
    std::fs::write(&disk, &data).unwrap();
    std::fs::set_permissions(&disk, std::fs::Permissions::from_mode(0o600)).unwrap();
    let uds = dir.path("v.sock");
    let host_side = serve_port_5000(&uds);
    let mut vm = spawn(&[
        "vm",
        "run",
        "--kernel",
        g.elf.to_str().unwrap(),
        "--cpus",
        "2",
        "--memory",
        "96",
        "--disk",
        disk.to_str().unwrap(),
        "--rng",
        "--vsock",
        &format!("3,uds={}", uds.display()),
    ]);
    vm.wait_for("vsock: listening on port 1234", T)
        .expect("the guest never reached its vsock listen step");
    let vmm = vmm_pid(&vm);
    let r = inspect_json(vmm);

    // 7 or 8 of 8 namespaces private (all but user).
    assert!(
        r["namespaces"]["private"].as_u64().unwrap() >= 7,
        "{}",
        r["namespaces"]
    );
    for ns in r["namespaces"]["items"].as_array().unwrap() {
        if ns["kind"] != "user" {
            assert_eq!(ns["share"], "private", "{ns}");
        }
    }
    // A cgroup of its own, with memory (guest RAM + overhead) and pids limits.
    assert_eq!(r["cgroup"]["status"], "limited");
    let mem = limit(&r, "memory");
    assert!(
        mem > (96u64 << 20) as f64 && mem <= (96u64 << 20) as f64 + (128u64 << 20) as f64,
        "memory limit {mem}"
    );
    assert_eq!(limit(&r, "pids"), 2.0 + 6.0);
    // seccomp: every thread filtered, by exactly one filter of its own.
    assert_eq!(r["seccomp"]["status"], "filtered");
    let threads = r["seccomp"]["threads"].as_array().unwrap();
    let names: Vec<&str> = threads
        .iter()
        .map(|t| t["comm"].as_str().unwrap())
        .collect();
    for want in ["vmm-events", "vcpu0", "vcpu1"] {
        assert!(names.contains(&want), "{names:?}");
    }
    for t in threads {
        assert_eq!(t["mode"], 2, "{t}");
        assert_eq!(t["filters"], 1, "{t}");
    }
    // No capability in any set.
    let sets = &r["capabilities"]["sets"];
    for set in [
        "bounding",
        "effective",
        "permitted",
        "inheritable",
        "ambient",
    ] {
        assert_eq!(sets[set]["mask"], 0, "{set}: {}", sets[set]);
    }
    assert_eq!(r["no_new_privs"]["value"], true);
    assert_eq!(r["ids"]["status"], "unprivileged");
    for id in r["ids"]["uids"]
        .as_array()
        .unwrap()
        .iter()
        .chain(r["ids"]["gids"].as_array().unwrap())
    {
        assert_eq!(id.as_u64(), Some(JAIL_ID));
    }
    assert_eq!(r["root"]["status"], "own root");
    assert_eq!(r["root"]["root_mount"]["read_only"], true, "{}", r["root"]);

    // Nothing of the host by path: the VMM's root is empty.
    let root: Vec<_> = std::fs::read_dir(format!("/proc/{vmm}/root"))
        .unwrap()
        .collect();
    assert!(root.is_empty(), "the jail's root holds {root:?}");
    // Non-dumpable: its /proc files belong to root, not to its uid.
    let meta = std::fs::metadata(format!("/proc/{vmm}/status")).unwrap();
    assert_eq!(meta.uid(), 0);
    // rlimits: no core files; files grow to at most the read-write disk's size; few fds.
    let limits = std::fs::read_to_string(format!("/proc/{vmm}/limits")).unwrap();
    let soft = |name: &str| -> String {
        let l = limits.lines().find(|l| l.starts_with(name)).unwrap();
        l[name.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(soft("Max core file size"), "0");
    assert_eq!(soft("Max file size"), (1u64 << 20).to_string());
    let nofile: u64 = soft("Max open files").parse().unwrap();
    assert!((32..=1200).contains(&nofile), "{limits}");

    // Its own cgroup in the memory and pids hierarchies (those it limits), not in cpu.
    let dirs = cgroup_dirs(vmm);
    for c in ["memory", "pids"] {
        assert!(
            dirs.iter()
                .any(|d| d.to_string_lossy().contains(&format!("/{c}/bulkhead/vm-"))),
            "{dirs:?}"
        );
    }
    assert!(
        !dirs.iter().any(|d| d.to_string_lossy().contains("/cpu/")),
        "{dirs:?}"
    );
    connect_1234(&uds);
    let out = vm.finish(T);
    assert!(out.status.success(), "{out}");
    assert_eq!(
        host_side.join().unwrap(),
        "hello from the guest over vsock\n",
        "guest -> host vsock message"
    );
    assert!(
        out.line("blk0: read sector 0")
            .ends_with("data 'JAILED-DISK'"),
        "{out}"
    );
    assert_eq!(out.line("blk0: flush"), "blk0: flush status 0");
    assert_eq!(out.line("blk0: readback"), "blk0: readback ok");
    let written = std::fs::read(&disk).unwrap();
    let msg = b"written by the bulkhead test guest to sector 2";
    assert_eq!(&written[1024..1024 + msg.len()], msg);
    assert!(out.stdout.contains("rng: 32 bytes"), "{out}");
    assert!(shutdown_report(&out).contains("(i8042 reset)"), "{out}");
    // Afterwards: the cgroup and the socket file are gone.
    for d in &dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    assert!(!uds.exists(), "vsock socket left behind");
}

#[test]
fn jail_report_lists_the_layers() {
    let g = guest();
    let out = run(
        &[
            "vm",
            "run",
            "--kernel",
            g.elf.to_str().unwrap(),
            "--jail-report",
            "--jail-uid",
            "4242",
            "--jail-cpus",
            "0.5",
        ],
        T,
    );
    assert!(out.status.success(), "{out}");
    assert!(
        out.stderr.contains("bulkhead vm: jailed VMM pid ")
            && out.stderr.contains("uid 4242 gid 4242"),
        "{out}"
    );
    assert!(
        out.stderr.contains("threads, filters each: "),
        "per-thread seccomp row\n{out}"
    );
    assert!(out.stderr.contains("cpu 0.50 CPUs"), "{out}");
    assert!(
        out.stderr
            .contains("summary: 7 of 9 layers in force: namespaces, cgroup, seccomp, capabilities, no_new_privs, user ids, root"),
        "{out}"
    );
    shutdown_report(&out);
}

#[test]
fn no_jail_runs_unconfined_and_says_so() {
    let g = guest();
    let out = run(
        &[
            "vm",
            "run",
            "--kernel",
            g.elf.to_str().unwrap(),
            "--no-jail",
        ],
        T,
    );
    assert!(out.status.success(), "{out}");
    assert!(
        out.stderr
            .lines()
            .next()
            .unwrap_or("")
            .starts_with("bulkhead vm: --no-jail: the VMM runs unconfined"),
        "{out}"
    );
    shutdown_report(&out);
    // The jail flags make no sense without a jail.
    let out = run(
        &[
            "vm",
            "run",
            "--kernel",
            g.elf.to_str().unwrap(),
            "--no-jail",
            "--jail-uid",
            "1000",
        ],
        T,
    );
    assert_eq!(out.status.code(), Some(2), "{out}");
}

/// A guest parked at its vsock listen step, with the VMM's pid and cgroup.
struct Parked {
    vm: Running,
    vmm: i32,
    dirs: Vec<PathBuf>,
    uds: PathBuf,
    _dir: TempDir,
}

fn parked(tag: &str) -> Parked {
    let dir = TempDir::new(tag);
    let uds = dir.path("v.sock");
    let mut vm = spawn(&[
        "vm",
        "run",
        "--kernel",
        guest().elf.to_str().unwrap(),
        "--vsock",
        &format!("3,uds={}", uds.display()),
    ]);
    vm.wait_for("vsock: listening on port 1234", T)
        .expect("the guest never reached its vsock listen step");
    let vmm = vmm_pid(&vm);
    let dirs = cgroup_dirs(vmm);
    assert!(!dirs.is_empty(), "the VMM has no cgroup of its own");
    Parked {
        vm,
        vmm,
        dirs,
        uds,
        _dir: dir,
    }
}

#[test]
fn a_signal_to_bulkhead_stops_the_jailed_vm_and_cleans_up() {
    let p = parked("vm-jail-term");
    p.vm.signal(libc::SIGTERM);
    let out = p.vm.finish(T);
    assert_eq!(out.status.code(), Some(128 + libc::SIGTERM), "{out}");
    assert!(gone(p.vmm), "the VMM outlived its supervisor's SIGTERM");
    for d in &p.dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    assert!(!p.uds.exists(), "vsock socket left behind");
}

#[test]
fn the_vmm_dies_with_its_supervisor_and_its_cgroup_is_removed() {
    let p = parked("vm-jail-kill");
    p.vm.signal(libc::SIGKILL);
    let out = p.vm.finish(T);
    assert_eq!(out.status.code(), None, "{out}");
    assert!(
        gone(p.vmm),
        "the VMM outlived its supervisor (PR_SET_PDEATHSIG)"
    );
    // The supervisor could not remove the cgroup: its reaper does, once the VMM is gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.dirs.iter().any(|d| d.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<_> = p.dirs.iter().filter(|d| d.exists()).collect();
    for d in &left {
        let _ = std::fs::remove_dir(d);
    }
    assert!(
        left.is_empty(),
        "cgroup directories left after SIGKILL: {left:?}"
    );
    // The socket is the caller's path, not the jail's: a killed server leaves it, as any does.
    let _ = std::fs::remove_file(&p.uds);
}

/// `--log FILE` is opened by the supervisor; the jailed VMM keeps that descriptor (and only
/// it) and writes its own lines there. (Had it been closed, a later open could reuse its number
/// and log lines would land in whatever file got it, a disk image for instance.)
#[test]
fn a_log_file_reaches_the_jailed_vmm() {
    let g = guest();
    let dir = TempDir::new("vm-jail-log");
    let log = dir.path("log.txt");
    let disk = dir.path("disk.img");
    let data = vm_common::pattern(1 << 20, 11);
    std::fs::write(&disk, &data).unwrap();
    let out = run(
        &[
            "--log",
            log.to_str().unwrap(),
            "--debug",
            "vm",
            "run",
            "--kernel",
            g.elf.to_str().unwrap(),
            "--disk",
            &format!("{},ro", disk.display()),
        ],
        T,
    );
    assert!(out.status.success(), "{out}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("guest shut down (i8042 reset)"),
        "the VMM's own log line is missing:\n{text}"
    );
    assert_eq!(std::fs::read(&disk).unwrap(), data, "the disk changed");
}
