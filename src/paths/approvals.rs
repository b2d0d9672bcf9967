//! `approvals/`: step-up approval for roles whose `approvals_required` is above zero. A
//! requester asks (`approvals/request`), approvers decide (`approvals/ID/approve`,
//! `approvals/ID/deny`), and the approved requester reads `creds/ROLE` with `approval_id`
//! once, within the role's `approval_ttl` (the collection is [`collect`], called by `creds`).

use serde_json::{Map, Value, json};

use crate::contract::error::Error;
use crate::contract::fields::{FieldDef, FieldType, Fields};
use crate::contract::host::{now, random_lower};
use crate::contract::request::{Operation, Request, Requester, Response};
use crate::model::approval::{self, Approval, Decided, Stage};
use crate::model::audit::{self, Action, Event};
use crate::model::role::Role;
use crate::mount::MountCore;
use crate::mount::access;
use crate::paths::router::{PathDef, op};

fn request_fields() -> Vec<FieldDef> {
    vec![
        FieldDef::new(
            "role",
            FieldType::String,
            "The role (roles/NAME) whose credential is asked for. Required.",
        ),
        FieldDef::new(
            "reason",
            FieldType::String,
            "Why the credential is needed, for the approvers. Required.",
        ),
        FieldDef::new(
            "ttl",
            FieldType::Duration,
            "How long the credential should live; the credential collected is no longer.",
        ),
        FieldDef::new(
            "task_id",
            FieldType::String,
            "The task (tasks/ID) the credential is for; its end ends the request.",
        ),
    ]
}

fn decision_fields() -> Vec<FieldDef> {
    vec![FieldDef::new(
        "comment",
        FieldType::String,
        "Why the approver decided so, kept with the decision.",
    )]
}

fn list_fields() -> Vec<FieldDef> {
    vec![FieldDef::new(
        "state",
        FieldType::String,
        "Only requests in this state: pending, approved, expired, denied, used or ended.",
    )]
}

const STATES: [&str; 6] = ["pending", "approved", "expired", "denied", "used", "ended"];

/// Whether `who` may decide requests for `role`: an entity named by `approver_entity_ids`,
/// or a member of one of `approver_group_names`. A token without an entity never may.
async fn may_approve(core: &MountCore, role: &Role, who: &Requester) -> Result<bool, Error> {
    if who.entity_id.is_empty() {
        return Ok(false);
    }
    if role.approver_entity_ids.contains(&who.entity_id) {
        return Ok(true);
    }
    access::in_any_group(core, &who.entity_id, &role.approver_group_names).await
}

async fn role_of(core: &MountCore, name: &str) -> Result<Role, Error> {
    core.role(name)
        .await?
        .ok_or_else(|| Error::bad_request(format!("field 'role': unknown role '{name}'")))
}

fn emit(action: Action, outcome: &str, a: &Approval, who: &Requester, detail: &str) {
    audit::emit(
        action,
        outcome,
        &Event {
            role: &a.role,
            task_id: a.task_id.as_deref().unwrap_or(""),
            ..Event::by(who).detail(&format!("approval {}: {detail}", a.id))
        },
    );
}

/// `approvals/request`.
async fn request(core: &MountCore, req: &Request) -> Result<Response, Error> {
    let fields = Fields::parse(&request_fields(), &req.data)?;
    let role_name = fields
        .str("role")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| Error::bad_request("field 'role' is required: the role to approve"))?;
    let reason = fields
        .str("reason")
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            Error::bad_request("field 'reason' is required: why the credential is needed")
        })?;
    let role = role_of(core, role_name).await?;
    if role.approvals_required == 0 {
        return Err(Error::bad_request(format!(
            "role '{role_name}' needs no approval: read creds/{role_name}"
        )));
    }
    // Whoever could not issue the credential cannot ask for it either.
    access::check_bindings(core, role_name, &role, &req.requester).await?;
    let now = now();
    let task_id = match fields.str("task_id").filter(|t| !t.is_empty()) {
        Some(id) => {
            access::usable_task(core, id, role_name, &role, &req.requester, now).await?;
            Some(id.to_owned())
        }
        None if role.require_task => {
            return Err(Error::bad_request(format!(
                "field 'task_id' is required: role '{role_name}' issues only under a task"
            )));
        }
        None => None,
    };
    let a = Approval {
        id: random_lower(20),
        role: role_name.to_owned(),
        requester: (&req.requester).into(),
        reason: reason.to_owned(),
        ttl: fields.duration("ttl").unwrap_or(0),
        task_id,
        stage: Stage::Pending,
        created_at: now,
        required: role.approvals_required,
        approvals: Vec::new(),
        denied_by: None,
        approved_at: None,
        expires_at: None,
        used_at: None,
        cred_id: None,
        end_reason: None,
    };
    approval::save(core.storage.as_ref(), &a).await?;
    emit(
        Action::ApprovalRequest,
        "pending",
        &a,
        &req.requester,
        &format!("asked: {}", a.reason),
    );
    let mut data = Map::new();
    data.insert("approval_id".into(), json!(a.id));
    data.insert("state".into(), json!(a.state(now)));
    data.insert("role".into(), json!(a.role));
    data.insert("approvals_required".into(), json!(a.required));
    Ok(Response::data(data))
}

/// Whether `who` may see request `a`: its requester, or an approver of its role.
async fn may_see(core: &MountCore, a: &Approval, who: &Requester) -> Result<bool, Error> {
    if a.requested_by(who) {
        return Ok(true);
    }
    match core.role(&a.role).await? {
        Some(role) => may_approve(core, &role, who).await,
        None => Ok(false),
    }
}

/// `approvals/`: the requests the caller made, and those it may decide.
async fn list(core: &MountCore, req: &Request) -> Result<Response, Error> {
    let fields = Fields::parse(&list_fields(), &req.data)?;
    let wanted = fields.str("state").filter(|s| !s.is_empty());
    if let Some(s) = wanted
        && !STATES.contains(&s)
    {
        return Err(Error::bad_request(format!(
            "field 'state': expected one of {}, got '{s}'",
            STATES.join(", ")
        )));
    }
    let kv = core.storage.as_ref();
    let now = now();
    let mut keys = Vec::new();
    let mut info = Map::new();
    for id in approval::list(kv).await? {
        let Some(a) = approval::load(kv, &id).await? else {
            continue;
        };
        if wanted.is_some_and(|s| s != a.state(now)) || !may_see(core, &a, &req.requester).await? {
            continue;
        }
        info.insert(
            id.clone(),
            json!({"role": a.role, "state": a.state(now), "reason": a.reason,
                   "requester": a.requester.display_name, "created_at": a.created_at,
                   "approvals": a.approvals.len(), "approvals_required": a.required}),
        );
        keys.push(id);
    }
    let mut response = Response::list(keys);
    if let Some(data) = response.data.as_mut() {
        data.insert("key_info".into(), Value::Object(info));
    }
    Ok(response)
}

async fn visible(core: &MountCore, id: &str, who: &Requester) -> Result<Approval, Error> {
    let a = approval::load(core.storage.as_ref(), id)
        .await?
        .ok_or_else(|| Error::bad_request(format!("no approval request '{id}'")))?;
    if !may_see(core, &a, who).await? {
        return Err(Error::PermissionDenied(format!(
            "approval request '{id}' is neither yours nor one you may decide"
        )));
    }
    Ok(a)
}

/// `approvals/ID`.
async fn read(core: &MountCore, id: &str, req: &Request) -> Result<Response, Error> {
    let a = visible(core, id, &req.requester).await?;
    Ok(Response::data(a.view(now())))
}

/// `approvals/ID/approve` and `approvals/ID/deny`.
async fn decide(
    core: &MountCore,
    id: &str,
    req: &Request,
    approve: bool,
) -> Result<Response, Error> {
    let fields = Fields::parse(&decision_fields(), &req.data)?;
    let who = &req.requester;
    let _held = core.approval_writes.lock().await;
    let kv = core.storage.as_ref();
    let mut a = approval::load(kv, id)
        .await?
        .ok_or_else(|| Error::bad_request(format!("no approval request '{id}'")))?;
    let action = if approve {
        Action::ApprovalApprove
    } else {
        Action::ApprovalDeny
    };
    let refuse = |a: &Approval, e: Error| {
        emit(action, "denied", a, who, &e.to_string());
        Err(e)
    };
    let role = role_of(core, &a.role).await?;
    if a.requested_by(who) {
        return refuse(
            &a,
            Error::PermissionDenied(format!(
                "approval request '{id}' is your own: a requester never decides its own request"
            )),
        );
    }
    if !may_approve(core, &role, who).await? {
        let why = if who.entity_id.is_empty() {
            "only identities with an entity can approve, and this token has none"
        } else {
            "this entity is not among the role's approver_entity_ids nor in its \
             approver_group_names"
        };
        return refuse(
            &a,
            Error::PermissionDenied(format!(
                "you may not decide approval request '{id}' for role '{}': {why}",
                a.role
            )),
        );
    }
    let now = now();
    if a.stage != Stage::Pending {
        let state = a.state(now);
        return refuse(
            &a,
            Error::bad_request(format!(
                "approval request '{id}' is {state}: only a pending request can be decided"
            )),
        );
    }
    if a.approvals.iter().any(|d| d.entity_id == who.entity_id) {
        return refuse(
            &a,
            Error::bad_request(format!(
                "you have approved request '{id}' already: an approver counts once"
            )),
        );
    }
    let decided = Decided {
        entity_id: who.entity_id.clone(),
        display_name: who.display_name.clone(),
        at: now,
        comment: fields.str("comment").unwrap_or_default().to_owned(),
    };
    if approve {
        a.approvals.push(decided);
        if a.approvals.len() >= a.required as usize {
            a.stage = Stage::Approved;
            a.approved_at = Some(now);
            a.expires_at = Some(now + role.approval_ttl);
        }
    } else {
        a.stage = Stage::Denied;
        a.denied_by = Some(decided);
    }
    approval::save(kv, &a).await?;
    let state = a.state(now);
    emit(
        action,
        state,
        &a,
        who,
        &format!("{} of {} approvals", a.approvals.len(), a.required),
    );
    Ok(Response::data(a.view(now)))
}

/// Takes approval `id` for one issuance of `role_name` by `who`: it must be `who`'s, for this
/// role, and approved and unexpired. It is marked used before anything is issued, so it is
/// collected once; [`release`] gives it back when the issuance then fails.
pub async fn collect(
    core: &MountCore,
    role_name: &str,
    role: &Role,
    id: Option<&str>,
    who: &Requester,
) -> Result<Approval, Error> {
    let Some(id) = id.filter(|i| !i.is_empty()) else {
        return Err(Error::PermissionDenied(format!(
            "role '{role_name}' needs approval ({} of its approvers): ask with a write to \
             approvals/request (role={role_name}, reason=...), then read creds/{role_name} \
             with approval_id once it is approved",
            role.approvals_required
        )));
    };
    let _held = core.approval_writes.lock().await;
    let kv = core.storage.as_ref();
    let Some(mut a) = approval::load(kv, id).await? else {
        return Err(Error::PermissionDenied(format!(
            "no approval request '{id}'"
        )));
    };
    if a.role != role_name || !a.requested_by(who) {
        return Err(Error::PermissionDenied(format!(
            "approval '{id}' is foreign: it was asked for role '{}' by another requester or \
             another role; only its requester can use it, for its role",
            a.role
        )));
    }
    let now = now();
    match a.state(now) {
        "approved" => {}
        "pending" => {
            return Err(Error::PermissionDenied(format!(
                "approval '{id}' is pending: {} of {} approvals so far",
                a.approvals.len(),
                a.required
            )));
        }
        state => {
            return Err(Error::PermissionDenied(format!(
                "approval '{id}' is {state}{}",
                a.end_reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            )));
        }
    }
    a.stage = Stage::Used;
    a.used_at = Some(now);
    approval::save(kv, &a).await?;
    Ok(a)
}

/// Ends the collection of `a`: with the credential's id when it was issued, or back to
/// approved when the issuance failed, so the requester may try again within its time.
pub async fn settle(core: &MountCore, mut a: Approval, cred_id: Option<&str>) {
    let _held = core.approval_writes.lock().await;
    match cred_id {
        Some(id) => a.cred_id = Some(id.to_owned()),
        None => {
            a.stage = Stage::Approved;
            a.used_at = None;
        }
    }
    if let Err(e) = approval::save(core.storage.as_ref(), &a).await {
        tracing::warn!(approval = %a.id, error = %e, "could not record how an approval's collection ended");
    }
}

/// The paths this module serves, for the engine's table.
pub(crate) fn paths() -> Vec<PathDef> {
    vec![
        PathDef {
            pattern: "approvals/request",
            fields: request_fields(),
            operations: vec![op(Operation::Update, |c| Box::pin(request(c.core, c.req)))],
            reads_act: false,
            synopsis: "Ask for the approval a role's credential needs (approvals_required).",
            description: "Answers approval_id and state pending. Once enough approvers have \
                approved, read creds/ROLE with approval_id: the credential is issued once, \
                within the role's approval_ttl, to the requester alone.",
        },
        PathDef {
            pattern: "approvals/",
            fields: list_fields(),
            operations: vec![op(Operation::List, |c| Box::pin(list(c.core, c.req)))],
            reads_act: false,
            synopsis: "The approval requests you made and those you may decide.",
            description: "",
        },
        PathDef {
            pattern: "approvals/{id}",
            fields: vec![],
            operations: vec![op(Operation::Read, |c| {
                Box::pin(read(c.core, c.param("id"), c.req))
            })],
            reads_act: false,
            synopsis: "One approval request: requester, role, task, TTL, reason, state and \
                who decided.",
            description: "",
        },
        PathDef {
            pattern: "approvals/{id}/approve",
            fields: decision_fields(),
            operations: vec![op(Operation::Update, |c| {
                Box::pin(decide(c.core, c.param("id"), c.req, true))
            })],
            reads_act: false,
            synopsis: "Approve a pending request (approvers of its role only; never the \
                requester; each approver counts once).",
            description: "",
        },
        PathDef {
            pattern: "approvals/{id}/deny",
            fields: decision_fields(),
            operations: vec![op(Operation::Update, |c| {
                Box::pin(decide(c.core, c.param("id"), c.req, false))
            })],
            reads_act: false,
            synopsis: "Deny a pending request (approvers of its role only).",
            description: "",
        },
    ]
}
