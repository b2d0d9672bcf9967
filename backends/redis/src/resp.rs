//! Just enough of Redis's wire protocol (RESP2) for ACL administration: commands as arrays of
//! bulk strings, and the five reply types. A client crate would bring a connection manager,
//! cluster support and a dozen features mayfly does not use; this is ~150 lines.

use std::time::Duration;

use std::sync::Arc;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

/// Bounds on what a server may make mayfly read: the plugin process is shared by every mount,
/// so a hostile or broken target must not make it allocate without end. Past any of them a
/// reply is a protocol error, and the connection is dropped.
/// A line (a simple string, an error, a length): ACL replies' lines are short.
const MAX_LINE: usize = 64 * 1024;
/// A bulk string (one user's rules in `ACL LIST` are a few KiB).
const MAX_LEN: usize = 16 * 1024 * 1024;
/// The items of an array (an `ACL USERS` of a million users fits).
const MAX_ITEMS: usize = 16 * 1024 * 1024;
/// A whole reply, counting each item's bytes and the memory it takes to hold.
const MAX_REPLY: usize = 256 * 1024 * 1024;
/// What holding one reply item costs beyond its bytes.
const ITEM_COST: usize = std::mem::size_of::<Reply>();

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    /// An error reply (`-ERR …`, `-WRONGPASS …`): the command failed, the connection is fine.
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The strings of an array reply (such as `ACL USERS`).
    pub fn strings(self) -> Vec<String> {
        match self {
            Reply::Array(Some(items)) => items
                .into_iter()
                .filter_map(|i| match i {
                    Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(&b).into_owned()),
                    Reply::Simple(s) => Some(s),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Why a command got no reply. The connection must be dropped after any of these.
#[derive(Debug)]
pub enum WireError {
    Io(std::io::Error),
    /// The TLS handshake failed: the node's certificate was refused, or the node does not
    /// speak TLS.
    Tls(std::io::Error),
    Timeout,
    Protocol(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Io(e) => write!(f, "{e}"),
            WireError::Tls(e) => write!(f, "the TLS handshake failed: {e}"),
            WireError::Timeout => f.write_str("no answer in time"),
            WireError::Protocol(m) => write!(f, "unexpected reply: {m}"),
        }
    }
}

impl From<std::io::Error> for WireError {
    fn from(e: std::io::Error) -> Self {
        WireError::Io(e)
    }
}

/// A byte stream to a node: plain TCP, or TLS over it.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// How a connection reaches its nodes over TLS.
#[derive(Clone)]
pub struct Tls {
    pub connector: TlsConnector,
}

impl Tls {
    pub fn new(config: tokio_rustls::rustls::ClientConfig) -> Tls {
        Tls {
            connector: TlsConnector::from(Arc::new(config)),
        }
    }
}

/// One connection to one Redis node.
pub struct Conn {
    stream: BufReader<Box<dyn Stream>>,
    timeout: Duration,
}

impl Conn {
    /// Connects to `address`, over TLS with `tls` (the node's certificate checked for
    /// `name`); the handshake counts against `timeout`.
    pub async fn connect(
        address: &str,
        timeout: Duration,
        tls: Option<(&Tls, ServerName<'static>)>,
    ) -> Result<Conn, WireError> {
        tokio::time::timeout(timeout, async {
            let tcp = TcpStream::connect(address).await?;
            tcp.set_nodelay(true)?;
            let stream: Box<dyn Stream> = match tls {
                None => Box::new(tcp),
                Some((tls, name)) => Box::new(
                    tls.connector
                        .connect(name, tcp)
                        .await
                        .map_err(WireError::Tls)?,
                ),
            };
            Ok(Conn {
                stream: BufReader::new(stream),
                timeout,
            })
        })
        .await
        .map_err(|_| WireError::Timeout)?
    }

    /// Sends one command and reads its reply.
    pub async fn call(&mut self, args: &[&[u8]]) -> Result<Reply, WireError> {
        let mut replies = self.pipeline(&[args.to_vec()]).await?;
        Ok(replies.pop().expect("one reply per command"))
    }

    /// Sends every command at once, then reads one reply for each: one round trip for all.
    pub async fn pipeline(&mut self, commands: &[Vec<&[u8]>]) -> Result<Vec<Reply>, WireError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, async {
            let bytes: Vec<u8> = commands.iter().flat_map(|c| encode(c)).collect();
            self.stream.get_mut().write_all(&bytes).await?;
            let mut replies = Vec::with_capacity(commands.len());
            for _ in commands {
                replies.push(read_reply(&mut self.stream).await?);
            }
            Ok(replies)
        })
        .await
        .map_err(|_| WireError::Timeout)?
    }
}

/// `*N\r\n$len\r\narg\r\n…`: every argument is binary-safe, so nothing needs quoting.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<String, WireError> {
    let mut line = Vec::new();
    let n = (&mut *r)
        .take(MAX_LINE as u64 + 2)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Err(WireError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    if n > MAX_LINE + 1 && !line.ends_with(b"\n") {
        return Err(WireError::Protocol(format!(
            "a line longer than {} KiB",
            MAX_LINE / 1024
        )));
    }
    if !line.ends_with(b"\r\n") {
        return Err(WireError::Protocol("a line not ended by CRLF".into()));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|_| WireError::Protocol("a line that is not UTF-8".into()))
}

fn length(text: &str, max: usize) -> Result<Option<usize>, WireError> {
    let n: i64 = text
        .parse()
        .map_err(|_| WireError::Protocol(format!("a length that is not a number: {text:.20}")))?;
    match n {
        -1 => Ok(None),
        n if n >= 0 && (n as usize) <= max => Ok(Some(n as usize)),
        n => Err(WireError::Protocol(format!("a length out of range: {n}"))),
    }
}

/// Reads one reply; arrays are read iteratively (a stack of partly read arrays), so a hostile
/// server cannot overflow mayfly's stack with deep nesting.
pub(crate) async fn read_reply<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<Reply, WireError> {
    read_reply_within(r, MAX_REPLY).await
}

/// [`read_reply`], with `max` bytes for the whole reply ([`MAX_REPLY`]).
async fn read_reply_within<R: AsyncBufRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Reply, WireError> {
    let mut stack: Vec<(usize, Vec<Reply>)> = Vec::new();
    let mut held = 0usize;
    loop {
        let line = read_line(r).await?;
        held += line.len() + ITEM_COST;
        if held > max {
            return Err(WireError::Protocol(format!(
                "a reply larger than {max} bytes"
            )));
        }
        let (tag, rest) = line.split_at(line.len().min(1));
        let mut reply = match tag {
            "+" => Reply::Simple(rest.to_owned()),
            "-" => Reply::Error(rest.to_owned()),
            ":" => Reply::Int(
                rest.parse()
                    .map_err(|_| WireError::Protocol("an integer that is not a number".into()))?,
            ),
            "$" => match length(rest, MAX_LEN)? {
                None => Reply::Bulk(None),
                Some(n) => {
                    // Grown as the bytes arrive: a length alone (a hostile or broken server's
                    // "$536870911") must not make mayfly allocate it.
                    let mut buf = Vec::with_capacity(n.min(64 * 1024) + 2);
                    (&mut *r).take(n as u64 + 2).read_to_end(&mut buf).await?;
                    if buf.len() < n + 2 {
                        return Err(WireError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                    if !buf.ends_with(b"\r\n") {
                        return Err(WireError::Protocol(
                            "a bulk string not ended by CRLF".into(),
                        ));
                    }
                    buf.truncate(n);
                    held += n;
                    if held > max {
                        return Err(WireError::Protocol(format!(
                            "a reply larger than {max} bytes"
                        )));
                    }
                    Reply::Bulk(Some(buf))
                }
            },
            "*" => match length(rest, MAX_ITEMS)? {
                None => Reply::Array(None),
                Some(0) => Reply::Array(Some(Vec::new())),
                Some(n) => {
                    stack.push((n, Vec::with_capacity(n.min(1024))));
                    continue;
                }
            },
            other => {
                return Err(WireError::Protocol(format!(
                    "a reply of unknown type '{}'",
                    other.escape_default()
                )));
            }
        };
        // Fold the finished reply into the arrays it completes.
        loop {
            let Some((want, items)) = stack.last_mut() else {
                return Ok(reply);
            };
            items.push(reply);
            if items.len() < *want {
                break;
            }
            let (_, items) = stack.pop().expect("not empty");
            reply = Reply::Array(Some(items));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A one-shot server that answers any command with `reply`.
    async fn server(reply: &'static [u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
            s.write_all(reply).await.unwrap();
        });
        addr
    }

    #[test]
    fn commands_are_binary_safe_arrays() {
        assert_eq!(
            encode(&[b"ACL", b"SETUSER", b"a b\r\n"]),
            b"*3\r\n$3\r\nACL\r\n$7\r\nSETUSER\r\n$5\r\na b\r\n\r\n".to_vec()
        );
    }

    #[tokio::test]
    async fn nested_replies_are_read() {
        let addr = server(b"*3\r\n$2\r\nab\r\n*2\r\n:5\r\n+OK\r\n$-1\r\n").await;
        let mut c = Conn::connect(&addr, Duration::from_secs(2), None)
            .await
            .unwrap();
        assert_eq!(
            c.call(&[b"X"]).await.unwrap(),
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"ab".to_vec())),
                Reply::Array(Some(vec![Reply::Int(5), Reply::Simple("OK".into())])),
                Reply::Bulk(None),
            ]))
        );
    }

    #[tokio::test]
    async fn a_server_cannot_make_mayfly_read_without_end() {
        // A line that never ends, and a bulk string past the bound.
        let endless: &'static [u8] = Box::leak(vec![b'+'; 2 * MAX_LINE].into_boxed_slice());
        for reply in [endless, b"$16777217\r\n"] {
            let addr = server(reply).await;
            let mut c = Conn::connect(&addr, Duration::from_secs(2), None)
                .await
                .unwrap();
            let err = c.call(&[b"PING"]).await.unwrap_err();
            assert!(matches!(err, WireError::Protocol(_)), "{err}");
        }
        // A whole reply past its bound (a small one here): many items, each allowed alone.
        let mut big = b"*1000\r\n".to_vec();
        for _ in 0..1000 {
            big.extend_from_slice(b"$10\r\n0123456789\r\n");
        }
        let within = read_reply_within(&mut BufReader::new(&big[..]), 100_000).await;
        assert!(matches!(within, Ok(Reply::Array(Some(ref items))) if items.len() == 1000));
        let past = read_reply_within(&mut BufReader::new(&big[..]), 10_000).await;
        let err = past.unwrap_err();
        assert!(
            err.to_string().contains("a reply larger than 10000 bytes"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn garbage_is_a_protocol_error_not_a_panic() {
        for reply in [
            &b"HTTP/1.1 200 OK\r\n"[..],
            b"$99999999999\r\n",
            b"*-5\r\n",
            b"+no crlf",
        ] {
            let addr = server(reply).await;
            let mut c = Conn::connect(&addr, Duration::from_millis(500), None)
                .await
                .unwrap();
            assert!(c.call(&[b"PING"]).await.is_err(), "{reply:?}");
        }
    }
}
