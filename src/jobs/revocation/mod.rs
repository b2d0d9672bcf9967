//! Revocation: every credential revoked at its deadline on its own, whether or not the host
//! calls revoke; intents that never became active revoked; failures retried without end with
//! capped backoff; revoked records purged after their retention. Host revoke calls join the
//! same passes: each waits for the batch it joined to be revoked on the target and recorded in
//! the ledger (group commit). Each connection revokes on a lane of its own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use futures_util::future::join_all;

use crate::contract::error::Error;
use crate::contract::host::now;
use crate::model::ledger::{self, Credential, State};
use crate::mount::MountCore;
use crate::mount::scheduler::{Outcome, Waiting, Work};

mod on_target;
use on_target::{batch_key, remove_guards, revoke_batch};

/// The most principals revoked in one call to a target.
const MAX_BATCH: usize = 1000;

/// How long a caller (a host revoke, a task's end, an operator's bulk revocation) waits for a
/// revocation's outcome. A target that has not answered by then is still being asked, on its
/// own lane; the caller is answered with the revocation on record, as one that is failing.
pub const OUTCOME_WAIT: Duration = Duration::from_secs(20);

/// Revokes `id` in the scheduler's next batch and waits for its outcome, at most
/// [`OUTCOME_WAIT`]: past that, the revocation is made sure to be on record (due now) and
/// reported as failing; the ledger carries it on.
pub async fn revoke_within(
    core: &MountCore,
    id: &str,
    reason: &str,
    lease_id: Option<String>,
) -> Result<Outcome, Error> {
    let wait = core.scheduler.revoke_now(id, reason.to_owned(), lease_id);
    match tokio::time::timeout(OUTCOME_WAIT, wait).await {
        Ok(outcome) => outcome,
        Err(_) if revoke_again(core, now(), id, Some(reason)).await => {
            Ok(Outcome::Failing(format!(
                "the target has not answered within {}s; the revocation is on record and goes on",
                OUTCOME_WAIT.as_secs()
            )))
        }
        Err(_) => Ok(Outcome::NotRecorded(format!(
            "the target has not answered within {}s, and the ledger could not record the \
             revocation",
            OUTCOME_WAIT.as_secs()
        ))),
    }
}

/// Revokes every credential in `ids` in the scheduler's next batches (each connection on its
/// own lane) and waits for their outcomes, each at most [`OUTCOME_WAIT`]. Failures stay in the
/// ledger and are retried as any other.
pub async fn revoke_many(core: &MountCore, ids: Vec<String>, reason: &str) -> Report {
    let waits = ids.iter().map(|id| revoke_within(core, id, reason, None));
    let mut report = Report::default();
    for (id, outcome) in ids.iter().zip(join_all(waits).await) {
        match outcome {
            Ok(Outcome::Revoked) => report.revoked += 1,
            Ok(Outcome::AlreadyGone) => report.already_gone += 1,
            Ok(Outcome::NotLive) => {}
            Ok(Outcome::Failing(e) | Outcome::NotRecorded(e)) => {
                report.failed.push((id.clone(), e))
            }
            Err(e) => report.failed.push((id.clone(), e.to_string())),
        }
    }
    report
}

/// What a revocation of many credentials came to, for operators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub revoked: usize,
    pub already_gone: usize,
    /// (credential id, error) of each revocation that failed; the ledger keeps retrying them.
    pub failed: Vec<(String, String)>,
}

impl Report {
    pub fn view(&self) -> Map<String, Value> {
        let failures: Vec<Value> = self
            .failed
            .iter()
            .map(|(id, e)| serde_json::json!({"cred_id": id, "error": e}))
            .collect();
        let mut out = Map::new();
        out.insert("revoked".into(), Value::from(self.revoked));
        out.insert("already_gone".into(), Value::from(self.already_gone));
        out.insert("failed".into(), Value::from(self.failed.len()));
        out.insert("failures".into(), Value::Array(failures));
        out
    }

    pub fn summary(&self) -> String {
        format!(
            "revoked={} already_gone={} failed={}",
            self.revoked,
            self.already_gone,
            self.failed.len()
        )
    }
}

/// One pass over the credentials that fell due and the revocations asked for: each is marked
/// and handed to its connection's lane.
pub(crate) async fn process(
    core: &Arc<MountCore>,
    now: u64,
    due: Vec<(u64, String)>,
    requests: Vec<Waiting>,
) {
    let kv = core.storage.as_ref();
    let mut work: BTreeMap<String, Work> = BTreeMap::new();
    // Revoked credentials whose guard on the target is due to go.
    let mut guards: Vec<Credential> = Vec::new();

    // Many credentials often fall due together: read their records in parallel.
    let ids: Vec<String> = due.iter().map(|(_, id)| id.clone()).collect();
    let loaded = ledger::load_each(kv, &ids).await;
    // Records found by an entry before their own due time: (id, due time, entry's due time).
    let mut reindex: Vec<(String, u64, u64)> = Vec::new();
    // Active records an earlier mayfly left at their intent's due time: (as read, moved, due).
    let mut legacy: Vec<(Credential, Credential, Option<u64>)> = Vec::new();
    for ((entry_due, id), record) in due.into_iter().zip(loaded) {
        let cred = match record {
            Ok(Some(c)) => c,
            Ok(None) => {
                let _ = ledger::remove_due(kv, entry_due, &id).await;
                continue;
            }
            Err(e) if e.is_unreadable() => {
                // Left as it is, index entry and all, for a mayfly that can read it; listed
                // under revocations/. Looked at again when this process next loads the index.
                tracing::warn!(cred_id = %id, error = %e,
                    "a ledger record this mayfly cannot read is due; it is left for one that can");
                continue;
            }
            Err(e) => {
                tracing::warn!(cred_id = %id, error = %e, "could not read a ledger record; retrying");
                core.scheduler.look_again(now, id);
                continue;
            }
        };
        if cred.due != entry_due {
            // An issued credential found at its intent's entry (its removal was lost to a
            // crash, or an earlier mayfly left it), one renewed or rescheduled since this
            // entry was written, or an in-memory retry after a storage failure (which has no
            // stored entry): the record's own due time decides.
            if cred.due > now {
                reindex.push((id, cred.due, entry_due));
                continue;
            }
            let _ = ledger::remove_due(kv, entry_due, &id).await;
        }
        if cred.due > now || work.contains_key(&id) {
            continue;
        }
        if cred.state == State::Active && cred.deadline > now {
            // Activated by a mayfly that kept an active record's due time at its intent's:
            // from now on it waits for its deadline.
            let mut moved = cred.clone();
            moved.due = moved.deadline;
            legacy.push((cred, moved, Some(entry_due)));
            continue;
        }
        let reason = match cred.state {
            State::Revoked if cred.guard_until.is_some() => {
                guards.push(cred);
                continue;
            }
            State::Revoked => {
                if let Err(e) = ledger::remove(kv, &cred).await {
                    tracing::warn!(cred_id = %id, error = %e, "could not purge a revoked record");
                }
                continue;
            }
            State::Intent => ledger::NEVER_COMPLETED.to_owned(),
            State::Active => "deadline reached".to_owned(),
            State::Revoking => cred
                .revoke_reason
                .clone()
                .unwrap_or_else(|| "retry".to_owned()),
        };
        work.insert(
            id,
            Work {
                seen: cred.clone(),
                cred,
                reason,
                waiters: Vec::new(),
            },
        );
    }

    // Many at once (a sustained issuance brings one per issuance), and before the requests
    // below read any of these records.
    let reindexed = ledger::reindex_all(kv, &reindex).await;
    for ((id, due, _), result) in reindex.iter().zip(reindexed) {
        match result {
            Ok(()) => core.scheduler.track(*due, id),
            Err(e) => {
                tracing::warn!(cred_id = %id, error = %e, "could not index a ledger record; retrying");
                core.scheduler.look_again(now, id.clone());
            }
        }
    }
    // Each only over the record as read: a renewal made meanwhile stands.
    let moved = ledger::store_all_if_unchanged(core.storage.as_ref(), &legacy).await;
    for ((_, cred, _), result) in legacy.iter().zip(moved) {
        match result {
            Ok(ledger::Swap::Stored) => core.scheduler.track(cred.due, &cred.id),
            // Changed meanwhile: the record as it is now decides.
            Ok(ledger::Swap::Changed) => core.scheduler.look_again(now, cred.id.clone()),
            Err(e) => {
                tracing::warn!(cred_id = %cred.id, error = %e, "could not write a ledger record; retrying");
                core.scheduler.look_again(now, cred.id.clone());
            }
        }
    }

    for req in requests {
        if let Some(w) = work.get_mut(&req.id) {
            w.waiters.push(req.done);
            if req.lease_id.is_some() {
                w.cred.lease_id = req.lease_id;
            }
            continue;
        }
        match ledger::load(kv, &req.id).await {
            Ok(Some(mut cred)) if cred.state != State::Revoked => {
                let seen = cred.clone();
                if req.lease_id.is_some() {
                    cred.lease_id = req.lease_id;
                }
                work.insert(
                    req.id,
                    Work {
                        seen,
                        cred,
                        reason: req.reason,
                        waiters: vec![req.done],
                    },
                );
            }
            // Already revoked, or never recorded (purged long ago): nothing left to do.
            Ok(_) => {
                let _ = req.done.send(Outcome::NotLive);
            }
            Err(e) => {
                let _ = req.done.send(Outcome::Failing(format!(
                    "could not read the ledger record: {e}"
                )));
            }
        }
    }

    // After every record was read: a record that exists has its claim, if any, by now.
    core.scheduler.defer_issuing(&mut work);

    // Each connection's revocations go down its own lane: a slow, black-holed or down target
    // holds back only its own credentials, and this loop never waits on a target.
    let mut by_connection: BTreeMap<String, Vec<Work>> = BTreeMap::new();
    for (_, w) in work {
        by_connection
            .entry(w.cred.connection.clone())
            .or_default()
            .push(w);
    }
    for (connection, work) in by_connection {
        enqueue(core, connection, work);
    }
    if !guards.is_empty() {
        let owned = core.clone();
        core.node
            .spawn(async move { remove_guards(&owned, now, guards).await });
    }
}

/// Hands `work` to `connection`'s lane, starting the lane if it is idle.
fn enqueue(core: &Arc<MountCore>, connection: String, work: Vec<Work>) {
    if let Some(work) = core.scheduler.enqueue(&connection, work) {
        core.node.spawn(run_lane(core.clone(), connection, work));
    }
}

/// Revokes `work` on `connection`, then whatever was queued for it meanwhile, until its queue
/// is empty: one batch at a time per connection and set of revocation settings.
async fn run_lane(core: Arc<MountCore>, connection: String, mut work: Vec<Work>) {
    loop {
        let mut groups: BTreeMap<String, Vec<Work>> = BTreeMap::new();
        for w in work {
            groups.entry(batch_key(&w.cred)).or_default().push(w);
        }
        for (_, mut group) in groups {
            while !group.is_empty() {
                let rest = group.split_off(group.len().min(MAX_BATCH));
                let batch = std::mem::replace(&mut group, rest);
                revoke_batch(&core, now(), &connection, batch).await;
            }
        }
        work = match core.scheduler.next_in_lane(&connection) {
            Some(queued) => queued,
            None => return,
        };
    }
}

/// Marks each credential of `items` (id, reason) for revocation now, many at once, and hands
/// them to the scheduler's next pass; returns, for each, whether the ledger holds its
/// revocation. The mark is durable, so a revocation asked this way survives a crash.
pub async fn mark_all(core: &MountCore, now: u64, items: &[(String, String)]) -> Vec<bool> {
    const PARALLEL: usize = 16;
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(PARALLEL) {
        let marks = chunk
            .iter()
            .map(|(id, reason)| revoke_again(core, now, id, Some(reason)));
        out.extend(join_all(marks).await);
    }
    out
}

/// Marks the current record of `id` for revocation now, unless it is already revoked, and
/// hands it to the next pass; returns whether the ledger holds the revocation. A record that
/// keeps changing under it, or cannot be read or written, is looked at again.
async fn revoke_again(core: &MountCore, now: u64, id: &str, reason: Option<&str>) -> bool {
    let storage = core.storage.as_ref();
    for _ in 0..3 {
        let seen = match ledger::load(storage, id).await {
            Ok(Some(c)) if c.state != State::Revoked => c,
            Ok(_) => return true,
            Err(e) => {
                tracing::warn!(cred_id = %id, error = %e, "could not read a ledger record; retrying");
                break;
            }
        };
        let mut cred = seen.clone();
        cred.state = State::Revoking;
        cred.revoke_requested_at.get_or_insert(now);
        if cred.revoke_reason.is_none() {
            cred.revoke_reason = reason.map(str::to_owned);
        }
        // Already marked (its revocation began, or an earlier call marked it): nothing to
        // write, and its index entry already brings it round.
        if seen.state == State::Revoking && seen.due <= now {
            return true;
        }
        cred.due = now;
        match ledger::store_if_unchanged(storage, &seen, &cred, Some(seen.due)).await {
            Ok(ledger::Swap::Stored) => {
                core.scheduler.track(cred.due, id);
                return true;
            }
            Ok(ledger::Swap::Changed) => continue,
            Err(e) => {
                tracing::warn!(cred_id = %id, error = %e, "could not mark a record for revocation");
                break;
            }
        }
    }
    core.scheduler.look_again(now, id.to_owned());
    false
}
