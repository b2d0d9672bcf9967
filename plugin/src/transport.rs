//! TLS streams under tonic, in both directions. tonic's own TLS settings cannot take custom
//! verifiers, so the server is fed already-accepted TLS connections and the client dials through
//! a connector that does its own handshake.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

/// A byte stream of either family; the host may announce a unix socket or a TCP address.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// One accepted, handshaken TLS connection from the host.
pub struct TlsConn(tokio_rustls::server::TlsStream<UnixStream>);

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

/// A fresh socket path in the temporary directory (well under the 108-byte limit).
pub fn socket_path() -> PathBuf {
    let dir = std::env::temp_dir();
    let name = format!(
        "mayfly-{}-{:016x}.sock",
        std::process::id(),
        rand::random::<u64>()
    );
    dir.join(name)
}

/// Accepts connections on `listener` and hands each one to tonic once its TLS handshake is
/// done. Handshakes run in their own tasks, so one slow peer cannot hold up the others.
pub fn incoming(
    listener: UnixListener,
    acceptor: TlsAcceptor,
) -> ReceiverStream<io::Result<TlsConn>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    // Out of descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match acceptor.accept(stream).await {
                    Ok(tls) => {
                        let _ = tx.send(Ok(TlsConn(tls))).await;
                    }
                    Err(e) => tracing::warn!(error = %e, "TLS handshake with the host failed"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Dials the host's broker at `network`/`address` with mutual TLS, as server name `localhost`.
pub async fn dial(
    network: &str,
    address: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Channel, String> {
    let network = network.to_owned();
    let address = address.to_owned();
    let connector = TlsConnector::from(tls);
    let connect = tower::service_fn(move |_| {
        let (network, address, connector) = (network.clone(), address.clone(), connector.clone());
        async move {
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
            let tls = connector
                .connect(
                    ServerName::try_from("localhost").expect("valid name"),
                    stream,
                )
                .await?;
            Ok::<_, io::Error>(TokioIo::new(tls))
        }
    });
    Endpoint::from_static("http://localhost")
        .connect_with_connector(connect)
        .await
        .map_err(|e| format!("cannot dial the host's broker: {e}"))
}
