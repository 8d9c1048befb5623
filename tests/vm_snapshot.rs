//! Snapshots and restores, end to end with the test guest (jailed VMMs, the default): a guest
//! that counts is snapshotted mid-count, its VMM killed, and the restored VM's output continues
//! exactly where it stopped and matches an uninterrupted run; every device survives a restore
//! (a disk write queued before the snapshot lands after it, rng answers, vsock reconnects both
//! ways); a VM started with the legacy PIT gets it back with its state, also from a state file
//! laid out as before the PIT was optional; snapshots that cannot be restored are refused with
//! one line, before anything is created; a diff snapshot merged onto the snapshot it
//! follows is the full snapshot; and the static release binary, the one users install,
//! pauses, snapshots and restores a jailed VM too.

mod vm_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use vm_common::{
    api_op, assert_vsock_exchange, connect_1234, count_vm, count_vm_on, count_vm_with, counts,
    finish_by_reset, guest, one_error_line, pattern, restore, restore_on, run, serve_port_5000,
    snapshot, snapshot_cmd, snapshot_ok, spawn_with_input, static_bulkhead, vmm_pid, wait_file,
    Finished, Running, TempDir, BULKHEAD, COUNT,
};

const T: Duration = Duration::from_secs(60);

fn status(socket: &Path) -> serde_json::Value {
    api_op("status", socket)
}

/// Kills the jailed VMM with SIGKILL (the supervisor survives, reports it and cleans up).
fn kill_vmm(vm: Running) -> Finished {
    // SAFETY: kill(2) on the VMM process, a child of our child.
    assert_eq!(unsafe { libc::kill(vmm_pid(&vm), libc::SIGKILL) }, 0);
    let out = vm.finish(T);
    assert_eq!(out.status.code(), Some(137), "{out}");
    assert!(
        out.stderr.contains("killed by signal 9"),
        "the supervisor did not report the kill\n{out}"
    );
    out
}

/// A cgroup parent of the test's own, so a refused restore can be shown to create none.
fn cgroup_parent(dir: &TempDir) -> String {
    let tag = dir.0.file_name().unwrap().to_string_lossy().to_string();
    format!("/bulkhead-test-{tag}")
}

/// A snapshot test's API socket, state file and memory file, in its directory.
fn snapshot_paths(dir: &TempDir) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.path("api.sock"),
        dir.path("vm.state"),
        dir.path("vm.mem"),
    )
}

/// The consoles of a counting guest before and after a restore, joined: every count once, in
/// order (the snapshot may have cut a line in two; the halves join). Returns the counts.
fn counts_in_order(before: &str, after: &str) -> Vec<(u64, String)> {
    let joined = counts(&format!("{before}{after}"));
    for (i, (n, _)) in joined.iter().enumerate() {
        assert_eq!(*n, i as u64 + 1, "count {n} out of place after a restore");
    }
    joined
}

#[test]
fn a_restored_guest_counts_on_exactly_where_it_was() {
    let dir = TempDir::new("snap-count");
    let (api, state, mem) = snapshot_paths(&dir);
    let first = dir.path("first.log");
    let vm = count_vm(&api, &first, &["--cgroup-parent", &cgroup_parent(&dir)]);
    wait_file(&first, "count 200 ", T).expect("the guest never counted to 200");

    let report = snapshot(&api, &state, &mem);
    assert_eq!(
        report["memory_file_bytes"].as_u64(),
        Some(4096 + (128 << 20)),
        "{report}"
    );
    assert!(state.is_file() && mem.is_file());
    // A VM started without --pit has no PIT, so the snapshot holds no PIT state.
    assert_eq!(saved_state(&state)["kvm"]["pit"], serde_json::Value::Null);
    // The VM stays paused after a snapshot: status says so and its vCPU makes no exits.
    let s1 = status(&api);
    assert_eq!(s1["state"], "paused", "{s1}");
    assert_eq!(s1["vcpus"][0]["state"], "paused", "{s1}");
    let s2 = status(&api);
    assert_eq!(s1["vcpus"][0]["exits"], s2["vcpus"][0]["exits"]);

    kill_vmm(vm);
    assert!(!api.exists(), "the supervisor left the API socket file");
    let before = std::fs::read_to_string(&first).unwrap();
    let last_before = counts(&before).last().unwrap().0;

    // Restored, jailed, resumed at once: the count continues; Ctrl+Alt+Del ends it.
    let second = dir.path("second.log");
    let restored = restore_resumed(&state, &mem, &api, &second);
    let target = last_before + 100;
    wait_file(&second, &format!("count {target} "), T)
        .unwrap_or_else(|| panic!("the restored guest never counted to {target}"));
    let s = status(&api);
    assert_eq!(
        (s["state"].as_str(), s["restored"].as_bool()),
        (Some("running"), Some(true))
    );
    assert_eq!(api_op("shutdown", &api)["action"], "ctrl-alt-del");
    finish_by_reset(restored, T);
    let after = std::fs::read_to_string(&second).unwrap();
    assert!(
        after.contains("i8042: key codes 0x14 0x11 0xe0 0x71: ctrl-alt-del, shutting down"),
        "{after}"
    );
    let joined = counts_in_order(&before, &after);
    let last = joined.last().unwrap().0;
    assert!(last >= target);

    // An uninterrupted run of the same guest prints the same lines.
    let third = dir.path("uninterrupted.log");
    let api2 = dir.path("api2.sock");
    let whole = count_vm(&api2, &third, &[]);
    wait_file(&third, &format!("count {last} "), T).expect("the uninterrupted run stalled");
    api_op("shutdown", &api2);
    let out = whole.finish(T);
    assert!(out.status.success(), "{out}");
    let reference = counts(&std::fs::read_to_string(&third).unwrap());
    assert!(reference.len() >= joined.len());
    assert_eq!(&reference[..joined.len()], &joined[..]);
}

/// The other tests run the debug build; users install scripts/build.sh's static musl build,
/// whose libc makes other system calls for the same work (epoll_pwait for epoll_wait, tkill
/// for pthread_kill, ioctl requests sign-extended to 64 bits), which the jailed VMM's filters
/// must allow: a filter that misses one kills the VMM with SIGSYS. On that binary, a counting VM is paused (the kicks), resumed,
/// snapshotted, killed and restored, counts on in order, and shuts down cleanly.
#[test]
fn the_static_release_binary_pauses_snapshots_and_restores_a_jailed_vm() {
    let bin = static_bulkhead();
    let dir = TempDir::new("snap-static");
    let (api, state, mem) = snapshot_paths(&dir);
    let first = dir.path("first.log");
    let vm = count_vm_on(&bin, COUNT, &api, &first, &[]);
    wait_file(&first, "count 50 ", T).expect("the guest never counted to 50");
    assert_eq!(api_op("pause", &api)["state"], "paused");
    assert_eq!(api_op("resume", &api)["state"], "running");
    wait_file(&first, "count 100 ", T).expect("the resumed guest never counted to 100");
    snapshot(&api, &state, &mem);
    kill_vmm(vm);
    let before = std::fs::read_to_string(&first).unwrap();
    let last_before = counts(&before).last().unwrap().0;

    let second = dir.path("second.log");
    let restored = restore_resumed_on(&bin, &state, &mem, &api, &second, &[]);
    let target = last_before + 50;
    wait_file(&second, &format!("count {target} "), T)
        .unwrap_or_else(|| panic!("the restored guest never counted to {target}"));
    api_op("shutdown", &api);
    finish_by_reset(restored, T);
    let after = std::fs::read_to_string(&second).unwrap();
    assert!(counts_in_order(&before, &after).last().unwrap().0 >= target);
}

/// A state file's version line (with its newline) and its JSON state, checksum checked.
fn read_state(path: &Path) -> (Vec<u8>, serde_json::Value) {
    let file = std::fs::read(path).unwrap();
    let body = vmm::snapshot::format::unframe(&file).unwrap();
    let split = body.iter().position(|&b| b == b'\n').unwrap() + 1;
    (
        body[..split].to_vec(),
        serde_json::from_slice(&body[split..]).unwrap(),
    )
}

fn saved_state(path: &Path) -> serde_json::Value {
    read_state(path).1
}

/// The size of KVM's `struct kvm_pit_state2`, which the state file holds as a byte array.
const PIT_STATE_BYTES: usize = 3 * 24 + 4 + 9 * 4;

fn pit_bytes(state: &serde_json::Value) -> Option<usize> {
    state["kvm"]["pit"].as_array().map(Vec::len)
}

#[test]
fn a_vm_started_with_a_pit_keeps_it_across_a_restore() {
    let dir = TempDir::new("snap-pit");
    let (api, state, mem) = snapshot_paths(&dir);
    let first = dir.path("first.log");
    let vm = count_vm(&api, &first, &["--pit"]);
    wait_file(&first, "count 50 ", T).expect("the guest never counted to 50");
    snapshot(&api, &state, &mem);
    // KVM_GET_PIT2 answered, which it does only for a VM that has a PIT.
    let saved = saved_state(&state);
    assert_eq!(saved["config"]["pit"], true, "{}", saved["config"]);
    assert_eq!(pit_bytes(&saved), Some(PIT_STATE_BYTES), "{}", saved["kvm"]);
    kill_vmm(vm);
    let before = std::fs::read_to_string(&first).unwrap();
    let last_before = counts(&before).last().unwrap().0;

    // The same state as a bulkhead from before the PIT was optional wrote it: no `pit` in the
    // config (the PIT state was always there). Restored from that, the VM gets a PIT with the
    // saved state (KVM_SET_PIT2 fails on a VM without one) and its guest counts on.
    let old_style = dir.path("old-style.state");
    let (mut old_body, mut json) = read_state(&state);
    json["config"].as_object_mut().unwrap().remove("pit");
    old_body.extend_from_slice(&serde_json::to_vec(&json).unwrap());
    std::fs::write(&old_style, vmm::snapshot::format::frame(&old_body)).unwrap();
    let second = dir.path("second.log");
    let restored = restore_resumed(&old_style, &mem, &api, &second);
    let target = last_before + 50;
    wait_file(&second, &format!("count {target} "), T)
        .unwrap_or_else(|| panic!("the restored guest never counted to {target}"));
    // A snapshot of the restored VM holds PIT state again.
    let (state2, mem2) = (dir.path("vm2.state"), dir.path("vm2.mem"));
    snapshot(&api, &state2, &mem2);
    assert_eq!(pit_bytes(&saved_state(&state2)), Some(PIT_STATE_BYTES));
    assert_eq!(api_op("shutdown", &api)["action"], "stopped");
    let out = restored.finish(T);
    assert!(out.status.success(), "{out}");
    counts_in_order(&before, &std::fs::read_to_string(&second).unwrap());
}

const SECTOR: usize = 512;
const WRITTEN: &[u8] = b"written across a snapshot by the bulkhead test guest";

#[test]
fn every_device_survives_a_restore() {
    let dir = TempDir::new("snap-devices");
    let (api, state, mem) = snapshot_paths(&dir);
    let disk = dir.path("disk.img");
    let original = pattern(1 << 20, 0x5a5);
    std::fs::write(&disk, &original).unwrap();
    let sector3 = |p: &Path| std::fs::read(p).unwrap()[3 * SECTOR..4 * SECTOR].to_vec();
    let uds = dir.path("v.sock");
    let uds_arg = format!("3,uds={}", uds.display());
    let mut vm = spawn_with_input(&[
        "vm",
        "run",
        "--kernel",
        guest().elf.to_str().unwrap(),
        "--cmdline",
        "console=ttyS0 bulkhead_test.mode=devices",
        // The second vCPU waits for a SIPI that never comes: its state is saved too.
        "--cpus",
        "2",
        "--disk",
        disk.to_str().unwrap(),
        "--rng",
        "--vsock",
        &uds_arg,
        "--api-socket",
        api.to_str().unwrap(),
    ]);
    vm.wait_for("blk: write queued", T)
        .expect("the guest never queued its disk write");
    snapshot(&api, &state, &mem);
    kill_vmm(vm);
    // Queued, never notified: nothing reached the disk before the snapshot.
    assert_eq!(sector3(&disk), original[3 * SECTOR..4 * SECTOR]);
    assert!(!uds.exists(), "the supervisor left the vsock socket file");

    // Guest-initiated vsock connections after the restore land here.
    let host_side = serve_port_5000(&uds);
    let mut restored = restore(
        &state,
        &mem,
        &["--resume", "--api-socket", api.to_str().unwrap()],
    );
    // 'w': the guest only waits; the restored device serves the queued request by itself.
    restored.send(b"w");
    restored
        .wait_for("vsock: listening on port 1234", T)
        .expect("the restored guest never reached its vsock listen step");
    connect_1234(&uds);
    let out = restored.finish(T);
    assert!(out.status.success(), "{out}");
    assert_eq!(
        out.line("blk: write completed"),
        "blk: write completed status 0"
    );
    assert_eq!(out.line("rng:"), "rng: 16 random bytes");
    assert_eq!(
        out.line("vsock: transport reset"),
        "vsock: transport reset event id 0"
    );
    assert_vsock_exchange(&out);
    assert!(out.stdout.contains("devices: done"), "{out}");
    assert_eq!(
        host_side.join().unwrap(),
        "hello from the guest over vsock\n"
    );
    let now = sector3(&disk);
    assert_eq!(&now[..WRITTEN.len()], WRITTEN);
    assert!(now[WRITTEN.len()..].iter().all(|b| *b == 0));
    assert!(!uds.exists() && !api.exists());
}

/// A snapshot of a paused count guest with a disk, for the refusal tests; the VM is stopped.
struct Snapshot {
    dir: TempDir,
    state: PathBuf,
    mem: PathBuf,
    disk: PathBuf,
    /// A second snapshot of the same VM.
    state2: PathBuf,
    mem2: PathBuf,
}

fn take_snapshots(tag: &str) -> Snapshot {
    let dir = TempDir::new(tag);
    let api = dir.path("api.sock");
    let disk = dir.path("disk.img");
    std::fs::write(&disk, pattern(64 << 10, 7)).unwrap();
    let console = dir.path("console.log");
    let vm = count_vm(
        &api,
        &console,
        &["--memory", "64", "--disk", disk.to_str().unwrap()],
    );
    wait_file(&console, "count 10 ", T).expect("the guest never counted");
    let s = Snapshot {
        state: dir.path("a.state"),
        mem: dir.path("a.mem"),
        state2: dir.path("b.state"),
        mem2: dir.path("b.mem"),
        disk,
        dir,
    };
    snapshot(&api, &s.state, &s.mem);
    api_op("resume", &api);
    snapshot(&api, &s.state2, &s.mem2);
    // A paused VM cannot react to Ctrl+Alt+Del: shutdown stops it.
    assert_eq!(api_op("shutdown", &api)["action"], "stopped");
    let out = vm.finish(T);
    assert!(out.status.success(), "{out}");
    assert!(
        out.stderr.contains("stopped through the API socket"),
        "{out}"
    );
    s
}

/// Every cgroup hierarchy's mount point.
fn cgroup_mounts() -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mounts
        .lines()
        .filter_map(|m| {
            let f: Vec<&str> = m.split(' ').collect();
            let dash = f.iter().position(|x| *x == "-")?;
            f[dash + 1]
                .starts_with("cgroup")
                .then(|| PathBuf::from(f[4]))
        })
        .collect()
}

/// `vm restore` of `state` + `mem` is refused: exit 1, one line naming the problem, and
/// nothing created (no cgroup, no API socket, no console file).
fn refused(s: &Snapshot, state: &Path, mem: &Path, expect: &str) {
    let api = s.dir.path("restore-api.sock");
    let console = s.dir.path("restore-console.log");
    let parent = cgroup_parent(&s.dir);
    let bin = Path::new(BULKHEAD);
    let out = restore_resumed_on(
        bin,
        state,
        mem,
        &api,
        &console,
        &["--cgroup-parent", &parent],
    )
    .finish(T);
    one_error_line(&out, expect);
    assert!(out.stdout.is_empty(), "the guest ran\n{out}");
    assert!(
        !api.exists() && !console.exists(),
        "a refused restore created files"
    );
    for m in cgroup_mounts() {
        let p = m.join(parent.trim_start_matches('/'));
        assert!(!p.exists(), "a refused restore created {}", p.display());
    }
}

#[test]
fn snapshots_that_cannot_be_restored_are_refused_before_anything_starts() {
    let s = take_snapshots("snap-refused");
    let bytes = std::fs::read(&s.state).unwrap();
    let bad = s.dir.path("bad.state");

    // One flipped bit in the middle of the state.
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x10;
    std::fs::write(&bad, &flipped).unwrap();
    refused(&s, &bad, &s.mem, "checksum mismatch: the file is corrupted");

    std::fs::write(&bad, &bytes[..bytes.len() - 100]).unwrap();
    refused(&s, &bad, &s.mem, "truncated");

    // The other snapshot's memory file: same size, another id.
    refused(&s, &s.state, &s.mem2, "belongs to another snapshot");

    let short = s.dir.path("short.mem");
    std::fs::copy(&s.mem, &short).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&short)
        .unwrap();
    f.set_len(std::fs::metadata(&s.mem).unwrap().len() - 4096)
        .unwrap();
    refused(&s, &s.state, &short, "memory size mismatch");

    // Another host's CPU: one CPUID register differs.
    let mut st = vmm::snapshot::VmState::read(&s.state).unwrap();
    st.host_cpuid[0].ebx ^= 1;
    st.write(&bad).unwrap();
    refused(&s, &bad, &s.mem, "different CPUID");

    // Another bulkhead version wrote it (a well-formed file with another version line).
    let body = vmm::snapshot::format::unframe(&bytes).unwrap();
    let json = &body[body.iter().position(|b| *b == b'\n').unwrap() + 1..];
    let mut other = b"bulkhead 0.0.1-other\n".to_vec();
    other.extend_from_slice(json);
    std::fs::write(&bad, vmm::snapshot::format::frame(&other)).unwrap();
    refused(&s, &bad, &s.mem, "written by bulkhead 0.0.1-other");

    // Devices that no longer exist: the disk, a tap.
    let moved = s.dir.path("moved.img");
    std::fs::rename(&s.disk, &moved).unwrap();
    refused(&s, &s.state, &s.mem, s.disk.to_str().unwrap());
    std::fs::rename(&moved, &s.disk).unwrap();
    let f = std::fs::OpenOptions::new()
        .append(true)
        .open(&s.disk)
        .unwrap();
    f.set_len((64 << 10) + 512).unwrap();
    refused(
        &s,
        &s.state,
        &s.mem,
        "was 65536 when the snapshot was taken",
    );
    f.set_len(64 << 10).unwrap();
    let mut st = vmm::snapshot::VmState::read(&s.state).unwrap();
    st.config.net.push("tap=bh-gone0".parse().unwrap());
    st.write(&bad).unwrap();
    refused(&s, &bad, &s.mem, "bh-gone0: no such interface");

    // Not a state file at all, and a missing one.
    refused(&s, &s.mem, &s.mem, "not a bulkhead VM state file");
    refused(&s, &s.dir.path("missing.state"), &s.mem, "missing.state");

    // The intact snapshot restores (so the refusals above were about the damage alone).
    let console = s.dir.path("ok.log");
    let api = s.dir.path("ok.sock");
    let vm = restore(
        &s.state,
        &s.mem,
        &[
            "--api-socket",
            api.to_str().unwrap(),
            "--console",
            console.to_str().unwrap(),
        ],
    );
    // Restored paused (no --resume): running only once resumed.
    wait_file_exists(&api);
    let st = status(&api);
    assert_eq!(st["state"], "paused", "{st}");
    api_op("resume", &api);
    let seen = wait_file(&console, "count ", T).expect("the restored guest did not count");
    assert!(
        !seen.contains("count 1 "),
        "the guest started over:\n{seen}"
    );
    api_op("shutdown", &api);
    let out = vm.finish(T);
    assert!(out.status.success(), "{out}");
}

fn diff_snapshot(api: &Path, state: &Path, mem: &Path) -> serde_json::Value {
    snapshot_ok(api, state, mem, true)
}

/// `vm restore` (jailed) running the guest at once, with its API socket and console here.
fn restore_resumed(state: &Path, mem: &Path, api: &Path, console: &Path) -> Running {
    restore_resumed_on(Path::new(BULKHEAD), state, mem, api, console, &[])
}

/// [`restore_resumed`] by the binary `bin`, plus `extra`.
fn restore_resumed_on(
    bin: &Path,
    state: &Path,
    mem: &Path,
    api: &Path,
    console: &Path,
    extra: &[&str],
) -> Running {
    let mut args = vec![
        "--resume",
        "--api-socket",
        api.to_str().unwrap(),
        "--console",
        console.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    restore_on(bin, state, mem, &args)
}

fn merge(base: &Path, diff: &Path, out: &Path) -> Finished {
    run(
        &[
            "vm",
            "merge-snapshot",
            "--base",
            base.to_str().unwrap(),
            "--diff",
            diff.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        T,
    )
}

/// Bytes of disk a file occupies (its data extents, not its length).
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// The names in `dir` (to show a refused command left nothing behind).
fn names(dir: &TempDir) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

/// The counting guest with a disk it reads every step into memory only the device writes,
/// after touching 16 MiB (memory from 16 to 32 MiB: what a full snapshot has and a diff not).
fn disk_count_vm(dir: &TempDir, api: &Path, console: &Path, extra: &[&str]) -> Running {
    let disk = dir.path("disk.img");
    if !disk.exists() {
        std::fs::write(&disk, pattern(32 << 10, 11)).unwrap();
    }
    let mut args = vec!["--disk", disk.to_str().unwrap()];
    args.extend_from_slice(extra);
    count_vm_with(
        "console=ttyS0 bulkhead_test.mode=count bulkhead_test.touch_mib=32",
        api,
        console,
        &args,
    )
}

/// A diff snapshot holds exactly what changed: merged onto the full snapshot it follows, it
/// is byte for byte the full snapshot taken at the same point -- including the pages only the
/// virtio-blk device wrote (the guest reads a disk sector into a device-only buffer every
/// step), which KVM's dirty log never sees -- and it restores: the count continues exactly as
/// an uninterrupted run's, and the restored VM keeps tracking (its next diff follows it).
#[test]
fn a_diff_snapshot_merged_onto_its_base_is_the_full_snapshot() {
    let dir = TempDir::new("snap-diff");
    let api = dir.path("api.sock");
    let first = dir.path("first.log");
    let vm = disk_count_vm(
        &dir,
        &api,
        &first,
        &[
            "--track-dirty-pages",
            "--cgroup-parent",
            &cgroup_parent(&dir),
        ],
    );
    wait_file(&first, "count 100 ", T).expect("the guest never counted to 100");
    assert!(std::fs::read_to_string(&first)
        .unwrap()
        .contains("count: reading the disk (64 sectors)"));

    // Nothing to follow yet: refused, the VM runs on, no file is left.
    let before = names(&dir);
    let out = snapshot_cmd(&api, &dir.path("x.state"), &dir.path("x.mem"), true);
    one_error_line(&out, "no previous snapshot for a diff to follow");
    assert_eq!(names(&dir), before);
    assert_eq!(status(&api)["state"], "running");

    let (a_state, a_mem) = (dir.path("a.state"), dir.path("a.mem"));
    let a = snapshot(&api, &a_state, &a_mem);
    let paused_at = counts(&std::fs::read_to_string(&first).unwrap())
        .last()
        .unwrap()
        .0;
    api_op("resume", &api);
    let target = paused_at + 50;
    wait_file(&first, &format!("count {target} "), T).expect("the guest stopped counting");

    let (b_state, b_mem) = (dir.path("b.state"), dir.path("b.mem"));
    let b = diff_snapshot(&api, &b_state, &b_mem);
    assert_eq!(b["follows"], a["id"], "{b}");
    // The same paused point, in full.
    let (c_state, c_mem) = (dir.path("c.state"), dir.path("c.mem"));
    let c = snapshot(&api, &c_state, &c_mem);
    kill_vmm(vm);

    let full_len = std::fs::metadata(&c_mem).unwrap().len();
    assert_eq!(std::fs::metadata(&b_mem).unwrap().len(), full_len);
    let (diff_disk, full_disk) = (allocated(&b_mem), allocated(&c_mem));
    eprintln!(
        "diff snapshot: {} KiB of data ({} KiB allocated, {:.1} ms); full: {} KiB of data \
         ({} KiB allocated, {:.1} ms)",
        b["memory_data_bytes"].as_u64().unwrap() >> 10,
        diff_disk >> 10,
        b["write_ms"].as_f64().unwrap(),
        c["memory_data_bytes"].as_u64().unwrap() >> 10,
        full_disk >> 10,
        c["write_ms"].as_f64().unwrap()
    );
    assert!(
        full_disk >= 16 << 20,
        "the full snapshot holds {full_disk} bytes"
    );
    assert!(
        diff_disk * 20 < full_disk,
        "the diff ({diff_disk} bytes on disk) is not a small fraction of the full snapshot \
         ({full_disk})"
    );

    // The diff alone does not restore.
    let out = restore(&b_state, &b_mem, &["--resume"]).finish(T);
    one_error_line(&out, "is a diff snapshot");
    assert!(out.stdout.is_empty(), "{out}");

    // Onto the wrong base (the full snapshot taken after it): refused, nothing written.
    let merged = dir.path("merged.mem");
    let out = merge(&c_mem, &b_mem, &merged);
    one_error_line(&out, "follows snapshot");
    assert!(!merged.exists());

    let out = merge(&a_mem, &b_mem, &merged);
    assert!(out.status.success(), "{out}");
    let m = std::fs::read(&merged).unwrap();
    let full = std::fs::read(&c_mem).unwrap();
    const HEADER: usize = 4096;
    assert_eq!(m.len(), full.len());
    if let Some(i) = (HEADER..m.len()).find(|i| m[*i] != full[*i]) {
        panic!(
            "the merged memory differs from the full snapshot at guest address {:#x}",
            i - HEADER
        );
    }

    // The diff's state with the merged memory restores; the count goes on from the pause.
    let second = dir.path("second.log");
    let restored = restore_resumed(&b_state, &merged, &api, &second);
    let before = std::fs::read_to_string(&first).unwrap();
    let last_before = counts(&before).last().unwrap().0;
    let end = last_before + 100;
    wait_file(&second, &format!("count {end} "), T)
        .unwrap_or_else(|| panic!("the restored guest never counted to {end}"));
    // Tracking came along with the snapshot: a diff of the restored VM follows it.
    let d = diff_snapshot(&api, &dir.path("d.state"), &dir.path("d.mem"));
    assert_eq!(d["follows"], b["id"], "{d}");
    assert_eq!(api_op("shutdown", &api)["action"], "stopped");
    let out = restored.finish(T);
    assert!(out.status.success(), "{out}");
    let joined = counts_in_order(&before, &std::fs::read_to_string(&second).unwrap());

    // An uninterrupted run (no tracking) prints the same lines: the same hashes, which cover
    // the disk buffer.
    let third = dir.path("uninterrupted.log");
    let api2 = dir.path("api2.sock");
    let whole = disk_count_vm(&dir, &api2, &third, &[]);
    let last = joined.last().unwrap().0;
    wait_file(&third, &format!("count {last} "), T).expect("the uninterrupted run stalled");
    api_op("shutdown", &api2);
    assert!(whole.finish(T).status.success());
    let reference = counts(&std::fs::read_to_string(&third).unwrap());
    assert!(reference.len() >= joined.len());
    assert_eq!(&reference[..joined.len()], &joined[..]);
}

/// A VM started without --track-dirty-pages takes no diff snapshot: one line saying what is
/// missing, no file left, and the VM is not even paused; restored with the flag, its full
/// snapshot becomes the base of the restored VM's diffs.
#[test]
fn a_diff_snapshot_needs_dirty_page_tracking() {
    let dir = TempDir::new("snap-diff-untracked");
    let (api, console) = (dir.path("api.sock"), dir.path("console.log"));
    let vm = count_vm(&api, &console, &[]);
    wait_file(&console, "count 10 ", T).expect("the guest never counted");
    let before = names(&dir);
    let out = snapshot_cmd(&api, &dir.path("d.state"), &dir.path("d.mem"), true);
    one_error_line(&out, "start the VM with --track-dirty-pages");
    assert_eq!(names(&dir), before);
    assert_eq!(status(&api)["state"], "running");

    // Its full snapshot, restored with --track-dirty-pages, takes diffs that follow it.
    let (state, mem) = (dir.path("a.state"), dir.path("a.mem"));
    let a = snapshot(&api, &state, &mem);
    assert_eq!(api_op("shutdown", &api)["action"], "stopped");
    assert!(vm.finish(T).status.success());
    let console2 = dir.path("console2.log");
    let restored = restore(
        &state,
        &mem,
        &[
            "--track-dirty-pages",
            "--api-socket",
            api.to_str().unwrap(),
            "--console",
            console2.to_str().unwrap(),
        ],
    );
    wait_file_exists(&api);
    api_op("resume", &api);
    let d = diff_snapshot(&api, &dir.path("d.state"), &dir.path("d.mem"));
    assert_eq!(d["follows"], a["id"], "{d}");
    assert_eq!(api_op("shutdown", &api)["action"], "stopped");
    assert!(restored.finish(T).status.success());
}

/// Waits for a path to appear (a restored VMM's API socket).
fn wait_file_exists(path: &Path) {
    let deadline = std::time::Instant::now() + T;
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
