//! A PostgreSQL connection's settings as sqlx options: OpenBao's URL with its placeholders, or
//! libpq's keyword/value form, and the TLS settings.

use std::str::FromStr;
use std::time::Duration;

use mayfly::{ConnectionConfig, Error};
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::common::{self, PASSWORD, USERNAME};
/// libpq's keyword/value form (`host=db port=5432 user={{username}} dbname=app`), which
/// OpenBao's documentation also shows, as the equivalent URL; `None` for a URL.
pub(super) fn keyword_dsn_to_url(dsn: &str) -> Result<Option<String>, Error> {
    if dsn.contains("://") || !dsn.contains('=') {
        return Ok(None);
    }
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut chars = dsn.trim().chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let key = key.trim().to_owned();
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '\'' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(Error::bad_request(format!(
                    "field 'connection_url': the quoted value of '{key}' is not closed"
                )));
            }
        } else {
            value = chars.by_ref().take_while(|c| !c.is_whitespace()).collect();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if key.is_empty() {
            return Err(Error::bad_request(
                "field 'connection_url': expected key=value pairs (host=… port=… dbname=…)",
            ));
        }
        pairs.push((key, value));
    }
    let take = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    // Placeholders stay as they are; anything else is escaped for the URL.
    let part = |v: &str| {
        if v.starts_with("{{") {
            v.to_owned()
        } else {
            mayfly::redact::percent_encode(v)
        }
    };
    let host = take("host").unwrap_or_else(|| "localhost".into());
    if host.contains(',') {
        return Err(Error::bad_request(
            "field 'connection_url': several hosts are not supported; give one host",
        ));
    }
    let userinfo = match (take("user"), take("password")) {
        (Some(u), Some(p)) => format!("{}:{}@", part(&u), part(&p)),
        (Some(u), None) => format!("{}@", part(&u)),
        (None, _) => String::new(),
    };
    let port = take("port").map(|p| format!(":{p}")).unwrap_or_default();
    let dbname = take("dbname").unwrap_or_default();
    let query: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "host" | "port" | "user" | "password" | "dbname"))
        .map(|(k, v)| format!("{}={}", part(k), part(v)))
        .collect();
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    };
    Ok(Some(format!(
        "postgres://{userinfo}{host}{port}/{}{query}",
        part(&dbname)
    )))
}

/// The sqlx options for a connection: placeholders filled, the password set after parsing.
pub(super) fn connect_options(config: &ConnectionConfig) -> Result<PgConnectOptions, Error> {
    let raw = config.setting_str("connection_url").unwrap_or_default();
    let with_user = raw.replace(USERNAME, &common::url_username(config));
    let has_password = with_user.contains(PASSWORD);
    // The placeholder stays in the text sqlx parses: the real password never does.
    let options =
        PgConnectOptions::from_str(&with_user.replace(PASSWORD, "placeholder")).map_err(|e| {
            Error::bad_request(format!(
                "field 'connection_url': not a valid PostgreSQL URL: {e}"
            ))
        })?;
    let options = if has_password {
        options.password(&common::login_password(config))
    } else {
        options
    };
    let mut options = options;
    if let Some(ca) = config.setting_str("tls_ca") {
        options = options.ssl_root_cert_from_pem(ca.as_bytes().to_vec());
        if !with_user.contains("sslmode=") {
            options = options.ssl_mode(PgSslMode::VerifyFull);
        }
    }
    if let (Some(cert), Some(key)) = (
        config.setting_str("tls_certificate"),
        config.secret("private_key"),
    ) {
        options = options
            .ssl_client_cert_from_pem(cert.as_bytes())
            .ssl_client_key_from_pem(key.as_bytes());
    }
    // Statements carry passwords: sqlx must never log them, slow ones included (it logs
    // those at warn by default, statement text and all).
    Ok(options
        .application_name("mayfly")
        .log_statements(tracing::log::LevelFilter::Off)
        .log_slow_statements(tracing::log::LevelFilter::Off, Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::postgres::Postgres;
    use mayfly::Backend;
    use serde_json::Map;

    #[test]
    fn libpq_keyword_dsns_become_urls() {
        // OpenBao's PostgreSQL API documentation, verbatim.
        let doc = "host=localhost port=5432 user={{username}} password={{password}}";
        assert_eq!(
            keyword_dsn_to_url(doc).unwrap().as_deref(),
            Some("postgres://{{username}}:{{password}}@localhost:5432/")
        );
        let quoted = "host=db.internal dbname=app sslmode=verify-full application_name='a b'";
        assert_eq!(
            keyword_dsn_to_url(quoted).unwrap().as_deref(),
            Some("postgres://db.internal/app?sslmode=verify-full&application_name=a%20b")
        );
        assert_eq!(keyword_dsn_to_url("postgres://h/db").unwrap(), None);
        let several = keyword_dsn_to_url("host=a,b port=1,2")
            .unwrap_err()
            .to_string();
        assert!(several.contains("several hosts"), "{several}");
    }

    fn config(url: &str, tls_ca: Option<&str>) -> ConnectionConfig {
        let mut settings = Map::new();
        settings.insert("connection_url".into(), json!(url));
        if let Some(ca) = tls_ca {
            settings.insert("tls_ca".into(), json!(ca));
        }
        ConnectionConfig {
            plugin_name: "postgres".into(),
            allowed_roles: Vec::new(),
            verify_connection: false,
            settings,
            secrets: BTreeMap::new(),
            pending_root_password: None,
        }
    }

    #[test]
    fn the_server_the_database_and_the_trusted_ca_are_where_a_connection_points() {
        let reach = |url: &str, ca: Option<&str>| Postgres.reach(&config(url, ca));
        let base = reach(
            "postgres://{{username}}:{{password}}@db:5432/app?sslmode=verify-full",
            None,
        );
        // The user it logs in as, and a stricter check, are not a move.
        assert_eq!(
            base.destination,
            reach(
                "postgres://other:{{password}}@db:5432/app?sslmode=verify-full",
                None
            )
            .destination
        );
        for moved in [
            "postgres://{{username}}:{{password}}@evil:5432/app?sslmode=verify-full",
            "postgres://{{username}}:{{password}}@db:6432/app?sslmode=verify-full",
            "postgres://{{username}}:{{password}}@db:5432/other?sslmode=verify-full",
            "postgres://{{username}}:{{password}}@db:5432/app?sslmode=verify-full&host=evil",
        ] {
            assert_ne!(base.destination, reach(moved, None).destination, "{moved}");
        }
        assert_ne!(
            base.destination,
            reach(
                "postgres://{{username}}:{{password}}@db:5432/app?sslmode=verify-full",
                Some("CA")
            )
            .destination
        );
        let check = |url: &str, ca| reach(url, ca).server_check;
        let u = "postgres://db/app";
        assert!(check(&format!("{u}?sslmode=require"), None) < base.server_check);
        assert!(check(&format!("{u}?sslmode=disable"), None) < check(u, None));
        // tls_ca without a mode verifies the server fully.
        assert_eq!(check(u, Some("CA")), base.server_check);
    }
}
