//! go-plugin's multiplexed broker, which HashiCorp Vault asks of its container plugins
//! (`PLUGIN_MULTIPLEX_GRPC=true`), tested against the real plugin binary. No Go toolchain and no
//! Vault binary can be had here, so the host is written in this file after go-plugin's own host
//! side (hashicorp/go-plugin at dd3617a):
//! - `client.go`: the seventh field of the handshake line says whether the plugin multiplexes;
//!   `getGRPCMuxer` and `dialer`: the host dials the plugin's socket once
//!   (`internal/grpcmux/grpc_client_muxer.go`, a yamux client session) and every gRPC
//!   connection to the plugin is a stream it opens in that session, with TLS inside;
//! - `grpc_broker.go`: for each service the host brokers (`AcceptAndServe`) there is no
//!   announced address; the plugin knocks for the id on the broker stream, the host
//!   acknowledges (`listenForKnocks`, with an error when it has no listener for the id:
//!   `GRPCClientMuxer.AcceptKnock`), and the next stream the plugin opens is that service's
//!   (`blocked_client_listener.go`).
//!
//! The host reuses the plugin's own yamux session, TLS and transport code: what is under test
//! is the protocol around them (the handshake, which connection carries what, the knocks).

#[allow(dead_code)]
#[path = "../src/mux.rs"]
mod mux;
#[allow(dead_code)]
#[path = "../src/proto.rs"]
mod proto;
#[allow(dead_code)]
#[path = "../src/tls.rs"]
mod tls;
#[allow(dead_code)]
#[path = "../src/transport.rs"]
mod transport;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use proto::pb;
use proto::plugin::ConnInfo;
use proto::plugin::conn_info::Knock;

/// A mount's storage on the host: Vault's has no transactions.
#[derive(Clone, Default)]
struct MemoryStorage(Arc<Mutex<BTreeMap<String, Vec<u8>>>>);

impl MemoryStorage {
    fn keys(&self) -> Vec<String> {
        self.0.lock().unwrap().keys().cloned().collect()
    }
}

#[tonic::async_trait]
impl pb::storage_server::Storage for MemoryStorage {
    async fn list(
        &self,
        r: Request<pb::StorageListArgs>,
    ) -> Result<Response<pb::StorageListReply>, Status> {
        let prefix = r.into_inner().prefix;
        let mut keys: Vec<String> = Vec::new();
        for key in self.0.lock().unwrap().keys() {
            if let Some(rest) = key.strip_prefix(&prefix) {
                let entry = match rest.find('/') {
                    Some(i) => rest[..=i].to_owned(),
                    None => rest.to_owned(),
                };
                if keys.last() != Some(&entry) {
                    keys.push(entry);
                }
            }
        }
        keys.dedup();
        Ok(Response::new(pb::StorageListReply {
            keys,
            err: String::new(),
        }))
    }
    async fn get(
        &self,
        r: Request<pb::StorageGetArgs>,
    ) -> Result<Response<pb::StorageGetReply>, Status> {
        let key = r.into_inner().key;
        let entry = self
            .0
            .lock()
            .unwrap()
            .get(&key)
            .map(|value| pb::StorageEntry {
                key,
                value: value.clone(),
                seal_wrap: false,
            });
        Ok(Response::new(pb::StorageGetReply {
            entry,
            err: String::new(),
        }))
    }
    async fn put(
        &self,
        r: Request<pb::StoragePutArgs>,
    ) -> Result<Response<pb::StoragePutReply>, Status> {
        let entry = r.into_inner().entry.unwrap_or_default();
        self.0.lock().unwrap().insert(entry.key, entry.value);
        Ok(Response::new(pb::StoragePutReply::default()))
    }
    async fn delete(
        &self,
        r: Request<pb::StorageDeleteArgs>,
    ) -> Result<Response<pb::StorageDeleteReply>, Status> {
        self.0.lock().unwrap().remove(&r.into_inner().key);
        Ok(Response::new(pb::StorageDeleteReply::default()))
    }
    async fn is_transactional(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::StorageIsTransactionalReply>, Status> {
        Ok(Response::new(pb::StorageIsTransactionalReply {
            transactional: false,
        }))
    }
    async fn begin_read_only_tx(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::StorageBeginTxReply>, Status> {
        Err(Status::unimplemented("no transactions"))
    }
    async fn begin_tx(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::StorageBeginTxReply>, Status> {
        Err(Status::unimplemented("no transactions"))
    }
    async fn commit(
        &self,
        _: Request<pb::StorageCommitTxArgs>,
    ) -> Result<Response<pb::StorageCommitTxReply>, Status> {
        Err(Status::unimplemented("no transactions"))
    }
    async fn rollback(
        &self,
        _: Request<pb::StorageRollbackTxArgs>,
    ) -> Result<Response<pb::StorageRollbackTxReply>, Status> {
        Err(Status::unimplemented("no transactions"))
    }
}

/// The host's SystemView, as a Vault 1.21 active node answers it.
struct System;

const HOUR_NANOS: i64 = 3_600_000_000_000;

#[tonic::async_trait]
impl pb::system_view_server::SystemView for System {
    async fn default_lease_ttl(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::TtlReply>, Status> {
        Ok(Response::new(pb::TtlReply {
            ttl: 768 * HOUR_NANOS,
        }))
    }
    async fn max_lease_ttl(&self, _: Request<pb::Empty>) -> Result<Response<pb::TtlReply>, Status> {
        Ok(Response::new(pb::TtlReply {
            ttl: 768 * HOUR_NANOS,
        }))
    }
    async fn tainted(&self, _: Request<pb::Empty>) -> Result<Response<pb::TaintedReply>, Status> {
        Ok(Response::new(pb::TaintedReply { tainted: false }))
    }
    async fn entity_info(
        &self,
        _: Request<pb::EntityInfoArgs>,
    ) -> Result<Response<pb::EntityInfoReply>, Status> {
        Ok(Response::new(pb::EntityInfoReply::default()))
    }
    async fn plugin_env(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::PluginEnvReply>, Status> {
        Ok(Response::new(pb::PluginEnvReply {
            plugin_environment: Some(proto::logical::PluginEnvironment {
                vault_version: "1.21.0".into(),
                ..Default::default()
            }),
            err: String::new(),
        }))
    }
    async fn groups_for_entity(
        &self,
        _: Request<pb::EntityInfoArgs>,
    ) -> Result<Response<pb::GroupsForEntityReply>, Status> {
        Ok(Response::new(pb::GroupsForEntityReply::default()))
    }
    async fn generate_password_from_policy(
        &self,
        _: Request<pb::GeneratePasswordFromPolicyRequest>,
    ) -> Result<Response<pb::GeneratePasswordFromPolicyReply>, Status> {
        Err(Status::unimplemented("no password policies on this host"))
    }
    async fn replication_state(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::ReplicationStateReply>, Status> {
        Ok(Response::new(pb::ReplicationStateReply { state: 0 }))
    }
}

/// The services the host brokers, by id: where the stream for each one goes once its knock is
/// acknowledged (`AcceptAndServe` on a multiplexed broker).
type Listeners = Arc<Mutex<HashMap<u32, mpsc::UnboundedSender<Box<dyn transport::Io>>>>>;

/// What the host saw on its broker stream.
#[derive(Default)]
struct Seen {
    knocks: AtomicUsize,
    refused: AtomicUsize,
    streams: AtomicUsize,
}

struct Host {
    plugin: Child,
    log: PathBuf,
    handshake: String,
    backend: pb::backend_client::BackendClient<tonic::transport::Channel>,
    controller:
        proto::plugin::grpc_controller_client::GrpcControllerClient<tonic::transport::Channel>,
    listeners: Listeners,
    seen: Arc<Seen>,
    identity: Arc<tls::Identity>,
    plugin_cert: rustls::pki_types::CertificateDer<'static>,
    _to_plugin: mpsc::Sender<ConnInfo>,
}

impl Host {
    /// Starts the plugin as Vault's container runtime would and connects to it.
    async fn start(dir: &std::path::Path) -> Host {
        let identity = Arc::new(tls::Identity::generate().unwrap());
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64::engine::general_purpose::STANDARD.encode(identity.cert.as_ref())
        );
        let log = dir.join("plugin.log");
        let mut plugin = Command::new(env!("CARGO_BIN_EXE_mayfly"))
            .env_clear()
            .env(
                "VAULT_BACKEND_PLUGIN",
                "6669da05-b1c8-4f49-97d9-c8e5bed98e20",
            )
            .env("PLUGIN_PROTOCOL_VERSIONS", "5")
            .env("PLUGIN_CLIENT_CERT", pem)
            .env("PLUGIN_MULTIPLEX_GRPC", "true")
            .env("PLUGIN_UNIX_SOCKET_DIR", dir)
            .env("VAULT_VERSION", "1.21.0")
            .env("MAYFLY_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting the plugin");
        let mut handshake = String::new();
        BufReader::new(plugin.stdout.take().unwrap())
            .read_line(&mut handshake)
            .unwrap();
        let handshake = handshake.trim().to_owned();
        let fields: Vec<&str> = handshake.split('|').collect();
        assert_eq!(fields.len(), 7, "{handshake}");
        assert_eq!(
            fields[6], "true",
            "the plugin does not offer multiplexing: {handshake}"
        );
        assert_eq!((fields[2], fields[4]), ("unix", "grpc"), "{handshake}");
        let plugin_cert = rustls::pki_types::CertificateDer::from(
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(fields[5])
                .unwrap(),
        );

        // The one connection, and the yamux session over it (`NewGRPCClientMuxer`).
        let socket = UnixStream::connect(fields[3]).await.unwrap();
        let (session, mut from_plugin) = mux::Session::start(socket, yamux::Mode::Client);

        // The main gRPC connection is a stream the host opens (`Client.dialer`).
        let client_tls = Arc::new(tls::client_config(&identity, plugin_cert.clone()).unwrap());
        let opener = session.clone();
        let connect: transport::Connect = Arc::new(move || {
            let opener = opener.clone();
            Box::pin(async move { Ok(Box::new(opener.open().await?) as Box<dyn transport::Io>) })
        });
        let channel = transport::dial_channel(connect, client_tls).await.unwrap();

        // The broker stream (`GRPCBroker.Run` and `gRPCBrokerClientImpl.StartStream`): the host
        // answers knocks, and hands the plugin's next stream to the service it acknowledged.
        let (to_plugin, outbound) = mpsc::channel::<ConnInfo>(16);
        let mut inbound = proto::plugin::grpc_broker_client::GrpcBrokerClient::new(channel.clone())
            .start_stream(ReceiverStream::new(outbound))
            .await
            .unwrap()
            .into_inner();
        let listeners: Listeners = Arc::default();
        let seen = Arc::new(Seen::default());
        let (acks, brokered) = (to_plugin.clone(), listeners.clone());
        let counts = seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                if !msg.knock.is_some_and(|k| k.knock && !k.ack) {
                    continue;
                }
                counts.knocks.fetch_add(1, Ordering::SeqCst);
                let id = msg.service_id;
                let listener = brokered.lock().unwrap().get(&id).cloned();
                let error = match &listener {
                    Some(_) => String::new(),
                    None => {
                        counts.refused.fetch_add(1, Ordering::SeqCst);
                        format!("no listener for id {id}")
                    }
                };
                let ack = ConnInfo {
                    service_id: id,
                    knock: Some(Knock {
                        knock: true,
                        ack: true,
                        error,
                    }),
                    ..ConnInfo::default()
                };
                if acks.send(ack).await.is_err() {
                    return;
                }
                if let Some(listener) = listener {
                    let Some(stream) = from_plugin.recv().await else {
                        return;
                    };
                    counts.streams.fetch_add(1, Ordering::SeqCst);
                    let _ = listener.send(Box::new(stream));
                }
            }
        });

        Host {
            plugin,
            log,
            handshake,
            backend: pb::backend_client::BackendClient::new(channel.clone()),
            controller: proto::plugin::grpc_controller_client::GrpcControllerClient::new(channel),
            listeners,
            seen,
            identity,
            plugin_cert,
            _to_plugin: to_plugin,
        }
    }

    /// `AcceptAndServe(id)`: Storage and SystemView for one mount, served on whatever stream the
    /// plugin opens after its knock for `id`.
    fn serve_mount(&self, id: u32) -> MemoryStorage {
        let storage = MemoryStorage::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let server_tls = tls::server_config(&self.identity, self.plugin_cert.clone()).unwrap();
        let incoming = transport::incoming(
            rx,
            tokio_rustls::TlsAcceptor::from(Arc::new(server_tls)),
            transport::HANDSHAKE_TIMEOUT,
        );
        let server = tonic::transport::Server::builder()
            .add_service(pb::storage_server::StorageServer::new(storage.clone()))
            .add_service(pb::system_view_server::SystemViewServer::new(System))
            .serve_with_incoming(incoming);
        tokio::spawn(server);
        self.listeners.lock().unwrap().insert(id, tx);
        storage
    }

    async fn setup(&self, mount: &str, broker_id: u32) -> String {
        let mut r = Request::new(pb::SetupArgs {
            broker_id,
            config: HashMap::new(),
            backend_uuid: format!("uuid-{mount}"),
        });
        r.metadata_mut()
            .insert("multiplex_id", mount.parse().unwrap());
        self.backend
            .clone()
            .setup(r)
            .await
            .unwrap()
            .into_inner()
            .err
    }

    async fn initialize(&self, mount: &str) {
        let mut r = Request::new(pb::InitializeArgs {});
        r.metadata_mut()
            .insert("multiplex_id", mount.parse().unwrap());
        let reply = self
            .backend
            .clone()
            .initialize(r)
            .await
            .unwrap()
            .into_inner();
        assert!(reply.err.is_none(), "initialize: {:?}", reply.err);
    }

    async fn request(
        &self,
        mount: &str,
        operation: &str,
        path: &str,
        data: serde_json::Value,
    ) -> pb::HandleRequestReply {
        let mut r = Request::new(pb::HandleRequestArgs {
            storage_id: 0,
            request: Some(pb::Request {
                id: format!("req-{path}"),
                operation: operation.into(),
                path: path.into(),
                data: data.to_string(),
                mount_point: format!("{mount}/"),
                mount_type: "mayfly".into(),
                ..pb::Request::default()
            }),
        });
        r.metadata_mut()
            .insert("multiplex_id", mount.parse().unwrap());
        self.backend
            .clone()
            .handle_request(r)
            .await
            .unwrap()
            .into_inner()
    }

    fn plugin_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn scratch() -> PathBuf {
    // Short: a unix socket's path must stay under 108 bytes.
    let dir = std::env::temp_dir().join(format!("mfmux-{:08x}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_mounts_reach_their_own_storage_through_knocks_on_one_multiplexed_connection() {
    let dir = scratch();
    let mut host = Host::start(&dir).await;

    // The plugin's socket is where the host asked for it.
    let address = host.handshake.split('|').nth(3).unwrap().to_owned();
    assert!(address.starts_with(dir.to_str().unwrap()), "{address}");

    // Mount one: the host listens before Setup.
    let first = host.serve_mount(1);
    let err = host.setup("mount-one", 1).await;
    assert!(err.is_empty(), "setup: {err}\n{}", host.plugin_log());
    host.initialize("mount-one").await;

    // Mount two: Setup outruns the host's listener (go-plugin registers it in a goroutine of its
    // own). The host refuses the early knocks; the plugin knocks again until it is let in.
    let setup_two = {
        let backend = host.backend.clone();
        tokio::spawn(async move {
            let mut r = Request::new(pb::SetupArgs {
                broker_id: 2,
                config: HashMap::new(),
                backend_uuid: "uuid-mount-two".into(),
            });
            r.metadata_mut()
                .insert("multiplex_id", "mount-two".parse().unwrap());
            backend.clone().setup(r).await.unwrap().into_inner().err
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = host.serve_mount(2);
    let err = setup_two.await.unwrap();
    assert!(err.is_empty(), "setup: {err}\n{}", host.plugin_log());
    assert!(
        host.seen.refused.load(Ordering::SeqCst) >= 1,
        "the early knock was not refused"
    );
    host.initialize("mount-two").await;

    // Every stream the plugin opened followed an acknowledged knock.
    let (knocks, refused, streams) = (
        host.seen.knocks.load(Ordering::SeqCst),
        host.seen.refused.load(Ordering::SeqCst),
        host.seen.streams.load(Ordering::SeqCst),
    );
    assert_eq!(knocks - refused, streams);
    assert_eq!(streams, 2);

    // A connection written through mount one lands in mount one's storage only, and reads back.
    let write = host
        .request(
            "mount-one",
            "update",
            "config/shop",
            serde_json::json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:1/shop",
                "username": "admin",
                "password": "not-on-this-wire-in-clear",
                "verify_connection": false,
                "allowed_roles": "*",
            }),
        )
        .await;
    assert!(write.err.is_none(), "write: {:?}", write.err);
    let read = host
        .request("mount-one", "read", "config/shop", serde_json::json!({}))
        .await;
    let data = read.response.expect("a reply").data;
    assert!(data.contains("127.0.0.1:1/shop"), "{data}");
    assert!(!data.contains("not-on-this-wire-in-clear"), "{data}");
    assert!(
        first.keys().iter().any(|k| k.contains("shop")),
        "{:?}",
        first.keys()
    );
    assert!(
        !second.keys().iter().any(|k| k.contains("shop")),
        "{:?}",
        second.keys()
    );
    let listed = host
        .request("mount-two", "list", "config/", serde_json::json!({}))
        .await;
    let listed = listed.response.map(|r| r.data).unwrap_or_default();
    assert!(!listed.contains("shop"), "{listed}");

    // The host asks the plugin to exit, and it does.
    host.controller
        .clone()
        .shutdown(proto::plugin::Empty {})
        .await
        .unwrap();
    let mut waited = Duration::ZERO;
    let status = loop {
        if let Some(status) = host.plugin.try_wait().unwrap() {
            break status;
        }
        assert!(waited < Duration::from_secs(10), "the plugin did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    };
    assert!(status.success(), "{status}\n{}", host.plugin_log());
    let _ = std::fs::remove_dir_all(&dir);
}
