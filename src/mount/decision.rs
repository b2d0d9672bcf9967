//! One policy decision: the Cedar principal, action, resource and context built from what
//! mayfly knows of a request, evaluated against the mount's policies.
//!
//! Only the policies in scope of the action and resource count (see [`PolicySet::in_scope`]):
//! with none, the request goes on as it would without policies; with at least one, Cedar
//! decides, and it denies unless a permit is satisfied and no forbid is.

use std::collections::BTreeMap;
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    RestrictedExpression as Expr,
};

use crate::contract::error::Error;
use crate::contract::host::Identity;
use crate::contract::request::Requester;
use crate::model::approval::Approval;
use crate::model::policy_set::{self, PolicySet};
use crate::model::task::Task;
use crate::mount::MountCore;

/// What a request does, as policies name it (`Mayfly::Action::"issue"`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyAction {
    Issue,
    Renew,
    CreateTask,
    UpdateTask,
    /// May a live credential stay live ([`crate::jobs::hold`])?
    Hold,
}

impl PolicyAction {
    pub const ALL: [PolicyAction; 5] = [
        PolicyAction::Issue,
        PolicyAction::Renew,
        PolicyAction::CreateTask,
        PolicyAction::UpdateTask,
        PolicyAction::Hold,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PolicyAction::Issue => "issue",
            PolicyAction::Renew => "renew",
            PolicyAction::CreateTask => "create_task",
            PolicyAction::UpdateTask => "update_task",
            PolicyAction::Hold => "hold",
        }
    }

    pub fn parse(s: &str) -> Option<PolicyAction> {
        PolicyAction::ALL.into_iter().find(|a| a.name() == s)
    }
}

/// The role a credential is issued or renewed from.
pub struct RoleFacts<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub connection: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// The live credential a `hold` decision is about. Times are Unix seconds.
pub struct CredentialFacts<'a> {
    pub id: &'a str,
    pub created_at: u64,
    pub deadline: u64,
}

/// What the request is about.
pub enum Resource<'a> {
    Role(RoleFacts<'a>),
    /// The task being created or updated.
    Task,
}

/// Everything a decision is made from.
pub struct Facts<'a> {
    pub action: PolicyAction,
    pub requester: &'a Requester,
    pub headers: &'a BTreeMap<String, String>,
    pub resource: Resource<'a>,
    /// The task issued or renewed under, or the task being created or updated.
    pub task: Option<&'a Task>,
    /// The approval an issuance collects, for roles that need one.
    pub approval: Option<&'a Approval>,
    /// The credential a `hold` decision is about.
    pub credential: Option<CredentialFacts<'a>>,
    /// The TTL asked for; 0 when none.
    pub requested_ttl: u64,
    /// The TTL mayfly would grant before any policy cap.
    pub ttl: u64,
    pub now: u64,
}

/// How a decision came out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// Allowed; for `hold`, the credential stays live.
    pub allowed: bool,
    /// The policies in scope; empty means policies had no say.
    pub in_scope: Vec<String>,
    /// The policies that determined it: the satisfied permits of an allow, the satisfied
    /// forbids of a deny (none when no permit was satisfied).
    pub determining: Vec<String>,
    /// The smallest `@max_ttl` of the determining permits, in seconds.
    pub max_ttl: Option<u64>,
    /// Policies that failed to evaluate (and so did not apply), with Cedar's error.
    pub errors: Vec<String>,
}

impl Decision {
    /// One line for the log and the audit trail: ids only, never policy text.
    pub fn summary(&self) -> String {
        let mut out = if self.in_scope.is_empty() {
            "no policy in scope".to_owned()
        } else if self.allowed && self.determining.is_empty() {
            // Only `hold` allows without a satisfied permit.
            "no forbid policy was satisfied".to_owned()
        } else if self.allowed {
            format!("permitted by {}", self.determining.join(", "))
        } else if self.determining.is_empty() {
            format!(
                "no permit policy was satisfied (in scope: {})",
                abbreviated(&self.in_scope)
            )
        } else {
            format!("forbidden by {}", self.determining.join(", "))
        };
        if !self.errors.is_empty() {
            out.push_str(&format!("; not evaluated: {}", self.errors.join("; ")));
        }
        out
    }
}

/// At most ten ids, then how many more.
fn abbreviated(ids: &[String]) -> String {
    const SHOWN: usize = 10;
    if ids.len() <= SHOWN {
        ids.join(", ")
    } else {
        format!(
            "{}, and {} more",
            ids[..SHOWN].join(", "),
            ids.len() - SHOWN
        )
    }
}

/// Decides `facts` and refuses a denial with a 403 that names the deciding policies. Returns
/// the TTL cap of an allow. `logged` receives the decision's summary (empty when no policy is in
/// scope) for the audit event of the request, allowed or not.
pub async fn enforce(
    core: &MountCore,
    facts: &Facts<'_>,
    logged: &mut String,
) -> Result<Option<u64>, Error> {
    let decision = decide(core, facts).await?;
    if decision.in_scope.is_empty() {
        return Ok(None);
    }
    *logged = decision.summary();
    if decision.allowed {
        Ok(decision.max_ttl)
    } else {
        Err(Error::PermissionDenied(format!(
            "denied by policy: {logged}"
        )))
    }
}

/// The decision for `facts` (`policies/simulate` shows it as it is).
pub async fn decide(core: &MountCore, facts: &Facts<'_>) -> Result<Decision, Error> {
    let policies = core.policies().await?;
    let scoped = scope(&policies, facts);
    if scoped.in_scope.is_empty() {
        return Ok(Decision {
            allowed: true,
            ..Decision::default()
        });
    }
    let identity = match facts.requester.entity_id.as_str() {
        "" => None,
        id => Some(core.identity(id).await?),
    };
    Ok(evaluate(&policies, facts, identity.as_deref(), scoped))
}

/// The Cedar action and resource of `facts`, and the policies in scope of them.
pub struct Scoped {
    action: EntityUid,
    resource: EntityUid,
    pub in_scope: Vec<String>,
}

pub fn scope(policies: &PolicySet, facts: &Facts<'_>) -> Scoped {
    let action = uid("Action", facts.action.name());
    let (resource, parents) = resource_uid(facts);
    let in_scope = policies.in_scope(&action, &resource, &parents);
    Scoped {
        action,
        resource,
        in_scope,
    }
}

/// Decides `facts` in `scoped` (not empty) with `identity`, the requester's entity if it has
/// one.
pub fn evaluate(
    policies: &PolicySet,
    facts: &Facts<'_>,
    identity: Option<&Identity>,
    scoped: Scoped,
) -> Decision {
    let shared = Shared::of(facts, identity);
    evaluate_shared(policies, facts, &shared, scoped)
}

/// What the decisions of one principal on one role under one task at one time share: the
/// Cedar entities, built once for them all (the hold sweep decides many credentials so).
pub struct Shared {
    built: Result<(EntityUid, Entities), String>,
}

impl Shared {
    /// The entities of `facts` (which may be any of those that share them) with `identity`.
    pub fn of(facts: &Facts<'_>, identity: Option<&Identity>) -> Shared {
        Shared {
            built: build_entities(facts, identity),
        }
    }
}

/// [`evaluate`] with the entities built already.
pub fn evaluate_shared(
    policies: &PolicySet,
    facts: &Facts<'_>,
    shared: &Shared,
    scoped: Scoped,
) -> Decision {
    let Scoped {
        action,
        resource,
        in_scope,
    } = scoped;
    let built = shared
        .built
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|(principal, entities)| {
            let request = build_request(facts, principal.clone(), action.clone(), resource)?;
            Ok((request, entities))
        });
    let (request, entities) = match built {
        Ok(b) => b,
        // mayfly builds both from its own schema: failing here is a bug, and denies (but
        // ends no credential: see below).
        Err(e) => {
            tracing::error!(error = %e, "could not build the policy request");
            return Decision {
                allowed: facts.action == PolicyAction::Hold,
                in_scope,
                errors: vec![format!("mayfly could not build the request: {e}")],
                ..Decision::default()
            };
        }
    };
    let cedar = policies.cedar_for(&action);
    let response = Authorizer::new().is_authorized(&request, cedar, entities);
    let cedar_allowed = response.decision() == cedar_policy::Decision::Allow;
    let mut determining: Vec<String> = response
        .diagnostics()
        .reason()
        .map(ToString::to_string)
        .collect();
    determining.sort();
    let errors: Vec<String> = response
        .diagnostics()
        .errors()
        .map(|e| e.to_string())
        .collect();
    let allowed = if facts.action == PolicyAction::Hold {
        // A credential ends on a satisfied forbid, or when the hold permits in scope are
        // all unsatisfied. Default-deny alone ends nothing: a narrow forbid must not sweep
        // every role it does not name, and a permit that failed to evaluate may have been
        // the one that held.
        let forbidden = !cedar_allowed && !determining.is_empty();
        let unpermitted = !cedar_allowed
            && determining.is_empty()
            && errors.is_empty()
            && policies.any_permit(in_scope.iter().map(String::as_str));
        !(forbidden || unpermitted)
    } else {
        cedar_allowed
    };
    let max_ttl = if cedar_allowed && facts.action != PolicyAction::Hold {
        policies.max_ttl(determining.iter().map(String::as_str))
    } else {
        None
    };
    Decision {
        allowed,
        in_scope,
        determining,
        max_ttl,
        errors,
    }
}

fn uid(kind: &str, id: &str) -> EntityUid {
    let type_name =
        EntityTypeName::from_str(&format!("Mayfly::{kind}")).expect("a valid type name");
    EntityUid::from_type_name_and_id(type_name, EntityId::new(id))
}

/// The resource's uid and its parents (a role is in its connection).
fn resource_uid(facts: &Facts<'_>) -> (EntityUid, Vec<EntityUid>) {
    match &facts.resource {
        Resource::Role(r) => (uid("Role", r.name), vec![uid("Connection", r.connection)]),
        Resource::Task => (
            uid("Task", facts.task.map_or("", |t| t.id.as_str())),
            Vec::new(),
        ),
    }
}

fn string(s: &str) -> Expr {
    Expr::new_string(s.to_owned())
}

fn long(n: u64) -> Expr {
    Expr::new_long(i64::try_from(n).unwrap_or(i64::MAX))
}

fn tags(map: &BTreeMap<String, String>) -> impl Iterator<Item = (String, Expr)> + '_ {
    map.iter().map(|(k, v)| (k.clone(), string(v)))
}

fn attrs<const N: usize>(pairs: [(&str, Expr); N]) -> impl Iterator<Item = (String, Expr)> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v))
}

/// Checking against the schema costs a tenth of a decision; what is built here follows the
/// schema by construction, so debug builds (every test) check it and release builds trust it.
fn checked_against() -> Option<&'static cedar_policy::Schema> {
    cfg!(debug_assertions).then(policy_set::schema)
}

/// The principal's uid and the entities of `facts`: the principal and its groups, the role
/// and its connection, the task, the headers.
fn build_entities(
    facts: &Facts<'_>,
    identity: Option<&Identity>,
) -> Result<(EntityUid, Entities), String> {
    let who = facts.requester;
    let mut entities: Vec<Entity> = Vec::new();
    let principal = match identity {
        Some(identity) => {
            let principal = uid("Identity", &identity.id);
            let aliases = identity.aliases.iter().map(|a| {
                Expr::new_record(attrs([
                    ("name", string(&a.name)),
                    ("mount_type", string(&a.mount_type)),
                    ("mount_accessor", string(&a.mount_accessor)),
                ]))
                .expect("distinct keys")
            });
            let mut groups = Vec::new();
            for g in &identity.groups {
                let group = uid("Group", &g.name);
                groups.push(group.clone());
                entities.push(
                    Entity::new_with_tags(
                        group,
                        attrs([("id", string(&g.id)), ("name", string(&g.name))]),
                        [],
                        tags(&g.metadata),
                    )
                    .map_err(|e| e.to_string())?,
                );
            }
            entities.push(
                Entity::new_with_tags(
                    principal.clone(),
                    attrs([
                        ("id", string(&identity.id)),
                        ("name", string(&identity.name)),
                        ("display_name", string(&who.display_name)),
                        ("aliases", Expr::new_set(aliases)),
                    ]),
                    groups,
                    tags(&identity.metadata),
                )
                .map_err(|e| e.to_string())?,
            );
            principal
        }
        None => {
            let principal = uid("Token", &who.token_accessor);
            entities.push(
                Entity::new_with_tags(
                    principal.clone(),
                    attrs([
                        ("id", string(&who.token_accessor)),
                        ("name", string("")),
                        ("display_name", string(&who.display_name)),
                    ]),
                    [],
                    [],
                )
                .map_err(|e| e.to_string())?,
            );
            principal
        }
    };

    if let Resource::Role(r) = &facts.resource {
        let (resource, _) = resource_uid(facts);
        let connection = uid("Connection", r.connection);
        entities.push(
            Entity::new_with_tags(
                connection.clone(),
                attrs([("name", string(r.connection)), ("kind", string(r.kind))]),
                [],
                [],
            )
            .map_err(|e| e.to_string())?,
        );
        entities.push(
            Entity::new_with_tags(
                resource.clone(),
                attrs([
                    ("name", string(r.name)),
                    ("kind", string(r.kind)),
                    ("connection", string(r.connection)),
                ]),
                [connection],
                tags(r.labels),
            )
            .map_err(|e| e.to_string())?,
        );
    }
    if let Some(t) = facts.task {
        entities.push(
            Entity::new_with_tags(
                uid("Task", &t.id),
                attrs([
                    ("id", string(&t.id)),
                    ("description", string(&t.description)),
                    ("owner_entity_id", string(&t.owner.entity_id)),
                    ("owner_name", string(&t.owner.display_name)),
                    ("bound_to_owner", Expr::new_bool(t.bound_to_owner)),
                    ("created_at", long(t.created_at)),
                    ("deadline", long(t.deadline)),
                    ("age_seconds", long(facts.now.saturating_sub(t.created_at))),
                    (
                        "remaining_seconds",
                        long(t.deadline.saturating_sub(facts.now)),
                    ),
                ]),
                [],
                t.metadata
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), string(v.as_str()?)))),
            )
            .map_err(|e| e.to_string())?,
        );
    }
    entities.push(
        Entity::new_with_tags(uid("Headers", ""), [], [], tags(facts.headers))
            .map_err(|e| e.to_string())?,
    );
    let entities =
        Entities::from_entities(entities, checked_against()).map_err(|e| e.to_string())?;
    Ok((principal, entities))
}

/// The Cedar request for `facts` by `principal`: its context, as of `facts.now`.
fn build_request(
    facts: &Facts<'_>,
    principal: EntityUid,
    action: EntityUid,
    resource: EntityUid,
) -> Result<cedar_policy::Request, String> {
    let who = facts.requester;
    let mut context = vec![];
    if let Some(t) = facts.task {
        context.push(("task", Expr::new_entity_uid(uid("Task", &t.id))));
    }
    if let Some(c) = &facts.credential {
        context.push((
            "credential",
            Expr::new_record(attrs([
                ("id", string(c.id)),
                ("created_at", long(c.created_at)),
                ("deadline", long(c.deadline)),
                ("age_seconds", long(facts.now.saturating_sub(c.created_at))),
                (
                    "remaining_seconds",
                    long(c.deadline.saturating_sub(facts.now)),
                ),
            ]))
            .map_err(|e| e.to_string())?,
        ));
    }
    if let Some(a) = facts.approval {
        let approvers = a.approvals.iter().map(|d| string(&d.entity_id));
        context.push((
            "approval",
            Expr::new_record(attrs([
                ("id", string(&a.id)),
                ("reason", string(&a.reason)),
                ("approvers", Expr::new_set(approvers)),
                ("approved_at", long(a.approved_at.unwrap_or(0))),
            ]))
            .map_err(|e| e.to_string())?,
        ));
    }
    let headers = uid("Headers", "");
    let clock = time::OffsetDateTime::from_unix_timestamp(i64::try_from(facts.now).unwrap_or(0))
        .map_err(|e| e.to_string())?;
    let weekday = clock.weekday().to_string().to_lowercase();
    let now = clock
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| e.to_string())?;
    context.extend([
        ("requested_ttl", long(facts.requested_ttl)),
        ("ttl", long(facts.ttl)),
        ("source_address", string(&who.remote_addr)),
        ("now", Expr::new_datetime(&now)),
        ("unix_time", long(facts.now)),
        ("utc_hour", long(clock.hour().into())),
        ("utc_minute", long(clock.minute().into())),
        ("utc_weekday", string(&weekday)),
        ("headers", Expr::new_entity_uid(headers)),
    ]);
    if who.remote_addr.parse::<std::net::IpAddr>().is_ok() {
        context.push(("source_ip", Expr::new_ip(&who.remote_addr)));
    }
    let context = Context::from_pairs(context.into_iter().map(|(k, v)| (k.to_owned(), v)))
        .map_err(|e| e.to_string())?;
    cedar_policy::Request::new(principal, action, resource, context, checked_against())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::contract::host::Group;

    /// The Cedar request and entities for `facts`.
    fn build(
        facts: &Facts<'_>,
        identity: Option<&Identity>,
        action: EntityUid,
        resource: EntityUid,
    ) -> Result<(cedar_policy::Request, Entities), String> {
        let (principal, entities) = build_entities(facts, identity)?;
        let request = build_request(facts, principal, action, resource)?;
        Ok((request, entities))
    }

    /// The cost of one decision over 100 policies in scope, printed (run with --release
    /// --ignored --nocapture); the benchmark in scripts/bench carries the target.
    #[test]
    #[ignore]
    fn decision_cost() {
        let docs: Vec<(String, String)> = (0..100)
            .map(|i| {
                let text = match i {
                    99 => "permit(principal in Mayfly::Group::\"deployers\", action == Mayfly::Action::\"issue\", resource) when { context has source_ip && context.source_ip.isInRange(ip(\"127.0.0.0/8\")) };".to_owned(),
                    i if i % 3 == 0 => format!("forbid(principal, action, resource) when {{ context.headers.hasTag(\"x-deny-{i}\") }};"),
                    i if i % 3 == 1 => format!("permit(principal in Mayfly::Group::\"team-{i}\", action, resource) when {{ context.utc_hour >= 0 && resource.hasTag(\"team\") }};"),
                    i => format!("permit(principal, action == Mayfly::Action::\"issue\", resource) when {{ context has task && context.task.hasTag(\"ticket-{i}\") }};"),
                };
                (format!("p{i}"), text)
            })
            .collect();
        let start = Instant::now();
        let set = PolicySet::compile(docs).unwrap();
        println!("compiling 100 policies: {:?}", start.elapsed());
        let identity = Identity {
            id: "e1".into(),
            name: "bench".into(),
            groups: vec![Group {
                id: "g1".into(),
                name: "deployers".into(),
                metadata: BTreeMap::new(),
            }],
            ..Identity::default()
        };
        let identity = Arc::new(identity);
        let requester = Requester {
            entity_id: "e1".into(),
            token_accessor: "acc".into(),
            display_name: "userpass-bench".into(),
            remote_addr: "127.0.0.1".into(),
        };
        let (headers, labels) = (BTreeMap::new(), BTreeMap::new());
        let facts = Facts {
            approval: None,
            credential: None,
            action: PolicyAction::Issue,
            requester: &requester,
            headers: &headers,
            resource: Resource::Role(RoleFacts {
                name: "app",
                kind: "postgres",
                connection: "pg",
                labels: &labels,
            }),
            task: None,
            requested_ttl: 0,
            ttl: 3600,
            now: crate::contract::host::now(),
        };
        let n = 2000;
        let start = Instant::now();
        for _ in 0..n {
            let scoped = scope(&set, &facts);
            let d = evaluate(&set, &facts, Some(&identity), scoped);
            assert!(d.allowed);
        }
        let per = start.elapsed() / n;
        let start = Instant::now();
        for _ in 0..n {
            let _ = build(
                &facts,
                Some(&identity),
                uid("Action", "issue"),
                uid("Role", "app"),
            )
            .unwrap();
        }
        let build_per = start.elapsed() / n;
        let start = Instant::now();
        for _ in 0..n {
            let _ = uid("Role", "app");
        }
        let uid_per = start.elapsed() / n;
        let start = Instant::now();
        let (request, entities) = build(
            &facts,
            Some(&identity),
            uid("Action", "issue"),
            uid("Role", "app"),
        )
        .unwrap();
        for _ in 0..n {
            let issue = uid("Action", "issue");
            let _ = Authorizer::new().is_authorized(&request, set.cedar_for(&issue), &entities);
        }
        let auth_per = start.elapsed() / n;
        println!(
            "one decision over 100 policies: {per:?} (building the request: {build_per:?}, one uid: {uid_per:?}, authorizing: {auth_per:?})"
        );
    }
}
