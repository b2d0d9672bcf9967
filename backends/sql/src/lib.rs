//! mayfly backends for SQL targets. Each module implements the core's `Backend` for one database.

pub mod common;
pub mod mysql;
pub mod postgres;
pub mod scram;
pub mod statements;
pub mod target;

pub use mysql::MySql;
pub use postgres::Postgres;

#[cfg(test)]
mod fuzz;
