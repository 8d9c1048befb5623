//! Loading the kernel image and the initrd into guest memory.
//!
//! The format is decided from the file's first bytes, not its name: an ELF magic means a
//! vmlinux (entered at its 64-bit `e_entry`, or at its PVH note), "HdrS" at 0x202 means a
//! bzImage (protected-mode code loaded at `code32_start`, entered 0x200 further on, where
//! the 64-bit entry `startup_64` sits). The copying itself is linux-loader's, which bounds
//! every segment by guest memory.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::loader::bootparam::{setup_header, XLF_KERNEL_64};
use linux_loader::loader::{BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{Address, Bytes, GuestAddress};

use crate::memory::GuestMemoryMmap;

use crate::boot::params::InitrdPlacement;
use crate::config::BootProtocol;
use crate::error::{Error, Result};
use crate::memory::HIGH_MEMORY_START;

/// The two kernel image formats the VMM boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    BzImage,
    Elf,
}

/// How the vCPU enters the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryMode {
    /// 64-bit long mode, paging on, rsi = zero page.
    Linux64,
    /// 32-bit protected mode, paging off, ebx = hvm_start_info.
    Pvh,
}

/// The result of loading a kernel.
#[derive(Clone, Copy, Debug)]
pub struct LoadedKernel {
    pub format: KernelFormat,
    pub entry: GuestAddress,
    pub mode: EntryMode,
    /// First byte after the kernel image (where the initrd must not reach down to).
    pub end: u64,
    /// The bzImage's setup header, to be copied into the zero page.
    pub setup_header: Option<setup_header>,
}

const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// Boot protocol 2.12 introduced xloadflags and the documented 64-bit entry.
const BOOT_PROTOCOL_64BIT: u16 = 0x020c;

/// Looks at the file's magic numbers.
pub fn detect_format(path: &Path, file: &mut File) -> Result<KernelFormat> {
    let mut head = [0u8; 0x206];
    let n = read_up_to(file, &mut head).map_err(|source| Error::File {
        what: "kernel",
        path: path.to_path_buf(),
        source,
    })?;
    let head = &head[..n];
    if head.starts_with(b"\x7fELF") {
        return Ok(KernelFormat::Elf);
    }
    if head.len() >= 0x206 && &head[0x202..0x206] == b"HdrS" {
        return Ok(KernelFormat::BzImage);
    }
    Err(Error::Kernel {
        path: path.to_path_buf(),
        reason: "neither a bzImage (no \"HdrS\" magic at 0x202) nor an ELF vmlinux".into(),
    })
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    file.seek(SeekFrom::Start(0))?;
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Loads the kernel at `path` into guest memory.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    path: &Path,
    protocol: BootProtocol,
) -> Result<LoadedKernel> {
    let mut file = File::open(path).map_err(|source| Error::File {
        what: "kernel",
        path: path.to_path_buf(),
        source,
    })?;
    let format = detect_format(path, &mut file)?;
    let kernel_err = |reason: String| Error::Kernel {
        path: path.to_path_buf(),
        reason,
    };
    let highmem = Some(GuestAddress(HIGH_MEMORY_START));
    match format {
        KernelFormat::Elf => {
            let r = Elf::load(mem, None, &mut file, highmem).map_err(|e| {
                kernel_err(format!(
                    "ELF load failed: {e} (does it fit in guest memory?)"
                ))
            })?;
            let (entry, mode) = match (protocol, r.pvh_boot_cap) {
                (BootProtocol::Linux, _) => (r.kernel_load, EntryMode::Linux64),
                (BootProtocol::Pvh, PvhBootCapability::PvhEntryPresent(addr)) => {
                    (addr, EntryMode::Pvh)
                }
                (BootProtocol::Pvh, _) => {
                    return Err(kernel_err(
                        "boot protocol pvh asked for, but the ELF has no PVH note \
                         (XEN_ELFNOTE_PHYS32_ENTRY)"
                            .into(),
                    ))
                }
            };
            Ok(LoadedKernel {
                format,
                entry,
                mode,
                end: r.kernel_end,
                setup_header: None,
            })
        }
        KernelFormat::BzImage => {
            if protocol == BootProtocol::Pvh {
                return Err(kernel_err(
                    "boot protocol pvh needs an ELF vmlinux, this is a bzImage".into(),
                ));
            }
            let r = BzImage::load(mem, None, &mut file, highmem).map_err(|e| {
                kernel_err(format!(
                    "bzImage load failed: {e} (does it fit in guest memory?)"
                ))
            })?;
            let hdr = r
                .setup_header
                .ok_or_else(|| kernel_err("bzImage without a setup header".into()))?;
            let (version, xloadflags) = (hdr.version, hdr.xloadflags);
            if version < BOOT_PROTOCOL_64BIT || xloadflags & XLF_KERNEL_64 == 0 {
                return Err(kernel_err(format!(
                    "bzImage has no 64-bit entry point (boot protocol {:#x}, xloadflags {:#x})",
                    version, xloadflags
                )));
            }
            let entry = r
                .kernel_load
                .checked_add(BZIMAGE_64BIT_ENTRY_OFFSET)
                .ok_or_else(|| kernel_err("entry point overflows".into()))?;
            Ok(LoadedKernel {
                format,
                entry,
                mode: EntryMode::Linux64,
                end: r.kernel_end,
                setup_header: Some(hdr),
            })
        }
    }
}

/// Places the initrd as high as possible below `ceiling` (the end of low RAM, or the
/// kernel's `initrd_addr_max`), page aligned, above the kernel.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
    ceiling: u64,
) -> Result<InitrdPlacement> {
    let mut file = File::open(path).map_err(|source| Error::File {
        what: "initrd",
        path: path.to_path_buf(),
        source,
    })?;
    let size = file
        .metadata()
        .map_err(|source| Error::File {
            what: "initrd",
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let floor = kernel_end.next_multiple_of(4096);
    let addr = ceiling
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|a| *a >= floor)
        .ok_or_else(|| Error::Initrd {
            path: path.to_path_buf(),
            reason: format!(
                "{size} bytes do not fit in guest memory: only {} bytes free between the kernel \
                 end ({floor:#x}) and {ceiling:#x}",
                ceiling.saturating_sub(floor)
            ),
        })?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|e| Error::Initrd {
            path: path.to_path_buf(),
            reason: format!(
                "copy to guest address {:#x}: {e}",
                GuestAddress(addr).raw_value()
            ),
        })?;
    Ok(InitrdPlacement { addr, size })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("vmm-loader-{}-{name}", std::process::id()));
        File::create(&p).unwrap().write_all(bytes).unwrap();
        p
    }

    #[test]
    fn rejects_a_file_that_is_neither_format() {
        let p = temp_file("junk", b"this is not a kernel");
        let mem = crate::memory::guest_memory(&[(GuestAddress(0), 32 << 20)], false).unwrap();
        let err = load_kernel(&mem, &p, BootProtocol::Linux).unwrap_err();
        std::fs::remove_file(&p).unwrap();
        assert!(err.to_string().contains("neither a bzImage"), "{err}");
    }

    #[test]
    fn initrd_that_does_not_fit_is_an_error() {
        let p = temp_file("initrd", &vec![7u8; 3 << 20]);
        let mem = crate::memory::guest_memory(&[(GuestAddress(0), 16 << 20)], false).unwrap();
        let err = load_initrd(&mem, &p, 14 << 20, 16 << 20).unwrap_err();
        assert!(err.to_string().contains("do not fit"), "{err}");
        let ok = load_initrd(&mem, &p, 2 << 20, 16 << 20).unwrap();
        std::fs::remove_file(&p).unwrap();
        assert_eq!(ok.addr, (16 << 20) - (3 << 20));
        assert_eq!(ok.size, 3 << 20);
    }
}
