//! A root rotation that stopped midway, settled before the connection is used again: the
//! target is asked which of the two passwords it takes (see `paths::rotate_root`, the path that
//! rotates).

use super::MountCore;
use crate::contract::connection_config::{self, ConnectionConfig};
use crate::contract::error::Error;

/// The connection setting that holds its own password.
pub(crate) const PASSWORD: &str = "password";

/// Settles a rotation that stopped midway, if there is one, before connection `name` is used.
/// Cheap when there is none: the caller only calls it for a configuration with a pending
/// password.
pub(crate) async fn settle(core: &MountCore, name: &str) -> Result<(), Error> {
    let _one_at_a_time = core.root_rotation.lock(name).await;
    settle_locked(core, name).await.map(|_| ())
}

/// The stored configuration of `name`, with any pending password adopted (if the target takes
/// it) or dropped (if not). The caller holds `root_rotation`.
pub(crate) async fn settle_locked(core: &MountCore, name: &str) -> Result<ConnectionConfig, Error> {
    let mut config = connection_config::load(core.storage.as_ref(), name)
        .await?
        .ok_or_else(|| Error::bad_request(format!("no connection named '{name}'")))?;
    if config.pending_root_password.is_some() {
        let adopted = which_works(core, name, &config).await.ok_or_else(|| {
            Error::Unavailable(format!(
                "connection '{name}': a root rotation stopped midway and the target cannot be \
                 asked which password it now takes; retried on the next use"
            ))
        })?;
        tracing::info!(
            connection = name,
            adopted,
            "settled a root rotation that stopped midway"
        );
        commit(core, name, &mut config, adopted).await?;
        core.invalidate();
    }
    Ok(config)
}

/// Which password the target takes: `Some(true)` the pending one, `Some(false)` the stored
/// one, `None` neither (the target cannot be reached, so nothing can be decided).
pub(crate) async fn which_works(
    core: &MountCore,
    name: &str,
    config: &ConnectionConfig,
) -> Option<bool> {
    let pending = config.pending_root_password.as_ref()?;
    let backend = core.backends.for_connection(name, config).ok()?;
    let mut trial = config.clone();
    trial.pending_root_password = None;
    if backend.verify_connection(&trial).await.is_ok() {
        // Checked first: the stored password working means the change never happened.
        return Some(false);
    }
    trial.secrets.insert(PASSWORD.into(), pending.clone());
    backend
        .verify_connection(&trial)
        .await
        .is_ok()
        .then_some(true)
}

/// Stores the outcome: the pending password becomes the password (`adopted`) or is dropped.
pub(crate) async fn commit(
    core: &MountCore,
    name: &str,
    config: &mut ConnectionConfig,
    adopted: bool,
) -> Result<(), Error> {
    if let Some(pending) = config.pending_root_password.take()
        && adopted
    {
        config.secrets.insert(PASSWORD.into(), pending);
    }
    connection_config::save(core.storage.as_ref(), name, config).await?;
    Ok(())
}
