//! virtio-vsock with a Unix-socket host side (Firecracker's "hybrid vsock" protocol).
//!
//! - Host to guest: a host program connects to the `uds` socket and writes `CONNECT <port>\n`;
//!   the device sends the guest a connection REQUEST for that port from a fresh host port,
//!   and when the guest accepts (RESPONSE) answers the host with `OK <host port>\n`. From
//!   then on bytes flow both ways.
//! - Guest to host: a guest connection REQUEST to CID 2 port P makes the device connect to
//!   the Unix socket `<uds>_P`; RESPONSE on success, RST if nobody listens.
//!
//! A jailed VMM reaches no path: it is given a [`HostConnector`] that asks its supervisor for
//! the `<uds>_P` connection, and the supervisor removes the socket file when the VM ends.
//!
//! A restored snapshot has no connections (they were the old VMM's sockets): the device sends
//! the guest a transport-reset event and the listener is bound anew.
//!
//! Stream sockets only. Credit-based flow control as the spec describes: the device never
//! sends more than the guest said it can buffer (`buf_alloc - (tx_cnt - fwd_cnt)`), and
//! advertises its own buffer so the guest does the same. Every guest header and payload is
//! read through the validated chain; a packet that does not add up is answered with RST.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use event_manager::EventSet;
use virtio_queue::Queue;
use vm_memory::ByteValued;

use crate::memory::GuestMemoryMmap;

use super::queue::{drain_queue, Chain};
use super::{read_config_bytes, Activation, DeviceEvents, VirtioDevice, TYPE_VSOCK};
use crate::config::VsockConfig;
use crate::error::{Error, Result};

const QUEUE_SIZES: &[u16] = &[256, 256, 256];
const RXQ: usize = 0;
const TXQ: usize = 1;
const EVQ: usize = 2;
/// struct virtio_vsock_event's id for "every connection is gone" (a restored snapshot).
const EVENT_TRANSPORT_RESET: u32 = 0;

pub const HOST_CID: u64 = 2;
pub const TYPE_STREAM: u16 = 1;
pub const OP_REQUEST: u16 = 1;
pub const OP_RESPONSE: u16 = 2;
pub const OP_RST: u16 = 3;
pub const OP_SHUTDOWN: u16 = 4;
pub const OP_RW: u16 = 5;
pub const OP_CREDIT_UPDATE: u16 = 6;
pub const OP_CREDIT_REQUEST: u16 = 7;

/// Bytes the device buffers per connection towards the host (advertised as buf_alloc).
const BUF_ALLOC: u32 = 256 << 10;
/// Bytes read from host sockets and not yet handed to the guest, over all connections.
const MAX_PENDING_RX: usize = 256 << 10;
/// First port the device uses for host-initiated connections.
const FIRST_HOST_PORT: u32 = 1 << 30;
const LISTENER_TOKEN: u32 = 0;
/// Longest `CONNECT <port>\n` line accepted.
const MAX_CONNECT_LINE: usize = 64;

/// struct virtio_vsock_hdr (little-endian, packed, 44 bytes).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

// SAFETY: `Header` is a packed struct of plain integers: every byte pattern is a valid value
// and it has no padding.
unsafe impl ByteValued for Header {}

pub const HEADER_LEN: usize = std::mem::size_of::<Header>();

struct Packet {
    hdr: Header,
    data: Vec<u8>,
}

/// How guest-initiated connections reach the host's `<uds>_P` listener when the VMM cannot
/// connect by path itself.
pub trait HostConnector: Send {
    /// A connected stream to the listener for guest connections to host port `port`.
    fn connect(&self, port: u32) -> std::io::Result<UnixStream>;
}

/// (guest port, host port)
type ConnKey = (u32, u32);

struct Conn {
    stream: UnixStream,
    token: u32,
    established: bool,
    /// What the guest told us about its receive buffer.
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Bytes sent to the guest / consumed from the guest (for credit).
    tx_cnt: u32,
    fwd_cnt: u32,
    fwd_cnt_advertised: u32,
    /// Guest bytes the host socket did not take yet.
    to_host: Vec<u8>,
    /// Host bytes that arrived before the guest accepted (after the CONNECT line).
    early: Vec<u8>,
    readable: bool,
    eof_sent: bool,
}

impl Conn {
    fn peer_credit(&self) -> u32 {
        self.peer_buf_alloc
            .saturating_sub(self.tx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }
}

pub struct Vsock {
    name: String,
    cid: u64,
    uds: PathBuf,
    listener: UnixListener,
    /// Set for a jailed VMM: guest connections go through it, and the socket file is the
    /// supervisor's to remove.
    connector: Option<Box<dyn HostConnector>>,
    active: Option<(GuestMemoryMmap, Vec<Queue>)>,
    /// Host connections that have not sent their CONNECT line yet, by token.
    pending: HashMap<u32, (UnixStream, Vec<u8>)>,
    conns: HashMap<ConnKey, Conn>,
    tokens: HashMap<u32, ConnKey>,
    rx: VecDeque<Packet>,
    rx_bytes: usize,
    next_token: u32,
    next_host_port: u32,
}

impl Vsock {
    /// Binds the host socket. A stale socket file at `uds` is replaced; any other file there
    /// is an error (the VMM never deletes what is not a socket).
    pub fn new(
        name: String,
        config: &VsockConfig,
        connector: Option<Box<dyn HostConnector>>,
    ) -> Result<Self> {
        if let Ok(meta) = std::fs::symlink_metadata(&config.uds) {
            if !meta.file_type().is_socket() {
                return Err(Error::device(
                    &name,
                    format!("{} exists and is not a socket", config.uds.display()),
                ));
            }
            let _ = std::fs::remove_file(&config.uds);
        }
        let listener = UnixListener::bind(&config.uds)
            .map_err(|e| Error::device(&name, format!("bind {}: {e}", config.uds.display())))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::device(&name, format!("nonblocking listener: {e}")))?;
        Ok(Vsock {
            name,
            cid: config.cid,
            uds: config.uds.clone(),
            listener,
            connector,
            active: None,
            pending: HashMap::new(),
            conns: HashMap::new(),
            tokens: HashMap::new(),
            rx: VecDeque::new(),
            rx_bytes: 0,
            next_token: 1,
            next_host_port: FIRST_HOST_PORT,
        })
    }

    fn header(&self, key: ConnKey, op: u16) -> Header {
        let fwd_cnt = self.conns.get(&key).map_or(0, |c| c.fwd_cnt);
        Header {
            src_cid: HOST_CID,
            dst_cid: self.cid,
            src_port: key.1,
            dst_port: key.0,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: BUF_ALLOC,
            fwd_cnt,
        }
    }

    fn queue_packet(&mut self, hdr: Header, data: Vec<u8>) {
        self.rx_bytes += data.len();
        self.rx.push_back(Packet { hdr, data });
    }

    fn send_control(&mut self, key: ConnKey, op: u16, flags: u32) {
        let mut hdr = self.header(key, op);
        hdr.flags = flags;
        if let Some(c) = self.conns.get_mut(&key) {
            c.fwd_cnt_advertised = c.fwd_cnt;
        }
        self.queue_packet(hdr, Vec::new());
    }

    /// A reset for a packet that belongs to no connection we know.
    fn reset_reply(&mut self, to: &Header) {
        let hdr = Header {
            src_cid: HOST_CID,
            dst_cid: self.cid,
            src_port: to.dst_port,
            dst_port: to.src_port,
            type_: TYPE_STREAM,
            op: OP_RST,
            buf_alloc: BUF_ALLOC,
            ..Default::default()
        };
        self.queue_packet(hdr, Vec::new());
    }

    fn close(&mut self, key: ConnKey, events: &mut DeviceEvents) {
        if let Some(c) = self.conns.remove(&key) {
            events.remove(c.stream.as_raw_fd(), c.token, stream_events());
            self.tokens.remove(&c.token);
        }
    }

    fn register_stream(&mut self, stream: &UnixStream, events: &mut DeviceEvents) -> Option<u32> {
        let token = self.next_token;
        self.next_token = self.next_token.wrapping_add(1).max(1);
        match events.add(stream.as_raw_fd(), token, stream_events()) {
            Ok(()) => Some(token),
            Err(e) => {
                tracing::warn!("{}: cannot watch a connection: {e}", self.name);
                None
            }
        }
    }

    /// Accepts host connections until the listener has none left (edge-triggered).
    fn accept(&mut self, events: &mut DeviceEvents) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    if let Some(token) = self.register_stream(&stream, events) {
                        self.pending.insert(token, (stream, Vec::new()));
                        // Data may have arrived before the fd was watched.
                        self.read_connect_line(token, events);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!("{}: accept: {e}", self.name);
                    break;
                }
            }
        }
    }

    /// Reads a pending host connection's `CONNECT <port>\n` and turns it into a REQUEST.
    fn read_connect_line(&mut self, token: u32, events: &mut DeviceEvents) {
        let Some((stream, line)) = self.pending.get_mut(&token) else {
            return;
        };
        let mut buf = [0u8; MAX_CONNECT_LINE];
        let mut closed = false;
        loop {
            match stream.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => line.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
            if line.contains(&b'\n') || line.len() > MAX_CONNECT_LINE {
                break;
            }
        }
        let Some(nl) = line.iter().position(|b| *b == b'\n') else {
            if closed || line.len() > MAX_CONNECT_LINE {
                if let Some((s, _)) = self.pending.remove(&token) {
                    events.remove(s.as_raw_fd(), token, stream_events());
                }
            }
            return;
        };
        let Some((mut stream, line)) = self.pending.remove(&token) else {
            return;
        };
        let port = std::str::from_utf8(&line[..nl])
            .ok()
            .and_then(|l| l.trim().strip_prefix("CONNECT "))
            .and_then(|p| p.trim().parse::<u32>().ok());
        let Some(port) = port else {
            let _ = stream.write_all(b"ERROR bad CONNECT line\n");
            events.remove(stream.as_raw_fd(), token, stream_events());
            return;
        };
        let host_port = self.next_host_port;
        self.next_host_port = self.next_host_port.wrapping_add(1).max(FIRST_HOST_PORT);
        let key = (port, host_port);
        self.tokens.insert(token, key);
        self.conns.insert(
            key,
            Conn {
                stream,
                token,
                established: false,
                peer_buf_alloc: 0,
                peer_fwd_cnt: 0,
                tx_cnt: 0,
                fwd_cnt: 0,
                fwd_cnt_advertised: 0,
                to_host: Vec::new(),
                early: line[nl + 1..].to_vec(),
                readable: true,
                eof_sent: false,
            },
        );
        self.send_control(key, OP_REQUEST, 0);
    }

    /// One packet from the guest's TX queue.
    fn guest_packet(&mut self, hdr: Header, data: &[u8], events: &mut DeviceEvents) {
        let (src_cid, dst_cid, type_, op) = (hdr.src_cid, hdr.dst_cid, hdr.type_, hdr.op);
        if src_cid != self.cid || dst_cid != HOST_CID {
            tracing::debug!("{}: packet {src_cid}->{dst_cid} dropped", self.name);
            return;
        }
        if type_ != TYPE_STREAM {
            self.reset_reply(&hdr);
            return;
        }
        let key: ConnKey = (hdr.src_port, hdr.dst_port);
        if let Some(c) = self.conns.get_mut(&key) {
            c.peer_buf_alloc = hdr.buf_alloc;
            c.peer_fwd_cnt = hdr.fwd_cnt;
        }
        match op {
            OP_REQUEST => self.guest_connect(key, &hdr, events),
            OP_RESPONSE => {
                let Some(c) = self.conns.get_mut(&key) else {
                    self.reset_reply(&hdr);
                    return;
                };
                if !c.established {
                    c.established = true;
                    let ok = format!("OK {}\n", key.1);
                    if c.stream.write_all(ok.as_bytes()).is_err() {
                        self.send_control(key, OP_RST, 0);
                        self.close(key, events);
                        return;
                    }
                    let early = std::mem::take(&mut c.early);
                    if !early.is_empty() {
                        let mut h = self.header(key, OP_RW);
                        h.len = early.len() as u32;
                        if let Some(c) = self.conns.get_mut(&key) {
                            c.tx_cnt = c.tx_cnt.wrapping_add(early.len() as u32);
                        }
                        self.queue_packet(h, early);
                    }
                }
            }
            OP_RW => {
                let Some(c) = self.conns.get_mut(&key) else {
                    self.reset_reply(&hdr);
                    return;
                };
                if c.to_host.len() + data.len() > BUF_ALLOC as usize {
                    // The guest ignored our credit: it loses the connection.
                    tracing::warn!("{}: guest overran the connection buffer", self.name);
                    self.send_control(key, OP_RST, 0);
                    self.close(key, events);
                    return;
                }
                c.to_host.extend_from_slice(data);
                if !self.flush_to_host(key) {
                    self.send_control(key, OP_RST, 0);
                    self.close(key, events);
                }
            }
            OP_SHUTDOWN | OP_RST => {
                if self.conns.contains_key(&key) {
                    if op == OP_SHUTDOWN {
                        // No half-close on the Unix side: finish the connection.
                        let _ = self.flush_to_host(key);
                        self.send_control(key, OP_RST, 0);
                    }
                    self.close(key, events);
                }
            }
            OP_CREDIT_UPDATE => {}
            OP_CREDIT_REQUEST => {
                if self.conns.contains_key(&key) {
                    self.send_control(key, OP_CREDIT_UPDATE, 0);
                }
            }
            _ => self.reset_reply(&hdr),
        }
    }

    fn guest_connect(&mut self, key: ConnKey, hdr: &Header, events: &mut DeviceEvents) {
        if self.conns.contains_key(&key) {
            self.reset_reply(hdr);
            return;
        }
        let path = format!("{}_{}", self.uds.display(), key.1);
        let stream = match &self.connector {
            Some(c) => c.connect(key.1),
            None => UnixStream::connect(&path),
        };
        let stream = match stream {
            Ok(s) if s.set_nonblocking(true).is_ok() => s,
            Ok(_) | Err(_) => {
                tracing::debug!("{}: guest connect to {path}: nobody listening", self.name);
                self.reset_reply(hdr);
                return;
            }
        };
        let Some(token) = self.register_stream(&stream, events) else {
            self.reset_reply(hdr);
            return;
        };
        self.tokens.insert(token, key);
        self.conns.insert(
            key,
            Conn {
                stream,
                token,
                established: true,
                peer_buf_alloc: hdr.buf_alloc,
                peer_fwd_cnt: hdr.fwd_cnt,
                tx_cnt: 0,
                fwd_cnt: 0,
                fwd_cnt_advertised: 0,
                to_host: Vec::new(),
                early: Vec::new(),
                readable: true,
                eof_sent: false,
            },
        );
        self.send_control(key, OP_RESPONSE, 0);
    }

    /// Writes buffered guest bytes to the host socket; false if the socket is broken.
    fn flush_to_host(&mut self, key: ConnKey) -> bool {
        let Some(c) = self.conns.get_mut(&key) else {
            return false;
        };
        while !c.to_host.is_empty() {
            match c.stream.write(&c.to_host) {
                Ok(0) => return false,
                Ok(n) => {
                    c.to_host.drain(..n);
                    c.fwd_cnt = c.fwd_cnt.wrapping_add(n as u32);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        // Tell the guest about freed buffer space once a quarter of it is back.
        if c.fwd_cnt.wrapping_sub(c.fwd_cnt_advertised) >= BUF_ALLOC / 4 {
            self.send_control(key, OP_CREDIT_UPDATE, 0);
        }
        true
    }

    /// Moves host socket bytes into RW packets while the guest has credit.
    fn pump_host_reads(&mut self, events: &mut DeviceEvents) {
        let keys: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| c.established && c.readable && !c.eof_sent)
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            loop {
                if self.rx_bytes >= MAX_PENDING_RX {
                    return;
                }
                let Some(c) = self.conns.get_mut(&key) else {
                    break;
                };
                let credit = c.peer_credit() as usize;
                if credit == 0 {
                    break;
                }
                let mut buf = vec![0u8; credit.min(4096)];
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        c.eof_sent = true;
                        // Host closed: tell the guest nothing more will come either way.
                        self.send_control(key, OP_SHUTDOWN, 3);
                        break;
                    }
                    Ok(n) => {
                        buf.truncate(n);
                        c.tx_cnt = c.tx_cnt.wrapping_add(n as u32);
                        let mut h = self.header(key, OP_RW);
                        h.len = n as u32;
                        self.queue_packet(h, buf);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        c.readable = false;
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.send_control(key, OP_RST, 0);
                        self.close(key, events);
                        break;
                    }
                }
            }
        }
    }

    /// Hands queued packets to the guest's RX buffers, one packet (or packet piece) per
    /// chain. Returns true if any chain was used.
    fn deliver_rx(&mut self) -> bool {
        let Some((mem, queues)) = self.active.as_mut() else {
            return false;
        };
        let q = &mut queues[RXQ];
        let mut used = false;
        while !self.rx.is_empty() {
            let (rx, rx_bytes) = (&mut self.rx, &mut self.rx_bytes);
            let served = super::queue::serve_one(q, mem, &self.name, |c| {
                c.map_or(0, |c| write_packet(mem, c, rx, rx_bytes))
            });
            match served {
                Some(true) => used = true,
                None | Some(false) => break,
            }
        }
        used
    }
}

/// Writes the front packet (or as much of its payload as fits) into one RX chain.
fn write_packet(
    mem: &GuestMemoryMmap,
    chain: &Chain,
    rx: &mut VecDeque<Packet>,
    rx_bytes: &mut usize,
) -> u32 {
    let room = chain.writable_len();
    if room < HEADER_LEN {
        return 0;
    }
    let Some(pkt) = rx.front_mut() else {
        return 0;
    };
    let n = pkt.data.len().min(room - HEADER_LEN);
    let mut hdr = pkt.hdr;
    hdr.len = n as u32;
    if chain.write_at(mem, 0, hdr.as_slice()).is_err()
        || chain.write_at(mem, HEADER_LEN, &pkt.data[..n]).is_err()
    {
        return 0;
    }
    if n == pkt.data.len() {
        rx.pop_front();
    } else {
        // The rest goes in the next buffer, as its own RW packet.
        pkt.data.drain(..n);
        pkt.hdr.len = pkt.data.len() as u32;
    }
    *rx_bytes = rx_bytes.saturating_sub(n);
    (HEADER_LEN + n) as u32
}

fn stream_events() -> EventSet {
    EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP
}

impl Drop for Vsock {
    fn drop(&mut self) {
        if self.connector.is_none() {
            let _ = std::fs::remove_file(&self.uds);
        }
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        TYPE_VSOCK
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
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_vsock_config { le64 guest_cid; }
        read_config_bytes(&self.cid.to_le_bytes(), offset, data);
    }
    fn activate(&mut self, a: Activation) -> std::result::Result<(), String> {
        if a.queues.len() != QUEUE_SIZES.len() {
            return Err("vsock needs 3 queues".into());
        }
        self.active = Some((a.mem, a.queues));
        Ok(())
    }
    fn reset(&mut self) {
        // Connections die with the device; the event loop drops their fds' interest when
        // the streams close (edge-triggered entries for closed fds are removed by epoll).
        self.active = None;
        self.rx.clear();
        self.rx_bytes = 0;
        self.conns.clear();
        self.tokens.clear();
        self.pending.clear();
    }
    fn queues(&self) -> &[Queue] {
        self.active.as_ref().map_or(&[], |(_, q)| q.as_slice())
    }
    fn restored(&mut self) -> bool {
        // The connections died with the VMM that was snapshotted; the guest learns it from a
        // transport reset on the event queue (what virtio specifies after a migration), if it
        // left a buffer there.
        let Some((mem, queues)) = self.active.as_mut() else {
            return false;
        };
        let reset = EVENT_TRANSPORT_RESET.to_le_bytes();
        let served = super::queue::serve_one(&mut queues[EVQ], mem, &self.name, |c| {
            c.map_or(0, |c| c.write_at(mem, 0, &reset).unwrap_or(0) as u32)
        });
        served == Some(true)
    }
    fn register_events(&mut self, events: &mut DeviceEvents) {
        if let Err(e) = events.add(self.listener.as_raw_fd(), LISTENER_TOKEN, EventSet::IN) {
            tracing::warn!("{}: cannot watch the host socket: {e}", self.name);
        }
        self.accept(events);
    }
    fn queue_notify(&mut self, index: usize, events: &mut DeviceEvents) -> bool {
        let mut used = false;
        if index == TXQ {
            let Some((mem, mut queues)) = self.active.take() else {
                return false;
            };
            let mut packets = Vec::new();
            let name = self.name.clone();
            used |= drain_queue(&mut queues[TXQ], &mem, &name, |c| {
                match c.read_all(&mem) {
                    Ok(bytes) if bytes.len() >= HEADER_LEN => {
                        let mut hdr = Header::default();
                        hdr.as_mut_slice().copy_from_slice(&bytes[..HEADER_LEN]);
                        let len = hdr.len as usize;
                        if len <= bytes.len() - HEADER_LEN {
                            packets.push((hdr, bytes[HEADER_LEN..HEADER_LEN + len].to_vec()));
                        } else {
                            // Treated as a reset from the guest: the connection ends.
                            tracing::warn!("{name}: packet length {len} beyond its buffers");
                            hdr.op = OP_RST;
                            packets.push((hdr, Vec::new()));
                        }
                    }
                    _ => tracing::warn!("{name}: TX buffer shorter than a header"),
                }
                0
            });
            self.active = Some((mem, queues));
            for (hdr, data) in packets {
                self.guest_packet(hdr, &data, events);
            }
        }
        self.pump_host_reads(events);
        used |= self.deliver_rx();
        used
    }
    fn host_event(&mut self, token: u32, set: EventSet, events: &mut DeviceEvents) -> bool {
        if token == LISTENER_TOKEN {
            self.accept(events);
        } else if self.pending.contains_key(&token) {
            self.read_connect_line(token, events);
        } else if let Some(key) = self.tokens.get(&token).copied() {
            if set.intersects(EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP) {
                if let Some(c) = self.conns.get_mut(&key) {
                    c.readable = true;
                }
            }
            if set.contains(EventSet::OUT) && !self.flush_to_host(key) {
                self.send_control(key, OP_RST, 0);
                self.close(key, events);
            }
        }
        self.pump_host_reads(events);
        self.deliver_rx()
    }
}
