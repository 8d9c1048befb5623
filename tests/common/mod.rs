//! Shared fixtures for the end-to-end tests: a busybox bundle built from
//! Debian's busybox-static, unique container IDs, and guards that delete the
//! container and its files even when a test fails.

#![allow(dead_code)]

pub mod pty;
pub mod user;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

pub const BUSYBOX: &str = "/bin/busybox";

/// The bulkhead under test: this build's, or $BULKHEAD_BIN (test.sh runs the container tests
/// once more against the static release binary users install).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("BULKHEAD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_bulkhead").into())
    })
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn unique(name: &str) -> String {
    format!(
        "{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Build a busybox root filesystem at `dir`.
pub fn busybox_rootfs(dir: &Path) {
    assert!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: install Debian's busybox-static (the README's setup command does)"
    );
    for d in [
        "bin",
        "proc",
        "sys",
        "dev",
        "etc",
        "tmp",
        "root",
        "home/user",
    ] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::copy(BUSYBOX, dir.join("bin/busybox")).unwrap();
    let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
    for name in String::from_utf8_lossy(&list.stdout).lines() {
        if name != "busybox" {
            let _ = symlink("busybox", dir.join("bin").join(name));
        }
    }
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
    )
    .unwrap();
    fs::write(dir.join("etc/group"), "root:x:0:\nuser:x:1000:\n").unwrap();
}

/// A bundle directory with a busybox rootfs and a config.json; removed on drop.
pub struct Bundle {
    pub dir: PathBuf,
    pub config: serde_json::Value,
}

impl Bundle {
    /// The default spec of `bulkhead spec`, non-interactive, running `args`.
    pub fn new(name: &str, args: &[&str]) -> Bundle {
        let dir = std::env::temp_dir().join(unique(&format!("bh-bundle-{name}")));
        fs::create_dir_all(&dir).unwrap();
        busybox_rootfs(&dir.join("rootfs"));
        let out = Command::new(bin())
            .args(["spec", "--bundle"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut config: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("config.json")).unwrap()).unwrap();
        config["process"]["terminal"] = false.into();
        config["process"]["args"] = args
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into();
        let b = Bundle { dir, config };
        b.save();
        b
    }

    pub fn save(&self) {
        fs::write(
            self.dir.join("config.json"),
            serde_json::to_string_pretty(&self.config).unwrap(),
        )
        .unwrap();
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// A host directory shared into the container at `dest` (read-write bind).
    pub fn share(&mut self, dest: &str) -> PathBuf {
        let host = self.dir.join(format!("share{}", dest.replace('/', "_")));
        fs::create_dir_all(&host).unwrap();
        let m = serde_json::json!({"destination": dest, "type": "bind", "source": host, "options": ["rbind", "rw"]});
        self.config["mounts"].as_array_mut().unwrap().push(m);
        self.save();
        host
    }

    /// Give the process capabilities beyond the spec's three (bounding, effective,
    /// permitted), for tests whose workload needs them (mknod, chroot...). The default
    /// seccomp profile `spec` wrote is derived again for the new bounding set, as `spec`
    /// would have written it (its capability-gated syscalls follow the set).
    pub fn add_caps(&mut self, caps: &[&str]) {
        let names = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect()
        };
        let old = names(&self.config["process"]["capabilities"]["bounding"]);
        let default_profile =
            serde_json::to_value(seccomp::default_profile::profile(&old)).unwrap();
        let c = &mut self.config["process"]["capabilities"];
        for set in ["bounding", "effective", "permitted"] {
            let list = c[set].as_array_mut().unwrap();
            for cap in caps {
                if !list.iter().any(|x| x == cap) {
                    list.push((*cap).into());
                }
            }
        }
        let new = names(&self.config["process"]["capabilities"]["bounding"]);
        if self.config["linux"]["seccomp"] == default_profile {
            self.config["linux"]["seccomp"] =
                serde_json::to_value(seccomp::default_profile::profile(&new)).unwrap();
        }
        self.save();
    }

    pub fn add_namespace(&mut self, t: &str, path: Option<&str>) {
        let ns = self.config["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != t);
        match path {
            Some(p) => ns.push(serde_json::json!({"type": t, "path": p})),
            None => ns.push(serde_json::json!({"type": t})),
        }
        self.save();
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        // Bind mounts made by tests on the host would make removal fail: none are left
        // by the runtime (it works in the container's mount namespace).
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A state root private to one test, and the containers created in it, all
/// force-deleted on drop.
pub struct Rt {
    pub root: PathBuf,
    pub ids: std::sync::Mutex<Vec<String>>,
}

impl Rt {
    pub fn new() -> Rt {
        let root = std::env::temp_dir().join(unique("bh-root"));
        Rt {
            root,
            ids: Default::default(),
        }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.arg("--root").arg(&self.root);
        c
    }

    /// Run `bulkhead --root ROOT args...` and collect its output.
    pub fn run(&self, args: &[&str]) -> Output {
        output(self.cmd().args(args))
    }

    pub fn track(&self, id: &str) {
        self.ids.lock().unwrap().push(id.to_string());
    }

    /// `bulkhead --root ROOT create --bundle DIR ID`, not started yet; the ID is tracked.
    pub fn create_cmd(&self, id: &str, b: &Bundle) -> Command {
        self.track(id);
        let mut c = self.cmd();
        c.args(["create", "--bundle"]).arg(&b.dir).arg(id);
        c
    }

    pub fn create(&self, id: &str, b: &Bundle) -> Output {
        output(&mut self.create_cmd(id, b))
    }

    /// `create --pid-file PID_FILE`.
    pub fn create_with_pid_file(&self, id: &str, b: &Bundle, pid_file: &Path) -> Output {
        self.track(id);
        output(
            self.cmd()
                .args(["create", "--bundle"])
                .arg(&b.dir)
                .arg("--pid-file")
                .arg(pid_file)
                .arg(id),
        )
    }

    /// Foreground run: (exit code, stdout, stderr).
    pub fn run_container(&self, id: &str, b: &Bundle) -> (i32, String, String) {
        self.track(id);
        let out = output(self.cmd().args(["run", "--bundle"]).arg(&b.dir).arg(id));
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn state(&self, id: &str) -> serde_json::Value {
        let out = self.run(&["state", id]);
        assert!(
            out.status.success(),
            "state {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"].as_str().unwrap().to_string()
    }

    /// Wait until the container's status is `want` (bounded; tests never time things).
    pub fn wait_status(&self, id: &str, want: &str) {
        for _ in 0..500 {
            if self.status(id) == want {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!(
            "container {id} never became {want} (is {})",
            self.status(id)
        );
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        for id in self.ids.lock().unwrap().clone().iter() {
            let _ = self.run(&["delete", "--force", id]);
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Run a command with stdout/stderr in files, not pipes: a created
/// container's init inherits the runtime's stdio and keeps it open until it
/// exits, so reading a pipe to EOF would wait for the container.
pub fn output(cmd: &mut Command) -> Output {
    let dir = std::env::temp_dir();
    let (o, e) = (dir.join(unique("bh-out")), dir.join(unique("bh-err")));
    let status = cmd
        .stdin(Stdio::null())
        .stdout(fs::File::create(&o).unwrap())
        .stderr(fs::File::create(&e).unwrap())
        .status()
        .unwrap();
    let out = Output {
        status,
        stdout: fs::read(&o).unwrap(),
        stderr: fs::read(&e).unwrap(),
    };
    let _ = fs::remove_file(o);
    let _ = fs::remove_file(e);
    out
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn fails(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "command succeeded but should have failed:\nstdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Is `pid` alive (and not a zombie)?
pub fn alive(pid: i64) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let rest = &s[s.rfind(')').unwrap() + 2..];
            !rest.starts_with('Z') && !rest.starts_with('X')
        }
        Err(_) => false,
    }
}

/// Live processes other than this one, each with its command line's arguments (a process
/// whose exec has not set its command line up yet has none).
pub fn live_cmdlines() -> Vec<(i64, Vec<String>)> {
    let me = std::process::id() as i64;
    let mut v = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i64>() else {
            continue;
        };
        if pid == me || !alive(pid) {
            continue;
        }
        if let Ok(c) = fs::read(e.path().join("cmdline")) {
            let args = String::from_utf8_lossy(&c)
                .split_terminator('\0')
                .map(str::to_owned)
                .collect();
            v.push((pid, args));
        }
    }
    v
}

/// The container's cgroup directories that exist on the host (by scanning
/// every mounted hierarchy for a directory named like the container).
pub fn cgroup_dirs_named(name: &str) -> Vec<PathBuf> {
    cgroup_dirs_where(|n| n == name)
}

/// Cgroup directories, in every mounted hierarchy, whose name passes `pick`.
pub fn cgroup_dirs_where(pick: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in info.lines() {
        if !line.contains(" - cgroup") {
            continue;
        }
        let mp = line.split(' ').nth(4).unwrap();
        let mut stack = vec![PathBuf::from(mp)];
        while let Some(d) = stack.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    if pick(&e.file_name().to_string_lossy()) {
                        found.push(e.path());
                    }
                    stack.push(e.path());
                }
            }
        }
    }
    found
}

/// `top` and every directory below it, deepest first (an order rmdir can follow).
pub fn subdirs_deepest_first(top: &Path) -> Vec<PathBuf> {
    let mut all = vec![top.to_path_buf()];
    let mut i = 0;
    while i < all.len() {
        if let Ok(rd) = fs::read_dir(&all[i]) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    all.push(e.path());
                }
            }
        }
        i += 1;
    }
    all.reverse();
    all
}

/// Run `sh -c script` in a fresh container (after `setup` edits the bundle);
/// returns (exit code, stdout, stderr).
pub fn sh(name: &str, script: &str, setup: impl FnOnce(&mut Bundle)) -> (i32, String, String) {
    let rt = Rt::new();
    let mut b = Bundle::new(name, &["sh", "-c", script]);
    setup(&mut b);
    b.save();
    rt.run_container(&unique(name), &b)
}

/// Like [`sh`], asserting exit 0 and returning stdout.
pub fn sh_ok(name: &str, script: &str, setup: impl FnOnce(&mut Bundle)) -> String {
    let (code, out, err) = sh(name, script, setup);
    assert_eq!(
        code, 0,
        "script failed: {script}\nstdout: {out}\nstderr: {err}"
    );
    out
}
