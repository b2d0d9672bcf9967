//! Issuing credentials and reading their ledger records, as every end-to-end test does.

use serde_json::Value;

use crate::Bao;

/// An issued credential as the client sees it.
pub struct Cred {
    pub user: String,
    pub password: String,
    pub lease_id: String,
    pub lease_duration: u64,
    /// The whole response.
    pub body: Value,
}

impl Cred {
    pub fn from_response(body: Value) -> Cred {
        Cred {
            user: body["data"]["username"].as_str().unwrap().to_owned(),
            password: body["data"]["password"].as_str().unwrap().to_owned(),
            lease_id: body["lease_id"].as_str().unwrap().to_owned(),
            lease_duration: body["lease_duration"].as_u64().unwrap(),
            body,
        }
    }
}

/// Reads `path` (a `creds/ROLE` path, with any query) and expects a credential.
pub fn issue(bao: &Bao, path: &str) -> Cred {
    let (status, body) = bao.get(path);
    assert_eq!(status, 200, "{body}\n{}", bao.log());
    Cred::from_response(body)
}

/// The ledger record, under mount `mayfly/`, of the credential whose principal is `user`.
pub fn ledger_record(bao: &Bao, user: &str) -> Value {
    let (_, list) = bao.list("mayfly/leases/");
    let info = list["data"]["key_info"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let id = info
        .iter()
        .find(|(_, v)| v["principal"] == user)
        .map(|(k, _)| k.clone())
        .unwrap_or_else(|| panic!("no ledger record for {user}: {list}"));
    let (status, body) = bao.get(&format!("mayfly/leases/{id}"));
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

/// The mark of the mayfly mount at `mount/`: the beginning of the names its default templates
/// make, and what its orphan scan of `connection` looks for.
pub fn mark_of(bao: &Bao, mount: &str, connection: &str) -> String {
    let (status, body) = bao.get(&format!("{mount}/orphans/{connection}"));
    assert_eq!(status, 200, "{body}");
    let mark = body["data"]["mark"].as_str().unwrap().to_owned();
    assert!(is_mount_mark(&mark), "{mark}");
    mark
}

/// Whether `mark` is a mount's own: `mf-`, six hex digits, `-`.
pub fn is_mount_mark(mark: &str) -> bool {
    mark.len() == 10
        && mark.starts_with("mf-")
        && mark.ends_with('-')
        && mark[3..9].chars().all(|c| c.is_ascii_hexdigit())
}

/// Whether `user` is a name of a default template: a mount's mark, then `rest`.
pub fn is_marked(user: &str, rest: &str) -> bool {
    user.len() > 10 && is_mount_mark(&user[..10]) && user[10..].starts_with(rest)
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The entry of principal `name` in an `inventory/NAME` reply.
pub fn inventory_entry(inventory: &Value, name: &str) -> Value {
    inventory["data"]["principals"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("{name} is not in the inventory: {inventory}"))
}
