//! How long podman's default seccomp profile takes to become a BPF program: ours, and
//! libseccomp's (through a small C program that does what crun does, built here with gcc
//! against libseccomp-dev), side by side, alternating A B A B; plus what loading each program
//! costs in the kernel and what one filtered syscall costs under each.
//!
//! Run: `cargo bench -p seccomp --bench compile` (env N=<samples per round>, default 100).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use oci::{Seccomp, SeccompAction, SeccompOp};
use seccomp::bpf::SockFilter;
use seccomp::profile::{load_containers_profile, PODMAN_DEFAULT_CAPS, PODMAN_PROFILE_PATH};

const ROUNDS: usize = 5;

#[derive(Clone, Copy)]
struct Stats {
    median: f64,
    p10: f64,
    p90: f64,
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Stats {
        median: at(0.5),
        p10: at(0.1),
        p90: at(0.9),
    }
}

/// Microseconds per call of `f`, `n` samples.
fn sample(n: usize, mut f: impl FnMut()) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect()
}

fn main() {
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    if !Path::new(PODMAN_PROFILE_PATH).exists() {
        println!("SKIPPED: {PODMAN_PROFILE_PATH} is missing (install podman or containers-common)");
        return;
    }
    let caps: Vec<String> = PODMAN_DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    let profile = load_containers_profile(PODMAN_PROFILE_PATH.as_ref(), &caps).unwrap();
    let oci_json = serde_json::to_vec(&profile).unwrap();
    let ours = seccomp::compile(&profile).unwrap();

    let work = std::env::temp_dir().join(format!("seccomp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let libseccomp = match build_libseccomp_program(&work, &profile) {
        Ok(bin) => Some(bin),
        Err(e) => {
            println!("libseccomp row skipped: {e}");
            None
        }
    };

    // A: ours, B: libseccomp, alternating.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut their_prog: Vec<SockFilter> = Vec::new();
    for _ in 0..ROUNDS {
        a.extend(sample(n, || {
            std::hint::black_box(seccomp::compile(std::hint::black_box(&profile)).unwrap());
        }));
        if let Some(bin) = &libseccomp {
            let (times, prog) = run_libseccomp(bin, n, &work.join("libseccomp.bpf"));
            b.extend(times);
            their_prog = prog;
        }
    }
    let convert = sample(n, || {
        std::hint::black_box(load_containers_profile(PODMAN_PROFILE_PATH.as_ref(), &caps).unwrap());
    });
    let parse = sample(n * ROUNDS, || {
        std::hint::black_box(serde_json::from_slice::<Seccomp>(&oci_json).unwrap());
    });
    // What a content-addressed cache hit costs at the least: canonical bytes of the profile
    // for the key (the hash itself not even counted), and reading + checking the program.
    let cached = work.join("cached.bpf");
    let bytes: Vec<u8> = ours
        .program()
        .iter()
        .flat_map(|i| {
            let mut b = i.code.to_le_bytes().to_vec();
            b.extend([i.jt, i.jf]);
            b.extend(i.k.to_le_bytes());
            b
        })
        .collect();
    std::fs::write(&cached, &bytes).unwrap();
    let cache_floor = sample(n * ROUNDS, || {
        let key = serde_json::to_vec(std::hint::black_box(&profile)).unwrap();
        let raw = std::fs::read(&cached).unwrap();
        let prog: Vec<SockFilter> = raw
            .chunks_exact(8)
            .map(|c| SockFilter {
                code: u16::from_le_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        seccomp::bpf::validate(&prog).unwrap();
        std::hint::black_box((key, prog));
    });

    let ours_kernel = kernel_costs(ours.program(), n);
    let theirs_kernel = (!their_prog.is_empty()).then(|| kernel_costs(&their_prog, n));

    println!();
    println!(
        "podman's default profile ({PODMAN_PROFILE_PATH}), podman's default capabilities; \
         {ROUNDS} rounds x {n} samples, A/B alternating; microseconds"
    );
    println!(
        "{:<58} {:>9} {:>9} {:>9}  {:>8}",
        "", "median", "p10", "p90", "BPF insns"
    );
    let row = |name: &str, s: Stats, insns: Option<usize>| {
        println!(
            "{:<58} {:>9.1} {:>9.1} {:>9.1}  {:>8}",
            name,
            s.median,
            s.p10,
            s.p90,
            insns.map(|i| i.to_string()).unwrap_or_default()
        )
    };
    let ours_c = stats(a);
    row(
        "bulkhead compile (OCI profile -> BPF)",
        ours_c,
        Some(ours.len()),
    );
    if libseccomp.is_some() {
        let theirs_c = stats(b);
        row(
            "libseccomp: init + rules + export (crun's loop, in C)",
            theirs_c,
            Some(their_prog.len()),
        );
        println!(
            "{:<58} {:>9.0}x",
            "  libseccomp / bulkhead (medians)",
            theirs_c.median / ours_c.median
        );
    }
    row(
        "parse linux.seccomp JSON (part of config.json parsing)",
        stats(parse),
        None,
    );
    row(
        "convert containers profile (read + parse + filter)",
        stats(convert),
        None,
    );
    row(
        "cache hit, lower bound (key bytes + read + validate)",
        stats(cache_floor),
        None,
    );
    row(
        "install bulkhead's program (seccomp(2), fresh child)",
        ours_kernel.0,
        None,
    );
    if let Some(t) = theirs_kernel {
        row("install libseccomp's program", t.0, None);
    }
    println!(
        "{:<58} {:>9.3}",
        "filtered syscall under bulkhead's program (us/call)", ours_kernel.1
    );
    if let Some(t) = theirs_kernel {
        println!(
            "{:<58} {:>9.3}",
            "filtered syscall under libseccomp's program (us/call)", t.1
        );
    }
    println!("  (the filtered syscall: personality(0xffffffff), which has argument rules, so");
    println!("   the kernel runs the filter on every call; unconditionally allowed syscalls skip");
    println!("   it through the kernel's per-syscall action cache)");
    let _ = std::fs::remove_dir_all(&work);
}

/// Fork children that install `prog` and time it, then time 20000 personality(0xffffffff)
/// calls under it. Returns (install stats, us per call).
fn kernel_costs(prog: &[SockFilter], n: usize) -> (Stats, f64) {
    let mut installs = Vec::new();
    let mut per_call = Vec::new();
    for _ in 0..n.min(50) {
        let mut fds = [0i32; 2];
        // SAFETY: fds is an array of two ints for pipe2 to fill.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: the child only makes raw syscalls and _exits (no allocation, no locks), so
        // forking this (possibly multi-threaded) process is sound.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: raw syscalls on values prepared before fork; the child ends in _exit.
            unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                let mut t0: libc::timespec = std::mem::zeroed();
                let mut t1: libc::timespec = std::mem::zeroed();
                let mut t2: libc::timespec = std::mem::zeroed();
                libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t0);
                let r = libc::syscall(libc::SYS_seccomp, 1, 0, &fprog as *const libc::sock_fprog);
                libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t1);
                for _ in 0..20000 {
                    libc::syscall(libc::SYS_personality, 0xffff_ffffu64);
                }
                libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t2);
                let ns = |a: &libc::timespec, b: &libc::timespec| {
                    (b.tv_sec - a.tv_sec) * 1_000_000_000 + (b.tv_nsec - a.tv_nsec)
                };
                let out = [r, ns(&t0, &t1), ns(&t1, &t2)];
                libc::write(fds[1], out.as_ptr() as *const libc::c_void, 24);
                libc::_exit(0);
            }
        }
        // SAFETY: closing our copy of the write end.
        unsafe { libc::close(fds[1]) };
        let mut out = [0i64; 3];
        // SAFETY: reading 24 bytes into a 24-byte array, then reaping our child.
        unsafe {
            libc::read(fds[0], out.as_mut_ptr() as *mut libc::c_void, 24);
            libc::close(fds[0]);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        assert_eq!(out[0], 0, "seccomp(2) failed in the child");
        installs.push(out[1] as f64 / 1e3);
        per_call.push(out[2] as f64 / 1e3 / 20000.0);
    }
    (stats(installs), stats(per_call).median)
}

fn act(a: SeccompAction, errno: Option<u32>) -> u32 {
    match a {
        SeccompAction::Kill | SeccompAction::KillThread => seccomp::RET_KILL_THREAD,
        SeccompAction::KillProcess => seccomp::RET_KILL_PROCESS,
        SeccompAction::Trap => seccomp::RET_TRAP,
        SeccompAction::Errno => seccomp::RET_ERRNO | errno.unwrap_or(1),
        SeccompAction::Trace => seccomp::RET_TRACE | errno.unwrap_or(1),
        SeccompAction::Allow => seccomp::RET_ALLOW,
        SeccompAction::Log => seccomp::RET_LOG,
        SeccompAction::Notify => seccomp::RET_USER_NOTIF,
    }
}

fn scmp_op(op: SeccompOp) -> &'static str {
    match op {
        SeccompOp::NotEqual => "SCMP_CMP_NE",
        SeccompOp::LessThan => "SCMP_CMP_LT",
        SeccompOp::LessEqual => "SCMP_CMP_LE",
        SeccompOp::Equal => "SCMP_CMP_EQ",
        SeccompOp::GreaterEqual => "SCMP_CMP_GE",
        SeccompOp::GreaterThan => "SCMP_CMP_GT",
        SeccompOp::MaskedEqual => "SCMP_CMP_MASKED_EQ",
    }
}

/// A C program with the profile's rules compiled in, doing what crun's
/// libcrun_generate_seccomp does (minus JSON parsing): seccomp_init(default), add the
/// arches, for every name resolve it and add the rule (skipping default-action rules and
/// unknown names, one rule per condition when an argument repeats), export the BPF.
fn build_libseccomp_program(dir: &Path, p: &Seccomp) -> Result<PathBuf, String> {
    let mut rules = String::new();
    for s in &p.syscalls {
        let mut idx: Vec<u32> = s.args.iter().map(|a| a.index).collect();
        idx.sort();
        let multi = idx.windows(2).any(|w| w[0] == w[1]);
        let args: Vec<String> = s
            .args
            .iter()
            .map(|a| {
                format!(
                    "{{{}, {}, {}ULL, {}ULL}}",
                    a.index,
                    scmp_op(a.op),
                    a.value,
                    a.value_two
                )
            })
            .collect();
        for name in &s.names {
            rules += &format!(
                "  {{\"{name}\", {}u, {}, {}, {{{}}}}},\n",
                act(s.action, s.errno_ret),
                s.args.len(),
                multi as u8,
                args.join(", ")
            );
        }
    }
    let arches: String = p
        .architectures
        .iter()
        .filter_map(|a| match a {
            oci::Arch::X86 => Some("SCMP_ARCH_X86"),
            oci::Arch::X32 => Some("SCMP_ARCH_X32"),
            oci::Arch::X86_64 => Some("SCMP_ARCH_X86_64"),
            _ => None,
        })
        .map(|a| format!("    seccomp_arch_add(ctx, {a});\n"))
        .collect();
    let src = format!(
        r#"#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/mman.h>
struct rule {{ const char *name; unsigned action; unsigned nargs; int multi; struct scmp_arg_cmp args[6]; }};
static const struct rule rules[] = {{
{rules}}};
int main(int argc, char **argv) {{
  int n = atoi(argv[1]);
  for (int it = 0; it < n; it++) {{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned def = {default}u;
    scmp_filter_ctx ctx = seccomp_init(def);
{arches}    for (unsigned i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {{
      const struct rule *r = &rules[i];
      if (r->action == def) continue;
      int nr = seccomp_syscall_resolve_name(r->name);
      if (nr == __NR_SCMP_ERROR) continue;
      int rc = 0;
      if (!r->multi) rc = seccomp_rule_add_array(ctx, r->action, nr, r->nargs, r->args);
      else for (unsigned k = 0; k < r->nargs && rc == 0; k++) rc = seccomp_rule_add_array(ctx, r->action, nr, 1, &r->args[k]);
      if (rc < 0) {{ fprintf(stderr, "rule %s: %d\n", r->name, rc); return 1; }}
    }}
    int fd = memfd_create("bpf", 0);
    if (seccomp_export_bpf(ctx, fd) < 0) return 2;
    seccomp_release(ctx);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%.3f\n", (t1.tv_sec - t0.tv_sec) * 1e6 + (t1.tv_nsec - t0.tv_nsec) / 1e3);
    if (it == n - 1) {{
      char buf[65536]; off_t len = lseek(fd, 0, SEEK_END); pread(fd, buf, len, 0);
      int out = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0600); write(out, buf, len); close(out);
    }}
    close(fd);
  }}
  return 0;
}}
"#,
        default = act(p.default_action, p.default_errno_ret),
    );
    let c = dir.join("libseccomp_bench.c");
    let bin = dir.join("libseccomp_bench");
    std::fs::File::create(&c)
        .and_then(|mut f| f.write_all(src.as_bytes()))
        .map_err(|e| e.to_string())?;
    let out = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(&c)
        .arg("-lseccomp")
        .output()
        .map_err(|e| format!("gcc not available: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "gcc -lseccomp failed (is libseccomp-dev installed?): {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("")
        ));
    }
    Ok(bin)
}

fn run_libseccomp(bin: &Path, n: usize, bpf_out: &Path) -> (Vec<f64>, Vec<SockFilter>) {
    let out = Command::new(bin)
        .arg(n.to_string())
        .arg(bpf_out)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "libseccomp program failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let times = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let raw = std::fs::read(bpf_out).unwrap();
    let prog = raw
        .chunks_exact(8)
        .map(|c| SockFilter {
            code: u16::from_le_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    (times, prog)
}
