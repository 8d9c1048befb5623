//! The memory file: one header page, then guest RAM, region after region in guest-address
//! order. Pages that are all zeros are not written (the file has holes there), so a guest that
//! touched little memory makes a small file; the file's length is always the full size.
//!
//! ```text
//! 0     8   magic "BHVMMEM\0"
//! 8     4   format version (u32 LE)
//! 12    4   kind (u32 LE): 0 full, 1 diff
//! 16    8   RAM bytes (u64 LE)
//! 24    32  snapshot id (the state file holds the same: the two files belong together)
//! 56    32  diff: the id of the snapshot it follows (zeros in a full file)
//! 4096      RAM
//! ```
//!
//! A **diff** memory file has the same layout and length, but holds only the pages written
//! since the snapshot it follows (by the vCPUs or by the VMM's devices), at their offsets; the
//! rest is holes. It cannot be restored by itself: [`merge`] writes its data extents
//! (SEEK_DATA/SEEK_HOLE) over a copy of the memory file it follows, which gives the full
//! memory file of the diff's snapshot.
//!
//! A restore maps each RAM region from the file MAP_PRIVATE: nothing is read or copied up
//! front, pages come from the page cache when the guest first touches them (and are shared
//! with every other VM restored from the same file until one writes them).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{Address, Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::memory::{ram_ranges, region_bitmap, GuestMemoryMmap, GuestRegionMmap};

pub const MAGIC: &[u8; 8] = b"BHVMMEM\0";
/// 2: the kind and the followed snapshot's id (diff snapshots). Format 1 files are read too:
/// their header is format 2's with zeros there, i.e. a full file.
pub const FORMAT_VERSION: u32 = 2;
pub const KIND_FULL: u32 = 0;
pub const KIND_DIFF: u32 = 1;
/// RAM starts one page into the file, so every region's offset is page-aligned for mmap.
pub const HEADER_LEN: u64 = 4096;
const PAGE: usize = 4096;
/// Longest run of pages written with one write(2).
const MAX_RUN: usize = 4 << 20;
pub const ID_LEN: usize = 32;

/// What a memory file's header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub ram_bytes: u64,
    pub id: String,
    /// For a diff: the id of the snapshot whose memory it applies to.
    pub follows: Option<String>,
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN as usize];
        h[..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        let kind = if self.follows.is_some() {
            KIND_DIFF
        } else {
            KIND_FULL
        };
        h[12..16].copy_from_slice(&kind.to_le_bytes());
        h[16..24].copy_from_slice(&self.ram_bytes.to_le_bytes());
        let put = |h: &mut [u8], at: usize, id: &str| {
            let id = &id.as_bytes()[..id.len().min(ID_LEN)];
            h[at..at + id.len()].copy_from_slice(id);
        };
        put(&mut h, 24, &self.id);
        if let Some(f) = &self.follows {
            put(&mut h, 24 + ID_LEN, f);
        }
        h
    }

    /// Reads and checks a memory file's header (not its length: see [`check`]).
    pub fn read(file: &File) -> Result<Header, String> {
        let mut h = vec![0u8; HEADER_LEN as usize];
        let n = file.read_at(&mut h, 0).map_err(|e| e.to_string())?;
        if n < 24 + 2 * ID_LEN || &h[..8] != MAGIC {
            return Err("not a bulkhead VM memory file".into());
        }
        let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        let format = u32_at(8);
        if !(1..=FORMAT_VERSION).contains(&format) {
            return Err(format!(
                "memory file format {format}, this bulkhead reads formats 1 to {FORMAT_VERSION}"
            ));
        }
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[16..24]);
        let id_at = |at: usize| {
            String::from_utf8_lossy(&h[at..at + ID_LEN])
                .trim_end_matches('\0')
                .to_string()
        };
        let follows = match u32_at(12) {
            KIND_FULL => None,
            KIND_DIFF => Some(id_at(24 + ID_LEN)),
            k => return Err(format!("unknown memory file kind {k}")),
        };
        Ok(Header {
            ram_bytes: u64::from_le_bytes(b),
            id: id_at(24),
            follows,
        })
    }
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

/// Writes the header of a memory file of `mem` into `file` (new, empty); what the file will
/// measure once its RAM is written.
fn begin(
    file: &mut File,
    mem: &GuestMemoryMmap,
    id: &str,
    follows: Option<&str>,
) -> std::io::Result<Written> {
    let ram: u64 = mem.iter().map(|r| r.len()).sum();
    let h = Header {
        ram_bytes: ram,
        id: id.to_string(),
        follows: follows.map(str::to_string),
    };
    file.write_all(&h.encode())?;
    Ok(Written {
        size: HEADER_LEN + ram,
        data: 0,
    })
}

/// Copies `len` bytes of guest memory from `addr` into `file` at offset `at`.
fn write_run(
    file: &mut File,
    mem: &GuestMemoryMmap,
    addr: GuestAddress,
    at: u64,
    len: usize,
) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(at))?;
    mem.write_all_volatile_to(addr, file, len)
        .map_err(|e| std::io::Error::other(format!("guest memory: {e}")))
}

/// Writes the header and guest RAM to `file` (a new, empty file). The caller has paused the
/// vCPUs, and no device runs meanwhile (devices run on the calling thread).
pub fn write(file: &mut File, mem: &GuestMemoryMmap, id: &str) -> std::io::Result<Written> {
    let mut out = begin(file, mem, id, None)?;
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
            let addr = base.unchecked_add(start as u64);
            write_run(file, mem, addr, offset + start as u64, page - start)?;
            out.data += (page - start) as u64;
        }
        offset += len as u64;
    }
    Ok(out)
}

/// Checks that `file` is the full memory file of the snapshot `id` with `ram_bytes` of RAM.
pub fn check(file: &File, id: &str, ram_bytes: u64) -> Result<(), String> {
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let h = Header::read(file)?;
    if let Some(base) = &h.follows {
        return Err(format!(
            "is a diff snapshot (only the pages written since snapshot {base}): merge it onto \
             that snapshot's memory file first (bulkhead vm merge-snapshot)"
        ));
    }
    if h.ram_bytes != ram_bytes {
        return Err(format!(
            "holds {} MiB of guest memory, the snapshot has {} MiB",
            h.ram_bytes >> 20,
            ram_bytes >> 20
        ));
    }
    if h.id != id {
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

/// Writes a diff memory file of snapshot `id` following snapshot `follows` into `file` (new,
/// empty): the header, then the pages whose bit is set in `dirty` (one bitmap per region, bit
/// `i` of word `i / 64` for the region's page `i`) at their offsets; the rest stays holes.
/// Every dirty page is written, zeros included: in a diff, a hole means "unchanged". The last
/// page is always written (its current contents are right in any case): that gives the file
/// its full length without an ftruncate, which the jailed VMM is not allowed.
pub fn write_diff(
    file: &mut File,
    mem: &GuestMemoryMmap,
    id: &str,
    follows: &str,
    dirty: &[Vec<u64>],
) -> std::io::Result<Written> {
    let mut out = begin(file, mem, id, Some(follows))?;
    let mut offset = HEADER_LEN;
    let last = mem.num_regions() - 1;
    for (i, (region, bits)) in mem.iter().zip(dirty).enumerate() {
        let pages = region.len() as usize / PAGE;
        let is_dirty = |p: usize| {
            (i == last && p + 1 == pages)
                || bits.get(p / 64).is_some_and(|w| w >> (p % 64) & 1 == 1)
        };
        let mut page = 0;
        while page < pages {
            if !is_dirty(page) {
                page += 1;
                continue;
            }
            let start = page;
            while page < pages && is_dirty(page) && (page - start) * PAGE < MAX_RUN {
                page += 1;
            }
            let len = (page - start) * PAGE;
            let skip = (start * PAGE) as u64;
            let addr = region.start_addr().unchecked_add(skip);
            write_run(file, mem, addr, offset + skip, len)?;
            out.data += len as u64;
        }
        offset += region.len();
    }
    Ok(out)
}

/// Copies the data extents of `src` at or after `from` (SEEK_DATA/SEEK_HOLE) to the same
/// offsets of `dst`; holes are skipped, so `dst` keeps its own bytes there.
fn copy_extents(src: &File, dst: &File, from: u64) -> std::io::Result<u64> {
    use rustix::fs::{seek, SeekFrom as At};
    let end = src.metadata()?.len();
    let mut buf = vec![0u8; MAX_RUN];
    let mut copied = 0;
    let mut pos = from;
    while pos < end {
        let data = match seek(src, At::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let hole = seek(src, At::Hole(data))?.min(end);
        let mut at = data;
        while at < hole {
            let n = ((hole - at) as usize).min(buf.len());
            src.read_exact_at(&mut buf[..n], at)?;
            dst.write_all_at(&buf[..n], at)?;
            at += n as u64;
        }
        copied += hole - data;
        pos = hole;
    }
    Ok(copied)
}

/// What a merge wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Merged {
    /// The id of the merged (full) memory file: the diff's snapshot.
    pub id: String,
    /// Bytes of RAM copied from the base and from the diff.
    pub base_bytes: u64,
    pub diff_bytes: u64,
}

/// A new file that is removed unless kept.
struct NewFile {
    path: PathBuf,
    file: File,
    keep: bool,
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes `out` (a new file): the full memory file of the diff `diff`'s snapshot, from the
/// full memory file `base` of the snapshot the diff follows. Nothing is created when the two
/// do not belong together; `out` is removed if writing it fails.
pub fn merge(base: &Path, diff: &Path, out: &Path) -> Result<Merged, String> {
    let open = |p: &Path, what: &str| -> Result<(File, Header), String> {
        let f = File::open(p).map_err(|e| format!("{what} {}: {e}", p.display()))?;
        let h = Header::read(&f).map_err(|e| format!("{what} {}: {e}", p.display()))?;
        let size = f
            .metadata()
            .map_err(|e| format!("{what} {}: {e}", p.display()))?
            .len();
        if size != HEADER_LEN + h.ram_bytes {
            return Err(format!(
                "{what} {}: truncated or extended ({size} bytes, its header says {} of RAM)",
                p.display(),
                h.ram_bytes
            ));
        }
        Ok((f, h))
    };
    let (bf, bh) = open(base, "base memory file")?;
    let (df, dh) = open(diff, "diff memory file")?;
    if let Some(f) = &bh.follows {
        return Err(format!(
            "base memory file {}: is itself a diff (following snapshot {f}): merge that one \
             first",
            base.display()
        ));
    }
    let Some(follows) = &dh.follows else {
        return Err(format!(
            "diff memory file {}: is a full memory file, not a diff",
            diff.display()
        ));
    };
    if *follows != bh.id {
        return Err(format!(
            "diff memory file {} follows snapshot {follows}, but the base {} is snapshot {}",
            diff.display(),
            base.display(),
            bh.id
        ));
    }
    if dh.ram_bytes != bh.ram_bytes {
        return Err(format!(
            "diff memory file {}: {} MiB of RAM, the base has {} MiB",
            diff.display(),
            dh.ram_bytes >> 20,
            bh.ram_bytes >> 20
        ));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| format!("merged memory file {}: {e}", out.display()))?;
    let mut out_file = NewFile {
        path: out.to_path_buf(),
        file,
        keep: false,
    };
    let write = |f: &mut File| -> std::io::Result<Merged> {
        f.set_len(HEADER_LEN + bh.ram_bytes)?;
        let base_bytes = copy_extents(&bf, f, HEADER_LEN)?;
        let diff_bytes = copy_extents(&df, f, HEADER_LEN)?;
        let h = Header {
            ram_bytes: bh.ram_bytes,
            id: dh.id.clone(),
            follows: None,
        };
        f.write_all_at(&h.encode(), 0)?;
        f.sync_all()?;
        Ok(Merged {
            id: dh.id.clone(),
            base_bytes,
            diff_bytes,
        })
    };
    let merged = write(&mut out_file.file)
        .map_err(|e| format!("merged memory file {}: {e}", out.display()))?;
    out_file.keep = true;
    Ok(merged)
}

/// Guest RAM of `ram_bytes`, mapped private and copy-on-write from a checked memory file.
/// Dirty pages are tracked from the start if `track_dirty`.
pub fn map(file: &File, ram_bytes: u64, track_dirty: bool) -> Result<GuestMemoryMmap, String> {
    let mut regions = Vec::new();
    let mut offset = HEADER_LEN;
    for (addr, len) in ram_ranges(ram_bytes) {
        let fd = file.try_clone().map_err(|e| format!("dup: {e}"))?;
        let mapping = MmapRegionBuilder::new_with_bitmap(len, region_bitmap(len, track_dirty))
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

    fn temp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("vmm-memfile-{}-{name}", std::process::id()))
    }

    #[test]
    fn zero_pages_become_holes_and_the_mapping_reads_back() {
        let ram = 16u64 << 20;
        let mem = crate::memory::create_guest_memory(16, false).unwrap();
        mem.write_slice(b"page one", GuestAddress(4096)).unwrap();
        mem.write_slice(b"middle", GuestAddress(8 << 20)).unwrap();
        let path = temp("a");
        let mut f = new_file(&path);
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
        // A format-1 file (before diffs) is the same file with version 1: a full one.
        f.write_all_at(&1u32.to_le_bytes(), 8).unwrap();
        check(&f, "0123456789abcdef0123456789abcdef", ram).unwrap();
        f.write_all_at(&3u32.to_le_bytes(), 8).unwrap();
        assert!(check(&f, "0123456789abcdef0123456789abcdef", ram)
            .unwrap_err()
            .contains("format 3"));
        f.write_all_at(&FORMAT_VERSION.to_le_bytes(), 8).unwrap();
        let restored = map(&f, ram, false).unwrap();
        let mut b = [0u8; 8];
        restored.read_slice(&mut b, GuestAddress(4096)).unwrap();
        assert_eq!(&b, b"page one");
        // Private: writes go to the copy, not the file.
        restored
            .write_slice(b"changed!", GuestAddress(4096))
            .unwrap();
        let again = map(&f, ram, false).unwrap();
        again.read_slice(&mut b, GuestAddress(4096)).unwrap();
        assert_eq!(&b, b"page one");
        f.set_len(w.size - 1).unwrap();
        assert!(check(&f, "0123456789abcdef0123456789abcdef", ram)
            .unwrap_err()
            .contains("size mismatch"));
        std::fs::remove_file(&path).unwrap();
    }

    fn new_file(path: &std::path::Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .unwrap()
    }

    /// Blocks allocated to a file (st_blocks, 512-byte units).
    fn allocated(path: &std::path::Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    #[test]
    fn a_diff_merged_onto_its_base_is_the_full_file() {
        let ram = 16u64 << 20;
        let mem = crate::memory::create_guest_memory(16, true).unwrap();
        mem.write_slice(b"before", GuestAddress(4096)).unwrap();
        mem.write_slice(b"kept", GuestAddress(5 << 20)).unwrap();
        let (base, diff, full, out) = (temp("base"), temp("diff"), temp("full"), temp("out"));
        let base_id = "11111111111111111111111111111111";
        write(&mut new_file(&base), &mem, base_id).unwrap();
        // Changed since the base: a page rewritten, one zeroed, one new.
        mem.write_slice(b"after!", GuestAddress(4096)).unwrap();
        mem.write_slice(&[0u8; 4], GuestAddress(5 << 20)).unwrap();
        mem.write_slice(b"new", GuestAddress(9 << 20)).unwrap();
        let mut dirty = vec![vec![0u64; 64]];
        for page in [1usize, (5 << 20) / PAGE, (9 << 20) / PAGE] {
            dirty[0][page / 64] |= 1 << (page % 64);
        }
        let diff_id = "22222222222222222222222222222222";
        let w = write_diff(&mut new_file(&diff), &mem, diff_id, base_id, &dirty).unwrap();
        // The three pages and the last one (the file's length).
        assert_eq!(w.data, 4 * PAGE as u64);
        assert_eq!(w.size, HEADER_LEN + ram);
        assert_eq!(std::fs::metadata(&diff).unwrap().len(), w.size);
        assert!(allocated(&diff) <= 5 * PAGE as u64, "{}", allocated(&diff));
        let h = Header::read(&File::open(&diff).unwrap()).unwrap();
        assert_eq!(h.follows.as_deref(), Some(base_id));
        // A diff alone is not a memory file to restore.
        let e = check(&File::open(&diff).unwrap(), diff_id, ram).unwrap_err();
        assert!(
            e.contains("is a diff snapshot") && e.contains(base_id),
            "{e}"
        );

        write(&mut new_file(&full), &mem, diff_id).unwrap();
        let m = merge(&base, &diff, &out).unwrap();
        assert_eq!((m.id.as_str(), m.diff_bytes), (diff_id, 4 * PAGE as u64));
        let (a, b) = (std::fs::read(&out).unwrap(), std::fs::read(&full).unwrap());
        assert!(a == b, "the merged file differs from the full one");
        check(&File::open(&out).unwrap(), diff_id, ram).unwrap();

        // Onto the wrong base, or the wrong way round: refused, nothing written.
        let other = temp("other");
        let e = merge(&full, &diff, &other).unwrap_err();
        assert!(e.contains("follows snapshot 1111"), "{e}");
        let e = merge(&diff, &diff, &other).unwrap_err();
        assert!(e.contains("is itself a diff"), "{e}");
        let e = merge(&base, &full, &other).unwrap_err();
        assert!(e.contains("not a diff"), "{e}");
        assert!(!other.exists());
        // An existing output is not overwritten.
        let e = merge(&base, &diff, &out).unwrap_err();
        assert!(e.contains("exists"), "{e}");
        for p in [base, diff, full, out] {
            std::fs::remove_file(p).unwrap();
        }
    }
}
