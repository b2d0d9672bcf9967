//! The ledger: one record per credential, in the mount's storage, holding what revocation needs
//! and nothing secret. A record is written as an `intent` before anything exists on the target,
//! becomes `active` once the principal exists, `revoking` while a revocation is due or failing,
//! and `revoked` when the principal is gone; revoked records are kept for [`RETENTION_SECS`]
//! for audit, then deleted.
//!
//! The due index (`ledger/due/<bucket>/<due>_<id>`, buckets of [`BUCKET_SECS`]) says when the
//! scheduler must next look at each record, so start-up reads only the buckets that are due soon
//! instead of every record. Tasks share the index under entries named `task.<id>` (a credential
//! id never holds a dot). `ledger/tasks/<task>/<cred>` lists the credentials of each task.

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::contract::request::Requester;
use crate::contract::storage::{self, Kv, Storage, StorageError};

pub const RECORDS: &str = "ledger/creds/";
pub const DUE: &str = "ledger/due/";
pub const BY_TASK: &str = "ledger/tasks/";
/// Orphan purges under way ([`begin_purge`]).
pub const PURGES: &str = "ledger/purges/";
/// The due-index entry name of a task is this prefix and the task id.
pub const TASK_ENTRY: &str = "task.";
/// Due-index entries of static roles are `static.` + the role name.
pub const STATIC_ENTRY: &str = "static.";
/// Width of a due-index bucket.
pub const BUCKET_SECS: u64 = 60;
/// How long a revoked record stays listed under `leases/`.
pub const RETENTION_SECS: u64 = 3 * 24 * 3600;
/// Storage calls made at once when many records change together.
const PARALLEL: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Name and deadline chosen; the principal may or may not exist on the target yet.
    Intent,
    /// The principal exists and was handed out.
    Active,
    /// Revocation is due and has not succeeded yet.
    Revoking,
    /// The principal is gone.
    Revoked,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Intent => "intent",
            State::Active => "active",
            State::Revoking => "revoking",
            State::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        [
            State::Intent,
            State::Active,
            State::Revoking,
            State::Revoked,
        ]
        .into_iter()
        .find(|st| st.name() == s)
    }
}

/// Who asked for the credential. Nothing here is secret (the token accessor is not the token).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequesterRecord {
    pub entity_id: String,
    pub token_accessor: String,
    pub display_name: String,
    pub remote_addr: String,
}

impl From<&Requester> for RequesterRecord {
    fn from(r: &Requester) -> Self {
        RequesterRecord {
            entity_id: r.entity_id.clone(),
            token_accessor: r.token_accessor.clone(),
            display_name: r.display_name.clone(),
            remote_addr: r.remote_addr.clone(),
        }
    }
}

impl From<&RequesterRecord> for Requester {
    fn from(r: &RequesterRecord) -> Self {
        Requester {
            entity_id: r.entity_id.clone(),
            token_accessor: r.token_accessor.clone(),
            display_name: r.display_name.clone(),
            remote_addr: r.remote_addr.clone(),
        }
    }
}

/// The format of the ledger records this mayfly writes. A record carries its format so that
/// a later mayfly can add what revocation needs; records from before formats were numbered
/// have none and are format 1. A record of a newer format than this is never acted on, nor
/// deleted: it waits for the mayfly that wrote it, and `revocations/` lists it.
pub const FORMAT: u32 = 1;

fn format_one() -> u32 {
    1
}

/// One credential. Times are unix seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Credential {
    /// The record's format ([`FORMAT`]).
    #[serde(default = "format_one")]
    pub format: u32,
    pub id: String,
    pub role: String,
    pub connection: String,
    pub principal: String,
    pub state: State,
    pub created_at: u64,
    /// When the credential must be gone.
    pub deadline: u64,
    /// The latest deadline renewals may reach.
    pub max_deadline: u64,
    /// The TTL a renew without an increment gets.
    pub default_ttl: u64,
    /// When the scheduler next looks at this record (the due index key).
    pub due: u64,
    pub requester: RequesterRecord,
    /// The task the credential was issued under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// The host's lease id, learnt from its first revoke call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<String>,
    /// Revocation attempts so far.
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<u64>,
    /// When revocation first became due, for "failing since".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_requested_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
    /// The role's target settings at issuance (statements), so the credential can be revoked
    /// as it was created even if the role changes or is deleted. Never secret.
    pub settings: Map<String, Value>,
    /// When the target itself ends the principal (an STS session's expiry), where it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_expires: Option<u64>,
    /// When the target says the principal began, in its clock (an STS session's issue time):
    /// what a guard covering several sessions at once is drawn around.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_issued: Option<u64>,
    /// When the guard that revocation left on the target (a deny statement) is to be removed;
    /// `None` once removed, or when none was left. The record is kept until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard_until: Option<u64>,
    /// The target's own id of the principal where it is not the name (an API key's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_id: Option<String>,
    /// Issuance found no principal of this name on the target just before it created one:
    /// what allows dropping the name although the create may not have finished
    /// ([`Credential::ours`]). `None` in records of versions that did not look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_was_free: Option<bool>,
    /// Which statements revoked the principal, where not those recorded at issuance (they
    /// failed, and the role's fixed ones or the kind's default worked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_with: Option<String>,
}

/// The revocation reasons of a record whose create failed, and of an intent a crash left.
pub const CREATION_FAILED: &str = "creation failed";
pub const NEVER_COMPLETED: &str = "issuance never completed";

/// Why a record's principal is left on the target: nothing shows mayfly made it.
pub const NOT_OURS: &str = "left on the target: mayfly did not see the name free before its \
    create, so the principal of that name may be an account mayfly did not make";

impl Credential {
    /// Whether the principal of this record is mayfly's to drop. It is once its create
    /// succeeded, and before that only when issuance saw the name free just before creating
    /// it. A record of an earlier version that never became active (an intent, or a failed
    /// create) proves neither: only a name with a mark (`mf-`, which every mount's mark begins
    /// with) is taken as mayfly's then, since an unmarked name may be someone's account that
    /// a colliding template chose.
    pub fn ours(&self) -> bool {
        if self.name_was_free.is_some() {
            return self.name_was_free == Some(true);
        }
        let never_active = match self.state {
            State::Intent => true,
            State::Revoking | State::Revoked => matches!(
                self.revoke_reason.as_deref(),
                Some(CREATION_FAILED | NEVER_COMPLETED)
            ),
            State::Active => false,
        };
        !never_active
            || self
                .principal
                .starts_with(crate::contract::template::LEGACY_MARK)
    }

    /// The principal as its target knows it.
    pub fn as_principal(&self) -> crate::contract::backend::Principal {
        crate::contract::backend::Principal {
            name: self.principal.clone(),
            target_expires: self.target_expires,
            target_id: self.target_id.clone(),
        }
    }

    /// The credential as a target may ask of it ([`crate::contract::backend::Inventory`]).
    pub fn as_known(&self) -> crate::contract::backend::Known {
        crate::contract::backend::Known {
            id: self.id.clone(),
            name: self.principal.clone(),
            created_at: self.created_at,
            target_issued: self.target_issued,
            target_expires: self.target_expires,
            live: self.state != State::Revoked,
        }
    }

    /// The operator's view under `leases/`.
    pub fn view(&self) -> Map<String, Value> {
        let mut v = json!({
            "id": self.id,
            "role": self.role,
            "connection": self.connection,
            "principal": self.principal,
            "task_id": self.task_id,
            "state": self.state.name(),
            "created_at": self.created_at,
            "deadline": self.deadline,
            "max_deadline": self.max_deadline,
            "next_check_at": self.due,
            "requester": {
                "entity_id": self.requester.entity_id,
                "token_accessor": self.requester.token_accessor,
                "display_name": self.requester.display_name,
                "remote_addr": self.requester.remote_addr,
            },
            "lease_id": self.lease_id,
            "revocation_attempts": self.attempts,
            "last_error": self.last_error,
            "last_attempt_at": self.last_attempt_at,
            "revoke_requested_at": self.revoke_requested_at,
            "revoke_reason": self.revoke_reason,
            "revoked_at": self.revoked_at,
            "revoked_with": self.revoked_with,
            "target_expires": self.target_expires,
            "target_issued": self.target_issued,
            "guard_until": self.guard_until,
            "target_id": self.target_id,
        });
        std::mem::take(v.as_object_mut().expect("an object"))
    }
}

pub fn bucket(t: u64) -> u64 {
    t / BUCKET_SECS
}

fn record_key(id: &str) -> String {
    format!("{RECORDS}{id}")
}

pub(crate) fn due_key(due: u64, id: &str) -> String {
    format!("{DUE}{:012}/{due:012}_{id}", bucket(due))
}

fn task_key(task: &str, id: &str) -> String {
    format!("{BY_TASK}{task}/{id}")
}

/// The record of credential `id`. One this mayfly cannot read (a newer format, or damaged)
/// is an error that [`StorageError::is_unreadable`] recognises.
pub async fn load(kv: &dyn Kv, id: &str) -> Result<Option<Credential>, StorageError> {
    let key = record_key(id);
    kv.get(&key)
        .await?
        .map(|bytes| decode(&key, &bytes))
        .transpose()
}

/// Decodes a record, refusing one of a newer format than [`FORMAT`] even where its fields
/// happen to parse: what a newer mayfly added may be what its revocation needs.
fn decode(key: &str, bytes: &[u8]) -> Result<Credential, StorageError> {
    let newer = |format: u32| StorageError::NewerFormat {
        key: key.to_owned(),
        format,
        supported: FORMAT,
    };
    match storage::decode_json::<Credential>(key, bytes) {
        Ok(cred) if cred.format > FORMAT => Err(newer(cred.format)),
        Ok(cred) => Ok(cred),
        Err(e) => {
            // A newer format may also have changed a field beyond this mayfly's reading.
            let format = serde_json::from_slice::<Value>(bytes)
                .ok()
                .and_then(|v| v.get("format")?.as_u64())
                .and_then(|f| u32::try_from(f).ok());
            match format {
                Some(f) if f > FORMAT => Err(newer(f)),
                _ => Err(e),
            }
        }
    }
}

/// Writes `cred` and indexes it at `cred.due` (unless it already is: `previous_due` says where
/// its index entry is now), removing its index entry at `previous_due`.
pub async fn store(
    kv: &dyn Kv,
    cred: &Credential,
    previous_due: Option<u64>,
) -> Result<(), StorageError> {
    if previous_due.is_none()
        && let Some(task) = &cred.task_id
    {
        // Written with the intent, before anything exists on the target: a task's end finds
        // every credential that may exist.
        kv.put(&task_key(task, &cred.id), Vec::new()).await?;
    }
    let key = record_key(&cred.id);
    let record = storage::put_json(kv, &key, cred);
    store_indexed(kv, &cred.id, cred.due, previous_due, record).await
}

/// Writes a new intent: its record, its due-index entry and (under a task) its task entry, all
/// at once, with the latency of one write. Nothing exists on the target yet, and nothing will
/// until this returns, so no order among the writes matters for what must be revoked: an entry
/// whose record is missing is dropped by the scheduler when it falls due, and a task entry
/// without a record is passed over when the task ends. A record written while its entry failed
/// is deleted again here; were the process to die between the two, an intent record that no
/// entry reaches would stay behind, with nothing on the target to revoke (`revoke/config/NAME`
/// settles it).
pub async fn record_intent(kv: &dyn Kv, cred: &Credential) -> Result<(), StorageError> {
    let task = async {
        match &cred.task_id {
            Some(task) => kv.put(&task_key(task, &cred.id), Vec::new()).await,
            None => Ok(()),
        }
    };
    let (entry_at, record_at) = (due_key(cred.due, &cred.id), record_key(&cred.id));
    let entry = kv.put(&entry_at, Vec::new());
    let record = storage::put_json(kv, &record_at, cred);
    let (task, entry, record) = futures_util::future::join3(task, entry, record).await;
    if let (Ok(()), Err(_)) = (&record, &entry) {
        let _ = kv.delete(&record_at).await;
    }
    task.and(entry).and(record)
}

/// Where an activation left a credential's due-index entries ([`activate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activated {
    /// Indexed at its due time, and there only.
    Indexed,
    /// Still indexed at its intent's due time only, which is earlier than its own: the caller
    /// moves the entry ([`move_entry`]) off the request's path.
    AtIntentEntry,
}

/// Writes `cred`, just made active. The record is the one write the reply waits for: the
/// entry at `intent_due`, earlier than the record's due time, still reaches it, and the
/// scheduler, finding there a record due later, indexes it at its own due time without
/// revoking anything. The caller moves the entry to the deadline in the background
/// ([`move_entry`]); were that lost (a crash, a failed write), the scheduler does it when the
/// intent's entry falls due.
pub async fn activate(
    kv: &dyn Kv,
    cred: &Credential,
    intent_due: u64,
) -> Result<Activated, StorageError> {
    if cred.due <= intent_due {
        // Due no later than the intent's entry (a target that ends the principal sooner):
        // indexed before the record is written, or it could be revoked late.
        return store(kv, cred, Some(intent_due))
            .await
            .map(|()| Activated::Indexed);
    }
    storage::put_json(kv, &record_key(&cred.id), cred).await?;
    Ok(Activated::AtIntentEntry)
}

/// Moves credential `id`'s due-index entry from `from` to `to`: the new entry first, so one of
/// them reaches the record at every moment.
pub async fn move_entry(kv: &dyn Kv, id: &str, from: u64, to: u64) -> Result<(), StorageError> {
    store_indexed(kv, id, to, Some(from), async { Ok(()) }).await
}

/// Writes a record with `write`, moving its due-index entry `entry` from `previous_due` to
/// `due`. The new entry is written first, so a crash between the writes leaves the record
/// reachable by the scheduler (a stale entry is harmless: the scheduler indexes the record at
/// its own due time and drops the stale one).
pub async fn store_indexed(
    kv: &dyn Kv,
    entry: &str,
    due: u64,
    previous_due: Option<u64>,
    write: impl std::future::Future<Output = Result<(), StorageError>>,
) -> Result<(), StorageError> {
    if previous_due != Some(due) {
        kv.put(&due_key(due, entry), Vec::new()).await?;
    }
    write.await?;
    if let Some(old) = previous_due.filter(|old| *old != due) {
        kv.delete(&due_key(old, entry)).await?;
    }
    Ok(())
}

/// How a conditional write ([`store_if_unchanged`]) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swap {
    Stored,
    /// The stored record is no longer the one the caller decided on; nothing was written.
    Changed,
}

/// Writes `cred` as [`store`] does, but only if the stored record is still `seen`, the one the
/// caller decided on. Two writers that each read a record, act on the target and write back
/// would otherwise lose one's news: a revocation that found nothing on the target (the create
/// had not committed yet) overwriting the issuance that just made the principal active left a
/// live principal recorded as revoked. A record changed in the meantime is left as it is, and
/// the caller decides again on what is there now. In a transaction where the storage has them
/// (OpenBao's does), so the check and the write are one step.
pub async fn store_if_unchanged(
    storage: &dyn Storage,
    seen: &Credential,
    cred: &Credential,
    previous_due: Option<u64>,
) -> Result<Swap, StorageError> {
    let tx = storage.begin().await?;
    // Without transactions (HashiCorp Vault's storage) the check and the write are two steps:
    // a lock per record makes them one against every other conditional write of this process.
    // That is enough because only one process writes a mount's ledger: Vault runs plugins on
    // its active node only, and issuance's own plain writes happen under its claim.
    let _serialized = match &tx {
        Some(_) => None,
        None => Some(crate::contract::storage::key_lock(&record_key(&cred.id)).await),
    };
    let kv: &dyn Kv = match &tx {
        Some(tx) => tx.as_ref(),
        None => storage,
    };
    let written = async {
        if load(kv, &cred.id).await?.as_ref() != Some(seen) {
            return Ok(false);
        }
        store(kv, cred, previous_due).await.map(|()| true)
    }
    .await;
    let Some(tx) = tx else {
        return written.map(|w| if w { Swap::Stored } else { Swap::Changed });
    };
    match written {
        Ok(true) => match tx.commit().await {
            Ok(()) => Ok(Swap::Stored),
            // Someone wrote the record after this transaction read it.
            Err(StorageError::Conflict) => Ok(Swap::Changed),
            Err(e) => Err(e),
        },
        Ok(false) => {
            tx.rollback().await?;
            Ok(Swap::Changed)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// Many [`store_if_unchanged`] at once, in parallel. Each item is (record as read, record to
/// write, previous due).
pub async fn store_all_if_unchanged(
    storage: &dyn Storage,
    items: &[(Credential, Credential, Option<u64>)],
) -> Vec<Result<Swap, StorageError>> {
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(PARALLEL) {
        let writes = chunk
            .iter()
            .map(|(seen, cred, previous)| store_if_unchanged(storage, seen, cred, *previous));
        out.extend(join_all(writes).await);
    }
    out
}

/// Indexes many records at their own due times and drops the entries they were found by,
/// in parallel. Each item is (credential id, the record's due time, the entry's). The new
/// entry goes first, so the record stays reachable whatever fails; the record is not written.
pub async fn reindex_all(
    kv: &dyn Kv,
    items: &[(String, u64, u64)],
) -> Vec<Result<(), StorageError>> {
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(PARALLEL) {
        let moves = chunk
            .iter()
            .map(|(id, due, stale)| store_indexed(kv, id, *due, Some(*stale), async { Ok(()) }));
        out.extend(join_all(moves).await);
    }
    out
}

/// Stores many records at once, in parallel. Each item is (record, previous due).
pub async fn store_all(
    kv: &dyn Kv,
    items: &[(Credential, Option<u64>)],
) -> Vec<Result<(), StorageError>> {
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(PARALLEL) {
        let writes: Vec<_> = chunk.iter().map(|(c, p)| store(kv, c, *p)).collect();
        out.extend(join_all(writes).await);
    }
    out
}

/// Deletes a record and its index entries.
pub async fn remove(kv: &dyn Kv, cred: &Credential) -> Result<(), StorageError> {
    if let Some(task) = &cred.task_id {
        kv.delete(&task_key(task, &cred.id)).await?;
    }
    kv.delete(&record_key(&cred.id)).await?;
    kv.delete(&due_key(cred.due, &cred.id)).await
}

/// The ids of the credentials issued under `task` (purged ones excepted).
pub async fn task_credentials(kv: &dyn Kv, task: &str) -> Result<Vec<String>, StorageError> {
    kv.list(&format!("{BY_TASK}{task}/")).await
}

/// Deletes one index entry (one the scheduler found stale).
pub async fn remove_due(kv: &dyn Kv, due: u64, id: &str) -> Result<(), StorageError> {
    kv.delete(&due_key(due, id)).await
}

/// The buckets that have index entries, in order.
pub async fn due_buckets(kv: &dyn Kv) -> Result<Vec<u64>, StorageError> {
    Ok(kv
        .list(DUE)
        .await?
        .iter()
        .filter_map(|b| b.trim_end_matches('/').parse().ok())
        .collect())
}

/// The (due, id) entries of one bucket.
pub async fn bucket_entries(kv: &dyn Kv, bucket: u64) -> Result<Vec<(u64, String)>, StorageError> {
    Ok(kv
        .list(&format!("{DUE}{bucket:012}/"))
        .await?
        .iter()
        .filter_map(|e| {
            let (due, id) = e.split_once('_')?;
            Some((due.parse().ok()?, id.to_owned()))
        })
        .collect())
}

/// Records that an orphan purge is about to drop `principals` on `connection`, before the
/// target is touched: the purge goes ahead only if this write succeeded, which proves this
/// node still leads the cluster. Returns the record's key, for [`end_purge`].
pub async fn begin_purge(
    kv: &dyn Kv,
    connection: &str,
    principals: &[String],
    now: u64,
) -> Result<String, StorageError> {
    let key = format!(
        "{PURGES}{now:012}_{}",
        crate::contract::host::random_lower(8)
    );
    let record = json!({"connection": connection, "principals": principals, "at": now});
    storage::put_json(kv, &key, &record).await?;
    Ok(key)
}

/// Removes the record of a purge that has ended ([`begin_purge`]).
pub async fn end_purge(kv: &dyn Kv, key: &str) -> Result<(), StorageError> {
    kv.delete(key).await
}

/// Every record id.
pub async fn ids(kv: &dyn Kv) -> Result<Vec<String>, StorageError> {
    kv.list(RECORDS).await
}

/// A record this mayfly cannot read ([`StorageError::is_unreadable`]), with what can be made
/// out of it. It is never acted on and never deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub id: String,
    pub reason: String,
    /// The principal and connection, where the record still names them.
    pub principal: Option<String>,
    pub connection: Option<String>,
}

impl Unreadable {
    async fn read(kv: &dyn Kv, id: &str, error: &StorageError) -> Unreadable {
        let raw: Option<Value> = match kv.get(&record_key(id)).await {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).ok(),
            _ => None,
        };
        let field = |name: &str| {
            raw.as_ref()
                .and_then(|v| v.get(name)?.as_str())
                .map(str::to_owned)
        };
        Unreadable {
            id: id.to_owned(),
            reason: error.to_string(),
            principal: field("principal"),
            connection: field("connection"),
        }
    }

    /// The operator's view under `leases/` and `revocations/`.
    pub fn view(&self) -> Value {
        json!({"state": "unreadable", "reason": self.reason, "principal": self.principal,
               "connection": self.connection})
    }
}

/// Records loaded together: those this mayfly reads, and those it cannot.
#[derive(Debug, Default)]
pub struct Loaded {
    pub records: Vec<Credential>,
    pub unreadable: Vec<Unreadable>,
}

/// Loads many records at once, in parallel; missing ones are skipped, unreadable ones set
/// apart (one of them must not hide the others).
pub async fn load_all(kv: &dyn Kv, ids: &[String]) -> Result<Loaded, StorageError> {
    let mut out = Loaded::default();
    for (id, r) in ids.iter().zip(load_each(kv, ids).await) {
        match r {
            Ok(record) => out.records.extend(record),
            Err(e) if e.is_unreadable() => out.unreadable.push(Unreadable::read(kv, id, &e).await),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Every record of the ledger ([`load_all`]).
pub async fn scan(kv: &dyn Kv) -> Result<Loaded, StorageError> {
    load_all(kv, &ids(kv).await?).await
}

/// Loads many records at once, in parallel, with each one's own outcome, in the order of `ids`.
pub async fn load_each(
    kv: &dyn Kv,
    ids: &[String],
) -> Vec<Result<Option<Credential>, StorageError>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(PARALLEL) {
        let reads: Vec<_> = chunk.iter().map(|id| load(kv, id)).collect();
        out.extend(join_all(reads).await);
    }
    out
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use serde_json::json;

    use super::*;
    use crate::contract::storage::{InMemoryStorage, Transaction};

    /// Storage without transactions whose reads let other tasks run before they answer, so
    /// that two check-then-write sequences interleave as they would against a remote host.
    #[derive(Clone)]
    struct Yielding(InMemoryStorage);

    #[async_trait]
    impl Kv for Yielding {
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
            tokio::task::yield_now().await;
            self.0.get(key).await
        }
        async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
            tokio::task::yield_now().await;
            self.0.put(key, value).await
        }
        async fn delete(&self, key: &str) -> Result<(), StorageError> {
            self.0.delete(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
            self.0.list(prefix).await
        }
    }

    #[async_trait]
    impl Storage for Yielding {
        async fn begin(&self) -> Result<Option<Box<dyn Transaction>>, StorageError> {
            Ok(None)
        }
    }

    fn record(deadline: u64) -> Credential {
        serde_json::from_value(json!({
            "id": "abcdefghij0123456789", "role": "r", "connection": "c",
            "principal": "mf-r-1", "state": "active", "created_at": 1, "deadline": deadline,
            "max_deadline": 9_000, "default_ttl": 60, "due": deadline,
            "requester": {"entity_id": "", "token_accessor": "", "display_name": "",
                          "remote_addr": ""},
            "settings": {}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn without_transactions_two_conditional_writes_of_one_record_never_both_win() {
        let storage = Yielding(InMemoryStorage::without_transactions());
        let seen = record(100);
        store(&storage, &seen, None).await.unwrap();
        // A renewal and a revocation decided on the same record, at once.
        let (renewed, revoking) = (record(500), {
            let mut r = record(100);
            r.state = State::Revoking;
            r
        });
        let (a, b) = tokio::join!(
            store_if_unchanged(&storage, &seen, &renewed, Some(100)),
            store_if_unchanged(&storage, &seen, &revoking, Some(100)),
        );
        let outcomes = [a.unwrap(), b.unwrap()];
        assert_eq!(
            outcomes.iter().filter(|o| **o == Swap::Stored).count(),
            1,
            "{outcomes:?}"
        );
        let stored = load(&storage, &seen.id).await.unwrap().unwrap();
        let winner = if outcomes[0] == Swap::Stored {
            &renewed
        } else {
            &revoking
        };
        assert_eq!(&stored, winner);
    }

    /// Storage whose writes under `failing` fail.
    struct FailingUnder(InMemoryStorage, &'static str);

    #[async_trait]
    impl Kv for FailingUnder {
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
            self.0.get(key).await
        }
        async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
            if key.starts_with(self.1) {
                return Err(StorageError::Backend("refused".into()));
            }
            self.0.put(key, value).await
        }
        async fn delete(&self, key: &str) -> Result<(), StorageError> {
            self.0.delete(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
            self.0.list(prefix).await
        }
    }

    #[tokio::test]
    async fn an_intent_is_written_whole_or_leaves_no_record_behind() {
        let mut intent = record(100);
        intent.state = State::Intent;
        intent.task_id = Some("t1".into());
        let whole = InMemoryStorage::new();
        record_intent(&whole, &intent).await.unwrap();
        assert_eq!(
            load(&whole, &intent.id).await.unwrap(),
            Some(intent.clone())
        );
        assert!(whole.dump().contains_key(&due_key(100, &intent.id)));
        assert_eq!(
            task_credentials(&whole, "t1").await.unwrap(),
            [intent.id.clone()]
        );

        // Its index entry refused: the issuance fails, and no record stays that no entry
        // would reach.
        let storage = FailingUnder(InMemoryStorage::new(), DUE);
        record_intent(&storage, &intent).await.unwrap_err();
        assert_eq!(load(&storage, &intent.id).await.unwrap(), None);
    }
}
