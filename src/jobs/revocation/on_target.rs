//! What a revocation does on the target: one batch of a connection's credentials revoked in
//! one call, its outcome recorded in the ledger; and the removal of a revoked credential's
//! guard once its retention is over.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::contract::backend::{Principal, TARGET_TIMEOUT, within};
use crate::contract::error::Error;
use crate::model::audit::{self, Action, Event};
use crate::model::ledger::{self, Credential, RETENTION_SECS, State};
use crate::mount::MountCore;
use crate::mount::scheduler::{Outcome, Work, backoff};

use super::revoke_again;

/// Credentials of one connection revoked in one call: the same revocation settings.
pub(super) fn batch_key(c: &Credential) -> String {
    Value::Object(c.settings.clone()).to_string()
}

/// `call` to a target, failed as unavailable if it takes longer than [`TARGET_TIMEOUT`].
async fn bounded<T>(call: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    within(TARGET_TIMEOUT, "answer", call).await
}

/// Removes the guards that revocations left on targets (see [`crate::Revoked::guarded`]), now
/// that the principals they stopped have ended, one call per connection and settings. A
/// failure is retried with backoff; the record stays until its guard is gone.
pub(super) async fn remove_guards(core: &MountCore, now: u64, guards: Vec<Credential>) {
    // As a revocation does ([`begin_attempts`]): the attempt is on record before the target
    // is touched, and only where that write succeeded.
    let items: Vec<(Credential, Credential, Option<u64>)> = guards
        .into_iter()
        .map(|seen| {
            let mut begun = seen.clone();
            begun.last_attempt_at = Some(now);
            let due = seen.due;
            (seen, begun, Some(due))
        })
        .collect();
    let written = ledger::store_all_if_unchanged(core.storage.as_ref(), &items).await;
    let mut groups: BTreeMap<(String, String), Vec<Credential>> = BTreeMap::new();
    for ((_, begun, _), result) in items.into_iter().zip(written) {
        match result {
            Ok(ledger::Swap::Stored) => groups
                .entry((begun.connection.clone(), batch_key(&begun)))
                .or_default()
                .push(begun),
            Ok(ledger::Swap::Changed) => core.scheduler.look_again(now, begun.id),
            Err(e) => {
                tracing::warn!(cred_id = %begun.id, error = %e,
                    "could not record that a revocation guard is being removed; left as it is");
                core.scheduler.look_again(now, begun.id);
            }
        }
    }
    for ((connection, _), group) in groups {
        let names: Vec<String> = group.iter().map(|c| c.principal.clone()).collect();
        let result = match core.target(&connection).await {
            Ok(target) => bounded(target.clean_up(&names, &group[0].settings)).await,
            Err(e) => Err(e),
        };
        let mut updates = Vec::with_capacity(group.len());
        for mut cred in group {
            let previous_due = cred.due;
            match &result {
                Ok(()) => {
                    cred.guard_until = None;
                    cred.last_error = None;
                    cred.due = cred.revoked_at.unwrap_or(now) + RETENTION_SECS;
                    audit::emit(
                        Action::Revoke,
                        "guard_removed",
                        &Event::for_credential(&cred)
                            .detail("the session has expired; its deny statement is removed"),
                    );
                }
                Err(e) => {
                    cred.attempts += 1;
                    cred.last_error = Some(format!("removing the revocation guard: {e}"));
                    cred.due = now + backoff(cred.attempts);
                    tracing::warn!(connection, cred_id = %cred.id, error = %e,
                        "could not remove a revocation guard; retrying");
                }
            }
            updates.push((cred, Some(previous_due)));
        }
        store_and_track(core, now, &updates).await;
    }
}

/// Stores many records at once ([`ledger::store_all`]) and tracks each at its new due time;
/// one that could not be written is looked at again shortly.
async fn store_and_track(core: &MountCore, now: u64, items: &[(Credential, Option<u64>)]) {
    let stored = ledger::store_all(core.storage.as_ref(), items).await;
    for ((cred, _), result) in items.iter().zip(stored) {
        match result {
            Ok(()) => core.scheduler.track(cred.due, &cred.id),
            Err(e) => {
                tracing::warn!(cred_id = %cred.id, error = %e, "could not write a ledger record; retrying");
                core.scheduler.look_again(now, cred.id.clone());
            }
        }
    }
}

/// What a batch's calls to its target reported besides success.
#[derive(Default)]
struct Done {
    guarded: BTreeMap<String, u64>,
    degraded: BTreeMap<String, String>,
    caveats: BTreeMap<String, String>,
    /// Credential id → why the target stopped it with the batch's
    /// ([`crate::contract::backend::Revoked::collateral`]).
    collateral: BTreeMap<String, String>,
    /// Credential id → which statements revoked it, where not those recorded at issuance.
    revoked_with: BTreeMap<String, &'static str>,
}

/// Revokes `principals` on `target` with `settings`: in one call, or, if that fails for a
/// reason other than the target being unavailable, one by one, so that one bad principal does
/// not hold the others back (against an unavailable target each would only wait out its own
/// timeout). Per principal: `Ok(true)` when it was already gone.
async fn revoke_on(
    target: &Arc<dyn crate::contract::backend::Target>,
    connection: &str,
    principals: &[Principal],
    settings: &Map<String, Value>,
    done: &mut Done,
) -> Vec<Result<bool, String>> {
    let mut note = |r: crate::contract::backend::Revoked| {
        done.guarded.extend(r.guarded);
        done.degraded.extend(r.degraded);
        done.caveats.extend(r.caveats);
        done.collateral.extend(r.collateral);
        r.already_gone
    };
    match bounded(target.revoke(principals, settings)).await {
        Ok(r) => {
            let gone: HashSet<String> = note(r).into_iter().collect();
            principals
                .iter()
                .map(|p| Ok(gone.contains(&p.name)))
                .collect()
        }
        Err(e) if principals.len() > 1 && !matches!(e, Error::Unavailable(_)) => {
            tracing::warn!(connection, batch = principals.len(), error = %e,
                "batch revocation failed; revoking one by one");
            let mut out = Vec::with_capacity(principals.len());
            for p in principals {
                let r = bounded(target.revoke(std::slice::from_ref(p), settings)).await;
                out.push(
                    r.map(|r| note(r).contains(&p.name))
                        .map_err(|e| e.to_string()),
                );
            }
            out
        }
        Err(e) => vec![Err(e.to_string()); principals.len()],
    }
}

/// The settings to try when `cred`'s revocation fails with those recorded at issuance: its
/// role's as they are now, when the role still issues on the same connection and was changed
/// since; for a role that no longer exists, the recorded ones without their
/// `revocation_statements` (the kind's default revocation). With what it is, for the record.
async fn other_settings(
    core: &MountCore,
    cred: &Credential,
) -> Option<(Map<String, Value>, &'static str)> {
    match core.role(&cred.role).await {
        Ok(Some(role)) if role.db_name == cred.connection && role.settings != cred.settings => {
            Some((
                role.settings,
                "the role's statements as changed after issuance",
            ))
        }
        Ok(None) if cred.settings.contains_key("revocation_statements") => {
            let mut settings = cred.settings.clone();
            settings.remove("revocation_statements");
            Some((settings, "the kind's default (the role was deleted)"))
        }
        _ => None,
    }
}

/// Records in the ledger that the revocation of each credential of `batch` begins (its state
/// `revoking`, the attempt counted) and returns those whose record was written: only they go
/// on to the target. A write that succeeds proves this node still leads the cluster (a node
/// deposed without stepping down still reads itself as active, but its writes fail), and each
/// is written only over the record it was decided on, so a renewal the leading node made
/// meanwhile is never undone by a revocation decided on a stale copy. A record that changed is
/// decided again as it is now; one that could not be written is left alone.
async fn begin_attempts(core: &MountCore, now: u64, batch: Vec<Work>) -> Vec<Work> {
    let items: Vec<(Credential, Credential, Option<u64>)> = batch
        .iter()
        .map(|w| {
            let mut begun = w.cred.clone();
            begun.state = State::Revoking;
            begun.attempts += 1;
            begun.last_attempt_at = Some(now);
            begun.revoke_requested_at.get_or_insert(now);
            begun.revoke_reason.get_or_insert_with(|| w.reason.clone());
            // The index entry stays where it is (due now): were this process to stop before
            // the outcome is written, the next one takes the revocation up at once.
            (w.seen.clone(), begun, Some(w.seen.due))
        })
        .collect();
    let written = ledger::store_all_if_unchanged(core.storage.as_ref(), &items).await;
    let mut go = Vec::with_capacity(batch.len());
    let mut unwritten: Option<(usize, String)> = None;
    for ((w, (_, begun, _)), result) in batch.into_iter().zip(items).zip(written) {
        match result {
            Ok(ledger::Swap::Stored) => go.push(Work {
                seen: begun.clone(),
                cred: begun,
                ..w
            }),
            Ok(ledger::Swap::Changed) => core.scheduler.decide_again(now, w),
            Err(e) => {
                let msg = format!(
                    "could not record in the ledger that the revocation begins, so nothing was \
                     done on the target: {e}"
                );
                if w.waiters.is_empty() {
                    core.scheduler.look_again(now, w.cred.id.clone());
                }
                for done in w.waiters {
                    let _ = done.send(Outcome::NotRecorded(msg.clone()));
                }
                unwritten.get_or_insert((0, e.to_string())).0 += 1;
            }
        }
    }
    if let Some((count, e)) = unwritten {
        tracing::warn!(count, error = %e,
            "could not record that revocations begin; none of them was made");
    }
    go
}

pub(super) async fn revoke_batch(core: &MountCore, now: u64, connection: &str, batch: Vec<Work>) {
    let batch = begin_attempts(core, now, batch).await;
    if batch.is_empty() {
        return;
    }
    // A principal mayfly cannot show it made (an intent of an earlier version whose name may
    // be someone's account) is never dropped: its record ends without a call to the target.
    let (batch, left): (Vec<Work>, Vec<Work>) = batch.into_iter().partition(|w| w.cred.ours());
    let left_alone: HashSet<String> = left.iter().map(|w| w.cred.id.clone()).collect();
    let mut done = Done::default();
    // Per principal: Ok(true) when it was already gone.
    let mut results: Vec<Result<bool, String>> = Vec::new();
    if let Some(first) = batch.first() {
        let principals: Vec<Principal> = batch.iter().map(|w| w.cred.as_principal()).collect();
        results = match core.target(connection).await {
            Err(e) => vec![Err(e.to_string()); batch.len()],
            Ok(target) => {
                let settings = &first.cred.settings;
                let mut results =
                    revoke_on(&target, connection, &principals, settings, &mut done).await;
                // Revocations that failed with the statements recorded at issuance try the
                // role's as they are now (fixed since), or, for a deleted role, the kind's
                // default: one call per role.
                let failed: Vec<usize> =
                    (0..batch.len()).filter(|i| results[*i].is_err()).collect();
                let mut by_role: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
                for i in failed {
                    by_role
                        .entry(batch[i].cred.role.as_str())
                        .or_default()
                        .push(i);
                }
                for (role, indices) in by_role {
                    let Some((other, how)) = other_settings(core, &batch[indices[0]].cred).await
                    else {
                        continue;
                    };
                    let retry: Vec<Principal> =
                        indices.iter().map(|i| principals[*i].clone()).collect();
                    let again = revoke_on(&target, connection, &retry, &other, &mut done).await;
                    for (i, r) in indices.into_iter().zip(again) {
                        if r.is_ok() {
                            tracing::info!(
                                connection,
                                role,
                                how,
                                "a failing revocation worked with other statements"
                            );
                            done.revoked_with.insert(batch[i].cred.id.clone(), how);
                        }
                        results[i] = r;
                    }
                }
                results
            }
        };
    }
    let Done {
        guarded,
        degraded,
        caveats,
        collateral,
        revoked_with,
    } = done;
    for (id, why) in collateral {
        // Its principal no longer works: the ledger must not go on calling it live.
        tracing::warn!(cred_id = %id, reason = %why, "a live credential was stopped with revoked ones; revoking it");
        core.scheduler
            .revoke_soon(&id, format!("stopped with other revoked sessions: {why}"));
    }

    let results = results
        .into_iter()
        .chain(std::iter::repeat_n(Ok(true), left.len()));
    let mut updates = Vec::with_capacity(batch.len() + left.len());
    let mut replies = Vec::with_capacity(batch.len() + left.len());
    for (w, result) in batch.into_iter().chain(left).zip(results) {
        // The attempt was counted when it began ([`begin_attempts`]).
        let mut cred = w.cred;
        let previous_due = cred.due;
        let outcome = match result {
            Ok(already_gone) => {
                cred.state = State::Revoked;
                cred.revoked_at = Some(now);
                cred.due = now + RETENTION_SECS;
                if let Some(until) = guarded.get(&cred.principal) {
                    cred.guard_until = Some(*until);
                    cred.due = (*until).max(now);
                }
                if let Some(why) = degraded.get(&cred.principal) {
                    cred.last_error = Some(format!("revocation degraded to expiry: {why}"));
                }
                if left_alone.contains(&cred.id) {
                    cred.last_error = Some(ledger::NOT_OURS.to_owned());
                }
                if let Some(what) = caveats.get(&cred.principal) {
                    cred.last_error = Some(format!("revoked, but {what}"));
                }
                if let Some(how) = revoked_with.get(&cred.id) {
                    cred.revoked_with = Some((*how).to_owned());
                }
                if already_gone {
                    Outcome::AlreadyGone
                } else {
                    Outcome::Revoked
                }
            }
            Err(msg) => {
                cred.state = State::Revoking;
                cred.due = now + backoff(cred.attempts);
                cred.last_error = Some(msg.clone());
                Outcome::Failing(msg)
            }
        };
        let (label, detail) = match &outcome {
            Outcome::Failing(msg) => (
                "retrying",
                format!(
                    "{}; attempt {} failed: {msg}; next in {}s",
                    w.reason,
                    cred.attempts,
                    cred.due - now
                ),
            ),
            Outcome::AlreadyGone if left_alone.contains(&cred.id) => (
                "left_on_target",
                format!("{}; {}", w.reason, ledger::NOT_OURS),
            ),
            Outcome::AlreadyGone => ("already_gone", w.reason.clone()),
            _ => match degraded.get(&cred.principal) {
                Some(why) => (
                    "degraded",
                    format!("{}; it lives until its own expiry: {why}", w.reason),
                ),
                None if cred.guard_until.is_some() => (
                    "revoked",
                    format!("{}; denied until its own expiry", w.reason),
                ),
                None if caveats.contains_key(&cred.principal) => (
                    "revoked",
                    format!("{}; but {}", w.reason, caveats[&cred.principal]),
                ),
                None => ("revoked", w.reason.clone()),
            },
        };
        audit::emit(
            Action::Revoke,
            label,
            &Event::for_credential(&cred).detail(&detail),
        );
        replies.push((w.waiters, outcome));
        updates.push((w.seen, cred, Some(previous_due)));
    }
    // Each only over the record it was decided on.
    let stored = ledger::store_all_if_unchanged(core.storage.as_ref(), &updates).await;
    for ((_, cred, _), result) in updates.iter().zip(stored) {
        match result {
            Ok(ledger::Swap::Stored) => core.scheduler.track(cred.due, &cred.id),
            Ok(ledger::Swap::Changed) => {
                // Written meanwhile (by a renewal, say): the
                // revocation stands, so it is recorded again on the record as it is now, and
                // tried again at once.
                tracing::info!(cred_id = %cred.id,
                    "the record changed while it was being revoked; revoking it again");
                revoke_again(core, now, &cred.id, cred.revoke_reason.as_deref()).await;
            }
            Err(e) => {
                // The old index entry still points at the record: it comes round again.
                tracing::error!(cred_id = %cred.id, error = %e,
                    "could not record a revocation outcome in the ledger");
                core.scheduler.look_again(now, cred.id.clone());
            }
        }
    }
    for (waiters, outcome) in replies {
        for w in waiters {
            let _ = w.send(outcome.clone());
        }
    }
}
