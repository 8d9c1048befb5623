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
    /// The socket the transport reaches the host by: for QEMU the chardev connects to it,
    /// for the builtin VMM it is the vsock `uds` (the agent's connection arrives at
    /// `<socket>_1024`).
    pub socket: PathBuf,
    /// The guest's serial console goes here.
    pub console_log: PathBuf,
}

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
                .arg(format!("{GUEST_CID},uds={}", vm.socket.display()))
                .arg("--console")
                .arg(&vm.console_log);
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
                .arg("-chardev")
                .arg(format!(
                    "file,id=console,path={}",
                    qemu_escape(&vm.console_log)
                ))
                .args(["-serial", "chardev:console"])
                .arg("-drive")
                .arg(format!(
                    "id=rootfs,file={},format=raw,if=none,readonly=on",
                    qemu_escape(&vm.disk)
                ))
                .args(["-device", "virtio-blk-device,drive=rootfs"])
                .args(["-device", "virtio-serial-device"])
                .arg("-chardev")
                .arg(format!("socket,id=agent,path={}", qemu_escape(&vm.socket)))
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

/// Start the hypervisor. It dies with its parent (the monitor), so a monitor killed by
/// SIGKILL takes its VM along; its own output goes to `log`.
pub fn spawn(mut cmd: Command, log: &Path) -> Result<Child> {
    let out = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log)
        .ctx(|| format!("open {}", log.display()))?;
    let err = out.try_clone().ctx(|| "dup".into())?;
    cmd.stdout(out).stderr(err);
    // SAFETY: prctl with integer arguments, async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let what = format!("{:?}", cmd.get_program());
    cmd.spawn().ctx(|| format!("start the hypervisor {what}"))
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
            console_log: "/run/x/console.log".into(),
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
