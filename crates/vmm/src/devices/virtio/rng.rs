//! virtio-rng: fills every device-writable buffer with bytes from the host's getrandom(2).

use virtio_queue::Queue;
use vm_memory::{Address, Bytes};

use crate::memory::GuestMemoryMmap;

use super::queue::{drain_queue, Chain};
use super::{Activation, DeviceEvents, VirtioDevice, TYPE_RNG};

const QUEUE_SIZES: &[u16] = &[256];
/// Bytes handed out per request at most: a driver asking for more gets a short answer, as
/// the spec allows.
const MAX_REQUEST: usize = 64 << 10;

pub struct Rng {
    name: String,
    active: Option<(GuestMemoryMmap, Queue)>,
}

impl Rng {
    pub fn new(name: String) -> Self {
        Rng { name, active: None }
    }
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`, which is
        // valid for writes; getrandom writes at most that many bytes.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        } else {
            filled += n as usize;
        }
    }
    Ok(())
}

fn fill(name: &str, mem: &GuestMemoryMmap, chain: &Chain) -> u32 {
    let mut written = 0usize;
    let mut buf = [0u8; 4096];
    for seg in chain.writable() {
        let mut off = 0usize;
        while off < seg.len as usize && written < MAX_REQUEST {
            let n = (seg.len as usize - off)
                .min(buf.len())
                .min(MAX_REQUEST - written);
            if let Err(e) = getrandom(&mut buf[..n]) {
                tracing::warn!("{name}: getrandom failed: {e}");
                return written as u32;
            }
            if mem
                .write_slice(&buf[..n], seg.addr.unchecked_add(off as u64))
                .is_err()
            {
                return written as u32;
            }
            off += n;
            written += n;
        }
    }
    written as u32
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        TYPE_RNG
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn queue_max_sizes(&self) -> &[u16] {
        QUEUE_SIZES
    }
    fn features(&self) -> u64 {
        0
    }
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn activate(&mut self, a: Activation) -> Result<(), String> {
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
        let Some((mem, queue)) = &mut self.active else {
            return false;
        };
        let name = &self.name;
        drain_queue(queue, mem, name, |c| fill(name, mem, c))
    }
}
