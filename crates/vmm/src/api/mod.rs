//! The control socket of a running VM: JSON lines on a Unix stream socket (docs/vm-api.md is
//! the reference). One request per line, one response line each, in order, on a connection
//! that stays open; a snapshot request carries the two files it writes as descriptors
//! (SCM_RIGHTS), so the jailed VMM never opens a path.
//!
//! JSON lines rather than Firecracker's HTTP/1.1: the same one-request-one-answer shape with
//! no HTTP parser in the VMM (the API runs on the device thread, inside its seccomp filter),
//! and `socat - UNIX-CONNECT:PATH` is a complete client.
//!
//! `server` is the VMM's side (an event-loop subscriber), `client` what `bulkhead vm
//! pause|resume|status|snapshot|shutdown` use.

pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};

/// The protocol version, in every request and response ("v"). A change that an old client or
/// VMM would misread gets a new number; fields may be added to responses within a version.
/// 2 added the snapshot's `diff` field: a version-1 VMM ignores fields it does not know, so it
/// would have taken a full snapshot where a diff was asked for.
pub const API_VERSION: u32 = 2;
/// The oldest version this VMM still answers (in that version).
pub const MIN_API_VERSION: u32 = 1;

/// Longest request line.
pub const MAX_REQUEST: usize = 4096;

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Op {
    Status,
    Pause,
    Resume,
    /// Ctrl+Alt+Del to the guest, then a stop after `timeout_ms` (default 10000).
    Shutdown {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// Pause and save the VM into the two descriptors sent with the request: the state file,
    /// then the memory file; with `diff`, a memory file of only the pages written since the
    /// previous snapshot (the VM must track dirty pages).
    Snapshot {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        diff: bool,
    },
}

/// One request line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub v: u32,
    #[serde(flatten)]
    pub op: Op,
}

impl Request {
    /// A request in the oldest version that has `op`, so that a client talks to every VMM
    /// that can serve it.
    pub fn new(op: Op) -> Request {
        Request {
            v: op.version(),
            op,
        }
    }
}

impl Op {
    /// The first protocol version with this request.
    pub fn version(&self) -> u32 {
        match self {
            Op::Snapshot { diff: true } => 2,
            _ => 1,
        }
    }
}

/// A success response: `{"v":1,"ok":true, ...fields of `body`}` (the server sets `v` to the
/// request's version).
pub fn ok_response(body: serde_json::Value) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("v".into(), MIN_API_VERSION.into());
    m.insert("ok".into(), true.into());
    if let serde_json::Value::Object(fields) = body {
        m.extend(fields);
    }
    serde_json::Value::Object(m)
}

/// A failure response: `{"v":1,"ok":false,"error":"..."}`.
pub fn error_response(error: impl std::fmt::Display) -> serde_json::Value {
    serde_json::json!({"v": MIN_API_VERSION, "ok": false, "error": error.to_string()})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_as_documented() {
        let r: Request = serde_json::from_str(r#"{"v":1,"op":"pause"}"#).unwrap();
        assert_eq!(r, Request::new(Op::Pause));
        let r: Request =
            serde_json::from_str(r#"{"v":1,"op":"shutdown","timeout_ms":500}"#).unwrap();
        assert_eq!(
            r.op,
            Op::Shutdown {
                timeout_ms: Some(500)
            }
        );
        assert_eq!(
            serde_json::to_string(&Request::new(Op::Snapshot { diff: false })).unwrap(),
            r#"{"v":1,"op":"snapshot"}"#
        );
        let r: Request = serde_json::from_str(r#"{"v":2,"op":"snapshot","diff":true}"#).unwrap();
        assert_eq!(r.op, Op::Snapshot { diff: true });
        assert_eq!(
            serde_json::to_string(&Request::new(Op::Snapshot { diff: true })).unwrap(),
            r#"{"v":2,"op":"snapshot","diff":true}"#
        );
        let r: Request = serde_json::from_str(r#"{"v":1,"op":"snapshot"}"#).unwrap();
        assert_eq!(r.op, Op::Snapshot { diff: false });
        // Unknown fields are ignored (the request's fields are flattened): why "diff" needed
        // a new version, which a version-1 VMM refuses.
        let r: Request = serde_json::from_str(r#"{"v":1,"op":"pause","diff":true}"#).unwrap();
        assert_eq!(r.op, Op::Pause);
        assert!(serde_json::from_str::<Request>(r#"{"v":1,"op":"reboot"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"pause"}"#).is_err());
        let ok = ok_response(serde_json::json!({"state": "paused"}));
        assert_eq!(
            ok,
            serde_json::json!({"v": 1, "ok": true, "state": "paused"})
        );
        assert_eq!(
            error_response("no"),
            serde_json::json!({"v": 1, "ok": false, "error": "no"})
        );
    }
}
