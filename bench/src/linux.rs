//! Linux guest boot: the project's guest kernel (guest/build-kernel.sh, from its cache) with
//! a busybox initramfs whose init writes the boot timer, prints a marker and reboots, on
//! bulkhead's VMM and on QEMU `-M microvm` with TCG (software emulation, the other way to run
//! Linux on a host without hardware virtualisation). Both get the same vmlinux and initramfs,
//! one vCPU and 64 MiB, alternating within each round.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::stats::Samples;

const MARKER: &str = "linux-guest: init ran";

const INIT: &str = "#!/bin/busybox sh\n\
/bin/busybox mount -t devtmpfs dev /dev\n\
/bin/busybox devmem 0xd0000000 8 123\n\
echo linux-guest: init ran\n\
/bin/busybox reboot -f\n";

/// One boot: (ms from spawn to the init's marker, ms to exit, CPU seconds of the VMM process
/// (user + system: an emulating KVM runs the guest in the host kernel, so this is the guest's
/// cost, independent of what else the cores run), the VMM's stderr).
fn boot_once(cmd: &mut Command) -> Result<(f64, f64, f64, String), String> {
    let errf = std::env::temp_dir().join(format!("bench-linux-{}", std::process::id()));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(&errf).map_err(|e| e.to_string())?);
    let t0 = Instant::now();
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    let mut init_ms = f64::NAN;
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        if init_ms.is_nan() && line.contains(MARKER) {
            init_ms = t0.elapsed().as_secs_f64() * 1000.0;
        }
    }
    let (status, ru) = crate::proc::wait4(child.id() as i32).map_err(|e| e.to_string())?;
    let exit_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu_s = secs(ru.ru_utime) + secs(ru.ru_stime);
    let err = fs::read_to_string(&errf).unwrap_or_default();
    let _ = fs::remove_file(&errf);
    if init_ms.is_nan() {
        return Err(format!("init never ran (status {status}): {}", err.trim()));
    }
    Ok((init_ms, exit_ms, cpu_s, err))
}

/// "boot-timer X ms" from bulkhead's report line.
fn boot_timer_ms(stderr: &str) -> Option<f64> {
    stderr
        .split(", boot-timer ")
        .nth(1)?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

fn script_output(repo: &Path, args: &[&Path]) -> Result<String, String> {
    let out = Command::new("bash")
        .args(args)
        .current_dir(repo)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[derive(Default)]
struct Row {
    init: Samples,
    exit: Samples,
    boot_timer: Samples,
    cpu_s: Samples,
    errors: Vec<String>,
}

pub fn table(
    rounds: usize,
    repo: &Path,
    bulkhead: &Path,
    work: &Path,
    report: &mut String,
    charts: &mut Vec<(String, Vec<(String, Samples)>)>,
) {
    let _ = writeln!(
        report,
        "\n### Linux guest: process start to init and to exit (1 vCPU, 64 MiB)\n"
    );
    let build = repo.join("guest/build-kernel.sh");
    let vmlinux = match script_output(repo, &[build.as_path(), Path::new("--print-path")]) {
        Ok(dir) => PathBuf::from(dir).join("vmlinux"),
        Err(e) => {
            let _ = writeln!(report, "skipped: guest/build-kernel.sh --print-path: {e}");
            return;
        }
    };
    if !vmlinux.exists() {
        let _ = writeln!(
            report,
            "skipped: no guest kernel at {} (run guest/build-kernel.sh)",
            vmlinux.display()
        );
        return;
    }
    let init = work.join("linux-init");
    let initrd = work.join("linux-initramfs.cpio");
    fs::write(&init, INIT).unwrap();
    let pack = repo.join("guest/build-initramfs.sh");
    if let Err(e) = script_output(repo, &[pack.as_path(), &initrd, &init]) {
        let _ = writeln!(report, "skipped: guest/build-initramfs.sh: {e}");
        return;
    }
    let qemu = crate::proc::which("qemu-system-x86_64");
    let mut rows: Vec<(&str, Row)> = vec![("bulkhead vm run", Row::default())];
    if qemu.is_some() {
        rows.push(("qemu -M microvm, TCG", Row::default()));
    }
    for round in 0..rounds {
        for (name, row) in rows.iter_mut() {
            let mut c = if name.starts_with("bulkhead") {
                let mut c = Command::new(bulkhead);
                c.args(["vm", "run", "--memory", "64", "--kernel"])
                    .arg(&vmlinux)
                    .arg("--initrd")
                    .arg(&initrd);
                c
            } else {
                let mut c = Command::new(qemu.as_ref().unwrap());
                c.args([
                    "-M",
                    "microvm,acpi=off",
                    "-accel",
                    "tcg",
                    "-cpu",
                    "max",
                    "-m",
                    "64",
                    "-nodefaults",
                    "-no-user-config",
                    "-nographic",
                    "-serial",
                    "stdio",
                    "-no-reboot",
                    "-append",
                    "console=ttyS0 reboot=t panic=-1",
                    "-kernel",
                ])
                .arg(&vmlinux)
                .arg("-initrd")
                .arg(&initrd);
                c
            };
            match boot_once(&mut c) {
                Ok((init_ms, exit_ms, cpu_s, err)) => {
                    row.init.push(init_ms);
                    row.exit.push(exit_ms);
                    row.cpu_s.push(cpu_s);
                    if let Some(t) = boot_timer_ms(&err) {
                        row.boot_timer.push(t);
                    }
                }
                Err(e) => row.errors.push(e),
            }
        }
        eprint!("\rlinux: round {}/{rounds}   ", round + 1);
    }
    eprintln!();
    let _ = writeln!(
        report,
        "{rounds} rounds, alternating; kernel {}; the init writes the boot timer, prints a \
         marker and reboots. \"init\" is the marker on the serial console, \"boot timer\" \
         bulkhead's own report, \"CPU s\" the VMM process's user + system time. Load \
         average after the runs: {}.\n",
        vmlinux.display(),
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let _ = writeln!(
        report,
        "| VMM | boot timer, median ms | init, median ms | exit, median ms | CPU s, median | \
         errors |\n|---|---:|---:|---:|---:|---:|"
    );
    let mut chart = Vec::new();
    for (name, row) in &rows {
        let bt = if row.boot_timer.ms.is_empty() {
            "-".to_string()
        } else {
            format!("{:.0}", row.boot_timer.median())
        };
        let _ = writeln!(
            report,
            "| {name} | {bt} | {:.0} | {:.0} | {:.1} | {} |",
            row.init.median(),
            row.exit.median(),
            row.cpu_s.median(),
            row.errors.len()
        );
        if let Some(e) = row.errors.first() {
            let _ = writeln!(
                report,
                "\nfirst error of {name}: `{}`\n",
                e.lines().next().unwrap_or("")
            );
        }
        chart.push((name.to_string(), row.exit.clone()));
    }
    charts.push(("Linux guest: process start to exit".into(), chart));
}
