//! What the engine asks of the host beyond storage: the mount's lease limits, password
//! generation by the host's named password policies, and who an identity entity is. The plugin
//! crate implements it over the host's SystemView; [`FixedHost`] serves the core's own tests.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use secrecy::SecretString;

use crate::contract::error::Error;

#[async_trait]
pub trait Host: Send + Sync {
    /// The mount's default lease TTL (what a role without `default_ttl` gets).
    async fn default_lease_ttl(&self) -> Result<Duration, Error>;
    /// The mount's maximum lease TTL: no credential lives longer.
    async fn max_lease_ttl(&self) -> Result<Duration, Error>;
    /// A password from the host's password policy `policy`.
    async fn generate_password(&self, policy: &str) -> Result<SecretString, Error>;
    /// The identity entity `entity_id` with the groups it belongs to, directly or through a
    /// parent. An id the host does not know gives an identity with only its id set.
    async fn identity(&self, entity_id: &str) -> Result<Identity, Error>;
}

/// An identity entity as the host knows it. Metadata is operator-set and never secret.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    pub id: String,
    pub name: String,
    pub metadata: BTreeMap<String, String>,
    pub aliases: Vec<Alias>,
    pub groups: Vec<Group>,
}

/// How the entity logs in: one auth mount's name for it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Alias {
    pub name: String,
    pub mount_type: String,
    pub mount_accessor: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub metadata: BTreeMap<String, String>,
}

impl Identity {
    pub fn group_names(&self) -> impl Iterator<Item = &str> {
        self.groups.iter().map(|g| g.name.as_str())
    }
}

/// The password a role without `password_policy` gets: 32 letters and digits from the
/// operating system's CSPRNG (about 190 bits). Letters and digits only, so the password is
/// safe inside any quoting a target's statements use.
pub fn default_password() -> SecretString {
    SecretString::from(random_string(32))
}

/// `len` random letters and digits.
pub fn random_string(len: usize) -> String {
    random_from(
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        len,
    )
}

/// `len` random lowercase letters and digits: for ids and names that must survive case folding.
pub fn random_lower(len: usize) -> String {
    random_from(b"abcdefghijklmnopqrstuvwxyz0123456789", len)
}

/// `len` characters of `alphabet` from a CSPRNG (`rand`'s thread generator is ChaCha-based and
/// seeded by the OS).
fn random_from(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Unix seconds as RFC 3339 in UTC (`2026-12-05T05:30:00Z`), as Vault writes times.
pub fn rfc3339(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
