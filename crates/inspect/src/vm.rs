//! Is this inside a virtual machine? The evidence a guest can see:
//! - CPUID leaf 1, ECX bit 31 (the "hypervisor present" bit), and the
//!   hypervisor's signature at leaf 0x40000000 ("KVMKVMKVM", "Microsoft Hv",
//!   "VMwareVMware", "XenVMMXenVMM", "TCGTCGTCGTCG" for QEMU's emulator...);
//! - the `hypervisor` flag in /proc/cpuinfo (the kernel's view of that bit);
//! - DMI strings in /sys/class/dmi/id (`sys_vendor`, `product_name`), absent
//!   on machines without firmware tables (Firecracker, our micro-VMs);
//! - /sys/hypervisor/type (Xen).
//!
//! Every process visible in this kernel's /proc runs on this kernel, so a
//! VM boundary cannot stand between the inspector and the process it looks
//! at. The layer is in force when this kernel itself was booted by bulkhead
//! for one workload — a VM-backed container or `sandbox --vm`: its command
//! line carries the agent's `bulkhead.transport=` parameter (a process cannot
//! change the command line its kernel booted with). Otherwise the evidence
//! says what the machine itself is. (A machine that is a VM reports so for the
//! host and for every container on it alike; a nested hypervisor may hide
//! itself entirely — absence of evidence is not proof of bare metal.)

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    pub status: String,
    pub in_force: bool,
    /// The kernel the process runs on, as seen from the host.
    pub kernel: String,
    /// The machine shows signs of running under a hypervisor.
    pub machine_is_vm: bool,
    /// The hypervisor's name or signature, when it tells.
    pub hypervisor: Option<String>,
    pub evidence: Vec<String>,
}

#[cfg(target_arch = "x86_64")]
fn cpuid(leaf: u32) -> [u32; 4] {
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86_64 CPU and only reads identification registers.
    let r = unsafe { std::arch::x86_64::__cpuid(leaf) };
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// (hypervisor bit, signature at 0x40000000).
#[cfg(target_arch = "x86_64")]
pub fn cpuid_hypervisor() -> (bool, Option<String>) {
    let bit = cpuid(1)[2] & (1 << 31) != 0;
    if !bit {
        return (false, None);
    }
    let r = cpuid(0x4000_0000);
    let mut sig = Vec::with_capacity(12);
    for w in [r[1], r[2], r[3]] {
        sig.extend_from_slice(&w.to_le_bytes());
    }
    let sig: String = String::from_utf8_lossy(&sig)
        .trim_end_matches('\0')
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    (true, (!sig.is_empty()).then_some(sig))
}

#[cfg(not(target_arch = "x86_64"))]
pub fn cpuid_hypervisor() -> (bool, Option<String>) {
    (false, None)
}

/// A readable name for a CPUID signature.
pub fn hypervisor_name(sig: &str) -> String {
    let name = match sig {
        "KVMKVMKVM" => "KVM",
        "Microsoft Hv" => "Hyper-V",
        "VMwareVMware" => "VMware",
        "XenVMMXenVMM" => "Xen",
        "TCGTCGTCGTCG" => "QEMU (TCG)",
        " lrpepyh  vr" | "prl hyperv  " => "Parallels",
        "bhyve bhyve " => "bhyve",
        "ACRNACRNACRN" => "ACRN",
        "QNXQVMBSQG" => "QNX",
        "VBoxVBoxVBox" => "VirtualBox",
        _ => return format!("unknown ({sig:?})"),
    };
    name.to_string()
}

fn read(p: &str) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The backend of the bulkhead micro-VM this kernel was booted in, from its command line.
pub fn bulkhead_guest(cmdline: &str) -> Option<String> {
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    if !words.iter().any(|w| w.starts_with("bulkhead.transport=")) {
        return None;
    }
    Some(
        words
            .iter()
            .find_map(|w| w.strip_prefix("bulkhead.backend="))
            .unwrap_or("unnamed")
            .to_string(),
    )
}

pub fn inspect() -> Layer {
    let mut evidence = Vec::new();
    let mut hypervisor = None;
    let (bit, sig) = cpuid_hypervisor();
    if bit {
        match &sig {
            Some(s) => {
                let name = hypervisor_name(s);
                evidence.push(format!(
                    "CPUID hypervisor bit set, signature {s:?} ({name})"
                ));
                hypervisor = Some(name);
            }
            None => evidence.push("CPUID hypervisor bit set".into()),
        }
    }
    if let Some(info) = read("/proc/cpuinfo") {
        if info
            .lines()
            .find(|l| l.starts_with("flags"))
            .is_some_and(|l| l.split_whitespace().any(|f| f == "hypervisor"))
        {
            evidence.push("/proc/cpuinfo flags: hypervisor".into());
        }
    }
    let vendor = read("/sys/class/dmi/id/sys_vendor");
    let product = read("/sys/class/dmi/id/product_name");
    if vendor.is_some() || product.is_some() {
        let v = vendor.unwrap_or_default();
        let p = product.unwrap_or_default();
        let vm_words = [
            "QEMU",
            "KVM",
            "VMware",
            "VirtualBox",
            "Xen",
            "Microsoft Corporation",
            "Amazon EC2",
            "Google",
            "Firecracker",
            "Cloud Hypervisor",
            "Bochs",
            "Parallels",
        ];
        let looks_vm = vm_words.iter().any(|w| v.contains(w) || p.contains(w));
        evidence.push(format!(
            "DMI: vendor {v:?}, product {p:?}{}",
            if looks_vm {
                " (a virtual machine's)"
            } else {
                ""
            }
        ));
        if looks_vm && hypervisor.is_none() {
            hypervisor = Some(format!("{v} {p}").trim().to_string());
        }
    } else {
        evidence.push("no DMI tables (/sys/class/dmi/id absent)".into());
    }
    if let Some(t) = read("/sys/hypervisor/type") {
        evidence.push(format!("/sys/hypervisor/type: {t}"));
        hypervisor.get_or_insert(t);
    }
    let machine_is_vm = bit || hypervisor.is_some();
    let guest = read("/proc/cmdline").and_then(|c| bulkhead_guest(&c));
    if let Some(b) = &guest {
        evidence.push(format!(
            "/proc/cmdline: bulkhead.transport= (booted by bulkhead for this workload, backend {b})"
        ));
    }
    Layer {
        status: if guest.is_some() {
            "own kernel"
        } else {
            "host"
        }
        .into(),
        in_force: guest.is_some(),
        kernel: match &guest {
            Some(b) => format!("own kernel: a bulkhead micro-VM ({b})"),
            None => "same kernel as the host".into(),
        },
        machine_is_vm,
        hypervisor,
        evidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(hypervisor_name("KVMKVMKVM"), "KVM");
        assert!(hypervisor_name("zzz").starts_with("unknown"));
    }

    #[test]
    fn cpuid_agrees_with_cpuinfo() {
        let (bit, _) = cpuid_hypervisor();
        let flag = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap()
            .lines()
            .find(|l| l.starts_with("flags"))
            .unwrap()
            .split_whitespace()
            .any(|f| f == "hypervisor");
        assert_eq!(bit, flag);
        let l = inspect();
        assert_eq!(l.machine_is_vm, bit || l.hypervisor.is_some());
        // The tests run on a host, not in a guest bulkhead booted.
        assert!(!l.in_force);
        assert_eq!(l.kernel, "same kernel as the host");
    }

    #[test]
    fn bulkhead_guests_are_recognised_by_their_command_line() {
        let c = "console=ttyS0 quiet bulkhead.transport=port:bulkhead.agent bulkhead.backend=qemu";
        assert_eq!(bulkhead_guest(c).as_deref(), Some("qemu"));
        assert_eq!(
            bulkhead_guest("bulkhead.transport=vsock:1024").as_deref(),
            Some("unnamed")
        );
        assert_eq!(bulkhead_guest("console=ttyS0 root=/dev/vda"), None);
        assert_eq!(bulkhead_guest("bulkhead.backend=qemu"), None);
    }
}
