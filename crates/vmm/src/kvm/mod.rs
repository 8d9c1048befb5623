//! The KVM side of the VM: the VM file descriptor with its memory slots and in-kernel
//! irqchip (`vm`), the per-vCPU CPUID (`cpuid`) and the vCPU threads (`vcpu`).

pub mod cpuid;
pub mod vcpu;
pub mod vm;
