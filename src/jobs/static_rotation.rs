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
const SETTLE_AFTER_SECS: u64 = 30;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::backend::Backends;
    use crate::contract::request::Response;
    use crate::contract::storage::InMemoryStorage;
    use crate::paths::static_roles::{creds, delete, read, rotate_now, write};
    use crate::testkit::Fake;
    use crate::testkit::FixedHost;

    struct Setup {
        core: Arc<MountCore>,
        fake: Arc<Fake>,
        storage: InMemoryStorage,
    }

    const OLD: &str = "legacy-password";

    async fn setup() -> Setup {
        let storage = InMemoryStorage::new();
        let fake = Arc::new(Fake::default());
        let core = Arc::new(MountCore {
            storage: Arc::new(storage.clone()),
            backends: Backends::new(vec![fake.clone()]),
            host: Arc::new(FixedHost::default()),
            targets: Default::default(),
            scheduler: Default::default(),
            node: Default::default(),
            crash_hook: None,
            mark: crate::contract::template::LEGACY_MARK.into(),
            cache: Default::default(),
            root_rotation: Default::default(),
            static_rotation: Default::default(),
            static_writes: Default::default(),
        });
        let config = json!({"plugin_name": "fake", "url": "fake://x", "allowed_roles": "*"});
        crate::paths::config::write(
            core.storage.as_ref(),
            &core.backends,
            "db",
            config.as_object().unwrap(),
        )
        .await
        .unwrap();
        for account in ["app", "app2", "other"] {
            fake.target.add_account(account, OLD);
        }
        Setup {
            core,
            fake,
            storage,
        }
    }

    async fn write_role(s: &Setup, name: &str, body: Value) -> Result<Response, Error> {
        write(&s.core, name, body.as_object().unwrap()).await
    }

    async fn current(s: &Setup, name: &str) -> (String, String) {
        let data = creds(&s.core, name).await.unwrap().data.unwrap();
        (
            data["username"].as_str().unwrap().to_owned(),
            data["password"].as_str().unwrap().to_owned(),
        )
    }

    async fn role_view(s: &Setup, name: &str) -> Map<String, Value> {
        read(&s.core, name).await.unwrap().data.unwrap()
    }

    /// Runs the role's due work as the scheduler would, pretending its time has come: the
    /// rotation's (if `rotation`) and the end of a grace period's.
    async fn run_due(s: &Setup, name: &str, rotation: bool) {
        let mut state = load_state(&s.core, name).await.unwrap();
        // Move every time of the state to now, so that what is due runs now.
        let now = now();
        if rotation {
            match state.retry_at {
                Some(_) => state.retry_at = Some(now),
                None => state.next_rotation = state.next_rotation.map(|_| now),
            }
        }
        if let Some(p) = &mut state.previous {
            p.until = now;
        }
        state.due = Some(now);
        let key = state_key(name);
        storage::put_json(s.core.storage.as_ref(), &key, &state)
            .await
            .unwrap();
        on_due(s.core.clone(), now, name.to_owned()).await;
    }

    #[tokio::test]
    async fn import_rotates_at_once_and_keeps_the_password_out_of_everything_else() {
        let s = setup().await;
        write_role(
            &s,
            "app",
            json!({"db_name": "db", "username": "app", "rotation_period": "1h"}),
        )
        .await
        .unwrap();
        let (user, password) = current(&s, "app").await;
        assert_eq!(user, "app");
        assert_ne!(password, OLD);
        assert_eq!(s.fake.target.password("app").unwrap(), password);
        let data = creds(&s.core, "app").await.unwrap().data.unwrap();
        let ttl = data["ttl"].as_u64().unwrap();
        assert!((3590..=3600).contains(&ttl), "{ttl}");

        let view = role_view(&s, "app").await;
        assert_eq!(view["rotation_period"], 3600);
        assert_eq!(view["rotation_attempts"], 0);
        assert!(!Value::Object(view).to_string().contains(&password));
        let state = load_state(&s.core, "app").await.unwrap();
        assert!(!format!("{state:?}").contains(&password));
        for (key, bytes) in s.storage.dump() {
            if String::from_utf8_lossy(&bytes).contains(&password) {
                assert!(key.starts_with(PREFIX), "password stored at {key}");
            }
        }

        rotate_now(&s.core, "app").await.unwrap();
        let (_, again) = current(&s, "app").await;
        assert_ne!(again, password, "each rotation uses a fresh password");
        assert_eq!(s.fake.target.password("app").unwrap(), again);
    }

    #[tokio::test]
    async fn access_keys_rotate_with_an_overlap_and_a_stray_key_stops_the_rotation() {
        let s = setup().await;
        let t = &s.fake.target;
        t.makes_keys
            .store(true, std::sync::atomic::Ordering::SeqCst);
        t.keys
            .lock()
            .unwrap()
            .insert("app".into(), vec![("AKLEGACY".into(), 0)]);
        for (body, error) in [
            (
                json!({"dual_account_username": "app2"}),
                "field 'dual_account_username' does not apply",
            ),
            (
                json!({"skip_import_rotation": true, "password": "legacy"}),
                "field 'password' does not apply to access keys",
            ),
            (
                json!({"grace_period": "1h"}),
                "field 'grace_period': 3600s is not shorter than rotation_period",
            ),
        ] {
            let mut role = json!({"db_name": "db", "username": "app", "rotation_period": "1h"});
            role.as_object_mut()
                .unwrap()
                .extend(body.as_object().unwrap().clone());
            let e = write_role(&s, "keys", role).await.unwrap_err().to_string();
            assert!(e.contains(error), "{e}");
        }

        // Taken over: a new key, and the legacy one stays for the grace period.
        write_role(
            &s,
            "keys",
            json!({"db_name": "db", "username": "app", "rotation_period": "1h",
                   "grace_period": "10m"}),
        )
        .await
        .unwrap();
        let data = creds(&s.core, "keys").await.unwrap().data.unwrap();
        let first = data["access_key"].as_str().unwrap().to_owned();
        assert!(data.get("password").is_none());
        assert_eq!(t.key_ids("app"), vec!["AKLEGACY".to_owned(), first.clone()]);
        let view = role_view(&s, "keys").await;
        assert_eq!(view["previous_access_key"], "AKLEGACY");
        let secret = data["secret_key"].as_str().unwrap().to_owned();
        assert!(!format!("{view:?}").contains(&secret));

        // The grace period ends: the legacy key goes.
        run_due(&s, "keys", false).await;
        assert_eq!(t.key_ids("app"), vec![first.clone()]);
        // Rotated twice in a row: the second ends the first's grace (AWS allows two keys).
        rotate_now(&s.core, "keys").await.unwrap();
        rotate_now(&s.core, "keys").await.unwrap();
        let keys = t.key_ids("app");
        assert_eq!(keys.len(), 2, "{keys:?}");
        assert!(!keys.contains(&first));

        // A key mayfly does not manage takes the free slot: the rotation says so and the
        // current key stays.
        run_due(&s, "keys", false).await;
        t.keys
            .lock()
            .unwrap()
            .get_mut("app")
            .unwrap()
            .push(("AKSTRANGER".into(), 0));
        let e = rotate_now(&s.core, "keys").await.unwrap_err().to_string();
        assert!(e.contains("AKSTRANGER"), "{e}");
        let still = creds(&s.core, "keys").await.unwrap().data.unwrap();
        let current = still["access_key"].as_str().unwrap().to_owned();
        assert!(keys.contains(&current));

        // A rotation that stopped after the target made its key, before mayfly stored it:
        // that key (its secret lost) is deleted by the next rotation, which then succeeds.
        t.keys.lock().unwrap().insert(
            "app".into(),
            vec![(current.clone(), 0), ("AKORPHAN".into(), now())],
        );
        let mut state = load_state(&s.core, "keys").await.unwrap();
        state.key_asked_at = Some(now());
        save(&s.core, "keys", &mut state).await.unwrap();
        rotate_now(&s.core, "keys").await.unwrap();
        let keys = t.key_ids("app");
        assert!(!keys.contains(&"AKORPHAN".to_owned()), "{keys:?}");
        assert_eq!(keys.len(), 2, "the current key and the new one: {keys:?}");
    }

    #[tokio::test]
    async fn bad_roles_are_refused_and_leave_nothing() {
        let s = setup().await;
        write_role(
            &s,
            "taken",
            json!({"db_name": "db", "username": "other", "manual_rotation": true}),
        )
        .await
        .unwrap();
        let before = s.storage.dump();
        let cases = [
            (
                json!({"username": "app", "rotation_period": 60}),
                "field 'db_name' is required",
            ),
            (
                json!({"db_name": "db", "rotation_period": 60}),
                "field 'username' is required",
            ),
            (
                json!({"db_name": "db", "username": "app"}),
                "one of 'rotation_period'",
            ),
            (
                json!({"db_name": "db", "username": "app", "rotation_period": 60, "manual_rotation": true}),
                "give only one of them",
            ),
            (
                json!({"db_name": "db", "username": "app", "rotation_period": 2}),
                "field 'rotation_period': expected at least 5s",
            ),
            (
                json!({"db_name": "db", "username": "app", "rotation_schedule": "61 * * * *"}),
                "field 'rotation_schedule': minute field",
            ),
            (
                json!({"db_name": "db", "username": "app", "rotation_period": 60, "rotation_window": "1h"}),
                "field 'rotation_window' applies only with 'rotation_schedule'",
            ),
            (
                json!({"db_name": "db", "username": "app", "rotation_schedule": "@daily", "rotation_window": 30}),
                "field 'rotation_window': expected 0 or at least 60s",
            ),
            (
                json!({"db_name": "db", "username": "mf-x", "rotation_period": 60}),
                "field 'username': 'mf-x' starts with 'mf-'",
            ),
            (
                json!({"db_name": "db", "username": "other", "rotation_period": 60}),
                "already managed by static role 'taken'",
            ),
            (
                json!({"db_name": "db", "username": "app", "dual_account_username": "app2",
                       "rotation_period": 60, "grace_period": 60}),
                "field 'grace_period': 60s is not shorter than rotation_period 60s",
            ),
            (
                json!({"db_name": "db", "username": "app", "rotation_period": 60, "grace_period": 5}),
                "field 'grace_period' applies only with 'dual_account_username'",
            ),
            (
                json!({"db_name": "db", "username": "app", "rotation_period": 60, "password": "x"}),
                "field 'password' is only taken with skip_import_rotation=true",
            ),
            (
                json!({"db_name": "db", "username": "app", "rotation_period": 60,
                       "skip_import_rotation": true, "password": "wrong"}),
                "field 'password': the target refuses it for 'app'",
            ),
            (
                json!({"db_name": "db", "username": "nobody", "rotation_period": 60}),
                "no account nobody",
            ),
            (
                json!({"db_name": "db", "username": "app", "rotation_period": 60,
                       "rotation_statements": "FAIL"}),
                "the statement failed",
            ),
        ];
        for (body, expected) in cases {
            let e = write_role(&s, "app", body.clone()).await.unwrap_err();
            assert!(e.to_string().contains(expected), "{body}: {e}");
        }
        assert_eq!(s.storage.dump(), before, "nothing half-created");
        assert_eq!(s.fake.target.password("app").unwrap(), OLD);
    }

    #[tokio::test]
    async fn a_failing_rotation_stops_after_the_bound_and_keeps_the_old_password() {
        let s = setup().await;
        write_role(
            &s,
            "app",
            json!({"db_name": "db", "username": "app", "rotation_period": "1h",
                   "max_rotation_attempts": 3}),
        )
        .await
        .unwrap();
        let (_, good) = current(&s, "app").await;
        write_role(&s, "app", json!({"rotation_statements": "FAIL"}))
            .await
            .unwrap();
        let e = rotate_now(&s.core, "app").await.unwrap_err();
        assert_eq!(e.status(), 502);
        let view = role_view(&s, "app").await;
        assert_eq!(view["rotation_attempts"], 1);
        assert!(view["next_attempt"].as_u64().is_some());
        assert_eq!(view["last_error"], "the statement failed");
        run_due(&s, "app", true).await;
        run_due(&s, "app", true).await;
        let view = role_view(&s, "app").await;
        assert_eq!(view["rotation_attempts"], 3);
        assert_eq!(
            view["next_attempt"],
            Value::Null,
            "no attempt after the bound"
        );
        assert!(view["next_rotation"].as_u64().unwrap() > now() + 3500);
        assert!(view["failing_since"].as_u64().is_some());
        assert_eq!(current(&s, "app").await.1, good);
        assert_eq!(s.fake.target.password("app").unwrap(), good);

        // Fixed: the next rotation succeeds and clears the error.
        write_role(&s, "app", json!({"rotation_statements": null}))
            .await
            .unwrap();
        run_due(&s, "app", true).await;
        let view = role_view(&s, "app").await;
        assert_eq!(view["last_error"], Value::Null);
        assert_eq!(view["rotation_attempts"], 0);
        assert_ne!(current(&s, "app").await.1, good);
    }

    #[tokio::test]
    async fn a_lost_reply_or_a_crash_midway_is_settled_by_asking_the_target() {
        let s = setup().await;
        write_role(
            &s,
            "app",
            json!({"db_name": "db", "username": "app", "manual_rotation": true}),
        )
        .await
        .unwrap();
        // A crash after the target changed: the pending password is what works now.
        let mut state = load_state(&s.core, "app").await.unwrap();
        s.fake.target.add_account("app", "pending-one");
        state.pending = Some(Pending {
            account: "app".into(),
            password: SecretString::from("pending-one"),
            since: now() - SETTLE_AFTER_SECS,
        });
        save(&s.core, "app", &mut state).await.unwrap();
        on_due(s.core.clone(), state.due.unwrap(), "app".into()).await;
        assert_eq!(current(&s, "app").await.1, "pending-one");
        let state = load_state(&s.core, "app").await.unwrap();
        assert!(state.pending.is_none());
        assert_eq!(state.due, None, "manual rotation: nothing left to do");
    }

    #[tokio::test]
    async fn an_import_whose_outcome_is_unknown_keeps_the_role_and_retries() {
        let s = setup().await;
        // The target fails the change and cannot be asked afterwards whether it took it.
        s.fake
            .target
            .down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let e = write_role(
            &s,
            "app",
            json!({"db_name": "db", "username": "app", "rotation_period": "1h"}),
        )
        .await
        .unwrap_err();
        assert_eq!(e.status(), 503, "{e}");
        assert!(e.to_string().contains("static role 'app' is kept"), "{e}");
        assert!(creds(&s.core, "app").await.is_err(), "no password yet");

        // Back up: the retry settles the pending password (never set: dropped) and takes the
        // account over.
        s.fake
            .target
            .down
            .store(false, std::sync::atomic::Ordering::SeqCst);
        run_due(&s, "app", true).await;
        let (user, password) = current(&s, "app").await;
        assert_eq!(user, "app");
        assert_ne!(password, OLD);
        assert_eq!(s.fake.target.password("app").unwrap(), password);
    }

    #[tokio::test]
    async fn dual_accounts_take_turns_and_the_previous_one_retires_after_its_grace() {
        let s = setup().await;
        write_role(
            &s,
            "app",
            json!({"db_name": "db", "username": "app", "dual_account_username": "app2",
                   "rotation_period": "1h", "grace_period": "10m"}),
        )
        .await
        .unwrap();
        let (user, first) = current(&s, "app").await;
        assert_eq!(user, "app");
        let view = role_view(&s, "app").await;
        assert_eq!(
            view["previous_username"], "app2",
            "the other account's old password retires"
        );
        run_due(&s, "app", false).await;
        assert_ne!(s.fake.target.password("app2").unwrap(), OLD);
        assert_eq!(role_view(&s, "app").await["previous_username"], Value::Null);

        rotate_now(&s.core, "app").await.unwrap();
        let (user, second) = current(&s, "app").await;
        assert_eq!(user, "app2");
        assert_eq!(
            s.fake.target.password("app").unwrap(),
            first,
            "still in its grace"
        );
        let data = creds(&s.core, "app").await.unwrap().data.unwrap();
        assert_eq!(data["previous_username"], "app");
        run_due(&s, "app", false).await;
        assert_ne!(s.fake.target.password("app").unwrap(), first, "retired");
        assert_eq!(s.fake.target.password("app2").unwrap(), second);
        rotate_now(&s.core, "app").await.unwrap();
        assert_eq!(current(&s, "app").await.0, "app");
    }

    #[tokio::test]
    async fn skip_import_rotation_serves_the_given_password_until_the_first_rotation() {
        let s = setup().await;
        write_role(
            &s,
            "app",
            json!({"db_name": "db", "username": "app", "rotation_schedule": "0 3 * * *",
                   "rotation_window": "1h", "skip_import_rotation": true, "password": OLD}),
        )
        .await
        .unwrap();
        assert_eq!(current(&s, "app").await.1, OLD);
        assert_eq!(s.fake.target.password("app").unwrap(), OLD);
        let view = role_view(&s, "app").await;
        assert_eq!(view["rotation_schedule"], "0 3 * * *");
        assert_eq!(view["next_rotation"].as_u64().unwrap() % 86_400, 3 * 3600);

        write_role(
            &s,
            "bare",
            json!({"db_name": "db", "username": "other", "manual_rotation": true,
                   "skip_import_rotation": true}),
        )
        .await
        .unwrap();
        let e = creds(&s.core, "bare").await.unwrap_err();
        assert!(e.to_string().contains("has no password yet"), "{e}");
        delete(&s.core, "bare").await.unwrap();
        assert!(
            s.storage.dump().keys().all(|k| !k.contains("bare")),
            "{:?}",
            s.storage.dump().keys()
        );
    }
}
