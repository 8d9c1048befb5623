//! The system calls each VMM thread may make once it is jailed: one allow list per kind of
//! thread, kept as data next to the threads, compiled to a seccomp filter by bulkhead's own
//! compiler. Anything else kills the whole VMM (SECCOMP_RET_KILL_PROCESS), never the host.
//!
//! The number of distinct syscalls a thread may make is the attack surface a guest that has
//! taken over device emulation gets; the lists hold what the threads do after the jail is in
//! place, measured with strace on the test guest driving every device, plus what a Linux guest
//! adds (register access for the vCPU fallbacks, the serial console's stdin). Firecracker
//! allows 27 syscalls to its vCPU threads and 50 to its VMM thread.
//!
//! What the lists leave out, because it happens before the filters: opening anything (files,
//! /dev/kvm, taps, sockets, a snapshot's memory file), creating the VM and vCPUs, mapping
//! guest memory (from a snapshot's memory file too) and writing a restored state into KVM,
//! spawning the threads, signal handlers. Taking a snapshot adds KVM_GET_* requests only (KVM_GET_DIRTY_LOG for a diff): the
//! files arrive as descriptors on the API socket (recvmsg) and are written with write/lseek. Argument checks: `ioctl` only with the request numbers listed,
//! `fcntl` only F_GETFD, `mmap`/`mprotect` never with PROT_EXEC (no new executable memory).

use kvm_bindings::{
    kvm_clock_data, kvm_debugregs, kvm_dirty_log, kvm_irqchip, kvm_lapic_state, kvm_mp_state,
    kvm_msrs, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, KVMIO,
};
use vmm_sys_util::ioctl::{ioctl_expr, _IOC_NONE, _IOC_READ, _IOC_WRITE};

/// The threads of a running VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ThreadKind {
    /// One per vCPU: KVM_RUN and the exits it returns (port I/O, MMIO, the serial port).
    Vcpu,
    /// The device thread: the epoll loop, queue work, disks, taps, vsock sockets, stdin.
    EventLoop,
    /// The thread that started the others: waits for the end, stops the vCPUs, reports.
    Main,
}

impl ThreadKind {
    pub const ALL: [ThreadKind; 3] = [ThreadKind::Vcpu, ThreadKind::EventLoop, ThreadKind::Main];

    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::EventLoop => "event loop",
            ThreadKind::Main => "main",
        }
    }
}

/// What is called first on every VMM thread, before it does any work (the jail installs the
/// thread's seccomp filter there), and once on the main thread when every thread has been
/// through it.
pub trait ThreadHooks: Send + Sync {
    fn enter(&self, kind: ThreadKind) -> Result<(), String>;
    fn all_entered(&self) -> Result<(), String> {
        Ok(())
    }
}

/// No hooks: the VMM runs unconfined.
pub struct NoHooks;

impl ThreadHooks for NoHooks {
    fn enter(&self, _kind: ThreadKind) -> Result<(), String> {
        Ok(())
    }
}

/// When a syscall is allowed only with certain arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Only {
    /// The low 32 bits of argument `index` equal one of `values`. The arguments listed this
    /// way (an ioctl's request, fcntl's command) are `unsigned int` to the kernel, which
    /// ignores the upper half; a libc may fill it: musl's `ioctl` takes an `int` request and
    /// sign-extends it, so every `_IOR` request (bit 31 set) reaches the filter as
    /// 0xffffffff_8xxxxxxx. A full 64-bit compare would kill a VMM built on musl.
    OneOf { index: u32, values: &'static [u64] },
    /// Argument `index` has none of the bits of `mask`.
    NoneOf { index: u32, mask: u64 },
}

/// One allowed syscall.
#[derive(Clone, Copy, Debug)]
pub struct Allow {
    pub syscall: &'static str,
    pub only: Option<Only>,
    /// Who needs it (documentation, and the README's table).
    pub why: &'static str,
}

const fn any(syscall: &'static str, why: &'static str) -> Allow {
    Allow {
        syscall,
        only: None,
        why,
    }
}

const fn only(syscall: &'static str, only: Only, why: &'static str) -> Allow {
    Allow {
        syscall,
        only: Some(only),
        why,
    }
}

const fn kvm(dir: u32, nr: u32, size: usize) -> u64 {
    ioctl_expr(dir, KVMIO, nr, size as u32) as u64
}

pub const KVM_RUN: u64 = kvm(_IOC_NONE, 0x80, 0);
pub const KVM_GET_REGS: u64 = kvm(_IOC_READ, 0x81, std::mem::size_of::<kvm_regs>());
pub const KVM_SET_REGS: u64 = kvm(_IOC_WRITE, 0x82, std::mem::size_of::<kvm_regs>());
pub const KVM_GET_SREGS: u64 = kvm(_IOC_READ, 0x83, std::mem::size_of::<kvm_sregs>());
pub const KVM_SET_VCPU_EVENTS: u64 = kvm(_IOC_WRITE, 0xa0, std::mem::size_of::<kvm_vcpu_events>());
// A vCPU's state for a snapshot, read by the vCPU's own thread while it is paused.
pub const KVM_GET_MSRS: u64 = kvm(
    _IOC_READ | _IOC_WRITE,
    0x88,
    std::mem::size_of::<kvm_msrs>(),
);
pub const KVM_GET_LAPIC: u64 = kvm(_IOC_READ, 0x8e, std::mem::size_of::<kvm_lapic_state>());
pub const KVM_GET_MP_STATE: u64 = kvm(_IOC_READ, 0x98, std::mem::size_of::<kvm_mp_state>());
pub const KVM_GET_VCPU_EVENTS: u64 = kvm(_IOC_READ, 0x9f, std::mem::size_of::<kvm_vcpu_events>());
pub const KVM_GET_DEBUGREGS: u64 = kvm(_IOC_READ, 0xa1, std::mem::size_of::<kvm_debugregs>());
pub const KVM_GET_XSAVE: u64 = kvm(_IOC_READ, 0xa4, std::mem::size_of::<kvm_xsave>());
pub const KVM_GET_XCRS: u64 = kvm(_IOC_READ, 0xa6, std::mem::size_of::<kvm_xcrs>());
// The VM's in-kernel devices and clock for a snapshot, read by the event loop.
pub const KVM_GET_IRQCHIP: u64 = kvm(
    _IOC_READ | _IOC_WRITE,
    0x62,
    std::mem::size_of::<kvm_irqchip>(),
);
pub const KVM_GET_CLOCK: u64 = kvm(_IOC_READ, 0x7c, std::mem::size_of::<kvm_clock_data>());
pub const KVM_GET_PIT2: u64 = kvm(_IOC_READ, 0x9f, std::mem::size_of::<kvm_pit_state2>());
/// The pages vCPUs wrote, for a diff snapshot (VMs started with dirty page tracking).
pub const KVM_GET_DIRTY_LOG: u64 = kvm(_IOC_WRITE, 0x42, std::mem::size_of::<kvm_dirty_log>());

const NO_EXEC: Only = Only::NoneOf {
    index: 2,
    mask: libc::PROT_EXEC as u64,
};
const F_GETFD_ONLY: Only = Only::OneOf {
    index: 1,
    values: &[libc::F_GETFD as u64],
};

const ALLOCATOR: &str = "the memory allocator";
const THREAD_EXIT: &str = "thread exit (Rust's signal stack, the libc)";
const STD_CLOSE_CHECK: &str = "std's check that a descriptor is open before closing it";

/// vCPU threads.
pub const VCPU: &[Allow] = &[
    only(
        "ioctl",
        Only::OneOf {
            index: 1,
            values: &[
                KVM_RUN,
                KVM_GET_REGS,
                KVM_SET_REGS,
                KVM_GET_SREGS,
                KVM_SET_VCPU_EVENTS,
                KVM_GET_MP_STATE,
                KVM_GET_XSAVE,
                KVM_GET_XCRS,
                KVM_GET_DEBUGREGS,
                KVM_GET_LAPIC,
                KVM_GET_MSRS,
                KVM_GET_VCPU_EVENTS,
            ],
        },
        "KVM_RUN; the registers and events of exits the VMM completes itself, and the \
         register dump of a failing vCPU; a paused vCPU saving its own state for a snapshot \
         (MP state, XSAVE, XCRs, debug registers, LAPIC, MSRs, events)",
    ),
    any(
        "write",
        "serial output; irqfd, queue-activation and shutdown eventfds; log lines",
    ),
    any(
        "futex",
        "device state shared with the event loop; a paused vCPU waiting to resume",
    ),
    any("rt_sigreturn", "the kick signal that interrupts KVM_RUN"),
    any("clock_gettime", "timestamps where the vDSO cannot answer"),
    only("mmap", NO_EXEC, ALLOCATOR),
    only("mprotect", NO_EXEC, ALLOCATOR),
    any(
        "munmap",
        "the allocator; the vCPU's kvm_run mapping at exit",
    ),
    any("madvise", ALLOCATOR),
    any("brk", ALLOCATOR),
    any("mremap", ALLOCATOR),
    any("close", "the vCPU's descriptor at exit"),
    only("fcntl", F_GETFD_ONLY, STD_CLOSE_CHECK),
    any("sigaltstack", THREAD_EXIT),
    any("rt_sigprocmask", THREAD_EXIT),
    any("exit", THREAD_EXIT),
];

/// The event-loop (device) thread.
pub const EVENT_LOOP: &[Allow] = &[
    any("epoll_wait", "the event loop"),
    any("epoll_pwait", "the event loop (musl's epoll_wait)"),
    any(
        "epoll_ctl",
        "watching host sockets as connections come and go",
    ),
    any(
        "read",
        "queue and activation eventfds, tap frames, stdin for the serial console, disks",
    ),
    any(
        "write",
        "irqfds, tap frames, disks, log lines, stdout of the serial console, API answers, \
         snapshot files",
    ),
    any("lseek", "disk offsets; holes in a snapshot's memory file"),
    any("fdatasync", "virtio-blk flush"),
    any("recvfrom", "vsock host connections"),
    any(
        "sendto",
        "vsock host connections; descriptor requests to the supervisor",
    ),
    any(
        "accept4",
        "host connections to the vsock socket and to the API socket",
    ),
    any(
        "recvmsg",
        "descriptors from the supervisor (guest connections to <uds>_PORT); API requests \
         with the files of a snapshot",
    ),
    only(
        "ioctl",
        Only::OneOf {
            index: 1,
            values: &[
                // (`as _`: the constant's type differs between glibc and musl.)
                libc::FIONBIO as _,
                KVM_GET_IRQCHIP,
                KVM_GET_PIT2,
                KVM_GET_CLOCK,
                KVM_GET_DIRTY_LOG,
            ],
        },
        "non-blocking vsock and API connections; the PICs, IOAPIC, PIT and KVM clock for a \
         snapshot, and KVM's dirty log for a diff snapshot",
    ),
    any("getrandom", "virtio-rng; a snapshot's id"),
    any(
        "close",
        "closed vsock and API connections, a snapshot's files",
    ),
    any(
        "futex",
        "device state shared with the vCPUs; waiting for them to pause or save their state",
    ),
    any("clock_gettime", "timestamps where the vDSO cannot answer"),
    only("mmap", NO_EXEC, ALLOCATOR),
    only("mprotect", NO_EXEC, ALLOCATOR),
    any("munmap", ALLOCATOR),
    any("madvise", ALLOCATOR),
    any("brk", ALLOCATOR),
    any("mremap", ALLOCATOR),
    only("fcntl", F_GETFD_ONLY, STD_CLOSE_CHECK),
    any("sigaltstack", THREAD_EXIT),
    any("rt_sigprocmask", THREAD_EXIT),
    any("exit", THREAD_EXIT),
];

/// The main thread, once the others run.
pub const MAIN: &[Allow] = &[
    any(
        "futex",
        "joining the other threads; waiting for API work (a pause to kick, a shutdown timeout)",
    ),
    any(
        "getpid",
        "pthread_kill: kicking the vCPUs out of KVM_RUN (at the end, and for a pause)",
    ),
    any(
        "tgkill",
        "pthread_kill: kicking the vCPUs out of KVM_RUN (at the end, and for a pause)",
    ),
    any("tkill", "musl's pthread_kill (the same kicks)"),
    any("rt_sigprocmask", "pthread_kill"),
    any("clock_nanosleep", "pausing between kicks"),
    any(
        "write",
        "the serial console's last bytes, the report, log lines, the message to the supervisor",
    ),
    any("close", "the VM's descriptors when it is dropped"),
    any(
        "munmap",
        "guest memory when the VM is dropped; the allocator",
    ),
    only("mmap", NO_EXEC, ALLOCATOR),
    only("mprotect", NO_EXEC, ALLOCATOR),
    any("madvise", ALLOCATOR),
    any("brk", ALLOCATOR),
    any("mremap", ALLOCATOR),
    only("fcntl", F_GETFD_ONLY, STD_CLOSE_CHECK),
    any("clock_gettime", "timestamps where the vDSO cannot answer"),
    any("exit_group", "the end"),
];

/// The allow list of a kind of thread.
pub fn allowed(kind: ThreadKind) -> &'static [Allow] {
    match kind {
        ThreadKind::Vcpu => VCPU,
        ThreadKind::EventLoop => EVENT_LOOP,
        ThreadKind::Main => MAIN,
    }
}

/// The allow list as an OCI seccomp profile: default action kill-process, x86_64 only (any
/// other ABI is killed too), one rule per allowed argument value.
pub fn profile(kind: ThreadKind) -> oci::Seccomp {
    use oci::{SeccompAction, SeccompArg, SeccompOp, Syscall};
    let allow = |names: Vec<String>, args: Vec<SeccompArg>| Syscall {
        names,
        action: SeccompAction::Allow,
        errno_ret: None,
        args,
    };
    let mut plain = Vec::new();
    let mut rules = Vec::new();
    for a in allowed(kind) {
        match a.only {
            None => plain.push(a.syscall.to_string()),
            Some(Only::OneOf { index, values }) => {
                for &value in values {
                    rules.push(allow(
                        vec![a.syscall.into()],
                        vec![SeccompArg {
                            index,
                            value: u64::from(u32::MAX),
                            value_two: value,
                            op: SeccompOp::MaskedEqual,
                        }],
                    ));
                }
            }
            Some(Only::NoneOf { index, mask }) => rules.push(allow(
                vec![a.syscall.into()],
                vec![SeccompArg {
                    index,
                    value: mask,
                    value_two: 0,
                    op: SeccompOp::MaskedEqual,
                }],
            )),
        }
    }
    rules.insert(0, allow(plain, Vec::new()));
    oci::Seccomp {
        default_action: SeccompAction::KillProcess,
        default_errno_ret: None,
        architectures: vec![oci::Arch::X86_64],
        flags: Vec::new(),
        listener_path: None,
        listener_metadata: None,
        syscalls: rules,
    }
}

/// The compiled filter of each kind of thread.
#[derive(Debug, Clone)]
pub struct ThreadFilters {
    pub vcpu: seccomp::Filter,
    pub event_loop: seccomp::Filter,
    pub main: seccomp::Filter,
}

impl ThreadFilters {
    /// Compile the three lists. Numbers above the highest listed syscall are killed too (no
    /// ENOSYS stub: nothing probes for new syscalls here, and the default must hold for all).
    pub fn compile() -> Result<ThreadFilters, seccomp::Error> {
        let opts = seccomp::Options {
            enosys_above_profile: false,
        };
        let c = |k| seccomp::compile_with(&profile(k), &opts);
        Ok(ThreadFilters {
            vcpu: c(ThreadKind::Vcpu)?,
            event_loop: c(ThreadKind::EventLoop)?,
            main: c(ThreadKind::Main)?,
        })
    }

    pub fn get(&self, kind: ThreadKind) -> &seccomp::Filter {
        match kind {
            ThreadKind::Vcpu => &self.vcpu,
            ThreadKind::EventLoop => &self.event_loop,
            ThreadKind::Main => &self.main,
        }
    }
}

/// Distinct syscalls a kind of thread may make.
pub fn count(kind: ThreadKind) -> usize {
    let mut names: Vec<&str> = allowed(kind).iter().map(|a| a.syscall).collect();
    names.sort_unstable();
    names.dedup();
    names.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use seccomp::bpf::SeccompData;

    vmm_sys_util::ioctl_io_nr!(REF_KVM_RUN, KVMIO, 0x80);
    vmm_sys_util::ioctl_ior_nr!(REF_KVM_GET_REGS, KVMIO, 0x81, kvm_regs);
    vmm_sys_util::ioctl_iow_nr!(REF_KVM_SET_REGS, KVMIO, 0x82, kvm_regs);
    vmm_sys_util::ioctl_ior_nr!(REF_KVM_GET_SREGS, KVMIO, 0x83, kvm_sregs);
    vmm_sys_util::ioctl_iow_nr!(REF_KVM_SET_VCPU_EVENTS, KVMIO, 0xa0, kvm_vcpu_events);
    vmm_sys_util::ioctl_iowr_nr!(REF_KVM_GET_MSRS, KVMIO, 0x88, kvm_msrs);
    vmm_sys_util::ioctl_ior_nr!(REF_KVM_GET_LAPIC, KVMIO, 0x8e, kvm_lapic_state);
    vmm_sys_util::ioctl_ior_nr!(REF_KVM_GET_MP_STATE, KVMIO, 0x98, kvm_mp_state);
    vmm_sys_util::ioctl_ior_nr!(REF_KVM_GET_VCPU_EVENTS, KVMIO, 0x9f, kvm_vcpu_events);
    vmm_sys_util::ioctl_ior_nr!(REF_KVM_GET_DEBUGREGS, KVMIO, 0xa1, kvm_debugregs);
    vmm_sys_util::ioctl_ior_nr!(REF_KVM_GET_XSAVE, KVMIO, 0xa4, kvm_xsave);
    vmm_sys_util::ioctl_ior_nr!(REF_KVM_GET_XCRS, KVMIO, 0xa6, kvm_xcrs);
    vmm_sys_util::ioctl_iowr_nr!(REF_KVM_GET_IRQCHIP, KVMIO, 0x62, kvm_irqchip);
    vmm_sys_util::ioctl_ior_nr!(REF_KVM_GET_CLOCK, KVMIO, 0x7c, kvm_clock_data);
    vmm_sys_util::ioctl_ior_nr!(REF_KVM_GET_PIT2, KVMIO, 0x9f, kvm_pit_state2);
    vmm_sys_util::ioctl_iow_nr!(REF_KVM_GET_DIRTY_LOG, KVMIO, 0x42, kvm_dirty_log);

    #[test]
    fn ioctl_numbers_are_the_kernels() {
        assert_eq!(KVM_RUN, 0xae80);
        assert_eq!(KVM_RUN, REF_KVM_RUN() as u64);
        assert_eq!(KVM_GET_REGS, 0x8090_ae81);
        assert_eq!(KVM_GET_REGS, REF_KVM_GET_REGS() as u64);
        assert_eq!(KVM_SET_REGS, REF_KVM_SET_REGS() as u64);
        assert_eq!(KVM_GET_SREGS, REF_KVM_GET_SREGS() as u64);
        assert_eq!(KVM_SET_VCPU_EVENTS, REF_KVM_SET_VCPU_EVENTS() as u64);
        for (ours, reference) in [
            (KVM_GET_MSRS, REF_KVM_GET_MSRS()),
            (KVM_GET_LAPIC, REF_KVM_GET_LAPIC()),
            (KVM_GET_MP_STATE, REF_KVM_GET_MP_STATE()),
            (KVM_GET_VCPU_EVENTS, REF_KVM_GET_VCPU_EVENTS()),
            (KVM_GET_DEBUGREGS, REF_KVM_GET_DEBUGREGS()),
            (KVM_GET_XSAVE, REF_KVM_GET_XSAVE()),
            (KVM_GET_XCRS, REF_KVM_GET_XCRS()),
            (KVM_GET_IRQCHIP, REF_KVM_GET_IRQCHIP()),
            (KVM_GET_CLOCK, REF_KVM_GET_CLOCK()),
            (KVM_GET_PIT2, REF_KVM_GET_PIT2()),
            (KVM_GET_DIRTY_LOG, REF_KVM_GET_DIRTY_LOG()),
        ] {
            assert_eq!(ours, reference);
        }
        // The kernel's numbers for two of them, from its headers.
        assert_eq!(KVM_GET_XSAVE, 0x9000_aea4);
        assert_eq!(KVM_GET_IRQCHIP, 0xc208_ae62);
        assert_eq!(KVM_GET_DIRTY_LOG, 0x4010_ae42);
    }

    #[test]
    fn every_name_is_a_syscall_and_listed_once() {
        for kind in ThreadKind::ALL {
            let list = allowed(kind);
            for a in list {
                assert!(
                    seccomp::syscall_number(seccomp::Abi::X86_64, a.syscall).is_some(),
                    "{}: {}",
                    kind.name(),
                    a.syscall
                );
            }
            assert_eq!(
                count(kind),
                list.len(),
                "{} lists a syscall twice",
                kind.name()
            );
        }
        // At or below Firecracker's 27 (vCPU) and 50 (VMM thread).
        assert!(count(ThreadKind::Vcpu) <= 27);
        assert!(count(ThreadKind::EventLoop) + count(ThreadKind::Main) <= 50);
    }

    fn data(name: &str, args: [u64; 6]) -> SeccompData {
        SeccompData {
            nr: seccomp::syscall_number(seccomp::Abi::X86_64, name).unwrap(),
            arch: seccomp::AUDIT_ARCH_X86_64,
            instruction_pointer: 0,
            args,
        }
    }

    #[test]
    fn compiled_filters_decide_as_the_lists_say() {
        let f = ThreadFilters::compile().unwrap();
        let allow = seccomp::RET_ALLOW;
        let kill = seccomp::RET_KILL_PROCESS;
        let v = &f.vcpu;
        assert_eq!(v.evaluate(&data("ioctl", [5, KVM_RUN, 0, 0, 0, 0])), allow);
        assert_eq!(
            v.evaluate(&data("ioctl", [5, KVM_SET_VCPU_EVENTS, 0, 0, 0, 0])),
            allow
        );
        // KVM_SET_USER_MEMORY_REGION: a vCPU thread never changes the memory map.
        assert_eq!(
            v.evaluate(&data("ioctl", [5, 0x4020_ae46, 0, 0, 0, 0])),
            kill
        );
        assert_eq!(v.evaluate(&data("write", [1, 0, 1, 0, 0, 0])), allow);
        assert_eq!(v.evaluate(&data("read", [0; 6])), kill);
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let rx = (libc::PROT_READ | libc::PROT_EXEC) as u64;
        for t in ThreadKind::ALL {
            let f = f.get(t);
            assert_eq!(f.evaluate(&data("mmap", [0, 4096, rw, 0, 0, 0])), allow);
            assert_eq!(f.evaluate(&data("mmap", [0, 4096, rx, 0, 0, 0])), kill);
            assert_eq!(f.evaluate(&data("mprotect", [0, 4096, rx, 0, 0, 0])), kill);
            assert_eq!(
                f.evaluate(&data("fcntl", [3, libc::F_SETFL as u64, 0, 0, 0, 0])),
                kill
            );
            for forbidden in ["execve", "openat", "socket", "ptrace", "mount", "clone3"] {
                assert_eq!(
                    f.evaluate(&data(forbidden, [0; 6])),
                    kill,
                    "{} allows {forbidden}",
                    t.name()
                );
            }
            // A 32-bit call is a different ABI: killed.
            let mut d = data("write", [1, 0, 1, 0, 0, 0]);
            d.arch = seccomp::AUDIT_ARCH_I386;
            d.nr = 4;
            assert_ne!(f.evaluate(&d), allow);
        }
        let e = &f.event_loop;
        assert_eq!(
            e.evaluate(&data("ioctl", [9, libc::FIONBIO, 0, 0, 0, 0])),
            allow
        );
        assert_eq!(e.evaluate(&data("ioctl", [9, KVM_RUN, 0, 0, 0, 0])), kill);
        assert_eq!(
            e.evaluate(&data("ioctl", [9, KVM_GET_IRQCHIP, 0, 0, 0, 0])),
            allow
        );
        // The event loop reads the VM's state, never a vCPU's.
        assert_eq!(
            e.evaluate(&data("ioctl", [9, KVM_GET_XSAVE, 0, 0, 0, 0])),
            kill
        );
        assert_eq!(
            v.evaluate(&data("ioctl", [5, KVM_GET_LAPIC, 0, 0, 0, 0])),
            allow
        );
        // No KVM_SET_* of saved state after the jail: a restore writes it before.
        assert_eq!(
            v.evaluate(&data("ioctl", [5, 0x4400_ae8f, 0, 0, 0, 0])),
            kill
        );
        assert_eq!(e.evaluate(&data("getrandom", [0, 32, 0, 0, 0, 0])), allow);
        assert_eq!(f.main.evaluate(&data("tgkill", [1, 2, 34, 0, 0, 0])), allow);
        assert_eq!(f.main.evaluate(&data("read", [0; 6])), kill);
        // What musl calls for the same work: tkill for pthread_kill, epoll_pwait for
        // epoll_wait, and every ioctl request sign-extended (the kernel reads 32 bits).
        assert_eq!(f.main.evaluate(&data("tkill", [2, 34, 0, 0, 0, 0])), allow);
        assert_eq!(e.evaluate(&data("epoll_pwait", [4, 0, 8, 0, 0, 8])), allow);
        let sext = |r: u64| r | 0xffff_ffff_0000_0000;
        assert_eq!(KVM_GET_REGS >> 31, 1, "an _IOR request has bit 31 set");
        assert_eq!(
            v.evaluate(&data("ioctl", [5, sext(KVM_GET_REGS), 0, 0, 0, 0])),
            allow
        );
        assert_eq!(
            e.evaluate(&data("ioctl", [9, sext(KVM_GET_IRQCHIP), 0, 0, 0, 0])),
            allow
        );
        assert_eq!(
            v.evaluate(&data("ioctl", [5, sext(0x4020_ae46), 0, 0, 0, 0])),
            kill
        );
    }
}
