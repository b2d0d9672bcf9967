//! The passwords of static roles and their rotation: `static-creds/NAME`, `rotate-role/NAME`,
//! and the scheduler's regular rotations, retries and dual-account retirements.
//!
//! A rotation is write-ahead, like issuance and rotate-root: the fresh password is stored as
//! pending before the target is asked to change, and is adopted once the target has it. When
//! the target's answer is lost (an error after the change, a crash), mayfly asks the target
//! which password logs in before it forgets either, so static-creds never hands out a password
//! that stopped working. A failed rotation is retried with backoff a bounded number of times;
//! the last working password stays current throughout, and the error shows on the role.
//!
//! Kinds whose target makes the secret (IAM access keys) rotate by keys instead: a new key is
//! created and stored, and the previous one is deleted after `grace_period` (AWS allows two
//! keys per user, which is the overlap). The secret exists only once the target made it, so the
//! write-ahead record is the time the key was asked for: a key created after it that mayfly
//! never stored is deleted when the rotation is settled.

use std::sync::Arc;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::contract::backend::{TARGET_TIMEOUT, Target, within};
use crate::contract::error::Error;
use crate::contract::host::now;
use crate::contract::storage;
use crate::model::audit::{self, Action, Event};
use crate::model::ledger::{self, STATIC_ENTRY};
use crate::model::static_role::{self, Rotation, StaticRole};
use crate::mount::MountCore;
use crate::mount::scheduler::backoff;

pub const PREFIX: &str = "static-state/";

/// How long after a crash midway through a rotation the scheduler settles it.
pub(crate) const SETTLE_AFTER_SECS: u64 = 30;
/// The wait before retrying to retire a dual-account role's previous account.
const RETIRE_RETRY_SECS: u64 = 30;

/// Where a static role's rotation stands. Stored apart from the role (whose writes it must not
/// race), under a prefix the host seal-wraps; `Debug` shows no password.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// The account applications use now; empty until the role has a password.
    pub(crate) active: String,
    #[serde(default, with = "secret_opt")]
    pub(crate) password: Option<SecretString>,
    pub(crate) last_rotation: Option<u64>,
    /// The next regular rotation; `None` for manual rotation.
    pub(crate) next_rotation: Option<u64>,
    /// The next attempt of a failing rotation.
    pub(crate) retry_at: Option<u64>,
    /// Failed attempts of the current rotation.
    pub(crate) attempts: u32,
    pub(crate) last_error: Option<String>,
    pub(crate) failing_since: Option<u64>,
    pub(crate) pending: Option<Pending>,
    pub(crate) previous: Option<Previous>,
    /// Where this role's due-index entry is.
    pub(crate) due: Option<u64>,
    /// Key mode: the id of the current key (whose secret is `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key_id: Option<String>,
    /// Key mode: when a new key was asked for and not yet stored. A key the target made then
    /// (its secret lost with the process) is unusable, and the next rotation deletes it
    /// before it needs the slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key_asked_at: Option<u64>,
}

/// A password being set on `account`, stored before the target is asked.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Pending {
    pub(crate) account: String,
    #[serde(with = "secret")]
    pub(crate) password: SecretString,
    pub(crate) since: u64,
}

/// Dual-account mode: the account that was current before, which keeps its password until
/// `until`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Previous {
    pub(crate) account: String,
    pub(crate) until: u64,
    /// Key mode: the key deleted at `until`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key_id: Option<String>,
}

impl State {
    /// When the scheduler must look at the role next.
    fn next_due(&self) -> Option<u64> {
        [
            self.retry_at.or(self.next_rotation),
            self.previous.as_ref().map(|p| p.until),
            self.pending.as_ref().map(|p| p.since + SETTLE_AFTER_SECS),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// When the password may change next: the next attempt or regular rotation.
    pub(crate) fn changes_at(&self) -> Option<u64> {
        self.retry_at.or(self.next_rotation)
    }

    /// The role's progress for `static-roles/NAME` reads: never a password.
    pub(crate) fn view(&self, out: &mut Map<String, Value>) {
        out.insert("current_username".into(), json!(self.active));
        out.insert("last_rotation".into(), json!(self.last_rotation));
        out.insert(
            "last_vault_rotation".into(),
            json!(self.last_rotation.map(crate::contract::host::rfc3339)),
        );
        out.insert("next_rotation".into(), json!(self.next_rotation));
        out.insert("next_attempt".into(), json!(self.retry_at));
        out.insert("rotation_attempts".into(), json!(self.attempts));
        out.insert("last_error".into(), json!(self.last_error));
        out.insert("failing_since".into(), json!(self.failing_since));
        out.insert(
            "previous_username".into(),
            json!(self.previous.as_ref().map(|p| &p.account)),
        );
        out.insert(
            "previous_valid_until".into(),
            json!(self.previous.as_ref().map(|p| p.until)),
        );
        if self.key_id.is_some() {
            out.insert("current_access_key".into(), json!(self.key_id));
            out.insert(
                "previous_access_key".into(),
                json!(self.previous.as_ref().and_then(|p| p.key_id.as_ref())),
            );
        }
    }
}

/// Serde for a stored secret: the storage form is the plain string (the host encrypts the
/// mount's storage and seal-wraps this prefix); in memory it stays a `SecretString`.
mod secret {
    use secrecy::{ExposeSecret, SecretString};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &SecretString, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.expose_secret())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
        String::deserialize(d).map(SecretString::from)
    }
}

mod secret_opt {
    use secrecy::{ExposeSecret, SecretString};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(v.expose_secret()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
        Option::<String>::deserialize(d).map(|o| o.map(SecretString::from))
    }
}

pub(crate) fn state_key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

pub(crate) fn entry(name: &str) -> String {
    format!("{STATIC_ENTRY}{name}")
}

pub(crate) async fn load_state(core: &MountCore, name: &str) -> Result<State, Error> {
    let stored = storage::get_json(core.storage.as_ref(), &state_key(name)).await?;
    Ok(stored.unwrap_or_default())
}

/// Stores `state` and moves the role's due-index entry to its next due time.
pub(crate) async fn save(core: &MountCore, name: &str, state: &mut State) -> Result<(), Error> {
    let kv = core.storage.as_ref();
    let previous = state.due;
    state.due = state.next_due();
    let key = state_key(name);
    let put = storage::put_json(kv, &key, &*state);
    match state.due {
        Some(due) => {
            ledger::store_indexed(kv, &entry(name), due, previous, put).await?;
            core.scheduler.track(due, &entry(name));
        }
        None => {
            put.await?;
            if let Some(old) = previous {
                ledger::remove_due(kv, old, &entry(name)).await?;
            }
        }
    }
    Ok(())
}

/// What started a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// The role was created: the account's old password is replaced at once.
    Import,
    /// The regular rotation came due.
    Schedule,
    /// A failed attempt is retried.
    Retry,
    /// An operator wrote `rotate-role/NAME`.
    Manual,
}

impl Trigger {
    fn name(self) -> &'static str {
        match self {
            Trigger::Import => "import",
            Trigger::Schedule => "schedule",
            Trigger::Retry => "retry",
            Trigger::Manual => "manual",
        }
    }
}

/// The account the next rotation changes: in dual-account mode the one not in use.
fn next_account(role: &StaticRole, state: &State) -> String {
    if role.is_dual() && state.password.is_some() && state.active == role.username {
        role.dual_account_username.clone()
    } else {
        role.username.clone()
    }
}

/// Makes `password` of `account` the current one.
fn adopt(role: &StaticRole, state: &mut State, account: String, password: SecretString) {
    let now = now();
    let outgoing = if state.active.is_empty() {
        // Taking over in dual-account mode: the other account's old password is retired
        // after the grace period like any previous one.
        role.is_dual().then(|| role.dual_account_username.clone())
    } else {
        Some(state.active.clone()).filter(|a| *a != account)
    };
    state.previous = outgoing
        .filter(|_| role.grace_period > 0)
        .map(|account| Previous {
            account,
            until: now + role.grace_period,
            key_id: None,
        });
    state.active = account;
    state.password = Some(password);
    state.pending = None;
    state.last_rotation = Some(now);
    state.next_rotation = role.rotation.next_after(now);
    state.retry_at = None;
    state.attempts = 0;
    state.last_error = None;
    state.failing_since = None;
}

/// Settles a rotation that stopped midway: the pending password is adopted if the target
/// takes it, else dropped. Returns whether it was adopted. An error means the target could not
/// be asked; the pending password then stays stored.
async fn settle(role: &StaticRole, state: &mut State, target: &dyn Target) -> Result<bool, Error> {
    let Some(p) = &state.pending else {
        return Ok(false);
    };
    let took = within(
        TARGET_TIMEOUT,
        "check a login",
        target.check_login(&p.account, &p.password),
    )
    .await?;
    let p = state.pending.take().expect("checked above");
    if took {
        tracing::info!(account = %p.account, "a rotation stopped midway had changed the password; adopted");
        adopt(role, state, p.account, p.password);
    }
    Ok(took)
}

/// One attempt at giving the role a fresh password.
async fn attempt(
    core: &MountCore,
    name: &str,
    role: &StaticRole,
    state: &mut State,
) -> Result<(), Error> {
    let target = core.target(&role.db_name).await?;
    if key_mode(core, role).await? {
        return attempt_key(core, name, role, state, target.as_ref()).await;
    }
    if settle(role, state, target.as_ref()).await? {
        return Ok(());
    }
    let account = next_account(role, state);
    let password = core.new_password(&role.password_policy).await?;
    state.pending = Some(Pending {
        account: account.clone(),
        password: password.clone(),
        since: now(),
    });
    save(core, name, state).await?;
    core.crash_point("static_pending");

    let set = within(
        TARGET_TIMEOUT,
        "set the password",
        target.set_password(&account, &password, &role.rotation_statements),
    )
    .await;
    core.crash_point("static_changed");
    let took = match &set {
        Ok(()) => true,
        // The change may have happened before the failure (a lost reply, or a later
        // statement failing after the password statement ran): ask the target.
        Err(e) => match within(
            TARGET_TIMEOUT,
            "check a login",
            target.check_login(&account, &password),
        )
        .await
        {
            Ok(took) => took,
            // Cannot tell: the pending password stays and is settled later.
            Err(_) => return Err(e.clone()),
        },
    };
    if !took {
        state.pending = None;
        return Err(set.expect_err("failed"));
    }
    if let Err(e) = &set {
        tracing::warn!(static_role = name, account = %account, error = %e,
            "rotation statements failed after the password changed; the new password is in use");
    }
    adopt(role, state, account, password);
    Ok(())
}

/// A rotation: one attempt, with the bookkeeping of its outcome. The caller holds
/// `static_rotation` and saves `state`.
pub(crate) async fn rotate(
    core: &MountCore,
    name: &str,
    role: &StaticRole,
    state: &mut State,
    trigger: Trigger,
) -> Result<(), Error> {
    if trigger != Trigger::Retry {
        state.attempts = 0;
    }
    let result = attempt(core, name, role, state).await;
    let now = now();
    let mut event = Event {
        role: name,
        connection: &role.db_name,
        ..Event::default()
    };
    match &result {
        Ok(()) => {
            event.principal = &state.active;
            audit::emit(
                Action::StaticRotate,
                "rotated",
                &event.detail(trigger.name()),
            );
            tracing::info!(static_role = name, account = %state.active, trigger = trigger.name(), "static role rotated");
        }
        Err(e) => {
            state.attempts += 1;
            state.last_error = Some(e.to_string());
            state.failing_since.get_or_insert(now);
            let gave_up = state.attempts >= role.max_rotation_attempts;
            if gave_up {
                state.retry_at = None;
                if state.next_rotation.is_none_or(|n| n <= now) {
                    state.next_rotation = role.rotation.next_after(now);
                }
            } else {
                state.retry_at = Some(now + backoff(state.attempts));
            }
            let detail = format!(
                "{}; attempt {} of {} failed: {e}; {}",
                trigger.name(),
                state.attempts,
                role.max_rotation_attempts,
                if gave_up {
                    "no more attempts until the next regular rotation".to_owned()
                } else {
                    format!("next in {}s", state.retry_at.unwrap_or(now) - now)
                }
            );
            audit::emit(Action::StaticRotate, "failed", &event.detail(&detail));
            tracing::warn!(static_role = name, "static role rotation failed: {detail}");
        }
    }
    result
}

/// Whether the role's kind rotates keys the target makes (IAM access keys).
async fn key_mode(core: &MountCore, role: &StaticRole) -> Result<bool, Error> {
    let kind = core.connection_kind(&role.db_name).await?;
    Ok(core
        .backends
        .find(&kind)
        .is_some_and(|b| b.target_makes_secret()))
}

/// Deletes the keys a rotation created but never stored (it stopped after asking for one):
/// keys of the account made since `key_asked_at` that are neither current nor previous.
/// Returns the keys left.
async fn settle_keys(
    role: &StaticRole,
    state: &mut State,
    target: &dyn Target,
) -> Result<Vec<String>, Error> {
    let user = &role.username;
    let keys = within(TARGET_TIMEOUT, "list the keys", target.list_keys(user)).await?;
    let previous = state.previous.as_ref().and_then(|p| p.key_id.clone());
    let mut left = Vec::new();
    for (key, created) in keys {
        let known = state.key_id.as_ref() == Some(&key) || previous.as_ref() == Some(&key);
        // Asked-at and created-at come from two clocks: a minute of slack.
        let ours = state
            .key_asked_at
            .is_some_and(|t| created + SETTLE_AFTER_SECS >= t);
        if !known && ours {
            within(
                TARGET_TIMEOUT,
                "delete a key",
                target.delete_key(user, &key),
            )
            .await?;
            tracing::info!(account = %user, key = %key,
                "deleted a key that a rotation stopped midway created and never stored");
        } else {
            left.push(key);
        }
    }
    state.key_asked_at = None;
    Ok(left)
}

/// One attempt in key mode: the outgoing key (the current one, or the account's own key when
/// it is taken over) stays valid for the grace period; AWS's limit of two keys means a key
/// still in its grace is deleted first.
async fn attempt_key(
    core: &MountCore,
    name: &str,
    role: &StaticRole,
    state: &mut State,
    target: &dyn Target,
) -> Result<(), Error> {
    let user = role.username.clone();
    // Keys may be deleted below: only once a write has succeeded (see `on_due`).
    save(core, name, state).await?;
    let keys = settle_keys(role, state, target).await?;
    let outgoing = match &state.key_id {
        Some(current) => Some(current.clone()),
        // Taken over: the key applications use now is the outgoing one.
        None => match keys.as_slice() {
            [] => None,
            [one] => Some(one.clone()),
            _ => {
                return Err(Error::Target(format!(
                    "IAM user '{user}' has {} access keys ({}); AWS allows two and a rotation                      needs one free: delete the one no application uses",
                    keys.len(),
                    keys.join(", ")
                )));
            }
        },
    };
    let previous_key = state.previous.as_ref().and_then(|p| p.key_id.clone());
    let strangers: Vec<&String> = keys
        .iter()
        .filter(|k| Some(*k) != outgoing.as_ref() && Some(*k) != previous_key.as_ref())
        .collect();
    if outgoing.is_some() && !strangers.is_empty() {
        return Err(Error::Target(format!(
            "IAM user '{user}' has a key mayfly does not manage ({}); AWS allows two and a              rotation needs one free: delete it",
            strangers
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if let Some(p) = state.previous.clone()
        && let Some(key) = &p.key_id
    {
        // Rotated again within the grace period: the previous key's grace ends now.
        within(
            TARGET_TIMEOUT,
            "delete a key",
            target.delete_key(&p.account, key),
        )
        .await?;
        state.previous = None;
    }

    state.key_asked_at = Some(now());
    save(core, name, state).await?;
    let (key, secret) = within(TARGET_TIMEOUT, "make a key", target.create_key(&user)).await?;
    core.crash_point("static_changed");
    adopt(role, state, user.clone(), secret);
    state.key_id = Some(key);
    state.key_asked_at = None;
    state.previous = outgoing.map(|key| Previous {
        account: user,
        until: now() + role.grace_period,
        key_id: Some(key),
    });
    Ok(())
}

/// Gives the previous account of a dual-account role a password nobody knows, at the end of
/// its grace period; in key mode, deletes the previous key.
async fn retire(core: &MountCore, name: &str, role: &StaticRole, state: &mut State) {
    let Some(previous) = state.previous.clone() else {
        return;
    };
    let result = async {
        let target = core.target(&role.db_name).await?;
        if let Some(key) = &previous.key_id {
            return within(
                TARGET_TIMEOUT,
                "delete a key",
                target.delete_key(&previous.account, key),
            )
            .await;
        }
        let password = core.new_password(&role.password_policy).await?;
        within(
            TARGET_TIMEOUT,
            "set the password",
            target.set_password(&previous.account, &password, &role.rotation_statements),
        )
        .await
    }
    .await;
    match result {
        Ok(()) => {
            state.previous = None;
            tracing::info!(static_role = name, account = %previous.account,
                "grace period over: the previous account's password no longer works");
        }
        Err(e) => {
            state.previous = Some(Previous {
                until: now() + RETIRE_RETRY_SECS,
                ..previous.clone()
            });
            state.last_error = Some(format!(
                "retiring the previous account '{}': {e}",
                previous.account
            ));
            tracing::warn!(static_role = name, account = %previous.account, error = %e,
                "could not retire the previous account; retrying");
        }
    }
}

/// The scheduler reached static role `name`'s due entry: settle, retire, rotate, as due.
pub async fn on_due(core: Arc<MountCore>, entry_due: u64, name: String) {
    let _one_at_a_time = core.static_rotation.lock(&name).await;
    let kv = core.storage.as_ref();
    let now = now();
    let loaded = async {
        let role = static_role::load(kv, &name).await?;
        Ok::<_, Error>((role, load_state(&core, &name).await?))
    };
    let (role, mut state) = match loaded.await {
        Ok((Some(role), state)) => (role, state),
        Ok((None, _)) => {
            let _ = ledger::remove_due(kv, entry_due, &entry(&name)).await;
            return;
        }
        Err(e) => {
            tracing::warn!(static_role = %name, error = %e, "could not read a static role; retrying");
            core.scheduler.look_again(now, entry(&name));
            return;
        }
    };
    if state.due != Some(entry_due) {
        let _ = ledger::remove_due(kv, entry_due, &entry(&name)).await;
    }
    if state.due.is_none_or(|d| d > now) {
        return;
    }
    // Nothing on the target before a write has succeeded: it proves this node still leads
    // (one deposed without stepping down reads itself as active, but cannot write).
    if let Err(e) = save(&core, &name, &mut state).await {
        tracing::warn!(static_role = %name, error = %e,
            "could not record that a static role's due work begins; nothing was done");
        core.scheduler.look_again(now, entry(&name));
        return;
    }

    if state
        .pending
        .as_ref()
        .is_some_and(|p| p.since + SETTLE_AFTER_SECS <= now)
    {
        let settled = match core.target(&role.db_name).await {
            Ok(target) => settle(&role, &mut state, target.as_ref()).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = settled {
            tracing::warn!(static_role = %name, error = %e,
                "cannot settle a rotation that stopped midway; retrying");
            if let Some(p) = &mut state.pending {
                p.since = now;
            }
        }
    }
    if state.previous.as_ref().is_some_and(|p| p.until <= now) {
        retire(&core, &name, &role, &mut state).await;
    }
    if state.changes_at().is_some_and(|t| t <= now) {
        let trigger = if state.retry_at.is_some() {
            Trigger::Retry
        } else {
            Trigger::Schedule
        };
        let window_missed = matches!(role.rotation, Rotation::Schedule { .. })
            && role
                .rotation
                .window()
                .zip(state.next_rotation)
                .is_some_and(|(window, slot)| now > slot + window);
        if window_missed {
            tracing::warn!(static_role = %name,
                "the rotation window closed before the rotation could run; waiting for the next scheduled time");
            state.retry_at = None;
            state.next_rotation = role.rotation.next_after(now);
        } else {
            // The outcome is recorded in the state: nobody waits for it here.
            let _ = rotate(&core, &name, &role, &mut state, trigger).await;
        }
    }
    if let Err(e) = save(&core, &name, &mut state).await {
        tracing::error!(static_role = %name, error = %e, "could not store a static role's rotation state");
        core.scheduler.look_again(now, entry(&name));
    }
}
