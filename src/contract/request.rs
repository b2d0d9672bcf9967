//! The engine's request and response, independent of the host protocol.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

/// What the caller asks the engine to do. `Create` and `Update` are the same to mayfly: the host
/// sends `create` only when an existence check says the object is missing, and mayfly never says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Read,
    Create,
    Update,
    Patch,
    Delete,
    List,
    Help,
    /// Sent before every routed request (OpenBao 2.7): may rewrite the path; mayfly never does.
    ResolvePath,
    /// Sent every minute and at unmount.
    Rollback,
    Renew,
    Revoke,
    /// Anything else the host may add in the future.
    Other,
}

impl Operation {
    pub fn parse(op: &str) -> Operation {
        match op {
            "read" => Operation::Read,
            "create" => Operation::Create,
            "update" => Operation::Update,
            "patch" => Operation::Patch,
            "delete" => Operation::Delete,
            "list" => Operation::List,
            "help" => Operation::Help,
            "resolve-path" => Operation::ResolvePath,
            "rollback" => Operation::Rollback,
            "renew" => Operation::Renew,
            "revoke" => Operation::Revoke,
            _ => Operation::Other,
        }
    }

    /// The name used in help text and the OpenAPI document.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::Patch => "patch",
            Operation::Delete => "delete",
            Operation::List => "list",
            Operation::Help => "help",
            Operation::ResolvePath => "resolve-path",
            Operation::Rollback => "rollback",
            Operation::Renew => "renew",
            Operation::Revoke => "revoke",
            Operation::Other => "other",
        }
    }

    /// Create and update are one operation to every path of the engine.
    pub fn normalized(self) -> Operation {
        match self {
            Operation::Create => Operation::Update,
            op => op,
        }
    }
}

/// Who is asking: recorded with what they are given, never secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requester {
    pub entity_id: String,
    pub token_accessor: String,
    pub display_name: String,
    pub remote_addr: String,
}

/// `Debug` shows the names in `data`, never the values: a config write carries the target's
/// password, and a renew or revoke the issued one.
#[derive(Clone)]
pub struct Request {
    pub operation: Operation,
    /// Relative to the mount, e.g. `config/main`; list requests end in `/`.
    pub path: String,
    /// The body for writes, the query parameters for read, list and delete.
    pub data: Map<String, Value>,
    /// Size in bytes of the body as received, for the body limit.
    pub body_len: usize,
    pub requester: Requester,
    /// The lease a `renew` or `revoke` is about.
    pub lease: Option<LeaseInfo>,
    /// The request headers the mount passes through (`passthrough_request_headers`), by
    /// lower-case name, repeated values joined by ", ". Policies may read them; `Debug` shows
    /// only their names.
    pub headers: BTreeMap<String, String>,
}

/// What the host sends back about a lease it holds: the `internal_data` mayfly gave it, and
/// the host's view of its timing. Durations are seconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeaseInfo {
    pub internal_data: Map<String, Value>,
    pub lease_id: String,
    /// The increment the client asked for on renew; 0 when none.
    pub increment: u64,
    pub max_ttl: u64,
}

/// A lease for the host to create (on issuance) or extend (on renew). Durations are seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseGrant {
    pub ttl: u64,
    pub max_ttl: u64,
    pub renewable: bool,
    /// Stored by the host, never shown to the client, given back on renew and revoke.
    pub internal_data: Map<String, Value>,
}

impl Request {
    pub fn new(operation: Operation, path: impl Into<String>) -> Self {
        Request {
            operation,
            path: path.into(),
            data: Map::new(),
            body_len: 0,
            requester: Requester::default(),
            lease: None,
            headers: BTreeMap::new(),
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        if let Value::Object(map) = data {
            self.body_len = serde_json::to_vec(&map).map(|v| v.len()).unwrap_or(0);
            self.data = map;
        }
        self
    }
}

/// What the engine answers. `data: None` on a read means "not found" (the host answers 404);
/// on a write it means "no content" (204). `Debug` shows the names in `data`, never the values
/// (an issued credential's password is one).
#[derive(Clone, Default, PartialEq)]
pub struct Response {
    pub data: Option<Map<String, Value>>,
    pub warnings: Vec<String>,
    pub lease: Option<LeaseGrant>,
}

/// The keys of a data map, for `Debug` output that must not show values.
fn keys(data: &Map<String, Value>) -> Vec<&str> {
    data.keys().map(String::as_str).collect()
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("operation", &self.operation)
            .field("path", &self.path)
            .field("data_keys", &keys(&self.data))
            .field("body_len", &self.body_len)
            .field("requester", &self.requester)
            .field("lease", &self.lease)
            .field("header_names", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("data_keys", &self.data.as_ref().map(keys))
            .field("warnings", &self.warnings)
            .field("lease", &self.lease)
            .finish()
    }
}

impl Response {
    pub fn empty() -> Self {
        Response::default()
    }

    pub fn data(data: Map<String, Value>) -> Self {
        Response {
            data: Some(data),
            warnings: Vec::new(),
            lease: None,
        }
    }

    /// The reply to a list operation, in the shape every Vault client expects.
    pub fn list(keys: Vec<String>) -> Self {
        let mut data = Map::new();
        data.insert(
            "keys".into(),
            Value::Array(keys.into_iter().map(Value::String).collect()),
        );
        Response::data(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn debug_never_shows_data_values() {
        let mut req = Request::new(Operation::Update, "config/db")
            .with_data(json!({"password": "hunter2", "url": "x"}));
        req.headers.insert("x-token".into(), "hunter2".into());
        let resp = Response::data(req.data.clone());
        for text in [format!("{req:?}"), format!("{resp:?}")] {
            assert!(
                !text.contains("hunter2") && text.contains("password"),
                "{text}"
            );
        }
    }
}
