//! The host's services, reached through the broker: the mount's storage (implementing the
//! core's `Storage`) and the SystemView.

use std::time::Duration;

use async_trait::async_trait;
use mayfly::storage::{Kv, Storage, StorageError, Transaction};
use secrecy::SecretString;
use tokio::sync::OnceCell;

use crate::proto::pb;
use crate::proto::pb::storage_client::StorageClient;
use crate::proto::pb::system_view_client::SystemViewClient;
use crate::transport::HostChannel;

/// The mount's storage on the host. Storage replies carry application errors in a string field
/// inside a successful gRPC reply; both kinds of failure become `StorageError::Backend`.
pub struct HostStorage {
    client: StorageClient<HostChannel>,
    transactional: OnceCell<bool>,
}

impl HostStorage {
    pub fn new(channel: HostChannel) -> Self {
        HostStorage {
            client: StorageClient::new(channel).max_decoding_message_size(usize::MAX),
            transactional: OnceCell::new(),
        }
    }

    /// Whether the host's storage takes transactions. Only an answer is cached: a failed call
    /// (the host busy, a reconnect) says "no" this once and asks again next time.
    pub async fn is_transactional(&self) -> bool {
        let ask = || async {
            self.client
                .clone()
                .is_transactional(pb::Empty {})
                .await
                .map(|r| r.into_inner().transactional)
        };
        self.transactional
            .get_or_try_init(ask)
            .await
            .copied()
            .unwrap_or(false)
    }
}

fn status(e: tonic::Status) -> StorageError {
    StorageError::Backend(e.message().to_owned())
}

fn check(err: String) -> Result<(), StorageError> {
    if err.is_empty() {
        Ok(())
    } else {
        Err(StorageError::Backend(err))
    }
}

/// The four operations, inside transaction `txn` or outside it when `txn` is empty.
async fn get(
    c: &StorageClient<HostChannel>,
    key: &str,
    txn: &str,
) -> Result<Option<Vec<u8>>, StorageError> {
    let r = c
        .clone()
        .get(pb::StorageGetArgs {
            key: key.into(),
            txn: txn.into(),
        })
        .await
        .map_err(status)?
        .into_inner();
    check(r.err)?;
    Ok(r.entry.map(|e| e.value))
}

async fn put(
    c: &StorageClient<HostChannel>,
    key: &str,
    value: Vec<u8>,
    txn: &str,
) -> Result<(), StorageError> {
    let entry = pb::StorageEntry {
        key: key.into(),
        value,
        seal_wrap: false,
    };
    let r = c
        .clone()
        .put(pb::StoragePutArgs {
            entry: Some(entry),
            txn: txn.into(),
        })
        .await
        .map_err(status)?;
    check(r.into_inner().err)
}

async fn delete(c: &StorageClient<HostChannel>, key: &str, txn: &str) -> Result<(), StorageError> {
    let r = c
        .clone()
        .delete(pb::StorageDeleteArgs {
            key: key.into(),
            txn: txn.into(),
        })
        .await
        .map_err(status)?;
    check(r.into_inner().err)
}

async fn list(
    c: &StorageClient<HostChannel>,
    prefix: &str,
    txn: &str,
) -> Result<Vec<String>, StorageError> {
    let r = c
        .clone()
        .list(pb::StorageListArgs {
            prefix: prefix.into(),
            txn: txn.into(),
        })
        .await
        .map_err(status)?
        .into_inner();
    check(r.err)?;
    Ok(r.keys)
}

#[async_trait]
impl Kv for HostStorage {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        get(&self.client, key, "").await
    }
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        put(&self.client, key, value, "").await
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        delete(&self.client, key, "").await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        list(&self.client, prefix, "").await
    }
}

#[async_trait]
impl Storage for HostStorage {
    async fn begin(&self) -> Result<Option<Box<dyn Transaction>>, StorageError> {
        if !self.is_transactional().await {
            return Ok(None);
        }
        let r = self
            .client
            .clone()
            .begin_tx(pb::Empty {})
            .await
            .map_err(status)?
            .into_inner();
        check(r.err)?;
        Ok(Some(Box::new(HostTx {
            client: self.client.clone(),
            txn: r.txn,
        })))
    }
}

struct HostTx {
    client: StorageClient<HostChannel>,
    txn: String,
}

#[async_trait]
impl Kv for HostTx {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        get(&self.client, key, &self.txn).await
    }
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        put(&self.client, key, value, &self.txn).await
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        delete(&self.client, key, &self.txn).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        list(&self.client, prefix, &self.txn).await
    }
}

#[async_trait]
impl Transaction for HostTx {
    async fn commit(self: Box<Self>) -> Result<(), StorageError> {
        let r = self
            .client
            .clone()
            .commit(pb::StorageCommitTxArgs {
                txn: self.txn.clone(),
            })
            .await
            .map_err(status)?
            .into_inner();
        // The host reports an optimistic-concurrency failure only as text.
        if r.err.contains("conflict") {
            return Err(StorageError::Conflict);
        }
        check(r.err)
    }
    async fn rollback(self: Box<Self>) -> Result<(), StorageError> {
        let r = self
            .client
            .clone()
            .rollback(pb::StorageRollbackTxArgs {
                txn: self.txn.clone(),
            })
            .await
            .map_err(status)?;
        check(r.into_inner().err)
    }
}

/// The host's SystemView: lease limits and environment.
#[derive(Clone)]
pub struct HostSystem {
    client: SystemViewClient<HostChannel>,
}

/// What Initialize reports about the host.
#[derive(Debug)]
pub struct HostFacts {
    pub version: String,
    pub default_lease_ttl: Duration,
    pub max_lease_ttl: Duration,
}

impl HostSystem {
    pub fn new(channel: HostChannel) -> Self {
        HostSystem {
            client: SystemViewClient::new(channel).max_decoding_message_size(usize::MAX),
        }
    }

    pub async fn facts(&self) -> Result<HostFacts, tonic::Status> {
        let mut c = self.client.clone();
        let env = c.plugin_env(pb::Empty {}).await?.into_inner();
        let default = c.default_lease_ttl(pb::Empty {}).await?.into_inner().ttl;
        let max = c.max_lease_ttl(pb::Empty {}).await?.into_inner().ttl;
        Ok(HostFacts {
            version: env
                .plugin_environment
                .map(|e| e.vault_version)
                .unwrap_or_default(),
            default_lease_ttl: nanos(default),
            max_lease_ttl: nanos(max),
        })
    }
}

impl HostSystem {
    /// The host's replication state, a bit field that says whether this node is a standby
    /// ([`mayfly::NodeRole::from_replication_state`]).
    pub async fn replication_state(&self) -> Result<i32, tonic::Status> {
        let reply = self.client.clone().replication_state(pb::Empty {}).await?;
        Ok(reply.into_inner().state)
    }
}

fn nanos(n: i64) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(0))
}

fn unavailable(what: &str, e: tonic::Status) -> mayfly::Error {
    mayfly::Error::Internal(format!("the host did not answer {what}: {}", e.message()))
}

/// The engine's view of the host: the mount's lease limits (which follow `secrets tune`) and
/// the host's password policies.
#[async_trait]
impl mayfly::Host for HostSystem {
    async fn default_lease_ttl(&self) -> Result<Duration, mayfly::Error> {
        let r = self.client.clone().default_lease_ttl(pb::Empty {}).await;
        Ok(nanos(
            r.map_err(|e| unavailable("DefaultLeaseTTL", e))?
                .into_inner()
                .ttl,
        ))
    }

    async fn max_lease_ttl(&self) -> Result<Duration, mayfly::Error> {
        let r = self.client.clone().max_lease_ttl(pb::Empty {}).await;
        Ok(nanos(
            r.map_err(|e| unavailable("MaxLeaseTTL", e))?
                .into_inner()
                .ttl,
        ))
    }

    async fn generate_password(&self, policy: &str) -> Result<SecretString, mayfly::Error> {
        let r = self
            .client
            .clone()
            .generate_password_from_policy(pb::GeneratePasswordFromPolicyRequest {
                policy_name: policy.to_owned(),
            })
            .await
            .map_err(|e| {
                mayfly::Error::bad_request(format!(
                    "field 'password_policy': the host could not generate a password from \
                     policy '{policy}': {}",
                    e.message()
                ))
            })?;
        Ok(SecretString::from(r.into_inner().password))
    }

    async fn identity(&self, entity_id: &str) -> Result<mayfly::Identity, mayfly::Error> {
        let args = || pb::EntityInfoArgs {
            entity_id: entity_id.to_owned(),
        };
        let (mut entity_client, mut groups_client) = (self.client.clone(), self.client.clone());
        let (entity, groups) = tokio::join!(
            entity_client.entity_info(args()),
            groups_client.groups_for_entity(args())
        );
        let entity = entity
            .map_err(|e| unavailable("EntityInfo", e))?
            .into_inner();
        let groups = groups
            .map_err(|e| unavailable("GroupsForEntity", e))?
            .into_inner();
        for err in [&entity.err, &groups.err] {
            if !err.is_empty() {
                return Err(mayfly::Error::Internal(format!(
                    "the host could not look up identity entity '{entity_id}': {err}"
                )));
            }
        }
        let entity = entity.entity.unwrap_or_default();
        Ok(mayfly::Identity {
            id: entity_id.to_owned(),
            name: entity.name,
            metadata: entity.metadata.into_iter().collect(),
            aliases: entity
                .aliases
                .into_iter()
                .map(|a| mayfly::Alias {
                    name: a.name,
                    mount_type: a.mount_type,
                    mount_accessor: a.mount_accessor,
                })
                .collect(),
            groups: groups
                .groups
                .into_iter()
                .map(|g| mayfly::Group {
                    id: g.id,
                    name: g.name,
                    metadata: g.metadata.into_iter().collect(),
                })
                .collect(),
        })
    }
}
