//! `config/hold`: how often the hold sweep decides every live credential again
//! (`hold_interval`), and what its last pass came to ([`crate::jobs::hold`]).

use serde_json::json;

use crate::contract::error::Error;
use crate::contract::request::{Operation, Response};
use crate::jobs::hold;
use crate::mount::MountCore;
use crate::paths::router::{PathDef, op};

async fn read(core: &MountCore) -> Result<Response, Error> {
    let mut data = hold::load_settings(core.storage.as_ref()).await?.view();
    let last = core.hold.last.lock().unwrap().clone();
    data.insert("last_pass".into(), json!(last));
    Ok(Response::data(data))
}

async fn write(
    core: &MountCore,
    data: &serde_json::Map<String, serde_json::Value>,
) -> Result<Response, Error> {
    hold::write_settings(core.storage.as_ref(), data).await?;
    // The new interval counts from a pass made now.
    core.hold.wake();
    Ok(Response::empty())
}

/// The paths this module serves, for the engine's table.
pub(crate) fn paths() -> Vec<PathDef> {
    vec![PathDef {
        pattern: "config/hold",
        fields: hold::settings_fields(),
        operations: vec![
            op(Operation::Read, |c| Box::pin(read(c.core))),
            op(Operation::Update, |c| Box::pin(write(c.core, &c.req.data))),
        ],
        // The sweep runs on the active node: a standby forwards the read to it.
        reads_act: true,
        synopsis: "Continuous authorization: hold_interval, and the last pass of the hold \
            sweep (when, how many live credentials it decided and ended, how long it took, \
            and what it could not decide).",
        description: "Every live credential of a role that a policy on the action hold covers \
            is decided again at least every hold_interval (default 60s), and after every write \
            of a policy, role, connection, task or of this path; one the decision ends is \
            revoked, its ledger record and audit event naming the policies. The sweep runs on \
            the active node. This path is matched before config/NAME, so no connection can be \
            named 'hold'.",
    }]
}
