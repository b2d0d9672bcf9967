//! The audit trail: one structured log event per credential operation (issue, renew, revoke,
//! whoever asked for it: a client, the host, the scheduler, a task's end or an operator) and per
//! task and operator call; a request that policies decided carries their decision in `policy`
//! (one event, not two: each line costs the host as much as a policy evaluation). Events go to
//! the log target `mayfly::audit` with the message `audit`, so they can be filtered from the
//! rest of the log. Nothing secret is ever a field: ids, names, outcomes and reasons only.

use crate::contract::request::Requester;
use crate::model::ledger::Credential;

/// What happened. The names are the `audit_action` field's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Issue,
    Renew,
    Revoke,
    TaskCreate,
    TaskUpdate,
    TaskEnd,
    OperatorRevoke,
    OrphanScan,
    OrphanPurge,
    Inventory,
    ApprovalRequest,
    ApprovalApprove,
    ApprovalDeny,
    StaticRotate,
    /// A live credential ended by a `hold` decision.
    Hold,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Issue => "issue",
            Action::Renew => "renew",
            Action::Revoke => "revoke",
            Action::TaskCreate => "task_create",
            Action::TaskUpdate => "task_update",
            Action::TaskEnd => "task_end",
            Action::OperatorRevoke => "operator_revoke",
            Action::OrphanScan => "orphan_scan",
            Action::OrphanPurge => "orphan_purge",
            Action::Inventory => "inventory",
            Action::ApprovalRequest => "approval_request",
            Action::ApprovalApprove => "approval_approve",
            Action::ApprovalDeny => "approval_deny",
            Action::StaticRotate => "static_rotate",
            Action::Hold => "hold",
        }
    }
}

/// One audit event. Empty fields are logged empty, so every event has the same shape.
#[derive(Debug, Clone, Default)]
pub struct Event<'a> {
    pub cred_id: &'a str,
    pub task_id: &'a str,
    pub role: &'a str,
    pub connection: &'a str,
    pub principal: &'a str,
    pub entity_id: &'a str,
    pub token_accessor: &'a str,
    pub remote_addr: &'a str,
    pub lease_id: &'a str,
    /// The policy decision on the request, when policies decided it: `permitted by a, b`,
    /// `forbidden by c`, `no permit policy was satisfied (in scope: …)`. Ids only.
    pub policy: &'a str,
    /// Why (a revocation's reason, a refusal's message) or what (an operator call's scope).
    pub detail: &'a str,
}

impl<'a> Event<'a> {
    /// The event for one credential, from its ledger record.
    pub fn for_credential(cred: &'a Credential) -> Self {
        Event {
            cred_id: &cred.id,
            task_id: cred.task_id.as_deref().unwrap_or(""),
            role: &cred.role,
            connection: &cred.connection,
            principal: &cred.principal,
            entity_id: &cred.requester.entity_id,
            token_accessor: &cred.requester.token_accessor,
            remote_addr: &cred.requester.remote_addr,
            lease_id: cred.lease_id.as_deref().unwrap_or(""),
            policy: "",
            detail: "",
        }
    }

    /// The event for a call made by `who` (the requester's identity fields filled).
    pub fn by(who: &'a Requester) -> Self {
        Event {
            entity_id: &who.entity_id,
            token_accessor: &who.token_accessor,
            remote_addr: &who.remote_addr,
            ..Default::default()
        }
    }

    pub fn detail(mut self, detail: &'a str) -> Self {
        self.detail = detail;
        self
    }
}

/// Emits one event. `outcome` says how it ended (`issued`, `denied`, `failed`, `revoked`,
/// `already_gone`, `retrying`, …); a refusal or failure is a warning.
pub fn emit(action: Action, outcome: &str, e: &Event<'_>) {
    macro_rules! event {
        ($level:ident) => {
            tracing::$level!(target: "mayfly::audit",
                audit_action = action.name(), outcome, cred_id = e.cred_id, task_id = e.task_id,
                role = e.role, connection = e.connection, principal = e.principal,
                entity_id = e.entity_id, token_accessor = e.token_accessor,
                remote_addr = e.remote_addr, lease_id = e.lease_id, policy = e.policy,
                detail = e.detail, "audit")
        };
    }
    if matches!(outcome, "denied" | "failed" | "retrying") {
        event!(warn);
    } else {
        event!(info);
    }
}
