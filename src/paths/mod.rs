//! One module per path family, named for the path it serves, each declaring its paths (with a
//! handler for each operation) beside their handlers; `router` is what they declare them with.

pub(crate) mod approvals;
pub(crate) mod config;
pub(crate) mod creds;
pub(crate) mod hold;
pub(crate) mod inventory;
pub(crate) mod leases;
pub(crate) mod metrics;
pub(crate) mod operator;
pub(crate) mod policies;
pub(crate) mod roles;
pub(crate) mod rotate_root;
pub(crate) mod router;
pub(crate) mod static_roles;
pub(crate) mod tasks;
