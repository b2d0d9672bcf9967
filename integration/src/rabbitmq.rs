//! The machine's RabbitMQ: its management API as the administrator (guest, which RabbitMQ
//! allows from loopback only), and a minimal AMQP 0-9-1 client that logs in and holds a
//! connection open, to prove that issued credentials work and that revocation ends them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const MANAGEMENT: &str = "http://127.0.0.1:15672";
pub const AMQP: &str = "127.0.0.1:5672";
pub const ADMIN: (&str, &str) = ("guest", "guest");

/// A management API call as the administrator: status and JSON body (Null when none).
pub fn management(method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    use base64::Engine;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", ADMIN.0, ADMIN.1))
    );
    let url = format!("{MANAGEMENT}{path}");
    let resp = match body {
        Some(b) => agent.run(
            ureq::http::Request::builder()
                .method(method)
                .uri(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .body(b.to_string())
                .unwrap(),
        ),
        None => agent.run(
            ureq::http::Request::builder()
                .method(method)
                .uri(&url)
                .header("Authorization", &auth)
                .body(())
                .unwrap(),
        ),
    }
    .unwrap_or_else(|e| panic!("RabbitMQ's management API at {MANAGEMENT}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.into_body().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub fn user_exists(name: &str) -> bool {
    let path = format!(
        "/api/users/{}",
        percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
    );
    management("GET", &path, None).0 == 200
}

/// The users whose name starts with `prefix`.
pub fn users_like(prefix: &str) -> Vec<String> {
    let (_, users) = management("GET", "/api/users", None);
    users
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|u| u["name"].as_str())
        .filter(|n| n.starts_with(prefix))
        .map(String::from)
        .collect()
}

/// Creates a user by hand (an orphan, as a crash would leave one).
pub fn create_user(name: &str, password: &str) {
    let (status, body) = management(
        "PUT",
        &format!("/api/users/{name}"),
        Some(&serde_json::json!({"password": password, "tags": ""})),
    );
    assert!(status == 201 || status == 204, "{status} {body}");
}

/// An open AMQP connection.
pub struct Amqp {
    stream: TcpStream,
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind, 0, 0];
    f.extend((payload.len() as u32).to_be_bytes());
    f.extend(payload);
    f.push(0xCE);
    f
}

fn method(class: u16, id: u16, args: &[u8]) -> Vec<u8> {
    let mut p = class.to_be_bytes().to_vec();
    p.extend(id.to_be_bytes());
    p.extend(args);
    frame(1, &p)
}

fn short_str(s: &str) -> Vec<u8> {
    let mut v = vec![s.len() as u8];
    v.extend(s.as_bytes());
    v
}

fn long_str(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u32).to_be_bytes().to_vec();
    v.extend(s);
    v
}

impl Amqp {
    /// Logs in as `user` to vhost `/` and opens the connection; an error says how the broker
    /// refused.
    pub fn login(user: &str, password: &str) -> Result<Amqp, String> {
        let mut stream = TcpStream::connect(AMQP).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(b"AMQP\x00\x00\x09\x01").unwrap();
        let mut c = Amqp { stream };
        c.expect(10, 10)?; // Connection.Start
        let mut start_ok = vec![0, 0, 0, 0]; // no client properties
        start_ok.extend(short_str("PLAIN"));
        start_ok.extend(long_str(format!("\0{user}\0{password}").as_bytes()));
        start_ok.extend(short_str("en_US"));
        c.send(&method(10, 11, &start_ok));
        let tune = c.expect(10, 30)?; // Connection.Tune, or the socket closes on bad login
        let mut tune_ok = tune[..6].to_vec(); // channel-max and frame-max as offered
        tune_ok.extend([0, 0]); // no heartbeats
        c.send(&method(10, 31, &tune_ok));
        let mut open = short_str("/");
        open.extend(short_str(""));
        open.push(0);
        c.send(&method(10, 40, &open));
        c.expect(10, 41)?; // Connection.Open-Ok
        Ok(c)
    }

    fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Reads one frame: (type, payload).
    fn read_frame(&mut self) -> Result<(u8, Vec<u8>), String> {
        let mut head = [0u8; 7];
        self.stream
            .read_exact(&mut head)
            .map_err(|e| format!("connection closed: {e}"))?;
        let len = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
        let mut payload = vec![0u8; len + 1];
        self.stream
            .read_exact(&mut payload)
            .map_err(|e| format!("connection closed: {e}"))?;
        payload.pop();
        Ok((head[0], payload))
    }

    /// Reads frames until method `class.id`, returning its arguments; a Connection.Close from
    /// the broker is an error carrying its reply text.
    fn expect(&mut self, class: u16, id: u16) -> Result<Vec<u8>, String> {
        loop {
            let (kind, p) = self.read_frame()?;
            if kind != 1 || p.len() < 4 {
                continue;
            }
            let (c, m) = (
                u16::from_be_bytes([p[0], p[1]]),
                u16::from_be_bytes([p[2], p[3]]),
            );
            if (c, m) == (class, id) {
                return Ok(p[4..].to_vec());
            }
            if (c, m) == (10, 50) {
                let code = u16::from_be_bytes([p[4], p[5]]);
                let text = String::from_utf8_lossy(&p[7..7 + p[6] as usize]).into_owned();
                return Err(format!("closed by the broker: {code} {text}"));
            }
        }
    }

    /// Whether the broker closes this connection within `secs` (a Connection.Close or the
    /// socket's end).
    pub fn closed_within(&mut self, secs: f64) -> bool {
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        self.stream
            .set_read_timeout(Some(Duration::from_millis(250)))
            .unwrap();
        while Instant::now() < deadline {
            match self.read_frame() {
                Ok((1, p)) if p.len() >= 4 && p[..4] == [0, 10, 0, 50] => return true,
                Ok(_) => {}
                // A read timeout: nothing yet.
                Err(e) if e.contains("os error 11") || e.contains("timed out") => {}
                Err(_) => return true,
            }
        }
        false
    }
}
