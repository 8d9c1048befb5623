//! `bulkhead sandbox -- true` against bubblewrap (`bwrap`) with equivalent
//! flags, both run by an unprivileged user, alternating: what a one-line
//! sandbox costs a normal user, next to the tool that user would otherwise
//! reach for.
//!
//! Equivalent means the same isolation, as far as bwrap's options go: a user
//! namespace and new pid, ipc, uts, network and cgroup namespaces; the host's
//! root read-only; fresh /proc, /dev (with /dev/mqueue), /tmp and /run; the
//! paths bulkhead masks (files behind /dev/null, directories behind an empty
//! read-only tmpfs) and keeps read-only; hostname `sandbox`, a new session,
//! no capabilities; and bulkhead's own default seccomp program, compiled here
//! and handed to bwrap on fd 3 (bwrap takes a compiled filter; bulkhead
//! compiles its profile on every start). Not in bwrap's repertoire: a fresh
//! sysfs (bwrap shows the host's, read-only, through the root), the reaper
//! and the state bulkhead keeps so that `list`, `state` and `inspect` see a
//! running sandbox.
//!
//! The user is an otherwise unused uid with no passwd entry (neither tool
//! needs one), its XDG_RUNTIME_DIR in the benchmark's work directory, and
//! bulkhead a copy there it can execute.

use std::fmt::Write as _;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::proc::{self, Env};
use crate::stats::Samples;

/// A uid no account uses (from 61000 up, the first absent from /etc/passwd).
fn unused_uid() -> u32 {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let used: Vec<u32> = passwd
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect();
    (61000..65000)
        .find(|u| !used.contains(u))
        .expect("a free uid")
}

/// bulkhead's default seccomp program for the sandbox's capabilities, as the
/// raw `struct sock_filter` array bwrap's `--seccomp FD` reads.
fn filter_file(path: &Path) {
    let caps: Vec<String> = oci::DEFAULT_CAPS
        .iter()
        .filter(|c| **c != "CAP_NET_RAW")
        .map(|c| c.to_string())
        .collect();
    let f = seccomp::compile(&seccomp::default_profile::profile(&caps)).unwrap();
    let mut bytes = Vec::with_capacity(f.len() * 8);
    for i in f.program() {
        bytes.extend_from_slice(&i.code.to_ne_bytes());
        bytes.push(i.jt);
        bytes.push(i.jf);
        bytes.extend_from_slice(&i.k.to_ne_bytes());
    }
    fs::write(path, bytes).unwrap();
}

/// What every bwrap entry has: new namespaces, the host's root read-only, fresh /proc,
/// /dev and /tmp.
const BWRAP_BASE: [&str; 10] = [
    "--unshare-all",
    "--ro-bind",
    "/",
    "/",
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "--tmpfs",
    "/tmp",
];

/// bwrap's arguments for the isolation of `bulkhead sandbox` (see the module notes).
fn bwrap_args() -> Vec<String> {
    let mut a: Vec<String> = BWRAP_BASE.map(String::from).to_vec();
    a.extend(
        [
            "--mqueue",
            "/dev/mqueue",
            "--tmpfs",
            "/run",
            "--hostname",
            "sandbox",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--chdir",
            "/",
        ]
        .map(String::from),
    );
    for p in oci::MASKED_PATHS {
        match fs::metadata(p) {
            Ok(m) if m.is_dir() => a.extend(["--tmpfs", p, "--remount-ro", p].map(String::from)),
            Ok(_) => a.extend(["--ro-bind", "/dev/null", p].map(String::from)),
            Err(_) => {}
        }
    }
    for p in oci::READONLY_PATHS {
        if Path::new(p).exists() {
            a.extend(["--ro-bind", p, p].map(String::from));
        }
    }
    a.extend(["--seccomp", "3", "true"].map(String::from));
    a
}

/// The side-by-side table; `rounds` alternating rounds after two warm-up ones.
pub fn table(
    rounds: usize,
    bulkhead: &Path,
    work: &Path,
    report: &mut String,
    charts: &mut Vec<(String, Vec<(String, Samples)>)>,
) {
    let _ = writeln!(
        report,
        "\n### Unprivileged: `bulkhead sandbox -- true` vs bubblewrap\n"
    );
    let Some(bwrap) = proc::which("bwrap") else {
        let _ = writeln!(
            report,
            "skipped: bwrap is not installed (scripts/deps.sh installs bubblewrap)"
        );
        return;
    };
    let dir = work.join("sandbox-bench");
    // XDG_RUNTIME_DIR is a tmpfs where logind makes it (/run/user/UID): on a tmpfs here
    // too, when /dev/shm is one.
    let shm = Path::new("/dev/shm");
    let run = if is_tmpfs(shm) {
        shm.join(format!("bulkhead-bench-{}", std::process::id()))
    } else {
        dir.join("run")
    };
    fs::create_dir_all(&run).unwrap();
    fs::create_dir_all(&dir).unwrap();
    let uid = unused_uid();
    std::os::unix::fs::chown(&run, Some(uid), Some(uid)).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("bulkhead");
    fs::copy(bulkhead, &bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    let bpf = dir.join("filter.bpf");
    filter_file(&bpf);
    let user = Env {
        user: Some((uid, uid)),
        ..Env::default()
    };
    let entries: [(&str, PathBuf, Vec<String>); 3] = [
        (
            "bulkhead sandbox",
            bin.clone(),
            ["sandbox", "-T", "--", "true"].map(String::from).to_vec(),
        ),
        ("bwrap, equivalent flags", bwrap.clone(), bwrap_args()),
        (
            "bwrap, minimal (no masks, no seccomp)",
            bwrap.clone(),
            BWRAP_BASE
                .iter()
                .chain(&["true"])
                .map(|s| s.to_string())
                .collect(),
        ),
    ];
    let mut series: Vec<(Samples, Vec<String>)> = vec![Default::default(); entries.len()];
    let warmup = 2;
    for round in 0..rounds + warmup {
        for k in 0..entries.len() {
            let which = (k + round) % entries.len();
            let (_, prog, args) = &entries[which];
            let filter = fs::File::open(&bpf).unwrap();
            let env = Env {
                fd3: Some(filter.as_raw_fd()),
                ..user.clone()
            };
            let mut c = Command::new(prog);
            c.args(args)
                .current_dir("/")
                .env_clear()
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .env("XDG_RUNTIME_DIR", &run);
            let r = proc::run(&mut c, &env).unwrap();
            proc::reap_orphans();
            let s = &mut series[which];
            if r.status != 0 {
                s.1.push(r.stderr);
            } else if round >= warmup {
                s.0.push(r.wall_ms);
            }
        }
        eprint!(
            "\rsandbox vs bwrap: round {}/{}   ",
            round + 1,
            rounds + warmup
        );
    }
    eprintln!();
    let base = series[1].0.median();
    let _ = writeln!(report, "{rounds} rounds after {warmup} warm-up rounds, alternating (the starting entry rotates); each runs `true` as uid {uid}, an unprivileged user, from `/`, with XDG_RUNTIME_DIR={}. bwrap's equivalent flags: `{}`.\n", run.display(), bwrap_args().join(" "));
    let _ = writeln!(
        report,
        "| command | median ms | p90 ms | vs bwrap, equivalent flags (median) | errors |"
    );
    let _ = writeln!(report, "|---|---:|---:|---:|---:|");
    let mut chart = Vec::new();
    for ((name, _, _), (s, errors)) in entries.iter().zip(&series) {
        let _ = writeln!(
            report,
            "| {name} | {:.2} | {:.2} | {} | {} |",
            s.median(),
            s.pct(90.0),
            crate::ratio(s.median(), base),
            errors.len()
        );
        if let Some(e) = errors.first() {
            let _ = writeln!(
                report,
                "|  | first error: `{}` | | | |",
                e.lines().next().unwrap_or("").replace('|', "/")
            );
        }
        chart.push((name.to_string(), s.clone()));
    }
    charts.push(("Unprivileged sandbox: bulkhead vs bwrap".into(), chart));
    let leftovers: Vec<_> = fs::read_dir(run.join("bulkhead"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    if !leftovers.is_empty() {
        let _ = writeln!(report, "\nwarning: left in the state root: {leftovers:?}");
    }
    let _ = fs::remove_dir_all(&run);
}

fn is_tmpfs(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: statfs fills the struct we own; the path is NUL-terminated.
    unsafe {
        let mut s: libc::statfs = std::mem::zeroed();
        // (`as i64`: f_type's type differs between glibc and musl.)
        libc::statfs(c.as_ptr(), &mut s) == 0 && s.f_type as i64 == libc::TMPFS_MAGIC
    }
}
