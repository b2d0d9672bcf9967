//! `tasks/ID`: a task is the unit of access. It has a deadline, an owner (the entity that
//! created it), a description and metadata. Credentials issued under it never outlive it, and
//! ending it (deleting it, an operator's `revoke/task/ID`, or its deadline passing) revokes every
//! credential issued under it, across roles and connections.
//!
//! The task record itself is `model::task`. A task is indexed in the ledger's due index (entry
//! `task.<id>`) at its deadline while open, and at the end of its retention once ended, so the
//! scheduler ends and later purges it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::contract::error::Error;
use crate::contract::fields::{FieldDef, FieldType, Fields};
use crate::contract::host::{now, random_lower};
use crate::contract::request::Operation;
use crate::contract::request::{Request, Requester, Response};
use crate::contract::storage::{self, Kv};
use crate::jobs::revocation::{self, Report};
use crate::model::approval;
use crate::model::audit::{self, Action, Event};
use crate::model::ledger::{self, RETENTION_SECS};
use crate::model::task::{PREFIX, Task, TaskState, entry, key, load, metadata_values};
use crate::mount::MountCore;
use crate::mount::decision::{self, Facts, PolicyAction, Resource};
use crate::paths::router::{PathDef, op};

/// Where the mount-wide task settings live (served at `config/tasks`; not under `config/`, which
/// holds connections).
const SETTINGS_KEY: &str = "settings/tasks";
/// A task's TTL when neither the request nor `config/tasks` gives one.
pub const DEFAULT_TASK_TTL: u64 = 3600;

/// The mount-wide task settings (`config/tasks`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskSettings {
    /// Seconds; 0 means the mount's maximum lease TTL.
    pub max_task_ttl: u64,
    /// Seconds; 0 means [`DEFAULT_TASK_TTL`].
    pub default_task_ttl: u64,
}

pub fn settings_fields() -> Vec<FieldDef> {
    vec![
        FieldDef::new(
            "max_task_ttl",
            FieldType::Duration,
            "The longest a task may run; 0 uses the mount's maximum lease TTL.",
        ),
        FieldDef::new(
            "default_task_ttl",
            FieldType::Duration,
            "A task's TTL when its creation gives none; 0 means one hour.",
        ),
    ]
}

pub fn task_fields() -> Vec<FieldDef> {
    vec![
        FieldDef::new(
            "ttl",
            FieldType::Duration,
            "How long the task runs from now; capped by max_task_ttl. On an update, moves the \
             deadline (shortening it ends credentials that would outlive it).",
        ),
        FieldDef::new("description", FieldType::String, "What the task is for."),
        FieldDef::new(
            "metadata",
            FieldType::StringMap,
            "Key-value pairs describing the task (pipeline, ticket, agent…).",
        ),
        FieldDef::new(
            "bound_to_owner",
            FieldType::Bool,
            "Only the entity that created the task may draw credentials under it, unless the \
             role sets allow_other_task_owners. Default true.",
        ),
    ]
}

pub async fn load_settings(kv: &dyn Kv) -> Result<TaskSettings, Error> {
    Ok(storage::get_json(kv, SETTINGS_KEY)
        .await?
        .unwrap_or_default())
}

pub async fn write_settings(kv: &dyn Kv, data: &Map<String, Value>) -> Result<(), Error> {
    let fields = Fields::parse(&settings_fields(), data)?;
    let mut settings = load_settings(kv).await?;
    if let Some(v) = fields.duration("max_task_ttl") {
        settings.max_task_ttl = v;
    }
    if let Some(v) = fields.duration("default_task_ttl") {
        settings.default_task_ttl = v;
    }
    if settings.max_task_ttl != 0 && settings.default_task_ttl > settings.max_task_ttl {
        return Err(Error::bad_request(format!(
            "field 'default_task_ttl': {}s is longer than max_task_ttl {}s",
            settings.default_task_ttl, settings.max_task_ttl
        )));
    }
    Ok(storage::put_json(kv, SETTINGS_KEY, &settings).await?)
}

pub fn settings_view(s: &TaskSettings) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("max_task_ttl".into(), json!(s.max_task_ttl));
    out.insert("default_task_ttl".into(), json!(s.default_task_ttl));
    out
}

/// Writes `task` and moves its due-index entry from `previous_due` to `task.due`.
async fn store(core: &MountCore, task: &Task, previous_due: Option<u64>) -> Result<(), Error> {
    let kv = core.storage.as_ref();
    let key = key(&task.id);
    let record = storage::put_json(kv, &key, task);
    ledger::store_indexed(kv, &task.entry(), task.due, previous_due, record).await?;
    core.scheduler.track(task.due, &task.entry());
    Ok(())
}

/// The TTL a task gets: the request's, else the configured default, capped by `max_task_ttl`
/// (or the mount's maximum). Returns the TTL and a warning when it was capped.
pub async fn task_ttl(
    core: &MountCore,
    asked: Option<u64>,
) -> Result<(u64, Option<String>), Error> {
    let settings = load_settings(core.storage.as_ref()).await?;
    let max = match settings.max_task_ttl {
        0 => core.max_lease_ttl().await?.as_secs(),
        m => m,
    };
    let ttl = match (asked, settings.default_task_ttl) {
        (Some(t), _) if t > 0 => t,
        (_, 0) => DEFAULT_TASK_TTL,
        (_, d) => d,
    };
    if ttl > max {
        Ok((
            max,
            Some(format!(
                "ttl of {ttl}s is longer than the maximum task TTL of {max}s; capped"
            )),
        ))
    } else {
        Ok((ttl, None))
    }
}

/// What a task write got as far as, for its audit event.
struct Trail {
    action: Action,
    task_id: String,
    policy: String,
}

/// `tasks/` (write, generated id) and `tasks/ID` (write): creates a task, or updates an open one.
/// Emits one audit event, whatever the outcome.
pub async fn write(core: &MountCore, id: Option<&str>, req: &Request) -> Result<Response, Error> {
    let mut trail = Trail {
        action: Action::TaskCreate,
        task_id: id.unwrap_or_default().to_owned(),
        policy: String::new(),
    };
    let result = write_traced(core, id, req, &mut trail).await;
    if id.is_some() && result.is_ok() {
        // A task's metadata and deadline are what hold policies may read.
        core.hold.wake();
    }
    let (outcome, detail) = match &result {
        Ok(r) => (
            "ok",
            format!(
                "deadline {}",
                r.data
                    .as_ref()
                    .map_or(Value::Null, |d| d["deadline"].clone())
            ),
        ),
        Err(e @ Error::PermissionDenied(_)) => ("denied", e.to_string()),
        Err(e) => ("failed", e.to_string()),
    };
    audit::emit(
        trail.action,
        outcome,
        &Event {
            task_id: &trail.task_id,
            policy: &trail.policy,
            ..Event::by(&req.requester).detail(&detail)
        },
    );
    result
}

async fn write_traced(
    core: &MountCore,
    id: Option<&str>,
    req: &Request,
    trail: &mut Trail,
) -> Result<Response, Error> {
    let fields = Fields::parse(&task_fields(), &req.data)?;
    let kv = core.storage.as_ref();
    let existing = match id {
        Some(id) => load(kv, id).await?,
        None => None,
    };
    if existing.is_some() {
        trail.action = Action::TaskUpdate;
    }
    let now = now();
    let mut warnings = Vec::new();
    let asked = fields.duration("ttl");
    let task = match existing {
        Some(mut task) => {
            task.check_owner(&req.requester, "change")?;
            if !task.is_open(now) {
                return Err(Error::bad_request(format!(
                    "task '{}' has ended and cannot be changed",
                    task.id
                )));
            }
            if asked.is_some() {
                let (ttl, warning) = task_ttl(core, asked).await?;
                warnings.extend(warning);
                task.deadline = now + ttl;
            }
            if let Some(d) = fields.str("description") {
                task.description = d.to_owned();
            }
            if let Some(m) = fields.map("metadata") {
                task.metadata = metadata_values(m);
            }
            if let Some(b) = fields.bool("bound_to_owner") {
                task.bound_to_owner = b;
            }
            let ttl = task.deadline.saturating_sub(now);
            let decided = PolicyAsk {
                action: PolicyAction::UpdateTask,
                asked,
                ttl,
                now,
            };
            let cap = decided.enforce(core, req, &task, &mut trail.policy).await?;
            // Only a new ttl is a grant the cap applies to.
            if asked.is_some() {
                warnings.extend(apply_cap(&mut task, cap, now));
            }
            let previous = task.due;
            task.due = task.deadline;
            store(core, &task, Some(previous)).await?;
            task
        }
        None => {
            let (ttl, warning) = task_ttl(core, asked).await?;
            warnings.extend(warning);
            let mut task = Task::open(
                id.map_or_else(|| random_lower(20), str::to_owned),
                fields.str("description").unwrap_or(""),
                fields.map("metadata"),
                &req.requester,
                fields.bool("bound_to_owner").unwrap_or(true),
                now,
                ttl,
            );
            trail.task_id = task.id.clone();
            let decided = PolicyAsk {
                action: PolicyAction::CreateTask,
                asked,
                ttl,
                now,
            };
            let cap = decided.enforce(core, req, &task, &mut trail.policy).await?;
            warnings.extend(apply_cap(&mut task, cap, now));
            task.due = task.deadline;
            store(core, &task, None).await?;
            task
        }
    };
    Ok(Response {
        data: Some(task.view()),
        warnings,
        lease: None,
    })
}

/// A task creation or update for the policies to decide.
struct PolicyAsk {
    action: PolicyAction,
    /// The ttl the request asked for.
    asked: Option<u64>,
    /// The TTL the task gets before any policy cap.
    ttl: u64,
    now: u64,
}

impl PolicyAsk {
    /// The policies' say on `task` (already holding its new values): a 403 when denied, else
    /// the TTL cap of the permit. `logged` receives the decision for the audit event.
    async fn enforce(
        self,
        core: &MountCore,
        req: &Request,
        task: &Task,
        logged: &mut String,
    ) -> Result<Option<u64>, Error> {
        let facts = Facts {
            approval: None,
            credential: None,
            action: self.action,
            requester: &req.requester,
            headers: &req.headers,
            resource: Resource::Task,
            task: Some(task),
            requested_ttl: self.asked.unwrap_or(0),
            ttl: self.ttl,
            now: self.now,
        };
        decision::enforce(core, &facts, logged).await
    }
}

/// Moves the deadline of `task` in by a policy's TTL `cap`; the warning says so.
fn apply_cap(task: &mut Task, cap: Option<u64>, now: u64) -> Option<String> {
    let ttl = task.deadline.saturating_sub(now);
    let cap = cap.filter(|c| *c < ttl)?;
    task.deadline = now + cap;
    Some(format!(
        "ttl of {ttl}s is longer than the @max_ttl of the policy that permitted it ({cap}s); \
         capped to {cap}s"
    ))
}

/// `tasks/ID` read: the task and its credentials with their states, for its owner when it is
/// bound to them (`who`); `None` for an operator's read through `revoke/task/ID`.
pub async fn read(core: &MountCore, id: &str, who: Option<&Requester>) -> Result<Response, Error> {
    let kv = core.storage.as_ref();
    let Some(task) = load(kv, id).await? else {
        return Ok(Response::empty());
    };
    if let Some(who) = who {
        task.check_owner(who, "read")?;
    }
    let ids = ledger::task_credentials(kv, id).await?;
    let loaded = ledger::load_all(kv, &ids).await?;
    let mut creds: Vec<Value> = loaded
        .records
        .into_iter()
        .map(|c| {
            json!({"cred_id": c.id, "role": c.role, "connection": c.connection,
                   "principal": c.principal, "state": c.state.name(), "deadline": c.deadline,
                   "revoke_reason": c.revoke_reason, "last_error": c.last_error})
        })
        .collect();
    creds.extend(loaded.unreadable.into_iter().map(|u| {
        let mut v = u.view();
        v["cred_id"] = json!(u.id);
        v
    }));
    creds.sort_by_key(|c| c["cred_id"].as_str().unwrap_or("").to_owned());
    let mut data = task.view();
    data.insert("credentials".into(), Value::Array(creds));
    Ok(Response::data(data))
}

/// `tasks/` list: the tasks `who` owns, with each one's state, deadline, owner and
/// description; every task for an operator's list through `revoke/task/` (`who` is `None`).
pub async fn list(core: &MountCore, who: Option<&Requester>) -> Result<Response, Error> {
    let kv = core.storage.as_ref();
    let mut ids = Vec::new();
    let mut info = Map::new();
    for id in kv.list(PREFIX).await? {
        let Some(t) = load(kv, &id).await? else {
            continue;
        };
        if who.is_some_and(|who| !t.owned_by(who)) {
            continue;
        }
        info.insert(
            id.clone(),
            json!({"state": t.state.name(), "deadline": t.deadline,
                   "owner_entity_id": t.owner.entity_id, "description": t.description}),
        );
        ids.push(id);
    }
    let mut resp = Response::list(ids);
    if let Some(d) = resp.data.as_mut() {
        d.insert("key_info".into(), Value::Object(info));
    }
    Ok(resp)
}

/// Ends task `id` (if still open) and revokes every live credential issued under it, waiting
/// until each revocation is done or recorded as failing. `None` when there is no such task.
/// With `as_owner`, `by` must own the task if it is bound to its owner (a client's delete);
/// without, it ends whoever `by` is (an operator, the deadline).
pub async fn end(
    core: &MountCore,
    id: &str,
    reason: &str,
    by: &Requester,
    as_owner: bool,
) -> Result<Option<(Task, Report)>, Error> {
    let kv = core.storage.as_ref();
    let Some(mut task) = load(kv, id).await? else {
        return Ok(None);
    };
    if as_owner {
        task.check_owner(by, "end")?;
    }
    let now = now();
    if task.state == TaskState::Open {
        // Marked ended before its credentials are listed: an issuance that checked the task
        // before this write finds it ended when it checks again after creating (creds.rs).
        task.state = TaskState::Ended;
        task.ended_at = Some(now);
        task.end_reason = Some(reason.to_owned());
        let previous = task.due;
        task.due = now + RETENTION_SECS;
        store(core, &task, Some(previous)).await?;
    }
    // Its approval requests can no longer be collected: a credential only comes under an
    // open task.
    if let Err(e) = approval::end_for_task(kv, id, reason, now).await {
        tracing::warn!(task_id = %id, error = %e, "could not end the task's approval requests");
    }
    // Credentials already revoked come back as not live and are not counted.
    let ids = ledger::task_credentials(kv, id).await?;
    let report = revocation::revoke_many(core, ids, &format!("task ended: {reason}")).await;
    let detail = format!("{reason}; {}", report.summary());
    audit::emit(
        Action::TaskEnd,
        if report.failed.is_empty() {
            "ok"
        } else {
            "failed"
        },
        &Event {
            task_id: id,
            ..Event::by(by).detail(&detail)
        },
    );
    Ok(Some((task, report)))
}

/// `tasks/ID` delete: ends the task (its owner alone, when it is bound to them); answers with
/// what was revoked.
pub async fn delete(core: &MountCore, id: &str, req: &Request) -> Result<Response, Error> {
    match end(core, id, "deleted", &req.requester, true).await? {
        None => Ok(Response::empty()),
        Some((task, report)) => {
            let mut data = report.view();
            data.insert("task_id".into(), json!(task.id));
            Ok(Response::data(data))
        }
    }
}

/// The scheduler reached the due entry of task `id`: end it at its deadline, purge it at the
/// end of its retention.
pub async fn on_due(core: Arc<MountCore>, entry_due: u64, id: String) {
    let kv = core.storage.as_ref();
    let now = now();
    let task = match load(kv, &id).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            let _ = ledger::remove_due(kv, entry_due, &entry(&id)).await;
            return;
        }
        Err(e) => {
            tracing::warn!(task_id = %id, error = %e, "could not read a task; retrying");
            core.scheduler.look_again(now, entry(&id));
            return;
        }
    };
    if task.due != entry_due {
        let _ = ledger::remove_due(kv, entry_due, &entry(&id)).await;
    }
    if task.due > now {
        return;
    }
    match task.state {
        TaskState::Open => {
            if let Err(e) = end(&core, &id, "deadline reached", &Requester::default(), false).await
            {
                tracing::warn!(task_id = %id, error = %e, "could not end a task; retrying");
                core.scheduler.look_again(now, entry(&id));
            }
        }
        TaskState::Ended => {
            let purged = async {
                kv.delete(&key(&id)).await?;
                ledger::remove_due(kv, task.due, &entry(&id)).await
            };
            if let Err(e) = purged.await {
                tracing::warn!(task_id = %id, error = %e, "could not purge an ended task");
            }
        }
    }
}

/// The paths this module serves, for the engine's table.
pub(crate) fn paths() -> Vec<PathDef> {
    vec![
        PathDef {
            pattern: "config/tasks",
            fields: settings_fields(),
            operations: vec![
                op(Operation::Read, |c| {
                    Box::pin(async move {
                        Ok(Response::data(settings_view(
                            &load_settings(c.core.storage.as_ref()).await?,
                        )))
                    })
                }),
                op(Operation::Update, |c| {
                    Box::pin(async move {
                        write_settings(c.core.storage.as_ref(), &c.req.data).await?;
                        Ok(Response::empty())
                    })
                }),
            ],
            reads_act: false,
            synopsis: "Mount-wide task settings: max_task_ttl and default_task_ttl.",
            description: "This path is matched before config/NAME, so no connection can be \
                named 'tasks'.",
        },
        PathDef {
            pattern: "tasks",
            fields: task_fields(),
            operations: vec![op(Operation::Update, |c| {
                Box::pin(write(c.core, None, c.req))
            })],
            reads_act: false,
            synopsis: "Create a task with a generated id (the host refuses writes to 'tasks/').",
            description: "A task has a deadline (ttl), an owner (the requesting entity), a \
                description and metadata. Credentials issued with its task_id never outlive \
                it, and ending it revokes them all.",
        },
        PathDef {
            pattern: "tasks/",
            fields: vec![],
            operations: vec![op(Operation::List, |c| {
                Box::pin(list(c.core, Some(&c.req.requester)))
            })],
            reads_act: false,
            synopsis: "List the caller's own tasks, with each one's state, deadline, owner \
                and description.",
            description: "Operators list every task at revoke/task/ (sudo).",
        },
        PathDef {
            pattern: "tasks/{id}",
            fields: task_fields(),
            operations: vec![
                op(Operation::Read, |c| {
                    Box::pin(read(c.core, c.param("id"), Some(&c.req.requester)))
                }),
                op(Operation::Update, |c| {
                    Box::pin(write(c.core, Some(c.param("id")), c.req))
                }),
                op(Operation::Delete, |c| {
                    Box::pin(delete(c.core, c.param("id"), c.req))
                }),
            ],
            reads_act: false,
            synopsis: "A task: create or update it, read it with its credentials, or delete \
                it, which ends it and revokes every credential issued under it before \
                answering.",
            description: "A task ends at its deadline through the scheduler in the same way. \
                Shortening the ttl of an open task moves its deadline; its credentials are \
                revoked at the new deadline. A task bound to its owner (bound_to_owner, the \
                default) is read, changed and ended by its owner alone (the same entity; the \
                same token for tokens without one); operators reach it under revoke/task/.",
        },
    ]
}
