//! What backends and the plugin build on. The modules that are public here are the backend
//! contract, re-exported at the crate's root.

pub mod backend;
pub(crate) mod connection_config;
pub mod credential_type;
pub(crate) mod error;
pub mod fields;
pub(crate) mod host;
pub mod redact;
pub(crate) mod request;
pub mod storage;
pub(crate) mod template;
