//! bulkhead's side-by-side benchmarks: bulkhead vs crun and runc (container
//! lifecycle, with and without podman's seccomp profile, a burst of 50, the
//! kernel floor), bulkhead's VMM vs QEMU microvm (the test guest, and the Linux guest
//! kernel against QEMU's TCG), containers in micro-VMs (each backend) vs the same
//! bundle as a plain container, and the unprivileged `sandbox` vs bubblewrap. Runtimes
//! alternate within each round so machine noise hits them alike; the report gives
//! medians, p90 and ratios to crun, as a Markdown table and an SVG chart.
//!
//! Usage (as root): `bench [--rounds N] [--burst N] [--vm-rounds N] [--linux-rounds N]
//! [--only LIST] [--out DIR]` where LIST is a comma list of
//! lifecycle,seccomp,hardened,burst,vmm,snapshot,diffsnapshot,linux,vmcontainer,strace,sandbox.

mod floor;
mod linux;
mod proc;
mod sandbox;
mod snapshot;
mod stats;
mod vmc;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use proc::{Env, Run};
use stats::Samples;

struct Opts {
    rounds: usize,
    burst: usize,
    vm_rounds: usize,
    linux_rounds: usize,
    only: Vec<String>,
    out: PathBuf,
}

fn parse_args() -> Opts {
    let mut o = Opts {
        rounds: 30,
        burst: 50,
        vm_rounds: 10,
        linux_rounds: 3,
        only: vec![],
        out: PathBuf::from("bench/results"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| die(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--rounds" => {
                o.rounds = val()
                    .parse()
                    .unwrap_or_else(|_| die("--rounds: not a number"))
            }
            "--burst" => {
                o.burst = val()
                    .parse()
                    .unwrap_or_else(|_| die("--burst: not a number"))
            }
            "--vm-rounds" => {
                o.vm_rounds = val()
                    .parse()
                    .unwrap_or_else(|_| die("--vm-rounds: not a number"))
            }
            "--linux-rounds" => {
                o.linux_rounds = val()
                    .parse()
                    .unwrap_or_else(|_| die("--linux-rounds: not a number"))
            }
            "--only" => o.only = val().split(',').map(String::from).collect(),
            "--out" => o.out = PathBuf::from(val()),
            "--floor-once" => {
                let rootfs = val();
                std::process::exit(floor::run_once(Path::new(&rootfs)));
            }
            "--config-floor-once" => {
                let bundle = val();
                std::process::exit(floor::run_config_once(Path::new(&bundle)));
            }
            "-h" | "--help" => {
                println!("bench [--rounds N] [--burst N] [--vm-rounds N] [--linux-rounds N] [--only lifecycle,seccomp,hardened,burst,vmm,snapshot,diffsnapshot,linux,vmcontainer,strace,sandbox] [--out DIR]");
                std::process::exit(0);
            }
            _ => die(&format!("unknown argument {a}")),
        }
    }
    o
}

fn die(msg: &str) -> ! {
    eprintln!("bench: {msg}");
    std::process::exit(2)
}

fn want(o: &Opts, what: &str) -> bool {
    o.only.is_empty() || o.only.iter().any(|x| x == what)
}

/// A container runtime under test, in a given cgroup view.
#[derive(Clone)]
struct Runtime {
    label: String,
    name: &'static str,
    bin: PathBuf,
    root: PathBuf,
    env: Env,
    /// This entry's own bundle (a config comparison), instead of the table's.
    bundle: Option<PathBuf>,
}

/// The config a benchmark bundle runs.
#[derive(Clone, Copy, PartialEq)]
enum Config {
    /// `runc spec`.
    Runc,
    /// `runc spec` plus podman's default seccomp profile for its capabilities.
    RuncPodmanSeccomp,
    /// `runc spec` plus bulkhead's default seccomp profile for its capabilities.
    RuncBulkheadSeccomp,
    /// `bulkhead spec`: bulkhead's default profile, masked paths and capabilities.
    BulkheadSpec,
}

/// A busybox bundle running /bin/true with `config`.
fn make_bundle(dir: &Path, config: Config, bulkhead: &Path) {
    let rootfs = dir.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "etc", "tmp"] {
        fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    if !rootfs.join("bin/busybox").exists() {
        fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
            .unwrap_or_else(|e| die(&format!("/bin/busybox: {e} (install busybox-static)")));
        for l in ["true", "sh"] {
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(l));
        }
        fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    }
    let _ = fs::remove_file(dir.join("config.json"));
    // runc's own default spec is the reference config for every runtime.
    let spec_tool = if config == Config::BulkheadSpec {
        bulkhead
    } else {
        Path::new("runc")
    };
    let st = Command::new(spec_tool)
        .args(["spec", "--bundle"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(st.success(), "{} spec failed", spec_tool.display());
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("config.json")).unwrap()).unwrap();
    cfg["process"]["terminal"] = false.into();
    cfg["process"]["args"] = serde_json::json!(["/bin/true"]);
    let caps: Vec<String> = cfg["process"]["capabilities"]["bounding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    match config {
        Config::RuncPodmanSeccomp => {
            let sc = seccomp::profile::load_containers_profile(
                Path::new(seccomp::profile::PODMAN_PROFILE_PATH),
                &caps,
            )
            .unwrap_or_else(|e| die(&format!("podman's seccomp profile: {e} (install podman)")));
            cfg["linux"]["seccomp"] = serde_json::to_value(sc).unwrap();
        }
        Config::RuncBulkheadSeccomp => {
            cfg["linux"]["seccomp"] =
                serde_json::to_value(seccomp::default_profile::profile(&caps)).unwrap();
        }
        Config::Runc | Config::BulkheadSpec => {}
    }
    fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&cfg).unwrap(),
    )
    .unwrap();
}

/// create + start + wait + delete; returns (wall, runtime cpu, max rss of runtime commands).
fn lifecycle(rt: &Runtime, bundle: &Path, id: &str) -> Result<(f64, f64, i64), String> {
    let pidfile = bundle.join(format!("{id}.pid"));
    let base = |c: &mut Command| {
        c.arg("--root").arg(&rt.root);
    };
    let t0 = Instant::now();
    let mut runs: Vec<Run> = Vec::with_capacity(3);
    let mut c = Command::new(&rt.bin);
    base(&mut c);
    c.args(["create", "--bundle"])
        .arg(bundle)
        .arg("--pid-file")
        .arg(&pidfile)
        .arg(id);
    runs.push(proc::run(&mut c, &rt.env).map_err(|e| e.to_string())?);
    if runs[0].status != 0 {
        return Err(format!("{} create: {}", rt.name, runs[0].stderr.trim()));
    }
    let mut c = Command::new(&rt.bin);
    base(&mut c);
    c.args(["start", id]);
    runs.push(proc::run(&mut c, &rt.env).map_err(|e| e.to_string())?);
    if runs[1].status != 0 {
        return Err(format!("{} start: {}", rt.name, runs[1].stderr.trim()));
    }
    let pid: i32 = fs::read_to_string(&pidfile)
        .map_err(|e| e.to_string())?
        .trim()
        .parse()
        .map_err(|e| format!("pid file: {e}"))?;
    proc::wait_init(pid).map_err(|e| format!("wait for {pid}: {e}"))?;
    let mut c = Command::new(&rt.bin);
    base(&mut c);
    c.args(["delete", id]);
    runs.push(proc::run(&mut c, &rt.env).map_err(|e| e.to_string())?);
    if runs[2].status != 0 {
        return Err(format!("{} delete: {}", rt.name, runs[2].stderr.trim()));
    }
    let wall = t0.elapsed().as_secs_f64() * 1000.0;
    let _ = fs::remove_file(&pidfile);
    Ok((
        wall,
        runs.iter().map(|r| r.cpu_ms).sum(),
        runs.iter().map(|r| r.maxrss_kb).max().unwrap_or(0),
    ))
}

#[derive(Default)]
struct Series {
    wall: Samples,
    cpu: Samples,
    rss_kb: i64,
    errors: Vec<String>,
}

/// A private mount namespace where /sys/fs/cgroup/unified is unmounted: the
/// pure-v1 view crun needs on this hybrid host. Held by a sleeping process.
struct V1View {
    holder: std::process::Child,
    ns: fs::File,
}

impl V1View {
    fn new() -> V1View {
        let holder = Command::new("unshare")
            .args([
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                "umount /sys/fs/cgroup/unified 2>/dev/null; echo ready; exec sleep 1000000",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| die(&format!("unshare: {e}")));
        let mut holder = holder;
        let mut buf = [0u8; 6];
        std::io::Read::read_exact(holder.stdout.as_mut().unwrap(), &mut buf).unwrap();
        let ns = fs::File::open(format!("/proc/{}/ns/mnt", holder.id())).unwrap();
        V1View { holder, ns }
    }
}

impl Drop for V1View {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// The host's load average (1, 5, 15 min): what else ran while a table was measured.
fn load_average() -> String {
    let l = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn ratio(v: f64, base: f64) -> String {
    if base.is_finite() && base > 0.0 && v.is_finite() {
        format!("{:.2}x", v / base)
    } else {
        "-".into()
    }
}

/// The floor's label: one clone3, pivot_root and execve (bench/src/floor.rs).
const FLOOR: &str = "floor: clone+pivot_root+exec";
/// The config floor's label: the config's kernel work in one process (bench/src/floor.rs).
const CONFIG_FLOOR: &str = "config floor: the config's kernel work, one process";

/// Alternate every runtime (and the floors) for `rounds` rounds. `floors`: the
/// environment the config floor runs in (the runtimes' cgroup view), when the table has the
/// floors; both run the table's bundle.
fn lifecycle_table(
    title: &str,
    runtimes: &[Runtime],
    bundle: &Path,
    rounds: usize,
    floors: Option<&Env>,
    report: &mut String,
    charts: &mut Vec<(String, Vec<(String, Samples)>)>,
) {
    let mut series: BTreeMap<String, Series> = BTreeMap::new();
    let me = std::env::current_exe().unwrap();
    let warmup = 2;
    // Each round runs every entry once, in a fresh order, so each runtime follows each
    // other one about equally often: a run leaves work the kernel finishes later (after
    // runc, the next cgroup v1 migration waits ~6 ms longer for an RCU grace period),
    // and whoever comes next pays it. A rotating order would not do: it keeps every
    // entry's predecessor fixed, and one runtime would always pay for runc.
    let load_before = load_average();
    let entries = runtimes.len() + if floors.is_some() { 2 } else { 0 };
    for round in 0..rounds + warmup {
        for which in stats::round_order(round, entries) {
            let Some(rt) = runtimes.get(which) else {
                let config_env = floors.expect("floor entries");
                let mut c = Command::new(&me);
                let (label, env) = if which == runtimes.len() {
                    c.arg("--floor-once").arg(bundle.join("rootfs"));
                    (FLOOR, &Env::default())
                } else {
                    c.arg("--config-floor-once").arg(bundle);
                    (CONFIG_FLOOR, config_env)
                };
                let r = proc::run(&mut c, env).unwrap();
                let s = series.entry(label.into()).or_default();
                if r.status == 0 && round >= warmup {
                    s.wall.push(r.wall_ms);
                    s.cpu.push(r.cpu_ms);
                    s.rss_kb = s.rss_kb.max(r.maxrss_kb);
                } else if r.status != 0 {
                    s.errors.push(r.stderr);
                }
                continue;
            };
            let tag: String = rt
                .label
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect();
            let id = format!("bench-{tag}-{round}");
            let r = lifecycle(rt, rt.bundle.as_deref().unwrap_or(bundle), &id);
            proc::reap_orphans();
            let s = series.entry(rt.label.clone()).or_default();
            match r {
                Ok((wall, cpu, rss)) if round >= warmup => {
                    s.wall.push(wall);
                    s.cpu.push(cpu);
                    s.rss_kb = s.rss_kb.max(rss);
                }
                Ok(_) => {}
                Err(e) => {
                    // Clean up and keep going: a failure is reported, not fatal.
                    let _ = Command::new(&rt.bin)
                        .arg("--root")
                        .arg(&rt.root)
                        .args(["delete", "--force", &id])
                        .status();
                    s.errors.push(e);
                }
            }
        }
        eprint!("\r{title}: round {}/{}   ", round + 1, rounds + warmup);
    }
    eprintln!();
    let median_of = |prefix: &str| {
        series
            .iter()
            .find(|(k, _)| k.starts_with(prefix))
            .map(|(_, s)| s.wall.median())
            .unwrap_or(f64::NAN)
    };
    let (crun, floor) = (median_of("crun"), median_of(FLOOR));
    let config_floor = median_of(CONFIG_FLOOR);
    let _ = writeln!(report, "\n### {title}\n");
    let _ = writeln!(report, "{rounds} rounds after {warmup} warm-up rounds; in each round every runtime runs once, in an order shuffled anew each round (a fixed seed), each running `/bin/true` (the config: see the title). Load average before: {load_before}, after: {}.\n", load_average());
    let _ = writeln!(report, "| runtime | median ms | p90 ms | vs crun (median) | vs floor (median) | vs config floor (median) | runtime CPU ms (median) | max RSS of a runtime process (KiB) | errors |");
    let _ = writeln!(report, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut chart = Vec::new();
    for (name, s) in &series {
        let _ = writeln!(
            report,
            "| {name} | {:.2} | {:.2} | {} | {} | {} | {:.2} | {} | {} |",
            s.wall.median(),
            s.wall.pct(90.0),
            ratio(s.wall.median(), crun),
            ratio(s.wall.median(), floor),
            ratio(s.wall.median(), config_floor),
            s.cpu.median(),
            s.rss_kb,
            s.errors.len()
        );
        if let Some(e) = s.errors.first() {
            let _ = writeln!(
                report,
                "|  | first error: `{}` | | | | | | | |",
                e.replace('|', "/").lines().next().unwrap_or("")
            );
        }
        chart.push((name.clone(), s.wall.clone()));
    }
    charts.push((title.to_string(), chart));
}

/// In-process compile times of `profile`, 200 samples (ms).
fn compile_ms(profile: &oci::Seccomp) -> Samples {
    let mut compile = Samples::default();
    for _ in 0..200 {
        let t = Instant::now();
        let f = seccomp::compile(profile).unwrap();
        compile.push(t.elapsed().as_secs_f64() * 1000.0);
        std::hint::black_box(f);
    }
    compile
}

/// The cost of bulkhead's defaults: its seccomp profile in every runtime's config, and
/// bulkhead on each config side by side (alternating, so noise hits them alike).
fn hardened_tables(
    o: &Opts,
    runtimes: &[Runtime],
    [plain, podman, default, spec]: [&Path; 4],
    report: &mut String,
    charts: &mut Vec<(String, Vec<(String, Samples)>)>,
) {
    let caps = oci::SPEC_CAPS.map(String::from);
    let profile = seccomp::default_profile::profile(&caps);
    let compile = compile_ms(&profile);
    lifecycle_table(
        "Lifecycle with bulkhead's default seccomp profile in the config (`runc spec` otherwise)",
        runtimes,
        default,
        o.rounds,
        None,
        report,
        charts,
    );
    // bulkhead (and crun, for the ratio) on each config, in the v1 view.
    let on = |rt: &Runtime, what: &str, bundle: &Path| Runtime {
        label: format!("{} {what}", rt.name),
        bundle: Some(bundle.to_path_buf()),
        ..rt.clone()
    };
    let (bh, crun) = (&runtimes[0], &runtimes[1]);
    let entries = vec![
        on(crun, "runc spec", plain),
        on(bh, "runc spec", plain),
        on(bh, "runc spec + podman's profile", podman),
        on(bh, "runc spec + bulkhead's profile", default),
        on(bh, "bulkhead spec (profile, masked paths)", spec),
    ];
    lifecycle_table(
        "bulkhead's defaults side by side: one runtime, four configs (v1 view)",
        &entries,
        plain,
        o.rounds,
        None,
        report,
        charts,
    );
    let _ = writeln!(
        report,
        "\nbulkhead compiles its default profile for `runc spec`'s capabilities ({} syscall rules) in {:.3} ms (median of 200, in-process) into {} BPF instructions.",
        profile.syscalls.len(),
        compile.median(),
        seccomp::compile(&profile).unwrap().len()
    );
}

/// Bursts per runtime: one burst's peak memory is too coarse to compare alone, and with 5 the
/// medians of two runtimes swapped places between runs of the same builds.
const BURST_ROUNDS: usize = 11;

/// `n` containers created and started at once; wall time until all started,
/// and the peak memory charged to a v1 memory cgroup holding the runtime commands.
fn burst(rt: &Runtime, bundle: &Path, n: usize) -> Result<(f64, f64), String> {
    let cg = PathBuf::from(format!(
        "/sys/fs/cgroup/memory/bulkhead-bench-burst-{}",
        std::process::id()
    ));
    let _ = fs::create_dir(&cg);
    let mut env = rt.env.clone();
    // Each command moves itself in before its exec through `tasks` (it has one thread, so
    // that moves the process), not `cgroup.procs`: a `cgroup.procs` write takes the kernel's
    // global threadgroup lock for writing, which every fork and exit on the machine then
    // waits on (the first one after a quiet moment also waits for an RCU grace period). A
    // thread moving itself skips that lock, as bulkhead's init does: the harness's
    // bookkeeping should not serialise the runtimes it measures.
    env.cgroup_procs = Some(cg.join("tasks"));
    let ids: Vec<String> = (0..n).map(|i| format!("burst-{}-{i}", rt.name)).collect();
    let t0 = Instant::now();
    let results: Vec<Result<i32, String>> = std::thread::scope(|s| {
        let hs: Vec<_> = ids
            .iter()
            .map(|id| {
                let env = env.clone();
                s.spawn(move || {
                    let pidfile = bundle.join(format!("{id}.pid"));
                    let mut c = Command::new(&rt.bin);
                    c.arg("--root")
                        .arg(&rt.root)
                        .args(["create", "--bundle"])
                        .arg(bundle)
                        .arg("--pid-file")
                        .arg(&pidfile)
                        .arg(id);
                    let r = proc::run(&mut c, &env).map_err(|e| e.to_string())?;
                    if r.status != 0 {
                        return Err(r.stderr);
                    }
                    let mut c = Command::new(&rt.bin);
                    c.arg("--root").arg(&rt.root).args(["start", id]);
                    let r = proc::run(&mut c, &env).map_err(|e| e.to_string())?;
                    if r.status != 0 {
                        return Err(r.stderr);
                    }
                    fs::read_to_string(&pidfile)
                        .map_err(|e| e.to_string())?
                        .trim()
                        .parse::<i32>()
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = t0.elapsed().as_secs_f64() * 1000.0;
    let peak = fs::read_to_string(cg.join("memory.max_usage_in_bytes"))
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(f64::NAN)
        / (1024.0 * 1024.0);
    for pid in results.iter().flatten() {
        let _ = proc::wait_init(*pid);
    }
    for id in &ids {
        let _ = proc::run(
            Command::new(&rt.bin)
                .arg("--root")
                .arg(&rt.root)
                .args(["delete", "--force", id]),
            &rt.env,
        );
        let _ = fs::remove_file(bundle.join(format!("{id}.pid")));
    }
    proc::reap_orphans();
    let _ = fs::remove_dir(&cg);
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        return Err(e.trim().to_string());
    }
    Ok((wall, peak))
}

/// The burst table: [`BURST_ROUNDS`] bursts of `n` per runtime, in rotating order.
fn burst_table(title: &str, runtimes: &[Runtime], bundle: &Path, n: usize, report: &mut String) {
    let _ = writeln!(report, "\n### {title}\n");
    let _ = writeln!(report, "Wall time from launching all `create`+`start` pairs at once until the last `start` returned; peak memory charged to a v1 memory cgroup that holds the runtime commands (and what they fork before moving it to the container's cgroup). {BURST_ROUNDS} rounds, every runtime once per round in an order shuffled anew each round; medians, and the range of the peaks (the kernel charges memory to a cgroup in per-CPU batches, so one burst's peak is only good to about a MiB).\n");
    let _ = writeln!(
        report,
        "| runtime | wall ms | per container ms | peak memory MiB (min-max) | vs crun (wall) |"
    );
    let _ = writeln!(report, "|---|---:|---:|---:|---:|");
    let mut walls = vec![Samples::default(); runtimes.len()];
    let mut peaks = vec![Samples::default(); runtimes.len()];
    let mut errors = vec![String::new(); runtimes.len()];
    for round in 0..BURST_ROUNDS {
        for i in stats::round_order(round, runtimes.len()) {
            match burst(&runtimes[i], bundle, n) {
                Ok((wall, peak)) => {
                    walls[i].push(wall);
                    peaks[i].push(peak);
                }
                Err(e) => errors[i] = e,
            }
        }
        eprint!("\rburst: round {}/{BURST_ROUNDS}   ", round + 1);
    }
    eprintln!();
    let crun_wall = runtimes
        .iter()
        .position(|r| r.label.starts_with("crun"))
        .filter(|&i| !walls[i].ms.is_empty())
        .map(|i| walls[i].median())
        .unwrap_or(f64::NAN);
    for (i, rt) in runtimes.iter().enumerate() {
        if walls[i].ms.is_empty() {
            let _ = writeln!(
                report,
                "| {} | failed: `{}` | | | |",
                rt.label,
                errors[i].lines().next().unwrap_or("")
            );
            continue;
        }
        let wall = walls[i].median();
        let (lo, hi) = (peaks[i].pct(0.0), peaks[i].pct(100.0));
        let _ = writeln!(
            report,
            "| {} | {wall:.1} | {:.2} | {:.1} ({lo:.1}-{hi:.1}) | {} |",
            rt.label,
            wall / n as f64,
            peaks[i].median(),
            ratio(wall, crun_wall)
        );
    }
    let _ = writeln!(
        report,
        "\nLoad average after the bursts: {}.",
        load_average()
    );
}

/// CLOCK_MONOTONIC in seconds: the clock bulkhead's VMM reports its start time on.
fn monotonic_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Where the time of one bulkhead VMM run went, in ms, from its report line and the bench's
/// own spawn and exit times: exec to the VM command's start, start to the KVM VM with its
/// memory, to the first vCPU entry, the guest's run, and the teardown after the shutdown.
fn vm_phases(line: &str, spawned: f64, exit_ms: f64) -> Option<[f64; 5]> {
    let num =
        |key: &str| -> Option<f64> { line.split(key).nth(1)?.split(' ').next()?.parse().ok() };
    let entry = num("first vCPU entry ")?;
    let shutdown = num("shutdown ")?;
    let ready = num("KVM VM and memory ready ")?;
    let started = num("VMM start at monotonic ")?;
    let exec = (started - spawned) * 1000.0;
    Some([
        exec,
        ready,
        entry - ready,
        shutdown - entry,
        exit_ms - exec - shutdown,
    ])
}

/// One VMM run: (ms to the first serial byte, ms to exit, max RSS KiB, bulkhead's own report
/// line, CLOCK_MONOTONIC seconds at spawn).
fn vm_once(cmd: &mut Command) -> Result<(f64, f64, i64, String, f64), String> {
    use std::io::Read;
    let errf = std::env::temp_dir().join(format!("bench-vm-{}", std::process::id()));
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(fs::File::create(&errf).unwrap());
    let spawned = monotonic_s();
    let t0 = Instant::now();
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    let first_ms = match out.read(&mut first) {
        Ok(1) => t0.elapsed().as_secs_f64() * 1000.0,
        _ => f64::NAN,
    };
    let mut rest = Vec::new();
    let _ = out.read_to_end(&mut rest);
    let (status, ru) = proc::wait4(child.id() as i32).map_err(|e| e.to_string())?;
    let exit_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let err = fs::read_to_string(&errf).unwrap_or_default();
    let _ = fs::remove_file(&errf);
    let text = String::from_utf8_lossy(&rest);
    if !text.contains("shutting down") {
        return Err(format!(
            "guest did not finish (status {status}): {}",
            err.trim()
        ));
    }
    Ok((
        first_ms,
        exit_ms,
        ru.ru_maxrss,
        err.lines().last().unwrap_or("").to_string(),
        spawned,
    ))
}

/// Syscall counts of one lifecycle under `strace -f -c`. The tracer of
/// `create` follows the runtime and the container's init to the end — the
/// init executes /bin/true when `start` (traced by a second strace) runs, so
/// busybox's `true` is counted too, alike for every runtime. `delete` is
/// traced after the init has exited.
fn strace_counts(rt: &Runtime, bundle: &Path) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    let id = format!("strace-{}", rt.name);
    let pidfile = bundle.join(format!("{id}.pid"));
    let parse = |out: &Path, counts: &mut BTreeMap<String, u64>| {
        for line in fs::read_to_string(out).unwrap_or_default().lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            // "% time seconds usecs/call calls [errors] syscall"; skip the total line
            if f.len() >= 5 && f[0].parse::<f64>().is_ok() && f.last() != Some(&"total") {
                let calls: u64 = f[3].parse().unwrap_or(0);
                *counts.entry(f.last().unwrap().to_string()).or_insert(0) += calls;
            }
        }
        let _ = fs::remove_file(out);
    };
    let tmp = std::env::temp_dir();
    let (f1, f2, f3) = (
        tmp.join(format!("bench-strace1-{}", std::process::id())),
        tmp.join(format!("bench-strace2-{}", std::process::id())),
        tmp.join(format!("bench-strace3-{}", std::process::id())),
    );
    let mut c = Command::new("strace");
    c.args(["-f", "-c", "-o"])
        .arg(&f1)
        .arg(&rt.bin)
        .arg("--root")
        .arg(&rt.root);
    c.args(["create", "--bundle"])
        .arg(bundle)
        .arg("--pid-file")
        .arg(&pidfile)
        .arg(&id);
    c.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(fd) = rt.env.mntns {
        // SAFETY: setns between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut c, move || {
                if libc::setns(fd, libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let Ok(mut tracer) = c.spawn() else {
        return counts;
    };
    for _ in 0..1000 {
        if pidfile.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mut c = Command::new("strace");
    c.args(["-f", "-c", "-o"])
        .arg(&f2)
        .arg(&rt.bin)
        .arg("--root")
        .arg(&rt.root)
        .args(["start", &id]);
    let _ = proc::run(&mut c, &rt.env);
    let _ = tracer.wait();
    if let Ok(p) = fs::read_to_string(&pidfile) {
        let _ = proc::wait_init(p.trim().parse().unwrap_or(0));
    }
    let mut c = Command::new("strace");
    c.args(["-f", "-c", "-o"])
        .arg(&f3)
        .arg(&rt.bin)
        .arg("--root")
        .arg(&rt.root)
        .args(["delete", &id]);
    let _ = proc::run(&mut c, &rt.env);
    for f in [&f1, &f2, &f3] {
        parse(f, &mut counts);
    }
    let _ = fs::remove_file(&pidfile);
    proc::reap_orphans();
    counts
}

fn main() {
    let o = parse_args();
    if rustix_is_root() {
        proc::become_subreaper();
    } else {
        die("run as root (containers and VMs are created)");
    }
    let repo = std::env::current_dir().unwrap();
    // The static release build (scripts/build.sh), else a plain release build.
    let bulkhead = std::env::var_os("BULKHEAD_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            [
                "target/x86_64-unknown-linux-musl/release/bulkhead",
                "target/release/bulkhead",
            ]
            .iter()
            .map(|p| repo.join(p))
            .find(|p| p.exists())
        })
        .unwrap_or_else(|| {
            die("no release build of bulkhead: run scripts/build.sh first (bench/run.sh does)")
        });
    let crun =
        proc::which("crun").unwrap_or_else(|| die("crun not found (scripts/deps.sh installs it)"));
    let runc =
        proc::which("runc").unwrap_or_else(|| die("runc not found (scripts/deps.sh installs it)"));
    let work = std::env::temp_dir().join(format!("bulkhead-bench-{}", std::process::id()));
    fs::create_dir_all(&work).unwrap();
    let bundle = work.join("bundle");
    make_bundle(&bundle, Config::Runc, &bulkhead);
    let bundle_sc = work.join("bundle-seccomp");
    make_bundle(&bundle_sc, Config::RuncPodmanSeccomp, &bulkhead);
    let bundle_default_sc = work.join("bundle-default-seccomp");
    make_bundle(&bundle_default_sc, Config::RuncBulkheadSeccomp, &bulkhead);
    let bundle_spec = work.join("bundle-bulkhead-spec");
    make_bundle(&bundle_spec, Config::BulkheadSpec, &bulkhead);

    let view = V1View::new();
    let v1 = Env {
        mntns: Some(view.ns.as_raw_fd()),
        ..Env::default()
    };
    let mk = |label: &str, name: &'static str, bin: &Path, env: &Env| Runtime {
        label: label.to_string(),
        name,
        bin: bin.to_path_buf(),
        root: work.join(format!("root-{}", label.replace([' ', '(', ')'], ""))),
        env: env.clone(),
        bundle: None,
    };
    let runtimes = vec![
        mk("bulkhead (v1 view)", "bulkhead", &bulkhead, &v1),
        mk("crun (v1 view)", "crun", &crun, &v1),
        mk("runc (v1 view)", "runc", &runc, &v1),
        mk(
            "bulkhead (hybrid host)",
            "bulkhead",
            &bulkhead,
            &Env::default(),
        ),
    ];

    let mut report = String::new();
    let started = std::time::SystemTime::now();
    let _ = writeln!(report, "# bulkhead benchmarks\n");
    let _ = writeln!(
        report,
        "Host: {} cores, kernel {}; {} {}; {}. All container runtimes run inside one private mount namespace where `/sys/fs/cgroup/unified` is unmounted (crun refuses the hybrid layout); bulkhead is also measured on the real hybrid layout.",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        String::from_utf8_lossy(&Command::new(&crun).arg("--version").output().unwrap().stdout).lines().next().unwrap_or(""),
        String::from_utf8_lossy(&Command::new(&runc).arg("--version").output().unwrap().stdout).lines().next().unwrap_or(""),
        String::from_utf8_lossy(&Command::new(&bulkhead).arg("--version").output().unwrap().stdout).trim(),
    );
    let mut charts = Vec::new();

    if want(&o, "lifecycle") {
        lifecycle_table(
            "Lifecycle: create + start + wait + delete of /bin/true",
            &runtimes,
            &bundle,
            o.rounds,
            Some(&v1),
            &mut report,
            &mut charts,
        );
    }
    if want(&o, "seccomp") {
        let caps = oci::DEFAULT_CAPS.map(String::from);
        let profile = seccomp::profile::load_containers_profile(
            Path::new(seccomp::profile::PODMAN_PROFILE_PATH),
            &caps,
        )
        .unwrap();
        let compile = compile_ms(&profile);
        lifecycle_table(
            "Lifecycle with podman's default seccomp profile in the config",
            &runtimes,
            &bundle_sc,
            o.rounds,
            None,
            &mut report,
            &mut charts,
        );
        let _ = writeln!(
            report,
            "\nbulkhead compiles podman's profile ({} syscall rules) in {:.3} ms (median of 200, in-process) into {} BPF instructions.",
            profile.syscalls.len(),
            compile.median(),
            seccomp::compile(&profile).unwrap().len()
        );
    }
    if want(&o, "hardened") {
        hardened_tables(
            &o,
            &runtimes,
            [&bundle, &bundle_sc, &bundle_default_sc, &bundle_spec],
            &mut report,
            &mut charts,
        );
    }
    if want(&o, "burst") {
        burst_table(
            &format!(
                "Burst: {} containers created and started concurrently",
                o.burst
            ),
            &runtimes,
            &bundle,
            o.burst,
            &mut report,
        );
        // The same burst with every state root on a tmpfs, as `/run` is on a systemd host.
        // Here the roots (like this machine's /run) are on an ext4 without a journal, whose
        // inode allocator skips every inode freed in the last minute or more, reading its
        // inode-table block to find out: a burst after other bursts pays for their
        // deletions, whichever runtime made them.
        let shm = PathBuf::from(format!("/dev/shm/bulkhead-bench-{}", std::process::id()));
        let on_tmpfs: Vec<Runtime> = runtimes
            .iter()
            .map(|r| Runtime {
                root: shm.join(r.root.file_name().expect("root has a name")),
                ..r.clone()
            })
            .collect();
        for r in &on_tmpfs {
            fs::create_dir_all(&r.root).unwrap();
        }
        burst_table(
            &format!(
                "Burst: {} containers, state roots on a tmpfs (as /run on a systemd host)",
                o.burst
            ),
            &on_tmpfs,
            &bundle,
            o.burst,
            &mut report,
        );
        let _ = fs::remove_dir_all(&shm);
    }
    let _ = writeln!(
        report,
        "\n### Binary size\n\n| runtime | bytes |\n|---|---:|"
    );
    for (n, p) in [
        ("bulkhead (release)", &bulkhead),
        ("crun", &crun),
        ("runc", &runc),
    ] {
        let _ = writeln!(report, "| {n} | {} |", proc::file_size(p));
    }
    if want(&o, "sandbox") {
        sandbox::table(o.rounds, &bulkhead, &work, &mut report, &mut charts);
    }
    if want(&o, "vmm") {
        vmm_table(&o, &repo, &bulkhead, &work, &mut report, &mut charts);
    }
    if want(&o, "snapshot") || want(&o, "diffsnapshot") {
        match build_guest(&repo, &work) {
            Some(guest) => {
                if want(&o, "snapshot") {
                    snapshot::tables(
                        o.vm_rounds,
                        &bulkhead,
                        &guest,
                        &work,
                        &mut report,
                        &mut charts,
                    );
                }
                snapshot::diff_table(o.vm_rounds, &bulkhead, &guest, &work, &mut report);
            }
            None => {
                let _ = writeln!(report, "\n### Snapshot and restore\n\nskipped: the test guest did not build (gcc/binutils missing?)");
            }
        }
    }
    if want(&o, "linux") {
        linux::table(
            o.linux_rounds,
            &repo,
            &bulkhead,
            &work,
            &mut report,
            &mut charts,
        );
    }
    if want(&o, "vmcontainer") {
        let b = work.join("bundle-vm");
        make_bundle(&b, Config::Runc, &bulkhead);
        vmc::table(&bulkhead, &b, o.vm_rounds, &mut report, &mut charts);
    }
    if want(&o, "strace") {
        let bh = strace_counts(&runtimes[0], &bundle);
        let cr = strace_counts(&runtimes[1], &bundle);
        let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
        let _ = writeln!(
            report,
            "\n### Syscalls per lifecycle (strace -f -c over create, start, delete; v1 view)\n"
        );
        let _ = writeln!(
            report,
            "Total: bulkhead {} syscalls, crun {}.\n",
            total(&bh),
            total(&cr)
        );
        let _ = writeln!(report, "| syscall | bulkhead | crun |\n|---|---:|---:|");
        let mut names: Vec<&String> = bh.keys().chain(cr.keys()).collect();
        names.sort();
        names.dedup();
        names.sort_by_key(|n| {
            std::cmp::Reverse(
                bh.get(*n)
                    .copied()
                    .unwrap_or(0)
                    .max(cr.get(*n).copied().unwrap_or(0)),
            )
        });
        for n in names.iter().take(25) {
            let _ = writeln!(
                report,
                "| {n} | {} | {} |",
                bh.get(*n).copied().unwrap_or(0),
                cr.get(*n).copied().unwrap_or(0)
            );
        }
    }

    // Write the results.
    fs::create_dir_all(&o.out).unwrap();
    let stamp = started
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let md = o.out.join(format!("results-{stamp}.md"));
    let mut charts_md = String::new();
    for (i, (title, series)) in charts.iter().enumerate() {
        let refs: Vec<(String, &Samples)> = series.iter().map(|(n, s)| (n.clone(), s)).collect();
        let svg = stats::svg_strip(
            title,
            "milliseconds (each dot one run, bar = median)",
            &refs,
        );
        let name = format!("chart-{stamp}-{i}.svg");
        fs::write(o.out.join(&name), svg).unwrap();
        let _ = writeln!(charts_md, "\n![{title}]({name})");
    }
    report.push_str(&charts_md);
    fs::write(&md, &report).unwrap();
    fs::copy(&md, o.out.join("latest.md")).unwrap();
    println!("{report}");
    eprintln!("written to {}", md.display());
    drop(view);
    let _ = fs::remove_dir_all(&work);
}

/// The test guest (ELF), built with guest/build.sh; `None` if it does not build.
fn build_guest(repo: &Path, work: &Path) -> Option<PathBuf> {
    let gdir = work.join("guest");
    let st = Command::new("sh")
        .arg(repo.join("guest/build.sh"))
        .arg(&gdir)
        .stdout(std::process::Stdio::null())
        .status();
    st.map(|s| s.success())
        .unwrap_or(false)
        .then(|| gdir.join("guest.elf"))
}

fn vmm_table(
    o: &Opts,
    repo: &Path,
    bulkhead: &Path,
    work: &Path,
    report: &mut String,
    charts: &mut Vec<(String, Vec<(String, Samples)>)>,
) {
    let Some(guest) = build_guest(repo, work) else {
        let _ = writeln!(
            report,
            "\n### VMM\n\nskipped: the test guest did not build (gcc/binutils missing?)"
        );
        return;
    };
    let qemu = proc::which("qemu-system-x86_64");
    let mut rows: BTreeMap<&str, (Samples, Samples, i64, Vec<String>)> = BTreeMap::new();
    let mut bh_entry: BTreeMap<&str, Samples> = BTreeMap::new();
    let mut phases: BTreeMap<&str, [Samples; 5]> = BTreeMap::new();
    // Per round: jailed exit time minus unjailed (the two run back to back).
    let mut jail_cost = Samples::default();
    const JAILED: &str = "bulkhead vm run (jailed, the default)";
    const UNJAILED: &str = "bulkhead vm run --no-jail";
    for round in 0..o.vm_rounds + 1 {
        let mut exits: BTreeMap<&str, f64> = BTreeMap::new();
        // Alternate which of the two goes first.
        let order = if round % 2 == 0 {
            [JAILED, UNJAILED]
        } else {
            [UNJAILED, JAILED]
        };
        for name in order {
            let mut c = Command::new(bulkhead);
            c.args(["vm", "run", "--memory", "128", "--kernel"])
                .arg(&guest);
            if name == UNJAILED {
                c.arg("--no-jail");
            }
            let r = vm_once(&mut c);
            let e = rows.entry(name).or_default();
            match r {
                Ok((first, exit, rss, line, spawned)) if round > 0 => {
                    e.0.push(first);
                    e.1.push(exit);
                    e.2 = e.2.max(rss);
                    exits.insert(name, exit);
                    if let Some(p) = vm_phases(&line, spawned, exit) {
                        let row = phases.entry(name).or_default();
                        for (s, v) in row.iter_mut().zip(p) {
                            s.push(v);
                        }
                    }
                    // "first vCPU entry X ms" from bulkhead's own report.
                    if let Some(v) = line
                        .split("first vCPU entry ")
                        .nth(1)
                        .and_then(|s| s.split(' ').next())
                        .and_then(|s| s.parse().ok())
                    {
                        bh_entry.entry(name).or_default().push(v);
                    }
                }
                Ok(_) => {}
                Err(err) => e.3.push(err),
            }
        }
        if let (Some(j), Some(u)) = (exits.get(JAILED), exits.get(UNJAILED)) {
            jail_cost.push(j - u);
        }
        if let Some(q) = &qemu {
            let mut c = Command::new(q);
            c.args([
                "-M",
                "microvm",
                "-enable-kvm",
                // This KVM refuses the ARCH_CAPABILITIES MSR value QEMU 7.2 sets for
                // `-cpu host` (an assertion kills QEMU): leave that MSR out.
                "-cpu",
                "host,-arch-capabilities",
                "-m",
                "128",
                "-nodefaults",
                "-no-user-config",
                "-nographic",
                "-serial",
                "stdio",
                "-append",
                "console=ttyS0",
                "-device",
                "isa-debug-exit,iobase=0xf4,iosize=0x04",
                "-kernel",
            ])
            .arg(&guest);
            let r = vm_once(&mut c);
            let e = rows.entry("qemu -M microvm").or_default();
            match r {
                Ok((first, exit, rss, _, _)) if round > 0 => {
                    e.0.push(first);
                    e.1.push(exit);
                    e.2 = e.2.max(rss);
                }
                Ok(_) => {}
                Err(err) => e.3.push(err),
            }
        }
        eprint!("\rvmm: round {}/{}   ", round + 1, o.vm_rounds + 1);
    }
    eprintln!();
    let _ = writeln!(
        report,
        "\n### VMM: the test guest (ELF, 128 MiB, 1 vCPU), process start to ...\n"
    );
    let _ = writeln!(report, "{} rounds after one warm-up, alternating. The guest prints its boot report on the serial port and shuts down (i8042 reset; under QEMU microvm, which ignores it, the isa-debug-exit port).\n", o.vm_rounds);
    let _ = writeln!(report, "| VMM | first serial byte, median ms | exit, median ms | exit p90 ms | max RSS (MiB) | errors |\n|---|---:|---:|---:|---:|---:|");
    let mut chart = Vec::new();
    for (name, (first, exit, rss, errs)) in &rows {
        let _ = writeln!(
            report,
            "| {name} | {:.2} | {:.2} | {:.2} | {:.1} | {} |",
            first.median(),
            exit.median(),
            exit.pct(90.0),
            *rss as f64 / 1024.0,
            errs.len()
        );
        chart.push((name.to_string(), exit.clone()));
    }
    for (name, e) in &bh_entry {
        let _ = writeln!(report, "\n{name}: first vCPU entry (KVM_RUN of the first guest instruction) median {:.2} ms after process start.", e.median());
    }
    if !phases.is_empty() {
        let _ = writeln!(report, "\nWhere bulkhead's time goes (medians, ms): exec to the `vm` command's start (process start, argument parsing), to the KVM VM with its guest memory registered and its irqchip (jailed: in its jail), to the first vCPU entry (devices, vCPU threads, per-thread seccomp), the guest's run to its shutdown, and the teardown to the exit seen by the parent (vCPU threads, closing the VM and its memory, the jail's cgroup).\n");
        let _ = writeln!(report, "| VMM | exec to start | to VM + memory | to first vCPU entry | guest run | teardown to exit |\n|---|---:|---:|---:|---:|---:|");
        for (name, p) in &phases {
            let _ = writeln!(
                report,
                "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                p[0].median(),
                p[1].median(),
                p[2].median(),
                p[3].median(),
                p[4].median()
            );
        }
    }
    if !jail_cost.ms.is_empty() {
        let _ = writeln!(
            report,
            "\nThe jail's cost, exec to exit, jailed minus unjailed in the same round: median {:.2} ms, p90 {:.2} ms ({} pairs).",
            jail_cost.median(),
            jail_cost.pct(90.0),
            jail_cost.ms.len()
        );
    }
    if qemu.is_none() {
        let _ = writeln!(report, "\nqemu-system-x86_64 not found: QEMU row skipped.");
    }
    charts.push(("VMM: process start to exit, test guest".into(), chart));
}

fn rustix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::vm_phases;

    #[test]
    fn phases_come_from_the_vmm_line_and_the_spawn_and_exit_times() {
        // The line crates/vmm's VmReport writes (its test pins the same text).
        let line = "bulkhead vm: guest shut down (i8042 reset): first vCPU entry 7.500 ms, \
                    boot-timer 15.000 ms, shutdown 20.000 ms after VMM start; KVM VM and memory \
                    ready 6.250 ms; VMM start at monotonic 23227.292262 s";
        let p = vm_phases(line, 23227.291262, 40.0).expect("every phase parsed");
        let want = [1.0, 6.25, 1.25, 12.5, 19.0];
        for (got, want) in p.iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{p:?}");
        }
        assert!(vm_phases("bulkhead vm: guest shut down (i8042 reset)", 0.0, 1.0).is_none());
    }
}
