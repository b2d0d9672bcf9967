//! What the SQL kinds share: the connection fields and their offline checks (a URL with
//! `{{username}}`/`{{password}}` placeholders, TLS material, a pool size), and statement lists
//! rendered in the kind's dialect.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mayfly::ConnectionConfig;
use mayfly::Error;
use mayfly::fields::{FieldDef, FieldType, FieldValue};
use mayfly::redact::redact;
use secrecy::SecretString;
use serde_json::{Map, Value};
use sqlx::{ConnectOptions, Connection};

use crate::statements::{self, Syntax, Values};

pub const USERNAME: &str = "{{username}}";
pub const PASSWORD: &str = "{{password}}";
/// How long a connection check, or a wait for a pooled connection, may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection fields of every SQL kind. `url_help` describes `connection_url`.
pub fn connection_fields(url_help: &'static str) -> Vec<FieldDef> {
    vec![
        FieldDef::new("connection_url", FieldType::String, url_help).required(),
        FieldDef::new(
            "username",
            FieldType::String,
            "The user mayfly connects as.",
        ),
        FieldDef::new("password", FieldType::String, "The password of that user.").secret(),
        FieldDef::new(
            "max_open_connections",
            FieldType::Int,
            "The most connections mayfly keeps open to this database.",
        )
        .default(FieldValue::Int(4)),
        FieldDef::new(
            "max_idle_connections",
            FieldType::Int,
            "The most idle connections kept open; 0 keeps up to max_open_connections (as \
             OpenBao's engine does).",
        ),
        FieldDef::new(
            "max_connection_lifetime",
            FieldType::Duration,
            "How long a connection is used before it is closed and replaced; 0 for no limit. \
             Without it, 30 minutes.",
        ),
        FieldDef::new(
            "disable_escaping",
            FieldType::Bool,
            "As in OpenBao: the username and password go into connection_url as they are \
             instead of URL-escaped, so percent-encoded ones are decoded there. Statements \
             always quote the names and passwords they are given.",
        ),
        FieldDef::new(
            "tls_ca",
            FieldType::String,
            "PEM certificates of the CAs that sign the server's certificate. With it, mayfly \
             verifies the server's certificate and name unless the URL says otherwise.",
        ),
        FieldDef::new(
            "tls_certificate",
            FieldType::String,
            "PEM client certificate, for servers that authenticate clients by certificate.",
        ),
        FieldDef::new(
            "private_key",
            FieldType::String,
            "PEM private key of tls_certificate.",
        )
        .secret(),
    ]
}

/// OpenBao takes credentials written into `connection_url` (its MySQL documentation's
/// `user:password@tcp(…)`). mayfly keeps them as the `username` and write-only `password`
/// fields and writes the placeholders in their place, so the password is never shown on read.
/// `decode` says whether the URL's form percent-encodes them. A URL whose credentials are
/// given both ways is left for validation to refuse.
pub fn lift_literal_credentials(config: &mut ConnectionConfig, decode: bool) {
    let Some(raw) = config.setting_str("connection_url").map(str::to_owned) else {
        return;
    };
    let (scheme, rest) = match raw.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r.to_owned()),
        None => (String::new(), raw.clone()),
    };
    let Some((userinfo, address)) = rest.rsplit_once('@') else {
        return;
    };
    let Some((user, password)) = userinfo.split_once(':') else {
        return;
    };
    if userinfo.contains("{{")
        || config
            .setting_str("username")
            .is_some_and(|u| !u.is_empty())
        || config.secret("password").is_some_and(|p| !p.is_empty())
    {
        return;
    }
    let plain = |s: &str| {
        if decode {
            mayfly::redact::percent_decode(s)
        } else {
            s.to_owned()
        }
    };
    config
        .settings
        .insert("username".into(), Value::String(plain(user)));
    config
        .secrets
        .insert("password".into(), SecretString::from(plain(password)));
    config.settings.insert(
        "connection_url".into(),
        Value::String(format!("{scheme}{USERNAME}:{PASSWORD}@{address}")),
    );
}

/// The offline checks of the shared fields. `url` is `connection_url` already in URL form
/// (placeholders in place); `schemes` are the accepted URL schemes, the first one shown in
/// errors; `example` is a URL to suggest.
pub fn validate_connection(
    config: &ConnectionConfig,
    url: &str,
    schemes: &[&str],
    example: &str,
) -> Result<(), Error> {
    if url.contains(USERNAME) && config.setting_str("username").is_none_or(str::is_empty) {
        return Err(Error::bad_request(
            "field 'username' is required: connection_url contains {{username}}",
        ));
    }
    if url.contains(PASSWORD) && config.secret("password").is_none_or(str::is_empty) {
        return Err(Error::bad_request(
            "field 'password' is required: connection_url contains {{password}}",
        ));
    }
    let parsed =
        url::Url::parse(&url.replace(USERNAME, "u").replace(PASSWORD, "p")).map_err(|e| {
            Error::bad_request(format!(
                "field 'connection_url': expected a URL such as {example} ({e})"
            ))
        })?;
    if !schemes.contains(&parsed.scheme()) {
        return Err(Error::bad_request(format!(
            "field 'connection_url': expected the scheme {}://, got {}://",
            schemes.join(":// or "),
            parsed.scheme()
        )));
    }
    if parsed.password().is_some() && !url.contains(PASSWORD) {
        return Err(Error::bad_request(
            "field 'connection_url': contains a literal password; write {{password}} in the URL \
             and give the password in the write-only 'password' field, so it is never shown on read",
        ));
    }
    for (field, value) in [
        ("tls_ca", config.setting_str("tls_ca")),
        ("tls_certificate", config.setting_str("tls_certificate")),
        ("private_key", config.secret("private_key")),
    ] {
        if value.is_some_and(|v| !v.contains("-----BEGIN ")) {
            return Err(Error::bad_request(format!(
                "field '{field}': expected PEM text (-----BEGIN …-----)"
            )));
        }
    }
    if config.setting_str("tls_certificate").is_some() != config.secret("private_key").is_some() {
        return Err(Error::bad_request(
            "fields 'tls_certificate' and 'private_key' go together: give both or neither",
        ));
    }
    // The pool's settings are checked here, at write, not when the pool is first made.
    idle_limit(config, pool_size(config)?).map(|_| ())
}

/// Where a SQL connection sends its password ([`mayfly::backend::Reach`]): the server and
/// database of `url` (`connection_url` in URL form; every part but the user and password,
/// and the TLS mode, which `strength` ranks instead) and the CA it trusts. `mode_params` are
/// the URL's names of the TLS mode; `strength` ranks a mode (lowercase, `None` when the URL
/// sets none) given whether `tls_ca` is set.
pub fn reach(
    config: &ConnectionConfig,
    url: &str,
    mode_params: &[&str],
    strength: fn(Option<&str>, bool) -> u8,
) -> mayfly::backend::Reach {
    let filled = url.replace(USERNAME, "u").replace(PASSWORD, "p");
    let (place, mode) = match url::Url::parse(&filled) {
        Ok(u) => {
            let mut mode = None;
            let mut rest: Vec<(String, String)> = Vec::new();
            for (k, v) in u.query_pairs() {
                if mode_params.contains(&k.as_ref()) {
                    mode = Some(v.to_lowercase().replace('-', "_"));
                } else {
                    rest.push((k.into_owned(), v.into_owned()));
                }
            }
            rest.sort();
            let place = format!(
                "{}://{}:{}{} {rest:?}",
                u.scheme(),
                u.host_str().unwrap_or_default(),
                u.port().map(|p| p.to_string()).unwrap_or_default(),
                u.path()
            );
            (place, mode)
        }
        // Validated before: only a URL that did not parse then either lands here.
        Err(_) => (filled, None),
    };
    let has_ca = config.setting_str("tls_ca").is_some();
    let mut reach = mayfly::backend::Reach {
        destination: [("connection_url".to_owned(), place)].into(),
        server_check: strength(mode.as_deref(), has_ca),
    };
    reach = reach.with_setting(config, "tls_ca");
    reach
}

/// Connects once with `options` and pings, for `verify_connection`. The error names the field,
/// and carries the server's own message with the connection's password removed.
pub async fn verify<O>(kind: &str, config: &ConnectionConfig, options: O) -> Result<(), Error>
where
    O: ConnectOptions,
    O::Connection: Sized,
{
    let check = async {
        let mut conn = options.connect().await?;
        conn.ping().await?;
        conn.close().await
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, check).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::bad_request(format!(
            "field 'connection_url': cannot connect to {kind}: {}",
            redact(
                &e.to_string(),
                &[config.secret("password").unwrap_or_default()]
            )
        ))),
        Err(_) => Err(Error::bad_request(format!(
            "field 'connection_url': cannot connect to {kind}: no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// A pooled connection unused for this long is tested (one round trip) before it is handed
/// out again; one used more recently was tested when it came back (sqlx always does that).
pub const RETEST_AFTER_IDLE: Duration = Duration::from_secs(1);

/// The pool every SQL connection gets: at most `max_open_connections`, none kept open when
/// idle for five minutes, connecting lazily (a database that is down fails operations, not
/// the configuration's load).
///
/// sqlx tests every connection when it is returned; testing it again when it is taken, as
/// sqlx would by default, made each statement three round trips to the server instead of two.
/// Only a connection idle for [`RETEST_AFTER_IDLE`] is tested again, as a server restarted
/// since it was returned would have closed it.
pub fn pool<DB: sqlx::Database>(
    config: &ConnectionConfig,
    options: <DB::Connection as Connection>::Options,
) -> Result<sqlx::Pool<DB>, Error> {
    let size = pool_size(config)?;
    let mut pool = sqlx::pool::PoolOptions::<DB>::new()
        .max_connections(size)
        .min_connections(0)
        .acquire_timeout(CONNECT_TIMEOUT)
        .idle_timeout(Duration::from_secs(300))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= RETEST_AFTER_IDLE {
                    conn.ping().await?;
                }
                Ok(true)
            })
        });
    match config.setting_i64("max_connection_lifetime") {
        Some(0) => pool = pool.max_lifetime(None),
        Some(secs) => pool = pool.max_lifetime(Duration::from_secs(secs.max(1) as u64)),
        None => {}
    }
    let idle = idle_limit(config, size)?;
    if idle >= size {
        return Ok(pool.connect_lazy_with(options));
    }
    // sqlx has no bound on idle connections: a connection coming back is closed instead
    // when the pool already holds that many idle ones. The callback holds the pool itself,
    // so the pool's memory stays after its handle is dropped (its connections go with
    // Target::close): a few kilobytes per replaced handle.
    let handle: Arc<OnceLock<sqlx::Pool<DB>>> = Arc::new(OnceLock::new());
    let seen = handle.clone();
    let pool = pool
        .after_release(move |_, _| {
            let keep = seen.get().is_none_or(|p| p.num_idle() < idle as usize);
            Box::pin(async move { Ok(keep) })
        })
        .connect_lazy_with(options);
    let _ = handle.set(pool.clone());
    Ok(pool)
}

/// `max_idle_connections`, checked: 0 (or more than the pool holds) keeps them all.
fn idle_limit(config: &ConnectionConfig, size: u32) -> Result<u32, Error> {
    match config.setting_i64("max_idle_connections") {
        None | Some(0) => Ok(size),
        Some(n) if n > 0 => Ok(u32::try_from(n).unwrap_or(u32::MAX).min(size)),
        Some(n) => Err(Error::bad_request(format!(
            "field 'max_idle_connections': expected 0 or more, got {n}"
        ))),
    }
}

/// The username as it goes into `connection_url`: URL-escaped, unless `disable_escaping`.
pub fn url_username(config: &ConnectionConfig) -> String {
    let name = config.setting_str("username").unwrap_or_default();
    if escaping_disabled(config) {
        name.to_owned()
    } else {
        mayfly::redact::percent_encode(name)
    }
}

/// The password the connection logs in with. With `disable_escaping` OpenBao puts it into
/// the URL as it is, where the URL's parser decodes it: mayfly decodes it the same way.
pub fn login_password(config: &ConnectionConfig) -> String {
    let password = config.secret("password").unwrap_or_default();
    if escaping_disabled(config) {
        mayfly::redact::percent_decode(password)
    } else {
        password.to_owned()
    }
}

fn escaping_disabled(config: &ConnectionConfig) -> bool {
    config
        .settings
        .get("disable_escaping")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// `max_open_connections`, checked.
pub fn pool_size(config: &ConnectionConfig) -> Result<u32, Error> {
    match config.setting_i64("max_open_connections") {
        None => Ok(4),
        Some(n) if (1..=1000).contains(&n) => Ok(n as u32),
        Some(n) => Err(Error::bad_request(format!(
            "field 'max_open_connections': expected an integer from 1 to 1000, got {n}"
        ))),
    }
}

/// The connection's own secrets, to be removed from every error message.
pub fn connection_secrets(config: &ConnectionConfig) -> Vec<SecretString> {
    let decoded = config.secret("password").map(|_| login_password(config));
    [
        config.secret("password"),
        config.secret("private_key"),
        config.secret("tls_certificate_key"),
    ]
    .into_iter()
    .flatten()
    .map(str::to_owned)
    .chain(decoded)
    .map(SecretString::from)
    .collect()
}

/// A role setting that holds a list of strings (statements, groups); empty when unset.
pub fn list(settings: &Map<String, Value>, field: &str) -> Vec<String> {
    settings
        .get(field)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// `2006-01-02 15:04:05+0000`, the form OpenBao gives `{{expiration}}`.
pub fn expiration(unix: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}+0000",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Every statement of `field` with the values filled in.
pub fn render_all(
    field: &str,
    stmts: &[String],
    values: &Values<'_>,
    syntax: Syntax,
) -> Result<Vec<String>, Error> {
    stmts
        .iter()
        .enumerate()
        .map(|(i, s)| {
            statements::render(s, values, syntax)
                .map_err(|e| Error::bad_request(format!("{field} statement {}: {e}", i + 1)))
        })
        .collect()
}

/// Checks that each statement of each field in `fields` is not empty and renders with a name
/// the role's `username_template` makes.
pub fn validate_statements(
    settings: &Map<String, Value>,
    fields: &[&str],
    sample: &Values<'_>,
    syntax: Syntax,
) -> Result<(), Error> {
    for field in fields {
        for (i, stmt) in list(settings, field).iter().enumerate() {
            if stmt.trim().is_empty() {
                return Err(Error::bad_request(format!(
                    "field '{field}': statement {} is empty",
                    i + 1
                )));
            }
            statements::render(stmt, sample, syntax).map_err(|e| {
                Error::bad_request(format!(
                    "field '{field}': statement {} with the name '{}': {e}",
                    i + 1,
                    sample.name.escape_default()
                ))
            })?;
        }
    }
    Ok(())
}

/// Checks that `creation_statements`, when given, create the user the template names.
pub fn creation_mentions_name(settings: &Map<String, Value>) -> Result<(), Error> {
    let creation = list(settings, "creation_statements");
    if !creation.is_empty()
        && !creation
            .iter()
            .any(|s| s.contains("{{name}}") || s.contains("{{username}}"))
    {
        return Err(Error::bad_request(
            "field 'creation_statements': no statement mentions {{name}}",
        ));
    }
    Ok(())
}

/// Checks a static role's `rotation_statements` for account `username`: each renders, and
/// one of them sets the password.
pub fn validate_rotation_statements(
    statements: &[String],
    username: &str,
    syntax: Syntax,
) -> Result<(), Error> {
    if statements.is_empty() {
        return Ok(());
    }
    let mut settings = Map::new();
    settings.insert(
        "rotation_statements".into(),
        Value::from(statements.to_vec()),
    );
    let sample = Values {
        name: username,
        password: Some("Sample0password"),
        expiration: None,
        host: Some("%"),
    };
    validate_statements(&settings, &["rotation_statements"], &sample, syntax)?;
    if !statements.iter().any(|s| s.contains(PASSWORD)) {
        return Err(Error::bad_request(
            "field 'rotation_statements': no statement sets {{password}}",
        ));
    }
    Ok(())
}

/// Refuses a password mayfly will not put in a statement: a backslash is an escape in MySQL
/// string literals (and in PostgreSQL's without standard_conforming_strings), NUL ends them.
pub fn check_sendable(password: &str) -> Result<(), Error> {
    if password.contains(['\\', '\0']) {
        return Err(Error::bad_request(
            "the new password contains a backslash or NUL, which mayfly does not send; use a \
             password policy without them",
        ));
    }
    Ok(())
}

/// Whether logging in with `options` works: `Ok(false)` when the server refuses the
/// credentials (`refused` recognises its errors), an error when it cannot tell.
pub async fn check_login<O>(
    kind: &str,
    options: O,
    password: &str,
    refused: impl Fn(&dyn sqlx::error::DatabaseError) -> bool,
) -> Result<bool, Error>
where
    O: ConnectOptions,
    O::Connection: Sized,
{
    match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(true)
        }
        Ok(Err(sqlx::Error::Database(db))) if refused(db.as_ref()) => Ok(false),
        Ok(Err(e)) => Err(Error::Unavailable(format!(
            "{kind} cannot tell whether a password works: {}",
            redact(&e.to_string(), &[password])
        ))),
        Err(_) => Err(Error::Unavailable(format!(
            "{kind} did not answer a login within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}
