//! From a guest descriptor chain to buffers the devices may touch.
//!
//! virtio-queue walks the chain (bounded by the queue size, so a looping `next` ends; a
//! descriptor table outside guest memory ends the walk). This module adds what the devices
//! rely on: every (address, length) is checked against guest memory, zero-length
//! descriptors are dropped, device-readable buffers must come before device-writable ones,
//! and the total is bounded. A chain that breaks a rule is refused as a whole, so a
//! malicious guest can only make its own request fail.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

use crate::memory::GuestMemoryMmap;

/// One validated buffer of a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub addr: GuestAddress,
    pub len: u32,
    pub writable: bool,
}

/// A validated descriptor chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    pub head: u16,
    pub segments: Vec<Segment>,
}

/// Why a chain was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainError {
    /// A buffer is not entirely inside guest RAM.
    OutOfRange { addr: u64, len: u32 },
    /// A device-readable buffer after a device-writable one.
    ReadableAfterWritable,
    /// More than [`MAX_CHAIN_BYTES`] in total.
    TooLarge,
}

impl std::fmt::Display for ChainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainError::OutOfRange { addr, len } => {
                write!(f, "buffer {addr:#x}+{len:#x} is outside guest memory")
            }
            ChainError::ReadableAfterWritable => {
                write!(f, "device-readable buffer after a device-writable one")
            }
            ChainError::TooLarge => write!(f, "chain larger than {MAX_CHAIN_BYTES} bytes"),
        }
    }
}

/// Upper bound on the bytes one request may describe. Bigger than any request a Linux driver
/// makes, small enough that bounce buffers can never exhaust host memory.
pub const MAX_CHAIN_BYTES: u64 = 16 << 20;

/// Walks and validates a chain popped from a queue.
pub fn parse_chain<M>(chain: DescriptorChain<M>) -> Result<Chain, ChainError>
where
    M: Deref<Target = GuestMemoryMmap> + Clone,
{
    let mem = chain.memory().clone();
    let mut out = Chain {
        head: chain.head_index(),
        segments: Vec::new(),
    };
    let mut total: u64 = 0;
    let mut seen_writable = false;
    for desc in chain {
        let len = desc.len();
        if len == 0 {
            continue;
        }
        let addr = desc.addr();
        if addr.checked_add(u64::from(len)).is_none()
            || !GuestMemory::check_range(&mem, addr, len as usize, Permissions::ReadWrite)
        {
            return Err(ChainError::OutOfRange {
                addr: addr.raw_value(),
                len,
            });
        }
        let writable = desc.is_write_only();
        if writable {
            seen_writable = true;
        } else if seen_writable {
            return Err(ChainError::ReadableAfterWritable);
        }
        total += u64::from(len);
        if total > MAX_CHAIN_BYTES {
            return Err(ChainError::TooLarge);
        }
        out.segments.push(Segment {
            addr,
            len,
            writable,
        });
    }
    Ok(out)
}

impl Chain {
    pub fn readable(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter().filter(|s| !s.writable)
    }

    pub fn writable(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter().filter(|s| s.writable)
    }

    pub fn readable_len(&self) -> usize {
        self.readable().map(|s| s.len as usize).sum()
    }

    pub fn writable_len(&self) -> usize {
        self.writable().map(|s| s.len as usize).sum()
    }

    /// Copies all device-readable bytes (at most [`MAX_CHAIN_BYTES`], checked in parsing).
    pub fn read_all(&self, mem: &GuestMemoryMmap) -> Result<Vec<u8>, vm_memory::GuestMemoryError> {
        let mut buf = vec![0u8; self.readable_len()];
        let mut off = 0;
        for s in self.readable() {
            let end = off + s.len as usize;
            mem.read_slice(&mut buf[off..end], s.addr)?;
            off = end;
        }
        Ok(buf)
    }

    /// Writes `data` into the device-writable buffers starting `offset` bytes into them;
    /// returns how many bytes fit.
    pub fn write_at(
        &self,
        mem: &GuestMemoryMmap,
        offset: usize,
        data: &[u8],
    ) -> Result<usize, vm_memory::GuestMemoryError> {
        let mut skip = offset;
        let mut written = 0;
        for s in self.writable() {
            if written == data.len() {
                break;
            }
            let len = s.len as usize;
            if skip >= len {
                skip -= len;
                continue;
            }
            let n = (len - skip).min(data.len() - written);
            mem.write_slice(
                &data[written..written + n],
                s.addr.unchecked_add(skip as u64),
            )?;
            written += n;
            skip = 0;
        }
        Ok(written)
    }

    /// The device-writable buffers as (address, length) pieces covering `offset..offset+len`
    /// of the writable area, for devices that stream straight into guest memory.
    pub fn writable_range(&self, offset: usize, len: usize) -> Vec<(GuestAddress, usize)> {
        range_of(self.writable(), offset, len)
    }

    /// Same as [`Chain::writable_range`] for the device-readable area.
    pub fn readable_range(&self, offset: usize, len: usize) -> Vec<(GuestAddress, usize)> {
        range_of(self.readable(), offset, len)
    }
}

fn range_of<'a>(
    segs: impl Iterator<Item = &'a Segment>,
    offset: usize,
    len: usize,
) -> Vec<(GuestAddress, usize)> {
    let mut out = Vec::new();
    let mut skip = offset;
    let mut left = len;
    for s in segs {
        if left == 0 {
            break;
        }
        let slen = s.len as usize;
        if skip >= slen {
            skip -= slen;
            continue;
        }
        let n = (slen - skip).min(left);
        out.push((s.addr.unchecked_add(skip as u64), n));
        left -= n;
        skip = 0;
    }
    out
}

/// Pops one available chain, validates it and hands it to `handle` (`None`
/// for a refused chain, already logged), which returns the number of bytes
/// it wrote for the used ring. Returns `None` when the driver has no buffer
/// available, else whether the chain went back on the used ring.
pub fn serve_one(
    queue: &mut virtio_queue::Queue,
    mem: &GuestMemoryMmap,
    name: &str,
    handle: impl FnOnce(Option<&Chain>) -> u32,
) -> Option<bool> {
    use virtio_queue::QueueT;
    let chain = queue.pop_descriptor_chain(mem)?;
    let head = chain.head_index();
    let len = match parse_chain(chain) {
        Ok(c) => handle(Some(&c)),
        Err(e) => {
            tracing::warn!("{name}: refused descriptor chain {head}: {e}");
            handle(None)
        }
    };
    // Fails only for a head index beyond the queue (a guest bug).
    match queue.add_used(mem, head, len) {
        Ok(()) => Some(true),
        Err(e) => {
            tracing::warn!("{name}: cannot return chain {head} to the used ring: {e}");
            Some(false)
        }
    }
}

/// Serves every available chain (see [`serve_one`]); refused chains are
/// returned with length 0 so the driver gets its buffers back. Returns true
/// if anything was put on the used ring.
pub fn drain_queue(
    queue: &mut virtio_queue::Queue,
    mem: &GuestMemoryMmap,
    name: &str,
    mut handle: impl FnMut(&Chain) -> u32,
) -> bool {
    let mut used = false;
    // A chain that cannot go back on the used ring is skipped: keep serving the rest.
    while let Some(ok) = serve_one(queue, mem, name, |c| c.map_or(0, &mut handle)) {
        used |= ok;
    }
    used
}
