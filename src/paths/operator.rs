//! The operator's emergency tools (sudo paths): revoke in bulk by task, role, connection or
//! everything; list the revocations that keep failing; find and purge orphans, the principals
//! on a target that carry mayfly's naming mark but have no live ledger record.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value, json};

use crate::contract::backend::Principal;
use crate::contract::error::Error;
use crate::contract::fields::{FieldDef, FieldType, Fields};
use crate::contract::request::Operation;
use crate::contract::request::{Request, Response};
use crate::jobs::revocation::{self, Report};
use crate::model::audit::{self, Action, Event};
use crate::model::ledger::{self, Credential, State};
use crate::model::role;
use crate::mount::MountCore;
use crate::paths::router::{PathDef, op};
use crate::paths::tasks;

/// The most principals dropped in one call during a purge.
const PURGE_BATCH: usize = 1000;

/// What a bulk revocation covers.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    Task(&'a str),
    Role(&'a str),
    Connection(&'a str),
    All,
}

impl Scope<'_> {
    fn describe(&self) -> String {
        match self {
            Scope::Task(id) => format!("revoke/task/{id}"),
            Scope::Role(name) => format!("revoke/role/{name}"),
            Scope::Connection(name) => format!("revoke/config/{name}"),
            Scope::All => "revoke/all".to_owned(),
        }
    }

    fn covers(&self, c: &Credential) -> bool {
        match self {
            Scope::Task(_) | Scope::All => true,
            Scope::Role(name) => c.role == *name,
            Scope::Connection(name) => c.connection == *name,
        }
    }
}

/// Every credential the ledger does not yet have as revoked, and the records this mayfly
/// cannot read (which may be live: they are never acted on).
pub(crate) async fn live_credentials(core: &MountCore) -> Result<ledger::Loaded, Error> {
    let mut loaded = ledger::scan(core.storage.as_ref()).await?;
    loaded.records.retain(|c| c.state != State::Revoked);
    Ok(loaded)
}

/// Refuses to delete connection `name`, or to point it at another server, while credentials
/// issued on it are live or being revoked: their revocations need the connection as it was.
/// `doing` says what was asked ("delete it").
pub async fn require_no_credentials(
    core: &MountCore,
    name: &str,
    doing: &str,
) -> Result<(), Error> {
    let live = live_credentials(core).await?;
    let count = live.records.iter().filter(|c| c.connection == name).count()
        + live
            .unreadable
            .iter()
            .filter(|u| u.connection.as_deref() == Some(name))
            .count();
    if count == 0 {
        return Ok(());
    }
    Err(Error::Conflict(format!(
        "connection '{name}' has {count} credential(s) live or being revoked, whose revocation \
         needs it as it is; revoke them first (write revoke/config/{name}, then wait until \
         revocations/ lists none of them), then {doing}"
    )))
}

/// `revoke/...`: revokes every live credential in `scope` on its target and reports how many
/// were revoked, already gone, and failed (failures stay in the ledger and are retried).
pub async fn revoke(core: &MountCore, scope: Scope<'_>, req: &Request) -> Result<Response, Error> {
    let what = scope.describe();
    let report = match scope {
        Scope::Task(id) => {
            tasks::end(core, id, "revoked by an operator", &req.requester, false)
                .await?
                .ok_or_else(|| Error::bad_request(format!("no task '{id}'")))?
                .1
        }
        _ => {
            let ids: Vec<String> = live_credentials(core)
                .await?
                .records
                .into_iter()
                .filter(|c| scope.covers(c))
                .map(|c| c.id)
                .collect();
            revocation::revoke_many(core, ids, &format!("revoked by an operator ({what})")).await
        }
    };
    emit_operator(
        Action::OperatorRevoke,
        &report_outcome(&report),
        req,
        &what,
        &report,
    );
    let mut data = report.view();
    data.insert("scope".into(), json!(what));
    Ok(Response::data(data))
}

fn report_outcome(r: &Report) -> String {
    if r.failed.is_empty() { "ok" } else { "failed" }.to_owned()
}

fn emit_operator(action: Action, outcome: &str, req: &Request, what: &str, r: &Report) {
    let detail = format!("{what}; {}", r.summary());
    audit::emit(action, outcome, &Event::by(&req.requester).detail(&detail));
}

/// `revocations/`: the credentials whose revocation has failed at least once and not yet
/// succeeded, with attempts, last error and since when; and the records this mayfly cannot
/// read, with the reason, which it leaves to the mayfly that can.
pub async fn revocations(core: &MountCore) -> Result<Response, Error> {
    let live = live_credentials(core).await?;
    let connections = backlogs(&live.records, crate::contract::host::now());
    let mut failing: Vec<Credential> = live
        .records
        .into_iter()
        .filter(|c| c.state == State::Revoking && c.attempts > 0)
        .collect();
    failing.sort_by(|a, b| a.id.cmp(&b.id));
    let mut info = Map::new();
    for c in &failing {
        info.insert(
            c.id.clone(),
            json!({"role": c.role, "connection": c.connection, "principal": c.principal,
                   "task_id": c.task_id, "attempts": c.attempts, "last_error": c.last_error,
                   "failing_since": c.revoke_requested_at, "last_attempt_at": c.last_attempt_at,
                   "next_attempt_at": c.due, "reason": c.revoke_reason}),
        );
    }
    let mut keys: Vec<String> = failing.into_iter().map(|c| c.id).collect();
    for u in live.unreadable {
        info.insert(u.id.clone(), u.view());
        keys.push(u.id);
    }
    let mut resp = Response::list(keys);
    if let Some(d) = resp.data.as_mut() {
        d.insert("key_info".into(), Value::Object(info));
        d.insert("connections".into(), Value::Object(connections));
    }
    Ok(resp)
}

/// Each connection's backlog: how many of its credentials are past their deadline (or asked
/// to go) and not yet revoked, how many of those have failed at least once, and the oldest
/// such deadline, so that a target holding revocations back shows at a glance.
fn backlogs(live: &[Credential], now: u64) -> Map<String, Value> {
    let mut out: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    for c in live {
        let overdue = c.state == State::Revoking || c.deadline <= now;
        if !overdue {
            continue;
        }
        let since = c.revoke_requested_at.unwrap_or(c.deadline).min(c.deadline);
        let entry = out.entry(c.connection.as_str()).or_insert((0, 0, since));
        entry.0 += 1;
        entry.1 += u64::from(c.attempts > 0);
        entry.2 = entry.2.min(since);
    }
    out.into_iter()
        .map(|(name, (backlog, failing, oldest))| {
            let view = json!({"backlog": backlog, "failing": failing,
                              "oldest_overdue_since": oldest,
                              "oldest_overdue_secs": now.saturating_sub(oldest)});
            (name.to_owned(), view)
        })
        .collect()
}

pub fn orphan_fields() -> Vec<FieldDef> {
    vec![FieldDef::new(
        "purge",
        FieldType::Bool,
        "Drop the orphans found. Without it (the default) a write is a dry run.",
    )]
}

/// The settings to list connection `name`'s target with: none for most kinds, each role's
/// (once per distinct settings) for kinds whose roles say how to list.
pub(crate) async fn listings(
    core: &MountCore,
    name: &str,
) -> Result<Vec<Map<String, Value>>, Error> {
    let kind = core.connection_kind(name).await?;
    if !core.backends.find(&kind).is_some_and(|b| b.lists_by_role()) {
        return Ok(vec![Map::new()]);
    }
    let mut all: Vec<Map<String, Value>> = Vec::new();
    for role_name in role::list(core.storage.as_ref()).await? {
        if let Some(role) = core.role(&role_name).await?
            && role.db_name == name
            && !all.contains(&role.settings)
        {
            all.push(role.settings);
        }
    }
    Ok(all)
}

/// `orphans/NAME`: the principals on connection `name` that carry mayfly's mark but have no
/// live ledger record; a write (`may_purge`) with `purge=true` drops them.
pub async fn orphans(
    core: &MountCore,
    name: &str,
    may_purge: bool,
    req: &Request,
) -> Result<Response, Error> {
    let fields = Fields::parse(&orphan_fields(), &req.data)?;
    let purge = may_purge && fields.bool("purge").unwrap_or(false);
    if core.connection(name).await?.is_none() {
        return Err(Error::bad_request(format!("no connection '{name}'")));
    }
    let target = core.target(name).await?;
    // The target first, then the ledger: a principal being issued meanwhile already has its
    // intent on record when it appears on the target, so it is never taken for an orphan.
    let mut marked: Vec<(Principal, Map<String, Value>)> = Vec::new();
    for settings in listings(core, name).await? {
        for p in target.list_marked(&core.mark, &settings).await? {
            if !marked.iter().any(|(m, _)| m.name == p.name) {
                marked.push((p, settings.clone()));
            }
        }
    }
    let ledger = live_credentials(core).await?;
    // A record this mayfly cannot read may hold a live principal: what it names is kept, and
    // nothing is purged when it names none (mayfly cannot tell what it protects).
    if purge && let Some(u) = ledger.unreadable.iter().find(|u| u.principal.is_none()) {
        return Err(Error::bad_request(format!(
            "cannot purge: ledger record '{}' is unreadable ({}) and does not say which \
             principal it holds; upgrade mayfly first",
            u.id, u.reason
        )));
    }
    let unreadable = ledger
        .unreadable
        .into_iter()
        .filter(|u| u.connection.as_deref().is_none_or(|c| c == name))
        .filter_map(|u| u.principal);
    let live: HashSet<String> = ledger
        .records
        .into_iter()
        .filter(|c| c.connection == name)
        .map(|c| c.principal)
        .chain(unreadable)
        .collect();
    marked.retain(|(p, _)| !live.contains(&p.name));
    let orphans: Vec<String> = marked.iter().map(|(p, _)| p.name.clone()).collect();

    let what = format!("orphans/{name}");
    let mut data = Map::new();
    data.insert("connection".into(), json!(name));
    data.insert("mark".into(), json!(core.mark));
    data.insert("count".into(), json!(orphans.len()));
    if !purge {
        let report = Report::default();
        let detail = format!("{what}: {} found", orphans.len());
        emit_operator(Action::OrphanScan, "ok", req, &detail, &report);
        data.insert("orphans".into(), json!(orphans));
        data.insert("dry_run".into(), json!(true));
        return Ok(Response::data(data));
    }

    let mut report = Report::default();
    // Each orphan is revoked with the settings of the listing that found it: no record, so no
    // statements of its own role; kinds that list by role revoke by that role's calls.
    let mut groups: Vec<(Map<String, Value>, Vec<Principal>)> = Vec::new();
    for (p, settings) in marked {
        match groups.iter_mut().find(|(s, _)| *s == settings) {
            Some((_, ps)) => ps.push(p),
            None => groups.push((settings, vec![p])),
        }
    }
    // On record before the target is touched (and only if that write succeeds).
    let kv = core.storage.as_ref();
    let record = match orphans.is_empty() {
        true => None,
        false => Some(ledger::begin_purge(kv, name, &orphans, crate::contract::host::now()).await?),
    };
    for (settings, principals) in &groups {
        for chunk in principals.chunks(PURGE_BATCH) {
            match target.revoke(chunk, settings).await {
                Ok(r) => {
                    report.already_gone += r.already_gone.len();
                    report.revoked += chunk.len() - r.already_gone.len();
                }
                Err(e) => report
                    .failed
                    .extend(chunk.iter().map(|p| (p.name.clone(), e.to_string()))),
            }
        }
    }
    if let Some(record) = record
        && let Err(e) = ledger::end_purge(kv, &record).await
    {
        tracing::warn!(error = %e, "could not remove the record of a finished purge");
    }
    let detail = format!("{what}: {} found", orphans.len());
    emit_operator(
        Action::OrphanPurge,
        &report_outcome(&report),
        req,
        &detail,
        &report,
    );
    data.insert("orphans".into(), json!(orphans));
    data.insert("dry_run".into(), json!(false));
    data.insert("purged".into(), json!(report.revoked));
    data.insert("already_gone".into(), json!(report.already_gone));
    data.insert("failed".into(), json!(report.failed.len()));
    Ok(Response::data(data))
}

/// The paths this module serves, for the engine's table.
pub(crate) fn paths() -> Vec<PathDef> {
    vec![
        PathDef {
            pattern: "revoke/task/",
            fields: vec![],
            operations: vec![op(Operation::List, |c| Box::pin(tasks::list(c.core, None)))],
            reads_act: false,
            synopsis: "List every task, whoever owns it (sudo).",
            description: "",
        },
        PathDef {
            pattern: "revoke/task/{id}",
            fields: vec![],
            operations: vec![
                op(Operation::Read, |c| {
                    Box::pin(tasks::read(c.core, c.param("id"), None))
                }),
                op(Operation::Update, |c| {
                    Box::pin(revoke(c.core, Scope::Task(c.param("id")), c.req))
                }),
            ],
            reads_act: false,
            synopsis: "Read any task with its credentials, or end it and revoke all its \
                credentials (sudo).",
            description: "Answers how many were revoked, were already gone, and failed; \
                failures stay in the ledger and are retried (see revocations/).",
        },
        PathDef {
            pattern: "revoke/role/{name}",
            fields: vec![],
            operations: vec![op(Operation::Update, |c| {
                Box::pin(revoke(c.core, Scope::Role(c.param("name")), c.req))
            })],
            reads_act: false,
            synopsis: "Revoke every live credential of a role (sudo).",
            description: "Answers how many were revoked, were already gone, and failed.",
        },
        PathDef {
            pattern: "revoke/config/{name}",
            fields: vec![],
            operations: vec![op(Operation::Update, |c| {
                Box::pin(revoke(c.core, Scope::Connection(c.param("name")), c.req))
            })],
            reads_act: false,
            synopsis: "Revoke every live credential on a connection (sudo).",
            description: "Answers how many were revoked, were already gone, and failed.",
        },
        PathDef {
            pattern: "revoke/all",
            fields: vec![],
            operations: vec![op(Operation::Update, |c| {
                Box::pin(revoke(c.core, Scope::All, c.req))
            })],
            reads_act: false,
            synopsis: "Revoke every live credential of the mount (sudo).",
            description: "Answers how many were revoked, were already gone, and failed.",
        },
        PathDef {
            pattern: "revocations/",
            fields: vec![],
            operations: vec![op(Operation::List, |c| Box::pin(revocations(c.core)))],
            reads_act: false,
            synopsis: "The credentials whose revocation keeps failing, with attempts, last \
                error and since when (sudo).",
            description: "",
        },
        PathDef {
            pattern: "orphans/{name}",
            fields: orphan_fields(),
            operations: vec![
                op(Operation::Read, |c| {
                    Box::pin(orphans(c.core, c.param("name"), false, c.req))
                }),
                op(Operation::Update, |c| {
                    Box::pin(orphans(c.core, c.param("name"), true, c.req))
                }),
            ],
            reads_act: true,
            synopsis: "Principals on a connection's target that carry mayfly's naming mark \
                but have no live ledger record (sudo). Write purge=true to drop them; a \
                write without it is a dry run.",
            description: "Only names made with the mark ('mf-', the default username \
                template's prefix) are considered. Two mayfly mounts must not share one \
                target: each would see the other's principals as orphans.",
        },
    ]
}
