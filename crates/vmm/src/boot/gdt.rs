//! The boot GDT and the segment registers derived from it.
//!
//! KVM takes segment registers as already-loaded descriptors (`kvm_segment`), but the guest
//! may reload them from the GDT later, so both views are built from the same 64-bit entries.

use kvm_bindings::kvm_segment;

/// Selector indexes in the boot GDT: null, code, data, TSS. Linux's boot protocol wants
/// __BOOT_CS = 0x10 and __BOOT_DS = 0x18, so code and data sit at entries 2 and 3.
pub const CODE_INDEX: u16 = 2;
pub const DATA_INDEX: u16 = 3;
pub const TSS_INDEX: u16 = 4;

/// Builds a descriptor from flags (the high nibble of byte 6 and the access byte), base and
/// limit, in the layout the CPU reads.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// 64-bit long mode: L=1, present, ring 0, code execute/read.
pub const CODE64: u64 = gdt_entry(0xa09b, 0, 0xfffff);
/// 32-bit flat code (PVH entry): D=1, G=1.
pub const CODE32: u64 = gdt_entry(0xc09b, 0, 0xfffff);
/// Flat read/write data, 4 GiB, G=1 D/B=1.
pub const DATA: u64 = gdt_entry(0xc093, 0, 0xfffff);
/// A busy 32-bit TSS; KVM needs a valid TR to enter the guest.
pub const TSS: u64 = gdt_entry(0x808b, 0, 0xfffff);

/// The boot GDT for a given code descriptor (64-bit for the Linux protocol, 32-bit for PVH).
pub fn boot_gdt(code: u64) -> [u64; 5] {
    [0, 0, code, DATA, TSS]
}

/// Decodes a GDT entry into the segment register KVM loads.
pub fn segment_from_entry(entry: u64, index: u16) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    // With G=1 the limit counts 4 KiB pages.
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base,
        limit,
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        padding: 0,
        unusable: if present == 1 { 0 } else { 1 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code64_decodes_as_long_mode() {
        let s = segment_from_entry(CODE64, CODE_INDEX);
        assert_eq!((s.l, s.db, s.present, s.s, s.type_), (1, 0, 1, 1, 0xb));
        assert_eq!(s.selector, 0x10);
        assert_eq!(s.limit, 0xffff_ffff);
    }

    #[test]
    fn entry_round_trips_base_and_limit() {
        let e = gdt_entry(0x4093, 0x1234_5678, 0xabcde);
        let s = segment_from_entry(e, 1);
        assert_eq!(s.base, 0x1234_5678);
        assert_eq!(s.limit, 0xabcde);
        assert_eq!((s.g, s.db), (0, 1));
    }
}
