//! The hold sweep's mirror of the ledger ([`crate::jobs::hold`]): what it read of each record,
//! and which records were written since, so that each pass reads again only those.
//!
//! Exact because one process writes a mount's ledger (the active node's) and every write goes
//! through the mount's storage, which notes it here ([`crate::mount::account::Counted`]). The
//! set of written ids is taken before a pass reads anything: a write during the pass is read
//! again by the next one. A new process starts with an empty mirror and reads everything once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::model::ledger::{self, Credential, RequesterRecord, State};
use crate::model::task::{self, Task};

/// The ids of the ledger records and tasks written since the sweep last took them, noted only
/// while the sweep keeps a mirror (while a policy decides `hold`): otherwise the sets would
/// grow with every issuance.
#[derive(Default)]
pub struct ChangedRecords {
    noted: Mutex<Option<Noted>>,
}

/// What was written since the last [`ChangedRecords::take`].
#[derive(Debug, Default, PartialEq)]
pub struct Noted {
    pub creds: HashSet<String>,
    pub tasks: HashSet<String>,
}

impl ChangedRecords {
    /// Called by the mount's storage on every put and delete.
    pub fn note(&self, key: &str) {
        let (set, id): (fn(&mut Noted) -> &mut HashSet<String>, &str) =
            if let Some(id) = key.strip_prefix(ledger::RECORDS) {
                (|n| &mut n.creds, id)
            } else if let Some(id) = key.strip_prefix(task::PREFIX) {
                (|n| &mut n.tasks, id)
            } else {
                return;
            };
        if let Some(noted) = self.noted.lock().unwrap().as_mut() {
            set(noted).insert(id.to_owned());
        }
    }

    /// What was noted since the last call, noting from now on; `None` when nothing was being
    /// noted, so everything must be read.
    pub fn take(&self) -> Option<Noted> {
        let mut noted = self.noted.lock().unwrap();
        match noted.as_mut() {
            Some(n) => Some(std::mem::take(n)),
            None => {
                *noted = Some(Noted::default());
                None
            }
        }
    }

    /// Stops noting.
    pub fn stop(&self) {
        *self.noted.lock().unwrap() = None;
    }
}

/// What hold decisions read of a record: who asked, for which role and task, when, until
/// when, and whether it is live. Its strings are shared among the records that repeat them.
#[derive(Debug, Clone)]
pub struct Holder {
    pub role: Arc<str>,
    pub connection: Arc<str>,
    pub requester: Arc<RequesterRecord>,
    pub task_id: Option<Arc<str>>,
    pub created_at: u64,
    pub deadline: u64,
    /// Active (not an intent, nor revoking or revoked).
    pub active: bool,
}

impl Holder {
    /// What hold decisions read of `cred`, with strings of its own.
    pub fn of(cred: &Credential) -> Holder {
        Mirror::default().holder(cred)
    }
}

/// What the last pass read of every record it could read, by id, and of the tasks their
/// credentials were issued under.
#[derive(Default)]
pub struct Mirror {
    pub holders: HashMap<String, Holder>,
    /// By id; `None`: the task is gone.
    pub tasks: HashMap<Arc<str>, Option<Arc<Task>>>,
    strings: HashSet<Arc<str>>,
    requesters: HashSet<Arc<RequesterRecord>>,
}

impl Mirror {
    pub fn clear(&mut self) {
        *self = Mirror::default();
    }

    /// Keeps what hold decisions read of `cred`.
    pub fn keep(&mut self, cred: &Credential) {
        let holder = self.holder(cred);
        self.holders.insert(cred.id.clone(), holder);
    }

    /// What hold decisions read of `cred`, with the strings this mirror shares.
    fn holder(&mut self, cred: &Credential) -> Holder {
        Holder {
            role: self.shared(&cred.role),
            connection: self.shared(&cred.connection),
            requester: self.requester(&cred.requester),
            task_id: cred.task_id.as_deref().map(|t| self.shared(t)),
            created_at: cred.created_at,
            deadline: cred.deadline,
            active: cred.state == State::Active,
        }
    }

    /// Forgets records no longer in the ledger (`ids`, every record id), and the strings only
    /// they used.
    pub fn retain(&mut self, ids: &HashSet<&str>) {
        self.holders.retain(|id, _| ids.contains(id.as_str()));
        let referenced: HashSet<&str> = self
            .holders
            .values()
            .filter_map(|h| h.task_id.as_deref())
            .collect();
        self.tasks.retain(|id, _| referenced.contains(&**id));
        // An interned string held by nothing but the interner has a count of one.
        self.strings.retain(|s| Arc::strong_count(s) > 1);
        self.requesters.retain(|r| Arc::strong_count(r) > 1);
    }

    fn shared(&mut self, s: &str) -> Arc<str> {
        if let Some(found) = self.strings.get(s) {
            return found.clone();
        }
        let new: Arc<str> = Arc::from(s);
        self.strings.insert(new.clone());
        new
    }

    fn requester(&mut self, r: &RequesterRecord) -> Arc<RequesterRecord> {
        if let Some(found) = self.requesters.get(r) {
            return found.clone();
        }
        let new = Arc::new(r.clone());
        self.requesters.insert(new.clone());
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_noted_only_while_taken() {
        let changed = ChangedRecords::default();
        changed.note("ledger/creds/a");
        assert_eq!(changed.take(), None, "not noting yet: read everything");
        changed.note("ledger/creds/b");
        changed.note("ledger/due/000/1_b");
        changed.note("tasks/t1");
        changed.note("roles/x");
        let noted = changed.take().unwrap();
        assert_eq!(noted.creds, HashSet::from(["b".to_owned()]));
        assert_eq!(noted.tasks, HashSet::from(["t1".to_owned()]));
        assert_eq!(changed.take(), Some(Noted::default()));
        changed.stop();
        changed.note("ledger/creds/c");
        assert_eq!(changed.take(), None);
    }
}
