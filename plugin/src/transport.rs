//! TLS streams under tonic, in both directions. tonic's own TLS settings cannot take custom
//! verifiers, so the server is fed already-accepted TLS connections and the client dials through
//! a connector that does its own handshake.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::sync::{OnceCell, mpsc};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

use crate::mux;

/// A byte stream of either family; the host may announce a unix socket or a TCP address.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// One accepted, handshaken TLS connection from the host.
pub struct TlsConn(tokio_rustls::server::TlsStream<Box<dyn Io>>);

impl Connected for TlsConn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// go-plugin's `PLUGIN_UNIX_SOCKET_DIR` (`constants.go`): where the host wants the plugin's
/// socket, such as a directory shared with a container (Vault's container runtime sets it).
const SOCKET_DIR_VAR: &str = "PLUGIN_UNIX_SOCKET_DIR";
/// go-plugin's `PLUGIN_UNIX_SOCKET_GROUP`: a group (name or id) that may use the socket.
const SOCKET_GROUP_VAR: &str = "PLUGIN_UNIX_SOCKET_GROUP";

/// A fresh socket path in the host's socket directory, or the temporary directory (well under
/// the 108-byte limit either way for the directories hosts use).
pub fn socket_path() -> PathBuf {
    let dir = std::env::var_os(SOCKET_DIR_VAR)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let name = format!(
        "mayfly-{}-{:016x}.sock",
        std::process::id(),
        rand::random::<u64>()
    );
    dir.join(name)
}

/// Gives the socket at `path` to the group the host names, writable by it (mode 0660), as
/// go-plugin's `serverListener_unix` does (`server.go`, `setGroupWritable`); without the
/// variable, the socket stays its owner's alone.
pub fn share_with_group(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let Some(group) = std::env::var(SOCKET_GROUP_VAR)
        .ok()
        .filter(|g| !g.is_empty())
    else {
        return Ok(());
    };
    let gid = group_id(&group)?;
    std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| {
        format!(
            "{SOCKET_GROUP_VAR}: giving {} to group {gid}: {e}",
            path.display()
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(|e| {
        format!(
            "{SOCKET_GROUP_VAR}: making {} group-writable: {e}",
            path.display()
        )
    })
}

/// A group id, or the id of the group of that name in /etc/group (where go-plugin's pure-Go
/// lookup finds groups too).
fn group_id(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let groups = std::fs::read_to_string("/etc/group")
        .map_err(|e| format!("{SOCKET_GROUP_VAR}: reading /etc/group: {e}"))?;
    groups
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let gid = fields.nth(1)?;
            (name == group).then(|| gid.parse::<u32>().ok()).flatten()
        })
        .next()
        .ok_or_else(|| format!("{SOCKET_GROUP_VAR}: no group named '{group}'"))
}

/// How long a TLS handshake with the host may take, either way. The host's own take
/// milliseconds; a peer that connects and stays silent must not hold a task and a socket for
/// ever in a process every mount shares.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The connections the host makes to the plugin, before their TLS handshake.
pub type Raw = mpsc::UnboundedReceiver<Box<dyn Io>>;

/// go-plugin's plain mode: every connection accepted on the socket.
pub fn accepted(listener: UnixListener) -> Raw {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let stream = accept(&listener).await;
            if tx.send(Box::new(stream) as Box<dyn Io>).is_err() {
                return;
            }
        }
    });
    rx
}

/// go-plugin's multiplexed mode: the host's first connection carries a yamux session for the
/// life of the process, and each stream the host opens in it is a connection. The socket takes
/// no other connection (go-plugin's `GRPCServerMuxer` never accepts another). The session is
/// in the cell once the host has connected.
pub fn multiplexed(listener: UnixListener) -> (Raw, Arc<OnceCell<mux::Session>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let cell = Arc::new(OnceCell::new());
    let session_cell = cell.clone();
    tokio::spawn(async move {
        let stream = accept(&listener).await;
        drop(listener);
        let (session, mut streams) = mux::Session::start(stream, yamux::Mode::Server);
        let _ = session_cell.set(session);
        while let Some(stream) = streams.recv().await {
            if tx.send(Box::new(stream) as Box<dyn Io>).is_err() {
                return;
            }
        }
    });
    (rx, cell)
}

async fn accept(listener: &UnixListener) -> UnixStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => return stream,
            Err(e) => {
                // Out of descriptors and the like: back off rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Hands each of the host's connections to tonic once its TLS handshake is done, within
/// `handshake_timeout`. Handshakes run in their own tasks, so one slow peer cannot hold up the
/// others.
pub fn incoming(
    mut raw: Raw,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
) -> ReceiverStream<io::Result<TlsConn>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(stream) = raw.recv().await {
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(TlsConn(tls))).await;
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "TLS handshake with the host failed"),
                    Err(_) => tracing::warn!(
                        waited_ms = handshake_timeout.as_millis() as u64,
                        "a TLS handshake did not finish in time; connection closed"
                    ),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// The channel to the host's services. A call's request body is collected before it is sent,
/// so the message and the end of the stream leave in one HTTP/2 frame. tonic's own streaming
/// body ends with an empty frame of its own, written and read by itself: three writes to the
/// socket per storage call (headers, message, end) instead of two, and one more wake-up of the
/// host's reader.
#[derive(Clone)]
pub struct HostChannel(Channel);

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type CallFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, BoxError>> + Send>>;

impl tower::Service<http::Request<tonic::body::Body>> for HostChannel {
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = CallFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        // The channel that was polled ready makes the call; `self` keeps a fresh clone.
        let ready = self.0.clone();
        let mut channel = std::mem::replace(&mut self.0, ready);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            // A unary call's body is one encoded message, ready at once; a message that cannot
            // be encoded fails the call with tonic's own status.
            let whole = body.collect().await?.to_bytes();
            let body = tonic::body::Body::new(http_body_util::Full::new(whole));
            Ok(channel.call(http::Request::from_parts(parts, body)).await?)
        })
    }
}

/// Makes a fresh byte stream to one of the host's services, once per (re)connection.
pub type Connect =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = io::Result<Box<dyn Io>>> + Send>> + Send + Sync>;

/// Connections to an address the host announced.
pub fn to_address(network: &str, address: &str) -> Connect {
    let (network, address) = (network.to_owned(), address.to_owned());
    Arc::new(move || {
        let (network, address) = (network.clone(), address.clone());
        Box::pin(async move {
            let stream: Box<dyn Io> = match network.as_str() {
                "unix" => Box::new(UnixStream::connect(&address).await?),
                "tcp" => Box::new(TcpStream::connect(&address).await?),
                other => {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!("unknown network '{other}'"),
                    ));
                }
            };
            Ok(stream)
        })
    })
}

/// Dials one of the host's brokered services through `connect`, with mutual TLS, as server
/// name `localhost`.
pub async fn dial(connect: Connect, tls: Arc<rustls::ClientConfig>) -> Result<HostChannel, String> {
    dial_channel(connect, tls).await.map(HostChannel)
}

/// A plain tonic channel through `connect`, with mutual TLS: for streaming calls, which
/// [`HostChannel`] cannot carry.
pub async fn dial_channel(
    connect: Connect,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Channel, String> {
    let connector = TlsConnector::from(tls);
    let connect = tower::service_fn(move |_| {
        let (connect, connector) = (connect.clone(), connector.clone());
        async move {
            let stream = connect().await?;
            let name = ServerName::try_from("localhost").expect("valid name");
            let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, stream))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "the TLS handshake timed out")
                })??;
            Ok::<_, io::Error>(TokioIo::new(tls))
        }
    });
    Endpoint::from_static("http://localhost")
        .connect_with_connector(connect)
        .await
        .map_err(|e| format!("cannot dial the host's broker: {}", with_causes(&e)))
}

/// An error and its causes, `: `-separated: tonic's own message ("transport error") says
/// nothing of what went wrong. A cause some wrapper already repeats is not said twice.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio_stream::StreamExt;

    /// A peer that connects and never speaks is dropped after the handshake timeout, and one
    /// that finishes in time still gets through.
    #[tokio::test]
    async fn a_silent_peer_is_dropped_after_the_handshake_timeout() {
        let path = std::env::temp_dir().join(format!("mayfly-test-{}.sock", rand::random::<u64>()));
        let listener = UnixListener::bind(&path).unwrap();
        let identity = crate::tls::Identity::generate().unwrap();
        let config = crate::tls::server_config(&identity, identity.cert.clone()).unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let mut incoming = incoming(accepted(listener), acceptor, Duration::from_millis(200));
        let mut silent = UnixStream::connect(&path).await.unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "not closed: {read:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(150));
        let nothing = tokio::time::timeout(Duration::from_millis(100), incoming.next()).await;
        assert!(nothing.is_err(), "a silent peer reached tonic");
        let _ = std::fs::remove_file(&path);
    }
}
