//! mayfly's engine core: the request model, the path router, connection configurations and the
//! storage abstraction. It knows nothing of gRPC or of any particular target: the `plugin` crate
//! maps the host's protocol onto [`Request`]/[`Response`], and each crate under `backends/`
//! implements [`Backend`] for one family of targets.

pub mod audit;
pub mod backend;
pub mod cidr;
pub mod connections;
pub mod credential_type;
pub mod creds;
pub mod cron;
pub mod decision;
pub mod engine;
pub mod error;
pub mod fields;
#[cfg(test)]
mod fuzz;
pub mod host;
pub mod ledger;
pub mod mount;
pub mod node;
pub mod openapi;
pub mod operator;
pub mod policies;
pub mod policy_set;
pub mod redact;
pub mod request;
pub mod roles;
pub mod rotate_root;
pub mod router;
pub mod scheduler;
pub mod static_roles;
pub mod static_rotation;
pub mod storage;
pub mod tasks;
pub mod template;
#[cfg(test)]
mod testkit;

pub use backend::{
    Backend, Backends, Created, ExpiryEnforcement, Inventory, Known, NewPrincipal, Origin,
    Principal, Reach, Revoked, Target,
};
pub use engine::{Engine, MountOptions};
pub use error::Error;
pub use host::{Alias, Group, Host, Identity};
pub use node::NodeRole;
pub use request::{LeaseGrant, LeaseInfo, Operation, Request, Requester, Response};
pub use storage::{InMemoryStorage, Storage, StorageError, Transaction};
