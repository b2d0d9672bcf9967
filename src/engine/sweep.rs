//! The sweep: the loop that runs the scheduler. Each pass loads the due index into memory,
//! takes what fell due and what was asked for, and hands each to its job: a task's end to
//! `paths::tasks`, a static role's rotation to `jobs::static_rotation`, a credential to
//! `jobs::revocation`.

use std::sync::Arc;

use crate::contract::host::now;
use crate::jobs::revocation;
use crate::jobs::static_rotation;
use crate::model::ledger::{STATIC_ENTRY, TASK_ENTRY};
use crate::mount::MountCore;
use crate::paths::tasks;

/// Runs until the mount stops ([`crate::mount::node::Node::stop`] aborts it).
pub async fn run(core: Arc<MountCore>) {
    let s = &core.scheduler;
    tracing::info!("scheduler started");
    loop {
        let now = now();
        if let Err(e) = s.load_horizon(core.storage.as_ref(), now).await {
            tracing::warn!(error = %e, "could not read the due index; retrying");
        }
        let requests = s.take_requests();
        let due = s.take_due(now);
        if requests.is_empty() && due.is_empty() {
            s.sleep_until_next(now).await;
            continue;
        }
        // Tasks end on their own: ending one revokes through this loop, so it must not block
        // it. Static roles rotate on their own too: a slow target must not hold revocations
        // back.
        let (own_entries, due): (Vec<_>, Vec<_>) = due
            .into_iter()
            .partition(|(_, id)| id.starts_with(TASK_ENTRY) || id.starts_with(STATIC_ENTRY));
        for (entry_due, entry) in own_entries {
            if let Some(id) = entry.strip_prefix(TASK_ENTRY) {
                core.node
                    .spawn(tasks::on_due(core.clone(), entry_due, id.to_owned()));
            } else if let Some(name) = entry.strip_prefix(STATIC_ENTRY) {
                core.node.spawn(static_rotation::on_due(
                    core.clone(),
                    entry_due,
                    name.to_owned(),
                ));
            }
        }
        revocation::process(&core, now, due, requests).await;
    }
}
