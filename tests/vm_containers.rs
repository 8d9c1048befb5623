//! End-to-end tests of VM-backed containers: the guest image (the kernel guest/build-kernel.sh
//! caches + an initramfs whose /init is the static bulkhead), the agent in the guest, the
//! container built there by the container library, and the OCI commands on the host —
//! driven by bulkhead's CLI and by podman.
//!
//! Hypervisor: QEMU (`-M microvm`, TCG here: this machine's KVM emulates guest kernel code,
//! QEMU's JIT is faster), and one case with the builtin VMM. Each VM boot costs seconds, so
//! the cases are few and each checks a whole sequence.
//!
//! Needs (./test.sh provides them): the static bulkhead (`scripts/build.sh` →
//! target/x86_64-unknown-linux-musl/release/bulkhead, or $BULKHEAD_AGENT) and a guest kernel
//! (`guest/build-kernel.sh`). Missing ones fail the tests with the command that makes them.

mod common;
mod engines_support;
mod vm_common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{alive, bin, cgroup_dirs_named, fails, ok, output, unique, Bundle, Rt};
use vm_common::static_bulkhead;

/// The guest image for these tests, built (or found cached) once per test binary.
fn image() -> &'static PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let agent = static_bulkhead();
        let out = output(
            Command::new(bin())
                .args(["vm", "image", "build", "--agent"])
                .arg(&agent),
        );
        let dir = ok(&out).trim().to_string();
        assert!(
            Path::new(&dir).join("vmlinux").is_file(),
            "vm image build printed {dir:?}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(dir)
    })
}

/// A busybox bundle running `sh -c script` in a VM with `backend`.
fn vm_bundle(name: &str, script: &str, backend: &str) -> Bundle {
    let mut b = Bundle::new(name, &["sh", "-c", script]);
    b.config["annotations"] = serde_json::json!({
        "run.bulkhead.vm": "true",
        "run.bulkhead.vm.backend": backend,
        "run.bulkhead.vm.image": image(),
    });
    b.save();
    b
}

/// The children of `pid` (the monitor's hypervisor), leaving out the jail's cgroup reaper
/// (`bulkhead-jailrp`, see crates/jail/src/reaper.rs).
fn children(pid: i64) -> Vec<i64> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(format!("/proc/{pid}/task")) {
        for t in rd.flatten() {
            let c = fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(c.split_whitespace().filter_map(|s| s.parse::<i64>().ok()));
        }
    }
    out.retain(|c| {
        fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|n| n.trim() != "bulkhead-jailrp")
    });
    out
}

fn cmdline(pid: i64) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default()
}

/// Wait (bounded) until `pid` is gone.
fn gone(pid: i64) -> bool {
    let end = Instant::now() + Duration::from_secs(30);
    while alive(pid) {
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// The hypervisor `pid` runs as the jail has it: uid 77777, exactly the capabilities `caps`
/// (hex, effective and bounding), no_new_privs, a seccomp filter.
fn assert_jailed(pid: i64, caps: &str) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for want in [
        "Uid:\t77777".to_string(),
        format!("CapEff:\t{caps}"),
        format!("CapBnd:\t{caps}"),
        "NoNewPrivs:\t1".into(),
        "Seccomp:\t2".into(),
    ] {
        assert!(
            status.contains(&want),
            "{want:?} not in the hypervisor's status:\n{status}"
        );
    }
}

/// Nothing of container `id` is left on the host: state directory, cgroups, processes.
fn assert_nothing_left(rt: &Rt, id: &str, pids: &[i64]) {
    assert!(!rt.root.join(id).exists(), "state directory of {id} left");
    assert_eq!(
        cgroup_dirs_named(id),
        Vec::<PathBuf>::new(),
        "cgroups of {id} left"
    );
    for p in pids {
        assert!(gone(*p), "process {p} ({}) left", cmdline(*p));
    }
}

#[test]
fn oci_lifecycle_exec_ps_kill_in_a_qemu_vm() {
    let rt = Rt::new();
    let id = unique("vmlife");
    // The init traps TERM, so `kill` must reach it in the guest for the code to be 42.
    let b = vm_bundle(
        "vmlife",
        "trap 'echo got-term; exit 42' TERM; echo started; while :; do sleep 1; done",
        "qemu",
    );
    let stdout = rt.root.join(format!("{id}.out"));
    fs::create_dir_all(&rt.root).unwrap();
    let st = rt
        .create_cmd(&id, &b)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout).unwrap())
        .stderr(fs::File::create(rt.root.join("create.err")).unwrap())
        .status()
        .unwrap();
    assert!(st.success(), "create failed: {st}");

    // created: the monitor is the pid, the VM runs under it, the program has not started.
    let state = rt.state(&id);
    assert_eq!(state["status"], "created");
    let monitor = state["pid"].as_i64().unwrap();
    let hv = children(monitor);
    assert_eq!(hv.len(), 1, "one hypervisor under the monitor: {hv:?}");
    assert!(
        cmdline(hv[0]).contains("qemu-system-x86_64"),
        "{}",
        cmdline(hv[0])
    );
    // QEMU runs jailed, in a cgroup of its own inside the container's: an unprivileged
    // uid, no capabilities, no_new_privs, a seccomp filter, an empty root.
    let cg = fs::read_to_string(format!("/proc/{}/cgroup", hv[0])).unwrap();
    assert!(
        cg.lines().any(|l| l.contains(&format!("{id}/vm-"))),
        "hypervisor not in a cgroup inside the container's:\n{cg}"
    );
    assert_jailed(hv[0], "0000000000000000");
    assert!(
        !Path::new(&format!("/proc/{}/root/etc/passwd", hv[0])).exists(),
        "the hypervisor sees the host's files"
    );
    assert_eq!(fs::read_to_string(&stdout).unwrap(), "", "ran before start");
    // The guest init waits before execve: `ps` (guest pids) shows the runtime's clone.
    let ps = ok(&rt.run(&["ps", "--format", "json", &id]));
    let pids: Vec<i64> = serde_json::from_str(&ps).unwrap();
    assert_eq!(pids.len(), 1, "{ps}");

    ok(&rt.run(&["start", &id]));
    assert_eq!(rt.status(&id), "running");
    let end = Instant::now() + Duration::from_secs(60);
    while !fs::read_to_string(&stdout).unwrap().contains("started") {
        assert!(Instant::now() < end, "no output from the container");
        std::thread::sleep(Duration::from_millis(50));
    }

    // exec: stdin, stdout, stderr, exit code.
    let input = rt.root.join("input");
    fs::write(&input, "one\ntwo\n").unwrap();
    let o = Command::new(bin())
        .arg("--root")
        .arg(&rt.root)
        .args(["exec", &id, "sh", "-c", "wc -l; echo to-err >&2; exit 4"])
        .stdin(fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "2");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "to-err\n");
    // A missing program: the container library's message, which engines map to 127.
    let e = fails(&rt.run(&["exec", &id, "/nonexistent"]));
    assert!(e.contains("No such file or directory"), "{e}");
    // Detached exec: a relay process holds its stdio and exits with its code.
    let pidfile = rt.root.join("exec.pid");
    ok(&rt.run(&[
        "exec",
        "--detach",
        "--pid-file",
        pidfile.to_str().unwrap(),
        &id,
        "sleep",
        "1000",
    ]));
    let relay: i64 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(relay));
    let table = ok(&rt.run(&["ps", &id]));
    assert!(table.contains("sleep 1000"), "{table}");
    // pause freezes the whole VM (its host cgroup); resume thaws it and it answers again.
    ok(&rt.run(&["pause", &id]));
    assert_eq!(rt.status(&id), "paused");
    ok(&rt.run(&["resume", &id]));
    assert_eq!(rt.status(&id), "running");
    assert!(ok(&rt.run(&["ps", &id])).contains("sleep 1000"));

    // kill: the monitor passes TERM to the init in the guest, which exits 42.
    ok(&rt.run(&["kill", &id, "TERM"]));
    assert!(gone(monitor), "the monitor did not exit");
    assert_eq!(rt.status(&id), "stopped");
    let out = fs::read_to_string(&stdout).unwrap();
    let err = fs::read_to_string(rt.root.join("create.err")).unwrap();
    assert!(out.contains("got-term"), "stdout: {out:?}, stderr: {err:?}");
    assert!(gone(relay), "the exec relay outlived the container");
    assert!(gone(hv[0]), "the hypervisor outlived the container");
    // A stopped container: exec and kill are refused; delete cleans everything.
    fails(&rt.run(&["exec", &id, "true"]));
    fails(&rt.run(&["kill", &id, "TERM"]));
    ok(&rt.run(&["delete", &id]));
    assert_nothing_left(&rt, &id, &[monitor, hv[0], relay]);
}

#[test]
fn run_passes_stdio_exit_codes_and_signals_through_a_qemu_vm() {
    let rt = Rt::new();
    fs::create_dir_all(&rt.root).unwrap();
    // stdin in, stdout and stderr apart, the exit code out.
    let b = vm_bundle(
        "vmrun",
        "read x; echo \"got $x\"; echo err >&2; exit 3",
        "qemu",
    );
    let id = unique("vmrun");
    rt.track(&id);
    let input = rt.root.join("in");
    fs::write(&input, "hello\n").unwrap();
    let o = rt
        .cmd()
        .args(["run", "--bundle"])
        .arg(&b.dir)
        .arg(&id)
        .stdin(fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "got hello\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");
    assert_nothing_left(&rt, &id, &[]);

    // An init killed by a signal in the guest: 128 + N, as for any container. Without a
    // pid namespace it is not a pid 1 (which would ignore the signal). root.readonly
    // holds in the guest too: writes to the root fail.
    let mut b = vm_bundle(
        "vmsig",
        "touch /x 2>/dev/null && exit 9; kill -USR1 $$; sleep 5",
        "qemu",
    );
    b.config["root"]["readonly"] = true.into();
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "pid");
    b.save();
    let id = unique("vmsig");
    let (code, out, err) = rt.run_container(&id, &b);
    assert_eq!(code, 128 + libc::SIGUSR1, "stdout: {out}\nstderr: {err}");
    assert_nothing_left(&rt, &id, &[]);
}

#[test]
fn a_vm_that_dies_leaves_a_stopped_container_and_nothing_else() {
    let rt = Rt::new();
    fs::create_dir_all(&rt.root).unwrap();
    let b = vm_bundle("vmdie", "sleep 1000", "qemu");
    let id = unique("vmdie");
    let errf = rt.root.join(format!("{id}.err"));
    let st = rt
        .create_cmd(&id, &b)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&errf).unwrap())
        .status()
        .unwrap();
    assert!(st.success());
    ok(&rt.run(&["start", &id]));
    let monitor = rt.state(&id)["pid"].as_i64().unwrap();
    let hv = children(monitor);
    assert_eq!(hv.len(), 1);
    // SAFETY: killing the hypervisor this test started.
    unsafe { libc::kill(hv[0] as i32, libc::SIGKILL) };
    assert!(gone(monitor), "the monitor did not notice its VM died");
    assert_eq!(rt.status(&id), "stopped");
    let err = fs::read_to_string(&errf).unwrap();
    assert!(err.contains("ended before the container did"), "{err}");
    ok(&rt.run(&["delete", &id]));
    assert_nothing_left(&rt, &id, &[monitor, hv[0]]);
}

#[test]
fn bad_input_fails_create_with_one_line_and_leaves_nothing() {
    let rt = Rt::new();
    fs::create_dir_all(&rt.root).unwrap();
    let qemus_before = qemu_count();

    // A config `edit` makes: create refuses it with one line holding `want`, and leaves
    // nothing.
    let refused = |name: &str, edit: &dyn Fn(&mut Bundle), want: &str| {
        let mut b = vm_bundle(name, "true", "qemu");
        edit(&mut b);
        b.save();
        let id = unique(name);
        rt.track(&id);
        let e = fails(&rt.create(&id, &b));
        assert!(e.contains(want), "{e}");
        assert_eq!(e.trim().lines().count(), 1, "{e}");
        assert_nothing_left(&rt, &id, &[]);
    };
    // No guest image where the config says; a root filesystem above the disk budget (1 MiB;
    // busybox alone is larger); an unknown QEMU accelerator; an unknown backend.
    for (name, key, value, want) in [
        (
            "vmnoimg",
            "image",
            "/nonexistent/image",
            "bulkhead vm image build",
        ),
        ("vmbig", "disk-max", "1", "run.bulkhead.vm.disk-max"),
        ("vmaccel", "accel", "hvf", "expected kvm or tcg"),
        ("vmbk", "backend", "firecracker", "unknown VM backend"),
    ] {
        let key = format!("run.bulkhead.vm.{key}");
        refused(
            name,
            &|b| b.config["annotations"][&key] = value.into(),
            want,
        );
    }
    // A host directory with content bound into the container: cannot be shared.
    refused(
        "vmdir",
        &|b| fs::write(b.share("/data").join("f"), "x").unwrap(),
        "(/data): the host directory",
    );
    // No network namespace: the host's network, which a VM cannot share.
    let no_netns = |b: &mut Bundle| {
        let ns = b.config["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "network");
    };
    refused("vmhostnet", &no_netns, "the host's network");

    // A guest that never answers: an image whose /init is busybox sleeping.
    let mute = mute_image(&rt.root);
    let mut b = vm_bundle("vmmute", "true", "qemu");
    b.config["annotations"]["run.bulkhead.vm.image"] = mute.display().to_string().into();
    b.config["annotations"]["run.bulkhead.vm.boot-timeout"] = "4".into();
    b.save();
    let id = unique("vmmute");
    rt.track(&id);
    let e = fails(&rt.create(&id, &b));
    assert!(
        e.contains("did not say hello within 4 s") && e.contains("boot-timeout"),
        "{e}"
    );
    assert!(
        e.contains("mute guest up"),
        "the console's last lines are quoted: {e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert_nothing_left(&rt, &id, &[]);
    let end = Instant::now() + Duration::from_secs(30);
    while qemu_count() > qemus_before && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        qemu_count() <= qemus_before,
        "a hypervisor was left running"
    );
}

#[test]
fn a_create_killed_while_the_vm_boots_leaves_what_delete_removes() {
    let rt = Rt::new();
    fs::create_dir_all(&rt.root).unwrap();
    let b = vm_bundle("vmkill", "true", "qemu");
    let id = unique("vmkill");
    let mut create = rt
        .create_cmd(&id, &b)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the monitor has started the hypervisor.
    let end = Instant::now() + Duration::from_secs(60);
    let (monitor, hv) = loop {
        let found = children(create.id() as i64)
            .into_iter()
            .find_map(|m| children(m).first().map(|h| (m, *h)));
        if let Some(f) = found {
            break f;
        }
        assert!(Instant::now() < end, "no hypervisor started");
        std::thread::sleep(Duration::from_millis(20));
    };
    create.kill().unwrap();
    create.wait().unwrap();
    assert!(gone(monitor), "the monitor outlived its create");
    assert!(gone(hv), "the hypervisor outlived its create");
    assert_eq!(rt.status(&id), "stopped");
    ok(&rt.run(&["delete", &id]));
    assert_nothing_left(&rt, &id, &[monitor, hv]);
}

/// QEMU processes started from this test binary's state roots.
fn qemu_count() -> usize {
    let me = format!("bh-root-{}-", std::process::id());
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i64>().ok())
        .filter(|p| {
            let c = cmdline(*p);
            c.contains("qemu-system") && c.contains(&me)
        })
        .count()
}

/// A guest image whose /init prints a line and sleeps: the agent never says hello.
fn mute_image(dir: &Path) -> PathBuf {
    let img = dir.join("mute-image");
    let stage = dir.join("mute-stage");
    fs::create_dir_all(stage.join("bin")).unwrap();
    fs::create_dir_all(&img).unwrap();
    fs::copy("/bin/busybox", stage.join("bin/busybox")).unwrap();
    fs::write(
        stage.join("init"),
        "#!/bin/busybox sh\n/bin/busybox echo mute guest up\n/bin/busybox sleep 1000\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(stage.join("init"), fs::Permissions::from_mode(0o755)).unwrap();
    let cpio = fs::File::create(img.join("initramfs.cpio")).unwrap();
    let mut c = Command::new("sh")
        .args(["-c", "find . | cpio --quiet -o -H newc"])
        .current_dir(&stage)
        .stdout(cpio)
        .spawn()
        .unwrap();
    assert!(c.wait().unwrap().success());
    fs::copy(image().join("vmlinux"), img.join("vmlinux")).unwrap();
    fs::copy(image().join("image.json"), img.join("image.json")).unwrap();
    img
}

#[test]
fn podman_runs_containers_in_qemu_vms() {
    use engines_support::{Podman, Pty, Runtime, IMAGE};
    let p = Podman::new(&Runtime::bulkhead());
    let img = image().display().to_string();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--annotation",
            "run.bulkhead.vm=true",
            "--annotation",
            "run.bulkhead.vm.backend=qemu",
            "--annotation",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.push(format!("run.bulkhead.vm.image={img}"));
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };

    // run --rm: output and exit code through conmon.
    let a = args(&[
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "echo hi; echo to-stderr >&2; exit 3",
    ]);
    let o = p.run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.code(3), "hi\n");
    assert!(o.stderr.contains("to-stderr"), "{o}");
    // -i: stdin reaches the container in the VM.
    let input = p.dir.join("input");
    fs::write(&input, "a\nb\nc\n").unwrap();
    let a = args(&["--rm", "-i", IMAGE, "sh", "-c", "wc -l; exit 5"]);
    let o = p.run_in(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        Some(&input),
    );
    assert_eq!(o.code(5).trim(), "3");

    // An existing network namespace (`--network ns:PATH`, as CNI-driven engines pass theirs):
    // the VM takes its interface's address and reaches the host through it.
    let net = TestNet::new();
    let mut a: Vec<String> = ["run", "--network"].iter().map(|s| s.to_string()).collect();
    a.push(format!("ns:/run/netns/{}", net.ns));
    a.extend(engines_support::ULIMITS.iter().map(|s| s.to_string()));
    a.extend(["--cgroup-parent".to_string(), p.cgroup_parent.clone()]);
    a.extend(args(&[
        "--rm",
        IMAGE,
        "sh",
        "-c",
        &format!("wget -q -O- {}", net.url()),
    ]));
    let o = p.podman(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.code(0), TestNet::BODY);
    assert_eq!(net.peers(), [net.guest_ip()]);
    net.assert_clean();
    drop(net);

    // Detached, exec (exit codes, 127 for a missing program), stop, rm.
    let name = unique("vmpod");
    let a = args(&[
        "-d",
        "--name",
        &name,
        IMAGE,
        "sh",
        "-c",
        "trap 'exit 0' TERM; echo up; while :; do sleep 1; done",
    ]);
    p.run(&a.iter().map(String::as_str).collect::<Vec<_>>())
        .ok();
    let o = p.podman(&["exec", &name, "sh", "-c", "echo in-exec; exit 6"]);
    assert_eq!(o.code(6), "in-exec\n");
    p.podman(&["exec", &name, "/nonexistent"]).code(127);
    // -it: a terminal in the guest, its size from the engine's pty.
    let mut c = p.cmd();
    c.args(["exec", "-it", &name, "sh"]);
    let (pty, mut child) = Pty::spawn(c, 21, 77);
    let at = pty.expect("# ", 0, &mut child);
    pty.type_in("tty; stty size\n");
    pty.expect("/dev/pts/", at, &mut child);
    pty.expect("21 77", at, &mut child);
    pty.type_in("exit 7\n");
    assert_eq!(
        engines_support::wait_child(&mut child, "podman exec -it"),
        7
    );
    p.podman(&["stop", "--time", "30", &name]).ok();
    // run -it: the init's terminal, held by the monitor on the host.
    let mut c = p.cmd();
    c.arg("run")
        .args(p.run_flags())
        .args(args(&["--rm", "-it", IMAGE, "sh"]));
    let (pty, mut child) = Pty::spawn(c, 19, 83);
    let at = pty.expect("# ", 0, &mut child);
    pty.type_in("tty; stty size\n");
    pty.expect("/dev/pts/", at, &mut child);
    pty.expect("19 83", at, &mut child);
    pty.type_in("exit 8\n");
    assert_eq!(engines_support::wait_child(&mut child, "podman run -it"), 8);
    assert_eq!(p.inspect(&name, "{{.State.ExitCode}}"), "0");
    p.podman(&["rm", &name]).ok();
    assert_eq!(p.all_containers(), Vec::<String>::new());
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// containerd 1.6 through `ctr` and its runc v2 shim, the annotation selecting VM mode: the
/// shim reads the monitor's pid from the pid file, reaps it as a subreaper and relays its
/// exit status, and drives `exec` and `kill` through the same CLI.
#[test]
fn containerd_runs_containers_in_qemu_vms() {
    use engines_support::{Containerd, Runtime};
    let c = Containerd::new(&Runtime::bulkhead());
    let annotations = [
        "--annotation".to_string(),
        "run.bulkhead.vm=true".to_string(),
        "--annotation".to_string(),
        "run.bulkhead.vm.backend=qemu".to_string(),
        "--annotation".to_string(),
        format!("run.bulkhead.vm.image={}", image().display()),
    ];
    let opts = |extra: &[&'static str]| -> Vec<String> {
        let mut v = annotations.to_vec();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };

    // run --rm: output, the guest's own kernel, exit code.
    let id = unique("ctrvm");
    let o = opts(&["--rm"]);
    let out = c.run(
        &strs(&o),
        &id,
        &[
            "sh",
            "-c",
            "echo hi; grep -o bulkhead.backend=qemu /proc/cmdline; exit 4",
        ],
    );
    assert_eq!(out.code(4), "hi\nbulkhead.backend=qemu\n");
    assert_eq!(c.list("task"), Vec::<String>::new());

    // Detached: the task's pid is the monitor's; exec through the shim; SIGTERM reaches the
    // guest's init (it exits, the VM powers off, the monitor ends).
    let id = unique("ctrvm-d");
    let o = opts(&["-d"]);
    c.run(
        &strs(&o),
        &id,
        &["sh", "-c", "trap 'exit 3' TERM; while :; do sleep 1; done"],
    )
    .ok();
    let pid = c.wait_task_status(&id, "RUNNING");
    assert!(alive(pid));
    let e = c.exec(&["--exec-id", "e1", &id, "sh", "-c", "echo in-exec; exit 5"]);
    assert_eq!(e.code(5), "in-exec\n");
    c.ctr(&["task", "kill", "--signal", "SIGTERM", &id]).ok();
    c.wait_task_status(&id, "STOPPED");
    c.ctr(&["task", "delete", &id]).ok();
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(pid), "the monitor {pid} outlived its task");
    c.ctr(&["container", "delete", &id]).ok();
    assert_eq!(c.list("container"), Vec::<String>::new());
}

/// The same path on bulkhead's own VMM. On this machine's emulating KVM a run takes
/// ~30 s, so one run covers it: output, exit code, the engine's network carried in (the
/// VMM makes the tap, started in the namespace), cleanup.
#[test]
fn builtin_vmm_runs_a_container() {
    let rt = Rt::new();
    fs::create_dir_all(&rt.root).unwrap();
    let net = TestNet::new();
    let mut b = vm_bundle(
        "vmbuiltin",
        &format!(
            "echo \"in $(uname -s) on $(cat /proc/cmdline | grep -o 'bulkhead.backend=[a-z]*')\"; wget -q -O- {}; exit 6",
            net.url()
        ),
        "builtin",
    );
    net.join(&mut b);
    let id = unique("vmbuiltin");
    let (code, out, err) = rt.run_container(&id, &b);
    assert_eq!(code, 6, "stdout: {out}\nstderr: {err}");
    assert_eq!(
        out,
        format!("in Linux on bulkhead.backend=builtin\n{}", TestNet::BODY)
    );
    assert_eq!(
        net.peers(),
        [net.guest_ip()],
        "the request came from the container's address"
    );
    net.assert_clean();
    assert_nothing_left(&rt, &id, &[]);
}

/// An engine's network, as podman or a CNI plugin makes it: a network namespace holding one
/// end of a veth pair with an address and a default route; the other end on the host, with
/// an HTTP server answering once per connection and recording who asked. Removed on drop.
struct TestNet {
    ns: String,
    host_if: String,
    subnet: String,
    port: u16,
    peers: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl TestNet {
    const BODY: &'static str = "hello from the host\n";

    fn ip(args: &[&str]) {
        let o = output(Command::new("ip").args(args));
        ok(&o);
    }

    fn new() -> TestNet {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        // A /24 of 10.0.0.0/8 per process and test: other test binaries run at the same time.
        let subnet = format!("10.{}.{}", 100 + pid % 100, (pid / 100 % 50) * 5 + n);
        let ns = format!("bhnet-{pid}-{n}");
        let host_if = format!("bhv{}-{n}", pid % 100_000);
        let net = TestNet {
            ns,
            host_if,
            subnet,
            port: 0,
            peers: Default::default(),
        };
        Self::ip(&["netns", "add", &net.ns]);
        Self::ip(&[
            "link",
            "add",
            &net.host_if,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &net.ns,
        ]);
        Self::ip(&[
            "addr",
            "add",
            &format!("{}.1/24", net.subnet),
            "dev",
            &net.host_if,
        ]);
        Self::ip(&["link", "set", &net.host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut a = vec!["-n", net.ns.as_str()];
            a.extend_from_slice(args);
            Self::ip(&a);
        };
        inside(&["addr", "add", &net.guest_cidr(), "dev", "eth0"]);
        inside(&["link", "set", "eth0", "up"]);
        inside(&[
            "route",
            "add",
            "default",
            "via",
            &format!("{}.1", net.subnet),
        ]);
        let listener = std::net::TcpListener::bind(format!("{}.1:0", net.subnet)).unwrap();
        let mut net = net;
        net.port = listener.local_addr().unwrap().port();
        let peers = net.peers.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                use std::io::{Read, Write};
                let mut conn = conn;
                let mut req = [0u8; 1024];
                let _ = conn.read(&mut req);
                peers
                    .lock()
                    .unwrap()
                    .push(conn.peer_addr().unwrap().ip().to_string());
                let _ = write!(
                    conn,
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{}",
                    Self::BODY.len(),
                    Self::BODY
                );
            }
        });
        net
    }

    fn guest_ip(&self) -> String {
        format!("{}.2", self.subnet)
    }

    fn guest_cidr(&self) -> String {
        format!("{}/24", self.guest_ip())
    }

    fn url(&self) -> String {
        format!("http://{}.1:{}/", self.subnet, self.port)
    }

    /// Make the bundle's container join this network namespace, as an engine does.
    fn join(&self, b: &mut Bundle) {
        for n in b.config["linux"]["namespaces"].as_array_mut().unwrap() {
            if n["type"] == "network" {
                n["path"] = format!("/run/netns/{}", self.ns).into();
            }
        }
        b.save();
    }

    fn peers(&self) -> Vec<String> {
        self.peers.lock().unwrap().clone()
    }

    /// The namespace as the engine made it: no tap, no redirect on its interface.
    fn assert_clean(&self) {
        let links = ok(&output(Command::new("ip").args(["-n", &self.ns, "link"])));
        assert!(!links.contains("bhvm0"), "the tap is left:\n{links}");
        let qdiscs = ok(&output(
            Command::new("tc").args(["-n", &self.ns, "qdisc", "show", "dev", "eth0"]),
        ));
        assert!(
            !qdiscs.contains("ingress"),
            "the redirect is left:\n{qdiscs}"
        );
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // The namespace's end of the veth goes with it, and the pair with that end.
        // (The host's end is normally gone by then: quiet.)
        for args in [["netns", "del", &self.ns], ["link", "del", &self.host_if]] {
            let _ = Command::new("ip").args(args).stderr(Stdio::null()).status();
        }
    }
}

/// The network an engine gave the container, carried into a QEMU VM: the guest has the
/// namespace's address, MAC and default route, reaches the host through them, and nothing
/// is left in the namespace afterwards; namespaces the VM cannot take are refused.
#[test]
fn an_engines_network_namespace_is_carried_into_a_qemu_vm() {
    let rt = Rt::new();
    fs::create_dir_all(&rt.root).unwrap();
    let net = TestNet::new();
    let veth_mac = ok(&output(
        Command::new("ip").args(["-n", &net.ns, "-br", "link", "show", "eth0"]),
    ));
    let mut b = vm_bundle(
        "vmnet",
        &format!(
            "ip -4 -o addr show eth0 | grep -o 'inet [0-9./]*'; cat /sys/class/net/eth0/address; \
             ip route | grep default; cat /proc/sys/net/ipv4/ping_group_range; wget -q -O- {}; exit 3",
            net.url()
        ),
        "qemu",
    );
    // A network sysctl (podman sets this one): for the guest's network namespace, which the
    // container shares.
    b.config["linux"]["sysctl"] = serde_json::json!({"net.ipv4.ping_group_range": "0 0"});
    net.join(&mut b);
    let id = unique("vmnet");
    let (code, out, err) = rt.run_container(&id, &b);
    assert_eq!(code, 3, "stdout: {out}\nstderr: {err}");
    let ns_mac = veth_mac.split_whitespace().nth(2).unwrap_or_default();
    assert_eq!(
        out,
        format!(
            "inet {}\n{ns_mac}\ndefault via {}.1 dev eth0 \n0\t0\n{}",
            net.guest_cidr(),
            net.subnet,
            TestNet::BODY
        ),
        "stderr: {err}"
    );
    assert_eq!(net.peers(), [net.guest_ip()]);
    net.assert_clean();
    assert_nothing_left(&rt, &id, &[]);

    // The host's own network namespace: its interface would be taken from the host.
    let mut host = vm_bundle("vmnethost", "true", "qemu");
    for n in host.config["linux"]["namespaces"].as_array_mut().unwrap() {
        if n["type"] == "network" {
            n["path"] = format!("/proc/{}/ns/net", std::process::id()).into();
        }
    }
    host.save();
    // Refused before the VM boots, in one line, leaving nothing (in the namespace either).
    let refused = |name: &str, b: &Bundle, want: &str| {
        let id = unique(name);
        rt.track(&id);
        let e = fails(&rt.create(&id, b));
        assert!(e.contains(want), "{e}");
        assert_eq!(e.trim().lines().count(), 1, "{e}");
        assert_nothing_left(&rt, &id, &[]);
    };
    refused("vmnethost", &host, "the host's own");

    // A namespace another VM uses already (its tap is there): one VM per namespace.
    TestNet::ip(&["-n", &net.ns, "tuntap", "add", "bhvm0", "mode", "tap"]);
    refused("vmnet1", &b, "holds bhvm0 already");
    TestNet::ip(&["-n", &net.ns, "link", "del", "bhvm0"]);

    // Two interfaces with an address: which one would the VM be? Refused before it boots.
    TestNet::ip(&[
        "-n", &net.ns, "link", "add", "eth1", "type", "veth", "peer", "name", "eth2",
    ]);
    TestNet::ip(&[
        "-n",
        &net.ns,
        "addr",
        "add",
        "192.168.77.1/24",
        "dev",
        "eth1",
    ]);
    refused(
        "vmnet2",
        &b,
        "2 interfaces with an IPv4 address (eth0, eth1)",
    );
    net.assert_clean();
}

#[test]
fn sandbox_vm_runs_the_command_on_its_own_kernel() {
    let dir = std::env::temp_dir().join(unique("bh-sbvm"));
    let rootfs = dir.join("rootfs");
    common::busybox_rootfs(&rootfs);
    // The static bulkhead inside, to inspect the sandbox from within.
    let agent = static_bulkhead();
    fs::copy(&agent, rootfs.join("bin/bulkhead")).unwrap();
    let sandbox = |args: &[&str]| {
        output(
            Command::new(bin())
                .args(["sandbox", "--vm", "--vm-backend", "qemu", "--vm-image"])
                .arg(image())
                .args(args),
        )
    };
    let r = rootfs.to_str().unwrap();
    let o = sandbox(&[
        "--rootfs",
        r,
        "--memory",
        "200m",
        "--",
        "/bin/bulkhead",
        "inspect",
        "--self",
        "--format",
        "json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(report["vm"]["in_force"], true, "{report}");
    assert_eq!(report["vm"]["status"], "own kernel");
    // The container recipe holds inside the guest too.
    assert_eq!(report["seccomp"]["in_force"], true, "{report}");
    assert_eq!(report["no_new_privs"]["in_force"], true);
    assert_eq!(report["root"]["in_force"], true);
    // Exit codes as `sandbox`: the command's own; 124 on timeout; 125 for setup.
    let o = sandbox(&["--rootfs", r, "--", "sh", "-c", "exit 4"]);
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    let o = sandbox(&["--rootfs", r, "--timeout", "1", "--", "sleep", "100"]);
    assert_eq!(o.status.code(), Some(124), "{o:?}");
    // The builtin VMM cannot share the host's root: the way out, before anything exists.
    let o = output(
        Command::new(bin())
            .args(["sandbox", "--vm", "--vm-backend", "builtin", "--", "true"])
            .stdin(Stdio::null()),
    );
    assert_eq!(o.status.code(), Some(125), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("needs the qemu backend") && err.contains("--rootfs DIR"),
        "{err}"
    );
    fs::remove_dir_all(&dir).unwrap();
}

/// `sandbox --vm` with the host's root, as `sandbox` has it: `--vm-backend qemu` (here and in
/// the next test) because that is the backend with 9p.
fn sandbox_vm(args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(["sandbox", "--vm", "--vm-backend", "qemu", "--vm-image"])
        .arg(image())
        .args(args)
        .stdin(Stdio::null())
        // The sandbox starts in the caller's directory; a checkout under /tmp would add an
        // empty directory to its private /tmp.
        .current_dir("/");
    c
}

/// Nothing of sandbox `id` is left: state directory, cgroups, its QEMU.
fn assert_sandbox_gone(id: &str) {
    assert!(
        !Path::new("/run/bulkhead").join(id).exists(),
        "state directory of {id} left"
    );
    assert_eq!(
        cgroup_dirs_named(id),
        Vec::<PathBuf>::new(),
        "cgroups of {id} left"
    );
}

#[test]
fn sandbox_vm_sees_the_host_root_read_only_and_shares_binds() {
    // A marker outside /tmp (which the sandbox replaces with its own), in the part of the
    // host's root the VM sees; not under the checkout, which may itself be under /tmp.
    let host = Path::new("/var/tmp").join(unique("bulkhead-sbvm-host"));
    fs::create_dir_all(&host).unwrap();
    let marker = host.join("marker");
    let content = format!("marker {}\n", unique("content"));
    fs::write(&marker, &content).unwrap();
    let m = marker.to_str().unwrap();
    // The host's file, read through the VM; writes refused; a private /tmp; exit codes.
    let id = unique("sbvm-root");
    let o = output(&mut sandbox_vm(&[
        "--name",
        &id,
        "--",
        "sh",
        "-c",
        &format!(
            "cat {m}; echo changed > {m} || echo write-refused; echo x > /etc/hostname-x || echo create-refused; \
             echo tmp=$(ls -A /tmp | wc -l); echo lo=$(cat /sys/class/net/lo/flags); cat /etc/hostname; exit 4"
        ),
    ]));
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "stdout: {out}\nstderr: {err}");
    let hostname = fs::read_to_string("/etc/hostname").unwrap();
    assert_eq!(
        out,
        // lo up (flags 0x9: up, loopback), as `sandbox` has it.
        format!("{content}write-refused\ncreate-refused\ntmp=0\nlo=0x9\n{hostname}"),
        "stderr: {err}"
    );
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(
        fs::read_to_string(&marker).unwrap(),
        content,
        "the host's file changed"
    );
    assert!(!Path::new("/etc/hostname-x").exists());
    assert_sandbox_gone(&id);

    // --bind: a writable directory (what the VM writes reaches the host, as the jail's uid)
    // and a read-only one.
    let rw = std::env::temp_dir().join(unique("sbvm-rw"));
    let ro = std::env::temp_dir().join(unique("sbvm-ro"));
    fs::create_dir_all(&rw).unwrap();
    fs::create_dir_all(&ro).unwrap();
    fs::write(ro.join("f"), "read-only data\n").unwrap();
    let id = unique("sbvm-bind");
    let o = output(&mut sandbox_vm(&[
        "--name",
        &id,
        "--bind",
        &format!("{}:/mnt", rw.display()),
        "--bind",
        &format!("{}:/srv:ro", ro.display()),
        "--",
        "sh",
        "-c",
        "cat /srv/f; echo new > /mnt/out && echo wrote; echo x > /srv/f || echo ro-refused; exit 7",
    ]));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(7), "{o:?}");
    assert_eq!(out, "read-only data\nwrote\nro-refused\n", "{o:?}");
    assert_eq!(fs::read_to_string(rw.join("out")).unwrap(), "new\n");
    let owner = std::os::unix::fs::MetadataExt::uid(&fs::metadata(rw.join("out")).unwrap());
    assert_eq!(
        owner, 77777,
        "files the guest makes belong to QEMU's jail uid"
    );
    assert_eq!(
        fs::read_to_string(ro.join("f")).unwrap(),
        "read-only data\n"
    );
    assert_sandbox_gone(&id);
    for d in [&host, &rw, &ro] {
        fs::remove_dir_all(d).unwrap();
    }
}

/// While a `sandbox --vm` with the host's root runs: QEMU jailed, with the one capability it
/// serves the files with, the host's root as a read-only view without /tmp; SIGTERM to
/// bulkhead ends it with 143 and leaves nothing.
#[test]
fn sandbox_vm_host_root_qemu_is_jailed_and_a_signal_ends_it() {
    let id = unique("sbvm-sig");
    let mut child = sandbox_vm(&["--name", &id, "--", "sh", "-c", "echo ready; sleep 60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "ready\n");
    let state: serde_json::Value =
        serde_json::from_str(&ok(&output(Command::new(bin()).args(["state", &id])))).unwrap();
    let monitor = state["pid"].as_i64().unwrap();
    let hv = children(monitor);
    assert_eq!(hv.len(), 1, "{hv:?}");
    // CAP_DAC_OVERRIDE, and nothing else.
    assert_jailed(hv[0], "0000000000000002");
    let root = PathBuf::from(format!("/proc/{}/root", hv[0]));
    assert!(root.join(".host-root/etc/hostname").is_file());
    assert!(
        !root.join("etc").exists(),
        "the host's root outside the view"
    );
    for hidden in ["tmp", "run", "proc", "sys", "dev"] {
        let n = fs::read_dir(root.join(".host-root").join(hidden))
            .unwrap()
            .count();
        assert_eq!(n, 0, "/{hidden} of the host in QEMU's view");
    }
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(143), "{st}");
    assert!(gone(monitor) && gone(hv[0]), "the VM outlived the sandbox");
    assert_sandbox_gone(&id);
}
