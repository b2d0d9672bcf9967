//! Work the scheduler runs on its own, handed out by the engine's sweep.

pub(crate) mod hold;
pub(crate) mod revocation;
pub(crate) mod static_rotation;
