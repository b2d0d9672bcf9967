//! `config/NAME`: connections to targets. Fields common to every kind live here; each kind adds
//! its own through [`Backend::connection_fields`]. What is stored, and how its secrets are kept,
//! is `connection_config`.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde_json::{Map, Value};

use crate::contract::backend::{Backend, Backends};
use crate::contract::connection_config::{
    self, ConnectionConfig, PASSWORD_POLICY, ROOT_ROTATION_STATEMENTS, USERNAME_TEMPLATE,
};
use crate::contract::error::Error;
use crate::contract::fields::{FieldDef, FieldType, FieldValue, Fields};
use crate::contract::request::{Operation, Response};
use crate::contract::storage::{self, Kv, Storage, StorageError};
use crate::paths::operator;
use crate::paths::router::{Call, PathDef, op};

/// The fields every kind accepts.
pub fn common_fields() -> Vec<FieldDef> {
    vec![
        FieldDef::new(
            "plugin_name",
            FieldType::String,
            "The kind of target: postgres, … (OpenBao's plugin names such as \
             postgresql-database-plugin are accepted as aliases). Required when creating.",
        ),
        FieldDef::new(
            "allowed_roles",
            FieldType::StringList,
            "Roles allowed to use this connection; \"*\" allows all. Empty allows none.",
        )
        .default(FieldValue::StringList(Vec::new())),
        FieldDef::new(
            "verify_connection",
            FieldType::Bool,
            "Connect to the target before saving, and refuse the configuration if that fails.",
        )
        .default(FieldValue::Bool(true)),
        FieldDef::new(
            USERNAME_TEMPLATE,
            FieldType::String,
            "The username_template of this connection's roles that set none (OpenBao's \
             connection field), under the same checks as a role's own.",
        ),
        FieldDef::new(
            PASSWORD_POLICY,
            FieldType::String,
            "The host's password policy for the passwords of this connection's roles that \
             name none.",
        ),
        FieldDef::new(
            ROOT_ROTATION_STATEMENTS,
            FieldType::Statements,
            "Statements rotate-root runs to change the connection's own password, with \
             {{name}} (or {{username}}) and {{password}}; without them, the kind's own way. \
             Kinds without statements (redis, aws, http) accept and ignore them, with a \
             warning.",
        ),
        FieldDef::new(
            PLUGIN_VERSION,
            FieldType::String,
            "Accepted for OpenBao's clients and ignored, with a warning: mayfly serves every \
             kind itself, at its own version.",
        ),
    ]
}

const PLUGIN_VERSION: &str = "plugin_version";

/// Every field any kind accepts: common ones first, then each kind's, once.
pub fn all_fields(backends: &Backends) -> Vec<FieldDef> {
    let mut out = common_fields();
    for b in backends.iter() {
        for f in b.connection_fields() {
            if !out.iter().any(|o| o.name == f.name) {
                out.push(f);
            }
        }
    }
    out
}

/// Creates or updates `config/NAME`. Fields not given keep their stored values, so a secret can
/// stay in place while other settings change. Returns the configuration and the warnings for
/// the reply (fields accepted for OpenBao's clients that mayfly does not use).
///
/// The merge and the connection check run against what is stored now, outside any transaction,
/// because the check talks to the target and may take seconds. The write then happens in a
/// storage transaction (where the host offers one) only if the stored value is still the one
/// that was merged, so two concurrent updates cannot lose each other's fields; otherwise the
/// whole write is tried again.
pub async fn write(
    storage: &dyn Storage,
    backends: &Backends,
    name: &str,
    data: &Map<String, Value>,
) -> Result<(ConnectionConfig, Vec<String>), Error> {
    const ATTEMPTS: usize = 3;
    let key = connection_config::key(name);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let base = storage.get(&key).await?;
        let existing = base
            .as_deref()
            .map(|b| connection_config::decode(&key, b))
            .transpose()?;
        let (backend, config, warnings) = merge(backends, name, existing, data)?;
        if config.verify_connection {
            backend.verify_connection(&config).await.inspect_err(|e| {
                tracing::error!(connection = name, kind = %config.plugin_name, error = %e,
                    "connection verification failed; configuration not saved");
            })?;
        }
        let Some(tx) = storage.begin().await? else {
            // No transactions (HashiCorp Vault): the same check and save, one step against
            // every other write of this connection in this process, the only one that writes.
            let _one_at_a_time = storage::key_lock(&key).await;
            if storage.get(&key).await? != base {
                if attempt < ATTEMPTS {
                    continue;
                }
                return Err(StorageError::Conflict.into());
            }
            connection_config::save(storage, name, &config).await?;
            return Ok((config, warnings));
        };
        let unchanged = match tx.get(&key).await {
            Ok(now) => now == base,
            Err(e) => {
                tx.rollback().await?;
                return Err(e.into());
            }
        };
        let outcome = if unchanged {
            match connection_config::save(tx.as_ref(), name, &config).await {
                Ok(()) => tx.commit().await,
                Err(e) => {
                    tx.rollback().await?;
                    Err(e)
                }
            }
        } else {
            tx.rollback().await?;
            Err(StorageError::Conflict)
        };
        match outcome {
            Ok(()) => return Ok((config, warnings)),
            Err(StorageError::Conflict) if attempt < ATTEMPTS => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether writing `data` to connection `name` would point it at another server: what its
/// credentials' revocations must not see happen under them. A new `tls_ca` (the server's
/// certificate renewed) is the same server.
pub async fn moves(
    kv: &dyn Kv,
    backends: &Backends,
    name: &str,
    data: &Map<String, Value>,
) -> Result<bool, Error> {
    let Some(existing) = connection_config::load(kv, name).await? else {
        return Ok(false);
    };
    let (backend, after, _) = merge(backends, name, Some(existing.clone()), data)?;
    let place = |c: &ConnectionConfig| {
        let mut d = backend.reach(c).destination;
        d.remove("tls_ca");
        d
    };
    Ok(place(&existing) != place(&after))
}

/// Builds the configuration that a write produces, without touching storage or the target.
fn merge<'b>(
    backends: &'b Backends,
    name: &str,
    existing: Option<ConnectionConfig>,
    data: &Map<String, Value>,
) -> Result<(&'b dyn Backend, ConnectionConfig, Vec<String>), Error> {
    let requested = match data.get("plugin_name") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(other) => {
            return Err(Error::bad_request(format!(
                "field 'plugin_name': expected a string naming the kind, got {other}"
            )));
        }
    };
    let kind_name = match (requested, &existing) {
        (Some(k), _) => k.to_owned(),
        (None, Some(e)) => e.plugin_name.clone(),
        (None, None) => {
            return Err(Error::bad_request(format!(
                "field 'plugin_name' is required to create connection '{name}': one of {}",
                backends.describe()
            )));
        }
    };
    let backend = backends.find(&kind_name).ok_or_else(|| {
        Error::bad_request(format!(
            "field 'plugin_name': unknown kind '{kind_name}'; known kinds: {}",
            backends.describe()
        ))
    })?;
    if let Some(e) = existing
        .as_ref()
        .filter(|e| e.plugin_name != backend.kind())
    {
        return Err(Error::bad_request(format!(
            "field 'plugin_name': connection '{name}' is of kind '{}' and cannot become '{}'; \
             delete it and create it again",
            e.plugin_name,
            backend.kind()
        )));
    }

    let kind_fields = backend.connection_fields();
    let mut defs = common_fields();
    defs.extend(kind_fields.iter().cloned());
    let fields = Fields::parse(&defs, data)?;

    let before = existing.clone();
    let mut config = existing.unwrap_or_else(|| ConnectionConfig {
        plugin_name: backend.kind().to_owned(),
        allowed_roles: Vec::new(),
        verify_connection: true,
        settings: Map::new(),
        secrets: BTreeMap::new(),
        pending_root_password: None,
    });
    if let Some(roles) = fields.list("allowed_roles") {
        config.allowed_roles = roles.to_vec();
    }
    if let Some(v) = fields.bool("verify_connection") {
        config.verify_connection = v;
    }
    for field in [USERNAME_TEMPLATE, PASSWORD_POLICY, ROOT_ROTATION_STATEMENTS] {
        match fields.get(field) {
            Some(FieldValue::String(s)) if s.is_empty() => {
                config.settings.remove(field);
            }
            Some(FieldValue::StringList(l)) if l.is_empty() => {
                config.settings.remove(field);
            }
            Some(v) => {
                config.settings.insert(field.into(), v.to_json());
            }
            None => {}
        }
    }
    let mut warnings = Vec::new();
    if fields.get(PLUGIN_VERSION).is_some() {
        warnings.push(format!(
            "field '{PLUGIN_VERSION}' is ignored: mayfly serves kind '{}' itself, at its own \
             version",
            backend.kind()
        ));
    }
    if fields.get(ROOT_ROTATION_STATEMENTS).is_some() && !backend.runs_root_rotation_statements() {
        warnings.push(format!(
            "field '{ROOT_ROTATION_STATEMENTS}' is kept but not used: rotate-root on kind '{}' \
             changes the password its own way",
            backend.kind()
        ));
    }
    if let Some(t) = config.setting_str(USERNAME_TEMPLATE) {
        // Its roles check the names it makes for them, with their own mark and limits.
        crate::model::role::sample_name(t, "role", crate::contract::template::LEGACY_MARK)?;
    }
    for def in &kind_fields {
        if fields.get(def.name).is_some() {
            warnings.extend(def.unused_warning(backend.kind()));
        }
        match (fields.get(def.name), def.secret) {
            (Some(FieldValue::String(s)), true) => {
                // A password the operator sets supersedes a rotation that stopped midway.
                if def.name == "password" {
                    config.pending_root_password = None;
                }
                config
                    .secrets
                    .insert(def.name.into(), SecretString::from(s.clone()));
            }
            (Some(v), false) => {
                config.settings.insert(def.name.into(), v.to_json());
            }
            (Some(_), true) => unreachable!("secret fields are strings"),
            (None, _) if !config.settings.contains_key(def.name) && !def.secret => {
                if let Some(d) = &def.default {
                    config.settings.insert(def.name.into(), d.to_json());
                }
            }
            (None, _) => {}
        }
        let present =
            config.settings.contains_key(def.name) || config.secrets.contains_key(def.name);
        if def.required && !present {
            return Err(Error::bad_request(format!(
                "field '{}' is required for plugin_name '{}': {}",
                def.name,
                backend.kind(),
                def.description
            )));
        }
    }
    if let Some(FieldValue::StringList(statements)) = fields.get(ROOT_ROTATION_STATEMENTS)
        && !statements.is_empty()
        && backend.runs_root_rotation_statements()
    {
        let user = config.setting_str("username").unwrap_or_default();
        if user.is_empty() {
            return Err(Error::bad_request(format!(
                "field '{ROOT_ROTATION_STATEMENTS}' needs the connection's 'username': the \
                 statements change that user's password"
            )));
        }
        backend
            .validate_rotation_statements(statements, user)
            .map_err(|e| Error::bad_request(format!("field '{ROOT_ROTATION_STATEMENTS}': {e}")))?;
    }
    backend.normalize_connection(&mut config, data)?;
    backend.validate_connection(&config)?;
    if let Some(before) = &before {
        secrets_follow_the_destination(backend.as_ref(), name, before, &config, &fields)?;
    }
    Ok((backend.as_ref(), config, warnings))
}

/// Refuses a write that changes where connection `name` sends its stored secrets, or lowers
/// how strictly it checks that server, unless the write gives every secret again: a caller
/// who may write a connection but not read its secrets cannot point them at a server of
/// theirs, nor let one stand in for the real server.
fn secrets_follow_the_destination(
    backend: &dyn Backend,
    name: &str,
    before: &ConnectionConfig,
    after: &ConnectionConfig,
    given: &Fields,
) -> Result<(), Error> {
    let (was, now) = (backend.reach(before), backend.reach(after));
    let changes: Vec<String> = was
        .destination
        .keys()
        .chain(now.destination.keys())
        .filter(|k| was.destination.get(*k) != now.destination.get(*k))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|k| format!("'{k}'"))
        .collect();
    let weaker = now.server_check < was.server_check;
    if changes.is_empty() && !weaker {
        return Ok(());
    }
    let missing: Vec<&str> = before
        .secrets
        .keys()
        .map(String::as_str)
        .filter(|k| given.str(k).is_none_or(str::is_empty))
        .collect();
    let Some(first) = missing.first() else {
        return Ok(());
    };
    let what = match (changes.is_empty(), weaker) {
        (false, false) => format!("changes where it connects ({})", changes.join(", ")),
        (true, true) => "weakens how it checks the server".to_owned(),
        _ => format!(
            "changes where it connects ({}) and weakens how it checks the server",
            changes.join(", ")
        ),
    };
    Err(Error::bad_request(format!(
        "field '{first}' is required: this write to connection '{name}' {what}, and its stored \
         secrets ({}) go to a new destination only with a write that gives them again",
        missing.join(", ")
    )))
}

pub async fn read(kv: &dyn Kv, name: &str) -> Result<Option<Map<String, Value>>, Error> {
    Ok(connection_config::load(kv, name)
        .await?
        .map(|c| c.public_view()))
}

pub async fn delete(kv: &dyn Kv, name: &str) -> Result<(), Error> {
    Ok(kv.delete(&connection_config::key(name)).await?)
}

pub async fn list(kv: &dyn Kv) -> Result<Vec<String>, Error> {
    Ok(kv.list(connection_config::PREFIX).await?)
}

async fn on_read(c: Call<'_>) -> Result<Response, Error> {
    let found = read(c.core.storage.as_ref(), c.param("name")).await?;
    Ok(found.map(Response::data).unwrap_or_default())
}

async fn on_update(c: Call<'_>) -> Result<Response, Error> {
    let (core, name) = (c.core, c.param("name"));
    let kv = core.storage.as_ref();
    if moves(kv, &core.backends, name, &c.req.data).await? {
        operator::require_no_credentials(core, name, "point it elsewhere").await?;
    }
    let (config, warnings) = write(kv, &core.backends, name, &c.req.data).await?;
    core.forget_target(name);
    tracing::info!(connection = name, kind = %config.plugin_name, "connection saved");
    Ok(Response {
        warnings,
        ..Response::empty()
    })
}

async fn on_delete(c: Call<'_>) -> Result<Response, Error> {
    let (core, name) = (c.core, c.param("name"));
    operator::require_no_credentials(core, name, "delete it").await?;
    delete(core.storage.as_ref(), name).await?;
    core.forget_target(name);
    tracing::info!(connection = name, "connection deleted");
    Ok(Response::empty())
}

async fn on_reset(c: Call<'_>) -> Result<Response, Error> {
    let name = c.param("name");
    c.core.reset_target(name).await?;
    tracing::info!(connection = name, "connection reset");
    Ok(Response::empty())
}

/// The paths this module serves, for the engine's table.
pub(crate) fn paths(backends: &Backends) -> Vec<PathDef> {
    vec![
        PathDef {
            pattern: "config/",
            fields: vec![],
            operations: vec![op(Operation::List, |c| {
                Box::pin(async move { Ok(Response::list(list(c.core.storage.as_ref()).await?)) })
            })],
            reads_act: false,
            synopsis: "List the configured connections.",
            description: "",
        },
        PathDef {
            pattern: "config/{name}",
            fields: all_fields(backends),
            operations: vec![
                op(Operation::Read, |c| Box::pin(on_read(c))),
                op(Operation::Update, |c| {
                    Box::pin(c.core.invalidating(on_update(c)))
                }),
                op(Operation::Delete, |c| {
                    Box::pin(c.core.invalidating(on_delete(c)))
                }),
            ],
            reads_act: false,
            synopsis: "Configure a connection to a target (a database, a cloud account, an API).",
            description: "Fields common to all kinds are plugin_name, allowed_roles and \
                verify_connection; each kind adds its own (postgres: connection_url, username, \
                password, max_open_connections). Secret fields are write-only: a read lists \
                which are set, never their values. Fields left out of an update keep their \
                stored values.",
        },
        PathDef {
            pattern: "reset/{name}",
            fields: vec![],
            operations: vec![op(Operation::Update, |c| Box::pin(on_reset(c)))],
            reads_act: false,
            synopsis: "Close the connection's sessions to its target, reopen them and verify \
                the target takes them.",
            description: "For a target that restarted, failed over or had mayfly's account \
                changed by hand: the pool built from the stored configuration is replaced, \
                and the reset fails (the stored configuration unchanged) if the target refuses \
                it.",
        },
    ]
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;
    use serde_json::json;

    use super::*;
    use crate::contract::connection_config::{load, save};

    #[test]
    fn allowed_roles_match_names_and_patterns() {
        let mut c = ConnectionConfig {
            plugin_name: "fake".into(),
            allowed_roles: vec!["my-*-role".into(), "reader".into()],
            verify_connection: true,
            settings: Map::new(),
            secrets: BTreeMap::new(),
            pending_root_password: None,
        };
        for yes in ["my-dynamic-role", "my--role", "reader"] {
            assert!(c.allows_role(yes), "{yes}");
        }
        for no in ["my-role", "readers", "other", "xmy-a-role"] {
            assert!(!c.allows_role(no), "{no}");
        }
        c.allowed_roles = vec!["*".into()];
        assert!(c.allows_role("anything"));
        c.allowed_roles = Vec::new();
        assert!(!c.allows_role("anything"));
    }
    use crate::contract::storage::InMemoryStorage;

    /// A kind whose connection check lets another writer change the stored config once, as a
    /// concurrent update landing during a slow verification would.
    struct Interfering {
        storage: InMemoryStorage,
        done: AtomicBool,
    }

    #[async_trait]
    impl Backend for Interfering {
        fn kind(&self) -> &'static str {
            "fake"
        }
        fn connection_fields(&self) -> Vec<FieldDef> {
            vec![
                FieldDef::new("a", FieldType::String, ""),
                FieldDef::new("b", FieldType::String, ""),
            ]
        }
        fn validate_connection(&self, _: &ConnectionConfig) -> Result<(), Error> {
            Ok(())
        }
        async fn verify_connection(&self, _: &ConnectionConfig) -> Result<(), Error> {
            if !self.done.swap(true, Ordering::SeqCst) {
                let mut other = load(&self.storage, "c").await.unwrap().unwrap();
                other.settings.insert("b".into(), json!("theirs"));
                save(&self.storage, "c", &other).await.unwrap();
            }
            Ok(())
        }
        async fn connect(
            &self,
            _: &ConnectionConfig,
        ) -> Result<Arc<dyn crate::contract::backend::Target>, Error> {
            Err(Error::Internal("not used by this test".into()))
        }
        fn role_fields(&self) -> Vec<FieldDef> {
            Vec::new()
        }
        fn validate_role(&self, _: &Map<String, Value>, _: &str) -> Result<(), Error> {
            Ok(())
        }
        fn validate_principal(&self, _: &str) -> Result<(), Error> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn an_update_landing_during_verification_is_not_lost() {
        let storage = InMemoryStorage::new();
        let backend = Arc::new(Interfering {
            storage: storage.clone(),
            done: AtomicBool::new(true),
        });
        let backends = Backends::new(vec![backend.clone()]);
        let create = json!({"plugin_name": "fake", "a": "0", "b": "0"});
        write(&storage, &backends, "c", create.as_object().unwrap())
            .await
            .unwrap();

        backend.done.store(false, Ordering::SeqCst);
        let update = json!({"a": "mine"});
        let (saved, _) = write(&storage, &backends, "c", update.as_object().unwrap())
            .await
            .unwrap();
        let stored = load(&storage, "c").await.unwrap().unwrap();
        assert_eq!(stored.settings["a"], "mine");
        assert_eq!(
            stored.settings["b"], "theirs",
            "the concurrent update survived"
        );
        assert_eq!(saved.settings, stored.settings);
    }
}
