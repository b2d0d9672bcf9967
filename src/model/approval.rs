//! Approval requests as stored (`approvals/ID`): a requester asks for a credential of a role
//! whose `approvals_required` is above zero, approvers decide, and the approved requester
//! collects the credential once, within the role's `approval_ttl`. The paths are in
//! `paths::approvals`; the collection is part of `creds/ROLE`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::contract::error::Error;
use crate::contract::request::Requester;
use crate::contract::storage::{self, Kv};
use crate::model::ledger::RequesterRecord;

pub const PREFIX: &str = "approvals/";

/// Where a request stands. `expired` is not stored: an approved request past its
/// `expires_at` reads as expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Pending,
    Approved,
    Denied,
    /// The credential was collected.
    Used,
    /// Its task ended before the credential was collected.
    Ended,
}

/// One approver's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decided {
    pub entity_id: String,
    pub display_name: String,
    pub at: u64,
    #[serde(default)]
    pub comment: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub id: String,
    pub role: String,
    pub requester: RequesterRecord,
    pub reason: String,
    /// The TTL asked for, in seconds; 0 when none was asked.
    pub ttl: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    pub stage: Stage,
    pub created_at: u64,
    /// The role's `approvals_required` when the request was made.
    pub required: u32,
    #[serde(default)]
    pub approvals: Vec<Decided>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied_by: Option<Decided>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<u64>,
    /// The approval's end: `approved_at` plus the role's `approval_ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_at: Option<u64>,
    /// The credential collected with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cred_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
}

impl Approval {
    /// The request's state at `now`: `pending`, `approved`, `expired`, `denied`, `used` or
    /// `ended`.
    pub fn state(&self, now: u64) -> &'static str {
        match self.stage {
            Stage::Pending => "pending",
            Stage::Approved if self.expires_at.is_some_and(|e| now >= e) => "expired",
            Stage::Approved => "approved",
            Stage::Denied => "denied",
            Stage::Used => "used",
            Stage::Ended => "ended",
        }
    }

    /// Whether `who` made this request: the same entity, or the same token where the request
    /// was made without one.
    pub fn requested_by(&self, who: &Requester) -> bool {
        if self.requester.entity_id.is_empty() {
            who.entity_id.is_empty() && who.token_accessor == self.requester.token_accessor
        } else {
            who.entity_id == self.requester.entity_id
        }
    }

    pub fn view(&self, now: u64) -> Map<String, Value> {
        let decided = |d: &Decided| {
            json!({"entity_id": d.entity_id, "display_name": d.display_name, "at": d.at,
                   "comment": d.comment})
        };
        let v = json!({
            "id": self.id,
            "role": self.role,
            "state": self.state(now),
            "reason": self.reason,
            "ttl": self.ttl,
            "task_id": self.task_id,
            "requester": {
                "entity_id": self.requester.entity_id,
                "display_name": self.requester.display_name,
                "token_accessor": self.requester.token_accessor,
            },
            "created_at": self.created_at,
            "approvals_required": self.required,
            "approvals": self.approvals.iter().map(decided).collect::<Vec<_>>(),
            "denied_by": self.denied_by.as_ref().map(decided),
            "approved_at": self.approved_at,
            "expires_at": self.expires_at,
            "used_at": self.used_at,
            "cred_id": self.cred_id,
            "end_reason": self.end_reason,
        });
        v.as_object().cloned().unwrap_or_default()
    }
}

fn key(id: &str) -> String {
    format!("{PREFIX}{id}")
}

pub async fn load(kv: &dyn Kv, id: &str) -> Result<Option<Approval>, Error> {
    if id.is_empty() || id.contains('/') {
        return Ok(None);
    }
    Ok(storage::get_json(kv, &key(id)).await?)
}

pub async fn save(kv: &dyn Kv, approval: &Approval) -> Result<(), Error> {
    Ok(storage::put_json(kv, &key(&approval.id), approval).await?)
}

pub async fn list(kv: &dyn Kv) -> Result<Vec<String>, Error> {
    Ok(kv.list(PREFIX).await?)
}

/// Ends every request of task `task_id` that has not been collected: its credential could
/// only be drawn under the task, which has ended.
pub async fn end_for_task(
    kv: &dyn Kv,
    task_id: &str,
    reason: &str,
    now: u64,
) -> Result<usize, Error> {
    let mut ended = 0;
    for id in list(kv).await? {
        let Some(mut a) = load(kv, &id).await? else {
            continue;
        };
        if a.task_id.as_deref() == Some(task_id)
            && matches!(a.stage, Stage::Pending | Stage::Approved)
        {
            a.stage = Stage::Ended;
            a.end_reason = Some(format!("task ended: {reason}"));
            a.expires_at = a.expires_at.map(|e| e.min(now));
            save(kv, &a).await?;
            ended += 1;
        }
    }
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval() -> Approval {
        Approval {
            id: "a1".into(),
            role: "prod".into(),
            requester: RequesterRecord {
                entity_id: "ent-alice".into(),
                token_accessor: "acc-1".into(),
                display_name: "userpass-alice".into(),
                remote_addr: String::new(),
            },
            reason: "incident 42".into(),
            ttl: 600,
            task_id: None,
            stage: Stage::Approved,
            created_at: 100,
            required: 2,
            approvals: Vec::new(),
            denied_by: None,
            approved_at: Some(200),
            expires_at: Some(1100),
            used_at: None,
            cred_id: None,
            end_reason: None,
        }
    }

    #[test]
    fn an_approved_request_reads_as_expired_past_its_end() {
        let a = approval();
        assert_eq!(a.state(1099), "approved");
        assert_eq!(a.state(1100), "expired");
    }

    #[test]
    fn the_requester_is_its_entity_or_without_one_its_token() {
        let a = approval();
        let who = |entity: &str, accessor: &str| Requester {
            entity_id: entity.into(),
            token_accessor: accessor.into(),
            ..Requester::default()
        };
        assert!(a.requested_by(&who("ent-alice", "acc-other")));
        assert!(!a.requested_by(&who("ent-bob", "acc-1")));
        let mut tokenless = approval();
        tokenless.requester.entity_id.clear();
        assert!(tokenless.requested_by(&who("", "acc-1")));
        assert!(!tokenless.requested_by(&who("", "acc-2")));
        assert!(!tokenless.requested_by(&who("ent-x", "acc-1")));
    }
}
