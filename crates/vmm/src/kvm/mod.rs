//! The KVM side of the VM: the VM file descriptor with its memory slots and in-kernel
//! irqchip (`vm`), the per-vCPU CPUID (`cpuid`), the vCPU threads (`vcpu`), pausing them
//! (`pause`), the state a snapshot saves of both (`state`), and what a host whose KVM
//! emulates guest kernel code needs (`emulation`).

pub mod cpuid;
pub mod emulation;
pub mod pause;
pub mod state;
pub mod vcpu;
pub mod vm;
