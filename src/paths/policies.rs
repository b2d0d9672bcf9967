//! `policies/NAME`: the mount's Cedar policies, `policies-schema` (the schema they are
//! validated against) and `policies/simulate` (the decision a hypothetical request would get).
//!
//! A policy is checked against the schema when written and refused with the parser's or the
//! validator's message and location. The mount compiles its policies once and reuses the set
//! until one is written or deleted ([`MountCore::policies`]); `model::policy_store` keeps them.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::contract::error::Error;
use crate::contract::fields::{FieldDef, FieldType, Fields};
use crate::contract::host::now;
use crate::contract::request::Operation;
use crate::contract::request::{Request, Requester, Response};
use crate::contract::storage::Kv;
use crate::jobs::hold;
use crate::model::ledger::{self, State};
use crate::model::policy_set;
use crate::model::policy_store;
use crate::model::task::{self, Task};
use crate::mount::MountCore;
use crate::mount::decision::{self, CredentialFacts, Facts, PolicyAction, Resource, RoleFacts};
use crate::paths::router::{PathDef, op};
use crate::paths::tasks;

pub fn fields() -> Vec<FieldDef> {
    vec![
        FieldDef::new(
            "policy",
            FieldType::String,
            "Cedar policy text: one or more permit or forbid policies, validated against \
             policies-schema. A permit may carry @max_ttl(\"15m\") to cap the TTL it grants.",
        )
        .required(),
    ]
}

pub fn simulate_fields() -> Vec<FieldDef> {
    vec![
        FieldDef::new(
            "action",
            FieldType::String,
            "issue, renew, create_task, update_task or hold.",
        )
        .required(),
        FieldDef::new(
            "cred_id",
            FieldType::String,
            "hold: the live credential to decide (its requester, role, task and times); left \
             out, a credential issued from role at time.",
        ),
        FieldDef::new(
            "role",
            FieldType::String,
            "The role issued or renewed from (issue, renew, and hold without cred_id).",
        ),
        FieldDef::new(
            "entity_id",
            FieldType::String,
            "The requesting identity entity; left out, the caller's own. An empty string is \
             a token without an entity.",
        ),
        FieldDef::new(
            "display_name",
            FieldType::String,
            "The requesting token's display name; left out, the caller's own.",
        ),
        FieldDef::new(
            "task_id",
            FieldType::String,
            "An existing task the request is under (issue, renew, update_task).",
        ),
        FieldDef::new(
            "source_address",
            FieldType::String,
            "The client's address; left out, the caller's own.",
        ),
        FieldDef::new(
            "time",
            FieldType::String,
            "When the request is made: Unix seconds or RFC 3339 (2026-11-22T02:13:00Z); \
             left out, now.",
        ),
        FieldDef::new(
            "ttl",
            FieldType::Duration,
            "The TTL the request asks for (the increment, for renew).",
        ),
        FieldDef::new(
            "headers",
            FieldType::StringMap,
            "Request headers as the mount would pass them through.",
        ),
        FieldDef::new(
            "description",
            FieldType::String,
            "The description of the task a create_task would create.",
        ),
        FieldDef::new(
            "metadata",
            FieldType::StringMap,
            "The metadata of the task a create_task would create.",
        ),
    ]
}

/// `policies/NAME` write: checks the document and stores it. The reply says how many live
/// credentials the policies, with this document, end now (`hold_would_end`): the hold sweep
/// this write wakes ends them.
pub async fn write(
    core: &MountCore,
    name: &str,
    data: &Map<String, Value>,
) -> Result<Response, Error> {
    let kv = core.storage.as_ref();
    let fields = Fields::parse(&fields(), data)?;
    let text = fields
        .str("policy")
        .ok_or_else(|| Error::bad_request("field 'policy' is required: Cedar policy text"))?;
    let doc = policy_set::check_document(name, text)?;
    let mut warnings = doc.warnings;
    // Another stored document that no longer checks must not block this write (it may be
    // the fix's first step): the count is then left out, and a warning says why.
    let would_end = match policy_store::compile_with(kv, name, text).await {
        Ok(candidate) => {
            let judged = hold::judge(core, &Arc::new(candidate), now()).await?;
            for e in &judged.errors {
                warnings.push(format!("hold: not decided: {e}"));
            }
            Some(judged.ending.len())
        }
        Err(e) => {
            warnings.push(format!("hold_would_end not counted: {e}"));
            None
        }
    };
    policy_store::save(kv, name, text).await?;
    let ids: Vec<String> = doc.policies.iter().map(|p| p.id().to_string()).collect();
    tracing::info!(policy = name, ids = %ids.join(","), hold_would_end = ?would_end,
        "policy saved");
    let mut data = Map::new();
    data.insert("policy_ids".into(), json!(ids));
    data.insert("hold_would_end".into(), json!(would_end));
    Ok(Response {
        data: Some(data),
        warnings,
        lease: None,
    })
}

pub async fn read(kv: &dyn Kv, name: &str) -> Result<Response, Error> {
    let Some(stored) = policy_store::load(kv, name).await? else {
        return Ok(Response::empty());
    };
    let ids: Vec<String> = policy_set::check_document(name, &stored.policy)
        .map(|d| d.policies.iter().map(|p| p.id().to_string()).collect())
        .unwrap_or_default();
    let mut data = Map::new();
    data.insert("policy".into(), json!(stored.policy));
    data.insert("policy_ids".into(), json!(ids));
    data.insert("updated_at".into(), json!(stored.updated_at));
    Ok(Response::data(data))
}

pub async fn list(kv: &dyn Kv) -> Result<Response, Error> {
    Ok(Response::list(kv.list(policy_store::PREFIX).await?))
}

pub async fn delete(kv: &dyn Kv, name: &str) -> Result<Response, Error> {
    kv.delete(&policy_store::key(name)).await?;
    tracing::info!(policy = name, "policy deleted");
    Ok(Response::empty())
}

/// `policies-schema`: the schema in Cedar's own syntax and as JSON, and the actions.
pub fn schema() -> Response {
    let mut data = Map::new();
    data.insert("schema".into(), json!(policy_set::SCHEMA_TEXT));
    if let Ok((fragment, _)) =
        cedar_policy::SchemaFragment::from_cedarschema_str(policy_set::SCHEMA_TEXT)
        && let Ok(text) = fragment.to_json_string()
        && let Ok(v) = serde_json::from_str::<Value>(&text)
    {
        data.insert("schema_json".into(), v);
    }
    data.insert(
        "actions".into(),
        json!(PolicyAction::ALL.map(PolicyAction::name)),
    );
    Response::data(data)
}

/// `policies/simulate`: the decision a hypothetical request would get, made as a live one is
/// (the same facts, the same policies, the same TTL rules), without doing anything. For
/// `hold`, the credential is a live one of the ledger (`cred_id`), or one issued from `role`
/// at `time`.
pub async fn simulate(core: &MountCore, req: &Request) -> Result<Response, Error> {
    // `time` is a string field that also takes Unix seconds as a JSON number.
    let mut data = req.data.clone();
    if let Some(Value::Number(n)) = data.get("time") {
        data.insert("time".into(), Value::String(n.to_string()));
    }
    let fields = Fields::parse(&simulate_fields(), &data)?;
    let action_name = fields.str("action").unwrap_or_default();
    let action = PolicyAction::parse(action_name).ok_or_else(|| {
        Error::bad_request(format!(
            "field 'action': expected issue, renew, create_task, update_task or hold, got \
             \"{action_name}\""
        ))
    })?;
    let now = match fields.str("time") {
        None => now(),
        Some(t) => parse_time(t)?,
    };
    let kv = core.storage.as_ref();
    let record = match (action, fields.str("cred_id")) {
        (PolicyAction::Hold, Some(id)) => Some(
            ledger::load(kv, id)
                .await?
                .filter(|c| c.state != State::Revoked)
                .ok_or_else(|| {
                    Error::bad_request(format!("field 'cred_id': no live credential '{id}'"))
                })?,
        ),
        (_, Some(_)) => {
            return Err(Error::bad_request(
                "field 'cred_id' is only for simulating 'hold'",
            ));
        }
        _ => None,
    };
    // The caller's own, or the credential's requester, unless given.
    let base = record
        .as_ref()
        .map_or_else(|| req.requester.clone(), |c| Requester::from(&c.requester));
    let requester = Requester {
        entity_id: fields
            .str("entity_id")
            .map_or(base.entity_id, str::to_owned),
        token_accessor: base.token_accessor,
        display_name: fields
            .str("display_name")
            .map_or(base.display_name, str::to_owned),
        remote_addr: fields
            .str("source_address")
            .map_or(base.remote_addr, str::to_owned),
    };
    let headers: BTreeMap<String, String> = fields
        .map("headers")
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let asked = fields.duration("ttl");
    let task_id = fields
        .str("task_id")
        .or_else(|| record.as_ref()?.task_id.as_deref());
    let task = match task_id {
        Some(id) => Some(
            task::load(kv, id)
                .await?
                .ok_or_else(|| Error::bad_request(format!("field 'task_id': no task '{id}'")))?,
        ),
        None => None,
    };

    // (task, TTL, role name, connection, labels, credential's creation and deadline)
    let mut credential = None;
    let (facts_task, ttl, role) = match action {
        PolicyAction::Issue | PolicyAction::Renew | PolicyAction::Hold => {
            let role_name = match &record {
                Some(c) => c.role.as_str(),
                None => fields.str("role").ok_or_else(|| {
                    Error::bad_request(format!(
                        "field 'role' is required to simulate '{action_name}'"
                    ))
                })?,
            };
            let role = core.role(role_name).await?;
            let ttl = match (&record, &role) {
                // A role deleted since still names the credential's resource.
                (Some(c), _) => {
                    credential = Some((c.id.clone(), c.created_at, c.deadline));
                    c.deadline.saturating_sub(now)
                }
                (None, Some(role)) => {
                    let mount_max = core.max_lease_ttl().await?.as_secs();
                    let grant = crate::paths::creds::ttl_grant(
                        core,
                        role,
                        asked,
                        task.as_ref(),
                        now,
                        mount_max,
                    )
                    .await?;
                    if action == PolicyAction::Hold {
                        credential = Some(("simulated".to_owned(), now, now + grant.ttl));
                    }
                    grant.ttl
                }
                (None, None) => {
                    return Err(Error::bad_request(format!(
                        "field 'role': no role '{role_name}'"
                    )));
                }
            };
            let (connection, labels) = match role {
                Some(r) => (r.db_name, r.labels),
                None => (
                    record
                        .as_ref()
                        .map(|c| c.connection.clone())
                        .unwrap_or_default(),
                    BTreeMap::new(),
                ),
            };
            (task, ttl, Some((role_name.to_owned(), connection, labels)))
        }
        PolicyAction::CreateTask => {
            let (ttl, _) = tasks::task_ttl(core, asked).await?;
            let task = Task::open(
                "simulated".into(),
                fields.str("description").unwrap_or(""),
                fields.map("metadata"),
                &requester,
                true,
                now,
                ttl,
            );
            (Some(task), ttl, None)
        }
        PolicyAction::UpdateTask => {
            let Some(task) = task else {
                return Err(Error::bad_request(
                    "field 'task_id' is required to simulate 'update_task'",
                ));
            };
            let ttl = match asked {
                Some(_) => tasks::task_ttl(core, asked).await?.0,
                None => task.deadline.saturating_sub(now),
            };
            (Some(task), ttl, None)
        }
    };
    let kind = match &role {
        Some((_, connection, _)) => core.connection_kind(connection).await?,
        None => String::new(),
    };
    let resource = match &role {
        Some((name, connection, labels)) => Resource::Role(RoleFacts {
            name,
            kind: &kind,
            connection,
            labels,
        }),
        None => Resource::Task,
    };
    let facts = Facts {
        approval: None,
        credential: credential
            .as_ref()
            .map(|(id, created_at, deadline)| CredentialFacts {
                id,
                created_at: *created_at,
                deadline: *deadline,
            }),
        action,
        requester: &requester,
        headers: &headers,
        resource,
        task: facts_task.as_ref(),
        requested_ttl: if action == PolicyAction::Hold {
            0
        } else {
            asked.unwrap_or(0)
        },
        ttl,
        now,
    };
    let decision = decision::decide(core, &facts).await?;
    let granted = match decision.max_ttl {
        Some(cap) if decision.allowed => ttl.min(cap),
        _ => ttl,
    };
    let mut data = Map::new();
    data.insert(
        "decision".into(),
        json!(if decision.allowed { "allow" } else { "deny" }),
    );
    data.insert("policies".into(), json!(decision.determining));
    data.insert("in_scope".into(), json!(decision.in_scope));
    data.insert("max_ttl".into(), json!(decision.max_ttl));
    data.insert("ttl".into(), json!(granted));
    data.insert("errors".into(), json!(decision.errors));
    data.insert("summary".into(), json!(decision.summary()));
    data.insert("time".into(), json!(now));
    Ok(Response::data(data))
}

/// Unix seconds, or an RFC 3339 time.
fn parse_time(text: &str) -> Result<u64, Error> {
    if let Ok(secs) = text.trim().parse::<u64>() {
        return Ok(secs);
    }
    time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| u64::try_from(t.unix_timestamp()).ok())
        .ok_or_else(|| {
            Error::bad_request(format!(
                "field 'time': expected Unix seconds or an RFC 3339 time such as \
                 2026-11-22T02:13:00Z, got \"{text}\""
            ))
        })
}

/// The paths this module serves, for the engine's table.
pub(crate) fn paths() -> Vec<PathDef> {
    vec![
        PathDef {
            pattern: "policies/",
            fields: vec![],
            operations: vec![op(Operation::List, |c| {
                Box::pin(list(c.core.storage.as_ref()))
            })],
            reads_act: false,
            synopsis: "List the Cedar policies.",
            description: "",
        },
        PathDef {
            pattern: "policies/simulate",
            fields: simulate_fields(),
            operations: vec![op(Operation::Update, |c| Box::pin(simulate(c.core, c.req)))],
            reads_act: false,
            synopsis: "The decision a hypothetical request would get: allow or deny, the \
                policies that determined it, those in scope, and the TTL it would be granted.",
            description: "Made exactly as a live decision is, from the same policies, with the \
                given entity, task, address, time and headers in place of the caller's. This \
                path is matched before policies/NAME, so no policy can be named 'simulate'.",
        },
        PathDef {
            pattern: "policies/{name}",
            fields: fields(),
            operations: vec![
                op(Operation::Read, |c| {
                    Box::pin(read(c.core.storage.as_ref(), c.param("name")))
                }),
                op(Operation::Update, |c| {
                    Box::pin(
                        c.core
                            .invalidating(write(c.core, c.param("name"), &c.req.data)),
                    )
                }),
                op(Operation::Delete, |c| {
                    Box::pin(
                        c.core
                            .invalidating(delete(c.core.storage.as_ref(), c.param("name"))),
                    )
                }),
            ],
            reads_act: false,
            synopsis: "A Cedar policy document, evaluated at every issuance, renewal and task \
                creation or update.",
            description: "The text is validated against the schema at policies-schema; a \
                document that does not parse or validate is refused with the message and its \
                line and column. Policies whose scope (action and resource) covers a request \
                decide it: denied unless a permit is satisfied and no forbid is. A request no \
                policy covers is decided by the role alone, as without policies. A denial is \
                a 403 that names the deciding policies. A document's first policy is known by \
                its name, the next as NAME#2, and so on.",
        },
        PathDef {
            pattern: "policies-schema",
            fields: vec![],
            operations: vec![op(Operation::Read, |_| Box::pin(async { Ok(schema()) }))],
            reads_act: false,
            synopsis: "The Cedar schema policies are validated against: entity types, \
                attributes, actions and the request context.",
            description: "",
        },
    ]
}
