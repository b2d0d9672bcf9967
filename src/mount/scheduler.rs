//! The scheduler's state, shared by everything that issues, revokes or rotates on this mount:
//! the due entries within the horizon, the revocations asked for, the credentials being issued
//! now ([`Claim`]) and each connection's revocation lane. The loop that acts on it is in
//! `engine::sweep`, the revocations themselves in `jobs::revocation`.
//!
//! It keeps in memory only the index entries due within the next bucket (the "horizon"), loaded
//! bucket by bucket from the due index, so start-up work does not grow with the number of live
//! credentials.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{Notify, oneshot};

use crate::contract::error::Error;
use crate::contract::storage::Kv;
use crate::model::ledger::{self, BUCKET_SECS, Credential, bucket};

/// The longest wait between two revocation attempts of one credential.
pub const MAX_BACKOFF_SECS: u64 = 300;
const FIRST_BACKOFF_SECS: u64 = 5;

/// The wait before attempt `attempts + 1`: 5 s doubling per failure, never above
/// [`MAX_BACKOFF_SECS`], with up to 10 % taken off at random so that credentials that failed
/// together do not retry in lockstep forever.
pub fn backoff(attempts: u32) -> u64 {
    let base = FIRST_BACKOFF_SECS
        .saturating_mul(1u64 << attempts.saturating_sub(1).min(20))
        .min(MAX_BACKOFF_SECS);
    let jitter = rand::rng().random_range(0..=base / 10);
    (base - jitter).max(1)
}

/// How a revocation asked for through [`Scheduler::revoke_now`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Removed from the target now.
    Revoked,
    /// The target no longer had it (dropped by hand, or removed before a crash).
    AlreadyGone,
    /// The ledger already had it revoked, or has no such record: nothing was done.
    NotLive,
    /// The target refused or was unreachable; the ledger holds it and retries.
    Failing(String),
    /// The ledger could not record that the revocation began, so nothing was done on the
    /// target (this node may no longer lead the cluster, or storage failed).
    NotRecorded(String),
}

/// A credential to revoke in this pass, with the host calls waiting for it.
pub(crate) struct Work {
    pub cred: Credential,
    /// The record as read from the ledger, before this pass changed anything: the outcome is
    /// written only over it ([`ledger::store_if_unchanged`]).
    pub seen: Credential,
    pub reason: String,
    pub waiters: Vec<oneshot::Sender<Outcome>>,
}

pub(crate) struct Waiting {
    pub id: String,
    pub reason: String,
    pub lease_id: Option<String>,
    pub done: oneshot::Sender<Outcome>,
}

#[derive(Default)]
pub struct Scheduler {
    wake: Notify,
    /// (due, id) entries within the horizon.
    soon: Mutex<BTreeSet<(u64, String)>>,
    /// The last bucket loaded into `soon`; `None` before the first load.
    horizon: Mutex<Option<u64>>,
    requests: Mutex<Vec<Waiting>>,
    /// Credentials this process is issuing now ([`Claim`]), with the revocation that came for
    /// each meanwhile.
    issuing: Mutex<HashMap<String, Deferred>>,
    /// The connections whose lane is revoking now, each with the work queued for its next
    /// batches ([`Scheduler::enqueue`]).
    lanes: Mutex<HashMap<String, Vec<Work>>>,
}

/// A revocation held back until the issuance of its credential has finished.
#[derive(Default)]
struct Deferred {
    reason: Option<String>,
    waiters: Vec<oneshot::Sender<Outcome>>,
}

/// Held by an issuance from before its intent is written until its outcome is: the scheduler
/// does not revoke the credential meanwhile but notes the revocation, which the issuance
/// reads ([`Claim::revocation_asked`]) and which is handed back to the scheduler when the
/// claim is dropped, whatever the issuance's end.
///
/// Revoking earlier would find nothing on the target while the create is still on its way,
/// and the create would then leave a live principal recorded as revoked. Holding the
/// revocation in memory is enough because every revocation of a credential passes through
/// this process's scheduler: the host drains a mount's requests before it reloads the plugin
/// (its route lock), so two processes never serve one mount at once, and a process whose
/// server died can no longer write storage. It spares each issuance a storage transaction
/// (four round trips to the host) around its last write.
pub struct Claim<'a> {
    scheduler: &'a Scheduler,
    id: String,
}

impl Claim<'_> {
    /// Whether a revocation came for the credential while it was being issued.
    pub fn revocation_asked(&self) -> bool {
        let issuing = self.scheduler.issuing.lock().unwrap();
        issuing.get(&self.id).is_some_and(|d| d.reason.is_some())
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let deferred = self.scheduler.issuing.lock().unwrap().remove(&self.id);
        let Some(Deferred {
            reason: Some(reason),
            mut waiters,
        }) = deferred
        else {
            return;
        };
        if waiters.is_empty() {
            // Asked by the scheduler itself (the intent fell due): nobody waits for it.
            waiters.push(oneshot::channel().0);
        }
        let mut requests = self.scheduler.requests.lock().unwrap();
        for done in waiters {
            requests.push(Waiting {
                id: self.id.clone(),
                reason: reason.clone(),
                lease_id: None,
                done,
            });
        }
        drop(requests);
        self.scheduler.wake.notify_one();
    }
}

impl Scheduler {
    /// Tells the scheduler that `id` is now indexed at `due`.
    pub fn track(&self, due: u64, id: &str) {
        if self.keep(due, id) {
            self.wake.notify_one();
        }
    }

    /// Keeps (`due`, `id`) in memory if it falls within the horizon (beyond it, the bucket's
    /// load finds it); returns whether it did.
    fn keep(&self, due: u64, id: &str) -> bool {
        let within = self
            .horizon
            .lock()
            .unwrap()
            .is_some_and(|h| bucket(due) <= h);
        if within {
            self.soon.lock().unwrap().insert((due, id.to_owned()));
        }
        within
    }

    /// `id`, tracked at `from`, is now due at `to` instead (its issuance indexed it at its
    /// deadline and is removing the intent's entry). Issued at every issuance, so it wakes
    /// the loop only when `to` is earlier: the loop sleeps until `from` at the latest anyway.
    pub fn moved(&self, from: u64, to: u64, id: &str) {
        if from == to {
            return;
        }
        self.soon.lock().unwrap().remove(&(from, id.to_owned()));
        if to < from {
            self.track(to, id);
        } else {
            self.keep(to, id);
        }
    }

    /// Holds back revocations of `id` while it is being issued; see [`Claim`]. Taken before
    /// the credential's first record is written, so a revocation that can read the record
    /// also finds the claim, and one that finds no claim comes after the create.
    pub fn claim(&self, id: &str) -> Claim<'_> {
        let id = id.to_owned();
        self.issuing
            .lock()
            .unwrap()
            .insert(id.clone(), Deferred::default());
        Claim {
            scheduler: self,
            id,
        }
    }

    /// Takes out of `work` every credential being issued now, noting its revocation for the
    /// issuance to hand back.
    pub(crate) fn defer_issuing(&self, work: &mut BTreeMap<String, Work>) {
        let mut issuing = self.issuing.lock().unwrap();
        work.retain(|id, w| match issuing.get_mut(id) {
            Some(deferred) => {
                deferred.reason.get_or_insert_with(|| w.reason.clone());
                deferred.waiters.append(&mut w.waiters);
                false
            }
            None => true,
        });
    }

    /// Revokes `id` in the next batch and waits until that batch is recorded.
    pub async fn revoke_now(
        &self,
        id: &str,
        reason: String,
        lease_id: Option<String>,
    ) -> Result<Outcome, Error> {
        let (done, wait) = oneshot::channel();
        self.requests.lock().unwrap().push(Waiting {
            id: id.to_owned(),
            reason,
            lease_id,
            done,
        });
        self.wake.notify_one();
        wait.await
            .map_err(|_| Error::Internal("the scheduler stopped before revoking".into()))
    }

    /// Asks for `id`'s revocation without waiting for its outcome.
    pub fn revoke_soon(&self, id: &str, reason: String) {
        let (done, _) = oneshot::channel();
        self.requests.lock().unwrap().push(Waiting {
            id: id.to_owned(),
            reason,
            lease_id: None,
            done,
        });
        self.wake.notify_one();
    }

    /// The revocations asked for since the last pass.
    pub(crate) fn take_requests(&self) -> Vec<Waiting> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }

    /// Sleeps until the next entry in memory falls due or the next bucket must be loaded,
    /// whichever is first, or until something is asked of the scheduler.
    pub(crate) async fn sleep_until_next(&self, now: u64) {
        let next_bucket = (bucket(now) + 1) * BUCKET_SECS;
        let next = self
            .soon
            .lock()
            .unwrap()
            .first()
            .map_or(next_bucket, |(d, _)| (*d).min(next_bucket));
        let wait = Duration::from_secs(next.saturating_sub(now).clamp(1, BUCKET_SECS));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = self.wake.notified() => {}
        }
    }

    /// Loads the due index up to the bucket after `now`'s into memory. The horizon moves first,
    /// so an entry written while the bucket is being listed is tracked by its writer.
    pub(crate) async fn load_horizon(&self, kv: &dyn Kv, now: u64) -> Result<(), Error> {
        let target = bucket(now) + 1;
        let previous = {
            let mut h = self.horizon.lock().unwrap();
            let previous = *h;
            if previous.is_some_and(|p| p >= target) {
                return Ok(());
            }
            *h = Some(target);
            previous
        };
        let result = async {
            for b in ledger::due_buckets(kv).await? {
                if b > target || previous.is_some_and(|p| b <= p) {
                    continue;
                }
                let entries = ledger::bucket_entries(kv, b).await?;
                self.soon.lock().unwrap().extend(entries);
            }
            Ok::<(), Error>(())
        }
        .await;
        if result.is_err() {
            *self.horizon.lock().unwrap() = previous;
        }
        result
    }

    /// Looks at `id` again shortly, after its record could not be read or written. Such an
    /// entry has no stored twin; when it comes up, the record's own due time decides.
    pub fn look_again(&self, now: u64, id: String) {
        self.soon.lock().unwrap().insert((now + backoff(1), id));
    }

    /// `w`'s record changed before its revocation could begin: decided again on the record as
    /// it is now. A revocation someone asked for stands (it goes back to the requests, and
    /// its waiters with it); one the scheduler decided on its own leaves it to the record.
    pub(crate) fn decide_again(&self, now: u64, w: Work) {
        if w.waiters.is_empty() {
            self.look_again(now, w.cred.id);
            return;
        }
        let mut requests = self.requests.lock().unwrap();
        for done in w.waiters {
            requests.push(Waiting {
                id: w.cred.id.clone(),
                reason: w.reason.clone(),
                lease_id: w.cred.lease_id.clone(),
                done,
            });
        }
        drop(requests);
        self.wake.notify_one();
    }

    pub(crate) fn take_due(&self, now: u64) -> Vec<(u64, String)> {
        let mut soon = self.soon.lock().unwrap();
        let later = soon.split_off(&(now + 1, String::new()));
        std::mem::replace(&mut *soon, later).into_iter().collect()
    }

    /// Hands `work` to `connection`'s lane. Work that comes while the lane is busy waits in its
    /// queue and goes in the lane's next batches, joined to any work for the same credential
    /// already there; when the lane is idle, it is marked busy and the work comes back for the
    /// caller to start the lane with.
    pub(crate) fn enqueue(&self, connection: &str, work: Vec<Work>) -> Option<Vec<Work>> {
        let mut lanes = self.lanes.lock().unwrap();
        match lanes.get_mut(connection) {
            Some(queue) => {
                for w in work {
                    match queue.iter_mut().find(|q| q.cred.id == w.cred.id) {
                        Some(q) => q.waiters.extend(w.waiters),
                        None => queue.push(w),
                    }
                }
                None
            }
            None => {
                lanes.insert(connection.to_owned(), Vec::new());
                Some(work)
            }
        }
    }

    /// The work queued for `connection`'s lane while it was busy, or `None` when there is none
    /// (and the lane is idle again).
    pub(crate) fn next_in_lane(&self, connection: &str) -> Option<Vec<Work>> {
        let mut lanes = self.lanes.lock().unwrap();
        match lanes.get_mut(connection) {
            Some(queue) if !queue.is_empty() => Some(std::mem::take(queue)),
            _ => {
                lanes.remove(connection);
                None
            }
        }
    }
}
