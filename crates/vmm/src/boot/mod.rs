//! Everything written into guest memory before the first instruction: the kernel and initrd
//! (`loader`), the zero page or PVH start info and the command line (`params`), the identity
//! page tables (`paging`), the GDT (`gdt`) and the MP table (`mptable`).

pub mod gdt;
pub mod loader;
pub mod mptable;
pub mod paging;
pub mod params;
