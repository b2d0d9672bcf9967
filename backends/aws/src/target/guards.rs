//! The guard of revoked sessions: deny statements in an inline policy of the role (or, for
//! federation tokens, the IAM user) the sessions belong to, read, edited and written back one
//! edit at a time, and folded into windows of issue time when they outgrow IAM's limit
//! (`deny_policy`).

use std::collections::HashSet;
use std::fmt;

use mayfly::{Error, Known, now};

use super::AwsTarget;
use crate::clients::error_code;
use crate::deny_policy::{self, CLOCK_SKEW_SECS, DenyPolicy, POLICY_NAME, Sessions, Span, size_of};
use crate::settings::{CredentialType, RoleSettings};

/// IAM's bound on the inline policies of one role, all together (white space aside).
const ROLE_INLINE_LIMIT: usize = 10_240;
/// IAM's bound on the inline policies of one user, all together.
const USER_INLINE_LIMIT: usize = 2_048;
/// How far a session's issue time may lie from the one worked out from its expiry and
/// duration (AWS rounds both to seconds).
const ISSUED_MARGIN_SECS: u64 = 5;
/// How long after its intent a session may be issued: issuance gives the create 30 s.
const ISSUING_SECS: u64 = 60;

/// Where the deny statements of a role's revoked sessions go.
pub(super) enum Holder {
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

pub(super) enum GuardError {
    /// mayfly may not write the guard: revocation degrades to expiry.
    Denied(String),
    /// IAM refused the policy as too large (`LimitExceeded`).
    TooLarge(Error),
    Other(Error),
}

impl AwsTarget {
    /// Where revoked sessions of `role` are denied; `None` when they cannot be.
    pub(super) async fn holder(
        &self,
        role: &RoleSettings,
    ) -> Result<Result<Holder, String>, Error> {
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
    pub(super) async fn read_guards(&self, holder: &Holder) -> Result<Option<String>, GuardError> {
        self.read_inline(holder, POLICY_NAME).await
    }

    /// Inline policy `name`'s document on the holder, `None` when there is none.
    pub(super) async fn read_inline(
        &self,
        holder: &Holder,
        name: &str,
    ) -> Result<Option<String>, GuardError> {
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
    pub(super) fn guard_error<E, R>(
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

    pub(super) async fn write_guards(
        &self,
        holder: &Holder,
        doc: Option<String>,
    ) -> Result<(), GuardError> {
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
    pub(super) async fn edit_guards(
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
    pub(super) async fn read_policy(
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
    pub(super) async fn deny_sessions(
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
    pub(super) async fn other_policies_size(&self, holder: &Holder) -> Result<usize, GuardError> {
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
}

/// What the ledger says of the mount's sessions: when each was issued (worked out from its
/// expiry where that was recorded, else from when its issuance began, with room for clock
/// skew) and which must keep working (live, not in the batch being revoked, not expired).
pub(super) fn ledger_sessions(
    known: &[Known],
    batch: &HashSet<&str>,
    mark: &str,
    now: u64,
) -> Sessions {
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
