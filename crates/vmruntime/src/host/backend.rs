//! Hypervisor backends: the builtin VMM (`bulkhead vm run`) and QEMU (`-M microvm`). Both
//! boot the same guest image and reach the same agent; they differ in the command line, the
//! transport (vsock vs a virtio-serial port), and what only QEMU has: 9p exports of host
//! directories ([`Share`]).
//!
//! [`spawn`] is the one place a hypervisor process starts: the VMM jail wraps it there.
//!
//! Which backend by default: the builtin VMM where KVM is hardware-backed (`vmx`/`svm` in
//! /proc/cpuinfo and /dev/kvm usable): it boots in tens of milliseconds there. Where KVM
//! only emulates (a nested or software KVM, as on the project's CI machines, where a guest
//! kernel runs instruction by instruction: ~20 s to boot), QEMU with its TCG JIT boots the
//! same kernel in about a second, so QEMU is the default when installed.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::agent::transport::{Transport, PORT_NAME, VSOCK_PORT};
use crate::error::{msg, Context, Result};
use crate::host::network;

pub const QEMU: &str = "qemu-system-x86_64";
/// The guest CID the builtin VMM's vsock device gets.
const GUEST_CID: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Builtin,
    Qemu,
}

impl Backend {
    pub fn parse(s: &str) -> Result<Backend> {
        match s {
            "builtin" => Ok(Backend::Builtin),
            "qemu" => Ok(Backend::Qemu),
            _ => Err(msg(format!(
                "unknown VM backend {s:?} (expected builtin or qemu)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Builtin => "builtin",
            Backend::Qemu => "qemu",
        }
    }

    /// The default for this host (see the module notes).
    pub fn host_default() -> Backend {
        if hardware_kvm() || find_program(QEMU).is_none() {
            Backend::Builtin
        } else {
            Backend::Qemu
        }
    }

    pub fn transport(self) -> Transport {
        match self {
            Backend::Builtin => Transport::Vsock(VSOCK_PORT),
            Backend::Qemu => Transport::Port(PORT_NAME.into()),
        }
    }

    /// Check what the backend needs on this host, before anything is created.
    pub fn check(self) -> Result<()> {
        match self {
            Backend::Builtin => {
                if !Path::new("/dev/kvm").exists() {
                    return Err(msg(
                        "VM backend builtin: /dev/kvm does not exist (no KVM on this host; try run.bulkhead.vm.backend=qemu)",
                    ));
                }
            }
            Backend::Qemu => {
                if find_program(QEMU).is_none() {
                    return Err(msg(format!(
                        "VM backend qemu: {QEMU} not found in PATH (install Debian's qemu-system-x86; scripts/deps.sh does)"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// QEMU's accelerator: KVM, or its TCG JIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn parse(s: &str) -> Result<Accel> {
        match s {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            _ => Err(msg(format!(
                "unknown QEMU accelerator {s:?} (expected kvm or tcg)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    /// KVM where it is hardware-backed; TCG elsewhere: on an emulating KVM, QEMU's JIT runs
    /// a guest kernel faster than the emulator, and Linux does not boot there under QEMU
    /// (KVM's emulator rejects the kernel's `int3` self-test, which only the builtin VMM
    /// completes itself).
    pub fn host_default() -> Accel {
        if hardware_kvm() {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }

    /// Check what the accelerator needs on this host.
    pub fn check(self) -> Result<()> {
        if self == Accel::Kvm && !Path::new(KVM_DEVICE).exists() {
            return Err(msg(format!(
                "QEMU accelerator kvm: {KVM_DEVICE} does not exist (no KVM on this host; use tcg)"
            )));
        }
        Ok(())
    }
}

/// The device QEMU opens for KVM (by this path: QEMU 7.2 takes no descriptor for it).
const KVM_DEVICE: &str = "/dev/kvm";

/// KVM backed by the CPU's virtualisation extensions (not an emulating, nested KVM), as
/// the builtin VMM judges it.
pub fn hardware_kvm() -> bool {
    let hw = vmm::kvm::emulation::HostKvm::detect() == vmm::kvm::emulation::HostKvm::Hardware;
    hw && std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

pub fn find_program(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()))
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Everything a backend needs to boot the guest.
#[derive(Debug, Clone)]
pub struct VmDesc {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// The root filesystem disk (attached read-only); none when the root is shared.
    pub disk: Option<PathBuf>,
    /// Host directories exported to the guest over 9p (QEMU only).
    pub shares: Vec<Share>,
    pub memory_mib: u64,
    pub cpus: u8,
    /// The builtin VMM's vsock `uds`: the agent's connection arrives at `<socket>_1024`.
    /// (QEMU gets its end of a socket pair instead, as descriptor [`AGENT_FD`].)
    pub socket: PathBuf,
    /// QEMU's accelerator.
    pub accel: Accel,
    /// The guest's network interface: its MAC address (the tap is [`network::TAP`]: QEMU
    /// gets its descriptor as [`TAP_FD`], the builtin VMM opens it by name).
    pub net_mac: Option<String>,
}

/// A host directory QEMU exports to the guest over 9p (`-fsdev local` + a
/// `virtio-9p-device` with mount tag `tag`). QEMU serves it by path from inside its jail,
/// with `security_model=none`: the guest sees the host's owners and modes, files it creates
/// belong to QEMU's jail uid, and it can change no owner or mode it does not own (so no
/// setuid file of another user can be made on the host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub tag: String,
    /// The host directory; `/` is the host's root as the jail's view shows it (without
    /// /proc, /sys, /dev, /run and /tmp).
    pub path: PathBuf,
    /// Exported read-only (`readonly=on`: QEMU refuses every write, whatever the guest).
    pub readonly: bool,
}

/// Where the jail shows QEMU the host's root.
const JAIL_HOST_ROOT: &str = "/.host-root";

/// The 9p mount tag of the host's root.
pub const HOST_ROOT_TAG: &str = "hostroot";

impl Share {
    /// The path QEMU serves, inside its jail.
    fn jail_path(&self) -> PathBuf {
        if self.path == Path::new("/") {
            PathBuf::from(JAIL_HOST_ROOT)
        } else {
            self.path.clone()
        }
    }
}

/// The descriptor number of the agent's socket in QEMU (`-chardev socket,fd=3`).
pub const AGENT_FD: i32 = 3;
/// The descriptor number of the tap in QEMU (`-netdev tap,fd=4`).
pub const TAP_FD: i32 = 4;

/// The kernel command line for `backend`. `reboot=`: how the agent's reboot(2) ends the VM
/// (see agent::boot::power_off). (On an emulating KVM the builtin VMM adds what the guest
/// kernel needs there itself: docs/vm.md.)
pub fn cmdline(backend: Backend) -> String {
    let mut c = String::from("console=ttyS0 panic=-1 quiet pci=off");
    match backend {
        Backend::Builtin => c.push_str(" reboot=k"),
        Backend::Qemu => c.push_str(" reboot=t"),
    }
    c.push(' ');
    c.push_str(&backend.transport().param());
    c.push_str(&format!(" bulkhead.backend={}", backend.name()));
    c
}

/// The hypervisor's command line.
pub fn command(backend: Backend, vm: &VmDesc) -> Result<Command> {
    let cmdline = cmdline(backend);
    let mut c = match backend {
        Backend::Builtin => {
            let exe =
                std::fs::read_link("/proc/self/exe").ctx(|| "readlink /proc/self/exe".into())?;
            let mut c = Command::new(exe);
            c.args(["vm", "run", "--kernel"])
                .arg(&vm.kernel)
                .arg("--initrd")
                .arg(&vm.initramfs)
                .arg("--cmdline")
                .arg(&cmdline)
                .arg("--memory")
                .arg(vm.memory_mib.to_string())
                .arg("--cpus")
                .arg(vm.cpus.to_string());
            if let Some(disk) = &vm.disk {
                c.arg("--disk").arg(format!("{},ro", disk.display()));
            }
            if !vm.shares.is_empty() {
                return Err(msg(
                    "VM backend builtin: the builtin VMM has no 9p or virtio-fs device to share host directories with",
                ));
            }
            if let Some(mac) = &vm.net_mac {
                c.arg("--net")
                    .arg(format!("tap={},mac={mac}", network::TAP));
            }
            c.arg("--vsock")
                .arg(format!("{GUEST_CID},uds={}", vm.socket.display()));
            c
        }
        Backend::Qemu => {
            let (accel, cpu) = match vm.accel {
                // This KVM refuses the ARCH_CAPABILITIES MSR value QEMU 7.2 sets for `-cpu
                // host` on an emulating KVM (an assertion ends QEMU): leave that MSR out there.
                Accel::Kvm if !hardware_kvm() => ("kvm", "host,-arch-capabilities"),
                Accel::Kvm => ("kvm", "host"),
                // A bounded translation cache: the default (1 GiB) would be reserved per VM.
                Accel::Tcg => ("tcg,tb-size=64", "max"),
            };
            let mut c = Command::new(find_program(QEMU).unwrap_or_else(|| QEMU.into()));
            c.args(["-M", "microvm,acpi=off,rtc=off,isa-serial=on"])
                .args(["-accel", accel, "-cpu", cpu])
                .args(["-m", &vm.memory_mib.to_string()])
                .args(["-smp", &vm.cpus.to_string()])
                .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
                .arg("-kernel")
                .arg(&vm.kernel)
                .arg("-initrd")
                .arg(&vm.initramfs)
                .args(["-append", &cmdline])
                .args(["-serial", "stdio"]);
            if let Some(disk) = &vm.disk {
                c.arg("-drive")
                    .arg(format!(
                        "id=rootfs,file={},format=raw,if=none,readonly=on",
                        qemu_escape(disk)
                    ))
                    .args(["-device", "virtio-blk-device,drive=rootfs"]);
            }
            for s in &vm.shares {
                // multidevs=remap: an export spanning several host filesystems (the host's
                // root does) gets inode numbers that cannot collide in the guest.
                c.arg("-fsdev")
                    .arg(format!(
                        "local,id={},path={},security_model=none,multidevs=remap{}",
                        s.tag,
                        qemu_escape(&s.jail_path()),
                        if s.readonly { ",readonly=on" } else { "" }
                    ))
                    .arg("-device")
                    .arg(format!("virtio-9p-device,fsdev={0},mount_tag={0}", s.tag));
            }
            if let Some(mac) = &vm.net_mac {
                c.arg("-netdev")
                    .arg(format!("tap,id=net0,fd={TAP_FD}"))
                    .arg("-device")
                    .arg(format!("virtio-net-device,netdev=net0,mac={mac}"));
            }
            c.args(["-device", "virtio-serial-device"])
                .arg("-chardev")
                .arg(format!("socket,id=agent,fd={AGENT_FD}"))
                .args([
                    "-device",
                    &format!("virtserialport,chardev=agent,name={PORT_NAME}"),
                ]);
            c
        }
    };
    c.stdin(Stdio::null());
    Ok(c)
}

/// QEMU's option syntax: a comma inside a value is written twice.
fn qemu_escape(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// A running hypervisor, the monitor's child.
pub enum Hypervisor {
    /// `bulkhead vm run`, which jails the builtin VMM itself (its supervisor is this child).
    Process(Child),
    /// QEMU in a jail the monitor supervises (the child is QEMU, confined).
    Jailed(Box<jail::Running>),
}

impl Hypervisor {
    pub fn pid(&self) -> i32 {
        match self {
            Hypervisor::Process(c) => c.id() as i32,
            Hypervisor::Jailed(r) => r.pid(),
        }
    }

    /// Kill it (it is not reaped yet, so the pid is still this process).
    pub fn kill(&self) {
        // SAFETY: kill(2) of our own unreaped child.
        unsafe { libc::kill(self.pid(), libc::SIGKILL) };
    }

    /// Wait for it to end (kill it first to make that immediate); how it ended, in words.
    pub fn finish(self) -> String {
        match self {
            Hypervisor::Process(mut c) => match c.wait() {
                Ok(st) => st.to_string(),
                Err(e) => e.to_string(),
            },
            // Its cgroup is removed when the jail's handle goes.
            Hypervisor::Jailed(r) => match r.wait() {
                Ok(jail::Exit::Code(c)) => format!("exit status: {c}"),
                Ok(jail::Exit::Killed(n)) | Ok(jail::Exit::Stopped(n)) => {
                    format!("killed by signal {n}")
                }
                Err(e) => e.to_string(),
            },
        }
    }
}

/// Descriptors the hypervisor gets: the guest's serial console is its stdout, its own
/// messages go to its stderr, QEMU's end of the agent socket is [`AGENT_FD`] and its tap
/// [`TAP_FD`]; the builtin VMM starts in the container's network namespace `netns` (where
/// it makes the tap).
pub struct HvIo<'a> {
    pub console: PathBuf,
    pub log: PathBuf,
    pub agent: Option<std::os::fd::OwnedFd>,
    pub tap: Option<std::os::fd::OwnedFd>,
    pub netns: Option<std::os::fd::BorrowedFd<'a>>,
}

fn append(p: &Path) -> Result<std::fs::File> {
    std::fs::File::options()
        .create(true)
        .append(true)
        .open(p)
        .ctx(|| format!("open {}", p.display()))
}

/// Start the hypervisor, jailed. It dies with its parent (the monitor), so a monitor killed
/// by SIGKILL takes its VM along. This is the one place a hypervisor starts:
/// - the builtin VMM: `bulkhead vm run` jails the VMM itself (namespaces, empty root,
///   unprivileged uid, per-thread seccomp filters) in a cgroup inside the caller's, which
///   is the container's (`--cgroup-parent ""`);
/// - QEMU: [`jail_qemu`] confines it the same way before it execs.
pub fn spawn(backend: Backend, vm: &VmDesc, io: HvIo<'_>) -> Result<Hypervisor> {
    match backend {
        Backend::Builtin => {
            use std::os::fd::AsRawFd;
            let mut cmd = command(backend, vm)?;
            cmd.arg("--cgroup-parent").arg("");
            cmd.stdout(append(&io.console)?).stderr(append(&io.log)?);
            let netns = io.netns.map(|n| n.as_raw_fd());
            // SAFETY: prctl and setns with integer arguments, async-signal-safe, between fork
            // and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    if let Some(fd) = netns {
                        if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
            let child = cmd
                .spawn()
                .ctx(|| "start the builtin VMM (bulkhead vm run)".into())?;
            Ok(Hypervisor::Process(child))
        }
        Backend::Qemu => jail_qemu(vm, io),
    }
}

/// QEMU's memory beyond guest RAM: its translation cache (bounded at 64 MiB, see
/// [`command`]), code and heap; generous, since the cgroup's OOM killer ends the VM.
const QEMU_OVERHEAD_MIB: u64 = 256;
/// Tasks of a QEMU process: the main loop, vCPU threads, RCU and call_rcu threads, and
/// its block I/O thread pool (up to 64 workers).
const QEMU_PIDS: i64 = 128;

/// Run QEMU confined: the jail crate's namespaces, an empty read-only root holding only
/// read-only binds of /usr (QEMU, its libraries and firmware), /lib and /lib64 (the loader's
/// path), the image and the disk, the unprivileged uid, no capabilities, no_new_privs, a
/// cgroup of its own inside the monitor's (the container's) with a memory and a pids limit;
/// plus QEMU's own seccomp sandbox. The console, log and agent socket arrive as descriptors.
///
/// What QEMU opens by path after the exec gets into the root as well:
/// - with KVM, `/dev/kvm`: QEMU 7.2 opens it itself (no option takes a descriptor), so the
///   jail makes a node of its own for it (owned by the jail's uid, in a tmpfs of its own:
///   the root's other mounts allow no device node);
/// - with shares (9p), the exported directories (read-only or writable as exported; the
///   host's root as a read-only view without /proc, /sys, /dev, /run and /tmp), and
///   `CAP_DAC_OVERRIDE`, so that QEMU, serving the files by path as an unprivileged uid,
///   does not narrow what the guest may read and write to what that uid may (the guest
///   kernel checks the container's own permissions on the host's owners and modes). This
///   widens what a compromised QEMU reaches to those directories: docs in the README. Its
///   9p server also names files through /proc/self/fd/N (changing modes, extended
///   attributes): the jail mounts a /proc of its own pid namespace, processes only.
fn jail_qemu(vm: &VmDesc, io: HvIo<'_>) -> Result<Hypervisor> {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, OwnedFd};
    let mut cmd = command(Backend::Qemu, vm)?;
    cmd.args([
        "-sandbox",
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
    ]);
    let program = find_program(QEMU).ok_or_else(|| msg(format!("{QEMU} not found")))?;
    let cstr = |s: &std::ffi::OsStr| {
        CString::new(s.as_encoded_bytes()).map_err(|_| msg("NUL in an argument"))
    };
    let mut argv = vec![cstr(program.as_os_str())?];
    for a in cmd.get_args() {
        argv.push(cstr(a)?);
    }
    let envp: Vec<CString> = Vec::new();
    let console = append(&io.console)?;
    let log = append(&io.log)?;
    let agent: OwnedFd = io.agent.ok_or_else(|| msg("QEMU needs the agent socket"))?;
    // The loader's path (/lib64/ld-linux...) leads through /lib64 and /lib, symlinks into
    // /usr on merged-/usr systems: binds follow them.
    let mut binds = vec![PathBuf::from("/usr")];
    for d in ["/lib", "/lib64"] {
        if Path::new(d).exists() {
            binds.push(d.into());
        }
    }
    for f in [&vm.kernel, &vm.initramfs].into_iter().chain(&vm.disk) {
        if !binds.iter().any(|b| f.starts_with(b)) {
            binds.push(f.clone());
        }
    }
    let tap = io.tap;
    // (descriptor, the number QEMU finds it at)
    let mut keep = vec![
        (console.as_raw_fd(), 1),
        (log.as_raw_fd(), 2),
        (agent.as_raw_fd(), AGENT_FD),
    ];
    if let Some(t) = &tap {
        keep.push((t.as_raw_fd(), TAP_FD));
    }
    let id: String = (0..6).map(|_| format!("{:02x}", rand_byte())).collect();
    let mut j = jail::Jail::new(format!("vm-{id}"));
    j.cgroup = Some(jail::CgroupPlan {
        parent: String::new(),
        memory: Some(((vm.memory_mib + QEMU_OVERHEAD_MIB) << 20) as i64),
        pids: Some(QEMU_PIDS),
        cpu_quota: None,
    });
    j.keep_fds = keep.iter().map(|k| k.0).collect();
    j.ro_binds = binds;
    for s in &vm.shares {
        match (s.path == Path::new("/"), s.readonly) {
            (true, _) => j.host_root = Some(s.jail_path()),
            (false, true) => j.ro_binds.push(s.path.clone()),
            (false, false) => j.rw_binds.push(s.path.clone()),
        }
    }
    if !vm.shares.is_empty() {
        j.keep_caps = CAP_DAC_OVERRIDE;
        j.proc = true;
    }
    if vm.accel == Accel::Kvm {
        j.devices.push(KVM_DEVICE.into());
    }
    let prepared = j
        .prepare()
        .map_err(|e| msg(format!("jail for QEMU: {e}")))?;
    let mut running = prepared
        .spawn(move |inside| {
            // stdin: nothing (the monitor's own is the container's stdin).
            let null = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
            inherit_as(null.as_raw_fd(), 0).map_err(|e| format!("/dev/null to 0: {e}"))?;
            drop(null);
            place(&keep).map_err(|e| format!("descriptors for QEMU: {e}"))?;
            // Opened here, where the host's files are still reachable (the jail closed
            // what the monitor had open but the descriptors it keeps).
            let prog = rustix::fs::open(
                &program,
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| format!("open {}: {e}", program.display()))?;
            match inside.exec(&prog, &argv, &envp, &[], None) {
                Ok(never) => match never {},
                Err(e) => Err(e.to_string()),
            }
        })
        .map_err(|e| msg(format!("jail for QEMU: {e}")))?;
    drop((console, log, agent, tap));
    running
        .wait_ready()
        .map_err(|e| msg(format!("jail for QEMU: {e}")))?;
    Ok(Hypervisor::Jailed(Box::new(running)))
}

/// The capability that lets QEMU serve shared files whatever their modes (capabilities(7)).
const CAP_DAC_OVERRIDE: u64 = 1 << 1;

/// Put each descriptor at its number (inherited across exec): first all out of the way,
/// above every target, so that no dup2 overwrites a source another one still needs.
fn place(fds: &[(i32, i32)]) -> std::io::Result<()> {
    let above = fds.iter().map(|f| f.1).max().unwrap_or(0) + 1;
    let mut moved = Vec::new();
    for &(fd, to) in fds {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor number; errors are reported.
        let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above) };
        if high < 0 {
            return Err(std::io::Error::last_os_error());
        }
        moved.push((high, to));
    }
    for (high, to) in moved {
        inherit_as(high, to)?;
    }
    Ok(())
}

/// Make `fd` descriptor `to` without close-on-exec (dup2 onto itself would keep it set).
fn inherit_as(fd: i32, to: i32) -> std::io::Result<()> {
    // SAFETY: fcntl/dup2 on descriptor numbers; errors are reported.
    let r = unsafe {
        if fd == to {
            libc::fcntl(fd, libc::F_SETFD, 0)
        } else {
            libc::dup2(fd, to)
        }
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn rand_byte() -> u8 {
    let mut b = [0u8; 1];
    // SAFETY: getrandom(2) into a one-byte buffer we own.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), 1, 0) };
    b[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc() -> VmDesc {
        VmDesc {
            kernel: "/img/vmlinux".into(),
            initramfs: "/img/initramfs.cpio".into(),
            disk: Some("/cache/d,1.ext4".into()),
            shares: Vec::new(),
            memory_mib: 256,
            cpus: 1,
            socket: "/run/x/agent.sock".into(),
            accel: Accel::Tcg,
            net_mac: None,
        }
    }

    fn args(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn qemu_command_line() {
        let a = args(&command(Backend::Qemu, &desc()).unwrap());
        let joined = a.join(" ");
        assert!(joined.contains("-M microvm,acpi=off"), "{joined}");
        assert!(
            joined.contains("file=/cache/d,,1.ext4,format=raw"),
            "{joined}"
        );
        assert!(joined.contains("virtserialport,chardev=agent,name=bulkhead.agent"));
        assert!(joined.contains("socket,id=agent,fd=3"), "{joined}");
        let append = &a[a.iter().position(|x| x == "-append").unwrap() + 1];
        assert!(append.contains("reboot=t"));
        assert!(append.contains("bulkhead.transport=port:bulkhead.agent"));
    }

    #[test]
    fn qemu_shares_and_accelerators() {
        let mut d = desc();
        d.disk = None;
        d.shares = vec![
            Share {
                tag: HOST_ROOT_TAG.into(),
                path: "/".into(),
                readonly: true,
            },
            Share {
                tag: "bind7".into(),
                path: "/srv/a,b".into(),
                readonly: false,
            },
        ];
        let joined = args(&command(Backend::Qemu, &d).unwrap()).join(" ");
        assert!(!joined.contains("-drive"), "{joined}");
        assert!(joined.contains(
            "-fsdev local,id=hostroot,path=/.host-root,security_model=none,multidevs=remap,readonly=on -device virtio-9p-device,fsdev=hostroot,mount_tag=hostroot"
        ), "{joined}");
        assert!(joined.contains(
            "-fsdev local,id=bind7,path=/srv/a,,b,security_model=none,multidevs=remap -device virtio-9p-device,fsdev=bind7,mount_tag=bind7"
        ), "{joined}");
        assert!(
            joined.contains("-accel tcg,tb-size=64 -cpu max"),
            "{joined}"
        );
        d.accel = Accel::Kvm;
        d.net_mac = Some("72:a1:c1:b6:3b:31".into());
        let joined = args(&command(Backend::Qemu, &d).unwrap()).join(" ");
        assert!(joined.contains("-accel kvm -cpu host"), "{joined}");
        assert!(joined.contains(
            "-netdev tap,id=net0,fd=4 -device virtio-net-device,netdev=net0,mac=72:a1:c1:b6:3b:31"
        ), "{joined}");
        // The builtin VMM has no 9p device: refused, not ignored.
        let e = command(Backend::Builtin, &d).unwrap_err().to_string();
        assert!(e.contains("no 9p or virtio-fs device"), "{e}");
        assert_eq!(Accel::parse("kvm").unwrap(), Accel::Kvm);
        assert_eq!(Accel::parse(Accel::Tcg.name()).unwrap(), Accel::Tcg);
        assert!(Accel::parse("hvf")
            .unwrap_err()
            .to_string()
            .contains("kvm or tcg"));
    }

    #[test]
    fn builtin_command_line() {
        let mut d = desc();
        d.net_mac = Some("72:a1:c1:b6:3b:31".into());
        let a = args(&command(Backend::Builtin, &d).unwrap());
        assert!(
            a.join(" ")
                .contains("--net tap=bhvm0,mac=72:a1:c1:b6:3b:31"),
            "{a:?}"
        );
        assert_eq!(&a[..2], ["vm", "run"]);
        let joined = a.join(" ");
        assert!(joined.contains("--disk /cache/d,1.ext4,ro"), "{joined}");
        assert!(
            joined.contains("--vsock 3,uds=/run/x/agent.sock"),
            "{joined}"
        );
        let cmdline = &a[a.iter().position(|x| x == "--cmdline").unwrap() + 1];
        assert!(cmdline.contains("bulkhead.transport=vsock:1024"));
        assert!(cmdline.contains("reboot=k"));
    }

    #[test]
    fn names() {
        for b in [Backend::Builtin, Backend::Qemu] {
            assert_eq!(Backend::parse(b.name()).unwrap(), b);
        }
        let e = Backend::parse("firecracker").unwrap_err().to_string();
        assert!(e.contains("builtin or qemu"), "{e}");
    }
}
