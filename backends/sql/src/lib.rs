//! mayfly backends for SQL targets. Each module implements the core's `Backend` for one database.

pub mod postgres;

pub use postgres::Postgres;
