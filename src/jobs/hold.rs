//! Continuous authorization: every live credential decided again, at least every
//! `hold_interval` and after every write that may change the answer, against the mount's
//! policies on the action `hold` ("may this credential stay live?"). One that a decision ends
//! is marked for revocation in the ledger, with the deciding policies as its reason, and the
//! scheduler revokes it like any other.
//!
//! Nothing is read or evaluated while no policy names `hold`. A decision ends a credential on
//! a satisfied forbid, or when the hold permits in scope of its role are all unsatisfied
//! ([`crate::mount::decision::evaluate`]); a policy that fails to evaluate ends nothing and is
//! reported.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::contract::error::Error;
use crate::contract::fields::{FieldDef, FieldType, Fields};
use crate::contract::host::{Identity, now};
use crate::contract::request::Requester;
use crate::contract::storage::{self, Kv};
use crate::jobs::revocation;
use crate::model::audit::{self, Action, Event};
use crate::model::ledger::{self, Credential, State};
use crate::model::policy_set::PolicySet;
use crate::model::task::{self, Task};
use crate::mount::MountCore;
use crate::mount::decision::{
    self, CredentialFacts, Decision, Facts, PolicyAction, Resource, RoleFacts,
};
use crate::mount::ledger_mirror::{Holder, Mirror};

/// Where `config/hold` keeps its settings.
const SETTINGS_KEY: &str = "settings/hold";
/// The interval when `config/hold` sets none.
pub const DEFAULT_INTERVAL: u64 = 60;
/// Records read together.
const CHUNK: usize = 512;
/// Credentials decided in one go off the runtime's thread.
const EVAL_BATCH: usize = 4096;
/// Distinct evaluation errors reported of one pass.
const ERRORS_KEPT: usize = 20;
/// Identity lookups made at once.
const PARALLEL_LOOKUPS: usize = 16;

/// The mount-wide settings of the sweep (`config/hold`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Seconds between passes; 0 means [`DEFAULT_INTERVAL`].
    #[serde(default)]
    pub hold_interval: u64,
}

impl Settings {
    pub fn interval(&self) -> u64 {
        match self.hold_interval {
            0 => DEFAULT_INTERVAL,
            n => n,
        }
    }

    pub fn view(&self) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("hold_interval".into(), json!(self.interval()));
        out
    }
}

pub fn settings_fields() -> Vec<FieldDef> {
    vec![FieldDef::new(
        "hold_interval",
        FieldType::Duration,
        "How often every live credential is decided again against the hold policies, at \
         least; 0 restores the default of 60s.",
    )]
}

pub async fn load_settings(kv: &dyn Kv) -> Result<Settings, Error> {
    Ok(storage::get_json(kv, SETTINGS_KEY)
        .await?
        .unwrap_or_default())
}

pub async fn write_settings(kv: &dyn Kv, data: &Map<String, Value>) -> Result<Settings, Error> {
    let fields = Fields::parse(&settings_fields(), data)?;
    let mut settings = load_settings(kv).await?;
    if let Some(v) = fields.duration("hold_interval") {
        settings.hold_interval = v;
    }
    storage::put_json(kv, SETTINGS_KEY, &settings).await?;
    Ok(settings)
}

/// A live credential that a decision ends.
pub struct Ending {
    pub cred: Credential,
    pub decision: Decision,
}

/// What deciding every live credential came to.
#[derive(Default)]
pub struct Judged {
    /// Live credentials of roles that a hold policy covers: those decided.
    pub decided: usize,
    pub ending: Vec<Ending>,
    /// What kept some credentials from being decided, or a policy from being evaluated
    /// (distinct messages, at most [`ERRORS_KEPT`]).
    pub errors: Vec<String>,
}

impl Judged {
    fn report(&mut self, error: String) {
        if self.errors.len() < ERRORS_KEPT && !self.errors.contains(&error) {
            self.errors.push(error);
        }
    }
}

/// The role a credential was issued from, as its decisions see it.
struct RoleView {
    name: String,
    kind: String,
    connection: String,
    labels: BTreeMap<String, String>,
}

/// Decides every live credential against `policies` at `now`, without acting on any.
pub async fn judge(core: &MountCore, policies: &Arc<PolicySet>, now: u64) -> Result<Judged, Error> {
    let mut judged = Judged::default();
    if !policies.has_hold() {
        return Ok(judged);
    }
    let kv = core.storage.as_ref();
    // Held while it is brought up to date and read: a policy write's pass waits for the
    // sweep's, and the other way round.
    let mut mirror = core.hold.mirror.lock().await;
    refresh(core, &mut mirror, &mut judged).await?;

    // Each role looked up once a pass, however many credentials share it; `None`: no hold
    // policy covers it. Tasks are kept in the mirror until written (`None`: gone).
    let mut roles: HashMap<Arc<str>, Option<Arc<RoleView>>> = HashMap::new();
    let mut inputs = Vec::new();
    let Mirror { holders, tasks, .. } = &mut *mirror;
    for (id, holder) in holders.iter() {
        if !holder.active || holder.deadline <= now {
            continue;
        }
        if !roles.contains_key(&holder.role) {
            let view = role_view(core, policies, holder).await?;
            roles.insert(holder.role.clone(), view);
        }
        let Some(role) = roles[&holder.role].clone() else {
            continue;
        };
        let task = match &holder.task_id {
            Some(id) => {
                if !tasks.contains_key(id) {
                    let loaded = task::load(kv, id).await?.map(Arc::new);
                    tasks.insert(id.clone(), loaded);
                }
                tasks[id].clone()
            }
            None => None,
        };
        inputs.push(Input {
            id: id.clone(),
            holder: holder.clone(),
            role,
            task,
            identity: None,
        });
    }
    drop(mirror);
    let inputs = with_identities(core, inputs, &mut judged).await;
    judged.decided = inputs.len();

    // Cedar's evaluation is most of the CPU of a pass: off the runtime's thread, so requests
    // are served meanwhile.
    let mut ending = Vec::new();
    for batch in in_batches(inputs) {
        let decided = decide_off_thread(policies, now, batch).await?;
        for e in decided.errors {
            judged.report(e);
        }
        ending.extend(decided.ending);
    }
    // Ended on what the mirror holds: decided again on the record as it is now (a renewal
    // during the pass moved its deadline), which the audit event also needs.
    for (mut input, _) in ending {
        let cred = match ledger::load(kv, &input.id).await {
            Ok(Some(c)) if c.state == State::Active && c.deadline > now => c,
            Ok(_) => continue,
            Err(e) => {
                judged.report(format!("ledger record {}: {e}", input.id));
                continue;
            }
        };
        input.holder = Holder::of(&cred);
        let decided = decide_off_thread(policies, now, vec![input]).await?;
        if let Some((_, decision)) = decided.ending.into_iter().next() {
            judged.ending.push(Ending { cred, decision });
        }
    }
    Ok(judged)
}

/// Brings `mirror` up to date: reads the records written since the last pass and those it
/// has not read yet (all of them the first time), and forgets those no longer in the ledger.
async fn refresh(core: &MountCore, mirror: &mut Mirror, judged: &mut Judged) -> Result<(), Error> {
    let kv = core.storage.as_ref();
    // Taken before anything is read: what is written from now on is read next pass.
    let changed = core.hold.changed.take();
    match &changed {
        None => mirror.clear(),
        Some(noted) => {
            for id in &noted.tasks {
                mirror.tasks.remove(id.as_str());
            }
        }
    }
    let changed = changed.map(|noted| noted.creds);
    let ids = ledger::ids(kv).await?;
    let unread: Vec<String> = ids
        .iter()
        .filter(|id| {
            !mirror.holders.contains_key(id.as_str())
                || changed.as_ref().is_some_and(|c| c.contains(id.as_str()))
        })
        .cloned()
        .collect();
    for chunk in unread.chunks(CHUNK) {
        for (id, record) in chunk.iter().zip(ledger::load_each(kv, chunk).await) {
            match record {
                Ok(Some(c)) => mirror.keep(&c),
                Ok(None) => {
                    mirror.holders.remove(id);
                }
                // An unreadable record is never acted on, here as anywhere; it is read again
                // next pass.
                Err(e) => {
                    mirror.holders.remove(id);
                    judged.report(format!("ledger record {id}: {e}"));
                }
            }
        }
    }
    mirror.retain(&ids.iter().map(String::as_str).collect());
    Ok(())
}

/// The role a credential was issued from, if a hold policy covers it. A role deleted since is
/// still the credential's resource, by the name and connection its record keeps.
async fn role_view(
    core: &MountCore,
    policies: &PolicySet,
    holder: &Holder,
) -> Result<Option<Arc<RoleView>>, Error> {
    let (connection, labels) = match core.role(&holder.role).await? {
        Some(role) => (role.db_name, role.labels),
        None => (holder.connection.to_string(), BTreeMap::new()),
    };
    let view = RoleView {
        name: holder.role.to_string(),
        kind: core.connection_kind(&connection).await?,
        connection,
        labels,
    };
    let requester = Requester::default();
    let headers = BTreeMap::new();
    let facts = facts_of("", holder, &view, None, &requester, &headers, 0);
    let covered = !decision::scope(policies, &facts).in_scope.is_empty();
    Ok(covered.then(|| Arc::new(view)))
}

/// `inputs` with their requesters' entities, looked up a few at once, afresh each pass (a
/// group removal must show within the interval); those whose lookup failed are left out.
async fn with_identities(core: &MountCore, inputs: Vec<Input>, judged: &mut Judged) -> Vec<Input> {
    let wanted: BTreeSet<&str> = inputs
        .iter()
        .map(|input| input.holder.requester.entity_id.as_str())
        .filter(|id| !id.is_empty())
        .collect();
    let wanted: Vec<&str> = wanted.into_iter().collect();
    let mut identities: HashMap<String, Arc<Identity>> = HashMap::new();
    for chunk in wanted.chunks(PARALLEL_LOOKUPS) {
        let found =
            futures_util::future::join_all(chunk.iter().map(|id| core.identity_fresh(id))).await;
        for (id, result) in chunk.iter().zip(found) {
            match result {
                Ok(identity) => {
                    identities.insert((*id).to_owned(), identity);
                }
                Err(e) => judged.report(format!(
                    "identity entity '{id}' (its credentials wait): {e}"
                )),
            }
        }
    }
    inputs
        .into_iter()
        .filter_map(|mut input| {
            input.identity = match input.holder.requester.entity_id.as_str() {
                "" => None,
                id => Some(identities.get(id)?.clone()),
            };
            Some(input)
        })
        .collect()
}

fn facts_of<'a>(
    id: &'a str,
    holder: &Holder,
    role: &'a RoleView,
    task: Option<&'a Task>,
    requester: &'a Requester,
    headers: &'a BTreeMap<String, String>,
    now: u64,
) -> Facts<'a> {
    Facts {
        action: PolicyAction::Hold,
        requester,
        headers,
        resource: Resource::Role(RoleFacts {
            name: &role.name,
            kind: &role.kind,
            connection: &role.connection,
            labels: &role.labels,
        }),
        task,
        approval: None,
        credential: Some(CredentialFacts {
            id,
            created_at: holder.created_at,
            deadline: holder.deadline,
        }),
        requested_ttl: 0,
        ttl: holder.deadline.saturating_sub(now),
        now,
    }
}

/// One credential to decide, with what its decision is made from.
struct Input {
    id: String,
    holder: Holder,
    role: Arc<RoleView>,
    task: Option<Arc<Task>>,
    /// The requester's entity, where it has one.
    identity: Option<Arc<Identity>>,
}

/// `inputs` in batches of [`EVAL_BATCH`].
fn in_batches(mut inputs: Vec<Input>) -> Vec<Vec<Input>> {
    let mut out = Vec::new();
    while !inputs.is_empty() {
        let rest = inputs.split_off(inputs.len().min(EVAL_BATCH));
        out.push(std::mem::replace(&mut inputs, rest));
    }
    out
}

/// What deciding a batch came to: the credentials it ends, and its evaluation errors.
#[derive(Default)]
struct Decided {
    ending: Vec<(Input, Decision)>,
    errors: BTreeSet<String>,
}

async fn decide_off_thread(
    policies: &Arc<PolicySet>,
    now: u64,
    inputs: Vec<Input>,
) -> Result<Decided, Error> {
    let set = policies.clone();
    tokio::task::spawn_blocking(move || decide_all(&set, now, inputs))
        .await
        .map_err(|e| Error::Internal(format!("the hold decisions stopped: {e}")))
}

fn decide_all(policies: &PolicySet, now: u64, inputs: Vec<Input>) -> Decided {
    let headers = BTreeMap::new();
    // Credentials of one principal, role and task share their Cedar entities: built once,
    // they are most of a decision's cost.
    let mut shared: HashMap<(String, String, String, Arc<str>), decision::Shared> = HashMap::new();
    let mut out = Decided::default();
    for input in inputs {
        let requester = Requester::from(input.holder.requester.as_ref());
        let task = input.task.as_deref();
        let facts = facts_of(
            &input.id,
            &input.holder,
            &input.role,
            task,
            &requester,
            &headers,
            now,
        );
        let scoped = decision::scope(policies, &facts);
        let principal = match requester.entity_id.as_str() {
            "" => format!("token:{}", requester.token_accessor),
            id => format!("entity:{id}"),
        };
        let key = (
            principal,
            requester.display_name.clone(),
            input.role.name.clone(),
            input
                .holder
                .task_id
                .clone()
                .unwrap_or_else(|| Arc::from("")),
        );
        let entities = shared
            .entry(key)
            .or_insert_with(|| decision::Shared::of(&facts, input.identity.as_deref()));
        let decision = decision::evaluate_shared(policies, &facts, entities, scoped);
        for e in &decision.errors {
            if out.errors.len() < ERRORS_KEPT {
                out.errors
                    .insert(format!("role '{}': {e}", input.role.name));
            }
        }
        if !decision.allowed {
            out.ending.push((input, decision));
        }
    }
    out
}

/// One pass: decides every live credential and marks those it ends for revocation. Returns
/// the pass as `config/hold` shows it.
pub async fn sweep(core: &MountCore) -> Map<String, Value> {
    let started = Instant::now();
    let now = now();
    let mut view = Map::new();
    view.insert("at".into(), json!(now));
    let judged = match core.policies().await {
        Ok(policies) if !policies.has_hold() => {
            // Nothing to decide: nor anything to keep a mirror of.
            core.hold.changed.stop();
            core.hold.mirror.lock().await.clear();
            Ok(Judged::default())
        }
        Ok(policies) => judge(core, &policies, now).await,
        Err(e) => Err(e),
    };
    let judged = match judged {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!(error = %e, "the hold sweep could not decide; trying again next pass");
            view.insert("error".into(), json!(e.to_string()));
            return view;
        }
    };
    let items: Vec<(String, String)> = judged
        .ending
        .iter()
        .map(|e| (e.cred.id.clone(), reason(&e.decision)))
        .collect();
    let marked = revocation::mark_all(core, now, &items).await;
    let mut ended = 0;
    for ((ending, (_, why)), marked) in judged.ending.iter().zip(&items).zip(marked) {
        let mut event = Event::for_credential(&ending.cred).detail(why);
        let summary = ending.decision.summary();
        event.policy = &summary;
        if marked {
            ended += 1;
            audit::emit(Action::Hold, "ended", &event);
        } else {
            // Decided again next pass.
            audit::emit(
                Action::Hold,
                "failed",
                &event.detail("could not mark for revocation"),
            );
        }
    }
    for e in &judged.errors {
        tracing::warn!(error = %e, "hold sweep: not decided");
    }
    let took = started.elapsed();
    if judged.decided > 0 {
        tracing::info!(
            decided = judged.decided,
            ended,
            took_ms = took.as_millis() as u64,
            "hold sweep"
        );
    }
    view.insert("decided".into(), json!(judged.decided));
    view.insert("ended".into(), json!(ended));
    view.insert("took_ms".into(), json!(took.as_secs_f64() * 1000.0));
    view.insert("errors".into(), json!(judged.errors));
    view
}

/// The ledger's revocation reason for a credential `decision` ends: names the policies.
pub fn reason(decision: &Decision) -> String {
    format!("ended by hold policy: {}", decision.summary())
}

/// Runs a pass at once, then one every `hold_interval` and one after each wake-up, until the
/// mount stops.
pub async fn run(core: Arc<MountCore>) {
    for pass in 1u64.. {
        let mut last = sweep(&core).await;
        last.insert("pass".into(), json!(pass));
        *core.hold.last.lock().unwrap() = Some(last);
        let interval = match load_settings(core.storage.as_ref()).await {
            Ok(s) => s.interval(),
            Err(e) => {
                tracing::warn!(error = %e, "could not read config/hold; using the default interval");
                DEFAULT_INTERVAL
            }
        };
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(interval)) => {}
            () = core.hold.wake.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::host::Group;
    use crate::model::ledger::RequesterRecord;

    /// The CPU of deciding 10,000 credentials, printed (run with --release --ignored
    /// --nocapture); the hold scenario of scripts/bench measures whole passes.
    #[test]
    #[ignore]
    fn decision_cost() {
        let policies = Arc::new(
            PolicySet::compile(vec![(
                "held".into(),
                "permit(principal in Mayfly::Group::\"oncall\", action == Mayfly::Action::\"hold\", \
                 resource == Mayfly::Role::\"app\");\n\
                 forbid(principal, action == Mayfly::Action::\"hold\", resource) \
                 when { context.credential.remaining_seconds < 60 };"
                    .into(),
            )])
            .unwrap(),
        );
        let now = now();
        let role = Arc::new(RoleView {
            name: "app".into(),
            kind: "postgres".into(),
            connection: "db".into(),
            labels: BTreeMap::new(),
        });
        let identities: Vec<Arc<Identity>> = (0..100)
            .map(|i| {
                Arc::new(Identity {
                    id: format!("e{i}"),
                    groups: vec![Group {
                        id: "g".into(),
                        name: "oncall".into(),
                        metadata: BTreeMap::new(),
                    }],
                    ..Identity::default()
                })
            })
            .collect();
        let n = 10_000;
        let inputs: Vec<Input> = (0..n)
            .map(|i| Input {
                id: format!("c{i}"),
                holder: Holder {
                    role: Arc::from("app"),
                    connection: Arc::from("db"),
                    requester: Arc::new(RequesterRecord {
                        entity_id: format!("e{}", i % 100),
                        ..RequesterRecord::default()
                    }),
                    task_id: None,
                    created_at: now,
                    deadline: now + 3600,
                    active: true,
                },
                role: role.clone(),
                task: None,
                identity: Some(identities[i % 100].clone()),
            })
            .collect();
        let t = Instant::now();
        let decided = decide_all(&policies, now, inputs);
        assert!(decided.ending.is_empty() && decided.errors.is_empty());
        println!(
            "deciding {n} credentials: {:?} per credential",
            t.elapsed() / n as u32
        );
    }
}
