//! What one mount shares between its request handlers and its scheduler: storage, the host,
//! the known kinds, and live handles on the targets.

pub(crate) mod access;
pub(crate) mod account;
pub(crate) mod decision;
pub(crate) mod ledger_mirror;
pub(crate) mod node;
pub(crate) mod root_password;
pub(crate) mod scheduler;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::SecretString;

use crate::contract::backend::{Backends, Inventory, Known, Target};
use crate::contract::connection_config;
use crate::contract::connection_config::ConnectionConfig;
use crate::contract::error::Error;
use crate::contract::host::{Host, Identity};
use crate::contract::storage::Storage;
use crate::model::policy_set::PolicySet;
use crate::model::role::{self, Role};
use crate::mount::node::Node;
use scheduler::Scheduler;

/// Called at named points of issuance (`after_intent`, `after_create`, `before_reply`); the
/// plugin uses it to kill itself there in crash-safety tests. Production builds set none.
pub type CrashHook = Arc<dyn Fn(&'static str) + Send + Sync>;

pub struct MountCore {
    pub storage: Arc<dyn Storage>,
    pub backends: Backends,
    pub host: Arc<dyn Host>,
    pub targets: Targets,
    pub scheduler: Scheduler,
    /// The node's role, and the work in flight that Cleanup stops.
    pub node: Node,
    pub crash_hook: Option<CrashHook>,
    /// Where the mount's time goes, served at `metrics`; `storage` counts its calls here.
    pub account: Arc<account::Account>,
    /// The beginning of the names this mount's default templates make, its own on every
    /// target ([`crate::contract::template::mark_of`]): what its orphan scan looks for.
    pub mark: String,
    pub cache: Cache,
    /// Per connection: held while its root password is rotated or a stopped rotation is
    /// settled.
    pub root_rotation: KeyedLocks,
    /// Per static role: held while it is written, deleted or rotated. A slow target holds
    /// back only its own roles' rotations.
    pub static_rotation: KeyedLocks,
    /// Held while a static role is written or deleted, around the check that no two roles
    /// manage one account.
    pub static_writes: tokio::sync::Mutex<()>,
    /// Held while an approval request is decided or collected, so two decisions never
    /// overwrite each other and a credential is collected once. Approvals come at human pace:
    /// one lock for all of them is enough.
    pub approval_writes: tokio::sync::Mutex<()>,
    /// The continuous-authorization sweep's wake-up call and its last pass.
    pub hold: HoldSweep,
}

/// What the hold sweep ([`crate::jobs::hold`]) shares with the paths: writes that may change
/// a hold decision (a policy, a role, a task, the interval) wake it, and `config/hold` shows
/// what its last pass came to.
#[derive(Default)]
pub struct HoldSweep {
    pub wake: tokio::sync::Notify,
    /// The last pass, as `config/hold` shows it.
    pub last: Mutex<Option<serde_json::Map<String, serde_json::Value>>>,
    /// The ledger records written since the sweep last read them; the mount's storage notes
    /// them.
    pub changed: Arc<ledger_mirror::ChangedRecords>,
    /// What the sweep last read of each record. Held for a whole pass, so two passes (the
    /// sweep's and a policy write's) never read the ledger at once.
    pub mirror: tokio::sync::Mutex<ledger_mirror::Mirror>,
}

impl HoldSweep {
    /// Asks for a pass now (at once if none is running, else right after the one that is).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// One lock per name, so that work on one name never waits for work on another.
#[derive(Default)]
pub struct KeyedLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    /// Waits for `name`'s lock. Locks are kept once made: one per role or connection.
    pub async fn lock(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .map
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_default()
            .clone();
        lock.lock_owned().await
    }
}

/// Roles, connections and policies as last read, the mount's maximum TTL and the identities
/// of recent requesters, so that issuance does not ask storage or the host for them on every
/// request. Every write to `config/`, `roles/` or `policies/` through this mount, and every
/// InvalidateKey from the host, empties it.
#[derive(Default)]
pub struct Cache {
    /// Moved on by every invalidation: a read of roles, connections or policies that began
    /// before a write must not store its older result after the write emptied the cache.
    generation: AtomicU64,
    roles: Mutex<HashMap<String, Role>>,
    connections: Mutex<HashMap<String, ConnectionConfig>>,
    max_ttl: Mutex<Option<(Instant, Duration)>>,
    identities: Mutex<HashMap<String, (Instant, Arc<Identity>)>>,
    /// The compiled policies.
    policies: Mutex<Option<Arc<PolicySet>>>,
    /// Held while the policies are compiled: requests that find the set missing wait for one
    /// compilation instead of each reading every policy from storage.
    compiling: tokio::sync::Mutex<()>,
}

/// How long the mount's maximum TTL is reused. `secrets tune` takes effect within this; the
/// host caps its own lease at once, and its revoke reaches mayfly at that earlier time.
const MAX_TTL_REUSE: Duration = Duration::from_secs(5);
/// How long an identity (entity and groups) is reused: a change of group membership reaches
/// bindings and policies within this.
const IDENTITY_REUSE: Duration = Duration::from_secs(5);
/// Identities kept at most; past this the cache starts afresh (a burst of distinct requesters
/// must not grow memory without bound).
const IDENTITY_CACHE_LIMIT: usize = 10_000;

impl MountCore {
    pub fn crash_point(&self, point: &'static str) {
        if let Some(hook) = &self.crash_hook {
            hook(point);
        }
    }

    /// A new password: from the host's password `policy`, or mayfly's CSPRNG default when
    /// `policy` is empty.
    pub async fn new_password(&self, policy: &str) -> Result<SecretString, Error> {
        if policy.is_empty() {
            Ok(crate::contract::host::default_password())
        } else {
            self.host.generate_password(policy).await
        }
    }

    /// Runs `write` (of a connection, a role or a policy) with the caches emptied before and
    /// after it: a request racing the write cannot leave a stale entry behind. Then wakes the
    /// hold sweep, since the write may change what live credentials may keep.
    pub async fn invalidating<T>(&self, write: impl std::future::Future<Output = T>) -> T {
        self.invalidate();
        let result = write.await;
        self.invalidate();
        self.hold.wake();
        result
    }

    pub fn invalidate(&self) {
        // The generation first: a read in flight then finds it moved on and stores nothing.
        self.cache.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.roles.lock().unwrap().clear();
        self.cache.connections.lock().unwrap().clear();
        *self.cache.max_ttl.lock().unwrap() = None;
        self.cache.identities.lock().unwrap().clear();
        *self.cache.policies.lock().unwrap() = None;
    }

    /// The identity entity `entity_id` and its groups, reused for [`IDENTITY_REUSE`].
    pub async fn identity(&self, entity_id: &str) -> Result<Arc<Identity>, Error> {
        if let Some((at, identity)) = self.cache.identities.lock().unwrap().get(entity_id)
            && at.elapsed() < IDENTITY_REUSE
        {
            return Ok(identity.clone());
        }
        self.identity_fresh(entity_id).await
    }

    /// The identity entity `entity_id` and its groups as the host has them now (and kept for
    /// the next [`MountCore::identity`]): the hold sweep must see a group removal within its
    /// interval, whatever the cache holds.
    pub async fn identity_fresh(&self, entity_id: &str) -> Result<Arc<Identity>, Error> {
        let identity = Arc::new(self.host.identity(entity_id).await?);
        let mut cache = self.cache.identities.lock().unwrap();
        if cache.len() >= IDENTITY_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(entity_id.to_owned(), (Instant::now(), identity.clone()));
        Ok(identity)
    }

    /// The mount's policies, compiled once and reused until a write or invalidation.
    pub async fn policies(&self) -> Result<Arc<PolicySet>, Error> {
        let cached = || self.cache.policies.lock().unwrap().clone();
        if let Some(set) = cached() {
            return Ok(set);
        }
        let _one_at_a_time = self.cache.compiling.lock().await;
        if let Some(set) = cached() {
            return Ok(set);
        }
        let generation = self.cache.generation.load(Ordering::SeqCst);
        let set = Arc::new(crate::model::policy_store::compile(self.storage.as_ref()).await?);
        let mut cached = self.cache.policies.lock().unwrap();
        if self.cache.generation.load(Ordering::SeqCst) == generation {
            *cached = Some(set.clone());
        }
        Ok(set)
    }

    pub async fn role(&self, name: &str) -> Result<Option<Role>, Error> {
        cached(
            &self.cache.roles,
            &self.cache.generation,
            name,
            role::load(self.storage.as_ref(), name),
        )
        .await
    }

    pub async fn connection(&self, name: &str) -> Result<Option<ConnectionConfig>, Error> {
        let load = async { Ok(connection_config::load(self.storage.as_ref(), name).await?) };
        cached(&self.cache.connections, &self.cache.generation, name, load).await
    }

    /// The kind (`plugin_name`) of connection `name`; empty when it no longer exists.
    pub async fn connection_kind(&self, name: &str) -> Result<String, Error> {
        Ok(self
            .connection(name)
            .await?
            .map(|c| c.plugin_name)
            .unwrap_or_default())
    }

    pub async fn max_lease_ttl(&self) -> Result<Duration, Error> {
        if let Some((at, ttl)) = *self.cache.max_ttl.lock().unwrap()
            && at.elapsed() < MAX_TTL_REUSE
        {
            return Ok(ttl);
        }
        let ttl = self.host.max_lease_ttl().await?;
        *self.cache.max_ttl.lock().unwrap() = Some((Instant::now(), ttl));
        Ok(ttl)
    }

    /// The live handle on connection `name`, connecting (or reconnecting after a
    /// configuration change) as needed.
    pub async fn target(&self, name: &str) -> Result<Arc<dyn Target>, Error> {
        let config = self
            .connection(name)
            .await?
            .ok_or_else(|| Error::Target(format!("connection '{name}' does not exist")))?;
        self.target_for(name, &config).await
    }

    /// As [`MountCore::target`], for a configuration the caller has just loaded.
    pub async fn target_for(
        &self,
        name: &str,
        config: &ConnectionConfig,
    ) -> Result<Arc<dyn Target>, Error> {
        if config.pending_root_password.is_some() {
            // A root rotation stopped midway: learn which password the target takes first.
            root_password::settle(self, name).await?;
            let settled = self
                .connection(name)
                .await?
                .ok_or_else(|| Error::Target(format!("connection '{name}' does not exist")))?;
            return Box::pin(self.target_for(name, &settled)).await;
        }
        let fingerprint = config.fingerprint();
        if let Some((f, t)) = self.targets.map.lock().unwrap().get(name)
            && *f == fingerprint
        {
            return Ok(t.clone());
        }
        let backend = self.backends.for_connection(name, config)?;
        let target = backend.connect(config).await?;
        target.attach_inventory(Arc::new(LedgerInventory {
            storage: self.storage.clone(),
            mark: self.mark.clone(),
        }));
        let replaced = self
            .targets
            .map
            .lock()
            .unwrap()
            .insert(name.to_owned(), (fingerprint, target.clone()));
        // Made from an older configuration (a rotated password, say): its sessions go now.
        if let Some((old, stale)) = replaced
            && old != fingerprint
        {
            self.node.spawn(async move { stale.close().await });
        }
        Ok(target)
    }
}

impl MountCore {
    /// `reset/NAME`: closes the connection's handle (its pool), opens a new one from the
    /// stored configuration and checks that the target takes it, as OpenBao's engine does
    /// after a target restarted or its credentials were changed by hand.
    pub async fn reset_target(&self, name: &str) -> Result<(), Error> {
        let config = self
            .connection(name)
            .await?
            .ok_or_else(|| Error::bad_request(format!("connection '{name}' does not exist")))?;
        let old = self.targets.map.lock().unwrap().remove(name);
        if let Some((_, target)) = old {
            target.close().await;
        }
        self.target_for(name, &config).await?;
        let backend = self.backends.for_connection(name, &config)?;
        crate::contract::backend::within(
            crate::contract::backend::TARGET_TIMEOUT,
            "verify the connection",
            backend.verify_connection(&config),
        )
        .await
    }

    /// Drops the handle on connection `name` (deleted or changed), closing its connections to
    /// the target in the background; the next use connects with the stored configuration.
    pub fn forget_target(&self, name: &str) {
        let old = self.targets.map.lock().unwrap().remove(name);
        if let Some((_, target)) = old {
            self.node.spawn(async move { target.close().await });
        }
    }
}

/// The mount's ledger as its targets may ask of it: every record, read when asked.
struct LedgerInventory {
    storage: Arc<dyn Storage>,
    mark: String,
}

#[async_trait::async_trait]
impl Inventory for LedgerInventory {
    fn mark(&self) -> &str {
        &self.mark
    }

    async fn credentials(&self) -> Result<Vec<Known>, Error> {
        let loaded = crate::model::ledger::scan(self.storage.as_ref()).await?;
        if !loaded.unreadable.is_empty() {
            // A record that cannot be read may be a live principal: nothing may be assumed
            // about what it covers.
            return Err(Error::Internal(format!(
                "{} ledger records cannot be read",
                loaded.unreadable.len()
            )));
        }
        Ok(loaded.records.iter().map(|c| c.as_known()).collect())
    }
}

/// Live target handles by connection name, with the fingerprint of the configuration each was
/// made from.
#[derive(Default)]
pub struct Targets {
    map: Mutex<HashMap<String, Cached>>,
}

/// A handle and the fingerprint of the configuration it was made from.
type Cached = (u64, Arc<dyn Target>);

/// `map[name]`, or what `load` finds, remembered if found (absence is not cached, so a
/// connection or role created elsewhere is seen at once).
async fn cached<T: Clone>(
    map: &Mutex<HashMap<String, T>>,
    generation: &AtomicU64,
    name: &str,
    load: impl std::future::Future<Output = Result<Option<T>, Error>>,
) -> Result<Option<T>, Error> {
    if let Some(v) = map.lock().unwrap().get(name) {
        return Ok(Some(v.clone()));
    }
    let began = generation.load(Ordering::SeqCst);
    let value = load.await?;
    if let Some(v) = &value {
        // Checked under the map's lock, which invalidation takes after moving the generation.
        let mut map = map.lock().unwrap();
        if generation.load(Ordering::SeqCst) == began {
            map.insert(name.to_owned(), v.clone());
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_read_overtaken_by_an_invalidation_is_not_kept() {
        let map: Mutex<HashMap<String, u32>> = Mutex::default();
        let generation = AtomicU64::new(0);
        // The cache is emptied (a role written) while this read is under way: its value may
        // be the old one, so it is returned but not kept.
        let overtaken = async {
            generation.fetch_add(1, Ordering::SeqCst);
            Ok(Some(1))
        };
        assert_eq!(
            cached(&map, &generation, "r", overtaken).await.unwrap(),
            Some(1)
        );
        assert!(map.lock().unwrap().is_empty());
        // Undisturbed, the value is kept and served without reading again.
        let read = async { Ok(Some(2)) };
        assert_eq!(cached(&map, &generation, "r", read).await.unwrap(), Some(2));
        let never = async { panic!("read again") };
        assert_eq!(
            cached(&map, &generation, "r", never).await.unwrap(),
            Some(2)
        );
    }
}
