//! One AWS connection at work: sessions issued with the duration aligned before the call,
//! revoked by a deny statement on the role (or user) they belong to, and that statement
//! removed once the session has expired.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_sts::types::{PolicyDescriptorType, Tag};
use mayfly::ConnectionConfig;
use mayfly::now;
use mayfly::{
    Created, Error, Inventory, NewPrincipal, Origin, Principal, Revoked, Standing, Target,
};
use secrecy::SecretString;
use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;

use crate::clients::{self, Clients, call_error, error_code};
use crate::deny_policy::{CLOCK_SKEW_SECS, POLICY_NAME};
use crate::duration::{AWS_MIN_SECS, Limits, align};
use crate::settings::{CredentialType, RoleSettings};

mod guards;
use guards::GuardError;

/// How long a role's MaxSessionDuration is reused before IAM is asked again.
const ROLE_MAX_REUSE: Duration = Duration::from_secs(60);
/// AWS's MaxSessionDuration of a role that does not set one, assumed when it cannot be read.
const AWS_DEFAULT_ROLE_MAX: u64 = 3600;
/// Kept on a deny statement past the session's expiry, for clock skew between mayfly and AWS.
const GUARD_MARGIN_SECS: u64 = CLOCK_SKEW_SECS;

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

    async fn inventory(&self, _: &Map<String, Value>) -> Result<Vec<Standing>, Error> {
        // STS sessions are not listed (each ends on its own); IAM users are the standing
        // principals of an account, and their access keys the standing secrets.
        let own = self
            .caller()
            .await
            .ok()
            .and_then(|c| c.user_name().map(str::to_owned));
        let mut users = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let out = self
                .clients
                .iam
                .list_users()
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| self.iam_error("ListUsers", e))?;
            users.extend(
                out.users()
                    .iter()
                    .map(|u| (u.user_name().to_owned(), u.arn().to_owned())),
            );
            match out.marker() {
                Some(m) if out.is_truncated() => marker = Some(m.to_owned()),
                _ => break,
            }
        }
        let now = now();
        let mut found = Vec::with_capacity(users.len());
        for (name, arn) in users {
            let keys: Vec<Value> = self
                .list_keys(&name)
                .await?
                .into_iter()
                .map(|(id, created)| {
                    json!({"id": id, "age_days": now.saturating_sub(created) / 86_400})
                })
                .collect();
            let power = json!({"arn": arn, "access_keys": keys});
            found.push(Standing {
                own: own.as_deref() == Some(name.as_str()),
                name,
                power: power.as_object().cloned().unwrap_or_default(),
            });
        }
        Ok(found)
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
