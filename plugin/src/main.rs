//! The mayfly binary: what OpenBao or Vault starts as an external secrets plugin (go-plugin v5).
//! The wire protocol and its traps are described in shared/docs/openbao-plugin-protocol.md.

mod backend_service;
mod broker;
mod convert;
#[cfg(test)]
mod fuzz;
mod host;
mod lifecycle;
mod logging;
mod mux;
mod proto;
mod tls;
mod transport;

use std::io::Write;
use std::sync::Arc;

use mayfly::Backends;
use tokio::net::UnixListener;
use tonic::{Request, Response, Status};

use crate::proto::{logical, multiplexing, plugin};

/// The version this build is, as semver with a leading `v`.
pub const VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));
/// Overrides the version reported to the host, for an operator who registers a build under a
/// version of their own (the host refuses a `-version` that differs from what the plugin
/// reports). Set through the catalog entry's `env`.
const VERSION_VAR: &str = "MAYFLY_PLUGIN_VERSION";

/// The version reported to the host: [`VERSION_VAR`] when it is set to a semver with a
/// leading `v`, else [`VERSION`].
pub(crate) fn reported_version() -> String {
    match std::env::var(VERSION_VAR) {
        Ok(v) if is_semver(&v) => v,
        Ok(v) => {
            tracing::warn!(value = %v, "{VERSION_VAR} is not a version like v1.2.3; reporting {VERSION}");
            VERSION.to_owned()
        }
        Err(_) => VERSION.to_owned(),
    }
}

/// `vMAJOR.MINOR.PATCH`, optionally followed by `-pre-release` and `+build` parts.
fn is_semver(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let core = rest.split(['-', '+']).next().unwrap_or("");
    let numbers: Vec<&str> = core.split('.').collect();
    numbers.len() == 3
        && numbers
            .iter()
            .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        && rest[core.len()..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '.'))
}

const MAGIC_COOKIE_KEY: &str = "VAULT_BACKEND_PLUGIN";
/// go-plugin's `envMultiplexGRPC` (`constants.go`).
const MULTIPLEX_VAR: &str = "PLUGIN_MULTIPLEX_GRPC";
const MAGIC_COOKIE_VALUE: &str = "6669da05-b1c8-4f49-97d9-c8e5bed98e20";
const DATABASE_COOKIE_KEY: &str = "VAULT_DATABASE_PLUGIN";

/// Whether the host names `PLUGIN_MULTIPLEX_GRPC` at all, to any value.
fn multiplex_named() -> bool {
    std::env::var_os(MULTIPLEX_VAR).is_some_and(|v| !v.is_empty())
}

/// Whether the host asks for the multiplexed broker: go-plugin reads the value with Go's
/// `strconv.ParseBool`.
fn multiplex_asked() -> bool {
    matches!(
        std::env::var(MULTIPLEX_VAR).as_deref(),
        Ok("1" | "t" | "T" | "true" | "TRUE" | "True")
    )
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!("mayfly {VERSION}");
        return;
    }
    // The host probes unknown binaries as a database plugin and as a v3/v4 backend before v5.
    // Neither is mayfly: exit quietly and non-zero so the host moves on.
    if std::env::var_os(DATABASE_COOKIE_KEY).is_some() {
        std::process::exit(1);
    }
    if std::env::var(MAGIC_COOKIE_KEY).as_deref() != Ok(MAGIC_COOKIE_VALUE) {
        eprintln!("{}", lifecycle::STARTED_BY_HAND);
        std::process::exit(1);
    }
    let versions = std::env::var("PLUGIN_PROTOCOL_VERSIONS").unwrap_or_default();
    if !versions.split(',').any(|v| v.trim() == "5") {
        std::process::exit(1);
    }
    lifecycle::ignore_sigint();
    logging::init();

    if let Err(e) = runtime().block_on(serve()) {
        tracing::error!(error = %e, "mayfly could not start");
        std::process::exit(1);
    }
}

/// The threads that run mayfly's work, from `MAYFLY_THREADS` (default 1).
const THREADS_VAR: &str = "MAYFLY_THREADS";
const MAX_THREADS: usize = 64;

/// One thread unless `MAYFLY_THREADS` asks for more. Every request is a few round trips to the
/// server, the storage and a target, with little work in between: on one thread a reply wakes
/// the task waiting for it where it is, while a pool of threads passes most of them from one
/// thread to another: 10-15 % more of mayfly's CPU per issued credential, measured with two
/// threads. More threads pay off only when one core is not enough for mayfly.
fn runtime() -> tokio::runtime::Runtime {
    let threads = match std::env::var(THREADS_VAR) {
        Err(_) => 1,
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_THREADS).contains(&n) => n,
            _ => {
                tracing::warn!(value = %v, "{THREADS_VAR} must be a whole number from 1 to \
                    {MAX_THREADS}; running on one thread");
                1
            }
        },
    };
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder.enable_all().build().expect("tokio runtime")
}

fn backends() -> Backends {
    Backends::new(vec![
        Arc::new(mayfly_sql::Postgres),
        Arc::new(mayfly_sql::MySql),
        Arc::new(mayfly_redis::Redis),
        Arc::new(mayfly_aws::Aws),
        Arc::new(mayfly_http::Http),
        Arc::new(mayfly_http::RabbitMq),
    ])
}

async fn serve() -> Result<(), String> {
    let host_pem = std::env::var("PLUGIN_CLIENT_CERT")
        .map_err(|_| "PLUGIN_CLIENT_CERT is not set: the host must run with AutoMTLS".to_owned())?;
    let host_cert = tls::der_from_pem(&host_pem).map_err(|e| format!("PLUGIN_CLIENT_CERT: {e}"))?;
    let identity =
        tls::Identity::generate().map_err(|e| format!("generating the TLS identity: {e}"))?;
    let server_tls = tls::server_config(&identity, host_cert.clone()).map_err(|e| e.to_string())?;
    let client_tls = tls::client_config(&identity, host_cert).map_err(|e| e.to_string())?;

    let path = transport::socket_path();
    let listener =
        UnixListener::bind(&path).map_err(|e| format!("binding {}: {e}", path.display()))?;
    transport::share_with_group(&path)?;
    let multiplex = multiplex_asked();
    let (raw, session) = if multiplex {
        let (raw, session) = transport::multiplexed(listener);
        (raw, Some(session))
    } else {
        (transport::accepted(listener), None)
    };
    let incoming = transport::incoming(
        raw,
        tokio_rustls::TlsAcceptor::from(Arc::new(server_tls)),
        transport::HANDSHAKE_TIMEOUT,
    );

    let broker = broker::Broker::new(session);
    let backend =
        backend_service::BackendService::new(broker.clone(), Arc::new(client_tls), backends());
    lifecycle::watch_startup(backend.setup_seen.clone());
    lifecycle::watch_parent();
    lifecycle::exit_on_sigterm();

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("plugin", tonic_health::ServingStatus::Serving)
        .await;

    let server = tonic::transport::Server::builder()
        .add_service(
            proto::pb::backend_server::BackendServer::new(backend)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(plugin::grpc_broker_server::GrpcBrokerServer::new(
            broker::BrokerService(broker),
        ))
        .add_service(plugin::grpc_controller_server::GrpcControllerServer::new(
            Controller,
        ))
        .add_service(logical::plugin_version_server::PluginVersionServer::new(
            Version,
        ))
        .add_service(
            multiplexing::plugin_multiplexing_server::PluginMultiplexingServer::new(Multiplexing),
        )
        .add_service(health_service)
        .serve_with_incoming(incoming);

    // Only now that the socket is listening may the host be told where it is. A host that
    // sets `PLUGIN_MULTIPLEX_GRPC` at all reads a seventh field saying whether the plugin has
    // the multiplexed broker (go-plugin's `server.go`); mayfly has it.
    let line = format!(
        "1|5|unix|{}|grpc|{}{}\n",
        path.display(),
        identity.handshake_field(),
        if multiplex_named() { "|true" } else { "" }
    );
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(line.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| e.to_string())?;
    drop(stdout);
    lifecycle::silence_stdout();
    tracing::debug!(socket = %path.display(), "serving");

    let result = server.await.map_err(|e| e.to_string());
    let _ = std::fs::remove_file(&path);
    result
}

/// `plugin.GRPCController`: the host asks us to exit.
struct Controller;

#[tonic::async_trait]
impl plugin::grpc_controller_server::GrpcController for Controller {
    async fn shutdown(&self, _: Request<plugin::Empty>) -> Result<Response<plugin::Empty>, Status> {
        tracing::info!("shutdown requested by the host");
        lifecycle::exit_soon();
        Ok(Response::new(plugin::Empty {}))
    }
}

/// `logical.PluginVersion`: the version the catalog records at registration.
struct Version;

#[tonic::async_trait]
impl logical::plugin_version_server::PluginVersion for Version {
    async fn version(
        &self,
        _: Request<logical::Empty>,
    ) -> Result<Response<logical::VersionReply>, Status> {
        Ok(Response::new(logical::VersionReply {
            plugin_version: reported_version(),
        }))
    }
}

/// One process serves every mount of the catalog entry; state is keyed by multiplex id.
struct Multiplexing;

#[tonic::async_trait]
impl multiplexing::plugin_multiplexing_server::PluginMultiplexing for Multiplexing {
    async fn multiplexing_support(
        &self,
        _: Request<multiplexing::MultiplexingSupportRequest>,
    ) -> Result<Response<multiplexing::MultiplexingSupportResponse>, Status> {
        Ok(Response::new(multiplexing::MultiplexingSupportResponse {
            supported: true,
        }))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_semver_with_a_leading_v_may_be_reported() {
        for ok in [
            "v0.1.0",
            "v1.22.333",
            "v0.2.0-rc.1",
            "v0.2.0+corp.7",
            "v1.0.0-a+b",
        ] {
            assert!(super::is_semver(ok), "{ok}");
        }
        for bad in [
            "0.1.0", "v1.2", "v1.2.3.4", "v1..3", "va.b.c", "v1.2.3 ", "v1.2.3/x", "",
        ] {
            assert!(!super::is_semver(bad), "{bad}");
        }
    }
}
