//! `static-roles/NAME`, `static-creds/NAME` and `rotate-role/NAME`: existing accounts taken
//! over by mayfly. What a static role is and how it is written is `model::static_role`; the rotation
//! of its password, on schedule or asked for here, is `jobs::static_rotation`.

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};

use crate::contract::backend::{TARGET_TIMEOUT, within};
use crate::contract::error::Error;
use crate::contract::host::now;
use crate::contract::request::{Operation, Response};
use crate::jobs::static_rotation::{State, Trigger, entry, load_state, rotate, save, state_key};
use crate::model::ledger;
use crate::model::static_role::{self, Rotation};
use crate::mount::MountCore;
use crate::paths::router::{PathDef, op};

fn no_role(name: &str) -> Error {
    Error::bad_request(format!("no static role named '{name}'"))
}

/// `rotate-role/NAME`: rotates now, whatever the schedule. Failures are retried like a
/// scheduled rotation's. In dual-account mode this ends the previous account's grace period:
/// it is the account that gets the new password.
pub async fn rotate_now(core: &MountCore, name: &str) -> Result<Response, Error> {
    let _one_at_a_time = core.static_rotation.lock(name).await;
    let role = static_role::load(core.storage.as_ref(), name)
        .await?
        .ok_or_else(|| no_role(name))?;
    let mut state = load_state(core, name).await?;
    let result = rotate(core, name, &role, &mut state, Trigger::Manual).await;
    save(core, name, &mut state).await?;
    result.map(|()| Response::empty())
}

/// `static-roles/NAME` write: creates the role (taking the account over: its password is
/// replaced at once unless skip_import_rotation) or updates it.
pub async fn write(
    core: &MountCore,
    name: &str,
    data: &Map<String, Value>,
) -> Result<Response, Error> {
    let _writes = core.static_writes.lock().await;
    let _one_at_a_time = core.static_rotation.lock(name).await;
    let kv = core.storage.as_ref();
    let written = static_role::parse(kv, &core.backends, name, data).await?;
    let role = written.role;
    let mut state = load_state(core, name).await?;
    if !written.is_new {
        static_role::save(kv, name, &role).await?;
        if written.stored_rotation.as_ref() != Some(&role.rotation) && state.retry_at.is_none() {
            state.next_rotation = match role.rotation {
                // A new period counts from the last rotation; one already past is due now.
                Rotation::Period { .. } => role
                    .rotation
                    .next_after(state.last_rotation.unwrap_or(now())),
                _ => role.rotation.next_after(now()),
            };
            save(core, name, &mut state).await?;
        }
        tracing::info!(static_role = name, "static role updated");
        return Ok(Response::empty());
    }

    if written.skip_import_rotation {
        let password = written.password.map(SecretString::from);
        if let Some(p) = &password {
            let target = core.target(&role.db_name).await?;
            if !within(
                TARGET_TIMEOUT,
                "check a login",
                target.check_login(&role.username, p),
            )
            .await?
            {
                return Err(Error::bad_request(format!(
                    "field 'password': the target refuses it for '{}'",
                    role.username
                )));
            }
        }
        static_role::save(kv, name, &role).await?;
        state = State {
            active: role.username.clone(),
            password,
            next_rotation: role.rotation.next_after(now()),
            ..State::default()
        };
        save(core, name, &mut state).await?;
        tracing::info!(static_role = name, account = %role.username, "static role created without rotating");
        return Ok(Response::empty());
    }

    static_role::save(kv, name, &role).await?;
    let imported = rotate(core, name, &role, &mut state, Trigger::Import).await;
    match imported {
        Ok(()) => {
            save(core, name, &mut state).await?;
            tracing::info!(static_role = name, account = %role.username, "static role created; password rotated");
            Ok(Response::empty())
        }
        Err(e) if state.pending.is_some() => {
            // The target may hold the new password: keep it, and the role, until it can tell.
            // The retry settles it first, and takes the account over if it had not changed.
            save(core, name, &mut state).await?;
            Err(Error::Unavailable(format!(
                "static role '{name}' is kept: taking the account over failed ({e}) and the \
                 target cannot say whether it took the new password; mayfly settles this when \
                 the target answers"
            )))
        }
        Err(e) => {
            // Nothing changed on the target: nothing of the role is left either.
            remove(core, name, &mut state).await?;
            Err(e)
        }
    }
}

async fn remove(core: &MountCore, name: &str, state: &mut State) -> Result<(), Error> {
    let kv = core.storage.as_ref();
    static_role::remove(kv, name).await?;
    kv.delete(&state_key(name)).await?;
    if let Some(due) = state.due.take() {
        ledger::remove_due(kv, due, &entry(name)).await?;
    }
    Ok(())
}

/// `static-roles/NAME` delete: mayfly forgets the role and its passwords; the accounts stay
/// as they are.
pub async fn delete(core: &MountCore, name: &str) -> Result<Response, Error> {
    let _writes = core.static_writes.lock().await;
    let _one_at_a_time = core.static_rotation.lock(name).await;
    let mut state = load_state(core, name).await?;
    remove(core, name, &mut state).await?;
    tracing::info!(static_role = name, "static role deleted");
    Ok(Response::empty())
}

/// `static-roles/NAME` read: the role and where its rotation stands; never a password.
pub async fn read(core: &MountCore, name: &str) -> Result<Response, Error> {
    let Some(role) = static_role::load(core.storage.as_ref(), name).await? else {
        return Ok(Response::default());
    };
    let mut data = role.view();
    load_state(core, name).await?.view(&mut data);
    Ok(Response::data(data))
}

/// `static-creds/NAME`: the current account and password, and when it changes next.
pub async fn creds(core: &MountCore, name: &str) -> Result<Response, Error> {
    let role = static_role::load(core.storage.as_ref(), name)
        .await?
        .ok_or_else(|| no_role(name))?;
    let state = load_state(core, name).await?;
    let Some(password) = &state.password else {
        return Err(Error::bad_request(format!(
            "static role '{name}' has no password yet: it was created with \
             skip_import_rotation and no password; it gets one at its first rotation (or \
             write rotate-role/{name})"
        )));
    };
    let now = now();
    let mut data = Map::new();
    data.insert("username".into(), json!(state.active));
    match &state.key_id {
        Some(key) => {
            data.insert("access_key".into(), json!(key));
            data.insert("secret_key".into(), json!(password.expose_secret()));
        }
        None => {
            data.insert("password".into(), json!(password.expose_secret()));
        }
    }
    data.insert(
        "ttl".into(),
        json!(state.changes_at().map_or(0, |t| t.saturating_sub(now))),
    );
    data.insert("last_rotation".into(), json!(state.last_rotation));
    // Vault's name and form for the same time, for clients written against Vault.
    data.insert(
        "last_vault_rotation".into(),
        json!(state.last_rotation.map(crate::contract::host::rfc3339)),
    );
    match &role.rotation {
        Rotation::Period { secs } => data.insert("rotation_period".into(), json!(secs)),
        Rotation::Schedule { schedule, window } => {
            data.insert("rotation_window".into(), json!(window));
            data.insert("rotation_schedule".into(), json!(schedule))
        }
        Rotation::Manual => data.insert("manual_rotation".into(), json!(true)),
    };
    if let Some(p) = &state.previous {
        data.insert("previous_username".into(), json!(p.account));
        data.insert("previous_valid_until".into(), json!(p.until));
    }
    Ok(Response::data(data))
}

/// The paths this module serves, for the engine's table.
pub(crate) fn paths() -> Vec<PathDef> {
    vec![
        PathDef {
            pattern: "static-roles/",
            fields: vec![],
            operations: vec![op(Operation::List, |c| {
                Box::pin(async move {
                    Ok(Response::list(
                        static_role::list(c.core.storage.as_ref()).await?,
                    ))
                })
            })],
            reads_act: false,
            synopsis: "List the static roles.",
            description: "",
        },
        PathDef {
            pattern: "static-roles/{name}",
            fields: static_role::fields(),
            operations: vec![
                op(Operation::Read, |c| Box::pin(read(c.core, c.param("name")))),
                op(Operation::Update, |c| {
                    Box::pin(write(c.core, c.param("name"), &c.req.data))
                }),
                op(Operation::Delete, |c| {
                    Box::pin(delete(c.core, c.param("name")))
                }),
            ],
            reads_act: false,
            synopsis: "A static role: an existing account whose password mayfly keeps and \
                rotates on a period, a cron schedule, or on demand.",
            description: "Creating one takes the account over: its password is replaced at \
                once (unless skip_import_rotation). A read shows the rotation's progress: \
                last_rotation, next_rotation, rotation_attempts, last_error, failing_since, \
                and in dual-account mode the current and previous accounts. A failing \
                rotation is retried with backoff up to max_rotation_attempts and the last \
                working password stays current. Deleting forgets the passwords and leaves \
                the accounts as they are.",
        },
        PathDef {
            pattern: "static-creds/{name}",
            fields: vec![],
            operations: vec![op(Operation::Read, |c| {
                Box::pin(creds(c.core, c.param("name")))
            })],
            reads_act: true,
            synopsis: "The current username and password of a static role, with ttl: the \
                seconds until the password may change.",
            description: "An application that fails to log in should read this again: the \
                password may have been rotated since it last did. In dual-account mode the \
                previous account keeps working until previous_valid_until.",
        },
        PathDef {
            pattern: "rotate-role/{name}",
            fields: vec![],
            operations: vec![op(Operation::Update, |c| {
                Box::pin(rotate_now(c.core, c.param("name")))
            })],
            reads_act: false,
            synopsis: "Rotate a static role's password now.",
            description: "A failure is returned and then retried with backoff like a \
                scheduled rotation's; the old password stays current until a rotation \
                succeeds. In dual-account mode the previous account gets the new password, \
                which ends its grace period.",
        },
    ]
}
