//! A task as stored: the unit of access, with its deadline, owner, description and metadata
//! (the `tasks/` paths and a task's end are in `paths::tasks`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::contract::error::Error;
use crate::contract::host::now;
use crate::contract::request::Requester;
use crate::contract::storage::{self, Kv};
use crate::model::ledger::{RequesterRecord, TASK_ENTRY};

pub const PREFIX: &str = "tasks/";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Open,
    Ended,
}

impl TaskState {
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Open => "open",
            TaskState::Ended => "ended",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub description: String,
    pub metadata: Map<String, Value>,
    pub owner: RequesterRecord,
    /// Only the owner may draw credentials under the task (unless a role allows others).
    pub bound_to_owner: bool,
    pub created_at: u64,
    pub deadline: u64,
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    /// Where the task sits in the due index.
    pub due: u64,
}

impl Task {
    /// A task opened now by `owner`, running `ttl` seconds.
    pub fn open(
        id: String,
        description: &str,
        metadata: Option<&BTreeMap<String, String>>,
        owner: &Requester,
        bound_to_owner: bool,
        now: u64,
        ttl: u64,
    ) -> Task {
        Task {
            id,
            description: description.to_owned(),
            metadata: metadata.map(metadata_values).unwrap_or_default(),
            owner: owner.into(),
            bound_to_owner,
            created_at: now,
            deadline: now + ttl,
            state: TaskState::Open,
            ended_at: None,
            end_reason: None,
            due: now + ttl,
        }
    }

    /// Credentials may still be issued under it.
    pub fn is_open(&self, now: u64) -> bool {
        self.state == TaskState::Open && self.deadline > now
    }

    /// Whether `who` is the task's owner: the same entity, or, for tokens without an entity
    /// (such as root tokens), the same token.
    pub fn owned_by(&self, who: &Requester) -> bool {
        if self.owner.entity_id.is_empty() {
            who.entity_id.is_empty() && who.token_accessor == self.owner.token_accessor
        } else {
            who.entity_id == self.owner.entity_id
        }
    }

    /// Refuses `who` (a 403 naming the rule) when the task is bound to its owner and `who` is
    /// not its owner. Bound tasks are read, changed and ended by their owner alone; operators
    /// reach every task through the sudo paths under `revoke/task/`. `doing` says what was
    /// refused.
    pub fn check_owner(&self, who: &Requester, doing: &str) -> Result<(), Error> {
        if !self.bound_to_owner || self.owned_by(who) {
            return Ok(());
        }
        let owner = if self.owner.entity_id.is_empty() {
            format!("the token with accessor '{}'", self.owner.token_accessor)
        } else {
            format!("entity '{}'", self.owner.entity_id)
        };
        Err(Error::PermissionDenied(format!(
            "task '{}' is bound to its owner ({owner}); only its owner may {doing} it (an \
             operator may, through the sudo paths under revoke/task/)",
            self.id
        )))
    }

    pub(crate) fn entry(&self) -> String {
        entry(&self.id)
    }

    pub(crate) fn view(&self) -> Map<String, Value> {
        let mut v = json!({
            "task_id": self.id,
            "description": self.description,
            "metadata": self.metadata,
            "owner": {
                "entity_id": self.owner.entity_id,
                "token_accessor": self.owner.token_accessor,
                "display_name": self.owner.display_name,
                "remote_addr": self.owner.remote_addr,
            },
            "bound_to_owner": self.bound_to_owner,
            "created_at": self.created_at,
            "deadline": self.deadline,
            "ttl_remaining": self.deadline.saturating_sub(now()),
            "state": self.state.name(),
            "ended_at": self.ended_at,
            "end_reason": self.end_reason,
        });
        std::mem::take(v.as_object_mut().expect("an object"))
    }
}

/// Metadata as a task stores it: string values.
pub(crate) fn metadata_values(m: &BTreeMap<String, String>) -> Map<String, Value> {
    m.iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}

pub(crate) fn entry(id: &str) -> String {
    format!("{TASK_ENTRY}{id}")
}

pub(crate) fn key(id: &str) -> String {
    format!("{PREFIX}{id}")
}

pub async fn load(kv: &dyn Kv, id: &str) -> Result<Option<Task>, Error> {
    Ok(storage::get_json(kv, &key(id)).await?)
}
