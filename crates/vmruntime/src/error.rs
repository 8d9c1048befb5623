//! The VM runtime's one error type.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Spec(#[from] oci::Error),
    #[error(transparent)]
    Container(#[from] container::Error),
    #[error(transparent)]
    Cgroup(#[from] cgroups::Error),
    /// A system call, file operation or external program failed; `context` names what was
    /// attempted.
    #[error("{context}: {source}")]
    Sys {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The peer broke the host ↔ agent protocol (docs/agent-protocol.md).
    #[error("agent protocol: {0}")]
    Protocol(String),
    /// Anything else, already phrased for the user.
    #[error("{0}")]
    Msg(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Attach a description of the attempted operation to an OS error.
pub trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Sys {
            context: what(),
            source,
        })
    }
}

impl<T> Context<T> for rustix::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Sys {
            context: what(),
            source: e.into(),
        })
    }
}

pub(crate) fn msg(s: impl Into<String>) -> Error {
    Error::Msg(s.into())
}
