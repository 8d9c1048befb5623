//! Running on a KVM that emulates the guest kernel in software.
//!
//! Some hosts offer a working /dev/kvm without hardware virtualisation: `kvm_pvm` runs a
//! guest kernel that is not PVM-aware through KVM's x86 instruction emulator, one emulated
//! instruction at a time (user mode runs natively). A Linux guest boots there only with help
//! on both sides, and this module holds the VMM's side:
//! - [`HostKvm::detect`]: is the host such a KVM (`kvm_pvm` loaded, or a CPU without
//!   `vmx`/`svm`)?
//! - [`HostKvm::cmdline_additions`]: kernel parameters that keep the guest away from what
//!   the emulator cannot run (`xrstor`, `clac`, `popcnt`) or runs slowly (byte-wise `rep
//!   movsb`), and that enable the guest kernel's own fix-up for the host's `syscall` quirk.
//! - [`recover`]: instructions the emulator rejects with an emulation failure. KVM reports
//!   the instruction bytes with the failure: `int3` (the kernel's boot-time self-test) is
//!   completed by the VMM as the CPU would (RIP past it, #BP injected), `fwait` (issued when
//!   a task's FPU state is dropped, with no x87 exception ever pending here) is skipped.
//!   Everything else stays a fatal error. Each fallback is counted ([`Fallbacks`]).
//! - The CPUID side (KVM PV features whose hypercalls spin forever on this host) is in
//!   `cpuid.rs`, driven by the same detection.
//!
//! On hardware KVM none of this triggers: the emulator is only used for MMIO and the like,
//! and the guest's `int3`/`fwait` never reach it.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use kvm_bindings::{
    KVM_INTERNAL_ERROR_EMULATION, KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES,
};
use kvm_ioctls::VcpuFd;

/// Kernel parameters a Linux guest needs on an emulating KVM:
/// - `clearcpuid=...`: XSAVE (154: the emulator has no `xsave`/`xrstor`, so the FPU code
///   uses `fxsave`), SMAP (308: no `clac`/`stac` in the entry code), POPCNT (151), ERMS
///   (297) and FSRM (580), so memcpy/memset use `rep movsq/stosq`, eight bytes per emulated
///   iteration instead of one. (`noxsave` would do the same for XSAVE, but the kernel does
///   not register it as a parameter and passes it on to init as an argument.)
/// - `noreplace-smp`: a guest with one vCPU would otherwise rewrite every `lock` prefix of
///   its text at boot, one emulated text poke each (3 s).
/// - `percpu_alloc=page`: per-CPU areas from single pages; the default embeds them in a
///   2 MiB unit that is zeroed instruction by instruction (2 s).
/// - `rodata=off`: skips write-protecting kernel text and rodata, which splits and rewrites
///   the kernel's page tables one emulated page at a time (2 s). The guest kernel loses W^X
///   for its own text: a trade made only on these hosts, which exist for development.
/// - `pvm.syscall_fixup=1`: turns on the guest kernel patch (guest/patches/) that completes
///   a user-mode `syscall` this host leaves in user mode. Unknown to other kernels, which
///   ignore dotted parameters.
const EMULATING_HOST_CMDLINE: [&str; 5] = [
    "clearcpuid=154,308,151,297,580",
    "noreplace-smp",
    "percpu_alloc=page",
    "rodata=off",
    "pvm.syscall_fixup=1",
];

/// How the host's KVM runs guest kernel code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKvm {
    /// Hardware virtualisation (VMX or SVM): guest code runs on the CPU.
    Hardware,
    /// Guest kernel code goes through KVM's instruction emulator (kvm_pvm, or no VMX/SVM).
    Emulating,
}

impl HostKvm {
    /// Reads /sys/module/kvm_pvm and the CPU flags in /proc/cpuinfo.
    pub fn detect() -> HostKvm {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self::from_facts(Path::new("/sys/module/kvm_pvm").exists(), &cpuinfo)
    }

    fn from_facts(kvm_pvm_loaded: bool, cpuinfo: &str) -> HostKvm {
        let hw = cpuinfo
            .lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
        if kvm_pvm_loaded || !hw {
            HostKvm::Emulating
        } else {
            HostKvm::Hardware
        }
    }

    /// Parameters to add to the guest kernel's command line on this host.
    pub fn cmdline_additions(self) -> &'static [&'static str] {
        match self {
            HostKvm::Hardware => &[],
            HostKvm::Emulating => &EMULATING_HOST_CMDLINE,
        }
    }
}

/// How often each fallback ran, over all vCPUs.
#[derive(Debug, Default)]
pub struct Fallbacks {
    int3: AtomicU64,
    fwait: AtomicU64,
}

impl Fallbacks {
    /// `(int3 injected as #BP, fwait skipped)`.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.int3.load(Ordering::Relaxed),
            self.fwait.load(Ordering::Relaxed),
        )
    }
}

impl std::fmt::Display for Fallbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (int3, fwait) = self.counts();
        write!(
            f,
            "emulation fallbacks: int3 -> #BP {int3}, fwait skipped {fwait}"
        )
    }
}

const INT3: u8 = 0xcc;
const FWAIT: u8 = 0x9b;
const BP_VECTOR: u8 = 3;

/// What KVM said about an emulation failure: the instruction bytes, when it reported them.
fn failed_instruction(fd: &mut VcpuFd) -> (u32, Option<Vec<u8>>) {
    // SAFETY: called right after KVM_RUN returned KVM_EXIT_INTERNAL_ERROR, for which KVM fills
    // the `internal` / `emulation_failure` members of the exit union (they share the leading
    // `suberror` field); the fields read are plain integers and a byte array.
    let failure = unsafe { fd.get_kvm_run().__bindgen_anon_1.emulation_failure };
    let suberror = failure.suberror;
    if suberror != KVM_INTERNAL_ERROR_EMULATION
        || failure.flags & u64::from(KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) == 0
    {
        return (suberror, None);
    }
    // SAFETY: the flag above says KVM wrote `insn_size` and `insn_bytes`.
    let insn = unsafe { failure.__bindgen_anon_1.__bindgen_anon_1 };
    let len = usize::from(insn.insn_size).min(insn.insn_bytes.len());
    (suberror, Some(insn.insn_bytes[..len].to_vec()))
}

/// Handles KVM_EXIT_INTERNAL_ERROR: `Ok` when a fallback completed the instruction and the
/// vCPU can run on, otherwise the description of the failure for the fatal error.
pub fn recover(fd: &mut VcpuFd, fallbacks: &Fallbacks) -> Result<(), String> {
    let (suberror, bytes) = failed_instruction(fd);
    let what = match suberror {
        1 => "emulation failure",
        2 => "simultaneous exceptions",
        3 => "delivery event",
        _ => "unknown",
    };
    let fatal =
        |detail: &str| format!("KVM_EXIT_INTERNAL_ERROR (suberror {suberror}: {what}){detail}");
    let Some(bytes) = bytes else {
        return Err(fatal(""));
    };
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let fatal_insn = || fatal(&format!(" at instruction bytes [{}]", hex.join(" ")));
    match bytes.first() {
        Some(&INT3) => {
            skip_instruction(fd, 1).map_err(|e| format!("{} ({e})", fatal_insn()))?;
            inject_breakpoint(fd).map_err(|e| format!("{} ({e})", fatal_insn()))?;
            if fallbacks.int3.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::debug!("emulation failure on int3: completed in the VMM (#BP injected)");
            }
            Ok(())
        }
        Some(&FWAIT) => {
            skip_instruction(fd, 1).map_err(|e| format!("{} ({e})", fatal_insn()))?;
            if fallbacks.fwait.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::debug!("emulation failure on fwait: skipped in the VMM");
            }
            Ok(())
        }
        _ => Err(fatal_insn()),
    }
}

fn skip_instruction(fd: &VcpuFd, len: u64) -> Result<(), String> {
    let mut regs = fd.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    regs.rip = regs.rip.wrapping_add(len);
    fd.set_regs(&regs).map_err(|e| format!("KVM_SET_REGS: {e}"))
}

/// Queues #BP with RIP already past the `int3`, which is the frame the CPU would push.
fn inject_breakpoint(fd: &VcpuFd) -> Result<(), String> {
    let mut events = fd
        .get_vcpu_events()
        .map_err(|e| format!("KVM_GET_VCPU_EVENTS: {e}"))?;
    events.exception.injected = 1;
    events.exception.nr = BP_VECTOR;
    events.exception.has_error_code = 0;
    events.exception.error_code = 0;
    events.exception.pending = 0;
    fd.set_vcpu_events(&events)
        .map_err(|e| format!("KVM_SET_VCPU_EVENTS: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_and_cmdline() {
        let hw = "processor\t: 0\nflags\t\t: fpu vme vmx sse2\n";
        let soft = "processor\t: 0\nflags\t\t: fpu vme sse2 hypervisor\n";
        assert_eq!(HostKvm::from_facts(false, hw), HostKvm::Hardware);
        assert_eq!(HostKvm::from_facts(false, soft), HostKvm::Emulating);
        assert_eq!(HostKvm::from_facts(true, hw), HostKvm::Emulating);
        assert!(HostKvm::Hardware.cmdline_additions().is_empty());
        let add = HostKvm::Emulating.cmdline_additions();
        assert!(add.contains(&"noreplace-smp") && add.contains(&"pvm.syscall_fixup=1"));
    }

    #[test]
    fn counts_display() {
        let f = Fallbacks::default();
        f.int3.fetch_add(1, Ordering::Relaxed);
        f.fwait.fetch_add(5, Ordering::Relaxed);
        assert_eq!(f.counts(), (1, 5));
        assert_eq!(
            f.to_string(),
            "emulation fallbacks: int3 -> #BP 1, fwait skipped 5"
        );
    }
}
