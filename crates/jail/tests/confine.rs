//! The jail library end to end, driven as its two kinds of users drive it: a process that
//! confines itself and goes on running Rust code (the builtin VMM), and one that confines a
//! child and executes a program (an external hypervisor). `harness = false`: spawning needs a
//! single-threaded supervisor, which libtest's runner is not, so `main` runs the checks one
//! after the other. Needs root (namespaces, cgroups, setuid), as the whole suite does.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use jail::{CgroupPlan, Error, Exit, Jail, DEFAULT_ID};

fn main() {
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED jail confine tests: they need root (namespaces, cgroups, setuid)");
        return;
    }
    confine_then_keep_running_rust();
    confine_then_exec_a_program();
    host_files_devices_and_kept_capabilities();
    bad_input_fails_before_anything_exists();
    a_child_failing_during_setup_is_reported_and_cleaned_up();
    println!("jail confine: 5 checks passed");
}

fn tag(what: &str) -> String {
    format!("jail-test-{what}-{}", std::process::id())
}

fn pipe() -> (std::fs::File, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: a valid two-element array for pipe2(2).
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors we own.
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            OwnedFd::from_raw_fd(fds[1]),
        )
    }
}

fn plan(parent: &str) -> CgroupPlan {
    CgroupPlan {
        parent: parent.into(),
        memory: Some(64 << 20),
        pids: Some(8),
        cpu_quota: Some(50_000),
    }
}

/// The jail's cgroup directories (one per hierarchy), and its parents.
fn cgroup_dirs(p: &jail::Prepared) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for d in &p.cgroup().expect("a cgroup").dirs {
        v.push(d.path.clone());
        v.push(d.path.parent().unwrap().to_path_buf());
    }
    v
}

fn confine_then_keep_running_rust() {
    let mut j = Jail::new(tag("rust"));
    j.cgroup = Some(plan(&format!("/{}", tag("parent"))));
    let (mut r, w) = pipe();
    j.keep_fds = vec![w.as_raw_fd()];
    let prepared = j.prepare().expect("prepare");
    let dirs = cgroup_dirs(&prepared);
    assert!(dirs.iter().all(|d| d.is_dir()), "cgroup made: {dirs:?}");
    let mem = prepared
        .cgroup()
        .unwrap()
        .dirs
        .iter()
        .find(|d| d.has("memory"))
        .expect("a memory hierarchy");
    let limit_file = if mem.v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    let limit = std::fs::read_to_string(mem.path.join(limit_file)).unwrap();
    assert_eq!(limit.trim(), (64u64 << 20).to_string());

    let wfd = w.as_raw_fd();
    let mut child = prepared
        .spawn(move |inside| {
            // Opened before the jail: still usable by descriptor afterwards.
            let mut passwd = std::fs::File::open("/etc/passwd").map_err(|e| e.to_string())?;
            let nofile = oci::Rlimit {
                typ: "RLIMIT_NOFILE".into(),
                soft: 64,
                hard: 64,
            };
            let confined = inside.confine(&[nofile]).map_err(|e| e.to_string())?;
            let mut facts = Vec::new();
            // SAFETY: getters without arguments.
            let (uid, gid, pid) = unsafe { (libc::getuid(), libc::getgid(), libc::getpid()) };
            facts.push(format!("ids {uid} {gid} pid {pid}"));
            let entries = std::fs::read_dir("/").map(|d| d.count());
            facts.push(format!("root entries {entries:?}"));
            let made = std::fs::File::create("/x").map_err(|e| e.raw_os_error());
            facts.push(format!("create /x {:?}", made.map(drop)));
            let opened = std::fs::File::open("/etc/passwd").map_err(|e| e.raw_os_error());
            facts.push(format!("open /etc/passwd {:?}", opened.map(drop)));
            let mut text = String::new();
            let n = passwd
                .read_to_string(&mut text)
                .map_err(|e| e.to_string())?;
            facts.push(format!("read through the old descriptor {}", n > 0));
            let caps = rustix::thread::capabilities(None).map_err(|e| e.to_string())?;
            facts.push(format!(
                "caps {:x} {:x} {:x}",
                caps.effective.bits(),
                caps.permitted.bits(),
                caps.inheritable.bits()
            ));
            // SAFETY: prctl queries with integer arguments (21 = CAP_SYS_ADMIN, 12 =
            // CAP_NET_ADMIN).
            let (bnd_sys_admin, nnp, dumpable, ambient) = unsafe {
                (
                    libc::prctl(libc::PR_CAPBSET_READ, 21, 0, 0, 0),
                    libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
                    libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0),
                    libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_IS_SET, 12, 0, 0),
                )
            };
            facts.push(format!(
                "bounding sys_admin {bnd_sys_admin} nnp {nnp} dumpable {dumpable} ambient {ambient}"
            ));
            let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
            facts.push(format!("nofile {:?}", lim.current));
            let out = facts.join("\n") + "\n";
            // SAFETY: writing our buffer to the kept pipe.
            unsafe { libc::write(wfd, out.as_ptr().cast(), out.len()) };
            confined.complete().map_err(|e| e.to_string())?;
            Ok(7)
        })
        .expect("spawn");
    drop(w);
    child.wait_ready().expect("the jail completes");
    let exit = child.wait().expect("wait");
    assert_eq!(exit, Exit::Code(7));
    let mut out = String::new();
    r.read_to_string(&mut out).unwrap();
    let expected = [
        format!("ids {DEFAULT_ID} {DEFAULT_ID} pid 1"),
        "root entries Ok(0)".into(),
        format!("create /x Err(Some({}))", libc::EROFS),
        format!("open /etc/passwd Err(Some({}))", libc::ENOENT),
        "read through the old descriptor true".into(),
        "caps 0 0 0".into(),
        "bounding sys_admin 0 nnp 1 dumpable 0 ambient 0".into(),
        "nofile Some(64)".into(),
    ]
    .join("\n")
        + "\n";
    assert_eq!(out, expected);
    for d in &dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

/// Is `path` a statically linked ELF (no PT_INTERP program header)?
fn is_static_elf(path: &Path) -> bool {
    let Ok(b) = std::fs::read(path) else {
        return false;
    };
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= b.len() && u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) != 3
    })
}

/// Run `sh -c script` of the static busybox in jail `j` (a cgroup needed), stdout and stderr
/// into a pipe: how it ended, what it wrote, and its cgroup directories (with parents).
fn exec_busybox(
    mut j: Jail,
    script: String,
    filter: Option<seccomp::Filter>,
) -> (Exit, String, Vec<PathBuf>) {
    let busybox = Path::new("/bin/busybox");
    let (mut r, w) = pipe();
    j.keep_fds = vec![w.as_raw_fd()];
    let prepared = j.prepare().expect("prepare");
    let dirs = cgroup_dirs(&prepared);
    let wfd = w.as_raw_fd();
    let mut child = prepared
        .spawn(move |inside| {
            let program: OwnedFd = std::fs::File::open(busybox)
                .map_err(|e| e.to_string())?
                .into();
            // SAFETY: dup2 of the kept pipe onto stdout and stderr.
            unsafe {
                libc::dup2(wfd, 1);
                libc::dup2(wfd, 2);
            }
            let argv: Vec<CString> = ["busybox", "sh", "-c", &script]
                .iter()
                .map(|a| CString::new(*a).unwrap())
                .collect();
            let env = [CString::new("PATH=/bin").unwrap()];
            let e = inside.exec(&program, &argv, &env, &[], filter.as_ref());
            Err(format!("{:?}", e.err()))
        })
        .expect("spawn");
    drop(w);
    child.wait_ready().expect("the jail completes before exec");
    let exit = child.wait().expect("wait");
    let mut out = String::new();
    r.read_to_string(&mut out).unwrap();
    (exit, out, dirs)
}

fn confine_then_exec_a_program() {
    let busybox = Path::new("/bin/busybox");
    if !is_static_elf(busybox) {
        println!(
            "SKIPPED confine_then_exec_a_program: /bin/busybox is missing or not static \
             (scripts/deps.sh installs busybox-static)"
        );
        return;
    }
    let bind = std::env::temp_dir().join(tag("bind"));
    std::fs::create_dir_all(&bind).unwrap();
    std::fs::write(bind.join("data"), "bound\n").unwrap();
    std::fs::set_permissions(bind.join("data"), std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut j = Jail::new(tag("exec"));
    j.uid = 4321;
    j.gid = 4322;
    j.cgroup = Some(plan(jail::DEFAULT_CGROUP_PARENT));
    j.ro_binds = vec![bind.clone()];
    // chdir refused by the filter (EPERM) where it would work otherwise: the filter is on.
    let filter = seccomp::compile(
        &serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["chdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap(),
    )
    .unwrap();
    let script = format!(
        "id -u; id -g; ls -a /; read l < {d}/data; echo $l; \
         echo x > {d}/data || echo read-only; cd /tmp 2>&1; echo end",
        d = bind.display()
    );
    let (exit, out, dirs) = exec_busybox(j, script, Some(filter));
    assert_eq!(exit, Exit::Code(0), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..5], ["4321", "4322", ".", "..", "tmp"], "{out}");
    assert_eq!(lines[5], "bound", "{out}");
    assert!(
        lines[6].contains("Read-only file system") && lines[7] == "read-only",
        "{out}"
    );
    assert!(lines[8].contains("Operation not permitted"), "{out}");
    assert_eq!(lines[9], "end", "{out}");
    for d in &dirs {
        assert!(
            !d.exists() || d.ends_with("bulkhead"),
            "{} left behind",
            d.display()
        );
    }
    std::fs::remove_dir_all(&bind).unwrap();
}

/// What a VMM sharing host files with its guest gets (QEMU serving 9p): the host's root
/// read-only without its /proc, /sys, /dev, /run and /tmp, a read-only and a writable bind,
/// a device node of its own, a /proc of its own pid namespace, and CAP_DAC_OVERRIDE kept
/// across the exec -- and nothing more.
fn host_files_devices_and_kept_capabilities() {
    if !is_static_elf(Path::new("/bin/busybox")) {
        println!("SKIPPED host_files_devices_and_kept_capabilities: no static /bin/busybox");
        return;
    }
    let ro = std::env::temp_dir().join(tag("share-ro"));
    let rw = std::env::temp_dir().join(tag("share-rw"));
    for d in [&ro, &rw] {
        std::fs::create_dir_all(d).unwrap();
    }
    // Root's, mode 0600: readable only with CAP_DAC_OVERRIDE.
    std::fs::write(ro.join("secret"), "secret\n").unwrap();
    std::fs::set_permissions(ro.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let jail = |keep_caps: u64| {
        let mut j = Jail::new(tag("share"));
        j.uid = 4321;
        j.gid = 4322;
        j.cgroup = Some(plan(jail::DEFAULT_CGROUP_PARENT));
        j.ro_binds = vec![ro.clone()];
        j.rw_binds = vec![rw.clone()];
        j.host_root = Some("/.host".into());
        j.devices = vec!["/dev/null".into()];
        j.proc = true;
        j.keep_caps = keep_caps;
        j
    };
    const CAP_DAC_OVERRIDE: u64 = 1 << 1;
    let script = format!(
        "read h < /.host/etc/hostname; echo $h; \
         for d in proc sys dev run tmp; do set -- $(ls -A /.host/$d); echo $d=$#; done; \
         echo x > /.host/etc/hostname || echo host-read-only; \
         echo x > {ro}/secret || echo bind-read-only; read l < {ro}/secret; echo $l; \
         echo w > {rw}/new && echo written; \
         echo z > /dev/null && echo device; ls /dev; ls /proc; ls -A /",
        ro = ro.display(),
        rw = rw.display()
    );
    let (exit, out, _) = exec_busybox(jail(CAP_DAC_OVERRIDE), script.clone(), None);
    assert_eq!(exit, Exit::Code(0), "{out}");
    let hostname = std::fs::read_to_string("/etc/hostname").unwrap();
    assert!(out.starts_with(&hostname), "{out}");
    for d in ["proc", "sys", "dev", "run", "tmp"] {
        assert!(out.contains(&format!("\n{d}=0\n")), "{d} not empty: {out}");
    }
    for want in [
        "\nhost-read-only\n",
        "\nbind-read-only\nsecret\n",
        "\nwritten\n",
        "\ndevice\nnull\n",
    ] {
        assert!(out.contains(want), "{want:?} not in {out}");
    }
    // /proc: the jail's processes only (the shell, pid 1, and ls), nothing of the kernel's.
    let proc: Vec<&str> = out
        .split("\nnull\n")
        .nth(1)
        .and_then(|rest| rest.split("\n.host\n").next())
        .unwrap_or_default()
        .lines()
        .collect();
    assert_eq!(proc.len(), 4, "{out}");
    assert_eq!(proc[0], "1", "{out}");
    assert!(proc[1].parse::<u32>().is_ok(), "{out}");
    assert_eq!(proc[2..], ["self", "thread-self"], "{out}");
    // The root: the view, the binds' top directory, /dev, /proc; nothing else of the host.
    assert!(out.ends_with("\n.host\ndev\nproc\ntmp\n"), "{out}");
    let new = rw.join("new");
    assert_eq!(std::fs::read_to_string(&new).unwrap(), "w\n");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&new).unwrap()),
        4321
    );
    // Without the capability, root's file stays closed: the capability is what opened it.
    std::fs::remove_file(&new).unwrap();
    let (_, out, _) = exec_busybox(jail(0), script, None);
    assert!(out.contains("secret: Permission denied"), "{out}");
    for d in [&ro, &rw] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

fn bad_input_fails_before_anything_exists() {
    let parent = format!("/{}", tag("bad"));
    let check = |j: Jail, want: &str| {
        let e = j.prepare().err().expect("refused").to_string();
        assert!(e.contains(want), "{e}");
        let hier = cgroups::Hierarchies::detect().unwrap();
        for h in &hier.list {
            assert!(!h.mount_point.join(&parent[1..]).exists(), "cgroup made");
        }
    };
    let base = || {
        let mut j = Jail::new(tag("bad"));
        j.cgroup = Some(plan(&parent));
        j
    };
    let mut j = base();
    j.uid = 0;
    check(j, "must not be root");
    let mut j = base();
    j.gid = u32::MAX;
    check(j, "not a valid id");
    let mut j = base();
    j.keep_fds = vec![987];
    check(j, "descriptor 987");
    let mut j = base();
    j.ro_binds = vec!["/nonexistent-jail-bind".into()];
    check(j, "does not exist");
    let mut j = base();
    j.devices = vec!["/etc/passwd".into()];
    check(j, "directly under /dev");
    let mut j = base();
    j.devices = vec!["/dev/shm".into()];
    check(j, "not a character device");
    let mut j = base();
    j.host_root = Some("/usr/x".into());
    j.ro_binds = vec!["/usr".into()];
    check(j, "overlaps the bind of /usr");
    let mut j = base();
    j.keep_caps = 1 << 63;
    check(j, "beyond this kernel's last capability");
    let mut j = base();
    j.cgroup.as_mut().unwrap().memory = Some(-5);
    check(j, "memory");
    let mut j = base();
    j.name = "a/b".into();
    check(j, "one non-empty path component");
}

fn a_child_failing_during_setup_is_reported_and_cleaned_up() {
    let mut j = Jail::new(tag("fail"));
    j.cgroup = Some(plan(&format!("/{}", tag("fail-parent"))));
    let prepared = j.prepare().unwrap();
    let dirs = cgroup_dirs(&prepared);
    let mut child = prepared
        .spawn(|_inside| Err("the disk image is corrupt".to_string()))
        .unwrap();
    match child.wait_ready() {
        Err(Error::Child(text)) => assert_eq!(text, "the disk image is corrupt"),
        other => panic!("{:?}", other.err()),
    }
    drop(child);
    for d in &dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}
