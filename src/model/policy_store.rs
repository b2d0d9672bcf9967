//! The mount's Cedar policies as stored: one document per name under `policies/`, compiled
//! together into the set the mount decides with (the `policies/` paths are in `paths::policies`).

use serde::{Deserialize, Serialize};

use crate::contract::error::Error;
use crate::contract::host::now;
use crate::contract::storage::{self, Kv};
use crate::model::policy_set::PolicySet;

pub const PREFIX: &str = "policies/";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// Cedar policy text, as written.
    pub policy: String,
    pub updated_at: u64,
}

pub fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

pub async fn load(kv: &dyn Kv, name: &str) -> Result<Option<Stored>, Error> {
    Ok(storage::get_json::<Stored>(kv, &key(name)).await?)
}

/// Stores `text`, already checked, as policy `name`.
pub async fn save(kv: &dyn Kv, name: &str, text: &str) -> Result<(), Error> {
    let stored = Stored {
        policy: text.to_owned(),
        updated_at: now(),
    };
    Ok(storage::put_json(kv, &key(name), &stored).await?)
}

/// Every stored document, as (name, text), read concurrently (a host round trip each).
async fn documents(kv: &dyn Kv) -> Result<Vec<(String, String)>, Error> {
    let names = kv.list(PREFIX).await?;
    let reads = names.iter().map(|name| async move {
        Ok::<_, Error>(load(kv, name).await?.map(|s| (name.clone(), s.policy)))
    });
    let mut out = Vec::new();
    for doc in futures_util::future::try_join_all(reads).await? {
        out.extend(doc);
    }
    Ok(out)
}

/// The mount's policies, compiled from storage (`MountCore::policies` caches this).
pub async fn compile(kv: &dyn Kv) -> Result<PolicySet, Error> {
    PolicySet::compile(documents(kv).await?)
}

/// The policies the mount would have with document `name` set to `text` (already checked).
pub async fn compile_with(kv: &dyn Kv, name: &str, text: &str) -> Result<PolicySet, Error> {
    let mut docs = documents(kv).await?;
    docs.retain(|(n, _)| n != name);
    docs.push((name.to_owned(), text.to_owned()));
    PolicySet::compile(docs)
}
