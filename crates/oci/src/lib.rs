//! OCI runtime-spec v1.3 types for the linux platform, and their validation.
//!
//! ## Architecture notes
//! We define the spec types here instead of depending on the `oci-spec` crate:
//! - the runtime needs fields of spec v1.3 (`linux.memoryPolicy`, `linux.netDevices`,
//!   `process.execCPUAffinity`) that the crate did not carry when this was written;
//! - errors must name the JSON path of the bad field (`linux.namespaces[2].type`), which
//!   we get by parsing through `serde_path_to_error` on plain serde structs;
//! - plain structs with public fields keep the runtime's parse of config.json (on every
//!   container start) to one serde pass, with no builders or getters to compile.
//!
//! Parsing ([`Spec::load`]) checks types; [`validate`] checks the rules of the spec that
//! a type cannot express (absolute paths, duplicates, namespace requirements...). Both run
//! before the runtime touches the system, so bad input leaves nothing behind.

mod config;
mod default;
mod features;
mod linux;
mod state;
mod validate;

use std::path::{Path, PathBuf};

pub use config::*;
pub use default::{default_spec, DEFAULT_CAPS, MASKED_PATHS, READONLY_PATHS, SPEC_CAPS};
pub use features::*;
pub use linux::*;
pub use state::*;
pub use validate::{validate, validate_id, validate_process, RLIMIT_NAMES};

/// The spec version this runtime implements.
pub const OCI_VERSION: &str = "1.3.0";
/// The oldest spec version accepted.
pub const OCI_VERSION_MIN: &str = "1.0.0";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// JSON that does not parse or has a field of the wrong type.
    #[error("{file}: {field}{msg}")]
    Parse {
        file: String,
        field: String,
        msg: String,
    },
    /// A value that parses but breaks a rule of the spec.
    #[error("{file}: {field}: {msg}")]
    Invalid {
        file: String,
        field: String,
        msg: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn invalid(field: impl Into<String>, msg: impl Into<String>) -> Error {
        Error::Invalid {
            file: "config.json".into(),
            field: field.into(),
            msg: msg.into(),
        }
    }
}

/// Parse JSON text into `T`, naming the failing field and file on error.
pub fn from_json<T: serde::de::DeserializeOwned>(text: &[u8], file: &str) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // serde_json appends " at line L column C"; keep it, it helps find the spot.
        let (field, msg) = if path == "." || path.is_empty() {
            (String::new(), inner.to_string())
        } else {
            (path, format!(": {inner}"))
        };
        Error::Parse {
            file: file.to_string(),
            field,
            msg,
        }
    })
}

impl Spec {
    /// Read and parse `<bundle>/config.json` (types only; see [`validate`]).
    pub fn load(bundle: &Path) -> Result<Spec> {
        let path = bundle.join("config.json");
        let text = std::fs::read(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        from_json(&text, &path.display().to_string())
    }
}

impl Process {
    /// Read and parse a process.json (as `exec --process` takes).
    pub fn load(path: &Path) -> Result<Process> {
        let text = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        from_json(&text, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_type_names_the_field() {
        let text = br#"{"ociVersion":"1.0.0","process":{"cwd":"/","user":{"uid":"root"}}}"#;
        let err = from_json::<Spec>(text, "config.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config.json: process.user.uid: invalid type"),
            "{err}"
        );
    }

    #[test]
    fn unknown_namespace_type_is_rejected_with_choices() {
        let text =
            br#"{"ociVersion":"1.0.0","linux":{"namespaces":[{"type":"pid"},{"type":"bogus"}]}}"#;
        let err = from_json::<Spec>(text, "config.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("linux.namespaces[1].type"), "{err}");
        assert!(err.contains("unknown variant `bogus`"), "{err}");
    }

    #[test]
    fn unknown_properties_are_ignored() {
        let text =
            br#"{"ociVersion":"1.0.0","futureField":{"x":1},"root":{"path":"r","newer":true}}"#;
        let spec: Spec = from_json(text, "config.json").unwrap();
        assert_eq!(spec.root.unwrap().path, "r");
    }

    #[test]
    fn malformed_json_reports_position() {
        let err = from_json::<Spec>(b"{\"ociVersion\": ", "config.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn missing_required_field() {
        let err = from_json::<Spec>(b"{}", "config.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field `ociVersion`"), "{err}");
    }

    #[test]
    fn round_trip_keeps_v1_3_fields() {
        let text = br#"{"ociVersion":"1.3.0","linux":{"memoryPolicy":{"mode":"MPOL_BIND","nodes":"0","flags":["MPOL_F_STATIC_NODES"]},
            "netDevices":{"eth1":{"name":"ctr0"}}},"process":{"cwd":"/","execCPUAffinity":{"initial":"0","final":"0-1"}}}"#;
        let spec: Spec = from_json(text, "config.json").unwrap();
        let again: Spec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(spec, again);
        let linux = spec.linux.unwrap();
        assert_eq!(linux.memory_policy.unwrap().mode, "MPOL_BIND");
        assert_eq!(linux.net_devices["eth1"].name.as_deref(), Some("ctr0"));
        let aff = spec.process.unwrap().exec_cpu_affinity.unwrap();
        assert_eq!(aff.final_.as_deref(), Some("0-1"));
    }
}
