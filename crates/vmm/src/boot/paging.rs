//! Identity page tables for the 64-bit entry.
//!
//! Long mode cannot run without paging, so before the first instruction the VMM maps the
//! first 4 GiB of guest physical memory 1:1 with 2 MiB pages (PML4 -> four PDPT entries ->
//! four page directories of 512 entries). 4 GiB rather than the 1 GiB the boot protocol
//! needs, so that a small guest also reaches the MMIO hole (virtio-mmio, IOAPIC, LAPIC)
//! without building its own tables. Linux replaces them early; the test guest keeps them.

use vm_memory::{Bytes, GuestAddress};

use crate::memory::GuestMemoryMmap;

use crate::error::{Error, Result};
use crate::memory::{PDE_START, PDPTE_START, PML4_START};

const PRESENT_WRITABLE: u64 = 0x3;
const PAGE_SIZE_2M: u64 = 0x80;
/// Page directories at PDE_START, PDE_START + 4 KiB, ... (0xb000..0xf000).
const IDENTITY_MAP_GIB: u64 = 4;

/// Writes PML4, PDPT and PD; returns the value for CR3.
pub fn setup_identity_map(mem: &GuestMemoryMmap) -> Result<u64> {
    let write = |addr: u64, val: u64| {
        mem.write_obj(val, GuestAddress(addr))
            .map_err(|e| Error::Boot(format!("page table entry at {addr:#x}: {e}")))
    };
    write(PML4_START, PDPTE_START | PRESENT_WRITABLE)?;
    for gib in 0..IDENTITY_MAP_GIB {
        let pd = PDE_START + gib * 0x1000;
        write(PDPTE_START + gib * 8, pd | PRESENT_WRITABLE)?;
        for i in 0..512u64 {
            let addr = (gib << 30) | (i << 21);
            write(pd + i * 8, addr | PAGE_SIZE_2M | PRESENT_WRITABLE)?;
        }
    }
    Ok(PML4_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_first_4gib_identity() {
        let mem = crate::memory::guest_memory(&[(GuestAddress(0), 1 << 20)], false).unwrap();
        assert_eq!(setup_identity_map(&mem).unwrap(), PML4_START);
        // The last 2 MiB page below 4 GiB (LAPIC/IOAPIC) maps to itself.
        let pd3: u64 = mem.read_obj(GuestAddress(PDPTE_START + 3 * 8)).unwrap();
        let pde: u64 = mem
            .read_obj(GuestAddress((pd3 & !0xfff) + 511 * 8))
            .unwrap();
        assert_eq!(pde & !0xfff, 0xffe0_0000);
        assert_eq!(pde & 0xfff, 0x83);
    }
}
