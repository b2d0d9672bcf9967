//! The core's engine-level scenarios: a mount's engine over in-memory storage, the fake target
//! kind and a host with fixed answers (`testkit`), driven through its paths as the host would.

mod approvals;
mod cluster;
mod hold;
mod issuance;
mod operator;
mod paths;
mod policies;
mod static_roles;
