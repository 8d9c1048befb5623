//! Property tests for virtqueue descriptor parsing: whatever a guest writes into the
//! descriptor table and rings, `parse_chain` / `drain_queue` must terminate, never panic,
//! and only ever hand devices buffers that lie entirely inside guest memory, with no
//! zero-length buffers and device-readable buffers before device-writable ones.
//!
//! A deterministic xorshift generator drives the cases (no proptest dependency); every
//! failure message carries the seed and iteration to replay it.

use virtio_queue::{Queue, QueueT};

use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};
use vmm::devices::virtio::queue::{drain_queue, parse_chain, ChainError, MAX_CHAIN_BYTES};
use vmm::memory::{guest_memory, GuestMemoryMmap};

const VRING_DESC_F_NEXT: u16 = 1;
const VRING_DESC_F_WRITE: u16 = 2;
const VRING_DESC_F_INDIRECT: u16 = 4;

/// Two RAM regions with a hole between them, like a guest with an MMIO gap.
const LOW: (u64, usize) = (0, 0x1_0000);
const HIGH: (u64, usize) = (0x2_0000, 0x1_0000);
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x3000;
const USED: u64 = 0x4000;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn memory() -> GuestMemoryMmap {
    guest_memory(
        &[(GuestAddress(LOW.0), LOW.1), (GuestAddress(HIGH.0), HIGH.1)],
        false,
    )
    .unwrap()
}

fn write_desc(
    mem: &GuestMemoryMmap,
    table: u64,
    i: u16,
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
) {
    let base = GuestAddress(table + u64::from(i) * 16);
    mem.write_obj(addr, base).unwrap();
    mem.write_obj(len, base.unchecked_add(8)).unwrap();
    mem.write_obj(flags, base.unchecked_add(12)).unwrap();
    mem.write_obj(next, base.unchecked_add(14)).unwrap();
}

fn queue(mem: &GuestMemoryMmap, size: u16) -> Queue {
    let mut q = Queue::new(256).unwrap();
    q.set_size(size);
    q.set_desc_table_address(Some(DESC as u32), Some(0));
    q.set_avail_ring_address(Some(AVAIL as u32), Some(0));
    q.set_used_ring_address(Some(USED as u32), Some(0));
    q.set_ready(true);
    assert!(q.is_valid(mem));
    q
}

fn publish(mem: &GuestMemoryMmap, heads: &[u16], size: u16) {
    for (i, h) in heads.iter().enumerate() {
        let slot = (i as u64) % u64::from(size);
        mem.write_obj(*h, GuestAddress(AVAIL + 4 + slot * 2))
            .unwrap();
    }
    mem.write_obj(heads.len() as u16, GuestAddress(AVAIL + 2))
        .unwrap();
}

/// An address the generator likes: inside either region, at or across their ends, in the
/// hole, or anywhere in the 64-bit space.
fn address(r: &mut XorShift) -> u64 {
    match r.below(7) {
        0 => r.below(LOW.1 as u64),
        1 => HIGH.0 + r.below(HIGH.1 as u64),
        2 => LOW.1 as u64 - r.below(64),
        3 => HIGH.0 + HIGH.1 as u64 - r.below(64),
        4 => LOW.1 as u64 + r.below(HIGH.0 - LOW.1 as u64),
        5 => u64::MAX - r.below(4096),
        _ => r.next(),
    }
}

fn length(r: &mut XorShift) -> u32 {
    match r.below(5) {
        0 => 0,
        1 => 1 + r.below(16) as u32,
        2 => r.below(0x1_0000) as u32,
        3 => u32::MAX - r.below(16) as u32,
        _ => r.next() as u32,
    }
}

#[test]
fn random_tables_only_yield_buffers_inside_guest_memory() {
    let seed = 0x5eed_b01d_u64;
    let mut r = XorShift(seed);
    let mut chains = 0u64;
    let mut refused = 0u64;
    for iter in 0..3000 {
        let mem = memory();
        let size = 1u16 << r.below(9); // 1..=256
        let flag_bits = [
            0,
            VRING_DESC_F_NEXT,
            VRING_DESC_F_WRITE,
            VRING_DESC_F_INDIRECT,
        ];
        for i in 0..size {
            let flags = (0..2).fold(0, |f, _| f | flag_bits[r.below(4) as usize]);
            let next = if r.below(4) == 0 {
                r.next() as u16
            } else {
                r.below(u64::from(size)) as u16
            };
            let len = if flags & VRING_DESC_F_INDIRECT != 0 && r.below(2) == 0 {
                16 * (1 + r.below(8) as u32) // a plausible indirect table
            } else {
                length(&mut r)
            };
            write_desc(&mem, DESC, i, address(&mut r), len, flags, next);
        }
        let n = 1 + r.below(u64::from(size).min(16)) as usize;
        let heads: Vec<u16> = (0..n)
            .map(|_| {
                if r.below(8) == 0 {
                    r.next() as u16
                } else {
                    r.below(u64::from(size)) as u16
                }
            })
            .collect();
        publish(&mem, &heads, size);
        let mut q = queue(&mem, size);
        let ctx = format!("seed {seed:#x} iteration {iter}");
        let used = drain_queue(&mut q, &mem, "fuzz", |c| {
            chains += 1;
            let mut seen_writable = false;
            let mut total = 0u64;
            for s in &c.segments {
                assert!(s.len > 0, "{ctx}: zero-length segment");
                assert!(
                    GuestMemory::check_range(&mem, s.addr, s.len as usize, Permissions::ReadWrite),
                    "{ctx}: segment {:#x}+{:#x} outside guest memory",
                    s.addr.raw_value(),
                    s.len
                );
                assert!(
                    !seen_writable || s.writable,
                    "{ctx}: readable after writable"
                );
                seen_writable |= s.writable;
                total += u64::from(s.len);
            }
            assert!(total <= MAX_CHAIN_BYTES, "{ctx}: chain too large");
            // Direct chains have at most `size` descriptors; an indirect table at most 2^16.
            assert!(
                c.segments.len() <= usize::from(size) + 65536,
                "{ctx}: chain did not end"
            );
            // Touch every byte the device may touch: must not fail. Writable buffers get
            // their own bytes back, so buffers overlapping the rings leave them intact.
            c.read_all(&mem)
                .unwrap_or_else(|e| panic!("{ctx}: read_all: {e}"));
            let mut off = 0;
            for s in c.writable() {
                let mut bytes = vec![0u8; s.len as usize];
                mem.read_slice(&mut bytes, s.addr).unwrap();
                let n = c
                    .write_at(&mem, off, &bytes)
                    .unwrap_or_else(|e| panic!("{ctx}: write_at: {e}"));
                assert_eq!(n, bytes.len(), "{ctx}: short write_at");
                off += n;
            }
            0
        });
        // Every published head within the queue comes back on the used ring exactly once;
        // heads beyond the queue are skipped without stalling the rest.
        let valid = heads.iter().filter(|h| **h < size).count();
        let used_idx: u16 = mem.read_obj(GuestAddress(USED + 2)).unwrap();
        assert_eq!(usize::from(used_idx), valid, "{ctx}: used ring index");
        assert_eq!(used, valid > 0, "{ctx}: drain_queue's return value");
        refused += n as u64;
    }
    assert!(chains > 0, "the generator never produced a valid chain");
    assert!(
        refused > chains,
        "the generator never produced an invalid chain"
    );
}

fn pop(mem: &GuestMemoryMmap, size: u16) -> Result<vmm::devices::virtio::queue::Chain, ChainError> {
    publish(mem, &[0], size);
    let mut q = queue(mem, size);
    let chain = q.pop_descriptor_chain(mem).expect("a chain is available");
    parse_chain(chain)
}

#[test]
fn a_looping_chain_ends_after_queue_size_descriptors() {
    let mem = memory();
    // 0 -> 1 -> 0 -> 1 ... forever, as a malicious driver could write.
    write_desc(&mem, DESC, 0, 0x8000, 16, VRING_DESC_F_NEXT, 1);
    write_desc(&mem, DESC, 1, 0x9000, 16, VRING_DESC_F_NEXT, 0);
    let c = pop(&mem, 8).unwrap();
    assert_eq!(c.segments.len(), 8);
}

#[test]
fn out_of_range_and_wrapping_buffers_are_refused() {
    for (addr, len) in [
        (LOW.1 as u64 - 8, 16),      // runs off the end of the low region
        (LOW.1 as u64 + 0x100, 16),  // inside the hole
        (HIGH.0 + HIGH.1 as u64, 1), // just past the end of RAM
        (u64::MAX - 3, 16),          // wraps around the address space
        (0x100, u32::MAX),           // longer than all of RAM
    ] {
        let mem = memory();
        write_desc(&mem, DESC, 0, addr, len, 0, 0);
        assert_eq!(
            pop(&mem, 4),
            Err(ChainError::OutOfRange { addr, len }),
            "{addr:#x}+{len:#x}"
        );
    }
}

#[test]
fn zero_length_descriptors_are_skipped() {
    let mem = memory();
    write_desc(&mem, DESC, 0, 0x8000, 0, VRING_DESC_F_NEXT, 1);
    write_desc(&mem, DESC, 1, 0xdead_0000_0000, 0, VRING_DESC_F_NEXT, 2);
    write_desc(&mem, DESC, 2, 0x8000, 32, VRING_DESC_F_WRITE, 0);
    let c = pop(&mem, 4).unwrap();
    assert_eq!(c.segments.len(), 1);
    assert_eq!(c.writable_len(), 32);
}

#[test]
fn readable_after_writable_is_refused() {
    let mem = memory();
    write_desc(
        &mem,
        DESC,
        0,
        0x8000,
        16,
        VRING_DESC_F_WRITE | VRING_DESC_F_NEXT,
        1,
    );
    write_desc(&mem, DESC, 1, 0x9000, 16, 0, 0);
    assert_eq!(pop(&mem, 4), Err(ChainError::ReadableAfterWritable));
}

#[test]
fn segments_spanning_two_regions_read_and_write_piecewise() {
    let mem = memory();
    write_desc(&mem, DESC, 0, LOW.1 as u64 - 4, 4, VRING_DESC_F_NEXT, 1);
    write_desc(&mem, DESC, 1, HIGH.0, 4, VRING_DESC_F_WRITE, 0);
    mem.write_slice(b"abcd", GuestAddress(LOW.1 as u64 - 4))
        .unwrap();
    let c = pop(&mem, 4).unwrap();
    assert_eq!(c.read_all(&mem).unwrap(), b"abcd");
    assert_eq!(c.write_at(&mem, 1, b"xyz!").unwrap(), 3);
    let mut out = [0u8; 4];
    mem.read_slice(&mut out, GuestAddress(HIGH.0)).unwrap();
    assert_eq!(&out, b"\0xyz");
}
