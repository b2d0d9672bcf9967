//! The core's test harness: a fake target kind (principals live in a set in memory, and the
//! target can be switched to fail, as a database that went down would), a host with fixed
//! answers, storage shared by the nodes of a cluster, and [`engine`], the one way the
//! scenarios (`crate::scenarios`) build a mount.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use crate::contract::backend::{Backend, Created, NewPrincipal, Principal, Revoked, Target};
use crate::contract::connection_config::ConnectionConfig;
use crate::contract::error::Error;
use crate::contract::fields::{FieldDef, FieldType, FieldValue};
use crate::contract::host::{Group, Host, Identity};
use crate::contract::request::{Operation, Request, Requester, Response};

/// A mount's engine over `storage`, with the fake kind `fake` and `host`, not yet started
/// (the scenarios start it as the node role they need).
pub fn engine(
    storage: impl crate::contract::storage::Storage + 'static,
    fake: &Arc<Fake>,
    host: FixedHost,
) -> crate::Engine {
    crate::Engine::new(
        Arc::new(storage),
        crate::Backends::new(vec![fake.clone()]),
        Arc::new(host),
        "v0",
    )
}

/// A started (active) mount on fresh in-memory storage, with the fake kind and connection `db`
/// (every role allowed), made by `e-admin`: where most scenarios begin.
pub struct Mount {
    pub engine: crate::Engine,
    pub fake: Arc<Fake>,
    pub storage: crate::contract::storage::InMemoryStorage,
}

impl Mount {
    /// A mount whose host puts each (entity id, group name) of `groups` in its group.
    pub async fn with_groups(groups: &[(&str, &str)]) -> Mount {
        let host = FixedHost {
            groups: groups
                .iter()
                .map(|(e, g)| ((*e).to_owned(), (*g).to_owned()))
                .collect(),
            ..FixedHost::default()
        };
        Mount::start(host).await
    }

    pub async fn start(host: FixedHost) -> Mount {
        let storage = crate::contract::storage::InMemoryStorage::new();
        let fake = Arc::new(Fake::default());
        let engine = engine(storage.clone(), &fake, host);
        engine.start(crate::NodeRole::Active);
        let m = Mount {
            engine,
            fake,
            storage,
        };
        let connection = serde_json::json!({"plugin_name": "fake", "url": "fake://x",
                                            "allowed_roles": "*"});
        m.admin("config/db", connection).await.unwrap();
        m
    }

    /// `op` on `path` with `body`, by `as_`.
    pub async fn call(
        &self,
        op: Operation,
        path: &str,
        body: Value,
        as_: &Requester,
    ) -> Result<Response, Error> {
        let mut req = Request::new(op, path).with_data(body);
        req.requester = as_.clone();
        self.engine.handle(req).await
    }

    /// A write of `path` by `as_`.
    pub async fn update(
        &self,
        path: &str,
        body: Value,
        as_: &Requester,
    ) -> Result<Response, Error> {
        self.call(Operation::Update, path, body, as_).await
    }

    /// A write of `path` by the mount's admin, `e-admin`.
    pub async fn admin(&self, path: &str, body: Value) -> Result<Response, Error> {
        self.update(path, body, &who("e-admin", "127.0.0.1")).await
    }
}

/// A requester: entity `entity` (accessor `acc-<entity>`) calling from `addr`.
pub fn who(entity: &str, addr: &str) -> Requester {
    Requester {
        entity_id: entity.into(),
        token_accessor: format!("acc-{entity}"),
        display_name: "token".into(),
        remote_addr: addr.into(),
    }
}

#[derive(Default)]
pub struct FakeTarget {
    pub principals: Mutex<BTreeSet<String>>,
    pub down: AtomicBool,
    /// Look-ups of a name (`exists`) made.
    pub exists_calls: AtomicUsize,
    /// Revoke calls made, and the largest batch seen.
    pub revoke_calls: AtomicUsize,
    pub largest_batch: AtomicUsize,
    /// Passwords of the accounts static roles manage, by account.
    pub passwords: Mutex<BTreeMap<String, String>>,
    /// When not 0, principals are sessions that end on their own this many seconds after
    /// creation, and revoking a live one leaves a guard (as STS sessions do).
    pub session_secs: AtomicU64,
    /// Principals stopped by a guard that is still on the target.
    pub guards: Mutex<BTreeSet<String>>,
    /// The kind makes its own keys (as IAM does): static roles rotate `keys`.
    pub makes_keys: AtomicBool,
    /// Access keys by account: (id, created), oldest first; at most two per account.
    pub keys: Mutex<BTreeMap<String, Vec<(String, u64)>>>,
    /// When set, the next create waits for this before it makes the principal (a slow create).
    pub hold_create: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
    /// When set, the next revoke decides what it removed, then waits for this before it
    /// answers (a slow answer).
    pub hold_revoke: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
    /// When set, the next renew finds its principal, then waits for this before it answers.
    pub hold_renew: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

impl FakeTarget {
    fn check(&self) -> Result<(), Error> {
        if self.down.load(Ordering::SeqCst) {
            Err(Error::Unavailable("fake target is down".into()))
        } else {
            Ok(())
        }
    }
    pub fn has(&self, name: &str) -> bool {
        self.principals.lock().unwrap().contains(name)
    }
    /// Adds an account for a static role to take over.
    pub fn add_account(&self, name: &str, password: &str) {
        let mut passwords = self.passwords.lock().unwrap();
        passwords.insert(name.to_owned(), password.to_owned());
    }
    pub fn password(&self, name: &str) -> Option<String> {
        self.passwords.lock().unwrap().get(name).cloned()
    }
    /// The ids of `account`'s keys.
    pub fn key_ids(&self, account: &str) -> Vec<String> {
        let keys = self.keys.lock().unwrap();
        keys.get(account)
            .map(|k| k.iter().map(|(id, _)| id.clone()).collect())
            .unwrap_or_default()
    }
    /// Removes `principals`, as one revoke call does.
    fn remove(&self, principals: &[Principal]) -> Revoked {
        let mut set = self.principals.lock().unwrap();
        let mut r = Revoked::default();
        for p in principals {
            let n = &p.name;
            if set.remove(n) {
                r.removed += 1;
                if let Some(end) = p
                    .target_expires
                    .filter(|e| *e > crate::contract::host::now())
                {
                    self.guards.lock().unwrap().insert(n.clone());
                    r.guarded.push((n.clone(), end));
                }
            } else {
                r.already_gone.push(n.clone());
            }
        }
        r
    }

    pub fn count(&self) -> usize {
        self.principals.lock().unwrap().len()
    }
}

#[async_trait]
impl Target for FakeTarget {
    async fn exists(&self, name: &str, _: &Map<String, Value>) -> Result<bool, Error> {
        self.exists_calls.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        Ok(self.has(name))
    }
    async fn create(&self, p: &NewPrincipal<'_>) -> Result<Created, Error> {
        let hold = self.hold_create.lock().unwrap().take();
        if let Some(rx) = hold {
            let _ = rx.await;
        }
        self.check()?;
        if !self.principals.lock().unwrap().insert(p.name.to_owned()) {
            return Err(Error::Conflict(format!("{} exists", p.name)));
        }
        let secs = self.session_secs.load(Ordering::SeqCst);
        Ok(Created {
            target_expires: (secs > 0).then(|| crate::contract::host::now() + secs),
            ..Created::default()
        })
    }
    async fn renew(&self, p: &Principal, _: u64, _: &Map<String, Value>) -> Result<(), Error> {
        self.check()?;
        if !self.has(&p.name) {
            return Err(Error::Target(format!("{} is gone", p.name)));
        }
        let hold = self.hold_renew.lock().unwrap().take();
        if let Some(rx) = hold {
            let _ = rx.await;
        }
        Ok(())
    }
    async fn revoke(
        &self,
        principals: &[Principal],
        settings: &Map<String, Value>,
    ) -> Result<Revoked, Error> {
        self.check()?;
        if settings
            .get("revocation_statements")
            .is_some_and(|s| s.to_string().contains("FAIL"))
        {
            return Err(Error::Target("the revocation statement failed".into()));
        }
        self.revoke_calls.fetch_add(1, Ordering::SeqCst);
        self.largest_batch
            .fetch_max(principals.len(), Ordering::SeqCst);
        let r = self.remove(principals);
        let hold = self.hold_revoke.lock().unwrap().take();
        if let Some(rx) = hold {
            let _ = rx.await;
        }
        Ok(r)
    }
    async fn clean_up(&self, names: &[String], _: &Map<String, Value>) -> Result<(), Error> {
        self.check()?;
        let mut guards = self.guards.lock().unwrap();
        for n in names {
            guards.remove(n);
        }
        Ok(())
    }
    async fn list_marked(
        &self,
        mark: &str,
        _: &Map<String, Value>,
    ) -> Result<Vec<Principal>, Error> {
        self.check()?;
        let set = self.principals.lock().unwrap();
        Ok(set
            .iter()
            .filter(|n| n.starts_with(mark))
            .map(Principal::named)
            .collect())
    }
    async fn rotate_root(&self, _: &SecretString) -> Result<(), Error> {
        self.check()
    }
    async fn set_password(
        &self,
        username: &str,
        password: &SecretString,
        statements: &[String],
    ) -> Result<(), Error> {
        self.check()?;
        if statements.iter().any(|s| s.contains("FAIL")) {
            return Err(Error::Target("the statement failed".into()));
        }
        match self.passwords.lock().unwrap().get_mut(username) {
            Some(p) => *p = password.expose_secret().to_owned(),
            None => return Err(Error::Target(format!("no account {username}"))),
        }
        Ok(())
    }
    async fn check_login(&self, username: &str, password: &SecretString) -> Result<bool, Error> {
        self.check()?;
        let passwords = self.passwords.lock().unwrap();
        Ok(passwords.get(username).map(String::as_str) == Some(password.expose_secret()))
    }
    async fn create_key(&self, account: &str) -> Result<(String, SecretString), Error> {
        self.check()?;
        let mut keys = self.keys.lock().unwrap();
        let list = keys.entry(account.to_owned()).or_default();
        if list.len() >= 2 {
            return Err(Error::Target("LimitExceeded: two keys already".into()));
        }
        let id = format!(
            "AK{}",
            crate::contract::host::random_lower(12).to_uppercase()
        );
        list.push((id.clone(), crate::contract::host::now()));
        Ok((
            id,
            SecretString::from(crate::contract::host::random_lower(30)),
        ))
    }
    async fn delete_key(&self, account: &str, key_id: &str) -> Result<(), Error> {
        self.check()?;
        if let Some(list) = self.keys.lock().unwrap().get_mut(account) {
            list.retain(|(id, _)| id != key_id);
        }
        Ok(())
    }
    async fn list_keys(&self, account: &str) -> Result<Vec<(String, u64)>, Error> {
        self.check()?;
        Ok(self
            .keys
            .lock()
            .unwrap()
            .get(account)
            .cloned()
            .unwrap_or_default())
    }
}

/// The fake kind; every connection of it shares one [`FakeTarget`].
#[derive(Default)]
pub struct Fake {
    pub target: Arc<FakeTarget>,
}

#[async_trait]
impl Backend for Fake {
    fn kind(&self) -> &'static str {
        "fake"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["fake-database-plugin"]
    }
    fn connection_fields(&self) -> Vec<FieldDef> {
        vec![
            FieldDef::new("url", FieldType::String, "where").required(),
            FieldDef::new("password", FieldType::String, "secret").secret(),
            FieldDef::new("pool", FieldType::Int, "size").default(FieldValue::Int(4)),
        ]
    }
    fn reach(&self, c: &ConnectionConfig) -> crate::contract::backend::Reach {
        crate::contract::backend::Reach::default().with_setting(c, "url")
    }
    fn validate_connection(&self, c: &ConnectionConfig) -> Result<(), Error> {
        match c.setting_str("url") {
            Some(u) if u.starts_with("fake://") => Ok(()),
            _ => Err(Error::bad_request("field 'url': expected fake://…")),
        }
    }
    async fn verify_connection(&self, c: &ConnectionConfig) -> Result<(), Error> {
        if c.setting_str("url") == Some("fake://down") {
            return Err(Error::bad_request(format!(
                "cannot connect: {}",
                crate::contract::redact::redact(
                    "auth failed for hunter2",
                    &[c.secret("password").unwrap_or("")]
                )
            )));
        }
        Ok(())
    }
    async fn connect(&self, _: &ConnectionConfig) -> Result<Arc<dyn Target>, Error> {
        Ok(self.target.clone())
    }
    fn role_fields(&self) -> Vec<FieldDef> {
        vec![
            FieldDef::new("creation_statements", FieldType::Statements, "what to run"),
            FieldDef::new(
                "revocation_statements",
                FieldType::Statements,
                "what to run to revoke; one holding FAIL fails",
            ),
        ]
    }
    fn validate_role(&self, _: &Map<String, Value>, _: &str) -> Result<(), Error> {
        Ok(())
    }
    fn validate_rotation_statements(&self, _: &[String], _: &str) -> Result<(), Error> {
        Ok(())
    }
    fn target_makes_secret(&self) -> bool {
        self.target.makes_keys.load(Ordering::SeqCst)
    }
    fn validate_principal(&self, name: &str) -> Result<(), Error> {
        if name.contains('"') {
            Err(Error::bad_request(format!(
                "name {name:?} contains a double quote"
            )))
        } else {
            Ok(())
        }
    }
}

/// Storage on a node of a cluster, over shared [`InMemoryStorage`]: reads always work; writes
/// fail as OpenBao's do on a standby (`read_only`) or on a node that lost its leadership
/// without stepping down (`deposed`).
#[derive(Clone, Default)]
pub struct NodeStorage {
    pub inner: crate::contract::storage::InMemoryStorage,
    pub read_only: Arc<AtomicBool>,
    pub deposed: Arc<AtomicBool>,
}

impl NodeStorage {
    pub fn over(inner: &crate::contract::storage::InMemoryStorage) -> NodeStorage {
        NodeStorage {
            inner: inner.clone(),
            ..NodeStorage::default()
        }
    }

    fn writable(&self) -> Result<(), crate::contract::storage::StorageError> {
        let refused = if self.read_only.load(Ordering::SeqCst) {
            "cannot write to readonly storage"
        } else if self.deposed.load(Ordering::SeqCst) {
            "node is not the leader"
        } else {
            return Ok(());
        };
        Err(crate::contract::storage::StorageError::Backend(
            refused.into(),
        ))
    }
}

#[async_trait]
impl crate::contract::storage::Kv for NodeStorage {
    async fn get(
        &self,
        key: &str,
    ) -> Result<Option<Vec<u8>>, crate::contract::storage::StorageError> {
        self.inner.get(key).await
    }
    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
    ) -> Result<(), crate::contract::storage::StorageError> {
        self.writable()?;
        self.inner.put(key, value).await
    }
    async fn delete(&self, key: &str) -> Result<(), crate::contract::storage::StorageError> {
        self.writable()?;
        self.inner.delete(key).await
    }
    async fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<String>, crate::contract::storage::StorageError> {
        self.inner.list(prefix).await
    }
}

#[async_trait]
impl crate::contract::storage::Storage for NodeStorage {
    async fn begin(
        &self,
    ) -> Result<
        Option<Box<dyn crate::contract::storage::Transaction>>,
        crate::contract::storage::StorageError,
    > {
        Ok(self.inner.begin().await?.map(|tx| {
            Box::new(NodeTx {
                tx,
                node: self.clone(),
            }) as Box<dyn crate::contract::storage::Transaction>
        }))
    }
}

/// A transaction of [`NodeStorage`]: its writes are buffered, and its commit is the write
/// that fails.
struct NodeTx {
    tx: Box<dyn crate::contract::storage::Transaction>,
    node: NodeStorage,
}

#[async_trait]
impl crate::contract::storage::Kv for NodeTx {
    async fn get(
        &self,
        key: &str,
    ) -> Result<Option<Vec<u8>>, crate::contract::storage::StorageError> {
        self.tx.get(key).await
    }
    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
    ) -> Result<(), crate::contract::storage::StorageError> {
        self.tx.put(key, value).await
    }
    async fn delete(&self, key: &str) -> Result<(), crate::contract::storage::StorageError> {
        self.tx.delete(key).await
    }
    async fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<String>, crate::contract::storage::StorageError> {
        self.tx.list(prefix).await
    }
}

#[async_trait]
impl crate::contract::storage::Transaction for NodeTx {
    async fn commit(self: Box<Self>) -> Result<(), crate::contract::storage::StorageError> {
        self.node.writable()?;
        self.tx.commit().await
    }
    async fn rollback(self: Box<Self>) -> Result<(), crate::contract::storage::StorageError> {
        self.tx.rollback().await
    }
}
/// A host with fixed limits, no password policies, and fixed group memberships.
pub struct FixedHost {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    /// (entity id, group name) pairs.
    pub groups: Vec<(String, String)>,
}

impl Default for FixedHost {
    /// OpenBao's own defaults: 768 hours for both.
    fn default() -> Self {
        FixedHost {
            default_ttl: Duration::from_secs(768 * 3600),
            max_ttl: Duration::from_secs(768 * 3600),
            groups: Vec::new(),
        }
    }
}

#[async_trait]
impl Host for FixedHost {
    async fn default_lease_ttl(&self) -> Result<Duration, Error> {
        Ok(self.default_ttl)
    }
    async fn max_lease_ttl(&self) -> Result<Duration, Error> {
        Ok(self.max_ttl)
    }
    async fn generate_password(&self, policy: &str) -> Result<SecretString, Error> {
        Err(Error::bad_request(format!(
            "field 'password_policy': this host has no password policy '{policy}'"
        )))
    }
    async fn identity(&self, entity_id: &str) -> Result<Identity, Error> {
        Ok(Identity {
            id: entity_id.to_owned(),
            name: format!("entity-{entity_id}"),
            groups: self
                .groups
                .iter()
                .filter(|(e, _)| e == entity_id)
                .map(|(_, g)| Group {
                    id: format!("group-{g}"),
                    name: g.clone(),
                    metadata: BTreeMap::new(),
                })
                .collect(),
            ..Identity::default()
        })
    }
}
