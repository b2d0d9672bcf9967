//! The `aws` kind: STS sessions (assumed roles, federation tokens, session tokens) whose
//! duration follows the task, and which can be revoked before they expire.

mod backend;
mod clients;
mod deny_policy;
mod duration;
mod settings;
mod target;

pub use backend::Aws;
