//! virtio-blk backed by a raw file (or block device): read, write, flush and get-id
//! requests, an optional read-only mode, and sector-range checks on every request.
//!
//! Data moves straight between the file and guest memory (vm-memory's volatile I/O), in the
//! pieces the validated chain describes; no guest-controlled size ever sizes a host buffer.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::path::Path;

use virtio_queue::Queue;
use vm_memory::Bytes;

use crate::memory::GuestMemoryMmap;

use super::queue::{drain_queue, Chain};
use super::{read_config_bytes, Activation, DeviceEvents, VirtioDevice, TYPE_BLOCK};
use crate::error::{Error, Result};

const QUEUE_SIZES: &[u16] = &[256];
pub const SECTOR_SIZE: u64 = 512;

const VIRTIO_BLK_F_RO: u64 = 1 << 5;
const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;

pub const VIRTIO_BLK_T_IN: u32 = 0;
pub const VIRTIO_BLK_T_OUT: u32 = 1;
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;

pub const VIRTIO_BLK_S_OK: u8 = 0;
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;

const REQUEST_HEADER_LEN: usize = 16;
const ID_BYTES: usize = 20;

pub struct Block {
    name: String,
    file: File,
    read_only: bool,
    capacity: u64,
    id: [u8; ID_BYTES],
    active: Option<(GuestMemoryMmap, Queue)>,
}

impl Block {
    pub fn new(name: String, path: &Path, read_only: bool) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| Error::File {
                what: "disk",
                path: path.to_path_buf(),
                source,
            })?;
        let mut f = &file;
        let size = f.seek(SeekFrom::End(0)).map_err(|source| Error::File {
            what: "disk",
            path: path.to_path_buf(),
            source,
        })?;
        if size % SECTOR_SIZE != 0 {
            tracing::warn!(
                "{name}: {} is not a multiple of 512 bytes; the last {} bytes are not visible",
                path.display(),
                size % SECTOR_SIZE
            );
        }
        let mut id = [0u8; ID_BYTES];
        let label = format!("bulkhead-{name}");
        let n = label.len().min(ID_BYTES);
        id[..n].copy_from_slice(&label.as_bytes()[..n]);
        Ok(Block {
            name,
            file,
            read_only,
            capacity: size / SECTOR_SIZE,
            id,
            active: None,
        })
    }

    fn handle(&mut self, mem: &GuestMemoryMmap, chain: &Chain) -> u32 {
        let writable = chain.writable_len();
        if writable == 0 {
            // Nowhere to put the status byte: the request cannot even be failed properly.
            tracing::warn!("{}: request without a status byte", self.name);
            return 0;
        }
        let status_off = writable - 1;
        let (status, data_written) = match self.execute(mem, chain, status_off) {
            Ok(n) => (VIRTIO_BLK_S_OK, n),
            Err(s) => (s, 0),
        };
        if chain.write_at(mem, status_off, &[status]).is_err() {
            return 0;
        }
        (data_written + 1) as u32
    }

    /// Runs one request; returns bytes written to the guest, or the status to report.
    fn execute(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: &Chain,
        data_in_len: usize,
    ) -> std::result::Result<usize, u8> {
        let mut hdr = [0u8; REQUEST_HEADER_LEN];
        let pieces = chain.readable_range(0, REQUEST_HEADER_LEN);
        let mut off = 0;
        for (addr, n) in &pieces {
            mem.read_slice(&mut hdr[off..off + n], *addr)
                .map_err(|_| VIRTIO_BLK_S_IOERR)?;
            off += n;
        }
        if off != REQUEST_HEADER_LEN {
            tracing::warn!("{}: request header shorter than 16 bytes", self.name);
            return Err(VIRTIO_BLK_S_IOERR);
        }
        let kind = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let sector = u64::from_le_bytes(hdr[8..16].try_into().unwrap_or_default());
        match kind {
            VIRTIO_BLK_T_IN => {
                let pos = self.check_range(sector, data_in_len)?;
                self.file
                    .seek(SeekFrom::Start(pos))
                    .map_err(|_| VIRTIO_BLK_S_IOERR)?;
                for (addr, n) in chain.writable_range(0, data_in_len) {
                    mem.read_exact_volatile_from(addr, &mut self.file, n)
                        .map_err(|e| self.io_error("read", e))?;
                }
                Ok(data_in_len)
            }
            VIRTIO_BLK_T_OUT => {
                if self.read_only {
                    return Err(VIRTIO_BLK_S_IOERR);
                }
                let len = chain.readable_len() - REQUEST_HEADER_LEN;
                let pos = self.check_range(sector, len)?;
                self.file
                    .seek(SeekFrom::Start(pos))
                    .map_err(|_| VIRTIO_BLK_S_IOERR)?;
                for (addr, n) in chain.readable_range(REQUEST_HEADER_LEN, len) {
                    mem.write_all_volatile_to(addr, &mut self.file, n)
                        .map_err(|e| self.io_error("write", e))?;
                }
                Ok(0)
            }
            VIRTIO_BLK_T_FLUSH => {
                if !self.read_only {
                    self.file
                        .sync_data()
                        .map_err(|e| self.io_error("flush", e))?;
                }
                Ok(0)
            }
            VIRTIO_BLK_T_GET_ID => {
                let n = data_in_len.min(ID_BYTES);
                chain
                    .write_at(mem, 0, &self.id[..n])
                    .map_err(|_| VIRTIO_BLK_S_IOERR)
            }
            _ => Err(VIRTIO_BLK_S_UNSUPP),
        }
    }

    /// Byte offset of `sector` if `len` bytes from there are whole sectors on the disk.
    fn check_range(&self, sector: u64, len: usize) -> std::result::Result<u64, u8> {
        let len = len as u64;
        let end = sector
            .checked_mul(SECTOR_SIZE)
            .and_then(|p| p.checked_add(len));
        match end {
            Some(end) if len % SECTOR_SIZE == 0 && end <= self.capacity * SECTOR_SIZE => {
                Ok(sector * SECTOR_SIZE)
            }
            _ => {
                tracing::warn!(
                    "{}: request for {len} bytes at sector {sector} is outside the disk \
                     ({} sectors) or not whole sectors",
                    self.name,
                    self.capacity
                );
                Err(VIRTIO_BLK_S_IOERR)
            }
        }
    }

    fn io_error(&self, what: &str, e: impl std::fmt::Display) -> u8 {
        tracing::warn!("{}: {what} failed: {e}", self.name);
        VIRTIO_BLK_S_IOERR
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn queue_max_sizes(&self) -> &[u16] {
        QUEUE_SIZES
    }
    fn features(&self) -> u64 {
        let mut f = VIRTIO_BLK_F_FLUSH;
        if self.read_only {
            f |= VIRTIO_BLK_F_RO;
        }
        f
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_blk_config starts with `le64 capacity` (in 512-byte sectors).
        read_config_bytes(&self.capacity.to_le_bytes(), offset, data);
    }
    fn activate(&mut self, a: Activation) -> std::result::Result<(), String> {
        let q = a.queues.into_iter().next().ok_or("no queue")?;
        self.active = Some((a.mem, q));
        Ok(())
    }
    fn reset(&mut self) {
        self.active = None;
    }
    fn queues(&self) -> &[Queue] {
        self.active
            .as_ref()
            .map_or(&[], |(_, q)| std::slice::from_ref(q))
    }
    fn queue_notify(&mut self, _index: usize, _events: &mut DeviceEvents) -> bool {
        let Some((mem, mut queue)) = self.active.take() else {
            return false;
        };
        let name = self.name.clone();
        let used = drain_queue(&mut queue, &mem, &name, |c| self.handle(&mem, c));
        self.active = Some((mem, queue));
        used
    }
}
