//! `rotate-root/NAME`: the connection's own password replaced by one only mayfly knows.
//!
//! Write-ahead, like issuance: the new password is stored as pending before the target is
//! asked to change, and becomes the connection's password once the target has it. Whatever
//! stops the rotation midway (an error, a lost reply, a crash), the stored configuration still
//! holds a password that works: the pending one is settled by trying it against the target
//! (`mount::root_password`), on the next rotation or on the next use of the connection.

use crate::contract::backend::{TARGET_TIMEOUT, within};
use crate::contract::connection_config;
use crate::contract::connection_config::ConnectionConfig;
use crate::contract::error::Error;
use crate::contract::host::default_password;
use crate::contract::request::{Operation, Response};
use crate::mount::MountCore;
use crate::paths::router::{PathDef, op};

use crate::mount::root_password::{PASSWORD, commit, settle_locked, which_works};

/// Rotates the password of connection `name`'s own user.
pub async fn rotate(core: &MountCore, name: &str) -> Result<Response, Error> {
    let _one_at_a_time = core.root_rotation.lock(name).await;
    let mut config = settle_locked(core, name).await?;
    if config.secret(PASSWORD).is_none_or(str::is_empty) {
        return Err(Error::bad_request(format!(
            "connection '{name}' has no password to rotate: set its 'password' field first"
        )));
    }
    let backend = core.backends.for_connection(name, &config)?;
    let new_password = default_password();
    let target = backend.connect(&config).await?;

    config.pending_root_password = Some(new_password.clone());
    connection_config::save(core.storage.as_ref(), name, &config).await?;
    core.crash_point("root_pending");

    let statements = root_rotation_statements(backend.as_ref(), &config);
    let changed = match (&statements, config.setting_str("username")) {
        (Some(statements), Some(user)) => {
            within(
                TARGET_TIMEOUT,
                "change its password",
                target.set_password(user, &new_password, statements),
            )
            .await
        }
        _ => {
            within(
                TARGET_TIMEOUT,
                "change its password",
                target.rotate_root(&new_password),
            )
            .await
        }
    };
    core.crash_point("root_changed");
    let adopted = match changed {
        Ok(()) => true,
        // The reply may have been lost after the server applied the change: ask the target
        // which password works before forgetting the new one. If it cannot tell, the pending
        // password stays stored and is settled on the connection's next use.
        Err(_) => match which_works(core, name, &config).await {
            Some(adopted) => adopted,
            None => return Err(changed.unwrap_err()),
        },
    };
    commit(core, name, &mut config, adopted).await?;
    core.invalidate();
    match changed {
        Ok(()) => {
            tracing::info!(connection = name, "root credential rotated");
            Ok(Response::empty())
        }
        Err(_) if adopted => {
            tracing::info!(
                connection = name,
                "root credential rotated (the target's reply was lost)"
            );
            Ok(Response::empty())
        }
        Err(e) => {
            tracing::warn!(connection = name, error = %e, "root credential rotation failed; the old password stays");
            Err(e)
        }
    }
}

/// The connection's `root_rotation_statements`, where its kind runs them and there are some.
fn root_rotation_statements(
    backend: &dyn crate::contract::backend::Backend,
    config: &ConnectionConfig,
) -> Option<Vec<String>> {
    if !backend.runs_root_rotation_statements() {
        return None;
    }
    let statements: Vec<String> = config
        .settings
        .get(connection_config::ROOT_ROTATION_STATEMENTS)?
        .as_array()?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    (!statements.is_empty()).then_some(statements)
}

/// The paths this module serves, for the engine's table.
pub(crate) fn paths() -> Vec<PathDef> {
    vec![PathDef {
        pattern: "rotate-root/{name}",
        fields: vec![],
        operations: vec![op(Operation::Update, |c| {
            Box::pin(rotate(c.core, c.param("name")))
        })],
        reads_act: false,
        synopsis: "Replace the password of the connection's own user with one only mayfly \
                knows.",
        description: "The new password is stored as pending before the target is changed \
                and becomes the connection's password once the target has it; a rotation \
                stopped midway (error, lost reply, crash) is settled by asking the target which \
                password it takes, so the connection never loses a working password. Rotate \
                only a user dedicated to mayfly: anyone else using it is locked out.",
    }]
}
