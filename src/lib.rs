//! mayfly's engine core: the request model, the path router, connection configurations and the
//! storage abstraction. It knows nothing of gRPC or of any particular target: the `plugin` crate
//! maps the host's protocol onto [`Request`]/[`Response`], and each crate under `backends/`
//! implements [`Backend`] for one family of targets.

pub mod backend;
pub mod connections;
pub mod engine;
pub mod error;
pub mod fields;
pub mod openapi;
pub mod redact;
pub mod request;
pub mod router;
pub mod storage;

pub use backend::{Backend, Backends};
pub use engine::Engine;
pub use error::Error;
pub use request::{Operation, Request, Requester, Response};
pub use storage::{InMemoryStorage, Storage, StorageError, Transaction};
