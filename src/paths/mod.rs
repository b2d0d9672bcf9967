//! One module per path family, named for the path it serves.

pub(crate) mod config;
pub(crate) mod creds;
pub(crate) mod leases;
pub(crate) mod operator;
pub(crate) mod policies;
pub(crate) mod rotate_root;
pub(crate) mod static_roles;
pub(crate) mod tasks;
