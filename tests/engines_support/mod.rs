//! Fixtures for the end-to-end tests with real engines (tests/engines.rs):
//! a private podman store, a private containerd, the busybox image they run,
//! a pseudo-terminal to drive `-it`/`-t`, and cleanup that leaves no
//! container, process, mount, cgroup or temporary directory behind, even when
//! a test fails half-way.
//!
//! Every engine command runs under `timeout 120` (coreutils), so a hang fails
//! the test instead of blocking CI.

#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::user::User;
use crate::common::{busybox_rootfs, subdirs_deepest_first, unique};

/// Seconds every engine command may take before `timeout` kills it.
pub const TIMEOUT_SECS: &str = "120";
/// How long a test waits for something it polls (a state, a datagram, pty output).
pub const WAIT: Duration = Duration::from_secs(60);

pub const RUNC: &str = "/usr/sbin/runc";
/// The image every test runs: Debian's busybox-static, imported under this name.
pub const IMAGE: &str = "localhost/bulkhead-test-busybox:latest";
/// The limits podman must set here: hard rlimits cannot be raised on these
/// machines and podman's defaults are above them (see ../shared/ENVIRONMENT.md).
pub const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

const DEPS: &str =
    "scripts/deps.sh installs it (podman, containerd and runc are in its package list)";

// ---------------------------------------------------------------------------
// The runtime under test
// ---------------------------------------------------------------------------

/// The OCI runtime the engines are told to use.
#[derive(Clone, Debug)]
pub struct Runtime {
    /// Its name in the private containers.conf `[engine.runtimes]` table.
    pub name: &'static str,
    /// Absolute path of the binary.
    pub path: String,
}

impl Runtime {
    pub fn bulkhead() -> Runtime {
        Runtime {
            name: "bulkhead",
            path: crate::common::bin().to_string(),
        }
    }

    /// runc, as a check that the test itself is right.
    pub fn runc() -> Runtime {
        assert!(
            Path::new(RUNC).exists(),
            "{RUNC} is missing: the engine tests run every case with runc as well, as a check \
             of the test itself; {DEPS}"
        );
        Runtime {
            name: "runc",
            path: RUNC.to_string(),
        }
    }

    /// `RUNTIME state ID` succeeds: the runtime still knows the container
    /// (in its default state root, which is the one podman uses).
    pub fn knows(&self, id: &str) -> bool {
        self.knows_in(None, id)
    }

    /// `RUNTIME [--root ROOT] state ID` succeeds.
    pub fn knows_in(&self, root: Option<&Path>, id: &str) -> bool {
        let mut c = Command::new(&self.path);
        if let Some(r) = root {
            c.arg("--root").arg(r);
        }
        c.args(["state", id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

// ---------------------------------------------------------------------------
// Commands and their output
// ---------------------------------------------------------------------------

/// The exit code and output of a finished command.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub what: String,
}

impl Out {
    /// Assert exit 0 and return stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "command failed:\n{self}");
        &self.stdout
    }

    /// Assert the exit code and return stdout.
    #[track_caller]
    pub fn code(&self, want: i32) -> &str {
        assert_eq!(self.code, want, "wrong exit code:\n{self}");
        &self.stdout
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hint = if self.code == 124 {
            " (124: killed by `timeout`, the command hung)"
        } else {
            ""
        };
        write!(
            f,
            "$ {}\nexit code: {}{hint}\nstdout:\n{}\nstderr:\n{}",
            self.what, self.code, self.stdout, self.stderr
        )
    }
}

/// Fail clearly when an engine program is not installed.
pub fn require(program: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{program}` is not installed (not found in PATH): the engine tests need Debian's podman \
         and containerd; {DEPS}"
    );
}

/// `timeout 120 PROGRAM`.
pub fn timed(program: &str) -> Command {
    let mut c = Command::new("timeout");
    c.arg(TIMEOUT_SECS).arg(program);
    c
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run to completion, stdin from `stdin` (or /dev/null), stdout/stderr in
/// files, not pipes: a container may inherit them and keep a pipe open.
pub fn run_cmd(cmd: &mut Command, stdin: Option<&Path>) -> Out {
    let dir = std::env::temp_dir();
    let (o, e) = (
        dir.join(unique("bh-eng-out")),
        dir.join(unique("bh-eng-err")),
    );
    let input = match stdin {
        Some(p) => Stdio::from(fs::File::open(p).unwrap()),
        None => Stdio::null(),
    };
    let status = cmd
        .stdin(input)
        .stdout(fs::File::create(&o).unwrap())
        .stderr(fs::File::create(&e).unwrap())
        .status()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", describe(cmd)));
    let out = Out {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&fs::read(&o).unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&fs::read(&e).unwrap()).into_owned(),
        what: describe(cmd),
    };
    let _ = fs::remove_file(o);
    let _ = fs::remove_file(e);
    out
}

/// Poll `f` until it returns Some, for at most [`WAIT`].
#[track_caller]
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait for a child with a deadline; kill it and fail past the deadline.
#[track_caller]
pub fn wait_child(child: &mut Child, what: &str) -> i32 {
    let end = Instant::now() + WAIT + WAIT;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code().unwrap_or(-1);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A host process that is alive and not a zombie.
pub fn alive(pid: i64) -> bool {
    crate::common::alive(pid)
}

/// The host directory of `pid`'s cgroup in the v1 hierarchy `controller`.
pub fn v1_cgroup_dir(pid: i64, controller: &str) -> PathBuf {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        if ctrls.split(',').any(|c| c == controller) {
            return Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(path.trim_start_matches('/'));
        }
    }
    panic!("pid {pid} has no {controller} cgroup:\n{text}");
}

// ---------------------------------------------------------------------------
// Cleanup of what the engines leave on the host
// ---------------------------------------------------------------------------

/// Mount points of every cgroup hierarchy (v1 and v2).
fn cgroup_mounts() -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter(|l| l.contains(" - cgroup ") || l.contains(" - cgroup2 "))
        .map(|l| PathBuf::from(l.split(' ').nth(4).unwrap()))
        .collect()
}

/// Remove the cgroup `/NAME` (a parent the test made the engine create, with
/// a unique name) from every hierarchy: thaw it, kill what is still in it,
/// then remove the directories, deepest first.
pub fn remove_cgroup_tree(name: &str) {
    let tops: Vec<PathBuf> = cgroup_mounts()
        .into_iter()
        .map(|m| m.join(name))
        .filter(|p| p.is_dir())
        .collect();
    for top in &tops {
        for d in subdirs_deepest_first(top) {
            let _ = fs::write(d.join("freezer.state"), "THAWED");
            let _ = fs::write(d.join("cgroup.freeze"), "0");
        }
    }
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let mut left = Vec::new();
        for top in &tops {
            for d in subdirs_deepest_first(top) {
                if let Ok(procs) = fs::read_to_string(d.join("cgroup.procs")) {
                    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
                if fs::remove_dir(&d).is_err() && d.exists() {
                    left.push(d);
                }
            }
        }
        if left.is_empty() {
            return;
        }
        if Instant::now() > end {
            eprintln!("warning: cgroups left behind: {left:?}");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Processes whose command line mentions `needle` (a unique temporary
/// directory of one test: conmon, containerd, its shims) as a whole path
/// component: `/tmp/x-15` must not match another test's `/tmp/x-153/...`.
pub fn procs_mentioning(needle: &str) -> Vec<i32> {
    crate::common::live_cmdlines()
        .into_iter()
        .filter(|(_, args)| {
            let s = args.join(" ");
            s.match_indices(needle).any(|(i, _)| {
                matches!(s[i + needle.len()..].chars().next(), None | Some('/' | ' '))
            })
        })
        .map(|(pid, _)| pid as i32)
        .collect()
}

/// Give the processes that mention `needle` `grace` to exit on their own,
/// then kill them (by pid) and return the command lines of those killed.
pub fn reap_procs_mentioning(needle: &str, grace: Duration) -> Vec<String> {
    let end = Instant::now() + grace;
    while !procs_mentioning(needle).is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut killed = Vec::new();
    for pid in procs_mentioning(needle) {
        let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        unsafe { libc::kill(pid, libc::SIGKILL) };
        killed.push(format!("{pid}: {cmdline}"));
    }
    killed
}

/// Mount points at or under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let prefix = dir.to_string_lossy().into_owned();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut v: Vec<PathBuf> = info
        .lines()
        .map(|l| l.split(' ').nth(4).unwrap().to_string())
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .map(PathBuf::from)
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    v
}

/// Detach every mount under `dir`, then remove it.
pub fn remove_tree(dir: &Path) {
    for m in mounts_under(dir) {
        let c = std::ffi::CString::new(m.to_string_lossy().as_bytes()).unwrap();
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    let _ = fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------
// The image
// ---------------------------------------------------------------------------

/// A busybox root filesystem (tests/common::busybox_rootfs) as a tar.
pub fn rootfs_tar(work: &Path) -> PathBuf {
    let rootfs = work.join("rootfs");
    busybox_rootfs(&rootfs);
    let tar = work.join("rootfs.tar");
    run_cmd(
        Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .args(["--numeric-owner", "-cf"])
            .arg(&tar)
            .arg("."),
        None,
    )
    .ok();
    let _ = fs::remove_dir_all(&rootfs);
    tar
}

fn sha256(path: &Path) -> String {
    let out = run_cmd(Command::new("sha256sum").arg(path), None);
    out.ok().split_whitespace().next().unwrap().to_string()
}

/// An OCI image layout archive of the busybox root filesystem, named
/// [`IMAGE`], for `ctr image import` (no registry is reachable here).
pub fn oci_archive(work: &Path) -> PathBuf {
    let layer = rootfs_tar(work);
    let dir = work.join("oci");
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let blob = |path: &Path| -> (String, u64) {
        let (digest, size) = (sha256(path), fs::metadata(path).unwrap().len());
        fs::rename(path, blobs.join(&digest)).unwrap();
        (format!("sha256:{digest}"), size)
    };
    let (layer_digest, layer_size) = blob(&layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let cfg_path = work.join("config.json");
    fs::write(&cfg_path, config.to_string()).unwrap();
    let (cfg_digest, cfg_size) = blob(&cfg_path);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": cfg_digest, "size": cfg_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer_size}],
    });
    let man_path = work.join("manifest.json");
    fs::write(&man_path, manifest.to_string()).unwrap();
    let (man_digest, man_size) = blob(&man_path);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": man_digest, "size": man_size,
                       "annotations": {"io.containerd.image.name": IMAGE}}],
    });
    fs::write(dir.join("index.json"), index.to_string()).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let tar = work.join("image-oci.tar");
    run_cmd(
        Command::new("tar")
            .arg("-C")
            .arg(&dir)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
        None,
    )
    .ok();
    let _ = fs::remove_dir_all(&dir);
    tar
}

// ---------------------------------------------------------------------------
// podman with a private store
// ---------------------------------------------------------------------------

/// podman with everything private to one test: storage, runroot, tmpdir,
/// containers.conf (CONTAINERS_CONF: the host's is not read), storage.conf,
/// network config dir, and a unique cgroup parent. The image is built from
/// busybox-static and `podman import`ed. Drop removes the containers, pods,
/// images, conmon processes, cgroups, mounts and the directory.
pub struct Podman {
    pub rt: Runtime,
    pub dir: PathBuf,
    pub driver: &'static str,
    /// Cgroup parent of every container (`/NAME`), removed on drop.
    pub cgroup_parent: String,
}

impl Podman {
    pub fn new(rt: &Runtime) -> Podman {
        require("podman");
        require("conmon");
        require("timeout");
        let dir = std::env::temp_dir().join(unique("bh-eng-podman"));
        fs::create_dir_all(dir.join("tmp")).unwrap();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut p = Podman {
            rt: rt.clone(),
            dir,
            driver: "overlay",
            cgroup_parent: format!("/{name}"),
        };
        fs::write(
            p.dir.join("containers.conf"),
            format!(
                r#"# Private to one test: CONTAINERS_CONF points here, so the host's
# containers.conf files are not read.
[containers]
# Hard rlimits cannot be raised on these machines; podman's defaults are
# above them. Also applies to the infra container of a pod.
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[network]
network_config_dir = "{d}/networks"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
image_copy_tmp_dir = "{d}/tmp"

[engine.runtimes]
bulkhead = ["{bulkhead}"]
runc = ["{runc}"]
"#,
                d = p.dir.display(),
                bulkhead = Runtime::bulkhead().path,
                runc = RUNC,
            ),
        )
        .unwrap();
        let tar = rootfs_tar(&p.dir);
        let first = p.import(&tar);
        if first.code != 0 {
            // overlay may be unusable on some backing filesystems: fall back to vfs.
            eprintln!("podman import with the overlay driver failed, using vfs:\n{first}");
            for d in ["storage", "runroot", "libpod-tmp"] {
                remove_tree(&p.dir.join(d));
            }
            p.driver = "vfs";
            p.import(&tar).ok();
        }
        let _ = fs::remove_file(tar);
        p
    }

    fn import(&self, tar: &Path) -> Out {
        fs::write(
            self.dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"{}\"\nrunroot = \"{d}/runroot\"\ngraphroot = \"{d}/storage\"\n",
                self.driver,
                d = self.dir.display()
            ),
        )
        .unwrap();
        let mut c = self.cmd();
        c.arg("import").arg(tar).arg(IMAGE);
        run_cmd(&mut c, None)
    }

    /// `timeout 120 podman <private store flags> --runtime NAME`.
    pub fn cmd(&self) -> Command {
        self.cmd_with_runtime(self.rt.name)
    }

    /// Same, with `--runtime` given as `runtime` (a name or a path).
    pub fn cmd_with_runtime(&self, runtime: &str) -> Command {
        let d = &self.dir;
        let mut c = timed("podman");
        // conmon writes an `oom` file into its working directory when a
        // container is OOM-killed: keep it in the private directory.
        private_store(&mut c, d);
        c.current_dir(d)
            .env("TMPDIR", d.join("tmp"))
            .arg("--tmpdir")
            .arg(d.join("libpod-tmp"))
            .args(["--storage-driver", self.driver])
            .args(["--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"])
            .args(["--runtime", runtime]);
        c
    }

    /// `podman ARGS...`
    pub fn podman(&self, args: &[&str]) -> Out {
        let mut c = self.cmd();
        c.args(args);
        run_cmd(&mut c, None)
    }

    /// The flags every `podman run` here needs: no network, the rlimits, the
    /// private cgroup parent.
    pub fn run_flags(&self) -> Vec<String> {
        let mut v: Vec<String> = vec!["--network".into(), "none".into()];
        v.extend(ULIMITS.iter().map(|s| s.to_string()));
        v.push("--cgroup-parent".into());
        v.push(self.cgroup_parent.clone());
        v
    }

    /// `podman run <run_flags> ARGS...` (ARGS holds the options, the image
    /// and the command).
    pub fn run(&self, args: &[&str]) -> Out {
        self.run_in(args, None)
    }

    pub fn run_in(&self, args: &[&str], stdin: Option<&Path>) -> Out {
        let mut c = self.cmd();
        c.arg("run").args(self.run_flags()).args(args);
        run_cmd(&mut c, stdin)
    }

    /// `podman inspect --format FORMAT NAME`, trimmed.
    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.podman(&["inspect", "--format", format, name])
            .ok()
            .trim()
            .to_string()
    }

    /// Wait until `.State.Status` of NAME is `want`.
    #[track_caller]
    pub fn wait_status(&self, name: &str, want: &str) {
        let mut last = String::new();
        let what = format!("podman container {name} to be {want}");
        wait_for(&what, || {
            last = self.inspect(name, "{{.State.Status}}");
            (last == want).then_some(())
        });
    }

    /// The names of all containers in the private store.
    pub fn all_containers(&self) -> Vec<String> {
        self.podman(&["ps", "-a", "--format", "{{.Names}}"])
            .ok()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["pod", "rm", "--all", "--force", "--time", "0"]);
        let _ = self.podman(&["rm", "--all", "--force", "--time", "0"]);
        let _ = self.podman(&["rmi", "--all", "--force"]);
        // conmon and `podman container cleanup` exit on their own once the
        // containers are gone; anything still naming our directory is ours.
        let killed = reap_procs_mentioning(&self.dir.to_string_lossy(), Duration::from_secs(10));
        if !killed.is_empty() {
            eprintln!("warning: killed leftover processes: {killed:?}");
        }
        remove_cgroup_tree(self.cgroup_parent.trim_start_matches('/'));
        remove_tree(&self.dir);
    }
}

/// podman's private configuration and store in `d`: containers.conf and
/// storage.conf through the environment, `--root` and `--runroot`.
fn private_store(c: &mut Command, d: &Path) {
    c.env("CONTAINERS_CONF", d.join("containers.conf"))
        .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
        .arg("--root")
        .arg(d.join("storage"))
        .arg("--runroot")
        .arg(d.join("runroot"));
}

// ---------------------------------------------------------------------------
// Rootless podman
// ---------------------------------------------------------------------------

/// podman run by an unprivileged user the test makes (rootless podman: podman
/// builds a user namespace from the user's /etc/subuid and /etc/subgid ranges
/// with newuidmap, and runs conmon and the OCI runtime inside it, as that
/// namespace's root). The store, runroot, containers.conf and storage.conf are
/// private, in the user's home; the image is the busybox one, `podman import`ed.
/// Drop removes the containers; the user's own drop kills what is left and
/// deletes the user with its home.
pub struct RootlessPodman {
    pub user: User,
    pub rt: Runtime,
    /// The runtime binary as the user can run it (bulkhead: the user's copy).
    pub runtime_path: String,
}

impl RootlessPodman {
    pub fn new(rt: &Runtime) -> RootlessPodman {
        require("podman");
        require("newuidmap");
        let user = User::new("pm");
        let runtime_path = if rt.name == "bulkhead" {
            user.bin.to_string_lossy().into_owned()
        } else {
            rt.path.clone()
        };
        let d = user.home.clone();
        fs::write(
            d.join("containers.conf"),
            format!(
                r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"

[engine.runtimes]
{name} = ["{runtime_path}"]
"#,
                name = rt.name
            ),
        )
        .unwrap();
        fs::write(
            d.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\nrunroot = \"{d}/runroot\"\ngraphroot = \"{d}/storage\"\n",
                d = d.display()
            ),
        )
        .unwrap();
        let p = RootlessPodman {
            user,
            rt: rt.clone(),
            runtime_path,
        };
        let work = p.user.home.join("image");
        fs::create_dir_all(&work).unwrap();
        let tar = rootfs_tar(&work);
        run_cmd(
            Command::new("chown")
                .arg("-R")
                .arg(format!("{}:{}", p.user.uid, p.user.gid))
                .arg(&d),
            None,
        )
        .ok();
        p.podman(&["import", &tar.to_string_lossy(), IMAGE]).ok();
        let _ = fs::remove_dir_all(&work);
        p
    }

    /// `timeout 120 podman <private store> --runtime NAME ARGS...` as the user.
    pub fn podman(&self, args: &[&str]) -> Out {
        let d = &self.user.home;
        let mut c = self.user.cmd("timeout");
        c.args([TIMEOUT_SECS, "podman"]);
        private_store(&mut c, d);
        c.args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .args(["--runtime", self.rt.name])
            .args(args);
        run_cmd(&mut c, None)
    }
}

impl Drop for RootlessPodman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "--all", "--force", "--time", "0"]);
        // podman's per-user lock file lives outside the user's home.
        let _ = fs::remove_file(format!("/dev/shm/libpod_rootless_lock_{}", self.user.uid));
    }
}

// ---------------------------------------------------------------------------
// A private containerd
// ---------------------------------------------------------------------------

/// containerd started for one test: its own root, state, sockets and plugin
/// dir in a temporary directory, the CRI plugin disabled, a unique namespace
/// (so the containers' cgroups are `/NAMESPACE/ID`), the image imported with
/// `ctr image import`. Drop kills the tasks, removes the containers and the
/// image, stops containerd and its shims, removes the cgroups and the
/// directory.
pub struct Containerd {
    pub rt: Runtime,
    pub dir: PathBuf,
    pub namespace: String,
    daemon: Option<Child>,
}

impl Containerd {
    pub fn new(rt: &Runtime) -> Containerd {
        require("containerd");
        require("ctr");
        require("containerd-shim-runc-v2");
        require("timeout");
        let dir = std::env::temp_dir().join(unique("bh-eng-ctrd"));
        for d in ["tmp", "fifo"] {
            fs::create_dir_all(dir.join(d)).unwrap();
        }
        let d = dir.display();
        fs::write(
            dir.join("config.toml"),
            format!(
                r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.join("containerd.log")).unwrap();
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .env("TMPDIR", dir.join("tmp"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start containerd: {e}; {DEPS}"));
        let mut c = Containerd {
            rt: rt.clone(),
            namespace: unique("bhtest"),
            dir,
            daemon: Some(daemon),
        };
        let sock = c.dir.join("containerd.sock");
        let end = Instant::now() + WAIT;
        loop {
            if let Some(st) = c.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "containerd exited ({st}) before serving:\n{}",
                    fs::read_to_string(c.dir.join("containerd.log")).unwrap_or_default()
                );
            }
            if sock.exists() && c.ctr(&["version"]).code == 0 {
                break;
            }
            assert!(
                Instant::now() < end,
                "containerd did not serve {} in time:\n{}",
                sock.display(),
                fs::read_to_string(c.dir.join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let tar = oci_archive(&c.dir);
        c.ctr(&["image", "import", &tar.to_string_lossy()]).ok();
        let _ = fs::remove_file(tar);
        c
    }

    /// `timeout 120 ctr --address SOCK --namespace NS`.
    pub fn cmd(&self) -> Command {
        let mut c = timed("ctr");
        c.current_dir(&self.dir)
            .env("TMPDIR", self.dir.join("tmp"))
            .arg("--address")
            .arg(self.dir.join("containerd.sock"))
            .args(["--namespace", &self.namespace]);
        c
    }

    pub fn ctr(&self, args: &[&str]) -> Out {
        let mut c = self.cmd();
        c.args(args);
        run_cmd(&mut c, None)
    }

    /// `ctr task exec --fifo-dir DIR ARGS...` (ARGS: options, ID, command).
    pub fn exec(&self, args: &[&str]) -> Out {
        let mut c = self.cmd();
        c.args(["task", "exec", "--fifo-dir"])
            .arg(self.dir.join("fifo"))
            .args(args);
        run_cmd(&mut c, None)
    }

    /// The state root the shim gives the runtime (`--runc-root` + namespace).
    pub fn runtime_root(&self) -> PathBuf {
        self.dir.join("runc-root").join(&self.namespace)
    }

    /// The options of `ctr run` that select the runtime under test (and keep
    /// its state root and the IO fifos in the private directory).
    pub fn runtime_flags(&self) -> Vec<String> {
        vec![
            "--runc-binary".into(),
            self.rt.path.clone(),
            "--runc-root".into(),
            self.dir.join("runc-root").to_string_lossy().into_owned(),
            "--fifo-dir".into(),
            self.dir.join("fifo").to_string_lossy().into_owned(),
        ]
    }

    /// A `ctr run` command: `ctr run <runtime flags> OPTIONS... IMAGE ID ARGS...`
    pub fn run_cmd(&self, options: &[&str], id: &str, args: &[&str]) -> Command {
        let mut c = self.cmd();
        c.arg("run")
            .args(self.runtime_flags())
            .args(options)
            .arg(IMAGE)
            .arg(id)
            .args(args);
        c
    }

    pub fn run(&self, options: &[&str], id: &str, args: &[&str]) -> Out {
        run_cmd(&mut self.run_cmd(options, id, args), None)
    }

    /// (pid, status) of task ID from `ctr task ls`.
    pub fn task(&self, id: &str) -> Option<(i64, String)> {
        let out = self.ctr(&["task", "ls"]);
        out.ok().lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[0] == id).then(|| (f[1].parse().unwrap(), f[2].to_string()))
        })
    }

    #[track_caller]
    pub fn wait_task_status(&self, id: &str, want: &str) -> i64 {
        wait_for(&format!("task {id} to be {want}"), || {
            self.task(id)
                .and_then(|(pid, st)| (st == want).then_some(pid))
        })
    }

    pub fn list(&self, what: &str) -> Vec<String> {
        self.ctr(&[what, "ls", "-q"])
            .ok()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            for id in self.list("task") {
                let _ = self.ctr(&["task", "kill", "--all", "--signal", "SIGKILL", &id]);
                let _ = self.ctr(&["task", "delete", "--force", &id]);
            }
            for id in self.list("container") {
                let _ = self.ctr(&["container", "delete", &id]);
            }
            let _ = self.ctr(&["image", "remove", IMAGE]);
        }
        if let Some(mut d) = self.daemon.take() {
            unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(10);
            while d.try_wait().ok().flatten().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
        // Shims name our socket in their command line.
        let killed = reap_procs_mentioning(&self.dir.to_string_lossy(), Duration::from_secs(5));
        if !killed.is_empty() {
            eprintln!("warning: killed leftover processes: {killed:?}");
        }
        remove_cgroup_tree(&self.namespace);
        remove_tree(&self.dir);
    }
}

// ---------------------------------------------------------------------------
// A pseudo-terminal for `podman run -it` and `ctr run -t`
// ---------------------------------------------------------------------------

/// The master side of a pty whose slave is the controlling terminal, stdin,
/// stdout and stderr of a child; a thread collects what the child writes.
pub struct Pty {
    master: Arc<OwnedFd>,
    buf: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl Pty {
    /// Start `cmd` on a new pty of `rows` x `cols`, in a new session with the
    /// pty as its controlling terminal.
    pub fn spawn(mut cmd: Command, rows: u16, cols: u16) -> (Pty, Child) {
        let master = unsafe {
            let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            assert!(fd >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
            OwnedFd::from_raw_fd(fd)
        };
        let m = master.as_raw_fd();
        let mut name = [0 as libc::c_char; 128];
        unsafe {
            assert_eq!(libc::grantpt(m), 0);
            assert_eq!(libc::unlockpt(m), 0);
            assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
            let ws = libc::winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            assert_eq!(libc::ioctl(m, libc::TIOCSWINSZ, &ws), 0);
        }
        let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        let slave = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&name)
            .unwrap();
        cmd.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave);
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop(cmd); // closes our copies of the slave
        let master = Arc::new(master);
        let buf = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (master, buf, stop) = (master.clone(), buf.clone(), stop.clone());
            std::thread::spawn(move || {
                let fd = master.as_raw_fd();
                let mut chunk = [0u8; 4096];
                while !stop.load(Ordering::SeqCst) {
                    let mut pfd = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
                        continue;
                    }
                    let n = unsafe { libc::read(fd, chunk.as_mut_ptr().cast(), chunk.len()) };
                    if n <= 0 {
                        break; // EIO: every slave descriptor is closed
                    }
                    buf.lock().unwrap().extend_from_slice(&chunk[..n as usize]);
                }
            })
        };
        (
            Pty {
                master,
                buf,
                stop,
                reader: Some(reader),
            },
            child,
        )
    }

    /// Everything the child wrote so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }

    /// Type `s` on the terminal.
    pub fn type_in(&self, s: &str) {
        let mut f = fs::File::from(self.master.try_clone().unwrap());
        f.write_all(s.as_bytes()).unwrap();
    }

    /// Wait until the output contains `needle` (after byte `from`); return
    /// the end of the output at that point.
    #[track_caller]
    pub fn expect(&self, needle: &str, from: usize, child: &mut Child) -> usize {
        let end = Instant::now() + WAIT;
        let found = || {
            let b = self.buf.lock().unwrap();
            let rest = String::from_utf8_lossy(b.get(from..).unwrap_or_default()).into_owned();
            rest.contains(needle).then_some(b.len())
        };
        loop {
            if let Some(len) = found() {
                return len;
            }
            let exited = child.try_wait().unwrap();
            if exited.is_some() || Instant::now() > end {
                // Let the reader drain what is left before judging.
                std::thread::sleep(Duration::from_millis(300));
                if let Some(len) = found() {
                    return len;
                }
                let t = self.text();
                let _ = child.kill();
                panic!(
                    "{needle:?} never appeared on the terminal (child exit: {exited:?}); output:\n{t:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

// ---------------------------------------------------------------------------
// sd_notify
// ---------------------------------------------------------------------------

/// A datagram socket standing in for systemd's NOTIFY_SOCKET.
pub struct NotifySocket {
    pub path: PathBuf,
    sock: std::os::unix::net::UnixDatagram,
}

impl NotifySocket {
    pub fn new(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        NotifySocket { path, sock }
    }

    /// Collect datagrams until one contains `needle` (or [`WAIT`] passes).
    pub fn until(&self, needle: &str) -> Vec<String> {
        let end = Instant::now() + WAIT;
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        while Instant::now() < end {
            if let Ok(n) = self.sock.recv(&mut b) {
                got.push(String::from_utf8_lossy(&b[..n]).into_owned());
                if got.last().unwrap().contains(needle) {
                    break;
                }
            }
        }
        got
    }
}
