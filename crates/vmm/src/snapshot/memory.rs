//! The memory file: one header page, then guest RAM, region after region in guest-address
//! order. Pages that are all zeros are not written (the file has holes there), so a guest that
//! touched little memory makes a small file; the file's length is always the full size.
//!
//! ```text
//! 0     8   magic "BHVMMEM\0"
//! 8     4   format version (u32 LE)
//! 16    8   RAM bytes (u64 LE)
//! 24    32  snapshot id (the state file holds the same: the two files belong together)
//! 4096      RAM
//! ```
//!
//! A restore maps each RAM region from the file MAP_PRIVATE: nothing is read or copied up
//! front, pages come from the page cache when the guest first touches them (and are shared
//! with every other VM restored from the same file until one writes them).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    Address, Bytes, FileOffset, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap,
};

use crate::memory::ram_ranges;

pub const MAGIC: &[u8; 8] = b"BHVMMEM\0";
pub const FORMAT_VERSION: u32 = 1;
/// RAM starts one page into the file, so every region's offset is page-aligned for mmap.
pub const HEADER_LEN: u64 = 4096;
const PAGE: usize = 4096;
/// Longest run of pages written with one write(2).
const MAX_RUN: usize = 4 << 20;
pub const ID_LEN: usize = 32;

fn header(id: &str, ram_bytes: u64) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&ram_bytes.to_le_bytes());
    let id = id.as_bytes();
    h[24..24 + id.len().min(ID_LEN)].copy_from_slice(&id[..id.len().min(ID_LEN)]);
    h
}

/// What writing the memory file did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Written {
    /// The file's length.
    pub size: u64,
    /// Bytes of RAM actually written (the rest are holes).
    pub data: u64,
}

/// True if the page at `host` is all zeros.
///
/// # Safety
/// `host..host + PAGE` must be mapped and readable.
unsafe fn zero_page(host: *const u8) -> bool {
    let words = host.cast::<u64>();
    // SAFETY: the caller guarantees the page is mapped; guest pages are 8-byte aligned.
    (0..PAGE / 8).all(|i| unsafe { std::ptr::read_volatile(words.add(i)) } == 0)
}

/// Writes the header and guest RAM to `file` (a new, empty file). The caller has paused the
/// vCPUs, and no device runs meanwhile (devices run on the calling thread).
pub fn write(file: &mut File, mem: &GuestMemoryMmap, id: &str) -> std::io::Result<Written> {
    let ram: u64 = mem.iter().map(|r| r.len()).sum();
    file.write_all(&header(id, ram))?;
    let mut out = Written {
        size: HEADER_LEN + ram,
        data: 0,
    };
    let mut offset = HEADER_LEN;
    let last = mem.num_regions() - 1;
    for (i, region) in mem.iter().enumerate() {
        let base = region.start_addr();
        let len = region.len() as usize;
        let host = mem
            .get_host_address(base)
            .map_err(|e| std::io::Error::other(format!("guest memory: {e}")))?;
        let mut page = 0;
        while page < len {
            // SAFETY: `page` is inside the region, which is mapped for its whole length.
            let is_last_page = i == last && page + PAGE >= len;
            if !is_last_page && unsafe { zero_page(host.add(page)) } {
                page += PAGE;
                continue;
            }
            // A run of pages with data (the file's last page is always written, so its length
            // is the full size without an ftruncate).
            let start = page;
            page += PAGE;
            while page < len && page - start < MAX_RUN {
                // SAFETY: as above.
                if unsafe { zero_page(host.add(page)) } && !(i == last && page + PAGE >= len) {
                    break;
                }
                page += PAGE;
            }
            file.seek(SeekFrom::Start(offset + start as u64))?;
            mem.write_all_volatile_to(base.unchecked_add(start as u64), file, page - start)
                .map_err(|e| std::io::Error::other(format!("guest memory: {e}")))?;
            out.data += (page - start) as u64;
        }
        offset += len as u64;
    }
    Ok(out)
}

/// Checks that `file` is the memory file of the snapshot `id` with `ram_bytes` of RAM.
pub fn check(file: &File, id: &str, ram_bytes: u64) -> Result<(), String> {
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let mut h = vec![0u8; HEADER_LEN as usize];
    let n = file.read_at(&mut h, 0).map_err(|e| e.to_string())?;
    if n < 24 || &h[..8] != MAGIC {
        return Err("not a bulkhead VM memory file".into());
    }
    let format = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if format != FORMAT_VERSION {
        return Err(format!(
            "memory file format {format}, this bulkhead reads format {FORMAT_VERSION}"
        ));
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[16..24]);
    let saved = u64::from_le_bytes(b);
    if saved != ram_bytes {
        return Err(format!(
            "holds {} MiB of guest memory, the snapshot has {} MiB",
            saved >> 20,
            ram_bytes >> 20
        ));
    }
    let file_id = String::from_utf8_lossy(&h[24..24 + ID_LEN]);
    if file_id.trim_end_matches('\0') != id {
        return Err("belongs to another snapshot (its id differs from the state file's)".into());
    }
    if size != HEADER_LEN + ram_bytes {
        return Err(format!(
            "memory size mismatch: {size} bytes, the snapshot's {} MiB need {}",
            ram_bytes >> 20,
            HEADER_LEN + ram_bytes
        ));
    }
    Ok(())
}

/// Guest RAM of `ram_bytes`, mapped private and copy-on-write from a checked memory file.
pub fn map(file: &File, ram_bytes: u64) -> Result<GuestMemoryMmap, String> {
    let mut regions = Vec::new();
    let mut offset = HEADER_LEN;
    for (addr, len) in ram_ranges(ram_bytes) {
        let fd = file.try_clone().map_err(|e| format!("dup: {e}"))?;
        let mapping = MmapRegionBuilder::new(len)
            .with_file_offset(FileOffset::new(fd, offset))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_NORESERVE | libc::MAP_PRIVATE)
            .build()
            .map_err(|e| format!("mmap {len} bytes at offset {offset}: {e}"))?;
        regions.push(
            GuestRegionMmap::new(mapping, addr)
                .ok_or_else(|| format!("region at {:#x} overflows", addr.raw_value()))?,
        );
        offset += len as u64;
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| e.to_string())
}

/// Reads a whole small file (the state file).
pub fn read_all(file: &mut File) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    file.read_to_end(&mut v)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    fn temp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("vmm-memfile-{}-{name}", std::process::id()))
    }

    #[test]
    fn zero_pages_become_holes_and_the_mapping_reads_back() {
        let ram = 16u64 << 20;
        let mem = crate::memory::create_guest_memory(16).unwrap();
        mem.write_slice(b"page one", GuestAddress(4096)).unwrap();
        mem.write_slice(b"middle", GuestAddress(8 << 20)).unwrap();
        let path = temp("a");
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let w = write(&mut f, &mem, "0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(w.size, HEADER_LEN + ram);
        // Two pages with data and the last page.
        assert_eq!(w.data, 3 * PAGE as u64);
        assert_eq!(f.metadata().unwrap().len(), w.size);
        check(&f, "0123456789abcdef0123456789abcdef", ram).unwrap();
        assert!(check(&f, "ffffffffffffffffffffffffffffffff", ram)
            .unwrap_err()
            .contains("another snapshot"));
        assert!(check(&f, "0123456789abcdef0123456789abcdef", ram * 2)
            .unwrap_err()
            .contains("MiB"));
        let restored = map(&f, ram).unwrap();
        let mut b = [0u8; 8];
        restored.read_slice(&mut b, GuestAddress(4096)).unwrap();
        assert_eq!(&b, b"page one");
        // Private: writes go to the copy, not the file.
        restored
            .write_slice(b"changed!", GuestAddress(4096))
            .unwrap();
        let again = map(&f, ram).unwrap();
        again.read_slice(&mut b, GuestAddress(4096)).unwrap();
        assert_eq!(&b, b"page one");
        f.set_len(w.size - 1).unwrap();
        assert!(check(&f, "0123456789abcdef0123456789abcdef", ram)
            .unwrap_err()
            .contains("size mismatch"));
        std::fs::remove_file(&path).unwrap();
    }
}
