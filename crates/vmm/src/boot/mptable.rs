//! The Intel MultiProcessor Specification 1.4 table, which tells the guest how many CPUs it
//! has and where the IOAPIC is (Linux reads it when there is no ACPI).
//!
//! Layout: an MP floating pointer structure at the start of the EBDA (where Linux scans),
//! then the configuration table: one processor entry per vCPU, an ISA bus, the IOAPIC, one
//! I/O interrupt entry per IOAPIC pin and the two local interrupt entries (ExtINT on LINT0,
//! NMI on LINT1). The bytes are assembled by hand, little-endian, so no packed structs or
//! unsafe transmutes are needed.

use vm_memory::{Bytes, GuestAddress};

use crate::memory::GuestMemoryMmap;

use crate::error::{Error, Result};
use crate::memory::{HIGH_MEMORY_START, IOAPIC_START, LAPIC_START, MPTABLE_START};

/// IOAPIC pins the in-kernel irqchip provides.
pub const IOAPIC_PINS: u8 = 24;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
/// Family 6 signature and the FPU + APIC feature bits, as a real BIOS would report.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IOINTR: u8 = 3;
const ENTRY_LINTR: u8 = 4;

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// Builds the floating pointer and the configuration table for `num_cpus` vCPUs.
/// Returns the bytes to place at [`MPTABLE_START`].
pub fn build(num_cpus: u8) -> Vec<u8> {
    let ioapic_id = num_cpus; // the first APIC id after the vCPUs
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for cpu in 0..num_cpus {
        let mut flags = CPU_ENABLED;
        if cpu == 0 {
            flags |= CPU_BOOTPROCESSOR;
        }
        entries.extend_from_slice(&[ENTRY_PROCESSOR, cpu, APIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    count += 1;
    for pin in 0..IOAPIC_PINS {
        // ISA IRQ n -> IOAPIC pin n, polarity/trigger "conforms to bus" (0).
        entries.extend_from_slice(&[ENTRY_IOINTR, INT_TYPE_INT, 0, 0, 0, pin, ioapic_id, pin]);
        count += 1;
    }
    // LINT0 delivers the legacy PIC (ExtINT), LINT1 the NMI, on every local APIC (0xff).
    entries.extend_from_slice(&[ENTRY_LINTR, INT_TYPE_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[ENTRY_LINTR, INT_TYPE_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let table_addr = MPTABLE_START as u32 + 16;
    let table_len = (44 + entries.len()) as u16;
    let mut table = Vec::with_capacity(table_len as usize);
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&table_len.to_le_bytes());
    table.push(4); // spec revision 1.4
    table.push(0); // checksum, patched below
    table.extend_from_slice(b"BULKHEAD");
    table.extend_from_slice(b"MICROVM     ");
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&(LAPIC_START as u32).to_le_bytes());
    table.extend_from_slice(&0u32.to_le_bytes()); // extended table length/checksum
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut fp = Vec::with_capacity(16);
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&table_addr.to_le_bytes());
    fp.push(1); // length in 16-byte units
    fp.push(4); // spec revision
    fp.push(0); // checksum
    fp.extend_from_slice(&[0; 5]); // feature bytes: 0 = a configuration table is present
    fp[10] = checksum(&fp);

    fp.extend_from_slice(&table);
    fp
}

/// Writes the MP table into guest memory.
pub fn setup_mptable(mem: &GuestMemoryMmap, num_cpus: u8) -> Result<()> {
    let bytes = build(num_cpus);
    if MPTABLE_START + bytes.len() as u64 > HIGH_MEMORY_START {
        return Err(Error::Boot(format!(
            "MP table for {num_cpus} vCPUs ({} bytes) does not fit below 1 MiB",
            bytes.len()
        )));
    }
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))
        .map_err(|e| Error::Boot(format!("MP table at {MPTABLE_START:#x}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn checksums_and_cpu_count() {
        for cpus in [1u8, 2, 4, 254] {
            let b = build(cpus);
            assert_eq!(&b[0..4], b"_MP_");
            assert_eq!(sum(&b[0..16]), 0);
            let table = &b[16..];
            let len = u16::from_le_bytes([table[4], table[5]]) as usize;
            assert_eq!(len, table.len());
            assert_eq!(sum(table), 0);
            // Count processor entries by walking the variable-size entries.
            let mut off = 44;
            let mut n = 0;
            while off < len {
                if table[off] == ENTRY_PROCESSOR {
                    n += 1;
                    off += 20;
                } else {
                    off += 8;
                }
            }
            assert_eq!(n, cpus as usize);
            assert!(MPTABLE_START + b.len() as u64 <= HIGH_MEMORY_START);
        }
    }
}
