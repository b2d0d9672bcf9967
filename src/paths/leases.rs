//! A credential's lease: the host's `renew` and `revoke` of it, and `leases/`, the ledger as
//! operators see it.

use serde_json::{Map, Value, json};

use crate::contract::backend::CREATE_TIMEOUT;
use crate::contract::error::Error;
use crate::contract::fields::{FieldDef, FieldType, Fields};
use crate::contract::host::now;
use crate::contract::request::Operation;
use crate::contract::request::{LeaseGrant, LeaseInfo, Request, Requester, Response};
use crate::jobs::revocation;
use crate::model::audit::{self, Action, Event};
use crate::model::ledger::{self, Credential, State};
use crate::model::task::{self, Task};
use crate::mount::MountCore;
use crate::mount::account;
use crate::mount::decision::{self, Facts, PolicyAction, Resource, RoleFacts};
use crate::mount::scheduler::Outcome;
use crate::paths::router::{PathDef, op};

/// `internal_data` keys: the Go framework's dispatch key (kept for compatibility) and the
/// ledger record.
const SECRET_TYPE: &str = "secret_type";
const CRED_ID: &str = "cred_id";

/// What the host keeps with a lease it grants for credential `id`, and hands back with each
/// renewal and revocation.
pub(crate) fn internal_data(id: &str) -> Map<String, Value> {
    let mut internal = Map::new();
    internal.insert(SECRET_TYPE.into(), json!("creds"));
    internal.insert(CRED_ID.into(), json!(id));
    internal
}

fn cred_id(req: &Request) -> Option<String> {
    req.lease
        .as_ref()?
        .internal_data
        .get(CRED_ID)?
        .as_str()
        .map(str::to_owned)
}

/// The host's `renew`: moves the deadline (and the target-side expiry) and echoes what the
/// host must keep (protocol document §5.2: the reply replaces the stored lease). Its `data` is
/// empty: the host hands it to whoever renewed, and OpenBao's `default` policy lets any token
/// renew any lease it knows the id of. A lease whose stored data still holds the secret (an
/// earlier mayfly echoed it) stops holding it at its next renewal. Emits one audit event.
pub async fn renew(core: &MountCore, req: &Request) -> Result<Response, Error> {
    let (mut record, mut policy) = (None, String::new());
    let result = renew_traced(core, req, &mut record, &mut policy).await;
    let id = cred_id(req).unwrap_or_default();
    let lease_id = req.lease.as_ref().map_or("", |l| l.lease_id.as_str());
    let (outcome, detail) = match &result {
        Ok(r) => (
            "renewed",
            format!("ttl {}s", r.lease.as_ref().map_or(0, |l| l.ttl)),
        ),
        Err(e @ Error::PermissionDenied(_)) => ("denied", e.to_string()),
        Err(e) => ("failed", e.to_string()),
    };
    let event = match &record {
        Some(c) => Event::for_credential(c),
        None => Event {
            cred_id: &id,
            ..Default::default()
        },
    };
    audit::emit(
        Action::Renew,
        outcome,
        &Event {
            lease_id,
            detail: &detail,
            policy: &policy,
            ..event
        },
    );
    result
}

async fn renew_traced(
    core: &MountCore,
    req: &Request,
    record: &mut Option<Credential>,
    policy: &mut String,
) -> Result<Response, Error> {
    let kv = core.storage.as_ref();
    let lease = req.lease.clone().unwrap_or_default();
    let id = cred_id(req)
        .ok_or_else(|| Error::bad_request("this lease carries no mayfly credential id"))?;
    // The record is written only over the one the renewal was decided on: one that changed
    // while the target was renewed (a revocation finished, another renewal landed) is decided
    // on again as it is now.
    for _ in 0..RENEW_ATTEMPTS {
        let seen = ledger::load(kv, &id)
            .await?
            .ok_or_else(|| Error::bad_request(format!("credential '{id}' is not in the ledger")))?;
        *record = Some(seen.clone());
        if let Some(renewed) = renew_once(core, req, &lease, seen, policy).await? {
            return Ok(renewed);
        }
    }
    Err(Error::Internal(format!(
        "credential '{id}' kept changing while it was being renewed; try again"
    )))
}

/// How many times a renewal is decided again on a record that changed under it.
const RENEW_ATTEMPTS: usize = 3;

/// Renews `seen`, the record as read, or returns `None` when it changed before the renewal
/// could be written.
async fn renew_once(
    core: &MountCore,
    req: &Request,
    lease: &LeaseInfo,
    seen: Credential,
    policy: &mut String,
) -> Result<Option<Response>, Error> {
    let kv = core.storage.as_ref();
    let id = seen.id.clone();
    let mut cred = seen.clone();
    if cred.state != State::Active {
        return Err(Error::bad_request(format!(
            "credential '{id}' is {} and cannot be renewed",
            cred.state.name()
        )));
    }
    let now = now();
    let increment = if lease.increment > 0 {
        lease.increment
    } else {
        cred.default_ttl
    };
    let mut limit = cred.max_deadline;
    let mut task = None;
    if let Some(task_id) = &cred.task_id {
        // The task may have been shortened since issuance: it still bounds the credential.
        match task::load(kv, task_id).await? {
            Some(t) if t.is_open(now) => {
                limit = limit.min(t.deadline);
                task = Some(t);
            }
            _ => {
                return Err(Error::bad_request(format!(
                    "credential '{id}' belongs to task '{task_id}', which has ended"
                )));
            }
        }
    }
    account::lap("lookups");
    let mut deadline = (now + increment).min(limit);
    if deadline <= now {
        return Err(Error::bad_request(format!(
            "credential '{id}' has reached its max_ttl and cannot be renewed"
        )));
    }
    let decided = renew_policy(core, req, &cred, task.as_ref(), deadline - now, now, policy);
    if let Some(cap) = decided.await? {
        deadline = deadline.min(now + cap);
    }
    account::lap("policy");
    let target = core.target(&cred.connection).await?;
    match tokio::time::timeout(
        CREATE_TIMEOUT,
        target.renew(&cred.as_principal(), deadline, &cred.settings),
    )
    .await
    {
        Ok(r) => r?,
        Err(_) => {
            return Err(Error::Target(format!(
                "the target did not renew within {}s",
                CREATE_TIMEOUT.as_secs()
            )));
        }
    }
    account::lap("target");
    let previous = cred.due;
    cred.deadline = deadline;
    cred.due = deadline;
    let swap = ledger::store_if_unchanged(core.storage.as_ref(), &seen, &cred, Some(previous));
    if swap.await? == ledger::Swap::Changed {
        return Ok(None);
    }
    core.scheduler.track(cred.due, &cred.id);
    account::lap("ledger");
    Ok(Some(Response {
        data: None,
        warnings: Vec::new(),
        lease: Some(LeaseGrant {
            ttl: deadline - now,
            max_ttl: lease.max_ttl,
            renewable: true,
            internal_data: lease.internal_data.clone(),
        }),
    }))
}

/// The policies' say on renewing `cred` to `ttl` seconds from now. The host says nothing of
/// who renews (OpenBao sends no entity or address with a lease renewal), so the principal and
/// source address are those the credential was issued to; headers are the renewal's own.
async fn renew_policy(
    core: &MountCore,
    req: &Request,
    cred: &Credential,
    task: Option<&Task>,
    ttl: u64,
    now: u64,
    logged: &mut String,
) -> Result<Option<u64>, Error> {
    let role = core.role(&cred.role).await?;
    let kind = core.connection_kind(&cred.connection).await?;
    let labels = role.map(|r| r.labels).unwrap_or_default();
    let requester = Requester::from(&cred.requester);
    let facts = Facts {
        approval: None,
        credential: None,
        action: PolicyAction::Renew,
        requester: &requester,
        headers: &req.headers,
        resource: Resource::Role(RoleFacts {
            name: &cred.role,
            kind: &kind,
            connection: &cred.connection,
            labels: &labels,
        }),
        task,
        requested_ttl: req.lease.as_ref().map_or(0, |l| l.increment),
        ttl,
        now,
    };
    decision::enforce(core, &facts, logged).await
}

/// The host's `revoke`. It joins the scheduler's next batch and returns once that batch is
/// recorded. A revocation that fails on the target still returns success: the ledger now owns
/// it and retries without end, which the host's own retry (six attempts, then "irrevocable")
/// would not.
pub async fn revoke(core: &MountCore, req: &Request) -> Result<Response, Error> {
    let Some(id) = cred_id(req) else {
        tracing::warn!("revoke of a lease without a mayfly credential id; nothing to do");
        return Ok(Response::empty());
    };
    let lease_id = req
        .lease
        .as_ref()
        .map(|l| l.lease_id.clone())
        .filter(|l| !l.is_empty());
    // The scheduler's batch emits the audit event of a revocation it makes; one of a
    // credential that was no longer live is emitted here.
    let outcome =
        revocation::revoke_within(core, &id, "revoked through the host", lease_id.clone()).await?;
    // The batch's own storage calls and target work are the sweep's, counted as background.
    account::lap("batch");
    if let Outcome::NotRecorded(why) = outcome {
        // The ledger does not hold it: the host must keep its lease and try again.
        return Err(Error::Internal(why));
    }
    if outcome == Outcome::NotLive {
        audit::emit(
            Action::Revoke,
            "not_live",
            &Event {
                cred_id: &id,
                lease_id: lease_id.as_deref().unwrap_or(""),
                detail: "revoked through the host; already revoked or purged",
                ..Default::default()
            },
        );
    }
    Ok(Response::empty())
}

/// `leases/`: the ledger as operators see it, filtered by `role` and `state`.
pub async fn list_leases(core: &MountCore, req: &Request) -> Result<Response, Error> {
    let defs = vec![
        FieldDef::new("role", FieldType::String, "Only credentials of this role."),
        FieldDef::new(
            "state",
            FieldType::String,
            "Only credentials in this state: intent, active, revoking or revoked.",
        ),
        FieldDef::new("list", FieldType::Bool, "Set by the client for LIST."),
    ];
    let fields = Fields::parse(&defs, &req.data)?;
    let state = match fields.str("state") {
        None => None,
        Some(s) => Some(State::parse(s).ok_or_else(|| {
            Error::bad_request(format!(
                "field 'state': expected intent, active, revoking or revoked, got \"{s}\""
            ))
        })?),
    };
    let loaded = ledger::scan(core.storage.as_ref()).await?;
    let mut keys = Vec::new();
    let mut info = Map::new();
    // Records this mayfly cannot read are listed whatever the filter: an operator must see them.
    for u in loaded.unreadable {
        info.insert(u.id.clone(), u.view());
        keys.push(u.id);
    }
    for c in loaded.records {
        if fields.str("role").is_some_and(|r| r != c.role) || state.is_some_and(|s| s != c.state) {
            continue;
        }
        keys.push(c.id.clone());
        info.insert(
            c.id.clone(),
            json!({"role": c.role, "state": c.state.name(), "principal": c.principal,
                   "deadline": c.deadline, "revocation_attempts": c.attempts,
                   "last_error": c.last_error}),
        );
    }
    let mut resp = Response::list(keys);
    if let Some(d) = resp.data.as_mut() {
        d.insert("key_info".into(), Value::Object(info));
    }
    Ok(resp)
}

pub async fn read_lease(core: &MountCore, id: &str) -> Result<Response, Error> {
    let kv = core.storage.as_ref();
    match ledger::load(kv, id).await {
        Ok(record) => Ok(record.map(|c| Response::data(c.view())).unwrap_or_default()),
        Err(e) if e.is_unreadable() => {
            let loaded = ledger::load_all(kv, &[id.to_owned()]).await?;
            let view = loaded.unreadable.first().map(|u| u.view());
            match view {
                Some(Value::Object(mut v)) => {
                    v.insert("id".into(), json!(id));
                    Ok(Response::data(v))
                }
                _ => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The paths this module serves, for the engine's table.
pub(crate) fn paths() -> Vec<PathDef> {
    vec![
        PathDef {
            pattern: "leases/",
            fields: vec![],
            operations: vec![op(Operation::List, |c| {
                Box::pin(list_leases(c.core, c.req))
            })],
            reads_act: false,
            synopsis: "List the credentials in the ledger; filter with role= and state=.",
            description: "States: intent (being issued), active, revoking (due or failing; \
                see revocation_attempts and last_error), revoked (kept three days for audit).",
        },
        PathDef {
            pattern: "leases/{id}",
            fields: vec![],
            operations: vec![op(Operation::Read, |c| {
                Box::pin(read_lease(c.core, c.param("id")))
            })],
            reads_act: false,
            synopsis: "One credential's ledger record: principal, state, deadline, requester, \
                revocation attempts and last error. Never a secret.",
            description: "",
        },
    ]
}
