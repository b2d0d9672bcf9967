//! mayfly's backend for Redis (6 and later) and Valkey: dynamic ACL users, on one node or on
//! several nodes kept alike.

mod backend;
mod resp;
mod target;

pub use backend::Redis;

#[cfg(test)]
mod fuzz;
