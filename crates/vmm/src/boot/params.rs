//! What the kernel is told at entry: the zero page (`boot_params`) for the Linux boot
//! protocol, or `hvm_start_info` for PVH, plus the command line both point to.

use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{Bytes, GuestAddress};

use crate::memory::GuestMemoryMmap;

use crate::error::{Error, Result};
use crate::memory::{
    e820_map, CMDLINE_MAX_SIZE, CMDLINE_START, PVH_INFO_START, PVH_MEMMAP_START, ZERO_PAGE_START,
};

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
/// "Undefined" boot loader id: we are not one of the registered loaders.
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x100_0000;
const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;

/// Where the initrd was put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitrdPlacement {
    pub addr: u64,
    pub size: u64,
}

/// The command line the guest gets: the configured one, then `host` parameters (those it
/// does not already set by name, so a configured value wins), then `devices` (the
/// `virtio_mmio.device=` entries). Both go before a `--`, after which words belong to init.
pub fn compose_cmdline(configured: &str, host: &[&str], devices: &[String]) -> String {
    let configured = configured.trim();
    let (kernel, init) = if configured == "--" {
        ("", Some(""))
    } else if let Some(rest) = configured.strip_prefix("-- ") {
        ("", Some(rest))
    } else if let Some(i) = configured.find(" -- ") {
        (&configured[..i], Some(&configured[i + 4..]))
    } else if let Some(k) = configured.strip_suffix(" --") {
        (k, Some(""))
    } else {
        (configured, None)
    };
    let name = |p: &str| p.split('=').next().unwrap_or("").to_string();
    let set: Vec<String> = kernel.split_whitespace().map(name).collect();
    let mut words: Vec<&str> = vec![kernel];
    words.extend(host.iter().filter(|p| !set.contains(&name(p))).copied());
    words.extend(devices.iter().map(String::as_str));
    if let Some(init) = init {
        words.push("--");
        words.push(init);
    }
    words
        .into_iter()
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes the NUL-terminated command line; `limit` is the kernel's maximum length (from the
/// bzImage header) when known.
pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str, limit: Option<u32>) -> Result<()> {
    let max = limit
        .filter(|l| *l > 0)
        .map(|l| (l as usize).min(CMDLINE_MAX_SIZE - 1))
        .unwrap_or(CMDLINE_MAX_SIZE - 1);
    if cmdline.len() > max {
        return Err(Error::Cmdline(format!(
            "{} bytes is longer than the kernel's limit of {max}",
            cmdline.len()
        )));
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_START))
        .map_err(|e| Error::Boot(format!("command line at {CMDLINE_START:#x}: {e}")))
}

/// Fills and writes the zero page. `hdr` is the bzImage's setup header (copied as the boot
/// protocol asks) or `None` for an ELF vmlinux, for which a minimal header is made.
pub fn write_boot_params(
    mem: &GuestMemoryMmap,
    hdr: Option<setup_header>,
    cmdline_len: usize,
    initrd: Option<InitrdPlacement>,
    mem_size: u64,
) -> Result<()> {
    let mut params = boot_params::default();
    match hdr {
        Some(h) => params.hdr = h,
        None => {
            params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
            params.hdr.header = KERNEL_HDR_MAGIC;
            params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
        }
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32 + 1;
    if let Some(i) = initrd {
        params.hdr.ramdisk_image = i.addr as u32;
        params.hdr.ramdisk_size = i.size as u32;
    }
    let map = e820_map(mem_size);
    for (slot, e) in params.e820_table.iter_mut().zip(&map) {
        slot.addr = e.addr;
        slot.size = e.size;
        slot.r#type = e.kind;
    }
    params.e820_entries = map.len() as u8;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
        .map_err(|e| Error::Boot(format!("zero page at {ZERO_PAGE_START:#x}: {e}")))
}

/// Writes `hvm_start_info`, its memory map and (for an initrd) a module list entry.
pub fn write_pvh_start_info(
    mem: &GuestMemoryMmap,
    initrd: Option<InitrdPlacement>,
    mem_size: u64,
) -> Result<()> {
    let map: Vec<hvm_memmap_table_entry> = e820_map(mem_size)
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        })
        .collect();
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: map.len() as u32,
        ..Default::default()
    };
    let mut params = BootParams::new(&info, GuestAddress(PVH_INFO_START));
    params.set_sections(&map, GuestAddress(PVH_MEMMAP_START));
    if let Some(i) = initrd {
        let modlist_addr =
            PVH_MEMMAP_START + (map.len() * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
        info.nr_modules = 1;
        info.modlist_paddr = modlist_addr;
        params = BootParams::new(&info, GuestAddress(PVH_INFO_START));
        params.set_sections(&map, GuestAddress(PVH_MEMMAP_START));
        let module = hvm_modlist_entry {
            paddr: i.addr,
            size: i.size,
            ..Default::default()
        };
        params.set_modules(&[module], GuestAddress(modlist_addr));
    }
    PvhBootConfigurator::write_bootparams(&params, mem)
        .map_err(|e| Error::Boot(format!("PVH start info at {PVH_INFO_START:#x}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_page_has_e820_and_cmdline() {
        let size = 64 << 20;
        let mem = crate::memory::guest_memory(&[(GuestAddress(0), size as usize)], false).unwrap();
        write_cmdline(&mem, "console=ttyS0", None).unwrap();
        let initrd = InitrdPlacement {
            addr: 0x300_0000,
            size: 4096,
        };
        write_boot_params(&mem, None, 13, Some(initrd), size).unwrap();
        let p: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        let (entries, ptr, image, magic) = (
            p.e820_entries,
            p.hdr.cmd_line_ptr,
            p.hdr.ramdisk_image,
            p.hdr.header,
        );
        assert_eq!(entries, 3);
        assert_eq!(ptr as u64, CMDLINE_START);
        assert_eq!(image, 0x300_0000);
        assert_eq!(magic, KERNEL_HDR_MAGIC);
        let mut buf = [0u8; 14];
        mem.read_slice(&mut buf, GuestAddress(CMDLINE_START))
            .unwrap();
        assert_eq!(&buf, b"console=ttyS0\0");
    }

    #[test]
    fn cmdline_host_parameters_and_devices() {
        let dev = vec!["virtio_mmio.device=4K@0xd0001000:5".to_string()];
        assert_eq!(
            compose_cmdline(" console=ttyS0 ", &["noxsave", "clearcpuid=1"], &dev),
            "console=ttyS0 noxsave clearcpuid=1 virtio_mmio.device=4K@0xd0001000:5"
        );
        // A parameter the configured line sets by name keeps its configured value.
        assert_eq!(
            compose_cmdline("clearcpuid=2 quiet", &["noxsave", "clearcpuid=1"], &[]),
            "clearcpuid=2 quiet noxsave"
        );
        // Everything after `--` is init's, so additions go before it.
        assert_eq!(
            compose_cmdline("console=ttyS0 -- single x", &["noxsave"], &dev),
            "console=ttyS0 noxsave virtio_mmio.device=4K@0xd0001000:5 -- single x"
        );
        assert_eq!(compose_cmdline("-- a", &["noxsave"], &[]), "noxsave -- a");
        assert_eq!(compose_cmdline("", &[], &[]), "");
    }

    #[test]
    fn cmdline_limit_is_enforced() {
        let mem = crate::memory::guest_memory(&[(GuestAddress(0), 1 << 20)], false).unwrap();
        assert!(write_cmdline(&mem, "abcdef", Some(4)).is_err());
        assert!(write_cmdline(&mem, "abc", Some(4)).is_ok());
    }
}
