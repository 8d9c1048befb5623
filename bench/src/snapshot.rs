//! Snapshot and restore of the VMM (`--only snapshot`): restore-to-running and first guest
//! output against a cold boot of the same guest (the test guest's counting mode), jailed and
//! not, alternating in each round; the floor this KVM sets for any VM (creating a VM with a
//! 128 MiB memory slot, its irqchip and a vCPU, as the VMM does by default, with no VMM around
//! it); and how snapshot size and time and restore time grow with guest memory (128 MiB to
//! 2 GiB, every page touched by the guest).

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::Kvm;

use crate::proc;
use crate::stats::Samples;

const COUNT: &str = "console=ttyS0 bulkhead_test.mode=count";

/// Process start to the first serial byte, and the VMM's own "first vCPU entry" (process
/// start to the first KVM_RUN), both in ms.
struct Timed {
    first_byte: f64,
    entry: f64,
}

/// Runs a VMM command on the counting guest until its first serial byte, then stops the
/// guest ('s' on the serial console) and waits for the end.
fn first_output(cmd: &mut Command, err: &Path) -> Result<Timed, String> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(err).map_err(|e| e.to_string())?);
    let t0 = Instant::now();
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    let mut out = child.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    let first_byte = match out.read(&mut byte) {
        Ok(1) => t0.elapsed().as_secs_f64() * 1000.0,
        _ => f64::NAN,
    };
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(b"s");
    drop(stdin);
    let mut rest = Vec::new();
    let _ = out.read_to_end(&mut rest);
    let (status, _) = proc::wait4(child.id() as i32).map_err(|e| e.to_string())?;
    let text = fs::read_to_string(err).unwrap_or_default();
    let entry = text
        .split("first vCPU entry ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok());
    match entry {
        Some(entry) if status == 0 && first_byte.is_finite() => Ok(Timed { first_byte, entry }),
        _ => Err(format!(
            "status {status}: {}",
            text.lines().last().unwrap_or("")
        )),
    }
}

/// The floor: KVM_CREATE_VM, its TSS, a 128 MiB memory slot, the irqchip and a vCPU, in the
/// VMM's order (the slot before the irqchip: see `vmm::kvm::vm::create_irqchip`; the VMM adds
/// a PIT only with `--pit`).
fn kvm_floor_ms() -> Result<f64, String> {
    let kvm = Kvm::new().map_err(|e| e.to_string())?;
    let size = 128usize << 20;
    // SAFETY: an anonymous private mapping, unmapped below; KVM only records its address.
    let host = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if host == libc::MAP_FAILED {
        return Err("mmap".into());
    }
    let t0 = Instant::now();
    let res = (|| {
        let vm = kvm.create_vm()?;
        vm.set_tss_address(0xfffb_d000)?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: size as u64,
            userspace_addr: host as u64,
        };
        // SAFETY: the mapping outlives the VM (dropped at the end of this closure).
        unsafe { vm.set_user_memory_region(region)? };
        vm.create_irq_chip()?;
        let vcpu = vm.create_vcpu(0)?;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        drop(vcpu);
        drop(vm);
        Ok::<f64, kvm_ioctls::Error>(ms)
    })();
    // SAFETY: unmapping our own mapping; the VM that used it is closed.
    unsafe { libc::munmap(host, size) };
    res.map_err(|e| e.to_string())
}

/// A snapshot of the counting guest with `mib` of memory, all of it touched.
struct Taken {
    state: PathBuf,
    mem: PathBuf,
    wall_ms: f64,
    report: serde_json::Value,
}

fn wait_console(path: &Path, needle: &str, child: &mut std::process::Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !fs::read_to_string(path)
        .unwrap_or_default()
        .contains(needle)
    {
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            return Err(format!("the guest never printed {needle:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn take(bulkhead: &Path, guest: &Path, dir: &Path, mib: u64) -> Result<Taken, String> {
    let (mut vm, api, console) = start_counter(bulkhead, guest, dir, mib, mib, false)?;
    let res = (|| {
        wait_console(&console, "count 20 ", &mut vm)?;
        let (state, mem) = (dir.join("vm.state"), dir.join("vm.mem"));
        let (s, m) = (state.to_string_lossy(), mem.to_string_lossy());
        let (wall_ms, report) =
            api_request(bulkhead, &api, &["snapshot", "--snapshot", &s, "--mem", &m])?;
        Ok(Taken {
            state,
            mem,
            wall_ms,
            report,
        })
    })();
    // Paused after the snapshot: a shutdown request stops it.
    stop(bulkhead, &api, vm);
    res
}

fn restore_cmd(bulkhead: &Path, t: &Taken, jailed: bool) -> Command {
    let mut c = Command::new(bulkhead);
    c.args(["vm", "restore", "--resume", "--snapshot"])
        .arg(&t.state)
        .arg("--mem")
        .arg(&t.mem);
    if !jailed {
        c.arg("--no-jail");
    }
    c
}

pub fn tables(
    rounds: usize,
    bulkhead: &Path,
    guest: &Path,
    work: &Path,
    report: &mut String,
    charts: &mut Vec<(String, Vec<(String, Samples)>)>,
) {
    let dir = work.join("snapshot");
    let err = work.join("snapshot-vmm.err");
    let _ = writeln!(
        report,
        "\n### Snapshot and restore: the counting test guest (128 MiB, 1 vCPU)\n"
    );
    let base = match take(bulkhead, guest, &dir.join("128"), 128) {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(report, "skipped: the snapshot failed: {e}");
            return;
        }
    };
    const ROWS: [&str; 4] = [
        "cold boot (vm run), jailed",
        "restore (vm restore --resume), jailed",
        "cold boot (vm run --no-jail)",
        "restore (vm restore --resume --no-jail)",
    ];
    let mut first: Vec<Samples> = vec![Samples::default(); 4];
    let mut entry: Vec<Samples> = vec![Samples::default(); 4];
    let mut floor = Samples::default();
    let mut errors: Vec<String> = Vec::new();
    for round in 0..rounds + 1 {
        let mut order: Vec<usize> = (0..4).collect();
        order.rotate_left(round % 4);
        for i in order {
            let mut cmd = if i % 2 == 0 {
                let mut c = Command::new(bulkhead);
                c.args(["vm", "run", "--memory", "128", "--cmdline", COUNT])
                    .arg("--kernel")
                    .arg(guest);
                if i == 2 {
                    c.arg("--no-jail");
                }
                c
            } else {
                restore_cmd(bulkhead, &base, i == 1)
            };
            match first_output(&mut cmd, &err) {
                Ok(t) if round > 0 => {
                    first[i].push(t.first_byte);
                    entry[i].push(t.entry);
                }
                Ok(_) => {}
                Err(e) => errors.push(format!("{}: {e}", ROWS[i])),
            }
        }
        if round > 0 {
            match kvm_floor_ms() {
                Ok(ms) => floor.push(ms),
                Err(e) => errors.push(format!("KVM floor: {e}")),
            }
        }
        eprint!("\rsnapshot: round {}/{}   ", round + 1, rounds + 1);
    }
    eprintln!();
    let _ = writeln!(report, "{rounds} rounds after one warm-up, the four in a rotating order. The restored snapshot was taken at count 20; \"first output\" is the guest's first serial byte (its boot banner after a boot, the next count after a restore), \"running vCPU\" the VMM's own report of its first KVM_RUN; both from process start (exec of `bulkhead`). The memory file is in the page cache (it was just written).\n");
    let _ = writeln!(report, "| | running vCPU, median ms | p90 | first output, median ms | p90 |\n|---|---:|---:|---:|---:|");
    for (i, name) in ROWS.iter().enumerate() {
        let _ = writeln!(
            report,
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} |",
            entry[i].median(),
            entry[i].pct(90.0),
            first[i].median(),
            first[i].pct(90.0)
        );
    }
    let _ = writeln!(
        report,
        "\nThe KVM floor of any VM on this host (KVM_CREATE_VM + TSS + a 128 MiB memory slot + IRQCHIP + one vCPU, in-process, no VMM): median {:.2} ms, p90 {:.2} ms.",
        floor.median(),
        floor.pct(90.0)
    );
    let _ = writeln!(
        report,
        "Restore minus cold boot, running vCPU: jailed {:+.2} ms, unjailed {:+.2} ms (medians).",
        entry[1].median() - entry[0].median(),
        entry[3].median() - entry[2].median()
    );
    charts.push((
        "Snapshot: process start to the first vCPU entry, boot vs restore".into(),
        ROWS.iter()
            .zip(&entry)
            .map(|(n, s)| (n.to_string(), s.clone()))
            .collect(),
    ));

    let _ = writeln!(
        report,
        "\n#### By guest memory (every page touched by the guest before the snapshot)\n"
    );
    let _ = writeln!(report, "| memory | snapshot wall ms | VMM write ms | state file KiB | memory file MiB (allocated) | restore: running vCPU, median ms | restore: first output, median ms |\n|---|---:|---:|---:|---:|---:|---:|");
    for mib in [128u64, 512, 1024, 2048] {
        let _ = fs::remove_dir_all(dir.join("128"));
        let sub = dir.join(mib.to_string());
        let t = match take(bulkhead, guest, &sub, mib) {
            Ok(t) => t,
            Err(e) => {
                let _ = writeln!(report, "| {mib} MiB | failed: {e} | | | | | |");
                continue;
            }
        };
        let (mut e, mut f) = (Samples::default(), Samples::default());
        for _ in 0..rounds.clamp(3, 5) {
            match first_output(&mut restore_cmd(bulkhead, &t, true), &err) {
                Ok(x) => {
                    e.push(x.entry);
                    f.push(x.first_byte);
                }
                Err(x) => errors.push(format!("restore {mib} MiB: {x}")),
            }
        }
        let allocated = fs::metadata(&t.mem).map(|m| m.blocks() * 512).unwrap_or(0);
        let _ = writeln!(
            report,
            "| {mib} MiB | {:.0} | {:.0} | {:.1} | {:.0} ({:.0}) | {:.2} | {:.2} |",
            t.wall_ms,
            t.report["write_ms"].as_f64().unwrap_or(f64::NAN),
            t.report["state_bytes"].as_f64().unwrap_or(f64::NAN) / 1024.0,
            proc::file_size(&t.mem) as f64 / (1 << 20) as f64,
            allocated as f64 / (1 << 20) as f64,
            e.median(),
            f.median()
        );
        let _ = fs::remove_dir_all(&sub);
        eprintln!("snapshot: {mib} MiB done");
    }
    if !errors.is_empty() {
        let _ = writeln!(report, "\nErrors ({}):", errors.len());
        for e in errors.iter().take(5) {
            let _ = writeln!(report, "- `{e}`");
        }
    }
    let _ = fs::remove_dir_all(&dir);
    let _ = fs::remove_file(&err);
}

/// A counting guest with an API socket, `touch_mib` of its memory written before it counts.
fn start_counter(
    bulkhead: &Path,
    guest: &Path,
    dir: &Path,
    mib: u64,
    touch_mib: u64,
    track: bool,
) -> Result<(std::process::Child, PathBuf, PathBuf), String> {
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let api = dir.join("api.sock");
    let console = dir.join("console.log");
    let _ = fs::remove_file(&console);
    let cmdline = format!("{COUNT} bulkhead_test.touch_mib={touch_mib}");
    let mut c = Command::new(bulkhead);
    c.args([
        "vm",
        "run",
        "--memory",
        &mib.to_string(),
        "--cmdline",
        &cmdline,
    ])
    .arg("--kernel")
    .arg(guest)
    .arg("--api-socket")
    .arg(&api)
    .arg("--console")
    .arg(&console)
    .stdin(Stdio::null())
    .stderr(Stdio::null());
    if track {
        c.arg("--track-dirty-pages");
    }
    let child = c.spawn().map_err(|e| e.to_string())?;
    Ok((child, api, console))
}

fn api_request(
    bulkhead: &Path,
    api: &Path,
    args: &[&str],
) -> Result<(f64, serde_json::Value), String> {
    let t0 = Instant::now();
    let out = Command::new(bulkhead)
        .args(["vm"])
        .args(args)
        .arg("--api-socket")
        .arg(api)
        .output()
        .map_err(|e| e.to_string())?;
    let wall_ms = t0.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let v = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok((wall_ms, v))
}

fn stop(bulkhead: &Path, api: &Path, mut child: std::process::Child) {
    let _ = api_request(bulkhead, api, &["shutdown"]);
    let _ = child.wait();
}

fn last_count(console: &Path) -> u64 {
    let text = fs::read_to_string(console).unwrap_or_default();
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("count ")?.split(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// One snapshot: wall ms, VMM write ms, bytes of RAM written, bytes allocated on disk.
#[derive(Default)]
struct SnapCost {
    wall: Samples,
    write: Samples,
    data: Samples,
    allocated: Samples,
}

fn snap(
    bulkhead: &Path,
    api: &Path,
    dir: &Path,
    diff: bool,
    into: &mut SnapCost,
) -> Result<(), String> {
    let (state, mem) = (dir.join("s.state"), dir.join("s.mem"));
    let (s, m) = (state.to_string_lossy(), mem.to_string_lossy());
    let mut args = vec!["snapshot", "--snapshot", &s, "--mem", &m];
    if diff {
        args.push("--diff");
    }
    let (wall, r) = api_request(bulkhead, api, &args)?;
    into.wall.push(wall);
    into.write.push(r["write_ms"].as_f64().unwrap_or(f64::NAN));
    into.data
        .push(r["memory_data_bytes"].as_f64().unwrap_or(f64::NAN));
    let allocated = fs::metadata(&mem).map(|m| m.blocks() * 512).unwrap_or(0);
    into.allocated.push(allocated as f64);
    let _ = fs::remove_file(&state);
    let _ = fs::remove_file(&mem);
    Ok(())
}

/// A guest that rewrites its touched memory on 'r' (stdin = its serial port): the ticks of
/// a rewrite before a snapshot (a diff if `track`, else a full one) and of two after it.
fn rewrite_ticks(
    bulkhead: &Path,
    guest: &Path,
    dir: &Path,
    track: bool,
) -> Result<[f64; 3], String> {
    use std::io::BufRead;
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let api = dir.join("rw.sock");
    let mut c = Command::new(bulkhead);
    c.args(["vm", "run", "--memory", "512", "--cmdline"])
        .arg(format!("{COUNT} bulkhead_test.touch_mib=256"))
        .arg("--kernel")
        .arg(guest)
        .arg("--api-socket")
        .arg(&api)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if track {
        c.arg("--track-dirty-pages");
    }
    let mut child = c.spawn().map_err(|e| e.to_string())?;
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |prefix: &str| -> Result<String, String> {
        loop {
            match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(l) if l.starts_with(prefix) => return Ok(l),
                Ok(_) => {}
                Err(_) => return Err(format!("the guest never printed {prefix:?}")),
            }
        }
    };
    let rewrite = |stdin: &mut std::process::ChildStdin| -> Result<f64, String> {
        stdin.write_all(b"r").map_err(|e| e.to_string())?;
        let l = wait_for("rewrite: ")?;
        l.split(' ')
            .nth(1)
            .and_then(|t| t.parse().ok())
            .ok_or(format!("bad line {l:?}"))
    };
    let res = (|| -> Result<[f64; 3], String> {
        wait_for("count 5 ")?;
        let before = rewrite(&mut stdin)?;
        let mut cost = SnapCost::default();
        snap(bulkhead, &api, dir, false, &mut cost)?;
        if track {
            api_request(bulkhead, &api, &["resume"])?;
            snap(bulkhead, &api, dir, true, &mut cost)?;
        }
        api_request(bulkhead, &api, &["resume"])?;
        let first = rewrite(&mut stdin)?;
        let second = rewrite(&mut stdin)?;
        Ok([before, first, second])
    })();
    let _ = stdin.write_all(b"s");
    drop(stdin);
    let _ = child.wait();
    res
}

/// Diff snapshots (`--only snapshot` or `--only diffsnapshot`): a diff against a full
/// snapshot taken at the same paused point, after the guest counted on for a while, for a
/// small and a large guest with all memory touched; and what dirty page tracking costs the
/// guest when it writes memory after a snapshot, tracked and not, alternating.
pub fn diff_table(rounds: usize, bulkhead: &Path, guest: &Path, work: &Path, report: &mut String) {
    let dir = work.join("diffsnap");
    let _ = writeln!(
        report,
        "\n#### Diff snapshots (`vm run --track-dirty-pages`, `vm snapshot --diff`)\n"
    );
    let n = rounds.clamp(3, 10);
    let _ = writeln!(report, "The counting guest with every page touched; a full snapshot, then {n} times: resume, 100 more counts, a diff snapshot and, at the same paused point, a full one (medians).\n");
    let _ = writeln!(report, "| guest memory | diff: wall ms | VMM write ms | RAM written | allocated | full: wall ms | VMM write ms | RAM written | allocated |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut errors = Vec::new();
    for mib in [128u64, 1024] {
        let (child, api, console) = match start_counter(bulkhead, guest, &dir, mib, mib, true) {
            Ok(x) => x,
            Err(e) => {
                errors.push(format!("{mib} MiB: {e}"));
                continue;
            }
        };
        let (mut d, mut f) = (SnapCost::default(), SnapCost::default());
        let res = (|| -> Result<(), String> {
            let deadline = Instant::now() + Duration::from_secs(300);
            while last_count(&console) < 20 {
                if Instant::now() > deadline {
                    return Err("the guest never counted to 20".into());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            snap(bulkhead, &api, &dir, false, &mut SnapCost::default())?;
            for _ in 0..n {
                let from = last_count(&console);
                api_request(bulkhead, &api, &["resume"])?;
                while last_count(&console) < from + 100 {
                    std::thread::sleep(Duration::from_millis(2));
                }
                snap(bulkhead, &api, &dir, true, &mut d)?;
                snap(bulkhead, &api, &dir, false, &mut f)?;
            }
            Ok(())
        })();
        stop(bulkhead, &api, child);
        if let Err(e) = res {
            errors.push(format!("{mib} MiB: {e}"));
            continue;
        }
        let kib = |s: &Samples| format!("{:.0} KiB", s.median() / 1024.0);
        let _ = writeln!(
            report,
            "| {mib} MiB | {:.1} | {:.2} | {} | {} | {:.0} | {:.0} | {} | {} |",
            d.wall.median(),
            d.write.median(),
            kib(&d.data),
            kib(&d.allocated),
            f.wall.median(),
            f.write.median(),
            kib(&f.data),
            kib(&f.allocated)
        );
        eprintln!("diff snapshot: {mib} MiB done");
    }

    // The cost of tracking: the guest rewrites 240 MiB (a word per page) when asked, timed
    // in TSC ticks by itself; once before a snapshot, right after it (with tracking, every
    // page is write-protected again and faults on its first write) and once more.
    let mut ticks: Vec<[Samples; 3]> = vec![Default::default(), Default::default()];
    for round in 0..n + 1 {
        for track in [round % 2 == 0, round % 2 != 0] {
            match rewrite_ticks(bulkhead, guest, &dir, track) {
                Ok(t) if round > 0 => {
                    for (s, v) in ticks[usize::from(track)].iter_mut().zip(t) {
                        s.push(v);
                    }
                }
                Ok(_) => {}
                Err(e) => errors.push(format!("tracking cost: {e}")),
            }
        }
    }
    let _ = writeln!(report, "\nWhat tracking costs the guest: it rewrites 240 MiB (one word per page, 61440 pages) and times it in TSC ticks; before a snapshot, right after it (resumed) and once more; {n} VMs each, alternating (medians, millions of ticks).\n");
    let _ = writeln!(
        report,
        "| | before the snapshot | first after it | second after it |\n|---|---:|---:|---:|"
    );
    for (track, name) in [
        (0usize, "untracked (full snapshot)"),
        (1, "tracked (diff snapshot)"),
    ] {
        let t = &ticks[track];
        let _ = writeln!(
            report,
            "| {name} | {:.1} | {:.1} | {:.1} |",
            t[0].median() / 1e6,
            t[1].median() / 1e6,
            t[2].median() / 1e6
        );
    }
    if !errors.is_empty() {
        let _ = writeln!(report, "\nErrors ({}):", errors.len());
        for e in errors.iter().take(5) {
            let _ = writeln!(report, "- `{e}`");
        }
    }
    let _ = fs::remove_dir_all(&dir);
}
