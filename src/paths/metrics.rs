//! `metrics`: where the mount's time goes, per kind of request (`mount::account`).

use crate::contract::request::{Operation, Response};
use crate::paths::router::{PathDef, op};

/// The paths this module serves, for the engine's table.
pub(crate) fn paths() -> Vec<PathDef> {
    vec![PathDef {
        pattern: "metrics",
        fields: vec![],
        operations: vec![op(Operation::Read, |c| {
            Box::pin(async move { Ok(Response::data(c.core.account.view())) })
        })],
        reads_act: false,
        synopsis: "Where this mount's time went since it started, per kind of request (sudo).",
        description: "For issue, renew and revoke (and other, everything else): how many were \
            served, their total time in the engine and in the plugin's decoding and encoding \
            (engine_us, codec_us), the total of each phase (phases_us: for issuance lookups, \
            policy, name_check, password, intent, create, activation, finish), and each host \
            storage call's count and total time. background counts the storage calls made \
            outside any request. Totals in microseconds since the mount started (since, Unix \
            seconds): take the difference of two reads. The process's own counts: each node \
            of a cluster has its own.",
    }]
}
