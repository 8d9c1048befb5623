//! The KVM side of the VM: the VM file descriptor with its memory slots and in-kernel
//! irqchip (`vm`), the per-vCPU CPUID (`cpuid`), the vCPU threads (`vcpu`), pausing them
//! (`pause`) and the state a snapshot saves of both (`state`).

pub mod cpuid;
pub mod pause;
pub mod state;
pub mod vcpu;
pub mod vm;
