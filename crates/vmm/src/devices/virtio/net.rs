//! virtio-net on a host tap interface.
//!
//! The tap is opened with IFF_VNET_HDR and a 12-byte header size, the same layout as the
//! virtio 1.x `virtio_net_hdr_v1`, so a frame and its header cross between the guest and
//! the tap in one piece. No offloads are offered: the guest sends and receives plain frames.
//! A frame from the tap that finds no guest buffer waits (one frame) until the guest posts
//! some; the tap fd is watched edge-triggered and drained until EAGAIN.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use crate::memory::GuestMemoryMmap;
use event_manager::EventSet;
use virtio_queue::Queue;

use super::queue::{drain_queue, serve_one};
use super::{read_config_bytes, Activation, DeviceEvents, VirtioDevice, TYPE_NET};
use crate::config::{parse_mac, NetConfig};
use crate::error::{Error, Result};

const QUEUE_SIZES: &[u16] = &[256, 256];
const RXQ: usize = 0;
const TXQ: usize = 1;
const VIRTIO_NET_F_MAC: u64 = 1 << 5;
/// struct virtio_net_hdr_v1.
pub const NET_HDR_LEN: usize = 12;
/// Largest frame plus header the device moves (64 KiB frames, as a tap can carry).
const MAX_FRAME: usize = 65562;
const TAP_TOKEN: u32 = 0;

const IFF_TAP: u16 = 0x0002;
const IFF_NO_PI: u16 = 0x1000;
const IFF_VNET_HDR: u16 = 0x4000;
// _IOW('T', 202, int) and _IOW('T', 216, int) from <linux/if_tun.h>.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;

pub struct Net {
    name: String,
    tap: File,
    mac: [u8; 6],
    active: Option<(GuestMemoryMmap, Vec<Queue>)>,
    /// A frame read from the tap that is waiting for a guest RX buffer.
    pending: Option<Vec<u8>>,
    tap_readable: bool,
}

/// Opens `name` on /dev/net/tun as a tap with a virtio header.
fn open_tap(dev: &str, tap: &str) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|e| Error::device(dev, format!("open /dev/net/tun: {e}")))?;
    // struct ifreq: 16 bytes of name, then the flags (short) in the union; 40 bytes total.
    let mut ifreq = [0u8; 40];
    ifreq[..tap.len()].copy_from_slice(tap.as_bytes());
    ifreq[16..18].copy_from_slice(&(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR).to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq; `ifreq` is 40 bytes (its size on
    // x86_64), lives for the call, and the name is NUL-terminated (len < IFNAMSIZ checked
    // in config validation).
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, ifreq.as_mut_ptr()) };
    if rc < 0 {
        return Err(Error::device(
            dev,
            format!("TUNSETIFF {tap}: {}", std::io::Error::last_os_error()),
        ));
    }
    let hdr_len: libc::c_int = NET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which is valid for the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETVNETHDRSZ as _, &hdr_len) };
    if rc < 0 {
        return Err(Error::device(
            dev,
            format!("TUNSETVNETHDRSZ {tap}: {}", std::io::Error::last_os_error()),
        ));
    }
    Ok(file)
}

impl Net {
    pub fn new(name: String, config: &NetConfig, index: usize) -> Result<Self> {
        let mac = match &config.mac {
            Some(m) => parse_mac(m).map_err(|e| Error::device(&name, e))?,
            // Locally administered, unicast, one per device.
            None => [0x02, 0xb1, 0x0c, 0x00, 0x00, (index as u8).wrapping_add(1)],
        };
        let tap = open_tap(&name, &config.tap)?;
        Ok(Net {
            name,
            tap,
            mac,
            active: None,
            pending: None,
            tap_readable: true,
        })
    }

    fn process_tx(&mut self) -> bool {
        let Some((mem, queues)) = self.active.as_mut() else {
            return false;
        };
        let tap = &mut self.tap;
        let name = &self.name;
        drain_queue(&mut queues[TXQ], mem, name, |c| {
            if c.readable_len() > MAX_FRAME || c.readable_len() < NET_HDR_LEN {
                tracing::warn!("{name}: TX frame of {} bytes dropped", c.readable_len());
                return 0;
            }
            match c.read_all(mem) {
                Ok(frame) => {
                    if let Err(e) = tap.write(&frame) {
                        // A full tap queue drops the frame, as a congested link would.
                        tracing::debug!("{name}: tap write: {e}");
                    }
                }
                Err(e) => tracing::warn!("{name}: TX frame unreadable: {e}"),
            }
            0
        })
    }

    fn process_rx(&mut self) -> bool {
        let Some((mem, queues)) = self.active.as_mut() else {
            return false;
        };
        let q = &mut queues[RXQ];
        let mut used = false;
        loop {
            if self.pending.is_none() {
                if !self.tap_readable {
                    break;
                }
                let mut buf = vec![0u8; MAX_FRAME];
                match self.tap.read(&mut buf) {
                    Ok(n) if n >= NET_HDR_LEN => {
                        buf.truncate(n);
                        // num_buffers = 1: no mergeable buffers were negotiated.
                        buf[10..12].copy_from_slice(&1u16.to_le_bytes());
                        self.pending = Some(buf);
                    }
                    Ok(_) => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        self.tap_readable = false;
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!("{}: tap read: {e}", self.name);
                        self.tap_readable = false;
                        break;
                    }
                }
            }
            let pending = &mut self.pending;
            let name = &self.name;
            let served = serve_one(q, mem, name, |c| {
                let frame = pending.take().unwrap_or_default();
                match c {
                    Some(c) if c.writable_len() >= frame.len() => {
                        c.write_at(mem, 0, &frame).unwrap_or(0) as u32
                    }
                    Some(c) => {
                        tracing::warn!(
                            "{name}: RX buffer of {} bytes too small for a {}-byte frame; dropped",
                            c.writable_len(),
                            frame.len()
                        );
                        0
                    }
                    None => 0,
                }
            });
            match served {
                Some(true) => used = true,
                // No guest buffer: keep the frame for later.
                None | Some(false) => break,
            }
        }
        used
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn queue_max_sizes(&self) -> &[u16] {
        QUEUE_SIZES
    }
    fn features(&self) -> u64 {
        VIRTIO_NET_F_MAC
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_net_config starts with `u8 mac[6]`.
        read_config_bytes(&self.mac, offset, data);
    }
    fn activate(&mut self, a: Activation) -> std::result::Result<(), String> {
        if a.queues.len() != QUEUE_SIZES.len() {
            return Err("net needs 2 queues".into());
        }
        self.active = Some((a.mem, a.queues));
        Ok(())
    }
    fn reset(&mut self) {
        self.active = None;
        self.pending = None;
    }
    fn queues(&self) -> &[Queue] {
        self.active.as_ref().map_or(&[], |(_, q)| q.as_slice())
    }
    fn register_events(&mut self, events: &mut DeviceEvents) {
        if let Err(e) = events.add(self.tap.as_raw_fd(), TAP_TOKEN, EventSet::IN) {
            tracing::warn!("{}: cannot watch the tap: {e}", self.name);
        }
        self.tap_readable = true;
    }
    fn queue_notify(&mut self, index: usize, _events: &mut DeviceEvents) -> bool {
        let mut used = false;
        if index == TXQ {
            used |= self.process_tx();
        }
        used |= self.process_rx();
        used
    }
    fn host_event(&mut self, _token: u32, _set: EventSet, _events: &mut DeviceEvents) -> bool {
        self.tap_readable = true;
        self.process_rx()
    }
}
