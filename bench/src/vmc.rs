//! VM-backed containers: `bulkhead run` of one busybox bundle running /bin/true, as a plain
//! container and in a micro-VM under each backend, alternating within every round. The
//! VM rows split the time into phases from the monitor's debug log lines:
//! - disk: create's lookup of the root filesystem disk (content hash; built once, before
//!   the measured rounds — image building is out of the hot path);
//! - boot: hypervisor start to the agent's hello;
//! - run: the agent's hello to the container's exit (create and start in the guest,
//!   /bin/true, the exit report);
//! - the rest of the total: power-off, delete, the CLI's own start.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use crate::proc::{self, Env};
use crate::stats::Samples;

#[derive(Default)]
struct Row {
    total: Samples,
    disk: Samples,
    boot: Samples,
    run: Samples,
    errors: Vec<String>,
}

/// The number after `key` in `text` ("... agent ready 812 ms ..." -> 812).
fn number_after(text: &str, key: &str) -> Option<f64> {
    text.split(key)
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn kvm_kind() -> &'static str {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
    {
        "hardware KVM"
    } else {
        "software KVM (no vmx/svm: guest kernel code is emulated)"
    }
}

pub fn table(
    bulkhead: &Path,
    bundle: &Path,
    rounds: usize,
    report: &mut String,
    charts: &mut Vec<(String, Vec<(String, Samples)>)>,
) {
    // The guest image: this static bulkhead as /init (cached by content).
    let img = Command::new(bulkhead)
        .args(["vm", "image", "build", "--agent"])
        .arg(bulkhead)
        .output();
    let image = match img {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Ok(o) => {
            let _ = writeln!(
                report,
                "\n### VM-backed containers\n\nskipped: `vm image build` failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Err(e) => {
            let _ = writeln!(report, "\n### VM-backed containers\n\nskipped: {e}");
            return;
        }
    };
    let hw = kvm_kind() == "hardware KVM";
    let qemu = proc::which("qemu-system-x86_64").is_some();
    let mut entries: Vec<(String, Option<&str>, usize)> =
        vec![("container (no VM)".into(), None, rounds)];
    if qemu {
        let accel = if hw { "KVM" } else { "TCG" };
        entries.push((format!("VM, qemu microvm ({accel})"), Some("qemu"), rounds));
    }
    // On an emulating KVM a builtin boot takes ~15 s: a few rounds tell enough.
    let builtin_rounds = if hw { rounds } else { rounds.min(3) };
    entries.push(("VM, builtin VMM".into(), Some("builtin"), builtin_rounds));
    let mut rows: Vec<Row> = entries.iter().map(|_| Row::default()).collect();
    let log = bundle.join("bench-vm.log");
    let max_rounds = entries.iter().map(|e| e.2).max().unwrap_or(0);
    // One warm-up round: it builds the disk and warms the page cache.
    for round in 0..=max_rounds {
        for (k, (label, backend, n)) in entries.iter().enumerate() {
            if round > *n {
                continue;
            }
            let id = format!("bench-vmc-{k}-{round}");
            let mut c = Command::new(bulkhead);
            c.arg("--root").arg(bundle.join("root"));
            if let Some(b) = backend {
                let _ = std::fs::remove_file(&log);
                c.args(["--debug", "--log"]).arg(&log).args([
                    "--vm",
                    "--vm-backend",
                    b,
                    "--vm-image",
                    &image,
                ]);
            }
            c.args(["run", "--bundle"]).arg(bundle).arg(&id);
            let r = proc::run(&mut c, &Env::default());
            proc::reap_orphans();
            let row = &mut rows[k];
            match r {
                Ok(r) if r.status == 0 => {
                    if round == 0 {
                        continue;
                    }
                    row.total.push(r.wall_ms);
                    if backend.is_some() {
                        let text = std::fs::read_to_string(&log).unwrap_or_default();
                        let ready = number_after(&text, "agent ready ");
                        let exit = number_after(&text, "exited with 0, ");
                        let disk = number_after(&text, "disk ready in ");
                        if let (Some(a), Some(e)) = (ready, exit) {
                            row.boot.push(a);
                            row.run.push(e - a);
                        }
                        if let Some(d) = disk {
                            row.disk.push(d);
                        }
                    }
                }
                Ok(r) => {
                    row.errors
                        .push(format!("{label}: exit {}: {}", r.status, r.stderr.trim()))
                }
                Err(e) => row.errors.push(format!("{label}: {e}")),
            }
        }
        eprint!("\rvm containers: round {}/{}   ", round + 1, max_rounds + 1);
    }
    eprintln!();
    let _ = writeln!(
        report,
        "\n### VM-backed containers: `bulkhead run` of /bin/true (busybox bundle)\n"
    );
    let _ = writeln!(
        report,
        "Host: {}. After one warm-up round (it builds the cached disk), alternating. boot = hypervisor start to the agent's hello; run = hello to the container's exit (create + start in the guest); disk = create's cached-disk lookup. Medians in ms.\n",
        kvm_kind()
    );
    let _ = writeln!(
        report,
        "| how | rounds | total | total p90 | disk | boot | run | vs container | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let base = rows[0].total.median();
    let mut chart = Vec::new();
    for ((label, backend, _), row) in entries.iter().zip(&rows) {
        let m = |s: &Samples| {
            if s.ms.is_empty() || backend.is_none() {
                "-".to_string()
            } else {
                format!("{:.0}", s.median())
            }
        };
        let ratio = if base > 0.0 && !row.total.ms.is_empty() {
            format!("{:.1}x", row.total.median() / base)
        } else {
            "-".into()
        };
        let _ = writeln!(
            report,
            "| {label} | {} | {:.1} | {:.1} | {} | {} | {} | {ratio} | {} |",
            row.total.ms.len(),
            row.total.median(),
            row.total.pct(90.0),
            m(&row.disk),
            m(&row.boot),
            m(&row.run),
            row.errors.len()
        );
        chart.push((label.clone(), row.total.clone()));
    }
    for row in &rows {
        if let Some(e) = row.errors.first() {
            let _ = writeln!(report, "\nfirst error: {e}");
        }
    }
    charts.push(("VM-backed containers: run /bin/true".into(), chart));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_from_log_lines() {
        let t = "msg=\"vm x: agent ready 812 ms after the hypervisor started\"";
        assert_eq!(number_after(t, "agent ready "), Some(812.0));
        assert_eq!(number_after(t, "nothing "), None);
    }
}
