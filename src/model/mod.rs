//! What is stored and how it is read: each module owns a kind of record, its key and its form.

pub(crate) mod approval;
pub(crate) mod audit;
pub(crate) mod cidr;
pub(crate) mod cron;
pub(crate) mod ledger;
pub(crate) mod policy_set;
pub(crate) mod policy_store;
pub(crate) mod role;
pub(crate) mod static_role;
pub(crate) mod task;
