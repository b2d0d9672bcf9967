//! One AWS connection at work: sessions issued with the duration aligned before the call,
//! revoked by a deny statement on the role (or user) they belong to, and that statement
//! removed once the session has expired.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_sts::types::{PolicyDescriptorType, Tag};
use mayfly::ConnectionConfig;
use mayfly::now;
use mayfly::{Created, Error, Inventory, Known, NewPrincipal, Origin, Principal, Revoked, Target};
use secrecy::SecretString;
use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;

use crate::clients::{self, Clients, call_error, error_code};
use crate::deny_policy::{self, CLOCK_SKEW_SECS, DenyPolicy, POLICY_NAME, Sessions, Span, size_of};
use crate::duration::{AWS_MIN_SECS, Limits, align};
use crate::settings::{CredentialType, RoleSettings};

/// How long a role's MaxSessionDuration is reused before IAM is asked again.
const ROLE_MAX_REUSE: Duration = Duration::from_secs(60);
/// AWS's MaxSessionDuration of a role that does not set one, assumed when it cannot be read.
const AWS_DEFAULT_ROLE_MAX: u64 = 3600;
/// Kept on a deny statement past the session's expiry, for clock skew between mayfly and AWS.
const GUARD_MARGIN_SECS: u64 = CLOCK_SKEW_SECS;
/// IAM's bound on the inline policies of one role, all together (white space aside).
const ROLE_INLINE_LIMIT: usize = 10_240;
/// IAM's bound on the inline policies of one user, all together.
const USER_INLINE_LIMIT: usize = 2_048;
/// How far a session's issue time may lie from the one worked out from its expiry and
/// duration (AWS rounds both to seconds).
const ISSUED_MARGIN_SECS: u64 = 5;
/// How long after its intent a session may be issued: issuance gives the create 30 s.
const ISSUING_SECS: u64 = 60;

/// Who mayfly's own credentials are.
struct Caller {
    arn: String,
}

impl Caller {
    fn is_role_session(&self) -> bool {
        self.arn.contains(":assumed-role/")
    }

    /// The IAM user's name, when the credentials are an IAM user's.
    fn user_name(&self) -> Option<&str> {
        let (_, path) = self.arn.split_once(":user/")?;
        path.rsplit('/').next()
    }
}

/// Where the deny statements of a role's revoked sessions go.
enum Holder {
    Role(String),
    User(String),
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Role(n) => write!(f, "role '{n}'"),
            Holder::User(n) => write!(f, "user '{n}'"),
        }
    }
}

enum GuardError {
    /// mayfly may not write the guard: revocation degrades to expiry.
    Denied(String),
    /// IAM refused the policy as too large (`LimitExceeded`).
    TooLarge(Error),
    Other(Error),
}

/// A role's MaxSessionDuration as last read, and the warning when it could not be.
#[derive(Clone)]
struct RoleMax {
    read_at: Instant,
    max: u64,
    warning: Option<String>,
}

pub struct AwsTarget {
    clients: Clients,
    min_session: u64,
    caller: OnceCell<Caller>,
    role_max: Mutex<HashMap<String, RoleMax>>,
    /// Deny statements are read, edited and written back: one edit at a time.
    guard_edit: tokio::sync::Mutex<()>,
    /// The mount's ledger, asked when the deny statements must be folded into windows.
    inventory: OnceLock<Arc<dyn Inventory>>,
}

impl AwsTarget {
    pub async fn new(config: &ConnectionConfig) -> AwsTarget {
        AwsTarget {
            clients: clients::build(config).await,
            min_session: config
                .setting_i64("min_session_duration")
                .map_or(AWS_MIN_SECS, |v| v.max(1) as u64),
            caller: OnceCell::new(),
            role_max: Mutex::new(HashMap::new()),
            guard_edit: tokio::sync::Mutex::new(()),
            inventory: OnceLock::new(),
        }
    }

    fn sts_error<E, R>(&self, op: &str, e: aws_sdk_sts::error::SdkError<E, R>) -> Error
    where
        E: aws_sdk_sts::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug,
    {
        call_error("STS", &self.clients.sts_endpoint, op, e)
    }

    fn iam_error<E, R>(&self, op: &str, e: aws_sdk_sts::error::SdkError<E, R>) -> Error
    where
        E: aws_sdk_sts::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug,
    {
        call_error("IAM", &self.clients.iam_endpoint, op, e)
    }

    /// Checks that AWS takes the connection's credentials.
    pub async fn verify(&self) -> Result<(), Error> {
        self.caller().await.map(|_| ())
    }

    /// mayfly's own identity, asked once per connection.
    async fn caller(&self) -> Result<&Caller, Error> {
        self.caller
            .get_or_try_init(|| async {
                let out = self
                    .clients
                    .sts
                    .get_caller_identity()
                    .send()
                    .await
                    .map_err(|e| self.sts_error("GetCallerIdentity", e))?;
                Ok(Caller {
                    arn: out.arn().unwrap_or_default().to_owned(),
                })
            })
            .await
    }

    /// The role's MaxSessionDuration, and a warning when it could not be read.
    async fn role_max(&self, role: &str) -> Result<(u64, Option<String>), Error> {
        if let Some(known) = self.role_max.lock().unwrap().get(role)
            && known.read_at.elapsed() < ROLE_MAX_REUSE
        {
            return Ok((known.max, known.warning.clone()));
        }
        let read = self.clients.iam.get_role().role_name(role).send().await;
        let (max, warning) = match read {
            Ok(out) => (
                out.role()
                    .and_then(|r| r.max_session_duration())
                    .map_or(AWS_DEFAULT_ROLE_MAX, |m| m.max(0) as u64),
                None,
            ),
            Err(e) if error_code(&e).is_some() => (
                AWS_DEFAULT_ROLE_MAX,
                Some(format!(
                    "could not read the MaxSessionDuration of role '{role}' ({}); assumed \
                     AWS's default of {AWS_DEFAULT_ROLE_MAX}s",
                    error_code(&e).unwrap_or("error")
                )),
            ),
            Err(e) => return Err(self.iam_error("GetRole", e)),
        };
        let known = RoleMax {
            read_at: Instant::now(),
            max,
            warning: warning.clone(),
        };
        self.role_max.lock().unwrap().insert(role.to_owned(), known);
        Ok((max, warning))
    }

    /// Where revoked sessions of `role` are denied; `None` when they cannot be.
    async fn holder(&self, role: &RoleSettings) -> Result<Result<Holder, String>, Error> {
        Ok(match role.credential_type {
            CredentialType::AssumedRole => Ok(Holder::Role(
                role.role_name().unwrap_or_default().to_owned(),
            )),
            CredentialType::FederationToken => match self.caller().await?.user_name() {
                Some(user) => Ok(Holder::User(user.to_owned())),
                None => Err(
                    "mayfly's credentials are not an IAM user's, so there is no user to hold \
                     a deny statement"
                        .to_owned(),
                ),
            },
            CredentialType::SessionToken => Err(
                "session_token credentials carry the IAM user's own identity and cannot be \
                 told apart from its other sessions"
                    .to_owned(),
            ),
        })
    }

    /// mayfly's inline policy's document, `None` when there is none.
    async fn read_guards(&self, holder: &Holder) -> Result<Option<String>, GuardError> {
        self.read_inline(holder, POLICY_NAME).await
    }

    /// Inline policy `name`'s document on the holder, `None` when there is none.
    async fn read_inline(&self, holder: &Holder, name: &str) -> Result<Option<String>, GuardError> {
        let iam = &self.clients.iam;
        let result = match holder {
            Holder::Role(n) => iam
                .get_role_policy()
                .role_name(n)
                .policy_name(name)
                .send()
                .await
                .map(|o| o.policy_document().to_owned())
                .map_err(|e| self.guard_error("GetRolePolicy", e)),
            Holder::User(n) => iam
                .get_user_policy()
                .user_name(n)
                .policy_name(name)
                .send()
                .await
                .map(|o| o.policy_document().to_owned())
                .map_err(|e| self.guard_error("GetUserPolicy", e)),
        };
        match result {
            Ok(doc) => Ok(Some(doc)),
            Err(None) => Ok(None),
            Err(Some(e)) => Err(e),
        }
    }

    /// `None` for NoSuchEntity (there is no policy), else the error.
    fn guard_error<E, R>(
        &self,
        op: &str,
        e: aws_sdk_sts::error::SdkError<E, R>,
    ) -> Option<GuardError>
    where
        E: aws_sdk_sts::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug,
    {
        match error_code(&e) {
            Some("NoSuchEntity") => None,
            Some(code) if code.starts_with("AccessDenied") || code == "UnauthorizedOperation" => {
                Some(GuardError::Denied(self.iam_error(op, e).to_string()))
            }
            Some("LimitExceeded") => Some(GuardError::TooLarge(self.iam_error(op, e))),
            _ => Some(GuardError::Other(self.iam_error(op, e))),
        }
    }

    async fn write_guards(&self, holder: &Holder, doc: Option<String>) -> Result<(), GuardError> {
        let iam = &self.clients.iam;
        let failed = match (holder, doc) {
            (Holder::Role(n), Some(d)) => iam
                .put_role_policy()
                .role_name(n)
                .policy_name(POLICY_NAME)
                .policy_document(d)
                .send()
                .await
                .err()
                .map(|e| self.guard_error("PutRolePolicy", e)),
            (Holder::User(n), Some(d)) => iam
                .put_user_policy()
                .user_name(n)
                .policy_name(POLICY_NAME)
                .policy_document(d)
                .send()
                .await
                .err()
                .map(|e| self.guard_error("PutUserPolicy", e)),
            (Holder::Role(n), None) => iam
                .delete_role_policy()
                .role_name(n)
                .policy_name(POLICY_NAME)
                .send()
                .await
                .err()
                .map(|e| self.guard_error("DeleteRolePolicy", e)),
            (Holder::User(n), None) => iam
                .delete_user_policy()
                .user_name(n)
                .policy_name(POLICY_NAME)
                .send()
                .await
                .err()
                .map(|e| self.guard_error("DeleteUserPolicy", e)),
        };
        match failed.flatten() {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Reads the holder's deny policy, applies `edit` (after dropping expired groups) and
    /// writes it back, or deletes it when nothing is left.
    async fn edit_guards(
        &self,
        holder: &Holder,
        edit: impl FnOnce(&mut DenyPolicy),
    ) -> Result<(), GuardError> {
        let _one_at_a_time = self.guard_edit.lock().await;
        let (current, mut doc) = self.read_policy(holder).await?;
        doc.drop_expired(now());
        edit(&mut doc);
        let next = doc.render();
        if next.is_none() && current.is_none() {
            return Ok(());
        }
        self.write_guards(holder, next).await
    }

    /// The holder's deny policy as stored (`None` when there is none), and parsed.
    async fn read_policy(
        &self,
        holder: &Holder,
    ) -> Result<(Option<String>, DenyPolicy), GuardError> {
        let current = self.read_guards(holder).await?;
        let doc = match &current {
            Some(text) => DenyPolicy::parse(text).map_err(|e| {
                GuardError::Other(Error::Target(format!(
                    "inline policy '{POLICY_NAME}' on {holder}: {e}"
                )))
            })?,
            None => DenyPolicy::default(),
        };
        Ok((current, doc))
    }

    /// Denies each of `sessions` (name, until when), folding the policy into windows when it
    /// outgrows IAM's bound (deny_policy). Returns the live credentials a window had to cover
    /// too, with why.
    async fn deny_sessions(
        &self,
        holder: &Holder,
        sessions: &[(String, u64)],
    ) -> Result<Vec<(String, String)>, GuardError> {
        let _one_at_a_time = self.guard_edit.lock().await;
        let (_, mut doc) = self.read_policy(holder).await?;
        let now = now();
        doc.drop_expired(now);
        for (name, until) in sessions {
            doc.deny(name, *until);
        }
        let limit = match holder {
            Holder::Role(_) => ROLE_INLINE_LIMIT,
            Holder::User(_) => USER_INLINE_LIMIT,
        };
        let mut budget = limit.saturating_sub(self.other_policies_size(holder).await?);
        let mut collateral = Vec::new();
        let mut ledger: Option<Sessions> = None;
        for attempt in 0.. {
            if doc.size() > budget {
                let full = |why: String| {
                    GuardError::Denied(format!(
                        "inline policy '{POLICY_NAME}' on {holder} has no room left within \
                         IAM's limit of {limit} characters: {why}"
                    ))
                };
                let inventory = self
                    .inventory
                    .get()
                    .ok_or_else(|| full("this handle cannot read the mount's ledger".into()))?;
                let mark = inventory.mark();
                if mark == mayfly::LEGACY_MARK {
                    return Err(full(
                        "the mount has no mark of its own, so its sessions cannot be told from \
                         other mounts' in one statement"
                            .into(),
                    ));
                }
                if ledger.is_none() {
                    let known = inventory.credentials().await.map_err(GuardError::Other)?;
                    let batch: HashSet<&str> = sessions.iter().map(|(n, _)| n.as_str()).collect();
                    ledger = Some(ledger_sessions(&known, &batch, mark, now));
                }
                let sessions = ledger.as_ref().expect("read above");
                let covered = doc.fit(budget, mark, sessions, now).map_err(full)?;
                tracing::info!(%holder, size = doc.size(), budget, covered_live = covered.len(),
                    "the deny policy outgrew IAM's limit; revoked sessions folded into issue-time windows");
                let why = format!(
                    "inline policy '{POLICY_NAME}' on {holder} reached IAM's limit of {limit} \
                     characters, and the window that revokes sessions issued at the same time \
                     covers this one too"
                );
                collateral.extend(covered.into_iter().map(|id| (id, why.clone())));
            }
            match self.write_guards(holder, doc.render()).await {
                // IAM counts more than mayfly could see (its other policies could not be
                // listed, or changed meanwhile): fold further.
                Err(GuardError::TooLarge(_)) if attempt < 3 => budget = doc.size() * 3 / 4,
                Err(GuardError::TooLarge(e)) => return Err(GuardError::Other(e)),
                other => {
                    other?;
                    break;
                }
            }
        }
        collateral.sort();
        collateral.dedup();
        Ok(collateral)
    }

    /// The size of the holder's other inline policies, which share IAM's bound with mayfly's.
    async fn other_policies_size(&self, holder: &Holder) -> Result<usize, GuardError> {
        let iam = &self.clients.iam;
        let names = match holder {
            Holder::Role(n) => iam
                .list_role_policies()
                .role_name(n)
                .send()
                .await
                .map(|o| o.policy_names().to_vec())
                .map_err(|e| self.guard_error("ListRolePolicies", e)),
            Holder::User(n) => iam
                .list_user_policies()
                .user_name(n)
                .send()
                .await
                .map(|o| o.policy_names().to_vec())
                .map_err(|e| self.guard_error("ListUserPolicies", e)),
        };
        let names = match names {
            Ok(names) => names,
            // Without the right to list them, IAM's LimitExceeded tells (deny_sessions).
            Err(None | Some(GuardError::Denied(_))) => return Ok(0),
            Err(Some(e)) => return Err(e),
        };
        let mut size = 0;
        for name in names.iter().filter(|n| *n != POLICY_NAME) {
            match self.read_inline(holder, name).await {
                Ok(Some(doc)) => {
                    size += deny_policy::decode(&doc).map_or(doc.len(), |d| size_of(&d));
                }
                Ok(None) | Err(GuardError::Denied(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(size)
    }

    /// Session tags: the role's own, then what the credential is for.
    fn tags(&self, role: &RoleSettings, origin: &Origin<'_>) -> Result<Vec<Tag>, Error> {
        let mut pairs: Vec<(String, String)> = role
            .session_tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        pairs.push(("mayfly-credential-id".into(), origin.cred_id.to_owned()));
        if !origin.task_id.is_empty() {
            pairs.push(("mayfly-task-id".into(), tag_value(origin.task_id)));
        }
        if !origin.entity_id.is_empty() {
            pairs.push(("mayfly-entity-id".into(), tag_value(origin.entity_id)));
        }
        if !origin.display_name.is_empty() {
            pairs.push(("mayfly-requester".into(), tag_value(origin.display_name)));
        }
        pairs
            .into_iter()
            .map(|(k, v)| {
                Tag::builder()
                    .key(k)
                    .value(v)
                    .build()
                    .map_err(|e| Error::Internal(format!("building a session tag: {e}")))
            })
            .collect()
    }
}

/// What the ledger says of the mount's sessions: when each was issued (worked out from its
/// expiry where that was recorded, else from when its issuance began, with room for clock
/// skew) and which must keep working (live, not in the batch being revoked, not expired).
fn ledger_sessions(known: &[Known], batch: &HashSet<&str>, mark: &str, now: u64) -> Sessions {
    let mut out = Sessions::default();
    for k in known {
        let span: Span = match k.target_issued {
            Some(t) => (t.saturating_sub(ISSUED_MARGIN_SECS), t + ISSUED_MARGIN_SECS),
            None => (
                k.created_at.saturating_sub(CLOCK_SKEW_SECS),
                k.created_at + ISSUING_SECS + CLOCK_SKEW_SECS,
            ),
        };
        out.issued.insert(k.name.clone(), span);
        let ended = k.target_expires.is_some_and(|e| e + CLOCK_SKEW_SECS < now);
        if k.live && !ended && k.name.starts_with(mark) && !batch.contains(k.name.as_str()) {
            out.live.push((k.id.clone(), span));
        }
    }
    out
}

/// A session tag value AWS takes: letters, digits, spaces and `_.:/=+-@`, at most 256.
fn tag_value(v: &str) -> String {
    v.chars()
        .map(|c| {
            if c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(256)
        .collect()
}

#[async_trait]
impl Target for AwsTarget {
    /// Session names are labels, not accounts: a new session never changes another.
    async fn exists(&self, _: &str, _: &Map<String, Value>) -> Result<bool, Error> {
        Ok(false)
    }

    async fn create(&self, p: &NewPrincipal<'_>) -> Result<Created, Error> {
        let role = RoleSettings::parse(p.settings)?;
        let t = role.credential_type;
        let ttl = p.expires.saturating_sub(now()).max(1);
        let caller = self.caller().await?;
        if t != CredentialType::AssumedRole && caller.is_role_session() {
            return Err(Error::Target(format!(
                "credential_type '{}' needs IAM user credentials, but mayfly's own are a role \
                 session ({})",
                t.name(),
                caller.arn
            )));
        }
        let mut warnings = Vec::new();
        let role_max = match role.role_name() {
            Some(name) => {
                let (max, warning) = self.role_max(name).await?;
                warnings.extend(warning);
                Some(max)
            }
            None => None,
        };
        let aligned = align(
            ttl,
            &Limits {
                credential_type: t,
                min: self.min_session,
                role_max,
                chained: caller.is_role_session(),
                revocable: t != CredentialType::SessionToken,
            },
        );
        warnings.extend(aligned.warnings);
        let duration = i32::try_from(aligned.duration).unwrap_or(i32::MAX);
        let policy_arns: Option<Vec<PolicyDescriptorType>> =
            (!role.policy_arns.is_empty()).then(|| {
                role.policy_arns
                    .iter()
                    .map(|a| PolicyDescriptorType::builder().arn(a).build())
                    .collect()
            });

        let sts = &self.clients.sts;
        let (credentials, arn) = match t {
            CredentialType::AssumedRole => {
                let out = sts
                    .assume_role()
                    .role_arn(role.role_arn.clone().unwrap_or_default())
                    .role_session_name(p.name)
                    .duration_seconds(duration)
                    .set_policy(role.policy.clone())
                    .set_policy_arns(policy_arns)
                    .set_tags(Some(self.tags(&role, p.origin)?))
                    .set_external_id(role.external_id.clone())
                    .set_source_identity(role.source_identity.clone())
                    .send()
                    .await
                    .map_err(|e| self.sts_error("AssumeRole", e))?;
                let arn = out.assumed_role_user().map(|u| u.arn().to_owned());
                (out.credentials, arn)
            }
            CredentialType::FederationToken => {
                let out = sts
                    .get_federation_token()
                    .name(p.name)
                    .duration_seconds(duration)
                    .set_policy(role.policy.clone())
                    .set_policy_arns(policy_arns)
                    .set_tags(Some(self.tags(&role, p.origin)?))
                    .send()
                    .await
                    .map_err(|e| self.sts_error("GetFederationToken", e))?;
                let arn = out.federated_user().map(|u| u.arn().to_owned());
                (out.credentials, arn)
            }
            CredentialType::SessionToken => {
                let out = sts
                    .get_session_token()
                    .duration_seconds(duration)
                    .send()
                    .await
                    .map_err(|e| self.sts_error("GetSessionToken", e))?;
                warnings.push(
                    "session_token credentials cannot be revoked: they work until their own \
                     expiry"
                        .to_owned(),
                );
                (out.credentials, Some(caller.arn.clone()))
            }
        };
        let c = credentials.ok_or_else(|| {
            Error::Target(format!(
                "STS at {} answered without credentials",
                self.clients.sts_endpoint
            ))
        })?;
        let expires = u64::try_from(c.expiration().secs()).unwrap_or(0);
        // What AWS's aws:TokenIssueTime says, in AWS's clock: a window of revoked sessions
        // is drawn around it (deny_policy).
        let issued = expires.saturating_sub(u64::try_from(duration).unwrap_or(0));
        let mut data = Map::new();
        data.insert("access_key".into(), json!(c.access_key_id()));
        // The secret parts leave mayfly once, in this response; nothing keeps them.
        data.insert("secret_key".into(), json!(c.secret_access_key()));
        data.insert("session_token".into(), json!(c.session_token()));
        data.insert("arn".into(), json!(arn.unwrap_or_default()));
        data.insert("expiration".into(), json!(expires));
        Ok(Created {
            data,
            target_expires: Some(expires),
            target_issued: Some(issued),
            warnings,
            ..Created::default()
        })
    }

    fn attach_inventory(&self, inventory: Arc<dyn Inventory>) {
        let _ = self.inventory.set(inventory);
    }

    async fn renew(&self, _: &Principal, _: u64, _: &Map<String, Value>) -> Result<(), Error> {
        // A session cannot be extended; the core never lets a lease outlive it.
        Ok(())
    }

    async fn revoke(
        &self,
        principals: &[Principal],
        settings: &Map<String, Value>,
    ) -> Result<Revoked, Error> {
        let role = RoleSettings::parse(settings)?;
        let now = now();
        let mut out = Revoked::default();
        let mut live: Vec<(String, u64)> = Vec::new();
        for p in principals {
            match p.target_expires {
                Some(t) if t <= now => out.already_gone.push(p.name.clone()),
                Some(t) => live.push((p.name.clone(), t + GUARD_MARGIN_SECS)),
                // Never recorded as issued: a session may exist, for at most the longest
                // session of its type.
                None => live.push((
                    p.name.clone(),
                    now + role.credential_type.max_duration() + GUARD_MARGIN_SECS,
                )),
            }
        }
        if live.is_empty() {
            return Ok(out);
        }
        out.removed = live.len();
        let holder = match self.holder(&role).await? {
            Ok(h) => h,
            Err(why) => {
                out.degraded = live.into_iter().map(|(n, _)| (n, why.clone())).collect();
                return Ok(out);
            }
        };
        match self.deny_sessions(&holder, &live).await {
            Ok(collateral) => {
                tracing::info!(%holder, sessions = live.len(), "sessions denied until their expiry");
                out.guarded = live;
                out.collateral = collateral;
            }
            Err(GuardError::Denied(why)) => {
                tracing::warn!(%holder, error = %why, "cannot deny the revoked sessions; they live until their expiry");
                out.degraded = live.into_iter().map(|(n, _)| (n, why.clone())).collect();
            }
            Err(GuardError::Other(e) | GuardError::TooLarge(e)) => return Err(e),
        }
        Ok(out)
    }

    async fn clean_up(&self, names: &[String], settings: &Map<String, Value>) -> Result<(), Error> {
        let role = RoleSettings::parse(settings)?;
        let Ok(holder) = self.holder(&role).await? else {
            return Ok(());
        };
        match self.edit_guards(&holder, |doc| doc.lift(names)).await {
            Ok(()) => Ok(()),
            Err(GuardError::Denied(why)) => Err(Error::Target(why)),
            Err(GuardError::Other(e) | GuardError::TooLarge(e)) => Err(e),
        }
    }

    async fn list_marked(&self, _: &str, _: &Map<String, Value>) -> Result<Vec<Principal>, Error> {
        // STS sessions cannot be listed; each ends at its own expiry whatever happens to
        // mayfly, so none can be orphaned for longer than that.
        Ok(Vec::new())
    }

    async fn rotate_root(&self, _: &SecretString) -> Result<(), Error> {
        Err(Error::bad_request(
            "rotate-root is not available for aws connections yet: rotate the access key in \
             IAM and write it to the connection",
        ))
    }

    async fn set_password(&self, _: &str, _: &SecretString, _: &[String]) -> Result<(), Error> {
        // Static roles of this kind rotate access keys (create_key), never passwords.
        Err(Error::Internal(
            "aws static roles rotate access keys, not passwords".into(),
        ))
    }

    async fn check_login(&self, _: &str, _: &SecretString) -> Result<bool, Error> {
        Err(Error::Internal(
            "aws static roles rotate access keys, not passwords".into(),
        ))
    }

    async fn create_key(&self, user: &str) -> Result<(String, SecretString), Error> {
        let out = self
            .clients
            .iam
            .create_access_key()
            .user_name(user)
            .send()
            .await
            .map_err(|e| self.iam_error("CreateAccessKey", e))?;
        let key = out.access_key().ok_or_else(|| {
            Error::Target(format!(
                "IAM at {} answered CreateAccessKey without a key",
                self.clients.iam_endpoint
            ))
        })?;
        Ok((
            key.access_key_id().to_owned(),
            SecretString::from(key.secret_access_key().to_owned()),
        ))
    }

    async fn delete_key(&self, user: &str, key_id: &str) -> Result<(), Error> {
        let deleted = self
            .clients
            .iam
            .delete_access_key()
            .user_name(user)
            .access_key_id(key_id)
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e) == Some("NoSuchEntity") => Ok(()),
            Err(e) => Err(self.iam_error("DeleteAccessKey", e)),
        }
    }

    async fn list_keys(&self, user: &str) -> Result<Vec<(String, u64)>, Error> {
        let out = self
            .clients
            .iam
            .list_access_keys()
            .user_name(user)
            .send()
            .await
            .map_err(|e| self.iam_error("ListAccessKeys", e))?;
        let mut keys: Vec<(String, u64)> = out
            .access_key_metadata()
            .iter()
            .filter_map(|k| {
                let created = k.create_date().map_or(0, |d| d.secs().max(0) as u64);
                k.access_key_id().map(|id| (id.to_owned(), created))
            })
            .collect();
        keys.sort_by_key(|(_, created)| *created);
        Ok(keys)
    }
}

/// What a role read says about revocation.
pub fn revocation_view(role: &RoleSettings) -> Map<String, Value> {
    let (revocable, how) = match role.credential_type {
        CredentialType::AssumedRole => (
            true,
            format!(
                "a Deny statement matching the session (aws:userid *:SESSION_NAME) in inline \
                 policy '{POLICY_NAME}' on role '{}', removed once the session has expired, and \
                 folded into windows of issue time past IAM's size limit; without \
                 iam:PutRolePolicy on that role, revocation degrades to expiry",
                role.role_name().unwrap_or_default()
            ),
        ),
        CredentialType::FederationToken => (
            true,
            format!(
                "a Deny statement matching the federated user (aws:userid *:NAME) in inline \
                 policy '{POLICY_NAME}' on the IAM user whose keys the connection holds, \
                 removed once the session has expired, and folded into windows of issue time \
                 past IAM's size limit; without iam:PutUserPolicy, revocation degrades to \
                 expiry"
            ),
        ),
        CredentialType::SessionToken => (
            false,
            "none: session tokens carry the IAM user's own identity and work until their \
             expiry"
                .to_owned(),
        ),
    };
    let mut out = Map::new();
    out.insert("revocable".into(), json!(revocable));
    out.insert("revocation".into(), json!(how));
    out
}
