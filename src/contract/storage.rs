//! The mount's storage: a key-value view that the host encrypts behind its barrier and replicates.
//! The plugin crate implements it over the host's brokered `pb.Storage` service; the core's own
//! tests use [`InMemoryStorage`]. Where the host's storage is transactional (inmem and raft in
//! OpenBao 2.7) [`Storage::begin`] returns a transaction, and read-modify-write sequences use it so
//! that concurrent requests cannot lose each other's changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    Backend(String),
    #[error("transaction conflict: a key it read was changed by another writer")]
    Conflict,
    #[error("stored value at '{key}' is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error(
        "the record at '{key}' has format {format}, newer than this mayfly reads (up to \
         {supported}): it was written by a later version of mayfly; upgrade mayfly to act on it"
    )]
    NewerFormat {
        key: String,
        format: u32,
        supported: u32,
    },
}

impl StorageError {
    /// Whether the value is there but cannot be read (damaged, or of a newer format): reading
    /// it again will not help, and it must be left as it is.
    pub fn is_unreadable(&self) -> bool {
        matches!(
            self,
            StorageError::Corrupt { .. } | StorageError::NewerFormat { .. }
        )
    }
}

/// The four key-value operations, shared by the storage and its transactions.
#[async_trait]
pub trait Kv: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError>;
    async fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// The names directly below `prefix`; a name ending in `/` is a folder.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError>;
}

#[async_trait]
pub trait Storage: Kv {
    /// Starts a read-write transaction, or returns `None` where the storage has none.
    async fn begin(&self) -> Result<Option<Box<dyn Transaction>>, StorageError>;
}

#[async_trait]
pub trait Transaction: Kv {
    async fn commit(self: Box<Self>) -> Result<(), StorageError>;
    async fn rollback(self: Box<Self>) -> Result<(), StorageError>;
}

pub async fn get_json<T: DeserializeOwned>(
    kv: &dyn Kv,
    key: &str,
) -> Result<Option<T>, StorageError> {
    kv.get(key)
        .await?
        .map(|bytes| decode_json(key, &bytes))
        .transpose()
}

/// Decodes a value read from `key`, naming the key if it is corrupt.
pub fn decode_json<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StorageError> {
    serde_json::from_slice(bytes).map_err(|e| StorageError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

pub async fn put_json<T: Serialize>(kv: &dyn Kv, key: &str, value: &T) -> Result<(), StorageError> {
    let bytes = serde_json::to_vec(value).map_err(|e| StorageError::Backend(e.to_string()))?;
    kv.put(key, bytes).await
}

/// The direct children of `prefix` among `keys` (sorted, folders once, ending in `/`).
pub fn children<'a>(keys: impl Iterator<Item = &'a str>, prefix: &str) -> Vec<String> {
    let mut out = BTreeSet::new();
    for key in keys {
        if let Some(rest) = key.strip_prefix(prefix) {
            match rest.find('/') {
                Some(i) => out.insert(rest[..=i].to_owned()),
                None if !rest.is_empty() => out.insert(rest.to_owned()),
                None => false,
            };
        }
    }
    out.into_iter().collect()
}

/// Where the storage has no transactions (HashiCorp Vault's), makes a check of `key` and the
/// write that depends on it one step against every other such step of this process on that
/// key. One of a fixed set of locks, chosen by the key: keys that share one merely wait for
/// each other, and the set never grows.
pub async fn key_lock(key: &str) -> tokio::sync::MutexGuard<'static, ()> {
    use std::hash::{Hash, Hasher};
    const STRIPES: usize = 64;
    static LOCKS: std::sync::OnceLock<Vec<tokio::sync::Mutex<()>>> = std::sync::OnceLock::new();
    let locks = LOCKS.get_or_init(|| (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect());
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    locks[h.finish() as usize % STRIPES].lock().await
}

/// Storage in memory, for tests of the core. Transactions buffer their writes and commit them
/// atomically; a commit fails with [`StorageError::Conflict`] if a key the transaction read was
/// changed since, as the host's optimistic transactions do. One made
/// [`InMemoryStorage::without_transactions`] answers as HashiCorp Vault's storage does, with
/// none; the core's own tests run that way when `MAYFLY_TEST_NO_TRANSACTIONS` is set.
#[derive(Clone)]
pub struct InMemoryStorage {
    inner: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    transactional: bool,
}

impl Default for InMemoryStorage {
    fn default() -> Self {
        InMemoryStorage {
            inner: Arc::default(),
            transactional: !(cfg!(test) && std::env::var_os(NO_TRANSACTIONS_VAR).is_some()),
        }
    }
}

/// Set for a run of the core's tests on storage without transactions, as Vault's is.
const NO_TRANSACTIONS_VAR: &str = "MAYFLY_TEST_NO_TRANSACTIONS";

impl InMemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Storage with transactions, whatever the test run asks.
    pub fn with_transactions() -> Self {
        InMemoryStorage {
            transactional: true,
            ..Self::default()
        }
    }

    /// Storage without transactions, as HashiCorp Vault's (`begin` answers `None`).
    pub fn without_transactions() -> Self {
        InMemoryStorage {
            transactional: false,
            ..Self::default()
        }
    }

    /// Every key and value, for tests that scan what was stored.
    pub fn dump(&self) -> BTreeMap<String, Vec<u8>> {
        self.inner.lock().unwrap().clone()
    }
}

#[async_trait]
impl Kv for InMemoryStorage {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.inner.lock().unwrap().get(key).cloned())
    }
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        self.inner.lock().unwrap().insert(key.to_owned(), value);
        Ok(())
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.inner.lock().unwrap().remove(key);
        Ok(())
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let map = self.inner.lock().unwrap();
        Ok(children(map.keys().map(String::as_str), prefix))
    }
}

#[async_trait]
impl Storage for InMemoryStorage {
    async fn begin(&self) -> Result<Option<Box<dyn Transaction>>, StorageError> {
        if !self.transactional {
            return Ok(None);
        }
        Ok(Some(Box::new(InMemoryTx {
            base: self.inner.clone(),
            state: Mutex::default(),
        })))
    }
}

#[derive(Default)]
struct TxState {
    /// What each key held when the transaction first read it.
    read: BTreeMap<String, Option<Vec<u8>>>,
    /// Buffered writes; `None` is a delete.
    writes: BTreeMap<String, Option<Vec<u8>>>,
}

struct InMemoryTx {
    base: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    state: Mutex<TxState>,
}

#[async_trait]
impl Kv for InMemoryTx {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let mut st = self.state.lock().unwrap();
        if let Some(w) = st.writes.get(key) {
            return Ok(w.clone());
        }
        let value = self.base.lock().unwrap().get(key).cloned();
        st.read
            .entry(key.to_owned())
            .or_insert_with(|| value.clone());
        Ok(value)
    }
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        self.state
            .lock()
            .unwrap()
            .writes
            .insert(key.to_owned(), Some(value));
        Ok(())
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.state
            .lock()
            .unwrap()
            .writes
            .insert(key.to_owned(), None);
        Ok(())
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let st = self.state.lock().unwrap();
        let base = self.base.lock().unwrap();
        let mut keys: BTreeSet<&str> = base.keys().map(String::as_str).collect();
        for (k, w) in &st.writes {
            match w {
                Some(_) => keys.insert(k),
                None => keys.remove(k.as_str()),
            };
        }
        Ok(children(keys.into_iter(), prefix))
    }
}

#[async_trait]
impl Transaction for InMemoryTx {
    async fn commit(self: Box<Self>) -> Result<(), StorageError> {
        let st = self.state.into_inner().unwrap();
        let mut base = self.base.lock().unwrap();
        if st.read.iter().any(|(k, v)| base.get(k) != v.as_ref()) {
            return Err(StorageError::Conflict);
        }
        for (k, w) in st.writes {
            match w {
                Some(v) => base.insert(k, v),
                None => base.remove(&k),
            };
        }
        Ok(())
    }
    async fn rollback(self: Box<Self>) -> Result<(), StorageError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn list_shows_direct_children_and_folders() {
        let s = InMemoryStorage::new();
        for k in ["config/a", "config/b", "config/sub/c", "roles/x"] {
            s.put(k, b"1".to_vec()).await.unwrap();
        }
        assert_eq!(s.list("config/").await.unwrap(), ["a", "b", "sub/"]);
        assert_eq!(s.list("").await.unwrap(), ["config/", "roles/"]);
    }

    #[tokio::test]
    async fn transaction_commits_atomically_and_detects_conflicts() {
        let s = InMemoryStorage::with_transactions();
        s.put("k", b"1".to_vec()).await.unwrap();

        let tx = s.begin().await.unwrap().unwrap();
        assert_eq!(tx.get("k").await.unwrap(), Some(b"1".to_vec()));
        tx.put("k", b"2".to_vec()).await.unwrap();
        tx.put("j", b"3".to_vec()).await.unwrap();
        assert_eq!(s.get("j").await.unwrap(), None, "not visible before commit");
        assert_eq!(tx.list("").await.unwrap(), ["j", "k"]);
        tx.commit().await.unwrap();
        assert_eq!(s.get("k").await.unwrap(), Some(b"2".to_vec()));

        let tx = s.begin().await.unwrap().unwrap();
        tx.get("k").await.unwrap();
        s.put("k", b"other".to_vec()).await.unwrap();
        tx.put("k", b"mine".to_vec()).await.unwrap();
        assert_eq!(tx.commit().await, Err(StorageError::Conflict));
        assert_eq!(s.get("k").await.unwrap(), Some(b"other".to_vec()));
    }
}
