//! The `postgres` kind: connections to PostgreSQL through sqlx.
//!
//! `connection_url` follows OpenBao's database engine: `postgres://{{username}}:{{password}}@host/db`.
//! The password never enters the URL text that sqlx parses (and may echo in an error): the
//! placeholder is parsed as is and the password is set on the parsed options afterwards.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use mayfly::connections::ConnectionConfig;
use mayfly::fields::{FieldDef, FieldType, FieldValue};
use mayfly::redact::{percent_encode, redact};
use mayfly::{Backend, Error};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

const USERNAME: &str = "{{username}}";
const PASSWORD: &str = "{{password}}";
/// How long a connection check may take before it is reported as a failure.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Postgres;

#[async_trait]
impl Backend for Postgres {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["postgresql", "postgresql-database-plugin"]
    }

    fn connection_fields(&self) -> Vec<FieldDef> {
        vec![
            FieldDef::new(
                "connection_url",
                FieldType::String,
                "postgres://{{username}}:{{password}}@host:5432/dbname?sslmode=…; the placeholders \
                 take the username and password fields.",
            )
            .required(),
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
        ]
    }

    fn validate_connection(&self, config: &ConnectionConfig) -> Result<(), Error> {
        let raw = config.setting_str("connection_url").unwrap_or_default();
        if raw.contains(USERNAME) && config.setting_str("username").is_none_or(str::is_empty) {
            return Err(Error::bad_request(
                "field 'username' is required: connection_url contains {{username}}",
            ));
        }
        if raw.contains(PASSWORD) && config.secret("password").is_none_or(str::is_empty) {
            return Err(Error::bad_request(
                "field 'password' is required: connection_url contains {{password}}",
            ));
        }
        let url =
            url::Url::parse(&raw.replace(USERNAME, "u").replace(PASSWORD, "p")).map_err(|e| {
                Error::bad_request(format!(
                    "field 'connection_url': expected a URL such as \
                 postgres://{{{{username}}}}:{{{{password}}}}@localhost:5432/postgres ({e})"
                ))
            })?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(Error::bad_request(format!(
                "field 'connection_url': expected the scheme postgres:// or postgresql://, got {}://",
                url.scheme()
            )));
        }
        if url.password().is_some() && !raw.contains(PASSWORD) {
            return Err(Error::bad_request(
                "field 'connection_url': contains a literal password; write {{password}} in the URL \
                 and give the password in the write-only 'password' field, so it is never shown on read",
            ));
        }
        match config.setting_i64("max_open_connections") {
            Some(n) if (1..=1000).contains(&n) => Ok(()),
            other => Err(Error::bad_request(format!(
                "field 'max_open_connections': expected an integer from 1 to 1000, got {}",
                other.map_or("nothing".to_owned(), |n| n.to_string())
            ))),
        }
    }

    async fn verify_connection(&self, config: &ConnectionConfig) -> Result<(), Error> {
        let password = config.secret("password").unwrap_or_default();
        let options = connect_options(config)?;
        let check = async {
            let mut conn = options.connect().await?;
            sqlx::query("SELECT 1").execute(&mut conn).await?;
            conn.close().await
        };
        match tokio::time::timeout(VERIFY_TIMEOUT, check).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::bad_request(format!(
                "field 'connection_url': cannot connect to PostgreSQL: {}",
                redact(&e.to_string(), &[password])
            ))),
            Err(_) => Err(Error::bad_request(format!(
                "field 'connection_url': cannot connect to PostgreSQL: no answer within {}s",
                VERIFY_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// The sqlx options for a connection: placeholders filled, the password set after parsing.
pub fn connect_options(config: &ConnectionConfig) -> Result<PgConnectOptions, Error> {
    let raw = config.setting_str("connection_url").unwrap_or_default();
    let username = config.setting_str("username").unwrap_or_default();
    let with_user = raw.replace(USERNAME, &percent_encode(username));
    let has_password = with_user.contains(PASSWORD);
    // The placeholder stays in the text sqlx parses: the real password never does.
    let options =
        PgConnectOptions::from_str(&with_user.replace(PASSWORD, "placeholder")).map_err(|e| {
            Error::bad_request(format!(
                "field 'connection_url': not a valid PostgreSQL URL: {e}"
            ))
        })?;
    let options = if has_password {
        options.password(config.secret("password").unwrap_or_default())
    } else {
        options
    };
    Ok(options
        .application_name("mayfly")
        .log_statements(tracing::log::LevelFilter::Off))
}
