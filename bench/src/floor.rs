//! The floors: the kernel work of a container start done by the least code. The floor is
//! one clone3 with runc's default namespaces, a bind of the rootfs, pivot_root, and execve
//! of /bin/true: no config, no cgroup, no checks. The config floor ([`run_config_once`])
//! adds what the bundle's config asks for.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Run once; returns the exit code for the process.
pub fn run_once(rootfs: &Path) -> i32 {
    let flags = (libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWCGROUP) as u64;
    let root = CString::new(rootfs.as_os_str().as_bytes()).unwrap();
    in_child(flags, "floor", || {
        // SAFETY: raw syscalls with NUL-terminated strings that outlive them.
        unsafe {
            let dot = c".".as_ptr();
            let ok = libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            ) == 0
                && libc::mount(
                    root.as_ptr(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ) == 0
                && libc::chdir(root.as_ptr()) == 0
                && libc::syscall(libc::SYS_pivot_root, dot, dot) == 0
                && libc::umount2(dot, libc::MNT_DETACH) == 0
                && libc::chdir(c"/".as_ptr()) == 0;
            if ok {
                let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
                let envp = [std::ptr::null()];
                libc::execve(argv[0], argv.as_ptr(), envp.as_ptr());
            }
        }
    })
}

/// Run `child` in a fork-like `clone3` with `flags` (it should end in execve; if it
/// returns, the child exits 127) and wait for it: 0 when it exited 0, else 1, with a line
/// naming `what` on stderr.
fn in_child(flags: u64, what: &str, child: impl FnOnce()) -> i32 {
    // SAFETY: clone_args is plain data; zero is the default for every field.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = flags;
    args.exit_signal = libc::SIGCHLD as u64;
    // SAFETY: fork-like clone3 (no new stack) in a single-threaded process; the child
    // runs `child` and then exits without returning here.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    if pid < 0 {
        eprintln!("{what}: clone3: {}", std::io::Error::last_os_error());
        return 1;
    }
    if pid == 0 {
        child();
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(127) };
    }
    let mut status = 0;
    // SAFETY: waitpid on our child.
    unsafe { libc::waitpid(pid as i32, &mut status, 0) };
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        0
    } else {
        eprintln!("{what} child failed: status {status:#x}");
        1
    }
}

/// The config floor: the kernel work the bundle's config itself asks for, done by the
/// least code in one process. A cgroup directory in every v1 hierarchy the caller is in
/// (cpuset's cpus and mems copied in), joined by the child, removed after; `clone3` with
/// the config's namespaces; the config's mounts (a `cgroup` mount as runtimes make it: a
/// tmpfs with each hierarchy's container directory bound in, read-only), the default
/// device nodes and /dev links, the hostname, `pivot_root`, the masked and read-only
/// paths, a read-only root, the rlimits, the capability sets and no_new_privs; then
/// execve of the config's program. No state, no runtime commands, no checks: what is
/// left of a runtime's time above this is the runtime's own.
pub fn run_config_once(bundle: &Path) -> i32 {
    match ConfigFloor::prepare(bundle) {
        Ok(f) => f.run(),
        Err(e) => {
            eprintln!("config floor: {e}");
            1
        }
    }
}

/// One mount as mount(2) takes it, the target inside the rootfs.
struct MountCall {
    source: CString,
    target: CString,
    fstype: CString,
    flags: libc::c_ulong,
    data: Option<CString>,
}

/// One cgroup v1 hierarchy: the container's directory on the host, its `tasks`, and the
/// mount point for it inside the container's /sys/fs/cgroup.
struct Hierarchy {
    dir: CString,
    tasks: CString,
    target: CString,
}

struct ConfigFloor {
    rootfs: CString,
    clone_flags: u64,
    mounts: Vec<MountCall>,
    /// The `cgroup` mount: the tmpfs's MountCall index, and its flags for the final remount.
    cgroup_mount: Option<(usize, libc::c_ulong)>,
    hierarchies: Vec<Hierarchy>,
    devices: Vec<(CString, u32, u32)>,
    links: Vec<(CString, CString)>,
    hostname: Option<CString>,
    masked: Vec<CString>,
    readonly: Vec<CString>,
    readonly_root: bool,
    rlimits: Vec<(libc::c_int, libc::rlimit)>,
    bounding: u64,
    last_cap: u32,
    /// capset(2)'s two halves of (effective, permitted, inheritable).
    caps: [[u32; 3]; 2],
    /// The cpuset directory, which needs cpus and mems before anyone can join it.
    cpuset: Option<PathBuf>,
    no_new_privs: bool,
    argv: Vec<CString>,
    env: Vec<CString>,
}

fn cstr(s: impl AsRef<[u8]>) -> Result<CString, String> {
    CString::new(s.as_ref()).map_err(|_| "a path holds a NUL byte".to_string())
}

/// mount(8)-style option words: flags, and everything else as the data string.
fn mount_options(options: &[String]) -> (libc::c_ulong, Option<String>) {
    let mut flags = 0;
    let mut data = Vec::new();
    for o in options {
        match o.as_str() {
            "ro" => flags |= libc::MS_RDONLY,
            "nosuid" => flags |= libc::MS_NOSUID,
            "nodev" => flags |= libc::MS_NODEV,
            "noexec" => flags |= libc::MS_NOEXEC,
            "relatime" => flags |= libc::MS_RELATIME,
            "strictatime" => flags |= libc::MS_STRICTATIME,
            "noatime" => flags |= libc::MS_NOATIME,
            "rw" | "suid" | "dev" | "exec" => {}
            other => data.push(other.to_string()),
        }
    }
    (flags, (!data.is_empty()).then(|| data.join(",")))
}

impl ConfigFloor {
    fn prepare(bundle: &Path) -> Result<ConfigFloor, String> {
        let spec = oci::Spec::load(bundle).map_err(|e| e.to_string())?;
        let process = spec.process.clone().ok_or("no process")?;
        let root = spec.root.clone().ok_or("no root")?;
        let rootfs = bundle.join(&root.path);
        let linux = spec.linux();
        let mut clone_flags = 0u64;
        for ns in &linux.namespaces {
            if ns.path.is_some() {
                return Err(format!(
                    "{} namespace: joining one is not done here",
                    ns.typ
                ));
            }
            clone_flags |= match ns.typ {
                oci::NamespaceType::Pid => libc::CLONE_NEWPID,
                oci::NamespaceType::Network => libc::CLONE_NEWNET,
                oci::NamespaceType::Mount => libc::CLONE_NEWNS,
                oci::NamespaceType::Ipc => libc::CLONE_NEWIPC,
                oci::NamespaceType::Uts => libc::CLONE_NEWUTS,
                oci::NamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
                other => return Err(format!("{other} namespace: not done here")),
            } as u64;
        }
        if clone_flags & libc::CLONE_NEWNS as u64 == 0 {
            return Err("the config has no mount namespace".into());
        }
        let in_root = |dest: &str| {
            cstr(
                rootfs
                    .join(dest.trim_start_matches('/'))
                    .as_os_str()
                    .as_bytes(),
            )
        };
        let hierarchies = v1_hierarchies()?;
        let (mut mounts, mut cgroup_mount) = (Vec::new(), None);
        for m in &spec.mounts {
            let typ = m.typ.as_deref().unwrap_or("");
            let (flags, data) = mount_options(&m.options);
            if typ == "cgroup" {
                // Runtimes make a v1 `cgroup` mount a tmpfs holding each hierarchy's
                // container directory, bound in and read-only; the tmpfs goes read-only last.
                cgroup_mount = Some((mounts.len(), flags));
                mounts.push(MountCall {
                    source: cstr("tmpfs")?,
                    target: in_root(&m.destination)?,
                    fstype: cstr("tmpfs")?,
                    flags: flags & !libc::MS_RDONLY,
                    data: Some(cstr("mode=755")?),
                });
                continue;
            }
            if typ == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind") {
                return Err(format!("{}: bind mounts are not done here", m.destination));
            }
            mounts.push(MountCall {
                source: cstr(m.source.as_deref().unwrap_or(typ))?,
                target: in_root(&m.destination)?,
                fstype: cstr(typ)?,
                flags,
                data: data.map(cstr).transpose()?,
            });
        }
        let cgroup_dest = spec
            .mounts
            .iter()
            .find(|m| m.typ.as_deref() == Some("cgroup"))
            .map(|m| m.destination.clone());
        let cpuset = hierarchies
            .iter()
            .find(|(name, _)| name == "cpuset")
            .map(|(_, dir)| dir.clone());
        let hierarchies = hierarchies
            .into_iter()
            .map(|(name, dir)| {
                let target = match &cgroup_dest {
                    Some(d) => in_root(&format!("{d}/{name}"))?,
                    None => CString::default(),
                };
                Ok(Hierarchy {
                    tasks: cstr(dir.join("tasks").as_os_str().as_bytes())?,
                    dir: cstr(dir.as_os_str().as_bytes())?,
                    target,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let dev = |n: &str| in_root(&format!("/dev/{n}"));
        let devices = vec![
            (dev("null")?, 1, 3),
            (dev("zero")?, 1, 5),
            (dev("full")?, 1, 7),
            (dev("random")?, 1, 8),
            (dev("urandom")?, 1, 9),
            (dev("tty")?, 5, 0),
        ];
        let links = vec![
            (cstr("/proc/self/fd")?, dev("fd")?),
            (cstr("/proc/self/fd/0")?, dev("stdin")?),
            (cstr("/proc/self/fd/1")?, dev("stdout")?),
            (cstr("/proc/self/fd/2")?, dev("stderr")?),
            (cstr("pts/ptmx")?, dev("ptmx")?),
        ];
        let rlimits = process
            .rlimits
            .iter()
            .map(|r| {
                let which = match r.typ.as_str() {
                    "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
                    "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
                    "RLIMIT_CORE" => libc::RLIMIT_CORE,
                    "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
                    other => return Err(format!("{other}: not done here")),
                };
                Ok((
                    which as libc::c_int,
                    libc::rlimit {
                        rlim_cur: r.soft,
                        rlim_max: r.hard,
                    },
                ))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mask = |list: &Option<Vec<String>>| -> u64 {
            list.iter()
                .flatten()
                .filter_map(|n| caps::Capability::from_str(n).ok())
                .fold(0, |m, c| m | 1u64 << c.index())
        };
        let c = process.capabilities.clone().unwrap_or_default();
        let sets = [mask(&c.effective), mask(&c.permitted), mask(&c.inheritable)];
        // capset(2) version 3 takes each set as two 32-bit halves.
        let caps = [sets.map(|m| m as u32), sets.map(|m| (m >> 32) as u32)];
        let last_cap = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40);
        Ok(ConfigFloor {
            rootfs: cstr(rootfs.as_os_str().as_bytes())?,
            clone_flags,
            mounts,
            cgroup_mount,
            hierarchies,
            devices,
            links,
            hostname: spec.hostname.as_deref().map(cstr).transpose()?,
            masked: linux
                .masked_paths
                .iter()
                .map(cstr)
                .collect::<Result<_, _>>()?,
            readonly: linux
                .readonly_paths
                .iter()
                .map(cstr)
                .collect::<Result<_, _>>()?,
            readonly_root: root.readonly,
            rlimits,
            bounding: mask(&c.bounding),
            last_cap,
            caps,
            cpuset,
            no_new_privs: process.no_new_privileges,
            argv: process.args.iter().map(cstr).collect::<Result<_, _>>()?,
            env: process.env.iter().map(cstr).collect::<Result<_, _>>()?,
        })
    }
}

/// The cgroup v1 hierarchies this process is in and mounted under /sys/fs/cgroup: each
/// one's name there and the directory the config floor makes in it, next to ours.
fn v1_hierarchies() -> Result<Vec<(String, PathBuf)>, String> {
    let text =
        fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(id), Some(ctrl), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if id == "0" || ctrl.is_empty() {
            continue;
        }
        let name = ctrl.strip_prefix("name=").unwrap_or(ctrl);
        let mount = Path::new("/sys/fs/cgroup").join(name);
        if !mount.is_dir() {
            continue;
        }
        let dir = mount
            .join(path.trim_start_matches('/'))
            .join(format!("bench-config-floor-{}", std::process::id()));
        out.push((name.to_string(), dir));
    }
    Ok(out)
}

impl ConfigFloor {
    fn run(self) -> i32 {
        let mut made = Vec::new();
        let setup = (|| -> Result<(), String> {
            for h in &self.hierarchies {
                let dir = Path::new(std::ffi::OsStr::from_bytes(h.dir.to_bytes()));
                fs::create_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                made.push(dir.to_path_buf());
            }
            if let Some(dir) = &self.cpuset {
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    let v =
                        fs::read(dir.parent().unwrap().join(f)).map_err(|e| format!("{f}: {e}"))?;
                    fs::write(dir.join(f), v).map_err(|e| format!("{f}: {e}"))?;
                }
            }
            Ok(())
        })();
        let code = match setup {
            Err(e) => {
                eprintln!("config floor: {e}");
                1
            }
            Ok(()) => self.clone_and_wait(),
        };
        for d in made.iter().rev() {
            // The child left the cgroup when it exited; a dying one may still hold it briefly.
            for _ in 0..100 {
                if fs::remove_dir(d).is_ok() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        code
    }

    fn clone_and_wait(&self) -> i32 {
        in_child(self.clone_flags, "config floor", || {
            if let Err(step) = self.child() {
                eprintln!("config floor: {step}: {}", std::io::Error::last_os_error());
            }
        })
    }

    /// The container's side, up to execve; the error names the step that failed (errno
    /// holds why).
    fn child(&self) -> Result<(), String> {
        use std::ptr::null;
        let ok =
            |r: libc::c_int, what: &dyn Fn() -> String| if r == 0 { Ok(()) } else { Err(what()) };
        let name = |c: &CString| c.to_string_lossy().into_owned();
        // SAFETY (for the block): raw syscalls with NUL-terminated strings and plain data
        // that outlive them.
        unsafe {
            for h in &self.hierarchies {
                let fd = libc::open(h.tasks.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(format!("join {}", name(&h.tasks)));
                }
                libc::close(fd);
            }
            ok(
                libc::mount(
                    null(),
                    c"/".as_ptr(),
                    null(),
                    libc::MS_REC | libc::MS_SLAVE,
                    null(),
                ),
                &|| "make / a slave".into(),
            )?;
            let r = &self.rootfs;
            ok(
                libc::mount(
                    r.as_ptr(),
                    r.as_ptr(),
                    null(),
                    libc::MS_BIND | libc::MS_REC,
                    null(),
                ),
                &|| "bind the rootfs".into(),
            )?;
            for (i, m) in self.mounts.iter().enumerate() {
                libc::mkdir(m.target.as_ptr(), 0o755);
                let data = m.data.as_ref().map_or(null(), |d| d.as_ptr().cast());
                ok(
                    libc::mount(
                        m.source.as_ptr(),
                        m.target.as_ptr(),
                        m.fstype.as_ptr(),
                        m.flags,
                        data,
                    ),
                    &|| format!("mount {}", name(&m.target)),
                )?;
                let Some((_, flags)) = self.cgroup_mount.filter(|(at, _)| *at == i) else {
                    continue;
                };
                let ro = libc::MS_BIND
                    | libc::MS_REMOUNT
                    | libc::MS_RDONLY
                    | (flags & (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC));
                for h in &self.hierarchies {
                    libc::mkdir(h.target.as_ptr(), 0o755);
                    ok(
                        libc::mount(
                            h.dir.as_ptr(),
                            h.target.as_ptr(),
                            null(),
                            libc::MS_BIND,
                            null(),
                        ),
                        &|| format!("bind {}", name(&h.target)),
                    )?;
                    ok(
                        libc::mount(null(), h.target.as_ptr(), null(), ro, null()),
                        &|| format!("remount {}", name(&h.target)),
                    )?;
                }
                if flags & libc::MS_RDONLY != 0 {
                    ok(
                        libc::mount(null(), m.target.as_ptr(), null(), ro, null()),
                        &|| format!("remount {}", name(&m.target)),
                    )?;
                }
            }
            for (path, major, minor) in &self.devices {
                ok(
                    libc::mknod(
                        path.as_ptr(),
                        libc::S_IFCHR | 0o666,
                        libc::makedev(*major, *minor),
                    ),
                    &|| format!("mknod {}", name(path)),
                )?;
            }
            for (target, link) in &self.links {
                ok(libc::symlink(target.as_ptr(), link.as_ptr()), &|| {
                    format!("symlink {}", name(link))
                })?;
            }
            if let Some(h) = &self.hostname {
                ok(libc::sethostname(h.as_ptr(), h.as_bytes().len()), &|| {
                    "sethostname".into()
                })?;
            }
            let dot = c".".as_ptr();
            ok(libc::chdir(r.as_ptr()), &|| "chdir to the rootfs".into())?;
            ok(
                libc::syscall(libc::SYS_pivot_root, dot, dot) as libc::c_int,
                &|| "pivot_root".into(),
            )?;
            ok(libc::umount2(dot, libc::MNT_DETACH), &|| {
                "detach the old root".into()
            })?;
            ok(libc::chdir(c"/".as_ptr()), &|| "chdir /".into())?;
            for p in &self.masked {
                let mut st: libc::stat = std::mem::zeroed();
                if libc::stat(p.as_ptr(), &mut st) != 0 {
                    continue;
                }
                let r = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    libc::mount(
                        c"tmpfs".as_ptr(),
                        p.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_RDONLY,
                        null(),
                    )
                } else {
                    libc::mount(
                        c"/dev/null".as_ptr(),
                        p.as_ptr(),
                        null(),
                        libc::MS_BIND,
                        null(),
                    )
                };
                ok(r, &|| format!("mask {}", name(p)))?;
            }
            for p in &self.readonly {
                if libc::access(p.as_ptr(), libc::F_OK) != 0 {
                    continue;
                }
                ok(
                    libc::mount(
                        p.as_ptr(),
                        p.as_ptr(),
                        null(),
                        libc::MS_BIND | libc::MS_REC,
                        null(),
                    ),
                    &|| format!("bind {}", name(p)),
                )?;
                let ro = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC;
                ok(
                    libc::mount(p.as_ptr(), p.as_ptr(), null(), ro, null()),
                    &|| format!("remount {}", name(p)),
                )?;
            }
            if self.readonly_root {
                let ro = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
                ok(
                    libc::mount(null(), c"/".as_ptr(), null(), ro, null()),
                    &|| "remount / read-only".into(),
                )?;
            }
            for (which, lim) in &self.rlimits {
                ok(libc::setrlimit(*which as _, lim), &|| "setrlimit".into())?;
            }
            for cap in 0..=self.last_cap {
                if self.bounding & (1u64 << cap) == 0 {
                    ok(
                        libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0),
                        &|| "drop from the bounding set".into(),
                    )?;
                }
            }
            // struct __user_cap_header_struct { version, pid } and two data structs.
            let header: [u32; 2] = [0x2008_0522, 0];
            let data = self.caps;
            ok(
                libc::syscall(libc::SYS_capset, header.as_ptr(), data.as_ptr()) as libc::c_int,
                &|| "capset".into(),
            )?;
            if self.no_new_privs {
                ok(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), &|| {
                    "no_new_privs".into()
                })?;
            }
            let argv: Vec<*const libc::c_char> = self
                .argv
                .iter()
                .map(|a| a.as_ptr())
                .chain([null()])
                .collect();
            let envp: Vec<*const libc::c_char> = self
                .env
                .iter()
                .map(|a| a.as_ptr())
                .chain([null()])
                .collect();
            libc::execve(argv[0], argv.as_ptr(), envp.as_ptr());
        }
        Err(format!(
            "execve {}",
            self.argv.first().map(name).unwrap_or_default()
        ))
    }
}
