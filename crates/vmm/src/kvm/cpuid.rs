//! CPUID for each vCPU: KVM's supported set (KVM_GET_SUPPORTED_CPUID), with the topology made
//! to match the VM (APIC ids, logical CPU counts) and features the VMM does not provide
//! hidden from the guest.

use kvm_bindings::CpuId;

use super::emulation::HostKvm;

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE: u32 = 0x4;
const LEAF_THERMAL: u32 = 0x6;
const LEAF_PMU: u32 = 0xa;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_KVM_FEATURES: u32 = 0x4000_0001;

const ECX_MONITOR: u32 = 1 << 3; // no MONITOR/MWAIT emulation
const ECX_PDCM: u32 = 1 << 15; // no perf capabilities MSR
const ECX_HYPERVISOR: u32 = 1 << 31; // tell the guest it is a guest
const EDX_HTT: u32 = 1 << 28;

/// KVM paravirtual features a guest uses only with more than one vCPU: halt-based spinlock
/// wake-ups (PV_UNHALT), TLB flushes and IPIs by hypercall (PV_TLB_FLUSH, PV_SEND_IPI) and
/// yield-to-vCPU (PV_SCHED_YIELD). On a KVM that emulates guest kernel code their
/// hypercalls never complete (a 2-vCPU Linux guest spins in the first PV IPI), so they are
/// hidden there; a guest then uses the LAPIC for IPIs and flushes, as on any machine without
/// them. Hardware KVM keeps them.
const KVM_PV_SMP_FEATURES: u32 = (1 << 7) | (1 << 9) | (1 << 11) | (1 << 13);

/// Bits needed to number `n` things (for topology shifts).
fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// Adjusts KVM's supported CPUID for vCPU `id` of `count`: one core per vCPU, one thread per
/// core, all in one package. `host` decides which KVM PV features the guest may use.
pub fn vcpu_cpuid(supported: &CpuId, id: u8, count: u8, host: HostKvm) -> CpuId {
    let mut cpuid = supported.clone();
    let count32 = u32::from(count);
    for e in cpuid.as_mut_slice() {
        match e.function {
            LEAF_FEATURES => {
                e.ebx = (e.ebx & 0x0000_ffff) | (u32::from(id) << 24) | (count32 << 16);
                e.ecx = (e.ecx & !(ECX_MONITOR | ECX_PDCM)) | ECX_HYPERVISOR;
                if count > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE => {
                // EAX[31:26]: cores per package - 1. EAX[25:14]: threads sharing this cache
                // - 1; only the L3 (level 3) is shared by all cores.
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level == 3 { count32 - 1 } else { 0 };
                e.eax = (e.eax & 0x3fff) | ((count32 - 1) << 26) | (sharing << 14);
            }
            LEAF_THERMAL => {
                e.eax = 0;
                e.ecx = 0;
            }
            LEAF_PMU => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => {
                match e.index {
                    0 => {
                        // SMT level: one thread per core.
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = 1 << 8;
                    }
                    1 => {
                        // Core level: `count` cores in the package.
                        e.eax = bits_for(count32);
                        e.ebx = count32;
                        e.ecx = (2 << 8) | 1;
                    }
                    n => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = n & 0xff;
                    }
                }
                e.edx = u32::from(id);
            }
            LEAF_KVM_FEATURES if host == HostKvm::Emulating => {
                e.eax &= !KVM_PV_SMP_FEATURES;
            }
            _ => {}
        }
    }
    cpuid
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn topology_and_masking() {
        let entries = [
            kvm_cpuid_entry2 {
                function: LEAF_FEATURES,
                ebx: 0x0001_0800,
                ecx: ECX_MONITOR | ECX_PDCM | 1,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: LEAF_TOPOLOGY,
                index: 1,
                ..Default::default()
            },
        ];
        let supported = CpuId::from_entries(&entries).unwrap();
        let c = vcpu_cpuid(&supported, 3, 4, HostKvm::Hardware);
        let s = c.as_slice();
        assert_eq!(s[0].ebx >> 24, 3);
        assert_eq!((s[0].ebx >> 16) & 0xff, 4);
        assert_eq!(s[0].ebx & 0xffff, 0x0800);
        assert_eq!(s[0].ecx, 1 | ECX_HYPERVISOR);
        assert_ne!(s[0].edx & EDX_HTT, 0);
        assert_eq!((s[1].eax, s[1].ebx, s[1].edx), (2, 4, 3));
        assert_eq!(bits_for(1), 0);
        assert_eq!(bits_for(5), 3);
    }

    #[test]
    fn pv_smp_features_hidden_only_on_emulating_hosts() {
        let pv_all = 0x3fff;
        let entries = [kvm_cpuid_entry2 {
            function: LEAF_KVM_FEATURES,
            eax: pv_all,
            ..Default::default()
        }];
        let supported = CpuId::from_entries(&entries).unwrap();
        let hw = vcpu_cpuid(&supported, 0, 2, HostKvm::Hardware);
        assert_eq!(hw.as_slice()[0].eax, pv_all);
        let soft = vcpu_cpuid(&supported, 0, 2, HostKvm::Emulating);
        // PV_UNHALT (7), PV_TLB_FLUSH (9), PV_SEND_IPI (11), PV_SCHED_YIELD (13) cleared.
        assert_eq!(soft.as_slice()[0].eax, pv_all & !0x2a80);
    }
}
