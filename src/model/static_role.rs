//! A static role: an existing account taken over by mayfly. The role says which account (or,
//! in dual-account mode, which two), on which connection, and when its password changes; the
//! passwords themselves and the rotation's progress live in `jobs::static_rotation`, and the paths
//! that write and read it in `paths::static_roles`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::contract::backend::Backends;
use crate::contract::credential_type::{CREDENTIAL_CONFIG, CREDENTIAL_TYPE};
use crate::contract::error::Error;
use crate::contract::fields::{FieldDef, FieldType, FieldValue, Fields};
use crate::contract::storage::{self, Kv};
use crate::contract::template::LEGACY_MARK as MARK;
use crate::model::cron::Schedule;
use crate::model::role;

pub const PREFIX: &str = "static-roles/";

/// The shortest rotation period: each rotation is a round of work on the target.
pub const MIN_PERIOD_SECS: u64 = 5;
/// The shortest rotation window: a schedule's rotation needs time to be retried.
pub const MIN_WINDOW_SECS: u64 = 60;
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
const MAX_ATTEMPTS_LIMIT: u32 = 20;

/// When the password changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Rotation {
    /// Every `secs` seconds after the last rotation.
    Period { secs: u64 },
    /// At each time the cron `schedule` names, within `window` seconds of it (0: any time
    /// until the next one).
    Schedule { schedule: String, window: u64 },
    /// Only through `rotate-role/NAME`.
    Manual,
}

impl Rotation {
    /// The regular rotation after one at `last` (unix seconds); `None` for manual rotation or
    /// a schedule that never fires again.
    pub fn next_after(&self, last: u64) -> Option<u64> {
        match self {
            Rotation::Period { secs } => Some(last + secs),
            Rotation::Schedule { schedule, .. } => Schedule::parse(schedule).ok()?.next_after(last),
            Rotation::Manual => None,
        }
    }

    /// How late after its slot a scheduled rotation may still start.
    pub fn window(&self) -> Option<u64> {
        match self {
            Rotation::Schedule { window, .. } if *window > 0 => Some(*window),
            _ => None,
        }
    }

    fn view(&self, out: &mut Map<String, Value>) {
        let (period, schedule, window) = match self {
            Rotation::Period { secs } => (*secs, "", 0),
            Rotation::Schedule { schedule, window } => (0, schedule.as_str(), *window),
            Rotation::Manual => (0, "", 0),
        };
        out.insert("rotation_period".into(), json!(period));
        out.insert("rotation_schedule".into(), json!(schedule));
        out.insert("rotation_window".into(), json!(window));
        out.insert(
            "manual_rotation".into(),
            json!(matches!(self, Rotation::Manual)),
        );
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StaticRole {
    /// The connection (`config/NAME`) the account lives on.
    pub db_name: String,
    pub username: String,
    /// Dual-account mode: a second account that takes turns with `username`. Empty: single.
    #[serde(default)]
    pub dual_account_username: String,
    /// Dual-account mode: how long the previous account keeps its password once the other
    /// one becomes current; 0 keeps it until its own next rotation.
    #[serde(default)]
    pub grace_period: u64,
    pub rotation: Rotation,
    /// Statements that set the password; empty uses the kind's own way.
    #[serde(default)]
    pub rotation_statements: Vec<String>,
    /// A host password policy; empty means mayfly's CSPRNG default.
    #[serde(default)]
    pub password_policy: String,
    /// Attempts of one rotation before mayfly gives up until the next regular one.
    pub max_rotation_attempts: u32,
}

impl StaticRole {
    pub fn is_dual(&self) -> bool {
        !self.dual_account_username.is_empty()
    }

    /// The accounts the role manages.
    pub fn accounts(&self) -> Vec<&str> {
        let mut out = vec![self.username.as_str()];
        if self.is_dual() {
            out.push(&self.dual_account_username);
        }
        out
    }

    pub fn view(&self) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("db_name".into(), json!(self.db_name));
        out.insert("username".into(), json!(self.username));
        out.insert(
            "dual_account_username".into(),
            json!(self.dual_account_username),
        );
        out.insert("grace_period".into(), json!(self.grace_period));
        self.rotation.view(&mut out);
        out.insert(
            "rotation_statements".into(),
            json!(self.rotation_statements),
        );
        out.insert("password_policy".into(), json!(self.password_policy));
        out.insert(
            "max_rotation_attempts".into(),
            json!(self.max_rotation_attempts),
        );
        out
    }
}

pub fn fields() -> Vec<FieldDef> {
    vec![
        FieldDef::new(
            "db_name",
            FieldType::String,
            "The connection (config/NAME) the account lives on. Required when creating.",
        ),
        FieldDef::new(
            "username",
            FieldType::String,
            "The existing account to take over. Required when creating; cannot change.",
        ),
        FieldDef::new(
            "rotation_period",
            FieldType::Duration,
            "Rotate this long after the last rotation (at least 5s).",
        ),
        FieldDef::new(
            "rotation_schedule",
            FieldType::String,
            "Rotate at the times of this cron schedule, in UTC: five fields (minute hour \
             day-of-month month day-of-week) or @hourly, @daily, @weekly, @monthly, @yearly.",
        ),
        FieldDef::new(
            "rotation_window",
            FieldType::Duration,
            "With rotation_schedule: how long after each scheduled time a rotation may still \
             start (at least 60s); a rotation that cannot start within it waits for the next \
             scheduled time. 0 or unset: no limit.",
        ),
        FieldDef::new(
            "manual_rotation",
            FieldType::Bool,
            "Rotate only when rotate-role/NAME is written (no period, no schedule).",
        ),
        FieldDef::new(
            "rotation_statements",
            FieldType::Statements,
            "Statements that set the password, with {{name}} (or {{username}}) and \
             {{password}}; MySQL also has {{host}}, once per account host. Without them, the \
             kind's own statement is used.",
        ),
        FieldDef::new(
            "skip_import_rotation",
            FieldType::Bool,
            "When creating: do not rotate the password at once. static-creds then serves the \
             'password' given here, or nothing until the first rotation.",
        ),
        FieldDef::new(
            "password",
            FieldType::String,
            "With skip_import_rotation: the account's current password, checked against the \
             target and served by static-creds until the first rotation.",
        )
        .secret(),
        FieldDef::new(
            "password_policy",
            FieldType::String,
            "A host password policy (sys/policies/password) for new passwords; without it \
             mayfly uses 32 random letters and digits.",
        ),
        FieldDef::new(
            CREDENTIAL_TYPE,
            FieldType::String,
            "OpenBao's credential type: 'password', the one static roles rotate.",
        ),
        FieldDef::new(
            CREDENTIAL_CONFIG,
            FieldType::StringMap,
            "OpenBao's credential settings: 'password_policy', as the field of that name.",
        ),
        FieldDef::new(
            "dual_account_username",
            FieldType::String,
            "Dual-account mode: a second existing account with the same privileges. Each \
             rotation gives the other account a fresh password and makes it current, so the \
             previous password keeps working for grace_period.",
        ),
        FieldDef::new(
            "grace_period",
            FieldType::Duration,
            "Dual-account mode: how long the previous account keeps its password after the \
             other one becomes current; then mayfly replaces it with one nobody knows. Shorter \
             than rotation_period. 0: until its own next rotation. Access keys (kind aws): how \
             long the previous key keeps working after a new one is made; 0 deletes it at once.",
        ),
        FieldDef::new(
            "max_rotation_attempts",
            FieldType::Int,
            "Attempts of one rotation (retried with backoff from 5s) before mayfly gives up \
             until the next regular rotation. 1 to 20.",
        )
        .default(FieldValue::Int(DEFAULT_MAX_ATTEMPTS as i64)),
    ]
}

fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

pub async fn load(kv: &dyn Kv, name: &str) -> Result<Option<StaticRole>, Error> {
    Ok(storage::get_json(kv, &key(name)).await?)
}

pub async fn list(kv: &dyn Kv) -> Result<Vec<String>, Error> {
    Ok(kv.list(PREFIX).await?)
}

pub async fn save(kv: &dyn Kv, name: &str, role: &StaticRole) -> Result<(), Error> {
    Ok(storage::put_json(kv, &key(name), role).await?)
}

pub async fn remove(kv: &dyn Kv, name: &str) -> Result<(), Error> {
    Ok(kv.delete(&key(name)).await?)
}

/// What a write of `static-roles/NAME` asks for, checked against the stored role (if any):
/// the role to store, and for a new role whether to skip the first rotation and the password
/// the operator handed over.
pub struct Written {
    pub role: StaticRole,
    pub is_new: bool,
    /// The stored role's rotation, when the role exists.
    pub stored_rotation: Option<Rotation>,
    pub skip_import_rotation: bool,
    pub password: Option<String>,
}

/// Parses and checks a write without contacting the target.
pub async fn parse(
    kv: &dyn Kv,
    backends: &Backends,
    name: &str,
    data: &Map<String, Value>,
) -> Result<Written, Error> {
    let f = Fields::parse(&fields(), data)?;
    let existing = load(kv, name).await?;
    let is_new = existing.is_none();
    let field_str = |n: &str| f.str(n).map(str::to_owned);

    let db_name = match (field_str("db_name"), &existing) {
        (Some(n), _) => n,
        (None, Some(e)) => e.db_name.clone(),
        (None, None) => {
            return Err(Error::bad_request(format!(
                "field 'db_name' is required to create static role '{name}'"
            )));
        }
    };
    let username = match (field_str("username"), &existing) {
        (Some(u), Some(e)) if u != e.username => {
            return Err(Error::bad_request(format!(
                "field 'username': static role '{name}' manages '{}'; delete the role to take \
                 over another account",
                e.username
            )));
        }
        (Some(u), _) => u,
        (None, Some(e)) => e.username.clone(),
        (None, None) => {
            return Err(Error::bad_request(format!(
                "field 'username' is required to create static role '{name}'"
            )));
        }
    };
    if let Some(e) = &existing
        && e.db_name != db_name
    {
        return Err(Error::bad_request(format!(
            "field 'db_name': static role '{name}' manages an account on '{}'; delete the \
             role to move it",
            e.db_name
        )));
    }

    let rotation = rotation(&f, existing.as_ref().map(|e| &e.rotation))?;
    let mut role = existing.clone().unwrap_or(StaticRole {
        db_name: db_name.clone(),
        username: username.clone(),
        dual_account_username: String::new(),
        grace_period: 0,
        rotation: rotation.clone(),
        rotation_statements: Vec::new(),
        password_policy: String::new(),
        max_rotation_attempts: DEFAULT_MAX_ATTEMPTS,
    });
    role.rotation = rotation;
    if let Some(v) = f.list("rotation_statements") {
        role.rotation_statements = v.to_vec();
    } else if data.get("rotation_statements").is_some_and(Value::is_null) {
        role.rotation_statements.clear();
    }
    if let Some(v) = field_str("password_policy") {
        role.password_policy = v;
    }
    if let Some(v) = field_str("dual_account_username") {
        role.dual_account_username = v;
    }
    if let Some(v) = f.duration("grace_period") {
        role.grace_period = v;
    }
    if let Some(v) = f.int("max_rotation_attempts") {
        if !(1..=MAX_ATTEMPTS_LIMIT as i64).contains(&v) {
            return Err(Error::bad_request(format!(
                "field 'max_rotation_attempts': expected 1 to {MAX_ATTEMPTS_LIMIT}, got {v}"
            )));
        }
        role.max_rotation_attempts = v as u32;
    }

    let skip_import_rotation = f.bool("skip_import_rotation").unwrap_or(false);
    let password = field_str("password");
    if !is_new && (f.bool("skip_import_rotation").is_some() || password.is_some()) {
        return Err(Error::bad_request(
            "fields 'skip_import_rotation' and 'password' apply only when a static role is \
             created",
        ));
    }
    if password.is_some() && !skip_import_rotation {
        return Err(Error::bad_request(
            "field 'password' is only taken with skip_import_rotation=true: otherwise mayfly \
             sets a new password at once",
        ));
    }
    if password.as_deref().is_some_and(str::is_empty) {
        return Err(Error::bad_request(
            "field 'password': expected a password, got ''",
        ));
    }

    // OpenBao's credential_type and credential_config: passwords, with an optional policy.
    let mut credential = Map::new();
    for k in [CREDENTIAL_TYPE, CREDENTIAL_CONFIG] {
        if let Some(v) = f.get(k) {
            credential.insert(k.to_owned(), v.to_json());
        }
    }
    crate::contract::credential_type::check("static", &credential)?;
    if let Some(p) = crate::contract::credential_type::password_policy(&credential)
        && field_str("password_policy").is_none()
    {
        role.password_policy = p.to_owned();
    }
    let keys = check(kv, backends, name, &role).await?;
    if keys && !credential.is_empty() {
        return Err(Error::bad_request(
            "fields 'credential_type' and 'credential_config' apply to accounts with \
             passwords; this connection's static roles rotate access keys",
        ));
    }
    if keys && password.is_some() {
        return Err(Error::bad_request(
            "field 'password' does not apply to access keys: with skip_import_rotation the \
             user's key stays as it is until the first rotation replaces it",
        ));
    }
    Ok(Written {
        role,
        is_new,
        stored_rotation: existing.map(|e| e.rotation),
        skip_import_rotation,
        password,
    })
}

/// The rotation a write asks for: exactly one of rotation_period, rotation_schedule and
/// manual_rotation=true, or the stored one when the write names none.
fn rotation(f: &Fields, stored: Option<&Rotation>) -> Result<Rotation, Error> {
    let period = f.duration("rotation_period").filter(|p| *p > 0);
    let schedule = f.str("rotation_schedule").filter(|s| !s.trim().is_empty());
    let manual = f.bool("manual_rotation") == Some(true);
    let window = f.duration("rotation_window");
    let chosen = [period.is_some(), schedule.is_some(), manual]
        .iter()
        .filter(|c| **c)
        .count();
    if chosen > 1 {
        return Err(Error::bad_request(
            "fields 'rotation_period', 'rotation_schedule' and 'manual_rotation': give only \
             one of them",
        ));
    }
    let rotation = if let Some(secs) = period {
        if secs < MIN_PERIOD_SECS {
            return Err(Error::bad_request(format!(
                "field 'rotation_period': expected at least {MIN_PERIOD_SECS}s, got {secs}s"
            )));
        }
        Rotation::Period { secs }
    } else if let Some(text) = schedule {
        Schedule::parse(text)
            .map_err(|e| Error::bad_request(format!("field 'rotation_schedule': {e}")))?;
        Rotation::Schedule {
            schedule: text.trim().to_owned(),
            window: 0,
        }
    } else if manual {
        Rotation::Manual
    } else {
        match stored {
            Some(r) => r.clone(),
            None => {
                return Err(Error::bad_request(
                    "one of 'rotation_period', 'rotation_schedule' or 'manual_rotation=true' \
                     is required to create a static role",
                ));
            }
        }
    };
    match (rotation, window) {
        (Rotation::Schedule { schedule, window }, w) => {
            let window = w.unwrap_or(window);
            if window != 0 && window < MIN_WINDOW_SECS {
                return Err(Error::bad_request(format!(
                    "field 'rotation_window': expected 0 or at least {MIN_WINDOW_SECS}s, got \
                     {window}s"
                )));
            }
            Ok(Rotation::Schedule { schedule, window })
        }
        (_, Some(w)) if w > 0 => Err(Error::bad_request(
            "field 'rotation_window' applies only with 'rotation_schedule'",
        )),
        (r, _) => Ok(r),
    }
}

/// The offline checks of a role against its connection and the other static roles. Returns
/// whether the role rotates access keys (a kind whose target makes the secret).
async fn check(
    kv: &dyn Kv,
    backends: &Backends,
    name: &str,
    role: &StaticRole,
) -> Result<bool, Error> {
    let (config, backend) = role::connection(kv, backends, &role.db_name).await?;
    let keys = backend.target_makes_secret();
    if !config.allows_role(name) {
        return Err(Error::bad_request(format!(
            "connection '{}' does not list '{name}' in allowed_roles",
            role.db_name
        )));
    }
    let own = config.setting_str("username").unwrap_or_default();
    for (field, account) in [
        ("username", role.username.as_str()),
        ("dual_account_username", role.dual_account_username.as_str()),
    ] {
        if account.is_empty() && field == "dual_account_username" {
            continue;
        }
        backend
            .validate_principal(account)
            .map_err(|e| Error::bad_request(format!("field '{field}': {e}")))?;
        if account.starts_with(MARK) {
            return Err(Error::bad_request(format!(
                "field '{field}': '{account}' starts with '{MARK}', the mark of the accounts mayfly \
                 mounts create and drop; a static role cannot manage one"
            )));
        }
        if account == own {
            return Err(Error::bad_request(format!(
                "field '{field}': '{account}' is the user connection '{}' logs in as; rotate \
                 it with rotate-root/{}",
                role.db_name, role.db_name
            )));
        }
    }
    if role.username == role.dual_account_username {
        return Err(Error::bad_request(
            "field 'dual_account_username': expected an account other than 'username'",
        ));
    }
    if keys {
        for (field, set) in [
            ("dual_account_username", role.is_dual()),
            ("password_policy", !role.password_policy.is_empty()),
        ] {
            if set {
                return Err(Error::bad_request(format!(
                    "field '{field}' does not apply to connections of kind '{}': the target \
                     makes each new key, and the previous one stays valid for grace_period",
                    config.plugin_name
                )));
            }
        }
    }
    if (role.is_dual() || keys)
        && let Rotation::Period { secs } = role.rotation
        && role.grace_period >= secs
    {
        return Err(Error::bad_request(format!(
            "field 'grace_period': {}s is not shorter than rotation_period {secs}s: the \
             previous account must be retired before it becomes current again",
            role.grace_period
        )));
    }
    if !role.is_dual() && !keys && role.grace_period > 0 {
        return Err(Error::bad_request(
            "field 'grace_period' applies only with 'dual_account_username'",
        ));
    }
    for account in role.accounts() {
        backend.validate_rotation_statements(&role.rotation_statements, account)?;
    }
    for other in list(kv).await? {
        if other == name {
            continue;
        }
        let Some(o) = load(kv, &other).await? else {
            continue;
        };
        if o.db_name != role.db_name {
            continue;
        }
        if let Some(taken) = role.accounts().iter().find(|a| o.accounts().contains(a)) {
            return Err(Error::bad_request(format!(
                "account '{taken}' is already managed by static role '{other}'"
            )));
        }
    }
    Ok(keys)
}
