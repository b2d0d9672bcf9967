//! mayfly backends for SQL targets. Each module implements the core's `Backend` for one database.

pub mod postgres;
pub mod statements;

pub use postgres::Postgres;
