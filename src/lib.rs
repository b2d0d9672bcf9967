//! mayfly's engine core: the request model, the path router, connection configurations and the
//! storage abstraction. It knows nothing of gRPC or of any particular target: the `plugin` crate
//! maps the host's protocol onto [`Request`]/[`Response`], and each crate under `backends/`
//! implements [`Backend`] for one family of targets.

mod audit;
pub mod backend;
mod cidr;
mod connection_config;
mod connections;
pub mod credential_type;
mod creds;
mod cron;
mod decision;
mod engine;
mod error;
pub mod fields;
#[cfg(test)]
mod fuzz;
mod host;
mod leases;
mod ledger;
mod mount;
mod node;
mod openapi;
mod operator;
mod policies;
mod policy_set;
mod policy_store;
pub mod redact;
mod request;
mod revocation;
mod roles;
mod rotate_root;
mod router;
mod static_role;
mod static_roles;
mod static_rotation;
pub mod storage;
mod sweep;
mod task;
mod tasks;
mod template;
#[cfg(test)]
mod testkit;

pub use backend::{
    Backend, Backends, Created, ExpiryEnforcement, Inventory, Known, NewPrincipal, Origin,
    Principal, Reach, Revoked, Target,
};
pub use connection_config::ConnectionConfig;
pub use engine::{Engine, MountOptions};
pub use error::Error;
pub use host::{Alias, Group, Host, Identity, now};
pub use mount::CrashHook;
pub use node::NodeRole;
pub use request::{LeaseGrant, LeaseInfo, Operation, Request, Requester, Response};
pub use storage::{InMemoryStorage, Storage, StorageError, Transaction};
pub use template::LEGACY_MARK;
