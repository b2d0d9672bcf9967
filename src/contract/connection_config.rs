//! A connection as mayfly keeps it: the settings a backend connects with, its secrets (stored,
//! since the host encrypts the mount's storage, but never returned, never logged and never
//! shown by `Debug`), and where it is stored. The `config/` paths that write it are in
//! `paths::config`.

use std::collections::BTreeMap;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::contract::storage::{self, Kv, StorageError};

pub const PREFIX: &str = "config/";

/// Connection fields of OpenBao's engine that apply to every kind, stored with the settings.
pub const USERNAME_TEMPLATE: &str = "username_template";
pub const PASSWORD_POLICY: &str = "password_policy";
pub const ROOT_ROTATION_STATEMENTS: &str = "root_rotation_statements";

/// A connection as stored.
#[derive(Clone)]
pub struct ConnectionConfig {
    /// The canonical kind, e.g. `postgres` (an alias given on write is stored canonical).
    pub plugin_name: String,
    /// Roles that may use this connection; `*` allows every role. Empty allows none.
    pub allowed_roles: Vec<String>,
    pub verify_connection: bool,
    /// Kind-specific settings that may be shown.
    pub settings: Map<String, Value>,
    /// Kind-specific write-only settings.
    pub secrets: BTreeMap<String, SecretString>,
    /// A root password being rotated in (see `rotate_root`): stored before the target is
    /// changed, so that a crash midway never loses the password the target now takes.
    pub pending_root_password: Option<SecretString>,
}

impl ConnectionConfig {
    /// Whether `allowed_roles` lets role `name` use this connection: a name in it, `*`, or a
    /// pattern with `*` (such as `my-*-role`), as OpenBao's engine matches them.
    pub fn allows_role(&self, name: &str) -> bool {
        self.allowed_roles.iter().any(|pattern| glob(pattern, name))
    }

    pub fn setting_str(&self, name: &str) -> Option<&str> {
        self.settings.get(name).and_then(Value::as_str)
    }

    pub fn setting_i64(&self, name: &str) -> Option<i64> {
        self.settings.get(name).and_then(Value::as_i64)
    }

    pub fn secret(&self, name: &str) -> Option<&str> {
        self.secrets.get(name).map(|s| s.expose_secret())
    }

    /// A hash of everything that affects how mayfly connects, secrets included, so a cached
    /// connection is dropped when the configuration changes. It never leaves the process.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.plugin_name.hash(&mut h);
        Value::Object(self.settings.clone())
            .to_string()
            .hash(&mut h);
        for (k, v) in &self.secrets {
            k.hash(&mut h);
            v.expose_secret().hash(&mut h);
        }
        h.finish()
    }

    /// What a read returns: everything but the secrets, whose names alone are listed.
    pub fn public_view(&self) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("plugin_name".into(), json!(self.plugin_name));
        out.insert("allowed_roles".into(), json!(self.allowed_roles));
        out.insert("verify_connection".into(), json!(self.verify_connection));
        out.insert(
            "connection_details".into(),
            Value::Object(self.settings.clone()),
        );
        let set: Vec<&String> = self.secrets.keys().collect();
        out.insert("secret_fields_set".into(), json!(set));
        out
    }
}

impl fmt::Debug for ConnectionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionConfig")
            .field("plugin_name", &self.plugin_name)
            .field("allowed_roles", &self.allowed_roles)
            .field("verify_connection", &self.verify_connection)
            .field("settings", &self.settings)
            .field(
                "secrets",
                &self
                    .secrets
                    .keys()
                    .map(|k| (k, "<redacted>"))
                    .collect::<Vec<_>>(),
            )
            .field(
                "pending_root_password",
                &self.pending_root_password.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The storage form. Kept private so that the only way to a plaintext secret is `secret()`.
#[derive(Serialize, Deserialize)]
struct Stored {
    plugin_name: String,
    allowed_roles: Vec<String>,
    verify_connection: bool,
    settings: Map<String, Value>,
    secrets: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending_root_password: Option<String>,
}

impl From<&ConnectionConfig> for Stored {
    fn from(c: &ConnectionConfig) -> Self {
        Stored {
            plugin_name: c.plugin_name.clone(),
            allowed_roles: c.allowed_roles.clone(),
            verify_connection: c.verify_connection,
            settings: c.settings.clone(),
            secrets: c
                .secrets
                .iter()
                .map(|(k, v)| (k.clone(), v.expose_secret().to_owned()))
                .collect(),
            pending_root_password: c
                .pending_root_password
                .as_ref()
                .map(|p| p.expose_secret().to_owned()),
        }
    }
}

impl From<Stored> for ConnectionConfig {
    fn from(s: Stored) -> Self {
        ConnectionConfig {
            plugin_name: s.plugin_name,
            allowed_roles: s.allowed_roles,
            verify_connection: s.verify_connection,
            settings: s.settings,
            secrets: s
                .secrets
                .into_iter()
                .map(|(k, v)| (k, SecretString::from(v)))
                .collect(),
            pending_root_password: s.pending_root_password.map(SecretString::from),
        }
    }
}

/// `*` matches any run of characters; everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(tail) = text.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .filter(|i| tail.is_char_boundary(*i))
                .any(|i| glob(rest, &tail[i..]))
        }
    }
}

pub async fn load(kv: &dyn Kv, name: &str) -> Result<Option<ConnectionConfig>, StorageError> {
    Ok(storage::get_json::<Stored>(kv, &key(name))
        .await?
        .map(Into::into))
}

pub async fn save(kv: &dyn Kv, name: &str, config: &ConnectionConfig) -> Result<(), StorageError> {
    storage::put_json(kv, &key(name), &Stored::from(config)).await
}

pub(crate) fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// A stored connection read from `bytes`, the value at `key`.
pub(crate) fn decode(key: &str, bytes: &[u8]) -> Result<ConnectionConfig, StorageError> {
    storage::decode_json::<Stored>(key, bytes).map(ConnectionConfig::from)
}
