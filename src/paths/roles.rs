//! `roles/NAME`: dynamic roles. What a role is and how a write is parsed is `model::role`.

use serde_json::{Map, Value, json};

use crate::contract::backend::Backends;
use crate::contract::error::Error;
use crate::contract::request::{Operation, Response};
use crate::contract::storage::Kv;
use crate::model::role::{self, connection, key, load};
use crate::paths::router::Call;
use crate::paths::router::{PathDef, op};

/// What a read of `roles/NAME` shows: the role, who enforces its credentials' deadlines, and
/// what its kind derives from it (left out when the role's connection is gone).
pub async fn read(
    kv: &dyn Kv,
    backends: &Backends,
    name: &str,
) -> Result<Option<Map<String, Value>>, Error> {
    let Some(role) = load(kv, name).await? else {
        return Ok(None);
    };
    let mut view = role.view();
    if let Ok((_, backend)) = connection(kv, backends, &role.db_name).await {
        view.insert(
            "expiry_enforcement".into(),
            json!(backend.expiry_enforcement().as_str()),
        );
        view.extend(backend.describe_role(&role.settings));
    }
    Ok(Some(view))
}

pub async fn delete(kv: &dyn Kv, name: &str) -> Result<(), Error> {
    Ok(kv.delete(&key(name)).await?)
}

async fn on_read(c: Call<'_>) -> Result<Response, Error> {
    let found = read(c.core.storage.as_ref(), &c.core.backends, c.param("name")).await?;
    Ok(found.map(Response::data).unwrap_or_default())
}

async fn on_update(c: Call<'_>) -> Result<Response, Error> {
    let (core, name) = (c.core, c.param("name"));
    let kv = core.storage.as_ref();
    let warnings = role::write(kv, &core.backends, &core.mark, name, &c.req.data).await?;
    tracing::info!(role = name, "role saved");
    Ok(Response {
        warnings,
        ..Response::empty()
    })
}

async fn on_delete(c: Call<'_>) -> Result<Response, Error> {
    let name = c.param("name");
    delete(c.core.storage.as_ref(), name).await?;
    tracing::info!(role = name, "role deleted");
    Ok(Response::empty())
}

/// The paths this module serves, for the engine's table.
pub(crate) fn paths(backends: &Backends) -> Vec<PathDef> {
    vec![
        PathDef {
            pattern: "roles/",
            fields: vec![],
            operations: vec![op(Operation::List, |c| {
                Box::pin(
                    async move { Ok(Response::list(role::list(c.core.storage.as_ref()).await?)) },
                )
            })],
            reads_act: false,
            synopsis: "List the roles.",
            description: "",
        },
        PathDef {
            pattern: "roles/{name}",
            fields: role::all_fields(backends),
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
            synopsis: "A dynamic role: which connection, how principals are created, renewed \
                and revoked, and how long they live.",
            description: "Common fields are db_name, default_ttl, max_ttl, username_template \
                and password_policy; each kind adds its own (postgres: creation_statements, \
                revocation_statements, renew_statements, member_of). Statements use OpenBao's \
                placeholders {{name}}, {{username}}, {{password}} and {{expiration}}. Fields \
                left out of an update keep their stored values.",
        },
    ]
}
