//! Loopback stand-ins around real HTTP services: a TCP proxy that can be taken down (the
//! service unreachable at revocation) and a stub service that answers badly on purpose.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A TCP proxy on a loopback port to `upstream`. While down, connections are refused and the
/// open ones are cut.
pub struct Proxy {
    pub port: u16,
    upstream: String,
    running: Option<Running>,
}

/// A proxy that is up: its stop flag, its open sockets, its accepting thread.
type Running = (Arc<AtomicBool>, Arc<Mutex<Vec<TcpStream>>>, JoinHandle<()>);

impl Proxy {
    pub fn start(upstream: &str) -> Proxy {
        let mut p = Proxy {
            port: crate::free_port(),
            upstream: upstream.to_owned(),
            running: None,
        };
        p.up();
        p
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn up(&mut self) {
        if self.running.is_some() {
            return;
        }
        let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("the proxy's port");
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (s, c, upstream) = (stop.clone(), conns.clone(), self.upstream.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let mut list = c.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        self.running = Some((stop, conns, thread));
    }

    pub fn down(&mut self) {
        if let Some((stop, conns, thread)) = self.running.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = thread.join();
            for c in conns.lock().unwrap().drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.down();
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// One answer of the stub: status, content type, body.
pub type Answer = (u16, &'static str, String);

/// An HTTP service on loopback that answers each request with `answer(method, path, body)` and
/// records every request line it was sent.
pub struct Stub {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl Stub {
    pub fn start(answer: fn(&str, &str, &str) -> Answer) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = seen.clone();
                std::thread::spawn(move || serve(stream, answer, &seen));
            }
        });
        Stub { port, requests }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The request lines seen so far (`POST /keys`).
    pub fn seen(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// Serves the requests of one connection (keep-alive) until the client closes it.
fn serve(mut stream: TcpStream, answer: fn(&str, &str, &str) -> Answer, seen: &Mutex<Vec<String>>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned();
        buf.drain(..head_end + len);
        let mut words = head.split_whitespace();
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        seen.lock().unwrap().push(format!("{method} {path}"));
        let (status, content_type, text) = answer(method, path, &body);
        let reply = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if stream.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// A service that stopped answering: it accepts every connection on `port` and holds it open
/// without reading or writing, until dropped.
pub struct BlackHole {
    stop: Arc<AtomicBool>,
}

impl BlackHole {
    pub fn start(port: u16) -> BlackHole {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("the black hole's port");
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => held.push(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        BlackHole { stop }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
