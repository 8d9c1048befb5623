//! Hypervisor backends: the builtin VMM (`bulkhead vm run`) and QEMU (`-M microvm`). Both
//! boot the same guest image and reach the same agent; they differ in the command line and
//! the transport (vsock vs a virtio-serial port).
//!
//! [`spawn`] is the one place a hypervisor process starts: the VMM jail wraps it there.
//!
//! Which backend by default: the builtin VMM where KVM is hardware-backed (`vmx`/`svm` in
//! /proc/cpuinfo and /dev/kvm usable): it boots in tens of milliseconds there. Where KVM
//! only emulates (a nested or software KVM, as on the project's CI machines, where a guest
//! kernel runs instruction by instruction: ~14 s to boot), QEMU with its TCG JIT boots the
//! same kernel in about a second, so QEMU is the default when installed.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::agent::transport::{Transport, PORT_NAME, VSOCK_PORT};
use crate::error::{msg, Context, Result};

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

/// KVM backed by the CPU's virtualisation extensions (not an emulating, nested KVM).
pub fn hardware_kvm() -> bool {
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = flags
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
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
    /// The root filesystem disk (attached read-only).
    pub disk: PathBuf,
    pub memory_mib: u64,
    pub cpus: u8,
    /// The builtin VMM's vsock `uds`: the agent's connection arrives at `<socket>_1024`.
    /// (QEMU gets its end of a socket pair instead, as descriptor [`AGENT_FD`].)
    pub socket: PathBuf,
}

/// The descriptor number of the agent's socket in QEMU (`-chardev socket,fd=3`).
pub const AGENT_FD: i32 = 3;

/// The kernel command line for `backend`. `reboot=`: how the agent's reboot(2) ends the VM
/// (see agent::boot::power_off). On an emulating KVM the builtin VMM also needs the
/// guest to leave out what that KVM cannot run (docs/vm.md).
pub fn cmdline(backend: Backend) -> String {
    let mut c = String::from("console=ttyS0 panic=-1 quiet pci=off");
    match backend {
        Backend::Builtin => {
            c.push_str(" reboot=k");
            if !hardware_kvm() {
                c.push_str(" noxsave clearcpuid=308,151,297,580");
            }
        }
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
                .arg(vm.cpus.to_string())
                .arg("--disk")
                .arg(format!("{},ro", vm.disk.display()))
                .arg("--vsock")
                .arg(format!("{GUEST_CID},uds={}", vm.socket.display()));
            c
        }
        Backend::Qemu => {
            let accel = if hardware_kvm() {
                "kvm"
            } else {
                // A bounded translation cache: the default (1 GiB) would be reserved per VM.
                "tcg,tb-size=64"
            };
            let cpu = if hardware_kvm() { "host" } else { "max" };
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
                .args(["-serial", "stdio"])
                .arg("-drive")
                .arg(format!(
                    "id=rootfs,file={},format=raw,if=none,readonly=on",
                    qemu_escape(&vm.disk)
                ))
                .args(["-device", "virtio-blk-device,drive=rootfs"])
                .args(["-device", "virtio-serial-device"])
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

/// Start the hypervisor: the guest's serial console (the hypervisor's stdout) goes to
/// `console`, its own messages (stderr) to `log`, and `agent` (QEMU's end of the agent
/// socket) becomes its descriptor [`AGENT_FD`]. It dies with its parent (the monitor), so a
/// monitor killed by SIGKILL takes its VM along. No path is opened for it but the ones on
/// its command line, and descriptors carry its output: this is where a jail wraps it.
pub fn spawn(
    mut cmd: Command,
    console: &Path,
    log: &Path,
    agent: Option<std::os::fd::OwnedFd>,
) -> Result<Child> {
    let open = |p: &Path| {
        std::fs::File::options()
            .create(true)
            .append(true)
            .open(p)
            .ctx(|| format!("open {}", p.display()))
    };
    cmd.stdout(open(console)?).stderr(open(log)?);
    let agent_raw = agent.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
    // SAFETY: dup2 and prctl with integer arguments, async-signal-safe, between fork and
    // exec; dup2 clears close-on-exec on the new descriptor.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = agent_raw {
                // dup2 onto itself would keep close-on-exec set.
                let r = if fd == AGENT_FD {
                    libc::fcntl(fd, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, AGENT_FD)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let what = format!("{:?}", cmd.get_program());
    let child = cmd.spawn().ctx(|| format!("start the hypervisor {what}"))?;
    drop(agent);
    Ok(child)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc() -> VmDesc {
        VmDesc {
            kernel: "/img/vmlinux".into(),
            initramfs: "/img/initramfs.cpio".into(),
            disk: "/cache/d,1.ext4".into(),
            memory_mib: 256,
            cpus: 1,
            socket: "/run/x/agent.sock".into(),
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
    fn builtin_command_line() {
        let a = args(&command(Backend::Builtin, &desc()).unwrap());
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
        assert_eq!(cmdline.contains("noxsave"), !hardware_kvm());
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
