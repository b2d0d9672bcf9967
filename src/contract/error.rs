//! The engine's errors. Each variant maps to one HTTP status the client sees; messages are shown
//! to the client verbatim, so they must never contain a secret.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// 400: the request is malformed; the message names the field and what was expected.
    BadRequest(String),
    /// 403: the caller may not do this.
    PermissionDenied(String),
    /// 404: no path of the engine matches.
    UnsupportedPath,
    /// 405: the path exists but does not take this operation.
    UnsupportedOperation,
    /// 409: the request conflicts with what exists: the target already has a principal of the
    /// name issuance chose (nothing was done to it), or a connection still has credentials.
    Conflict(String),
    /// 413: the request body is larger than the engine accepts.
    PayloadTooLarge(String),
    /// 502: the target (database, cloud API…) refused or failed the operation.
    Target(String),
    /// 503: the target could not be reached at all; nothing was done on it.
    Unavailable(String),
    /// 503: this node may not act (a standby, or a mount being stopped): the host forwards the
    /// request to the active node, which it recognises by the words of `FORWARD` in the
    /// message. Returned before anything was done.
    Forward(String),
    /// 500: something inside mayfly or the host failed.
    Internal(String),
}

/// The words OpenBao's `logical.ShouldForward` looks for in an error (`ErrPerfStandbyPleaseForward`):
/// a request that fails with them on a standby is replayed on the active node.
pub const FORWARD: &str = "please forward to the active node";

impl Error {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Error::BadRequest(msg.into())
    }

    /// The HTTP status the client should see.
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) => 400,
            Error::PermissionDenied(_) => 403,
            Error::UnsupportedPath => 404,
            Error::UnsupportedOperation => 405,
            Error::Conflict(_) => 409,
            Error::PayloadTooLarge(_) => 413,
            Error::Target(_) => 502,
            Error::Unavailable(_) | Error::Forward(_) => 503,
            Error::Internal(_) => 500,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadRequest(m)
            | Error::PermissionDenied(m)
            | Error::Conflict(m)
            | Error::PayloadTooLarge(m)
            | Error::Target(m)
            | Error::Unavailable(m)
            | Error::Internal(m) => f.write_str(m),
            Error::Forward(why) => write!(f, "{FORWARD}: {why}"),
            Error::UnsupportedPath => f.write_str("unsupported path"),
            Error::UnsupportedOperation => f.write_str("unsupported operation"),
        }
    }
}

impl std::error::Error for Error {}

impl From<crate::contract::storage::StorageError> for Error {
    fn from(e: crate::contract::storage::StorageError) -> Self {
        Error::Internal(format!("storage: {e}"))
    }
}
