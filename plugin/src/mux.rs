//! go-plugin's multiplexed broker, which a host asks for with `PLUGIN_MULTIPLEX_GRPC` (Vault
//! does for its container plugins). The host dials the plugin's socket once and runs a yamux
//! session over that one connection (go-plugin `internal/grpcmux/grpc_client_muxer.go` and
//! `grpc_server_muxer.go`): every stream the host opens is a connection to the plugin's own gRPC
//! server, and the plugin reaches a service the host brokers by knocking on the broker stream,
//! then opening a stream of its own (`grpc_broker.go`, `knock` and `muxDial`). TLS runs inside
//! each stream, as on a socket of its own.
//!
//! yamux's wire format is hashicorp/yamux's `spec.md`; the session's end is `Mode::Server` on the
//! plugin (even stream ids) and `Mode::Client` on the host (odd ones).

use std::io;
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

/// One stream of a session, read and written through tokio's traits.
pub type MuxStream = Compat<yamux::Stream>;

type Opened = oneshot::Sender<io::Result<MuxStream>>;

/// A handle on a yamux session that a task of its own drives; clones share the session.
#[derive(Clone)]
pub struct Session {
    opens: mpsc::UnboundedSender<Opened>,
}

impl Session {
    /// Starts a session over `socket`. The streams the peer opens arrive on the receiver; the
    /// session ends when the peer closes it or the socket fails.
    pub fn start<T>(socket: T, mode: yamux::Mode) -> (Session, mpsc::UnboundedReceiver<MuxStream>)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let connection = yamux::Connection::new(socket.compat(), yamux::Config::default(), mode);
        let (opens, open_requests) = mpsc::unbounded_channel();
        let (inbound, streams) = mpsc::unbounded_channel();
        tokio::spawn(drive(connection, open_requests, inbound));
        (Session { opens }, streams)
    }

    /// Opens a stream to the peer.
    pub async fn open(&self) -> io::Result<MuxStream> {
        let (tx, rx) = oneshot::channel();
        self.opens.send(tx).map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the multiplexed session with the host has ended",
    )
}

/// Runs the session: yamux does all its reading and writing inside `poll_next_inbound`, so one
/// task polls it for ever, and opens streams for [`Session::open`] on the way.
async fn drive<T>(
    mut connection: yamux::Connection<Compat<T>>,
    mut open_requests: mpsc::UnboundedReceiver<Opened>,
    inbound: mpsc::UnboundedSender<MuxStream>,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut waiting: Option<Opened> = None;
    std::future::poll_fn(|cx| {
        loop {
            let request = match waiting.take() {
                Some(r) => r,
                None => match open_requests.poll_recv(cx) {
                    Poll::Ready(Some(r)) => r,
                    _ => break,
                },
            };
            match connection.poll_new_outbound(cx) {
                Poll::Ready(opened) => {
                    let _ = request.send(opened.map(|s| s.compat()).map_err(io::Error::other));
                }
                Poll::Pending => {
                    waiting = Some(request);
                    break;
                }
            }
        }
        loop {
            match connection.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    let _ = inbound.send(stream.compat());
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(error = %e, "the multiplexed session with the host failed");
                    return Poll::Ready(());
                }
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
    tracing::debug!("the multiplexed session with the host has ended");
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Both ends of a session over an in-memory pipe: bytes cross each way on streams either side
    /// opens, several at once.
    #[tokio::test]
    async fn streams_opened_by_either_end_carry_bytes_both_ways() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (plugin, mut plugin_inbound) = Session::start(a, yamux::Mode::Server);
        let (host, mut host_inbound) = Session::start(b, yamux::Mode::Client);

        for round in 0..3u8 {
            let mut from_host = host.open().await.unwrap();
            from_host.write_all(&[round; 100_000]).await.unwrap();
            let mut at_plugin = plugin_inbound.recv().await.unwrap();
            let mut got = vec![0; 100_000];
            at_plugin.read_exact(&mut got).await.unwrap();
            assert!(got.iter().all(|b| *b == round));

            let mut from_plugin = plugin.open().await.unwrap();
            from_plugin.write_all(b"knock knock").await.unwrap();
            let mut at_host = host_inbound.recv().await.unwrap();
            let mut got = [0; 11];
            at_host.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"knock knock");
            at_host.write_all(b"who").await.unwrap();
            let mut reply = [0; 3];
            from_plugin.read_exact(&mut reply).await.unwrap();
            assert_eq!(&reply, b"who");
        }
    }

    /// The first frame the plugin's end sends on a stream it opens is what hashicorp/yamux's
    /// `spec.md` asks of a session's server end: version 0, a data or window-update frame with
    /// the SYN flag, and an even stream id.
    #[tokio::test]
    async fn the_plugin_end_opens_even_streams_with_syn_as_hashicorps_spec_says() {
        let (a, mut raw) = tokio::io::duplex(64 * 1024);
        let (plugin, _inbound) = Session::start(a, yamux::Mode::Server);
        let mut stream = plugin.open().await.unwrap();
        stream.write_all(b"hello").await.unwrap();
        stream.flush().await.unwrap();
        // yamux measures round trips with pings (type 2, header only) from the start.
        let mut header = [0u8; 12];
        raw.read_exact(&mut header).await.unwrap();
        while header[1] == 2 {
            assert_eq!(header[0], 0);
            raw.read_exact(&mut header).await.unwrap();
        }
        let (version, kind) = (header[0], header[1]);
        let flags = u16::from_be_bytes([header[2], header[3]]);
        let id = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        assert_eq!(version, 0);
        assert!(kind <= 1, "type {kind} is neither data nor window update");
        assert_eq!(flags & 1, 1, "no SYN on the first frame: flags {flags:#x}");
        assert!(id > 0 && id % 2 == 0, "stream id {id} is not even");
    }

    /// A stream asked of a session whose peer has gone fails with an error, not a hang.
    #[tokio::test]
    async fn opening_on_an_ended_session_fails() {
        let (a, b) = tokio::io::duplex(1024);
        let (plugin, _inbound) = Session::start(a, yamux::Mode::Server);
        drop(b);
        let mut last = Ok(());
        for _ in 0..50 {
            match plugin.open().await {
                Ok(mut s) => last = s.write_all(b"x").await.and(s.flush().await),
                Err(e) => {
                    last = Err(e);
                    break;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(last.is_err());
    }
}
