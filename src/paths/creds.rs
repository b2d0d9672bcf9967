//! `creds/ROLE`: issuing a credential. Its lease's renewal and revocation are in `leases`.
//!
//! Issuance writes the ledger record as an intent before anything exists on the target, creates
//! the principal, then marks the record active. A crash at any step leaves a record the
//! scheduler will revoke: an intent at the earlier of a short grace period and the deadline, an
//! active credential at its deadline.

use secrecy::SecretString;
use serde_json::{Map, Value, json};

use crate::contract::backend::{CREATE_TIMEOUT, within};
use crate::contract::error::Error;
use crate::contract::fields::{FieldDef, FieldType, Fields};
use crate::contract::host::{now, random_lower};
use crate::contract::request::Operation;
use crate::contract::request::{LeaseGrant, Request, Response};
use crate::contract::template;
use crate::jobs::revocation;
use crate::model::approval::Approval;
use crate::model::audit::{self, Action, Event};
use crate::model::ledger::{self, Credential, State};
use crate::model::role::Role;
use crate::model::task::{self, Task};
use crate::mount::MountCore;
use crate::mount::access::{check_bindings, usable_task};
use crate::mount::account;
use crate::mount::decision::{self, Facts, PolicyAction, Resource, RoleFacts};
use crate::mount::scheduler::Claim;
use crate::paths::approvals;
use crate::paths::leases;
use crate::paths::router::{PathDef, op};

/// When an intent that never became active is revoked, at the latest: well past the longest
/// issuance (connection wait plus [`CREATE_TIMEOUT`]), so a slow issuance is never undercut.
pub const INTENT_GRACE_SECS: u64 = 90;

pub fn fields() -> Vec<FieldDef> {
    vec![
        FieldDef::new(
            "ttl",
            FieldType::Duration,
            "How long the credential should live; capped by the role's max_ttl, the time left \
             in its task and the mount's maximum. Defaults to the role's default_ttl.",
        ),
        FieldDef::new(
            "task_id",
            FieldType::String,
            "The task (tasks/ID) the credential is for: it never outlives the task, and ending \
             the task revokes it.",
        ),
        FieldDef::new(
            "approval_id",
            FieldType::String,
            "For a role that needs approval (approvals_required): the approved request \
             (approvals/request) the credential is collected with, once.",
        ),
    ]
}

/// What an issuance got as far as, for its audit event.
#[derive(Default)]
struct Trail {
    cred_id: String,
    task_id: String,
    connection: String,
    principal: String,
    /// The policy decision, when policies decided.
    policy: String,
    /// The approval collected, for roles that need one: settled once the issuance ends.
    approval: Option<Approval>,
}

/// `creds/ROLE`: issues one credential and emits one audit event, whatever the outcome.
pub async fn issue(core: &MountCore, role_name: &str, req: &Request) -> Result<Response, Error> {
    let mut trail = Trail::default();
    let result = issue_traced(core, role_name, req, &mut trail).await;
    let (outcome, mut detail) = match &result {
        Ok(r) => (
            "issued",
            format!("ttl {}s", r.lease.as_ref().map_or(0, |l| l.ttl),),
        ),
        Err(e @ Error::PermissionDenied(_)) => ("denied", e.to_string()),
        Err(e) => ("failed", e.to_string()),
    };
    if let Some(a) = trail.approval.take() {
        detail = format!("{detail}; approval {}", a.id);
        let issued = result.is_ok().then_some(trail.cred_id.as_str());
        approvals::settle(core, a, issued).await;
    }
    audit::emit(
        Action::Issue,
        outcome,
        &Event {
            cred_id: &trail.cred_id,
            task_id: &trail.task_id,
            role: role_name,
            connection: &trail.connection,
            principal: &trail.principal,
            policy: &trail.policy,
            ..Event::by(&req.requester).detail(&detail)
        },
    );
    result
}

/// The TTL a credential gets: the shortest of what is asked (or the default), the role's
/// max_ttl, the time left in its task, the mount's maximum and a policy's `@max_ttl`.
pub struct TtlGrant {
    /// What was asked for, or the default.
    pub wanted: u64,
    pub ttl: u64,
    /// The longest renewals may take it, from now.
    pub max_ttl: u64,
    /// Which limit set `ttl`, as the response's `ttl_bound` says.
    pub bound: &'static str,
}

impl TtlGrant {
    pub fn cap(&mut self, limit: u64, name: &'static str) {
        if limit < self.ttl {
            self.ttl = limit;
            self.bound = name;
        }
    }

    /// What the response says when the TTL is shorter than asked.
    fn warning(&self) -> Option<String> {
        if self.ttl >= self.wanted {
            return None;
        }
        let by = match self.bound {
            "task" => "the time left in its task",
            "role_max_ttl" => "the role's max_ttl",
            "policy_max_ttl" => "the @max_ttl of the policy that permitted it",
            "approval" => "the TTL its approval was asked with",
            _ => "the mount's maximum TTL",
        };
        let (wanted, ttl) = (self.wanted, self.ttl);
        Some(format!(
            "ttl of {wanted}s is longer than {by} ({ttl}s); capped to {ttl}s"
        ))
    }
}

/// The TTL of a credential of `role` asked for `asked` seconds under `task`, before policies.
pub async fn ttl_grant(
    core: &MountCore,
    role: &Role,
    asked: Option<u64>,
    task: Option<&Task>,
    now: u64,
    mount_max: u64,
) -> Result<TtlGrant, Error> {
    let (wanted, bound) = match (asked, role.default_ttl) {
        (Some(t), _) if t > 0 => (t, "requested"),
        (_, 0) => (
            core.host.default_lease_ttl().await?.as_secs(),
            "mount_default_ttl",
        ),
        (_, d) => (d, "role_default_ttl"),
    };
    let mut grant = TtlGrant {
        wanted,
        ttl: wanted,
        max_ttl: mount_max,
        bound,
    };
    if role.max_ttl != 0 {
        grant.cap(role.max_ttl, "role_max_ttl");
        grant.max_ttl = grant.max_ttl.min(role.max_ttl);
    }
    if let Some(t) = task {
        let left = t.deadline.saturating_sub(now);
        grant.cap(left, "task");
        grant.max_ttl = grant.max_ttl.min(left);
    }
    grant.cap(mount_max, "mount_max_ttl");
    Ok(grant)
}

async fn issue_traced(
    core: &MountCore,
    role_name: &str,
    req: &Request,
    trail: &mut Trail,
) -> Result<Response, Error> {
    let kv = core.storage.as_ref();
    let fields = Fields::parse(&fields(), &req.data)?;
    // Independent round trips to the host, made together.
    let (role, mount_max) = tokio::join!(core.role(role_name), core.max_lease_ttl());
    let role = role?.ok_or_else(|| Error::bad_request(format!("unknown role '{role_name}'")))?;
    let mount_max = mount_max?.as_secs();
    trail.connection = role.db_name.clone();
    check_bindings(core, role_name, &role, &req.requester).await?;
    if role.approvals_required > 0 {
        let id = fields.str("approval_id");
        trail.approval =
            Some(approvals::collect(core, role_name, &role, id, &req.requester).await?);
    }
    let approval = trail.approval.clone();
    let now = now();
    let approved_task = approval.as_ref().and_then(|a| a.task_id.as_deref());
    let task_id = match (
        fields.str("task_id").filter(|t| !t.is_empty()),
        approved_task,
    ) {
        (Some(asked), Some(approved)) if asked != approved => {
            return Err(Error::PermissionDenied(format!(
                "approval '{}' was approved for task '{approved}', not '{asked}'",
                approval.as_ref().map_or("", |a| a.id.as_str())
            )));
        }
        (asked, approved) => asked.or(approved),
    };
    let task = match task_id {
        Some(id) => {
            trail.task_id = id.to_owned();
            Some(usable_task(core, id, role_name, &role, &req.requester, now).await?)
        }
        None if role.require_task => {
            return Err(Error::bad_request(format!(
                "field 'task_id' is required: role '{role_name}' issues only under a task \
                 (create one at tasks/)"
            )));
        }
        None => None,
    };
    let config = core.connection(&role.db_name).await?.ok_or_else(|| {
        Error::bad_request(format!(
            "role '{role_name}' uses connection '{}', which does not exist",
            role.db_name
        ))
    })?;
    let backend = core.backends.for_connection(&role.db_name, &config)?;
    if !config.allows_role(role_name) {
        return Err(Error::PermissionDenied(format!(
            "role '{role_name}' is not in allowed_roles of connection '{}'",
            role.db_name
        )));
    }
    account::lap("lookups");

    let approved_ttl = approval.as_ref().map_or(0, |a| a.ttl);
    let asked = fields
        .duration("ttl")
        .or((approved_ttl > 0).then_some(approved_ttl));
    let mut grant = ttl_grant(core, &role, asked, task.as_ref(), now, mount_max).await?;
    if approved_ttl > 0 {
        // No longer than the approvers agreed to.
        grant.cap(approved_ttl, "approval");
        grant.max_ttl = grant.max_ttl.min(approved_ttl);
    }
    let facts = Facts {
        action: PolicyAction::Issue,
        requester: &req.requester,
        headers: &req.headers,
        resource: Resource::Role(RoleFacts {
            name: role_name,
            kind: &config.plugin_name,
            connection: &role.db_name,
            labels: &role.labels,
        }),
        task: task.as_ref(),
        approval: approval.as_ref(),
        credential: None,
        requested_ttl: asked.unwrap_or(0),
        ttl: grant.ttl,
        now,
    };
    if let Some(cap) = decision::enforce(core, &facts, &mut trail.policy).await? {
        grant.cap(cap, "policy_max_ttl");
    }
    let (mut ttl, max_ttl, mut bound) = (grant.ttl, grant.max_ttl, grant.bound);
    account::lap("policy");
    let mut warnings: Vec<String> = grant.warning().into_iter().collect();

    let cred_id = random_lower(20);
    let task_id = task.as_ref().map_or("", |t| t.id.as_str());
    let username_template = role.username_template(backend.as_ref(), &config);
    let inputs = template::Inputs {
        role_name,
        display_name: &req.requester.display_name,
        credential_id: &cred_id,
        task_id,
        mark: &core.mark,
        sources: template::Sources::Live,
    };
    let principal = template::render(username_template, &inputs)?;
    // A name with this many random characters is no one else's (a collision is less likely
    // than one in 2^64): asking the target whether it is taken costs a round trip for nothing.
    let unguessable = template::random_chars(username_template, &inputs)? >= template::UNGUESSABLE;
    backend.validate_principal(&principal).map_err(|e| {
        Error::bad_request(format!(
            "the name made by username_template from this request is refused: {e}"
        ))
    })?;
    trail.principal = principal.clone();
    // Before anything is on record: a name that is taken fails the issuance here, and the
    // intent below records that the name was free, which is what lets mayfly drop that name
    // later if the create is cut off. An unguessable name is free by construction.
    let target = core.target_for(&role.db_name, &config).await?;
    if !unguessable {
        let taken = within(
            CREATE_TIMEOUT,
            "look up the name",
            target.exists(&principal, &role.settings),
        );
        if taken.await? {
            return Err(name_taken(&principal, &role.db_name));
        }
    }
    account::lap("name_check");
    let password = if backend.target_makes_secret() {
        SecretString::from(String::new())
    } else {
        core.new_password(role.password_policy(&config)).await?
    };
    account::lap("password");

    let deadline = now + ttl;
    let mut cred = Credential {
        format: ledger::FORMAT,
        id: cred_id.clone(),
        role: role_name.to_owned(),
        connection: role.db_name.clone(),
        principal: principal.clone(),
        state: State::Intent,
        created_at: now,
        deadline,
        max_deadline: now + max_ttl,
        default_ttl: if role.default_ttl > 0 {
            role.default_ttl
        } else {
            ttl
        },
        due: deadline.min(now + INTENT_GRACE_SECS),
        requester: (&req.requester).into(),
        task_id: task.as_ref().map(|t| t.id.clone()),
        lease_id: None,
        attempts: 0,
        last_error: None,
        last_attempt_at: None,
        revoke_requested_at: None,
        revoke_reason: None,
        revoked_at: None,
        settings: while_issuing(&role.settings),
        target_expires: None,
        target_issued: None,
        guard_until: None,
        target_id: None,
        name_was_free: Some(true),
        revoked_with: None,
    };
    trail.cred_id = cred.id.clone();
    let claim = core.scheduler.claim(&cred.id);
    ledger::record_intent(kv, &cred).await?;
    core.scheduler.track(cred.due, &cred.id);
    account::lap("intent");
    core.crash_point("after_intent");

    let created = {
        let new = crate::contract::backend::NewPrincipal {
            name: &principal,
            password: &password,
            expires: deadline,
            settings: &role.settings,
            unguessable,
            origin: &crate::contract::backend::Origin {
                cred_id: &cred_id,
                task_id,
                entity_id: &req.requester.entity_id,
                display_name: &req.requester.display_name,
                role_name,
            },
        };
        within(CREATE_TIMEOUT, "create the principal", target.create(&new)).await
    };
    let created = match created {
        Ok(c) => c,
        Err(Error::Conflict(_)) => {
            // Taken since it was looked up: whoever has it keeps it, untouched.
            end_untouched(core, &mut cred).await;
            return Err(name_taken(&principal, &role.db_name));
        }
        Err(e) => {
            // Nothing should exist, but a timeout leaves that unsure: revoke now, idempotently.
            schedule_revocation(
                core,
                &mut cred,
                ledger::CREATION_FAILED,
                Some(e.to_string()),
            )
            .await;
            return Err(e);
        }
    };
    account::lap("create");
    core.crash_point("after_create");
    warnings.extend(created.warnings);
    cred.target_id = created.target_id;
    cred.target_issued = created.target_issued;
    // A target that ends the principal on its own (an STS session) bounds the lease: neither
    // it nor a renewal may promise a credential the target has already ended.
    if let Some(end) = created.target_expires {
        cred.target_expires = Some(end);
        cred.max_deadline = cred.max_deadline.min(end);
        if end < cred.deadline {
            cred.deadline = end;
            ttl = end.saturating_sub(now);
            bound = "target_max";
        }
    }

    // The claim kept every revocation off the record meanwhile. The record now waits for its
    // deadline; its index entry moves there off the request path.
    cred.state = State::Active;
    // Issued: from now on it is revoked as the role says, not rolled back.
    cred.settings = role.settings.clone();
    let intent_due = cred.due;
    cred.due = cred.deadline;
    let activated = ledger::activate(kv, &cred, intent_due).await?;
    core.scheduler.moved(intent_due, cred.due, &cred.id);
    if activated == ledger::Activated::AtIntentEntry {
        let (storage, id, due) = (core.storage.clone(), cred.id.clone(), cred.due);
        core.node.spawn(async move {
            if let Err(e) = ledger::move_entry(storage.as_ref(), &id, intent_due, due).await {
                // Harmless: this process's scheduler holds the deadline already, and the
                // intent's entry still reaches the record for the next process that loads
                // the index, which reindexes it at its deadline when that entry falls due.
                tracing::debug!(cred_id = %id, error = %e, "could not index a credential at its deadline");
            }
        });
    }
    account::lap("activation");
    // A task's end, an operator, or the intent's due time (a create slower than the deadline)
    // asked for its revocation while the principal was being created: it goes now that it
    // exists, and nothing is issued.
    if claim.revocation_asked() {
        return Err(revoked_while_issuing(core, cred, claim).await);
    }
    // A task ended between its check above and the intent's write lists no such credential:
    // look again now that the credential is on record.
    if let Some(t) = &task
        && !task::load(kv, &t.id)
            .await?
            .is_some_and(|t| t.is_open(crate::contract::host::now()))
    {
        return Err(revoked_while_issuing(core, cred, claim).await);
    }
    core.crash_point("before_reply");

    let mut data = Map::new();
    data.insert("username".into(), json!(principal));
    if !backend.target_makes_secret() && !created.secret_from_target {
        use secrecy::ExposeSecret;
        data.insert("password".into(), json!(password.expose_secret()));
    }
    data.extend(created.data);
    data.insert("ttl_bound".into(), json!(bound));
    if let Some(t) = &task {
        data.insert("task_id".into(), json!(t.id));
    }
    let internal = leases::internal_data(&cred.id);
    account::lap("finish");
    Ok(Response {
        data: Some(data),
        warnings,
        lease: Some(LeaseGrant {
            ttl,
            max_ttl: cred.max_deadline.saturating_sub(now),
            renewable: true,
            internal_data: internal,
        }),
    })
}

/// The settings an intent records: while its issuance has not finished, a revocation (after a
/// failed ledger write or a crash) removes the principal with the role's
/// `rollback_statements` where it has some. Those run only against a principal that exists,
/// so only after mayfly's own create; a name found taken ends with no revocation at all.
fn while_issuing(settings: &Map<String, Value>) -> Map<String, Value> {
    let mut out = settings.clone();
    if let Some(rollback) = settings
        .get("rollback_statements")
        .filter(|v| v.as_array().is_some_and(|a| !a.is_empty()))
    {
        out.insert("revocation_statements".into(), rollback.clone());
    }
    out
}

/// The issuance's error when the target has a principal of the name the template made.
fn name_taken(principal: &str, connection: &str) -> Error {
    Error::Conflict(format!(
        "connection '{connection}' already has a principal named '{principal}', which \
         username_template made for this credential; mayfly neither changes nor drops an \
         account it did not create, so nothing was issued. Make the template's names unique \
         (random, .CredentialID) or choose a name that is not taken"
    ))
}

/// Closes the record of an issuance whose create was refused because the name is taken: the
/// principal of that name is someone else's, so the record ends without a revocation.
async fn end_untouched(core: &MountCore, cred: &mut Credential) {
    let now = now();
    let previous = cred.due;
    cred.state = State::Revoked;
    cred.revoke_requested_at = Some(now);
    cred.revoked_at = Some(now);
    cred.revoke_reason = Some("the name was taken on the target; nothing was created".into());
    cred.name_was_free = Some(false);
    cred.due = now + ledger::RETENTION_SECS;
    match ledger::store(core.storage.as_ref(), cred, Some(previous)).await {
        Ok(()) => core.scheduler.moved(previous, cred.due, &cred.id),
        // The intent stays on record, saying the name was free, and its revocation will drop
        // that name: the one way left for mayfly to drop an account it did not make, and it
        // takes a name taken between the look-up and the create and then a failed write.
        Err(e) => tracing::warn!(cred_id = %cred.id, error = %e,
            "could not close the record of an issuance whose name was taken"),
    }
}

/// Marks `cred` for revocation now and hands it to the scheduler.
async fn schedule_revocation(
    core: &MountCore,
    cred: &mut Credential,
    reason: &str,
    error: Option<String>,
) {
    cred.state = State::Revoking;
    cred.revoke_reason = Some(reason.to_owned());
    cred.last_error = error;
    let previous = cred.due;
    cred.due = now();
    if ledger::store(core.storage.as_ref(), cred, Some(previous))
        .await
        .is_ok()
    {
        core.scheduler.track(cred.due, &cred.id);
    }
}

/// The credential was revoked (its task ended, or an operator revoked it) while it was being
/// created: revoke what now exists and refuse the issuance.
async fn revoked_while_issuing(core: &MountCore, mut cred: Credential, claim: Claim<'_>) -> Error {
    schedule_revocation(core, &mut cred, "revoked while being issued", None).await;
    // The revocations held back for it join this one.
    drop(claim);
    let _ = revocation::revoke_within(core, &cred.id, "revoked while being issued", None).await;
    Error::bad_request(format!(
        "credential '{}' was revoked while it was being issued (its task ended or an operator \
         revoked it); nothing was issued",
        cred.id
    ))
}

/// The paths this module serves, for the engine's table.
pub(crate) fn paths() -> Vec<PathDef> {
    vec![PathDef {
        pattern: "creds/{role}",
        fields: fields(),
        operations: vec![
            op(Operation::Read, |c| {
                Box::pin(issue(c.core, c.param("role"), c.req))
            }),
            op(Operation::Update, |c| {
                Box::pin(issue(c.core, c.param("role"), c.req))
            }),
        ],
        reads_act: true,
        synopsis: "Issue a credential of a role, as a lease.",
        description: "The credential is recorded in the ledger before it is created on the \
                target, and revoked at its deadline by mayfly itself, whether or not the host \
                revokes the lease.",
    }]
}
