//! The HTTP client of one connection: its TLS settings, its admin credential, and bounded
//! timeouts and retries. It knows nothing of keys; [`crate::target`] says what to send.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client as Pool;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mayfly::ConnectionConfig;
use mayfly::Error;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

pub const DEFAULT_TIMEOUT_SECS: i64 = 10;
pub const DEFAULT_MAX_RETRIES: i64 = 2;
/// The most a service's answer may weigh; a larger one is an error, not a memory hazard.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// How mayfly proves itself to the service.
enum Auth {
    None,
    Bearer(SecretString),
    Basic(SecretString),
    Header(HeaderName, SecretString),
}

/// Whether a failed call may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Only when it never reached the service (connection refused): a call that creates must
    /// not create twice.
    Unsent,
    /// Also after a timeout, a 429 or a 502/503/504: the call is idempotent.
    Transient,
}

/// One call, its placeholders already filled.
pub struct Call {
    pub method: Method,
    /// The path and query, appended to the connection's `base_url`.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl Call {
    /// A call without headers or body.
    pub fn bare(method: Method, path: impl Into<String>) -> Call {
        Call {
            method,
            path: path.into(),
            headers: Vec::new(),
            body: None,
        }
    }
}

/// What the service answered.
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

pub struct Client {
    pool: Pool<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
    auth: Auth,
    timeout: Duration,
    max_retries: u32,
}

impl Client {
    /// A client for `config`'s service; errors name the field at fault.
    pub fn new(config: &ConnectionConfig) -> Result<Client, Error> {
        let base = config
            .setting_str("base_url")
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_owned();
        let tls = mayfly_tls::client_config(&mayfly_tls::ClientTls {
            ca: config
                .setting_str("tls_ca")
                .filter(|s| !s.is_empty())
                .map(|pem| ("tls_ca", pem)),
            certificate: config
                .setting_str("tls_certificate")
                .filter(|s| !s.is_empty()),
            key: config.secret("private_key").filter(|s| !s.is_empty()),
            insecure: config
                .settings
                .get("insecure_skip_verify")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })?;
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let pool = Pool::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Client {
            pool,
            base,
            auth: auth(config)?,
            timeout: Duration::from_secs(
                config
                    .setting_i64("timeout")
                    .unwrap_or(DEFAULT_TIMEOUT_SECS)
                    .max(1) as u64,
            ),
            max_retries: config
                .setting_i64("max_retries")
                .unwrap_or(DEFAULT_MAX_RETRIES)
                .clamp(0, 10) as u32,
        })
    }

    /// The admin credential, for removing it from anything reported.
    pub fn admin_secret(&self) -> &str {
        match &self.auth {
            Auth::None => "",
            Auth::Bearer(s) | Auth::Basic(s) | Auth::Header(_, s) => s.expose_secret(),
        }
    }

    /// `METHOD base_url/path`, for messages.
    pub fn describe(&self, call: &Call) -> String {
        format!("{} {}{}", call.method, self.base, call.path)
    }

    /// Sends `call`, again after a bounded backoff where `retry` allows. An error means no
    /// answer came; any answer, whatever its status, is a [`Reply`].
    pub async fn send(&self, call: &Call, retry: Retry) -> Result<Reply, String> {
        let mut attempt = 0;
        loop {
            let outcome = self.send_once(call).await;
            let again = match &outcome {
                Ok(r) => retry == Retry::Transient && matches!(r.status, 429 | 502 | 503 | 504),
                Err(Failure::Unsent(_)) => true,
                Err(Failure::Unanswered(_)) => retry == Retry::Transient,
            };
            if !again || attempt >= self.max_retries {
                return outcome.map_err(|f| match f {
                    Failure::Unsent(e) | Failure::Unanswered(e) => e,
                });
            }
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(200 << attempt.min(4))).await;
        }
    }

    async fn send_once(&self, call: &Call) -> Result<Reply, Failure> {
        let uri = format!("{}{}", self.base, call.path);
        let mut req = hyper::Request::builder()
            .method(call.method.clone())
            .uri(&uri);
        for (name, value) in &call.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        req = match &self.auth {
            Auth::None => req,
            Auth::Bearer(t) => req.header(
                AUTHORIZATION,
                sensitive(&format!("Bearer {}", t.expose_secret())),
            ),
            Auth::Basic(b) => req.header(AUTHORIZATION, sensitive(b.expose_secret())),
            Auth::Header(name, v) => req.header(name, sensitive(v.expose_secret())),
        };
        let body = match &call.body {
            Some(b) => {
                req = req.header(CONTENT_TYPE, "application/json");
                Bytes::from(b.to_string())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(body))
            .map_err(|e| Failure::Unsent(format!("cannot build the request: {e}")))?;
        let sent = tokio::time::timeout(self.timeout, async {
            let resp = self.pool.request(req).await.map_err(|e| {
                // Connection errors come before anything is sent: safe to try again.
                if e.is_connect() {
                    Failure::Unsent(format!("cannot connect: {}", chain(&e)))
                } else {
                    Failure::Unanswered(format!("no answer: {}", chain(&e)))
                }
            })?;
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let limited = http_body_util::Limited::new(resp.into_body(), MAX_BODY_BYTES);
            let body = limited
                .collect()
                .await
                .map_err(|e| Failure::Unanswered(format!("the answer broke off: {e}")))?
                .to_bytes();
            Ok(Reply {
                status,
                content_type,
                body,
            })
        })
        .await;
        sent.unwrap_or_else(|_| {
            Err(Failure::Unanswered(format!(
                "no answer within {}s",
                self.timeout.as_secs()
            )))
        })
    }
}

enum Failure {
    Unsent(String),
    Unanswered(String),
}

fn sensitive(v: &str) -> HeaderValue {
    let mut h = HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static(""));
    h.set_sensitive(true);
    h
}

/// An error and its sources, one line: hyper's own message is often just "client error".
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn auth(config: &ConnectionConfig) -> Result<Auth, Error> {
    let secret = |field: &str| {
        config
            .secret(field)
            .filter(|s| !s.is_empty())
            .map(|s| SecretString::from(s.to_owned()))
            .ok_or_else(|| {
                Error::bad_request(format!(
                    "field '{field}' is required with auth_type '{}'",
                    config.setting_str("auth_type").unwrap_or_default()
                ))
            })
    };
    Ok(match config.setting_str("auth_type").unwrap_or("none") {
        "none" | "" => Auth::None,
        "bearer" => Auth::Bearer(secret("token")?),
        "basic" => {
            use base64::Engine;
            let user = config.setting_str("username").unwrap_or_default();
            let pair = format!("{user}:{}", secret("password")?.expose_secret());
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
            Auth::Basic(SecretString::from(format!("Basic {encoded}")))
        }
        "header" => {
            let name = config.setting_str("auth_header").unwrap_or_default();
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                Error::bad_request(format!(
                    "field 'auth_header': expected a header name, got '{}'",
                    name.escape_default()
                ))
            })?;
            Auth::Header(name, secret("token")?)
        }
        other => {
            return Err(Error::bad_request(format!(
                "field 'auth_type': expected none, bearer, basic or header, got '{}'",
                other.escape_default()
            )));
        }
    })
}
