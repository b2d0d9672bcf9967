//! mayfly's `http` kind, API keys minted through any service's admin API by the calls a role
//! declares, and the `rabbitmq` kind, a preset of the same machinery for RabbitMQ's
//! management API.

mod backend;
mod client;
mod placeholders;
mod rabbitmq;
mod spec;
mod target;

pub use backend::Http;
pub use rabbitmq::RabbitMq;

#[cfg(test)]
mod fuzz;
