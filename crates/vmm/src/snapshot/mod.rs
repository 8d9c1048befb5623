//! Snapshots of a running VM and restoring them.
//!
//! A snapshot is two files:
//! - the **state file** (`format`): versioned and checksummed; every vCPU's registers, special
//!   registers, XSAVE area, XCRs, debug registers, LAPIC, MSRs, MP state and pending events
//!   (`kvm::state`), the in-kernel PICs, IOAPIC and PIT and the KVM clock, the serial port's
//!   registers and FIFO, the i8042's output buffer, every virtio-mmio device's transport
//!   registers and queues (with their indices), and the VM's configuration;
//! - the **memory file** (`memory`): guest RAM behind a one-page header, all-zero pages left
//!   as holes. Both carry the same random id, so a memory file cannot be paired with another
//!   snapshot's state.
//!
//! Taking one (`control`): the vCPUs are paused (and stay paused until resumed), each saves
//! its own state on its own thread, the device thread saves the rest and writes both files
//! into descriptors the client passed over the API socket (the jailed VMM opens no path).
//!
//! Restoring ([`Restore::open`], then [`crate::Vm::restore_with`]): everything that can refuse
//! is checked before anything exists -- the state file's checksum and length, the bulkhead
//! version that wrote it, the host's CPUID against the one recorded, the KVM capabilities, the
//! memory file's id and size, and the devices' host side (disks with their sizes, taps). Then
//! the VM is built as a booted one would be (same devices at the same addresses), RAM is
//! mapped from the memory file MAP_PRIVATE, and the saved state is written back.

pub mod format;
pub mod memory;

use std::fs::File;
use std::path::{Path, PathBuf};

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_MAX_CPUID_ENTRIES};
use serde::{Deserialize, Serialize};
use vm_superio::serial::SerialState;

use crate::config::VmConfig;
use crate::devices::i8042::I8042Snapshot;
use crate::devices::serial::SerialStateDef;
use crate::devices::virtio::mmio::TransportState;
use crate::error::{Error, Result};
use crate::kvm::state::{check_support, VcpuState, VmKvmState};
use crate::kvm::vm::open_kvm;
use crate::logger::{ms, since_process_start};

/// Everything the state file holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct VmState {
    /// 32 hex digits, also in the memory file's header.
    pub id: String,
    /// A diff snapshot: the id of the snapshot whose memory its memory file applies to.
    #[serde(default)]
    pub follows: Option<String>,
    /// The VM's configuration (its devices' host side: disk paths, taps, the vsock socket).
    pub config: VmConfig,
    pub memory_bytes: u64,
    /// The size of each disk (config order) when the snapshot was taken.
    pub disk_bytes: Vec<u64>,
    /// KVM_GET_SUPPORTED_CPUID of the host that took it: a restore needs the same.
    pub host_cpuid: Vec<kvm_cpuid_entry2>,
    pub kvm: VmKvmState,
    pub vcpus: Vec<VcpuState>,
    #[serde(with = "SerialStateDef")]
    pub serial: SerialState,
    pub i8042: I8042Snapshot,
    pub virtio: Vec<TransportState>,
}

fn refuse(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Snapshot(format!("snapshot {}: {reason}", path.display()))
}

impl VmState {
    /// The state file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = format::version_line().into_bytes();
        body.push(b'\n');
        // Serializing plain data (numbers, strings, byte arrays) into a Vec cannot fail.
        serde_json::to_writer(&mut body, self).expect("the VM state serializes");
        format::frame(&body)
    }

    /// Parses a state file's bytes; the error says what is wrong with it.
    pub fn decode(bytes: &[u8]) -> std::result::Result<VmState, String> {
        let body = format::unframe(bytes)?;
        let nl = body
            .iter()
            .position(|b| *b == b'\n')
            .ok_or("corrupted (no version line)")?;
        let version = String::from_utf8_lossy(&body[..nl]);
        if version != format::version_line() {
            return Err(format!(
                "written by {version}, this is {}: restore it with the same version",
                format::version_line()
            ));
        }
        serde_json::from_slice(&body[nl + 1..]).map_err(|e| format!("corrupted state: {e}"))
    }

    /// Reads and checks a state file.
    pub fn read(path: &Path) -> Result<VmState> {
        let bytes = std::fs::read(path).map_err(|e| refuse(path, e))?;
        VmState::decode(&bytes).map_err(|e| refuse(path, e))
    }

    /// Writes a state file (tools and tests; the VMM writes through a descriptor).
    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.encode()).map_err(|e| refuse(path, e))
    }
}

/// An entry of KVM_GET_SUPPORTED_CPUID without the fields that name the host CPU the call ran
/// on (KVM passes the caller's APIC id through): leaf 1 EBX[31:24], the x2APIC id in EDX of
/// leaves 0xb and 0x1f, AMD's extended APIC id (leaf 0x8000001e EAX).
fn cpuid_key(e: &kvm_cpuid_entry2) -> (u32, u32, u32, u32, u32, u32, u32) {
    let (mut eax, mut ebx, mut edx) = (e.eax, e.ebx, e.edx);
    match e.function {
        0x1 => ebx &= 0x00ff_ffff,
        0xb | 0x1f => edx = 0,
        0x8000_001e => eax = 0,
        _ => {}
    }
    (e.function, e.index, e.flags, eax, ebx, e.ecx, edx)
}

/// The first CPUID leaf that differs between two hosts' supported tables, if any.
pub fn cpuid_difference(saved: &[kvm_cpuid_entry2], here: &[kvm_cpuid_entry2]) -> Option<String> {
    let mut a: Vec<_> = saved.iter().map(cpuid_key).collect();
    let mut b: Vec<_> = here.iter().map(cpuid_key).collect();
    a.sort_unstable();
    b.sort_unstable();
    if a == b {
        return None;
    }
    let leaf = a
        .iter()
        .zip(b.iter())
        .find(|(x, y)| x != y)
        .map(|(x, _)| (x.0, x.1))
        .or_else(|| a.get(b.len()).or(b.get(a.len())).map(|x| (x.0, x.1)));
    Some(match leaf {
        Some((f, i)) => format!("leaf {f:#x} subleaf {i}"),
        None => "the number of leaves".into(),
    })
}

/// A snapshot checked against this host, not restored yet.
pub struct Restore {
    pub state: VmState,
    pub state_path: PathBuf,
    pub mem_path: PathBuf,
    pub mem_file: File,
    /// This host's KVM_GET_SUPPORTED_CPUID, as compared with the snapshot's.
    pub host_cpuid: CpuId,
}

impl Restore {
    /// Reads and checks everything that can make the restore fail on input: nothing is
    /// created, and the error names the file and the reason.
    pub fn open(state_path: &Path, mem_path: &Path) -> Result<Restore> {
        let mut state = VmState::read(state_path)?;
        // The saved PIT state decides whether the restored VM has one (files written before
        // the PIT was optional always hold it and have no `pit` in their config).
        state.config.pit = state.kvm.pit.is_some();
        tracing::debug!(
            "state file read {} after VMM process start",
            ms(since_process_start())
        );
        let kvm = open_kvm()?;
        check_support(&kvm, state.config.pit).map_err(|e| refuse(state_path, e))?;
        let here = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(Error::kvm("KVM_GET_SUPPORTED_CPUID"))?;
        if let Some(leaf) = cpuid_difference(&state.host_cpuid, here.as_slice()) {
            return Err(refuse(
                state_path,
                format!(
                    "taken on a CPU with a different CPUID ({leaf} differs): restore it on \
                     the same kind of host"
                ),
            ));
        }
        if state.vcpus.len() != usize::from(state.config.cpus)
            || state.memory_bytes != state.config.memory_mib << 20
        {
            return Err(refuse(
                state_path,
                "corrupted (inconsistent vCPUs or memory)",
            ));
        }
        let mem_file = File::open(mem_path).map_err(|e| Error::File {
            what: "memory file",
            path: mem_path.to_path_buf(),
            source: e,
        })?;
        memory::check(&mem_file, &state.id, state.memory_bytes)
            .map_err(|e| Error::Snapshot(format!("memory file {}: {e}", mem_path.display())))?;
        state.config.validate_devices()?;
        let disks = &state.config.disks;
        for ((d, now), then) in disks
            .iter()
            .zip(state.config.disk_sizes())
            .zip(&state.disk_bytes)
        {
            if now != *then {
                return Err(refuse(
                    state_path,
                    format!(
                        "disk {} is {now} bytes, it was {then} when the snapshot was taken",
                        d.path.display()
                    ),
                ));
            }
        }
        for (i, n) in state.config.net.iter().enumerate() {
            if !Path::new("/sys/class/net").join(&n.tap).exists() {
                return Err(Error::config(
                    format!("net[{i}].tap"),
                    format!("{}: no such interface (the snapshot's VM used it)", n.tap),
                ));
            }
        }
        Ok(Restore {
            state,
            state_path: state_path.to_path_buf(),
            mem_path: mem_path.to_path_buf(),
            mem_file,
            host_cpuid: here,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuid_tables_compare_by_content() {
        let e = |function, eax| kvm_cpuid_entry2 {
            function,
            eax,
            ..Default::default()
        };
        let a = [e(0, 13), e(7, 1)];
        let b = [e(7, 1), e(0, 13)];
        assert_eq!(cpuid_difference(&a, &b), None);
        // The APIC id of the CPU that asked KVM is not a difference.
        let mut apic = [e(0, 13), e(7, 1), e(1, 0)];
        let mut other_cpu = apic;
        apic[2].ebx = 0x0100_0800;
        other_cpu[2].ebx = 0x0000_0800;
        assert_eq!(cpuid_difference(&apic, &other_cpu), None);
        other_cpu[2].ebx = 0x0000_0801;
        assert!(cpuid_difference(&apic, &other_cpu).is_some());
        let c = [e(0, 13), e(7, 3)];
        assert_eq!(
            cpuid_difference(&a, &c).unwrap(),
            "leaf 0x7 subleaf 0".to_string()
        );
        assert!(cpuid_difference(&a, &a[..1]).is_some());
    }
}
