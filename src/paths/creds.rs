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
use crate::contract::request::{LeaseGrant, Request, Requester, Response};
use crate::contract::template;
use crate::jobs::revocation;
use crate::model::audit::{self, Action, Event};
use crate::model::cidr::Cidr;
use crate::model::ledger::{self, Credential, State};
use crate::model::role::Role;
use crate::model::task::{self, Task};
use crate::mount::MountCore;
use crate::mount::decision::{self, Facts, PolicyAction, Resource, RoleFacts};
use crate::mount::scheduler::Claim;
use crate::paths::leases;
use crate::paths::router::{PathDef, Route};

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
}

/// `creds/ROLE`: issues one credential and emits one audit event, whatever the outcome.
pub async fn issue(core: &MountCore, role_name: &str, req: &Request) -> Result<Response, Error> {
    let mut trail = Trail::default();
    let result = issue_traced(core, role_name, req, &mut trail).await;
    let (outcome, detail) = match &result {
        Ok(r) => (
            "issued",
            format!("ttl {}s", r.lease.as_ref().map_or(0, |l| l.ttl),),
        ),
        Err(e @ Error::PermissionDenied(_)) => ("denied", e.to_string()),
        Err(e) => ("failed", e.to_string()),
    };
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
    let now = now();
    let task = match fields.str("task_id") {
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

    let asked = fields.duration("ttl");
    let mut grant = ttl_grant(core, &role, asked, task.as_ref(), now, mount_max).await?;
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
        requested_ttl: asked.unwrap_or(0),
        ttl: grant.ttl,
        now,
    };
    if let Some(cap) = decision::enforce(core, &facts, &mut trail.policy).await? {
        grant.cap(cap, "policy_max_ttl");
    }
    let (mut ttl, max_ttl, mut bound) = (grant.ttl, grant.max_ttl, grant.bound);
    let mut warnings: Vec<String> = grant.warning().into_iter().collect();

    let cred_id = random_lower(20);
    let task_id = task.as_ref().map_or("", |t| t.id.as_str());
    let principal = template::render(
        role.username_template(backend.as_ref(), &config),
        &template::Inputs {
            role_name,
            display_name: &req.requester.display_name,
            credential_id: &cred_id,
            task_id,
            mark: &core.mark,
            sources: template::Sources::Live,
        },
    )?;
    backend.validate_principal(&principal).map_err(|e| {
        Error::bad_request(format!(
            "the name made by username_template from this request is refused: {e}"
        ))
    })?;
    trail.principal = principal.clone();
    // Before anything is on record: a name that is taken fails the issuance here, and the
    // intent below records that the name was free, which is what lets mayfly drop that name
    // later if the create is cut off.
    let target = core.target_for(&role.db_name, &config).await?;
    let taken = within(
        CREATE_TIMEOUT,
        "look up the name",
        target.exists(&principal, &role.settings),
    );
    if taken.await? {
        return Err(name_taken(&principal, &role.db_name));
    }
    let password = if backend.target_makes_secret() {
        SecretString::from(String::new())
    } else {
        core.new_password(role.password_policy(&config)).await?
    };

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
    ledger::store(kv, &cred, None).await?;
    core.scheduler.track(cred.due, &cred.id);
    core.crash_point("after_intent");

    let created = {
        let new = crate::contract::backend::NewPrincipal {
            name: &principal,
            password: &password,
            expires: deadline,
            settings: &role.settings,
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
    // deadline and is indexed there; the intent's entry (if the deadline has its own) goes
    // once that is stored, off the request path.
    cred.state = State::Active;
    // Issued: from now on it is revoked as the role says, not rolled back.
    cred.settings = role.settings.clone();
    let intent_due = cred.due;
    cred.due = cred.deadline;
    match ledger::activate(kv, &cred, intent_due).await? {
        ledger::Activated::Indexed => core.scheduler.moved(intent_due, cred.due, &cred.id),
        ledger::Activated::IntentEntryLeft => {
            core.scheduler.moved(intent_due, cred.due, &cred.id);
            let (storage, id) = (core.storage.clone(), cred.id.clone());
            core.node.spawn(async move {
                if let Err(e) = ledger::remove_due(storage.as_ref(), intent_due, &id).await {
                    // Harmless: the scheduler drops the entry when it falls due.
                    tracing::debug!(cred_id = %id, error = %e, "could not remove an intent's index entry");
                }
            });
        }
        ledger::Activated::AtIntentEntry => {}
    }
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

/// The task `id`, if credentials of `role` may be drawn under it by `who` now.
async fn usable_task(
    core: &MountCore,
    id: &str,
    role_name: &str,
    role: &Role,
    who: &Requester,
    now: u64,
) -> Result<Task, Error> {
    let task = task::load(core.storage.as_ref(), id)
        .await?
        .ok_or_else(|| Error::bad_request(format!("field 'task_id': no task '{id}'")))?;
    if !task.is_open(now) {
        return Err(Error::bad_request(format!(
            "field 'task_id': task '{id}' has ended ({}); start a new task",
            task.end_reason.as_deref().unwrap_or("deadline reached")
        )));
    }
    if task.bound_to_owner && !role.allow_other_task_owners && !task.owned_by(who) {
        return Err(Error::PermissionDenied(format!(
            "task '{id}' is bound to its owner (entity '{}'); this request comes from entity \
             '{}', and role '{role_name}' does not set allow_other_task_owners",
            task.owner.entity_id, who.entity_id
        )));
    }
    Ok(task)
}

/// The role's identity bindings: entity ids, group names and source networks. A refusal is a
/// 403 that names the binding.
async fn check_bindings(
    core: &MountCore,
    role_name: &str,
    role: &Role,
    who: &Requester,
) -> Result<(), Error> {
    if !role.bound_entity_ids.is_empty() && !role.bound_entity_ids.contains(&who.entity_id) {
        return Err(Error::PermissionDenied(format!(
            "role '{role_name}' is bound to entities (bound_entity_ids); this request's entity \
             '{}' is not one of them",
            who.entity_id
        )));
    }
    if !role.bound_cidrs.is_empty() {
        let addr: Option<std::net::IpAddr> = who.remote_addr.parse().ok();
        let inside = addr.is_some_and(|a| {
            role.bound_cidrs
                .iter()
                .filter_map(|c| Cidr::parse(c).ok())
                .any(|c| c.contains(a))
        });
        if !inside {
            return Err(Error::PermissionDenied(format!(
                "role '{role_name}' is bound to networks (bound_cidrs); this request's remote \
                 address '{}' is outside them",
                who.remote_addr
            )));
        }
    }
    if !role.bound_group_names.is_empty() {
        let member = !who.entity_id.is_empty()
            && core
                .identity(&who.entity_id)
                .await?
                .group_names()
                .any(|g| role.bound_group_names.iter().any(|b| b == g));
        if !member {
            return Err(Error::PermissionDenied(format!(
                "role '{role_name}' is bound to groups (bound_group_names); this request's \
                 entity '{}' is in none of them",
                who.entity_id
            )));
        }
    }
    Ok(())
}

/// The paths this module serves, for the engine's table.
pub(crate) fn paths() -> Vec<PathDef> {
    vec![PathDef {
        pattern: "creds/{role}",
        route: Route::Creds,
        fields: fields(),
        operations: vec![Operation::Read, Operation::Update],
        synopsis: "Issue a credential of a role, as a lease.",
        description: "The credential is recorded in the ledger before it is created on the \
                target, and revoked at its deadline by mayfly itself, whether or not the host \
                revokes the lease.",
    }]
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use serde_json::json;

    use crate::contract::request::{LeaseInfo, Operation, Request};
    use crate::contract::storage::{InMemoryStorage, Kv};
    use crate::testkit::Fake;
    use crate::testkit::FixedHost;
    use crate::{Backends, Engine};

    use super::*;
    use std::time::Duration;

    struct Setup {
        engine: Engine,
        fake: Arc<Fake>,
        storage: InMemoryStorage,
    }

    async fn setup() -> Setup {
        let storage = InMemoryStorage::new();
        let fake = Arc::new(Fake::default());
        let engine = Engine::new(
            Arc::new(storage.clone()),
            Backends::new(vec![fake.clone()]),
            Arc::new(FixedHost::default()),
            "v0",
        );
        engine.start(crate::NodeRole::Active);
        let call = |path: &str, body: Value| {
            engine.handle(Request::new(Operation::Update, path).with_data(body))
        };
        call(
            "config/db",
            json!({"plugin_name": "fake", "url": "fake://x", "password": "hunter2",
                   "allowed_roles": "app"}),
        )
        .await
        .unwrap();
        call(
            "roles/app",
            json!({"db_name": "db", "default_ttl": "1h", "max_ttl": "2h"}),
        )
        .await
        .unwrap();
        Setup {
            engine,
            fake,
            storage,
        }
    }

    async fn issue(s: &Setup, body: Value) -> Response {
        s.engine
            .handle(Request::new(Operation::Read, "creds/app").with_data(body))
            .await
            .unwrap()
    }

    fn lease_request(op: Operation, resp: &Response, increment: u64) -> Request {
        let mut req = Request::new(op, "creds/app");
        req.data = resp.data.clone().unwrap();
        req.lease = Some(LeaseInfo {
            internal_data: resp.lease.as_ref().unwrap().internal_data.clone(),
            lease_id: "mayfly/creds/app/abc".into(),
            increment,
            max_ttl: 7200,
        });
        req
    }

    /// The first credential record to appear in storage (an issuance's intent), once it has.
    async fn intent_on_record(s: &Setup) -> Credential {
        let first = || {
            s.storage
                .dump()
                .into_iter()
                .find(|(k, _)| k.starts_with(ledger::RECORDS))
        };
        assert!(wait(5.0, || first().is_some()).await, "no record appeared");
        serde_json::from_slice(&first().unwrap().1).unwrap()
    }

    fn record(s: &Setup, resp: &Response) -> Credential {
        let id = resp.lease.as_ref().unwrap().internal_data["cred_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let bytes = s.storage.dump()[&format!("{}{id}", ledger::RECORDS)].clone();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn issue_renew_revoke_and_nothing_secret_in_storage() {
        let s = setup().await;
        let resp = issue(&s, json!({"ttl": "30m"})).await;
        let data = resp.data.clone().unwrap();
        let user = data["username"].as_str().unwrap().to_owned();
        let password = data["password"].as_str().unwrap().to_owned();
        assert!(user.starts_with("mf-app-"), "{user}");
        assert_eq!(password.len(), 32);
        assert!(s.fake.target.has(&user));
        let lease = resp.lease.clone().unwrap();
        assert_eq!(
            (lease.ttl, lease.max_ttl, lease.renewable),
            (1800, 7200, true)
        );
        let cred = record(&s, &resp);
        assert_eq!(cred.state, State::Active);
        assert_eq!(cred.deadline - cred.created_at, 1800);

        let renewed = s
            .engine
            .handle(lease_request(Operation::Renew, &resp, 3600))
            .await
            .unwrap();
        assert_eq!(renewed.data, None, "a renewal hands out no secret");
        let grant = renewed.lease.unwrap();
        assert_eq!((grant.ttl, grant.max_ttl), (3600, 7200));
        assert_eq!(grant.internal_data, lease.internal_data);
        assert_eq!(record(&s, &resp).deadline - cred.created_at, 3600);

        s.engine
            .handle(lease_request(Operation::Revoke, &resp, 0))
            .await
            .unwrap();
        assert!(!s.fake.target.has(&user));
        let cred = record(&s, &resp);
        assert_eq!(cred.state, State::Revoked);
        assert_eq!(cred.lease_id.as_deref(), Some("mayfly/creds/app/abc"));
        // A second revoke (the host retrying) is a success and touches nothing.
        s.engine
            .handle(lease_request(Operation::Revoke, &resp, 0))
            .await
            .unwrap();
        assert_eq!(record(&s, &resp).attempts, 1);
        let err = s
            .engine
            .handle(lease_request(Operation::Renew, &resp, 0))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("is revoked"), "{err}");

        for (key, value) in s.storage.dump() {
            let text = String::from_utf8_lossy(&value);
            assert!(!text.contains(&password), "password stored at {key}");
        }
    }

    #[tokio::test]
    async fn ttl_is_capped_and_roles_are_enforced() {
        let s = setup().await;
        let resp = issue(&s, json!({"ttl": "5h"})).await;
        assert_eq!(resp.lease.unwrap().ttl, 7200);
        assert!(resp.warnings[0].contains("capped"), "{:?}", resp.warnings);
        let resp = issue(&s, json!({})).await;
        assert_eq!(resp.lease.unwrap().ttl, 3600);
        // Roles are cached; a write through the engine takes effect at once.
        s.engine
            .handle(
                Request::new(Operation::Update, "roles/app")
                    .with_data(json!({"default_ttl": "10m"})),
            )
            .await
            .unwrap();
        assert_eq!(issue(&s, json!({})).await.lease.unwrap().ttl, 600);
        let err = s
            .engine
            .handle(
                Request::new(Operation::Read, "creds/app").with_data(json!({"ttl": "1h; drop"})),
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("field 'ttl'"), "{err}");
        s.engine
            .handle(
                Request::new(Operation::Update, "roles/other").with_data(json!({"db_name": "db"})),
            )
            .await
            .unwrap();
        let err = s
            .engine
            .handle(Request::new(Operation::Read, "creds/other"))
            .await
            .unwrap_err();
        assert_eq!(err.status(), 403, "{err}");
        let mut req = Request::new(Operation::Read, "creds/app");
        req.requester.display_name = "x\"; DROP ROLE admin; --".into();
        let err = s.engine.handle(req).await.unwrap_err();
        assert_eq!(err.status(), 400, "{err}");
        assert_eq!(
            s.fake.target.count(),
            3,
            "the refused request created nothing"
        );
    }

    #[tokio::test]
    async fn a_session_bounds_its_lease_and_its_guard_is_lifted_after_it_ends() {
        let s = setup().await;
        s.fake.target.session_secs.store(3, Ordering::SeqCst);
        // The target's session ends before the TTL asked: the lease ends with it.
        let clamped = issue(&s, json!({"ttl": 60})).await;
        let lease = clamped.lease.as_ref().unwrap();
        assert_eq!((lease.ttl, lease.max_ttl), (3, 3));
        assert_eq!(clamped.data.as_ref().unwrap()["ttl_bound"], "target_max");
        // Revoked at its deadline (1 s) while the session lives on: a guard until it ends.
        let short = issue(&s, json!({"ttl": 1})).await;
        let guarded = record(&s, &short);
        assert_eq!(guarded.target_expires, Some(guarded.created_at + 3));
        let now_record = || record(&s, &short);
        let guard_set = wait(3.0, || now_record().guard_until.is_some()).await;
        assert!(guard_set, "no guard recorded: {:?}", now_record());
        assert_eq!(now_record().guard_until, guarded.target_expires);
        assert!(
            s.fake
                .target
                .guards
                .lock()
                .unwrap()
                .contains(&guarded.principal)
        );
        // Once the session has ended, the scheduler lifts the guard and keeps the record.
        let lifted = wait(6.0, || s.fake.target.guards.lock().unwrap().is_empty()).await;
        assert!(lifted, "the guard is still on the target");
        let cleared = wait(2.0, || now_record().guard_until.is_none()).await;
        assert!(cleared, "{:?}", now_record());
        let after = now_record();
        assert_eq!(after.state, State::Revoked);
        assert!(
            after.due > crate::contract::host::now() + 3600,
            "kept for its retention"
        );
    }

    #[tokio::test]
    async fn deadline_alone_revokes_in_one_batch() {
        let s = setup().await;
        for _ in 0..20 {
            issue(&s, json!({"ttl": 2})).await;
        }
        assert_eq!(s.fake.target.count(), 20);
        let gone = wait(6.0, || s.fake.target.count() == 0).await;
        assert!(gone, "{} principals left", s.fake.target.count());
        // Issuance may straddle a second boundary: at most two deadlines, so two batches.
        assert!(s.fake.target.revoke_calls.load(Ordering::SeqCst) <= 2);
        assert!(s.fake.target.largest_batch.load(Ordering::SeqCst) >= 10);
    }

    /// Found with an HTTP service that stopped answering: one pass of the scheduler revoked
    /// connection by connection, so every other connection's revocations waited on it.
    #[tokio::test]
    async fn a_connection_whose_target_hangs_holds_back_no_other_connections_revocation() {
        let s = setup().await;
        let call = |path: &str, body: Value| {
            s.engine
                .handle(Request::new(Operation::Update, path).with_data(body))
        };
        call(
            "config/db2",
            json!({"plugin_name": "fake", "url": "fake://y", "allowed_roles": "*"}),
        )
        .await
        .unwrap();
        call("roles/other", json!({"db_name": "db2"}))
            .await
            .unwrap();
        let stuck = issue(&s, json!({})).await;
        let other = s
            .engine
            .handle(Request::new(Operation::Read, "creds/other"))
            .await
            .unwrap();
        // The first revocation reaches the target and never gets its answer.
        let (_never, hang) = tokio::sync::oneshot::channel::<()>();
        *s.fake.target.hold_revoke.lock().unwrap() = Some(hang);
        let hung = s.engine.handle(lease_request(Operation::Revoke, &stuck, 0));
        tokio::pin!(hung);
        let held = tokio::time::timeout(Duration::from_millis(300), &mut hung).await;
        assert!(held.is_err(), "the held revocation answered");
        let mut req = lease_request(Operation::Revoke, &other, 0);
        req.path = "creds/other".into();
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(2), s.engine.handle(req))
            .await
            .expect("a revocation on another connection waited for the hung one")
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(record(&s, &other).state, State::Revoked);
    }

    /// A revocation failing with the statements recorded at issuance tries the role's as
    /// they are now, and, once the role is deleted, the kind's default.
    #[tokio::test]
    async fn a_fixed_or_deleted_role_ends_its_failing_revocations() {
        let s = setup().await;
        let write = |path: &str, op: Operation, body: Value| {
            s.engine.handle(Request::new(op, path).with_data(body))
        };
        let broken = json!({"db_name": "db", "revocation_statements": "FAIL"});
        write("roles/app", Operation::Update, broken.clone())
            .await
            .unwrap();
        let fixed_later = issue(&s, json!({})).await;
        s.engine
            .handle(lease_request(Operation::Revoke, &fixed_later, 0))
            .await
            .unwrap();
        assert_eq!(record(&s, &fixed_later).state, State::Revoking);
        // Fixed: the next attempt uses the role's statements.
        write(
            "roles/app",
            Operation::Update,
            json!({"revocation_statements": "DROP"}),
        )
        .await
        .unwrap();
        let op = Request::new(Operation::Update, "revoke/role/app");
        let report = s.engine.handle(op).await.unwrap().data.unwrap();
        assert_eq!(report["revoked"], 1, "{report:?}");
        let c = record(&s, &fixed_later);
        assert_eq!(c.state, State::Revoked);
        assert_eq!(
            c.revoked_with.as_deref(),
            Some("the role's statements as changed after issuance")
        );
        // Deleted: the recorded statements, then the kind's default.
        let third = {
            write("roles/app", Operation::Update, broken).await.unwrap();
            let r = issue(&s, json!({})).await;
            s.engine
                .handle(lease_request(Operation::Revoke, &r, 0))
                .await
                .unwrap();
            r
        };
        write("roles/app", Operation::Delete, json!({}))
            .await
            .unwrap();
        let op = Request::new(Operation::Update, "revoke/config/db");
        let report = s.engine.handle(op).await.unwrap().data.unwrap();
        assert_eq!(report["revoked"], 1, "{report:?}");
        assert_eq!(
            record(&s, &third).revoked_with.as_deref(),
            Some("the kind's default (the role was deleted)")
        );
    }

    #[tokio::test]
    async fn failing_revocations_are_retried_and_recorded() {
        let s = setup().await;
        let resp = issue(&s, json!({"ttl": 1})).await;
        s.fake.target.down.store(true, Ordering::SeqCst);
        let failing = wait(5.0, || {
            let c = record(&s, &resp);
            // The attempt is on record as it begins; its error once it has failed.
            c.state == State::Revoking && c.attempts >= 1 && c.last_error.is_some()
        })
        .await;
        assert!(failing);
        let c = record(&s, &resp);
        assert_eq!(c.last_error.as_deref(), Some("fake target is down"));
        assert!(c.due > c.last_attempt_at.unwrap() && c.due - c.last_attempt_at.unwrap() <= 5);
        s.fake.target.down.store(false, Ordering::SeqCst);
        assert!(wait(8.0, || record(&s, &resp).state == State::Revoked).await);
        assert_eq!(s.fake.target.count(), 0);
    }

    /// A later mayfly may record what its revocation needs in a newer format: this one leaves
    /// such a record alone (never acts on it, never deletes it), lists it for operators, and
    /// goes on revoking the rest.
    #[tokio::test]
    async fn a_record_of_a_newer_format_is_left_alone_and_listed_while_the_rest_are_revoked() {
        let s = setup().await;
        let newer = issue(&s, json!({"ttl": 1})).await;
        let older = issue(&s, json!({"ttl": 1})).await;
        let cred = record(&s, &newer);
        let key = format!("{}{}", ledger::RECORDS, cred.id);
        let mut raw: Value = serde_json::from_slice(&s.storage.dump()[&key]).unwrap();
        raw["format"] = json!(ledger::FORMAT + 1);
        raw["deadline"] = json!("a shape this mayfly does not know");
        let bytes = serde_json::to_vec(&raw).unwrap();
        crate::contract::storage::Kv::put(&s.storage, &key, bytes.clone())
            .await
            .unwrap();

        assert!(wait(8.0, || record(&s, &older).state == State::Revoked).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            s.fake.target.has(&cred.principal),
            "acted on an unreadable record"
        );
        assert_eq!(
            s.storage.dump()[&key],
            bytes,
            "an unreadable record was rewritten"
        );

        let call = |op, path: &str| s.engine.handle(Request::new(op, path));
        let failing = call(Operation::List, "revocations/")
            .await
            .unwrap()
            .data
            .unwrap();
        assert_eq!(failing["keys"], json!([cred.id]));
        let info = &failing["key_info"][&cred.id];
        assert_eq!(info["state"], "unreadable");
        assert_eq!(info["principal"], json!(cred.principal));
        let reason = info["reason"].as_str().unwrap();
        assert!(
            reason.contains("format 2") && reason.contains("upgrade mayfly"),
            "{reason}"
        );
        let leases = call(Operation::List, "leases/")
            .await
            .unwrap()
            .data
            .unwrap();
        assert_eq!(leases["key_info"][&cred.id]["state"], "unreadable");
        let one = call(Operation::Read, &format!("leases/{}", cred.id))
            .await
            .unwrap()
            .data
            .unwrap();
        assert_eq!(one["state"], "unreadable");
        // An orphan purge keeps what the unreadable record names.
        let purged = s
            .engine
            .handle(Request::new(Operation::Update, "orphans/db").with_data(json!({"purge": true})))
            .await
            .unwrap();
        assert_eq!(purged.data.unwrap()["count"], 0);
        assert!(s.fake.target.has(&cred.principal));
    }

    /// A revocation that finished while the target was renewing: the renewal found the user,
    /// the revocation then removed it, and the renewal used to write the record back as
    /// active. Now it is decided again on the revoked record and refused.
    #[tokio::test]
    async fn a_renewal_never_writes_over_a_revocation_made_meanwhile() {
        let s = setup().await;
        let resp = issue(&s, json!({})).await;
        let (renew_go, renew_wait) = tokio::sync::oneshot::channel();
        *s.fake.target.hold_renew.lock().unwrap() = Some(renew_wait);
        let renewing = s
            .engine
            .handle(lease_request(Operation::Renew, &resp, 3600));
        let drive = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            s.engine
                .handle(lease_request(Operation::Revoke, &resp, 0))
                .await
                .unwrap();
            assert_eq!(record(&s, &resp).state, State::Revoked);
            renew_go.send(()).unwrap();
        };
        let (renewed, ()) = tokio::join!(renewing, drive);
        let err = renewed.expect_err("a revoked credential was renewed");
        assert!(err.to_string().contains("is revoked"), "{err}");
        let cred = record(&s, &resp);
        assert_eq!(cred.state, State::Revoked);
        assert_eq!(s.fake.target.count(), 0);
    }

    /// Found by the chaos suite: the scheduler revoked an intent whose create was still under
    /// way (the target was slow), found nothing on the target, and the issuance then made the
    /// record active: the principal lived on, recorded as revoked. Now the scheduler leaves a
    /// credential being issued alone and the issuance revokes it once it exists.
    #[tokio::test]
    async fn an_intent_that_falls_due_while_its_create_is_slow_never_leaves_a_live_principal() {
        let s = setup().await;
        let (create_go, create_wait) = tokio::sync::oneshot::channel();
        *s.fake.target.hold_create.lock().unwrap() = Some(create_wait);
        let issuing = s
            .engine
            .handle(Request::new(Operation::Read, "creds/app").with_data(json!({"ttl": 1})));
        let target = s.fake.target.clone();
        let drive = async move {
            // Past the intent's deadline, with the create still held: nothing was revoked.
            tokio::time::sleep(Duration::from_millis(2500)).await;
            assert_eq!(target.revoke_calls.load(Ordering::SeqCst), 0);
            create_go.send(()).unwrap();
        };
        let (issued, ()) = tokio::join!(issuing, drive);
        let err = issued.expect_err("a credential past its deadline was issued");
        assert!(
            err.to_string()
                .contains("revoked while it was being issued"),
            "{err}"
        );
        assert!(wait(5.0, || s.fake.target.count() == 0).await);
        let records = s.storage.dump();
        let (_, bytes) = records
            .iter()
            .find(|(k, _)| k.starts_with(ledger::RECORDS))
            .expect("the credential's record");
        let cred: Credential = serde_json::from_slice(bytes).unwrap();
        assert_eq!(cred.state, State::Revoked);
    }

    /// An operator's revocation that comes while a credential is being created waits for the
    /// create and then revokes what it made; its report counts it.
    #[tokio::test]
    async fn an_operator_revocation_during_a_create_waits_for_it_and_revokes_it() {
        let s = setup().await;
        let (create_go, create_wait) = tokio::sync::oneshot::channel();
        *s.fake.target.hold_create.lock().unwrap() = Some(create_wait);
        let issuing = s
            .engine
            .handle(Request::new(Operation::Read, "creds/app").with_data(json!({"ttl": 60})));
        let revoking = async {
            // Once the intent is on record.
            intent_on_record(&s).await;
            s.engine
                .handle(Request::new(Operation::Update, "revoke/role/app"))
                .await
        };
        let target = s.fake.target.clone();
        let drive = async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(target.revoke_calls.load(Ordering::SeqCst), 0);
            create_go.send(()).unwrap();
        };
        let (issued, revoked, ()) = tokio::join!(issuing, revoking, drive);
        issued.expect_err("a credential revoked during its issuance was issued");
        let report = revoked.unwrap().data.unwrap();
        assert_eq!(report["revoked"], 1, "{report:?}");
        assert_eq!(s.fake.target.count(), 0);
    }

    /// Found by a hostile role writer: a template that made the name of an existing account
    /// got a failed create, whose undo then dropped that account.
    #[tokio::test]
    async fn a_name_that_is_taken_fails_the_issuance_and_its_account_is_left_alone() {
        let s = setup().await;
        s.engine
            .handle(Request::new(Operation::Update, "roles/app").with_data(
                json!({"db_name": "db", "username_template": "{{ random 1 | lowercase }}"}),
            ))
            .await
            .unwrap();
        // Every name the template can make is someone's account.
        for c in ('a'..='z').chain('0'..='9') {
            s.fake
                .target
                .principals
                .lock()
                .unwrap()
                .insert(c.to_string());
        }
        let err = s
            .engine
            .handle(Request::new(Operation::Read, "creds/app"))
            .await
            .unwrap_err();
        assert_eq!(err.status(), 409, "{err}");
        assert!(
            err.to_string().contains("already has a principal named"),
            "{err}"
        );
        // Found before anything was on record: no intent, nothing revoked.
        assert!(
            !s.storage
                .dump()
                .keys()
                .any(|k| k.starts_with(ledger::RECORDS))
        );
        assert_eq!(s.fake.target.count(), 36);
        assert_eq!(s.fake.target.revoke_calls.load(Ordering::SeqCst), 0);
    }

    /// The name was free when issuance looked, and taken when it created: the create's refusal
    /// closes the record without a revocation.
    #[tokio::test]
    async fn a_name_taken_between_the_look_up_and_the_create_is_left_alone() {
        let s = setup().await;
        let (create_go, create_wait) = tokio::sync::oneshot::channel();
        *s.fake.target.hold_create.lock().unwrap() = Some(create_wait);
        let issuing = s
            .engine
            .handle(Request::new(Operation::Read, "creds/app").with_data(json!({"ttl": 60})));
        let squat = async {
            let intent = intent_on_record(&s).await;
            assert_eq!(intent.name_was_free, Some(true));
            s.fake
                .target
                .principals
                .lock()
                .unwrap()
                .insert(intent.principal.clone());
            create_go.send(()).unwrap();
            intent
        };
        let (issued, intent) = tokio::join!(issuing, squat);
        assert_eq!(issued.unwrap_err().status(), 409);
        // Past the intent's grace, with the scheduler running: the account is still there.
        let bytes = s.storage.dump()[&format!("{}{}", ledger::RECORDS, intent.id)].clone();
        let closed: Credential = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            (closed.state, closed.name_was_free),
            (State::Revoked, Some(false))
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(s.fake.target.has(&intent.principal));
        assert_eq!(s.fake.target.revoke_calls.load(Ordering::SeqCst), 0);
    }

    /// An intent of an earlier version does not say whether its name was free: an unmarked
    /// name may be someone's account, so its record ends and the account stays.
    #[tokio::test]
    async fn an_earlier_versions_intent_with_an_unmarked_name_is_left_on_the_target() {
        let s = setup().await;
        let resp = issue(&s, json!({"ttl": 1})).await;
        let mut cred = record(&s, &resp);
        s.engine.stop().await;
        s.fake
            .target
            .principals
            .lock()
            .unwrap()
            .insert("app_owner".into());
        let previous = cred.due;
        cred.state = State::Intent;
        cred.principal = "app_owner".into();
        cred.name_was_free = None;
        cred.due = cred.deadline;
        ledger::store(&s.storage, &cred, Some(previous))
            .await
            .unwrap();
        let _fresh = restarted(&s);
        assert!(wait(5.0, || record(&s, &resp).state == State::Revoked).await);
        let c = record(&s, &resp);
        assert_eq!(c.last_error.as_deref(), Some(ledger::NOT_OURS));
        assert!(s.fake.target.has("app_owner"));
    }

    #[tokio::test]
    async fn an_intent_left_by_a_crash_is_revoked_by_a_new_scheduler() {
        let s = setup().await;
        let resp = issue(&s, json!({"ttl": 1})).await;
        // Put the record back to an intent, as a crash between create and activation leaves it.
        let mut cred = record(&s, &resp);
        s.engine.stop().await;
        let previous = cred.due;
        cred.state = State::Intent;
        cred.due = cred.deadline;
        ledger::store(&s.storage, &cred, Some(previous))
            .await
            .unwrap();
        let _fresh = restarted(&s);
        assert!(wait(5.0, || s.fake.target.count() == 0).await);
        let c = record(&s, &resp);
        assert_eq!(c.state, State::Revoked);
        assert_eq!(c.revoke_reason.as_deref(), Some("issuance never completed"));
    }

    #[tokio::test]
    async fn issuance_indexes_a_long_lived_credential_at_its_deadline_only() {
        let s = setup().await;
        let resp = issue(&s, json!({"ttl": "1h"})).await;
        let cred = record(&s, &resp);
        assert_eq!((cred.state, cred.due), (State::Active, cred.deadline));
        // The intent's entry goes right after the reply.
        let deadline_only = || {
            let entries = due_entries(&s, &cred.id);
            entries.len() == 1 && entries[0].contains(&format!("/{:012}_", cred.deadline))
        };
        assert!(
            wait(2.0, deadline_only).await,
            "{:?}",
            due_entries(&s, &cred.id)
        );
        // Short-lived: the intent's entry is at the deadline already, and stays.
        let resp = issue(&s, json!({"ttl": 30})).await;
        let cred = record(&s, &resp);
        let entries = due_entries(&s, &cred.id);
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert!(entries[0].contains(&format!("/{:012}_", cred.deadline)));
    }

    #[tokio::test]
    async fn intent_entries_a_crash_left_are_dropped_without_writing_the_record() {
        let (s, issued) = forty_issued_then_stopped().await;
        // A crash between an activation and the removal of the intent's entry leaves that
        // entry. Put one back for each record, brought to now as a new process finds it once
        // the intent's grace has run out, and mark the stored record: a record the scheduler
        // wrote would lose the mark (and with it a renewal written between the scheduler's
        // read and its write).
        let now = crate::contract::host::now();
        for resp in &issued {
            let cred = record(&s, resp);
            assert_eq!(cred.due, cred.deadline);
            s.storage
                .put(&ledger::due_key(now, &cred.id), Vec::new())
                .await
                .unwrap();
            let mut marked = serde_json::to_value(&cred).unwrap();
            marked["mark"] = json!(true);
            let key = format!("{}{}", ledger::RECORDS, cred.id);
            s.storage
                .put(&key, marked.to_string().into_bytes())
                .await
                .unwrap();
        }
        let fresh = restarted(&s);
        let at_deadline = |id: &str, deadline: u64| {
            let entries = due_entries(&s, id);
            entries.len() == 1 && entries[0].contains(&format!("/{deadline:012}_"))
        };
        let indexed = || {
            issued.iter().all(|r| {
                let cred = record(&s, r);
                at_deadline(&cred.id, cred.deadline)
            })
        };
        assert!(
            wait(5.0, indexed).await,
            "not every record was indexed at its deadline"
        );
        for resp in &issued {
            let id = record(&s, resp).id;
            let stored = &s.storage.dump()[&format!("{}{id}", ledger::RECORDS)];
            let stored: Value = serde_json::from_slice(stored).unwrap();
            assert_eq!(stored["mark"], json!(true), "record {id} was written again");
            assert_eq!(stored["state"], json!("active"));
        }
        assert_eq!(s.fake.target.count(), 40);
        fresh.stop().await;
    }

    #[tokio::test]
    async fn active_records_an_earlier_version_left_at_their_intent_time_move_to_their_deadline() {
        let (s, issued) = forty_issued_then_stopped().await;
        // Active records due at their intent's time, as an earlier mayfly wrote them, found
        // by a new process once that time has passed.
        let now = crate::contract::host::now();
        for resp in &issued {
            let mut cred = record(&s, resp);
            let previous = cred.due;
            cred.due = now;
            ledger::store(&s.storage, &cred, Some(previous))
                .await
                .unwrap();
            for stale in due_entries(&s, &cred.id) {
                if !stale.contains(&format!("/{now:012}_")) {
                    s.storage.delete(&stale).await.unwrap();
                }
            }
        }
        let fresh = restarted(&s);
        let moved = || {
            issued
                .iter()
                .all(|r| record(&s, r).due == record(&s, r).deadline)
        };
        assert!(wait(5.0, moved).await, "not every record was moved");
        // One index entry each, at its deadline; nothing revoked.
        for resp in &issued {
            let cred = record(&s, resp);
            let entries = due_entries(&s, &cred.id);
            assert_eq!(entries.len(), 1, "{entries:?}");
            assert!(entries[0].contains(&format!("/{:012}_", cred.deadline)));
            assert_eq!(cred.state, State::Active);
        }
        assert_eq!(s.fake.target.count(), 40);
        fresh.stop().await;
    }

    /// 40 credentials issued with a TTL of an hour, then the engine stopped, as a crash
    /// leaves them for the next process.
    async fn forty_issued_then_stopped() -> (Setup, Vec<Response>) {
        let s = setup().await;
        let mut issued = Vec::new();
        for _ in 0..40 {
            issued.push(issue(&s, json!({})).await);
        }
        // Each indexed at its deadline only, once the intents' entries are removed.
        let settled = || {
            issued
                .iter()
                .all(|r| due_entries(&s, &record(&s, r).id).len() == 1)
        };
        assert!(wait(2.0, settled).await, "intent entries were not removed");
        s.engine.stop().await;
        (s, issued)
    }

    /// The due-index entries of credential `id`.
    fn due_entries(s: &Setup, id: &str) -> Vec<String> {
        s.storage
            .dump()
            .into_keys()
            .filter(|k| k.starts_with(ledger::DUE) && k.ends_with(&format!("_{id}")))
            .collect()
    }

    /// A new engine over the same storage and target, as a restarted process would be.
    fn restarted(s: &Setup) -> Engine {
        let fresh = Engine::new(
            Arc::new(s.storage.clone()),
            Backends::new(vec![s.fake.clone()]),
            Arc::new(FixedHost::default()),
            "v0",
        );
        fresh.start(crate::NodeRole::Active);
        fresh
    }

    async fn wait(secs: f64, mut check: impl FnMut() -> bool) -> bool {
        let end = std::time::Instant::now() + Duration::from_secs_f64(secs);
        while std::time::Instant::now() < end {
            if check() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        check()
    }
}
