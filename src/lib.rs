//! mayfly's engine core: the request model, the path router, connection configurations, the
//! ledger and its scheduler. It knows nothing of gRPC or of any particular target: the `plugin`
//! crate maps the host's protocol onto [`Request`]/[`Response`], and each crate under
//! `backends/` implements [`Backend`] for one family of targets.
//!
//! # Layout
//!
//! Six layers; each imports only from the layers above it in this list.
//!
//! - `contract`: what backends and the plugin build on: the [`Backend`] and [`Target`]
//!   traits, [`ConnectionConfig`], field definitions, redaction, errors, the request model,
//!   the host and storage interfaces, username templates.
//! - `model`: what is stored and how it is read: the ledger, roles, tasks, static roles,
//!   approval requests, Cedar policies and their compiled set, audit events.
//! - `mount`: the state one mount shares, at the bottom of everything that acts: `MountCore`
//!   (storage, host, caches, target handles), the scheduler's state, the node's role, the
//!   decision of the mount's policies, who may draw a role's credentials (`access`), the
//!   settling of an unfinished root rotation.
//! - `jobs`: work the scheduler runs on its own: revocation, static roles' rotation.
//! - `paths`: one module per path family, named for its path (`config`, `roles`, `creds`,
//!   `leases`, `tasks`, `static_roles`, `rotate_root`, `policies`, `approvals`, `inventory`,
//!   `metrics`, `operator` for the `revoke/` and `orphans/` tools), each declaring its paths
//!   beside its handlers.
//! - `engine`: the path table (the path modules' paths joined), the routing of a request to
//!   its handler, help and OpenAPI, and the sweep, the loop that hands due work to its job.
//!
//! A new path goes in `paths`: its handlers and its `PathDef` (pattern, fields, help, and a
//! handler per operation) in one module, which is the only place that names it. A new kind
//! of target is a crate under `backends/` implementing [`Backend`].

mod contract;
mod engine;
mod jobs;
mod model;
mod mount;
mod paths;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod testkit;

pub use contract::backend::{
    Backend, Backends, Created, ExpiryEnforcement, Inventory, Known, NewPrincipal, Origin,
    Principal, Reach, Revoked, Standing, Target,
};
pub use contract::connection_config::ConnectionConfig;
pub use contract::error::Error;
pub use contract::host::{Alias, Group, Host, Identity, now};
pub use contract::request::{LeaseGrant, LeaseInfo, Operation, Request, Requester, Response};
pub use contract::storage::{InMemoryStorage, Storage, StorageError, Transaction};
pub use contract::template::LEGACY_MARK;
pub use contract::{backend, credential_type, fields, redact, storage};
pub use engine::{Engine, MountOptions};
pub use mount::CrashHook;
pub use mount::account::RequestKind;
pub use mount::node::NodeRole;
