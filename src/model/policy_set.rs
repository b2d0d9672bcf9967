//! The mount's Cedar policies compiled into one checked set: the schema mayfly publishes, the
//! parsing and validation of one policy document (errors located by line and column), which
//! policies are in scope for a request, and the `@max_ttl` cap a permit may carry.
//!
//! The action `hold` is decided only by policies that name it: a policy written for every
//! action (`action` unconstrained) was written for requests, and must not start ending live
//! credentials. Those policies are kept apart in a set of their own.
//!
//! A document (`policies/NAME`) holds one or more Cedar policies. The first is known by the
//! document's name, later ones as `NAME#2`, `NAME#3`, … ('#' cannot occur in a name, so the
//! ids never collide).

use std::str::FromStr;
use std::sync::LazyLock;

use cedar_policy::{
    ActionConstraint, Effect, EntityUid, Policy, PolicyId, ResourceConstraint, Schema,
    ValidationMode, Validator,
};

use crate::contract::error::Error;
use crate::contract::fields::parse_duration;

/// The schema text, as `policies-schema` serves it.
pub const SCHEMA_TEXT: &str = include_str!("policy_schema.cedarschema");
/// The annotation that caps the TTL a permit grants.
pub const MAX_TTL_ANNOTATION: &str = "max_ttl";

static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    Schema::from_cedarschema_str(SCHEMA_TEXT)
        .expect("mayfly's own Cedar schema parses")
        .0
});
static VALIDATOR: LazyLock<Validator> = LazyLock::new(|| Validator::new(SCHEMA.clone()));
static HOLD: LazyLock<EntityUid> =
    LazyLock::new(|| EntityUid::from_str("Mayfly::Action::\"hold\"").expect("a valid action uid"));

pub fn schema() -> &'static Schema {
    &SCHEMA
}

/// What mayfly reads from one policy besides its Cedar meaning.
#[derive(Debug, Clone)]
struct Meta {
    effect: Effect,
    action: ActionConstraint,
    resource: ResourceConstraint,
    max_ttl: Option<u64>,
}

/// Every policy of the mount, checked against the schema.
#[derive(Debug, Default)]
pub struct PolicySet {
    set: cedar_policy::PolicySet,
    /// The policies that name the action `hold`, the only ones that decide it.
    hold: cedar_policy::PolicySet,
    /// By id, sorted (so a request's policies in scope come out sorted).
    meta: Vec<(String, Meta)>,
}

/// A checked document: its policies with their final ids, and the validator's warnings.
pub struct Document {
    pub policies: Vec<Policy>,
    pub warnings: Vec<String>,
}

/// Parses and validates document `name`. A refusal is a 400 that gives the validator's or
/// parser's message with its line and column.
pub fn check_document(name: &str, text: &str) -> Result<Document, Error> {
    let refused =
        |what: String| Error::bad_request(format!("field 'policy': policy '{name}' {what}"));
    let parsed = cedar_policy::PolicySet::from_str(text)
        .map_err(|e| refused(format!("does not parse: {}", located(text, &e))))?;
    if parsed.templates().next().is_some() {
        return Err(refused(
            "is a template (it has ?principal or ?resource slots); mayfly takes only \
             policies"
                .into(),
        ));
    }
    // The parser numbers policies in source order (policy0, policy1, …): sort on that, so
    // that the ids follow the text.
    let mut policies: Vec<&Policy> = parsed.policies().collect();
    policies.sort_by_key(|p| {
        p.id()
            .to_string()
            .strip_prefix("policy")
            .and_then(|n| n.parse::<usize>().ok())
    });
    if policies.is_empty() {
        return Err(refused("holds no policy".into()));
    }
    let mut set = cedar_policy::PolicySet::new();
    let mut out = Vec::new();
    for (i, p) in policies.into_iter().enumerate() {
        let id = if i == 0 {
            name.to_owned()
        } else {
            format!("{name}#{}", i + 1)
        };
        let policy = p.new_id(PolicyId::new(&id));
        max_ttl(&policy)
            .map_err(|e| Error::bad_request(format!("field 'policy': policy '{id}' {e}")))?;
        set.add(policy.clone())
            .map_err(|e| refused(format!("cannot be added: {e}")))?;
        out.push(policy);
    }
    let result = VALIDATOR.validate(&set, ValidationMode::Strict);
    // The validator checks each action on its own and repeats an error for each; one per
    // place is enough.
    let mut errors: Vec<String> = Vec::new();
    for e in result.validation_errors() {
        let message = located(text, e);
        if !errors.iter().any(|m| same_place(m, &message)) {
            errors.push(message);
        }
    }
    if !errors.is_empty() {
        return Err(refused(format!(
            "does not validate against the schema (read policies-schema): {}",
            errors.join("; ")
        )));
    }
    let warnings = result
        .validation_warnings()
        .map(|w| format!("policy '{name}': {}", located(text, w)))
        .collect();
    Ok(Document {
        policies: out,
        warnings,
    })
}

/// Two located messages about the same place (`line L, column C:`) of a document.
fn same_place(a: &str, b: &str) -> bool {
    let place = |m: &str| m.split_once(": ").map(|(p, _)| p.to_owned());
    place(a).is_some() && place(a) == place(b)
}

/// Whether a policy's action constraint names `hold` (not merely leaves the action open).
fn names_hold(action: &ActionConstraint) -> bool {
    match action {
        ActionConstraint::Any => false,
        ActionConstraint::Eq(a) => a == &*HOLD,
        ActionConstraint::In(list) => list.contains(&HOLD),
    }
}

/// `@max_ttl("…")` of a permit, in seconds. On a forbid it would mean nothing, so it is refused.
fn max_ttl(policy: &Policy) -> Result<Option<u64>, String> {
    let Some(text) = policy.annotation(MAX_TTL_ANNOTATION) else {
        return Ok(None);
    };
    if policy.effect() == Effect::Forbid {
        return Err(format!(
            "puts @{MAX_TTL_ANNOTATION} on a forbid policy; it caps what a permit grants"
        ));
    }
    match parse_duration(text) {
        Some(secs) if secs > 0 => Ok(Some(secs)),
        _ => Err(format!(
            "has @{MAX_TTL_ANNOTATION}(\"{text}\"); expected a duration such as \"15m\" or \
             \"3600\""
        )),
    }
}

/// "line L, column C: message (help)" for a Cedar error with a source span into `text`.
fn located(text: &str, e: &(dyn miette::Diagnostic + Send + Sync + 'static)) -> String {
    let offset = e
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|l| (l.offset(), l.label().map(str::to_owned)));
    let mut message = strip_policy_prefix(&e.to_string());
    if let Some((_, Some(label))) = &offset {
        message = format!("{message}: {label}");
    }
    if let Some(help) = e.help() {
        message = format!("{message} ({help})");
    }
    match offset {
        Some((at, _)) => {
            let (line, column) = line_column(text, at);
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// Cedar's messages start "for policy `id`, "; the id is already in mayfly's message.
fn strip_policy_prefix(message: &str) -> String {
    match message.strip_prefix("for policy `") {
        Some(rest) => rest
            .split_once("`, ")
            .map_or(message, |(_, m)| m)
            .to_owned(),
        None => message.to_owned(),
    }
}

/// 1-based line and column (in characters) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit_once('\n')
        .map_or(before, |(_, l)| l)
        .chars()
        .count()
        + 1;
    (line, column)
}

impl PolicySet {
    /// The set of `documents` (name, text). A stored document that no longer checks is an
    /// error, never skipped: a policy silently dropped could turn a deny into an allow.
    pub fn compile(documents: Vec<(String, String)>) -> Result<PolicySet, Error> {
        let mut out = PolicySet::default();
        for (name, text) in documents {
            let doc = check_document(&name, &text).map_err(|e| {
                Error::Internal(format!("stored policy '{name}' no longer checks: {e}"))
            })?;
            for policy in doc.policies {
                let action = policy.action_constraint();
                if names_hold(&action) {
                    out.hold
                        .add(policy.clone())
                        .map_err(|e| Error::Internal(format!("policy '{name}': {e}")))?;
                }
                out.meta.push((
                    policy.id().to_string(),
                    Meta {
                        effect: policy.effect(),
                        action,
                        resource: policy.resource_constraint(),
                        max_ttl: max_ttl(&policy).ok().flatten(),
                    },
                ));
                out.set
                    .add(policy)
                    .map_err(|e| Error::Internal(format!("policy '{name}': {e}")))?;
            }
        }
        out.meta.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The Cedar set that decides `action`.
    pub fn cedar_for(&self, action: &EntityUid) -> &cedar_policy::PolicySet {
        if action == &*HOLD {
            &self.hold
        } else {
            &self.set
        }
    }

    /// Whether any policy decides `hold`: without one, no live credential is looked at.
    pub fn has_hold(&self) -> bool {
        self.hold.policies().next().is_some()
    }

    /// Whether any of `ids` is a permit.
    pub fn any_permit<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> bool {
        ids.into_iter().any(|id| {
            self.meta
                .binary_search_by(|(i, _)| i.as_str().cmp(id))
                .is_ok_and(|at| self.meta[at].1.effect == Effect::Permit)
        })
    }

    /// The ids of the policies whose scope covers `action` on `resource` (whose parents are
    /// `parents`), sorted. Principals and conditions are left to Cedar: a policy in scope
    /// decides whether it applies to whom. `hold` is covered only where a policy names it.
    pub fn in_scope(
        &self,
        action: &EntityUid,
        resource: &EntityUid,
        parents: &[EntityUid],
    ) -> Vec<String> {
        let within = |uid: &EntityUid| uid == resource || parents.contains(uid);
        self.meta
            .iter()
            .filter(|(_, m)| match &m.action {
                ActionConstraint::Any => action != &*HOLD,
                ActionConstraint::Eq(a) => a == action,
                ActionConstraint::In(list) => list.contains(action),
            })
            .filter(|(_, m)| match &m.resource {
                ResourceConstraint::Any => true,
                ResourceConstraint::Eq(r) => r == resource,
                ResourceConstraint::In(r) => within(r),
                ResourceConstraint::Is(t) => t == resource.type_name(),
                ResourceConstraint::IsIn(t, r) => t == resource.type_name() && within(r),
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The smallest `@max_ttl` among `ids`.
    pub fn max_ttl<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Option<u64> {
        ids.into_iter()
            .filter_map(|id| {
                let at = self
                    .meta
                    .binary_search_by(|(i, _)| i.as_str().cmp(id))
                    .ok()?;
                self.meta[at].1.max_ttl
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_parses() {
        let _ = schema();
    }

    #[test]
    fn documents_get_ids_and_located_errors() {
        let text = "permit(principal, action, resource);\n\
                    @max_ttl(\"10m\")\npermit(principal in Mayfly::Group::\"ops\", action, resource);";
        let doc = check_document("base", text).unwrap();
        let ids: Vec<String> = doc.policies.iter().map(|p| p.id().to_string()).collect();
        assert_eq!(ids, ["base", "base#2"]);
        let set = PolicySet::compile(vec![("base".into(), text.into())]).unwrap();
        assert_eq!(set.max_ttl(["base", "base#2"]), Some(600));

        let cases = [
            (
                "permit(principal, action, resource) when {\n  context.utc_hour >= 9 &&\n};",
                "does not parse: line 3, column 1: unexpected token `}`",
            ),
            (
                "permit(principal, action, resource)\n  when { context.nope == 1 };",
                "line 2, column 10: attribute `nope` in context",
            ),
            (
                "permit(principal, action, resource) when { principal.name == 1 };",
                "does not validate",
            ),
            (
                "permit(principal == ?principal, action, resource);",
                "is a template",
            ),
            ("// nothing\n", "holds no policy"),
            (
                "@max_ttl(\"soon\") permit(principal, action, resource);",
                "expected a duration",
            ),
            (
                "@max_ttl(\"1h\") forbid(principal, action, resource);",
                "on a forbid policy",
            ),
        ];
        for (text, expected) in cases {
            let err = check_document("p", text).err().expect(text);
            assert_eq!(err.status(), 400);
            let msg = err.to_string();
            assert!(msg.starts_with("field 'policy': policy 'p"), "{msg}");
            assert!(msg.contains(expected), "{text}\n{msg}");
        }
        // hold's context is a request's with the credential: what validates for every
        // action validates for hold, and hold policies read the credential directly.
        for text in [
            "forbid(principal, action, resource) when { context.headers.hasTag(\"x\") || \
             (context has approval && context.approval.reason == \"\") };",
            "forbid(principal, action == Mayfly::Action::\"hold\", resource) \
             when { context.credential.age_seconds > 3600 };",
        ] {
            check_document("p", text).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
        let err = check_document(
            "p",
            "forbid(principal, action in [Mayfly::Action::\"issue\", Mayfly::Action::\"hold\"], \
             resource) when { context.credential.age_seconds > 3600 };",
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("credential"), "{err}");
        // The validator repeats an error for each action; mayfly says it once.
        let err = check_document(
            "p",
            "permit(principal, action, resource) when { context.nope };",
        )
        .err()
        .unwrap()
        .to_string();
        assert_eq!(err.matches("column").count(), 1, "{err}");
    }

    #[test]
    fn scope_follows_action_and_resource_constraints() {
        let docs = [
            ("any", "permit(principal, action, resource);"),
            (
                "issue-only",
                "permit(principal, action == Mayfly::Action::\"issue\", resource);",
            ),
            (
                "billing",
                "forbid(principal, action, resource == Mayfly::Role::\"billing\");",
            ),
            (
                "on-prod",
                "permit(principal, action in [Mayfly::Action::\"issue\", Mayfly::Action::\"renew\"], \
                 resource in Mayfly::Connection::\"prod\");",
            ),
            (
                "tasks",
                "permit(principal, action, resource is Mayfly::Task);",
            ),
        ];
        let set = PolicySet::compile(
            docs.iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect(),
        )
        .unwrap();
        let uid = |s: &str| EntityUid::from_str(s).unwrap();
        let issue = uid("Mayfly::Action::\"issue\"");
        let create = uid("Mayfly::Action::\"create_task\"");
        let billing = uid("Mayfly::Role::\"billing\"");
        let prod = [uid("Mayfly::Connection::\"prod\"")];
        assert_eq!(
            set.in_scope(&issue, &billing, &prod),
            ["any", "billing", "issue-only", "on-prod"]
        );
        assert_eq!(
            set.in_scope(&issue, &uid("Mayfly::Role::\"other\""), &[]),
            ["any", "issue-only"]
        );
        assert_eq!(
            set.in_scope(&create, &uid("Mayfly::Task::\"t1\""), &[]),
            ["any", "tasks"]
        );
        // hold is decided only by policies that name it.
        assert!(!set.has_hold());
        let hold = uid("Mayfly::Action::\"hold\"");
        assert!(set.in_scope(&hold, &billing, &prod).is_empty());
        let with_hold = PolicySet::compile(vec![
            ("any".into(), "forbid(principal, action, resource);".into()),
            (
                "held".into(),
                "permit(principal, action in [Mayfly::Action::\"issue\", \
                 Mayfly::Action::\"hold\"], resource);"
                    .into(),
            ),
        ])
        .unwrap();
        assert!(with_hold.has_hold());
        assert_eq!(with_hold.in_scope(&hold, &billing, &prod), ["held"]);
        assert_eq!(with_hold.in_scope(&issue, &billing, &prod), ["any", "held"]);
        assert!(with_hold.any_permit(["held"]) && !with_hold.any_permit(["any"]));
    }
}
