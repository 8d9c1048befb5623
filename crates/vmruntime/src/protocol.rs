//! The host ↔ agent protocol, version [`VERSION`]: length-prefixed frames carrying either a
//! JSON message or a chunk of a process's stdio. docs/agent-protocol.md is the reference;
//! the tests at the bottom parse every example of that document with both ends' decoders
//! and check that the encoders reproduce them.
//!
//! One connection per VM, whatever the transport (virtio-vsock or a virtio-serial port):
//! the host's monitor multiplexes every command (start, kill, exec...) over it.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Bumped on any change a peer of the previous version would misread.
pub const VERSION: u32 = 1;
/// Largest frame accepted (length field value); a create request with its spec and bind
/// files is the largest message.
pub const MAX_FRAME: usize = 8 << 20;
/// Largest stdio chunk a sender puts in one data frame.
pub const DATA_CHUNK: usize = 32 << 10;

const KIND_MESSAGE: u8 = 1;
const KIND_DATA: u8 = 2;

/// Which standard stream a data frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdin = 0,
    Stdout = 1,
    Stderr = 2,
}

impl Stream {
    fn from_u8(b: u8) -> Result<Stream> {
        match b {
            0 => Ok(Stream::Stdin),
            1 => Ok(Stream::Stdout),
            2 => Ok(Stream::Stderr),
            _ => Err(Error::Protocol(format!(
                "data frame for unknown stream {b}"
            ))),
        }
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A JSON message, not yet parsed (each side parses with its own message type).
    Message(Vec<u8>),
    /// Bytes of `process`'s `stream`; empty = end of that stream.
    Data {
        process: u32,
        stream: Stream,
        bytes: Vec<u8>,
    },
}

/// The filesystem holding the container's root: a guest disk, or the host's root shared
/// through 9p.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootfsDisk {
    /// What mount(2) mounts: a block device in the guest (`/dev/vda`), or a 9p mount tag.
    pub device: String,
    /// Filesystem type passed to mount(2), e.g. `ext4` or `9p`.
    pub fstype: String,
    /// mount(2)'s data (filesystem options), e.g. [`NINEP_OPTIONS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<String>,
}

/// How the guest mounts a 9p export of the hypervisor (QEMU's virtio-9p device): the
/// virtio transport, the Linux dialect, permission checks by the guest kernel on the
/// host's owners and modes (the hypervisor's own credentials are only a second gate), and
/// 512 KiB messages (fewer round trips than the default 8 KiB).
pub const NINEP_OPTIONS: &str = "trans=virtio,version=9p2000.L,access=client,msize=524288";

/// A host directory a bind mount of the config names, exported by the hypervisor over 9p:
/// the agent mounts the export tagged `tag` (with [`NINEP_OPTIONS`]) and makes it the
/// source of `spec.mounts[mount]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedDir {
    pub mount: usize,
    pub tag: String,
    /// Mounted read-only in the guest (the export is read-only on the host as well).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub readonly: bool,
}

/// The content of a host file a bind mount of the config names: the agent writes it in the
/// guest and points `spec.mounts[mount].source` at the copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindFile {
    pub mount: usize,
    pub mode: u32,
    /// Base64 (RFC 4648, with padding).
    pub data: String,
}

impl BindFile {
    pub fn new(mount: usize, mode: u32, bytes: &[u8]) -> BindFile {
        BindFile {
            mount,
            mode,
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    pub fn bytes(&self) -> Result<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.data)
            .map_err(|e| Error::Protocol(format!("bind file for mounts[{}]: {e}", self.mount)))
    }
}

/// The network the container had on the host, carried into the guest: the guest's one
/// network interface gets this IPv4 address and MTU (its MAC address is the hypervisor's
/// to set), and the default route through `gateway`. The container then shares the
/// guest's network namespace: the VM is its network boundary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestNetwork {
    /// CIDR, e.g. `10.88.0.5/16`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    pub mtu: u32,
}

/// Messages the host sends. Every request but `hello` carries an `id` the agent answers
/// with exactly one `ok` or `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ToAgent {
    Hello {
        version: u32,
        software: String,
    },
    Create {
        id: u64,
        container: String,
        rootfs: RootfsDisk,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        bind_files: Vec<BindFile>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        shared_dirs: Vec<SharedDir>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<GuestNetwork>,
        spec: Box<oci::Spec>,
    },
    Start {
        id: u64,
    },
    Signal {
        id: u64,
        process: u32,
        signal: i32,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        all: bool,
    },
    Exec {
        id: u64,
        process: u32,
        spec: Box<oci::Process>,
    },
    Resize {
        id: u64,
        process: u32,
        rows: u16,
        cols: u16,
    },
    Ps {
        id: u64,
    },
}

/// A process of the container, as `ps` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestProcess {
    pub pid: i32,
    pub args: Vec<String>,
}

/// Messages the agent sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ToHost {
    Hello {
        version: u32,
        software: String,
        /// Milliseconds from kernel start to this message (the guest's CLOCK_BOOTTIME).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        boot_ms: Option<u64>,
    },
    Ok {
        id: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        processes: Option<Vec<GuestProcess>>,
    },
    Error {
        id: u64,
        message: String,
    },
    Exit {
        process: u32,
        /// Shell-style: the exit code, or 128+N when signal N killed the process.
        code: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
    },
}

impl ToHost {
    pub fn ok(id: u64) -> ToHost {
        ToHost::Ok {
            id,
            pid: None,
            processes: None,
        }
    }
}

/// Extra fields of the software string, for the hello of this build.
pub fn software() -> String {
    format!("bulkhead {}", env!("CARGO_PKG_VERSION"))
}

/// Encode a JSON message frame.
pub fn message<T: Serialize>(m: &T) -> Vec<u8> {
    let json = serde_json::to_vec(m).expect("protocol messages serialise");
    frame(KIND_MESSAGE, &[], &json)
}

/// Encode a data frame.
pub fn data(process: u32, stream: Stream, bytes: &[u8]) -> Vec<u8> {
    let mut head = [0u8; 5];
    head[..4].copy_from_slice(&process.to_be_bytes());
    head[4] = stream as u8;
    frame(KIND_DATA, &head, bytes)
}

fn frame(kind: u8, head: &[u8], body: &[u8]) -> Vec<u8> {
    let len = 1 + head.len() + body.len();
    let mut v = Vec::with_capacity(4 + len);
    v.extend_from_slice(&(len as u32).to_be_bytes());
    v.push(kind);
    v.extend_from_slice(head);
    v.extend_from_slice(body);
    v
}

/// Parse a message body received from the other side.
pub fn parse<T: serde::de::DeserializeOwned>(json: &[u8]) -> Result<T> {
    serde_json::from_slice(json).map_err(|e| {
        let text = String::from_utf8_lossy(&json[..json.len().min(200)]).into_owned();
        Error::Protocol(format!("bad message {text:?}: {e}"))
    })
}

/// Incremental frame decoder over a byte stream.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        let avail = &self.buf[self.start..];
        if avail.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes(avail[..4].try_into().expect("4 bytes")) as usize;
        if len == 0 || len > MAX_FRAME {
            return Err(Error::Protocol(format!(
                "frame length {len} outside 1..={MAX_FRAME}"
            )));
        }
        if avail.len() < 4 + len {
            return Ok(None);
        }
        let body = &avail[4..4 + len];
        let frame = match body[0] {
            KIND_MESSAGE => Frame::Message(body[1..].to_vec()),
            KIND_DATA => {
                if body.len() < 6 {
                    return Err(Error::Protocol("data frame shorter than its header".into()));
                }
                Frame::Data {
                    process: u32::from_be_bytes(body[1..5].try_into().expect("4 bytes")),
                    stream: Stream::from_u8(body[5])?,
                    bytes: body[6..].to_vec(),
                }
            }
            k => return Err(Error::Protocol(format!("unknown frame kind {k}"))),
        };
        self.start += 4 + len;
        if self.start > (1 << 20) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(frame))
    }
}

/// Annotations on the OCI config that select and tune a VM-backed container.
pub mod annotations {
    /// `true` runs the container in a micro-VM.
    pub const VM: &str = "run.bulkhead.vm";
    pub const BACKEND: &str = "run.bulkhead.vm.backend";
    pub const IMAGE: &str = "run.bulkhead.vm.image";
    pub const MEMORY: &str = "run.bulkhead.vm.memory";
    pub const CPUS: &str = "run.bulkhead.vm.cpus";
    pub const BOOT_TIMEOUT: &str = "run.bulkhead.vm.boot-timeout";
    pub const DISK_MAX: &str = "run.bulkhead.vm.disk-max";
    /// QEMU's accelerator: `kvm` or `tcg`.
    pub const ACCEL: &str = "run.bulkhead.vm.accel";

    /// Every annotation of ours, for the unknown-name check.
    pub const ALL: [&str; 8] = [
        VM,
        BACKEND,
        IMAGE,
        MEMORY,
        CPUS,
        BOOT_TIMEOUT,
        DISK_MAX,
        ACCEL,
    ];
}

/// True when the annotations ask for a VM (`run.bulkhead.vm=true`).
pub fn wants_vm(annotations: &BTreeMap<String, String>) -> bool {
    annotations
        .get(annotations::VM)
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples of docs/agent-protocol.md: (direction, JSON) from every fenced block
    /// tagged `json to-agent` or `json to-host`, and (name, hex) from `hex` blocks.
    fn doc() -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/agent-protocol.md");
        std::fs::read_to_string(path).expect("docs/agent-protocol.md")
    }

    fn blocks(tag: &str) -> Vec<String> {
        let text = doc();
        let mut out = Vec::new();
        let mut cur: Option<String> = None;
        for line in text.lines() {
            match &mut cur {
                None if line.trim() == format!("```{tag}") => cur = Some(String::new()),
                Some(s) if line.trim() == "```" => {
                    out.push(std::mem::take(s));
                    cur = None;
                }
                Some(s) => {
                    s.push_str(line);
                    s.push('\n');
                }
                None => {}
            }
        }
        out
    }

    fn roundtrip<T: Serialize + serde::de::DeserializeOwned + std::fmt::Debug>(tag: &str) -> usize {
        let examples = blocks(tag);
        for ex in &examples {
            let msg: T = parse(ex.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{ex}"));
            let again = serde_json::to_value(&msg).unwrap();
            let want: serde_json::Value = serde_json::from_str(ex).unwrap();
            assert_eq!(again, want, "re-encoded {msg:?} differs from the document");
        }
        examples.len()
    }

    #[test]
    fn every_documented_message_parses_and_reencodes() {
        // Each direction: one example per message type at least.
        assert!(roundtrip::<ToAgent>("json to-agent") >= 7);
        assert!(roundtrip::<ToHost>("json to-host") >= 4);
    }

    #[test]
    fn documented_message_types_are_all_covered() {
        let mut types: Vec<String> = blocks("json to-agent")
            .iter()
            .chain(blocks("json to-host").iter())
            .map(|b| {
                let v: serde_json::Value = serde_json::from_str(b).unwrap();
                v["type"].as_str().unwrap().to_string()
            })
            .collect();
        types.sort();
        types.dedup();
        for t in [
            "hello", "create", "start", "signal", "exec", "resize", "ps", "ok", "error", "exit",
        ] {
            assert!(types.contains(&t.to_string()), "no example of {t:?}");
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        let digits: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn documented_frames_decode_and_encode_byte_for_byte() {
        let frames = blocks("hex");
        assert!(
            frames.len() >= 2,
            "the document shows a message and a data frame"
        );
        let mut seen_msg = false;
        let mut seen_data = false;
        for f in &frames {
            let bytes = hex(f);
            let mut d = Decoder::default();
            d.push(&bytes);
            let frame = d.next_frame().unwrap().expect("a whole frame");
            assert!(d.next_frame().unwrap().is_none(), "exactly one frame");
            let again = match &frame {
                Frame::Message(json) => {
                    seen_msg = true;
                    // Both sides' encoders must produce the document's bytes.
                    let as_host: std::result::Result<ToHost, _> = serde_json::from_slice(json);
                    let as_agent: std::result::Result<ToAgent, _> = serde_json::from_slice(json);
                    match (as_host, as_agent) {
                        (Ok(m), _) => message(&m),
                        (_, Ok(m)) => message(&m),
                        _ => panic!("frame holds no valid message"),
                    }
                }
                Frame::Data {
                    process,
                    stream,
                    bytes,
                } => {
                    seen_data = true;
                    data(*process, *stream, bytes)
                }
            };
            assert_eq!(again, bytes);
        }
        assert!(seen_msg && seen_data);
    }

    #[test]
    fn decoder_handles_split_and_joined_frames() {
        let mut all = message(&ToHost::ok(7));
        all.extend(data(3, Stream::Stderr, b"oops"));
        all.extend(data(3, Stream::Stdout, b""));
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for b in &all {
            d.push(std::slice::from_ref(b));
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[1],
            Frame::Data {
                process: 3,
                stream: Stream::Stderr,
                bytes: b"oops".to_vec()
            }
        );
        assert_eq!(
            parse::<ToHost>(match &got[0] {
                Frame::Message(m) => m,
                _ => panic!(),
            })
            .unwrap(),
            ToHost::ok(7)
        );
    }

    #[test]
    fn bad_frames_are_errors() {
        for bad in [
            vec![0, 0, 0, 0],
            vec![0xff, 0, 0, 0, 1],
            vec![0, 0, 0, 1, 9],
            vec![0, 0, 0, 3, 2, 0, 0],
            vec![0, 0, 0, 6, 2, 0, 0, 0, 1, 7],
        ] {
            let mut d = Decoder::default();
            d.push(&bad);
            assert!(d.next_frame().is_err(), "{bad:?} accepted");
        }
        assert!(parse::<ToAgent>(br#"{"type":"reboot","id":1}"#).is_err());
        assert!(parse::<ToAgent>(br#"{"type":"start"}"#).is_err());
    }

    #[test]
    fn documented_9p_options_are_the_code_s() {
        assert!(doc().contains(&format!("`{NINEP_OPTIONS}`")));
        assert!(blocks("json to-agent")
            .iter()
            .any(|b| b.contains(&format!("\"options\":\"{NINEP_OPTIONS}\""))));
    }

    #[test]
    fn bind_file_base64() {
        let f = BindFile::new(2, 0o644, b"127.0.0.1 localhost\n");
        assert_eq!(f.data, "MTI3LjAuMC4xIGxvY2FsaG9zdAo=");
        assert_eq!(f.bytes().unwrap(), b"127.0.0.1 localhost\n");
        let bad = BindFile {
            data: "!!".into(),
            ..f
        };
        assert!(bad.bytes().is_err());
    }
}
