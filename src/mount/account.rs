//! Where a mount's time goes: per kind of request (issue, renew, revoke), how long each phase
//! took and how many host storage round trips it made, summed since the mount started and
//! served at `metrics`. What is cut from a request's cost is first found here.
//!
//! A request runs inside a scope ([`Account::measure`]) whose tally the request's code adds
//! laps to ([`lap`]) and the mount's storage adds its round trips to ([`Counted`]). Storage
//! used outside any request (the sweep, work spawned off a request's path) is counted as
//! background. Nothing here holds a value, a key or a name: only durations and counts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::contract::storage::{Kv, Storage, StorageError, Transaction};
use crate::mount::ledger_mirror::ChangedRecords;

/// What a request was, for the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RequestKind {
    Issue,
    Renew,
    Revoke,
    /// Everything else: configuration, reads, operator tools.
    Other,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Issue => "issue",
            RequestKind::Renew => "renew",
            RequestKind::Revoke => "revoke",
            RequestKind::Other => "other",
        }
    }
}

/// The storage calls counted, in the order they are reported.
const STORAGE_CALLS: [&str; 7] = [
    "get", "put", "delete", "list", "begin", "commit", "rollback",
];

/// Counts and total time per storage call.
#[derive(Default, Clone)]
struct StorageTally {
    calls: [(u64, Duration); STORAGE_CALLS.len()],
}

impl StorageTally {
    fn add(&mut self, call: usize, took: Duration) {
        let (n, t) = &mut self.calls[call];
        *n += 1;
        *t += took;
    }

    fn merge(&mut self, other: &StorageTally) {
        for (mine, theirs) in self.calls.iter_mut().zip(&other.calls) {
            mine.0 += theirs.0;
            mine.1 += theirs.1;
        }
    }

    fn view(&self) -> Value {
        let mut out = Map::new();
        for (name, (n, t)) in STORAGE_CALLS.iter().zip(&self.calls) {
            if *n > 0 {
                out.insert(
                    (*name).into(),
                    json!({"count": n, "us": t.as_micros() as u64}),
                );
            }
        }
        Value::Object(out)
    }
}

/// One request's tally.
struct Tally {
    last_lap: Instant,
    phases: Vec<(&'static str, Duration)>,
    storage: StorageTally,
}

tokio::task_local! {
    static CURRENT: Arc<Mutex<Tally>>;
}

/// Ends the current phase of the request being measured: the time since the previous lap (or
/// since the request began) is counted as `phase`. Does nothing outside a measured request.
pub fn lap(phase: &'static str) {
    let _ = CURRENT.try_with(|tally| {
        let mut tally = tally.lock().unwrap();
        let now = Instant::now();
        let took = now - tally.last_lap;
        tally.last_lap = now;
        tally.phases.push((phase, took));
    });
}

/// The sums for one kind of request.
#[derive(Default)]
struct Totals {
    count: u64,
    /// In the engine, from routing to the reply.
    engine: Duration,
    /// In the plugin's decoding of the host's request and encoding of the reply.
    codec: Duration,
    phases: BTreeMap<&'static str, Duration>,
    storage: StorageTally,
}

/// A mount's account since it started.
pub struct Account {
    since: u64,
    totals: Mutex<BTreeMap<RequestKind, Totals>>,
    background: Mutex<StorageTally>,
}

impl Default for Account {
    fn default() -> Self {
        Account {
            since: crate::contract::host::now(),
            totals: Mutex::default(),
            background: Mutex::default(),
        }
    }
}

impl Account {
    /// Runs `request`, a request of `kind`, with its phases and storage calls counted.
    pub async fn measure<T>(&self, kind: RequestKind, request: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let tally = Arc::new(Mutex::new(Tally {
            last_lap: started,
            phases: Vec::new(),
            storage: StorageTally::default(),
        }));
        let out = CURRENT.scope(tally.clone(), request).await;
        let engine = started.elapsed();
        let tally = tally.lock().unwrap();
        let mut totals = self.totals.lock().unwrap();
        let t = totals.entry(kind).or_default();
        t.count += 1;
        t.engine += engine;
        for (phase, took) in &tally.phases {
            *t.phases.entry(phase).or_default() += *took;
        }
        t.storage.merge(&tally.storage);
        out
    }

    /// Adds the plugin's decoding and encoding time of one request of `kind`.
    pub fn add_codec(&self, kind: RequestKind, took: Duration) {
        self.totals.lock().unwrap().entry(kind).or_default().codec += took;
    }

    fn add_storage(&self, call: usize, took: Duration) {
        let counted = CURRENT.try_with(|tally| tally.lock().unwrap().storage.add(call, took));
        if counted.is_err() {
            self.background.lock().unwrap().add(call, took);
        }
    }

    /// What `metrics` shows: totals in microseconds since `since`, so that a reader takes the
    /// difference between two reads to see one stretch of load.
    pub fn view(&self) -> Map<String, Value> {
        let mut requests = Map::new();
        for (kind, t) in self.totals.lock().unwrap().iter() {
            let phases: Map<String, Value> = t
                .phases
                .iter()
                .map(|(p, d)| ((*p).to_owned(), json!(d.as_micros() as u64)))
                .collect();
            requests.insert(
                kind.as_str().into(),
                json!({
                    "count": t.count,
                    "engine_us": t.engine.as_micros() as u64,
                    "codec_us": t.codec.as_micros() as u64,
                    "phases_us": phases,
                    "storage": t.storage.view(),
                }),
            );
        }
        let mut out = Map::new();
        out.insert("since".into(), json!(self.since));
        out.insert("requests".into(), Value::Object(requests));
        out.insert(
            "background".into(),
            json!({"storage": self.background.lock().unwrap().view()}),
        );
        out
    }
}

/// Storage, or a transaction of it (`S`), with every call counted in the account, and every
/// write noted for the hold sweep's mirror of the ledger.
pub struct Counted<S> {
    inner: S,
    account: Arc<Account>,
    changes: Arc<ChangedRecords>,
}

impl Counted<Arc<dyn Storage>> {
    /// The mount's storage, counted.
    pub fn new(
        inner: Arc<dyn Storage>,
        account: Arc<Account>,
        changes: Arc<ChangedRecords>,
    ) -> Self {
        Counted {
            inner,
            account,
            changes,
        }
    }
}

/// Times `call` (an index into [`STORAGE_CALLS`]) and counts it in `account`.
async fn timed<T>(account: &Account, call: usize, f: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = f.await;
    account.add_storage(call, started.elapsed());
    out
}

#[async_trait]
impl<S, K> Kv for Counted<S>
where
    S: std::ops::Deref<Target = K> + Send + Sync,
    K: Kv + ?Sized,
{
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        timed(&self.account, 0, self.inner.get(key)).await
    }
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        self.changes.note(key);
        timed(&self.account, 1, self.inner.put(key, value)).await
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.changes.note(key);
        timed(&self.account, 2, self.inner.delete(key)).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        timed(&self.account, 3, self.inner.list(prefix)).await
    }
}

#[async_trait]
impl Storage for Counted<Arc<dyn Storage>> {
    async fn begin(&self) -> Result<Option<Box<dyn Transaction>>, StorageError> {
        let tx = timed(&self.account, 4, self.inner.begin()).await?;
        Ok(tx.map(|inner| {
            Box::new(Counted {
                inner,
                account: self.account.clone(),
                changes: self.changes.clone(),
            }) as Box<dyn Transaction>
        }))
    }
}

#[async_trait]
impl Transaction for Counted<Box<dyn Transaction>> {
    async fn commit(self: Box<Self>) -> Result<(), StorageError> {
        let Counted { inner, account, .. } = *self;
        timed(&account, 5, inner.commit()).await
    }
    async fn rollback(self: Box<Self>) -> Result<(), StorageError> {
        let Counted { inner, account, .. } = *self;
        timed(&account, 6, inner.rollback()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::NodeStorage;

    #[tokio::test]
    async fn a_request_counts_its_laps_and_round_trips_and_background_work_apart() {
        let account = Arc::new(Account::default());
        let storage = Counted::new(
            Arc::new(NodeStorage::default()),
            account.clone(),
            Arc::default(),
        );
        account
            .measure(RequestKind::Issue, async {
                storage.put("a", b"1".to_vec()).await.unwrap();
                lap("intent");
                storage.get("a").await.unwrap();
                storage.delete("a").await.unwrap();
                lap("activation");
            })
            .await;
        storage.list("").await.unwrap();
        let view = Value::Object(account.view());
        let issue = &view["requests"]["issue"];
        assert_eq!(issue["count"], 1);
        for call in ["put", "get", "delete"] {
            assert_eq!(issue["storage"][call]["count"], 1, "{call}: {view}");
        }
        assert!(issue["storage"].get("list").is_none(), "{view}");
        assert!(issue["phases_us"]["intent"].is_u64(), "{view}");
        assert!(issue["phases_us"]["activation"].is_u64(), "{view}");
        assert_eq!(view["background"]["storage"]["list"]["count"], 1, "{view}");
        assert!(view["requests"].get("renew").is_none());
    }
}
