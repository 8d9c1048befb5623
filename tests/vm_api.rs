//! The control socket of a running VM (docs/vm-api.md), end to end: the `bulkhead vm
//! status|pause|resume|shutdown|snapshot` clients and the raw JSON-lines protocol against a
//! jailed VMM running the counting test guest; a guest that ignores Ctrl+Alt+Del; bad input
//! to the clients and to `--api-socket`; an unjailed VMM's snapshot and restore.

mod vm_common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use vm_common::{
    api_op, count_vm, counts, guest, one_error_line, restore, run, snapshot, spawn, wait_file,
    TempDir,
};

const T: Duration = Duration::from_secs(60);

/// The highest count in a console file.
fn last_count(console: &Path) -> u64 {
    counts(&std::fs::read_to_string(console).unwrap())
        .last()
        .map_or(0, |c| c.0)
}

#[test]
fn status_pause_resume_and_shutdown_of_a_running_vm() {
    let dir = TempDir::new("api-run");
    let (socket, console) = (dir.path("api.sock"), dir.path("console.log"));
    let disk = dir.path("disk.img");
    std::fs::write(&disk, vec![0u8; 64 << 10]).unwrap();
    let vm = count_vm(
        &socket,
        &console,
        &["--rng", "--disk", disk.to_str().unwrap()],
    );
    wait_file(&console, "count 50 ", T).expect("the guest never counted to 50");

    let s = api_op("status", &socket);
    assert_eq!((s["v"].as_u64(), s["ok"].as_bool()), (Some(1), Some(true)));
    assert_eq!(s["state"], "running", "{s}");
    assert_eq!(s["restored"], false);
    assert_eq!(s["memory_mib"], 128);
    assert_eq!(s["vcpus"].as_array().unwrap().len(), 1);
    assert!(s["vcpus"][0]["exits"].as_u64().unwrap() > 0, "{s}");
    assert!(s["serial"]["tx_bytes"].as_u64().unwrap() > 0, "{s}");
    assert!(s["uptime_ms"].as_f64().unwrap() > 0.0);
    let names: Vec<&str> = s["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["virtio-blk0", "virtio-rng"], "{s}");

    assert_eq!(api_op("pause", &socket)["state"], "paused");
    let p1 = api_op("status", &socket);
    assert_eq!(p1["state"], "paused");
    let printed = last_count(&console);
    let p2 = api_op("status", &socket);
    // Paused: no vCPU exit, no serial byte between two status requests.
    assert_eq!(p1["vcpus"][0]["exits"], p2["vcpus"][0]["exits"]);
    assert_eq!(p1["serial"]["tx_bytes"], p2["serial"]["tx_bytes"]);
    // Pausing a paused VM is not an error.
    assert_eq!(api_op("pause", &socket)["state"], "paused");

    assert_eq!(api_op("resume", &socket)["state"], "running");
    let next = printed + 20;
    wait_file(&console, &format!("count {next} "), T).expect("the count did not go on");

    // The protocol itself: several requests on one connection, answered in order.
    let mut c = UnixStream::connect(&socket).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    c.write_all(
        b"{\"v\":1,\"op\":\"status\"}\n{\"v\":1,\"op\":\"reboot\"}\n{\"v\":3,\"op\":\"status\"}\n\
          not json\n{\"op\":\"status\"}\n{\"v\":1,\"op\":\"snapshot\"}\n",
    )
    .unwrap();
    let mut lines = BufReader::new(c.try_clone().unwrap()).lines();
    let mut answer =
        || -> serde_json::Value { serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap() };
    let first = answer();
    assert_eq!(
        (&first["state"], &first["v"]),
        (&"running".into(), &1.into())
    );
    let errors = [
        "bad request",
        "unsupported API version 3 (this VMM speaks 1 to 2)",
        "not a JSON request",
        "no \"v\"",
        "exactly two descriptors",
    ];
    for e in errors {
        let a = answer();
        assert_eq!(a["ok"], false, "{a}");
        assert!(a["error"].as_str().unwrap().contains(e), "{a}");
    }
    // Version 2 (a snapshot's "diff"): answered in the request's version; "diff" in a
    // version-1 request is refused, not ignored.
    c.write_all(b"{\"v\":2,\"op\":\"status\"}\n{\"v\":1,\"op\":\"snapshot\",\"diff\":true}\n")
        .unwrap();
    let a = answer();
    assert_eq!((&a["ok"], &a["v"]), (&true.into(), &2.into()), "{a}");
    let a = answer();
    assert_eq!(a["ok"], false, "{a}");
    assert!(
        a["error"].as_str().unwrap().contains("needs API version 2"),
        "{a}"
    );
    drop(c);

    // Ctrl+Alt+Del: the guest reads the key codes and resets.
    let s = api_op("shutdown", &socket);
    assert_eq!(s["action"], "ctrl-alt-del");
    let out = vm.finish(T);
    assert!(out.status.success(), "{out}");
    let text = std::fs::read_to_string(&console).unwrap();
    assert!(
        text.contains("i8042: key codes 0x14 0x11 0xe0 0x71: ctrl-alt-del, shutting down"),
        "{text}"
    );
    assert!(!socket.exists(), "the API socket file outlived the VM");
}

#[test]
fn a_guest_that_ignores_ctrl_alt_del_is_stopped_after_the_timeout() {
    let dir = TempDir::new("api-stop");
    let socket = dir.path("api.sock");
    let uds = dir.path("v.sock");
    // The default test guest waits for a host vsock connection and never reads the i8042.
    let mut vm = spawn(&[
        "vm",
        "run",
        "--kernel",
        guest().elf.to_str().unwrap(),
        "--vsock",
        &format!("3,uds={}", uds.display()),
        "--api-socket",
        socket.to_str().unwrap(),
    ]);
    vm.wait_for("vsock: listening on port 1234", T)
        .expect("the guest never reached its vsock listen step");
    let out = run(
        &[
            "vm",
            "shutdown",
            "--api-socket",
            socket.to_str().unwrap(),
            "--timeout",
            "0.5",
        ],
        T,
    );
    assert!(out.status.success(), "{out}");
    let out = vm.finish(T);
    assert!(out.status.success(), "{out}");
    assert!(
        out.stderr
            .contains("guest shut down (stopped through the API socket)"),
        "{out}"
    );
    assert!(!socket.exists() && !uds.exists());
}

#[test]
fn bad_api_input_fails_with_one_line_and_leaves_nothing() {
    let dir = TempDir::new("api-bad");
    let missing = dir.path("missing.sock");
    let out = run(
        &["vm", "status", "--api-socket", missing.to_str().unwrap()],
        T,
    );
    one_error_line(&out, "missing.sock");

    // An --api-socket in a directory that does not exist: refused before anything starts.
    let console = dir.path("console.log");
    let out = count_vm(
        Path::new("/nonexistent-bulkhead-dir/api.sock"),
        &console,
        &[],
    )
    .finish(T);
    one_error_line(
        &out,
        "api_socket: directory /nonexistent-bulkhead-dir does not exist",
    );
    assert!(!console.exists());
    // A file that is not a socket is never replaced.
    let file = dir.path("not-a-socket");
    std::fs::write(&file, b"keep me").unwrap();
    let out = count_vm(&file, &console, &[]).finish(T);
    one_error_line(&out, "exists and is not a socket");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    assert!(!console.exists());

    // A restore that could never run: paused, and no socket to resume it through.
    let out = run(&["vm", "restore", "--snapshot", "s", "--mem", "m"], T);
    one_error_line(&out, "--resume or --api-socket is required");

    // A snapshot into a directory that does not exist: refused by the client, the VM goes on.
    let socket = dir.path("api.sock");
    let vm = count_vm(&socket, &console, &[]);
    wait_file(&console, "count 5 ", T).expect("the guest never counted");
    let out = run(
        &[
            "vm",
            "snapshot",
            "--api-socket",
            socket.to_str().unwrap(),
            "--snapshot",
            dir.path("s").to_str().unwrap(),
            "--mem",
            "/nonexistent-bulkhead-dir/m",
        ],
        T,
    );
    one_error_line(&out, "/nonexistent-bulkhead-dir/m");
    let leftovers: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".s") || n == "s")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(api_op("status", &socket)["state"], "running");
    api_op("shutdown", &socket);
    assert!(vm.finish(T).status.success());
}

#[test]
fn an_unjailed_vmm_snapshots_and_restores_too() {
    let dir = TempDir::new("api-nojail");
    let (socket, console) = (dir.path("api.sock"), dir.path("console.log"));
    let (state, mem) = (dir.path("vm.state"), dir.path("vm.mem"));
    let vm = count_vm(&socket, &console, &["--no-jail", "--memory", "48"]);
    wait_file(&console, "count 30 ", T).expect("the guest never counted");
    snapshot(&socket, &state, &mem);
    api_op("shutdown", &socket);
    assert!(vm.finish(T).status.success());
    assert!(
        !socket.exists(),
        "the unjailed VMM left its API socket file"
    );
    let stopped_at = last_count(&console);

    let console2 = dir.path("console2.log");
    let vm = restore(
        &state,
        &mem,
        &[
            "--no-jail",
            "--resume",
            "--api-socket",
            socket.to_str().unwrap(),
            "--console",
            console2.to_str().unwrap(),
        ],
    );
    let next = stopped_at + 10;
    wait_file(&console2, &format!("count {next} "), T).expect("the restored guest stalled");
    api_op("shutdown", &socket);
    let out = vm.finish(T);
    assert!(out.status.success(), "{out}");
    assert!(out.stderr.contains("--no-jail"), "{out}");
    assert!(!socket.exists());
}
