//! A MySQL connection's settings as sqlx options: OpenBao's Go form of `connection_url` or a
//! `mysql://` URL, with its placeholders, and the TLS settings.

use std::str::FromStr;
use std::time::Duration;

use mayfly::{ConnectionConfig, Error};
use serde_json::Value;
use sqlx::ConnectOptions;
use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};

use crate::common::{self, PASSWORD, USERNAME};

/// `connection_url` as a URL: OpenBao's Go form `user:pass@tcp(host:port)/db?opts` becomes
/// `mysql://user:pass@host:port/db?opts`; a URL is kept as it is.
pub(super) fn url_form(raw: &str) -> Result<String, Error> {
    if raw.contains("://") {
        return Ok(raw.to_owned());
    }
    let (userinfo, rest) = raw.rsplit_once('@').unwrap_or(("", raw));
    let Some(rest) = rest.strip_prefix("tcp(") else {
        return Err(Error::bad_request(
            "field 'connection_url': expected {{username}}:{{password}}@tcp(host:3306)/ or \
             mysql://{{username}}:{{password}}@host:3306/ (unix sockets are not supported)",
        ));
    };
    let Some((address, path)) = rest.split_once(')') else {
        return Err(Error::bad_request(
            "field 'connection_url': 'tcp(' is not closed by ')'",
        ));
    };
    let at = if userinfo.is_empty() { "" } else { "@" };
    Ok(format!("mysql://{userinfo}{at}{address}{path}"))
}

/// `tls_skip_verify`: TLS without checking the server's certificate.
pub(super) fn skips_verify(config: &ConnectionConfig) -> bool {
    config
        .settings
        .get("tls_skip_verify")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The sqlx options for a connection: placeholders filled, the password set after parsing.
pub(super) fn connect_options(config: &ConnectionConfig) -> Result<MySqlConnectOptions, Error> {
    let url = url_form(config.setting_str("connection_url").unwrap_or_default())?;
    let with_user = url
        .replace(USERNAME, &common::url_username(config))
        .replacen("mariadb://", "mysql://", 1);
    let has_password = with_user.contains(PASSWORD);
    let mut options = MySqlConnectOptions::from_str(&with_user.replace(PASSWORD, "placeholder"))
        .map_err(|e| {
            Error::bad_request(format!(
                "field 'connection_url': not a valid MySQL URL: {e}"
            ))
        })?;
    if has_password {
        options = options.password(&common::login_password(config));
    }
    let mode_given = with_user.contains("ssl-mode=") || with_user.contains("sslmode=");
    if let Some(ca) = config.setting_str("tls_ca") {
        options = options.ssl_ca_from_pem(ca.as_bytes().to_vec());
        if !mode_given && !skips_verify(config) {
            options = options.ssl_mode(MySqlSslMode::VerifyIdentity);
        }
    }
    if !mode_given && skips_verify(config) {
        options = options.ssl_mode(MySqlSslMode::Required);
    }
    if let Some(both) = config.secret("tls_certificate_key") {
        options = options
            .ssl_client_cert_from_pem(both.as_bytes())
            .ssl_client_key_from_pem(both.as_bytes());
    }
    if let (Some(cert), Some(key)) = (
        config.setting_str("tls_certificate"),
        config.secret("private_key"),
    ) {
        options = options
            .ssl_client_cert_from_pem(cert.as_bytes())
            .ssl_client_key_from_pem(key.as_bytes());
    }
    // Statements carry passwords: sqlx must never log them.
    Ok(options
        .log_statements(tracing::log::LevelFilter::Off)
        .log_slow_statements(tracing::log::LevelFilter::Off, Duration::ZERO))
}
