//! The `mysql` kind: MySQL 8 and MariaDB 10.x through sqlx.
//!
//! `connection_url` takes OpenBao's form, `{{username}}:{{password}}@tcp(host:3306)/`, or a
//! `mysql://` URL. As for PostgreSQL, the password never enters the text sqlx parses.
//!
//! MySQL has no per-user expiry (`PASSWORD EXPIRE` still lets the user in, to change its
//! password), so a MySQL user stops working only when mayfly drops it: the scheduler is the
//! guarantee, and role reads say so.

use std::sync::Arc;

use async_trait::async_trait;
use mayfly::ConnectionConfig;
use mayfly::fields::{FieldDef, FieldType, FieldValue};
use mayfly::redact::redact;
use mayfly::{
    Backend, Created, Error, ExpiryEnforcement, NewPrincipal, Principal, Reach, Revoked, Target,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPool};

use crate::common::{self, list};
use crate::statements::{Dialect, Values, quote_literal};

mod options;
use options::{connect_options, skips_verify, url_form};

/// MySQL 8 refuses user names longer than this (MariaDB takes 80; mayfly holds both to 32).
const MAX_NAME: usize = 32;
/// The mount's mark (10), 8 of the role, 13 random: 32 characters at most.
const USERNAME_TEMPLATE: &str = r#"{{ printf "%s%s-%s" .Mark (.RoleName | truncate 8) (random 13) | lowercase | truncate 32 }}"#;
/// ER_NO_SUCH_THREAD: the session ended before mayfly could kill it.
const NO_SUCH_THREAD: u16 = 1094;
/// ER_KILL_DENIED_ERROR: not the session's owner, and no privilege to end others' sessions.
const KILL_DENIED: u16 = 1095;
/// Errors of a refused login: ER_ACCESS_DENIED_ERROR, and an account locked (MySQL 8's
/// number, then MariaDB's).
const LOGIN_REFUSED: [u16; 3] = [1045, 3118, 4151];

pub struct MySql;

#[async_trait]
impl Backend for MySql {
    fn kind(&self) -> &'static str {
        "mysql"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &[
            "mariadb",
            "mysql-database-plugin",
            "mysql-aurora-database-plugin",
            "mysql-rds-database-plugin",
            "mysql-legacy-database-plugin",
        ]
    }

    fn default_username_template(&self) -> &'static str {
        USERNAME_TEMPLATE
    }

    fn expiry_enforcement(&self) -> ExpiryEnforcement {
        ExpiryEnforcement::SchedulerOnly
    }

    fn runs_root_rotation_statements(&self) -> bool {
        true
    }

    fn connection_fields(&self) -> Vec<FieldDef> {
        let mut fields = common::connection_fields(
            "{{username}}:{{password}}@tcp(host:3306)/ (OpenBao's form) or \
             mysql://{{username}}:{{password}}@host:3306/?ssl-mode=…; the placeholders take \
             the username and password fields.",
        );
        fields.extend([
            FieldDef::new(
                "tls_certificate_key",
                FieldType::String,
                "OpenBao's form of a client certificate: the PEM certificate and its private \
                 key in one text (as tls_certificate and private_key).",
            )
            .secret(),
            FieldDef::new(
                "tls_skip_verify",
                FieldType::Bool,
                "Encrypt without checking the server's certificate (ssl-mode=required).",
            ),
            FieldDef::new(
                "tls_server_name",
                FieldType::String,
                "Accepted as OpenBao's engine takes it.",
            )
            .unused("the server's certificate is checked against the host in connection_url"),
        ]);
        fields
    }

    fn normalize_connection(
        &self,
        config: &mut ConnectionConfig,
        _: &Map<String, Value>,
    ) -> Result<(), Error> {
        let url_syntax = config
            .setting_str("connection_url")
            .is_some_and(|u| u.contains("://"));
        common::lift_literal_credentials(config, url_syntax);
        Ok(())
    }

    fn validate_connection(&self, config: &ConnectionConfig) -> Result<(), Error> {
        common::validate_connection(
            config,
            &url_form(config.setting_str("connection_url").unwrap_or_default())?,
            &["mysql", "mariadb"],
            "{{username}}:{{password}}@tcp(127.0.0.1:3306)/",
        )
    }

    fn reach(&self, config: &ConnectionConfig) -> Reach {
        let raw = config.setting_str("connection_url").unwrap_or_default();
        let url = url_form(raw).unwrap_or_else(|_| raw.to_owned());
        let mut reach =
            common::reach(
                config,
                &url,
                &["ssl-mode", "sslmode"],
                |mode, has_ca| match mode {
                    Some("disabled") => 0,
                    Some("preferred") => 2,
                    Some("required") => 3,
                    Some("verify_ca") => 4,
                    Some("verify_identity") => 5,
                    // mayfly verifies the server with tls_ca; without it sqlx prefers TLS.
                    _ if has_ca => 5,
                    _ => 2,
                },
            );
        if skips_verify(config) {
            // Encrypted, but any server's certificate is taken.
            reach.server_check = reach.server_check.min(3);
        }
        reach
    }

    async fn verify_connection(&self, config: &ConnectionConfig) -> Result<(), Error> {
        common::verify("MySQL", config, connect_options(config)?).await
    }

    async fn connect(&self, config: &ConnectionConfig) -> Result<Arc<dyn Target>, Error> {
        let options = connect_options(config)?;
        let pool = common::pool(config, options.clone())?;
        Ok(Arc::new(MySqlTarget {
            pool,
            options,
            secrets: common::connection_secrets(config),
        }))
    }

    fn role_fields(&self) -> Vec<FieldDef> {
        vec![
            FieldDef::new(
                "creation_statements",
                FieldType::Statements,
                "SQL run to create the user and grant it privileges, with {{name}}, \
                 {{password}} and {{host}}, e.g. CREATE USER '{{name}}'@'{{host}}' IDENTIFIED BY \
                 '{{password}}'; GRANT SELECT ON db.* TO '{{name}}'@'{{host}}'. If one fails, \
                 mayfly drops what the others created.",
            )
            .required(),
            FieldDef::new(
                "revocation_statements",
                FieldType::Statements,
                "SQL run to remove the user, with {{name}} and {{host}}. Without it, mayfly \
                 locks every account of that name, kills its sessions and drops it. Sessions \
                 are killed in both cases. A user already gone counts as revoked.",
            ),
            FieldDef::new(
                "rollback_statements",
                FieldType::Statements,
                "SQL run, with {{name}} and {{host}}, instead of revocation_statements to remove \
                 a user whose issuance did not finish after its create succeeded (a failed \
                 ledger write, a crash). Never run for a name that was taken.",
            ),
            FieldDef::new(
                "renew_statements",
                FieldType::Statements,
                "Accepted as OpenBao's engine takes it.",
            )
            .unused(
                "MySQL accounts have no expiry of their own; mayfly revokes them at the deadline",
            ),
            FieldDef::new(
                "host",
                FieldType::String,
                "The host pattern of the account, for {{host}} in statements ('%' is any host).",
            )
            .default(FieldValue::String("%".into())),
        ]
        .into_iter()
        .chain(mayfly::credential_type::fields())
        .collect()
    }

    fn validate_role(&self, settings: &Map<String, Value>, sample_name: &str) -> Result<(), Error> {
        mayfly::credential_type::check(self.kind(), settings)?;
        if list(settings, "creation_statements").is_empty() {
            return Err(Error::bad_request(
                "field 'creation_statements' is required: MySQL users get their privileges \
                 from GRANT statements",
            ));
        }
        common::creation_mentions_name(settings)?;
        let host = host_pattern(settings);
        check_host(host)?;
        let sample = Values {
            name: sample_name,
            password: Some("Sample0password"),
            expiration: Some("2000-01-01 00:00:00+0000"),
            host: Some(host),
        };
        common::validate_statements(
            settings,
            &[
                "creation_statements",
                "revocation_statements",
                "rollback_statements",
            ],
            &sample,
            Dialect::MySql,
        )
    }

    fn validate_rotation_statements(
        &self,
        statements: &[String],
        username: &str,
    ) -> Result<(), Error> {
        common::validate_rotation_statements(statements, username, Dialect::MySql)
    }

    fn validate_principal(&self, name: &str) -> Result<(), Error> {
        if name.is_empty() || name.chars().count() > MAX_NAME {
            return Err(Error::bad_request(format!(
                "a MySQL user name must be 1 to {MAX_NAME} characters, got {}",
                name.chars().count()
            )));
        }
        if name
            .chars()
            .any(|c| matches!(c, '\'' | '"' | '`' | '\\') || c.is_control())
        {
            return Err(Error::bad_request(format!(
                "user name '{}' contains a quote, a backslash or a control character",
                name.escape_default()
            )));
        }
        Ok(())
    }
}

fn host_pattern(settings: &Map<String, Value>) -> &str {
    settings.get("host").and_then(Value::as_str).unwrap_or("%")
}

/// A host pattern: a name, an address, a netmask or a `%`/`_` wildcard pattern.
fn check_host(host: &str) -> Result<(), Error> {
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '%' | ':' | '/'));
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "field 'host': expected a host pattern such as %, 10.0.0.% or db.example.com, got '{}'",
            host.escape_default()
        )))
    }
}

/// MySQL's "Operation CREATE USER failed": the account exists.
const ER_CANNOT_USER: u16 = 1396;

/// MySQL's own number of a server error.
fn mysql_error_number(e: &sqlx::Error) -> Option<u16> {
    e.as_database_error()?
        .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        .map(|m| m.number())
}

/// A pool on one MySQL server, as configured by one connection.
struct MySqlTarget {
    pool: MySqlPool,
    /// What the pool connects with; login checks swap in another user and password.
    options: MySqlConnectOptions,
    /// The connection's own secrets, removed from every error message.
    secrets: Vec<SecretString>,
}

/// `'user'@'host'`. Names read back from the server (orphans) may hold anything: quotes are
/// doubled and backslashes escaped, which keeps the literal closed whether or not the server
/// runs with NO_BACKSLASH_ESCAPES (there, a name with a backslash is merely not found).
fn account(user: &str, host: &str) -> String {
    let literal = |s: &str| quote_literal(&s.replace('\\', "\\\\"));
    format!("{}@{}", literal(user), literal(host))
}

/// `?, ?, ?` for `n` bound values.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

impl MySqlTarget {
    /// The core's error for a failed operation, with every secret removed. Failures to reach
    /// the server at all are `Unavailable`: nothing was done.
    fn fail(&self, what: &str, e: &sqlx::Error, extra: &[&str]) -> Error {
        let mut secrets: Vec<&str> = self.secrets.iter().map(|s| s.expose_secret()).collect();
        secrets.extend_from_slice(extra);
        let text = redact(&e.to_string(), &secrets);
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                Error::Unavailable(format!("MySQL cannot be reached ({what}): {text}"))
            }
            _ => Error::Target(format!("MySQL {what}: {text}")),
        }
    }

    /// Every account (user and host) whose user name is in `names`.
    async fn accounts(&self, names: &[String]) -> Result<Vec<(String, String)>, Error> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        // CAST: mysql.user's columns are binary-collated, which sqlx would not decode as text.
        let sql = format!(
            "SELECT CAST(User AS CHAR), CAST(Host AS CHAR) FROM mysql.user WHERE User IN ({})",
            placeholders(names.len())
        );
        let mut query = sqlx::query_as::<_, (String, String)>(&sql);
        for n in names {
            query = query.bind(n);
        }
        query
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.fail("cannot look up users", &e, &[]))
    }

    async fn execute(&self, what: &str, sql: &str, extra: &[&str]) -> Result<(), Error> {
        sqlx::raw_sql(sql)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| self.fail(what, &e, extra))
    }

    /// Ends every session of these users (DROP USER leaves open sessions running), and returns
    /// the users some of whose sessions the connection's user may not end: one without `SUPER`
    /// or `CONNECTION ADMIN`, as on managed services. Their accounts go all the same.
    async fn kill_sessions(&self, names: &[String]) -> Result<Vec<String>, Error> {
        let sql = format!(
            "SELECT CAST(ID AS SIGNED), CAST(USER AS CHAR) FROM information_schema.PROCESSLIST \
             WHERE USER IN ({}) AND ID <> CONNECTION_ID()",
            placeholders(names.len())
        );
        let mut query = sqlx::query_as::<_, (i64, String)>(&sql);
        for n in names {
            query = query.bind(n);
        }
        let ids = query
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.fail("cannot list sessions", &e, &[]))?;
        let mut left: Vec<String> = Vec::new();
        for (id, user) in ids {
            let killed = sqlx::raw_sql(&format!("KILL CONNECTION {id}"))
                .execute(&self.pool)
                .await;
            match killed {
                Ok(_) => {}
                Err(e) if mysql_error_number(&e) == Some(NO_SUCH_THREAD) => {}
                Err(e) if mysql_error_number(&e) == Some(KILL_DENIED) => {
                    if !left.contains(&user) {
                        left.push(user);
                    }
                }
                Err(e) => return Err(self.fail("refused to end a session", &e, &[])),
            }
        }
        Ok(left)
    }

    /// Locks, disconnects and drops every account in `accounts`, in one statement each;
    /// returns the users whose sessions could not be ended ([`MySqlTarget::kill_sessions`]).
    async fn drop_accounts(&self, accounts: &[(String, String)]) -> Result<Vec<String>, Error> {
        if accounts.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = accounts.iter().map(|(u, h)| account(u, h)).collect();
        let list = list.join(", ");
        let mut names: Vec<String> = accounts.iter().map(|(u, _)| u.clone()).collect();
        names.dedup();
        // No new logins, then end the open sessions, then drop: nobody slips in between.
        self.execute(
            "refused to lock the users",
            &format!("ALTER USER {list} ACCOUNT LOCK"),
            &[],
        )
        .await?;
        let left = self.kill_sessions(&names).await?;
        self.execute(
            "refused the revocation",
            &format!("DROP USER IF EXISTS {list}"),
            &[],
        )
        .await?;
        Ok(left)
    }
}

/// Runs each statement in turn on `conn`; the first failure stops it, with its index.
async fn run_each(conn: &mut MySqlConnection, sql: &[String]) -> Result<(), (usize, sqlx::Error)> {
    for (i, stmt) in sql.iter().enumerate() {
        // A query without arguments goes as text (COM_QUERY), as `raw_sql` would send it.
        sqlx::Executor::execute(&mut *conn, stmt.as_str())
            .await
            .map_err(|e| (i, e))?;
    }
    Ok(())
}

#[async_trait]
impl Target for MySqlTarget {
    async fn close(&self) {
        self.pool.close().await;
    }

    async fn exists(&self, name: &str, _: &Map<String, Value>) -> Result<bool, Error> {
        Ok(!self.accounts(&[name.to_owned()]).await?.is_empty())
    }

    async fn create(&self, p: &NewPrincipal<'_>) -> Result<Created, Error> {
        let password = p.password.expose_secret();
        let values = Values {
            name: p.name,
            password: Some(password),
            expiration: Some(&common::expiration(p.expires)),
            host: Some(host_pattern(p.settings)),
        };
        let sql = common::render_all(
            "creation_statements",
            &list(p.settings, "creation_statements"),
            &values,
            Dialect::MySql,
        )?;
        // All on one connection: one checkout and one return (which sqlx tests with a round
        // trip) per user, not one per statement. It goes back before any undo below, which
        // takes connections of its own.
        let run = async {
            let mut conn = self
                .pool
                .acquire()
                .await
                .map_err(|e| self.fail("cannot get a connection", &e, &[]))?;
            run_each(&mut conn, &sql).await.map_err(|(i, e)| {
                // ER_CANNOT_USER on the first statement: CREATE USER found the account there
                // (made since issuance found the name free) and changed nothing. It is someone
                // else's, so nothing is undone.
                if i == 0 && mysql_error_number(&e) == Some(ER_CANNOT_USER) {
                    return Error::Conflict(format!("MySQL already has a user named '{}'", p.name));
                }
                let what = format!("refused creation statement {}", i + 1);
                self.fail(&what, &e, &[password])
            })
        };
        // MySQL commits each DDL statement on its own: there is no transaction to roll back,
        // so a failure midway is undone by dropping what was created.
        let result = run.await;
        if let Err(e @ Error::Conflict(_)) = result {
            return Err(e);
        }
        if let Err(e) = result {
            let undo = async {
                let created = self.accounts(&[p.name.to_owned()]).await?;
                self.drop_accounts(&created).await.map(|_| ())
            };
            if let Err(undo_error) = undo.await {
                tracing::warn!(
                    user = p.name,
                    error = %undo_error,
                    "could not drop a partly created MySQL user; the scheduler retries"
                );
            }
            return Err(e);
        }
        Ok(Created::default())
    }

    async fn renew(&self, p: &Principal, _: u64, _: &Map<String, Value>) -> Result<(), Error> {
        // Nothing to move on the server: the deadline lives in the ledger alone.
        let name = &p.name;
        if self.accounts(&[name.to_owned()]).await?.is_empty() {
            return Err(Error::Target(format!(
                "user '{name}' no longer exists in MySQL"
            )));
        }
        Ok(())
    }

    async fn revoke(
        &self,
        principals: &[Principal],
        settings: &Map<String, Value>,
    ) -> Result<Revoked, Error> {
        let names = &mayfly::backend::names(principals);
        let accounts = self.accounts(names).await?;
        let exists = |n: &String| accounts.iter().any(|(u, _)| u == n);
        let existing: Vec<String> = names.iter().filter(|n| exists(n)).cloned().collect();
        let mut outcome = Revoked {
            removed: existing.len(),
            already_gone: names.iter().filter(|n| !exists(n)).cloned().collect(),
            ..Revoked::default()
        };
        if existing.is_empty() {
            return Ok(outcome);
        }
        let left_running = |left: Vec<String>| -> Vec<(String, String)> {
            left.into_iter()
                .map(|u| {
                    (
                        u,
                        "its open sessions could not be ended (the connection's user lacks \
                         CONNECTION ADMIN or SUPER); it can no longer log in"
                            .to_owned(),
                    )
                })
                .collect()
        };
        let custom = list(settings, "revocation_statements");
        if custom.is_empty() {
            outcome.caveats = left_running(self.drop_accounts(&accounts).await?);
            return Ok(outcome);
        }
        for name in &existing {
            let values = Values {
                name,
                password: None,
                expiration: None,
                host: Some(host_pattern(settings)),
            };
            for stmt in
                common::render_all("revocation_statements", &custom, &values, Dialect::MySql)?
            {
                self.execute("refused the revocation", &stmt, &[]).await?;
            }
        }
        outcome.caveats = left_running(self.kill_sessions(&existing).await?);
        Ok(outcome)
    }

    async fn list_marked(
        &self,
        mark: &str,
        _: &Map<String, Value>,
    ) -> Result<Vec<Principal>, Error> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT CAST(User AS CHAR) FROM mysql.user \
             WHERE LEFT(User, CHAR_LENGTH(?)) = ? ORDER BY 1",
        )
        .bind(mark)
        .bind(mark)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.fail("cannot list users", &e, &[]))?;
        Ok(names.into_iter().map(Principal::named).collect())
    }

    async fn rotate_root(&self, new_password: &SecretString) -> Result<(), Error> {
        let password = new_password.expose_secret();
        common::check_sendable(password)?;
        // The account is named: MariaDB 10.11 accepts `ALTER USER CURRENT_USER() …` and
        // silently changes nothing.
        let current: String = sqlx::query_scalar("SELECT CAST(CURRENT_USER() AS CHAR)")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.fail("cannot tell mayfly's own account", &e, &[]))?;
        let Some((user, host)) = current.rsplit_once('@') else {
            return Err(Error::Target(format!(
                "MySQL gave CURRENT_USER() as '{}', not user@host",
                current.escape_default()
            )));
        };
        let sql = format!(
            "ALTER USER {} IDENTIFIED BY {}",
            account(user, host),
            quote_literal(password)
        );
        self.execute("refused the new password", &sql, &[password])
            .await
    }

    async fn set_password(
        &self,
        username: &str,
        password: &SecretString,
        statements: &[String],
    ) -> Result<(), Error> {
        let secret = password.expose_secret();
        common::check_sendable(secret)?;
        let accounts = self.accounts(&[username.to_owned()]).await?;
        if accounts.is_empty() {
            return Err(Error::Target(format!(
                "user '{username}' does not exist in MySQL"
            )));
        }
        if statements.is_empty() {
            // Every account of the name (one per host pattern), in one statement.
            let each: Vec<String> = accounts
                .iter()
                .map(|(u, h)| format!("{} IDENTIFIED BY {}", account(u, h), quote_literal(secret)))
                .collect();
            let sql = format!("ALTER USER {}", each.join(", "));
            return self
                .execute("refused the new password", &sql, &[secret])
                .await;
        }
        // The statements once per account, with its host as {{host}}.
        for (_, host) in &accounts {
            let values = Values {
                name: username,
                password: Some(secret),
                expiration: None,
                host: Some(host),
            };
            for (i, stmt) in
                common::render_all("rotation_statements", statements, &values, Dialect::MySql)?
                    .iter()
                    .enumerate()
            {
                let what = format!("refused rotation statement {}", i + 1);
                self.execute(&what, stmt, &[secret]).await?;
            }
        }
        Ok(())
    }

    async fn check_login(&self, username: &str, password: &SecretString) -> Result<bool, Error> {
        let secret = password.expose_secret();
        let options = self.options.clone().username(username).password(secret);
        common::check_login("MySQL", options, secret, |db| {
            db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .is_some_and(|m| LOGIN_REFUSED.contains(&m.number()))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openbao_dsn_becomes_a_url() {
        assert_eq!(
            url_form("{{username}}:{{password}}@tcp(127.0.0.1:3306)/app?tls=false").unwrap(),
            "mysql://{{username}}:{{password}}@127.0.0.1:3306/app?tls=false"
        );
        assert_eq!(url_form("tcp(db:3306)/").unwrap(), "mysql://db:3306/");
        assert_eq!(url_form("mysql://u@h:1/").unwrap(), "mysql://u@h:1/");
        assert!(url_form("u@unix(/run/mysqld.sock)/").is_err());
        assert!(url_form("u@tcp(h:1/").is_err());
    }

    #[test]
    fn names_and_hosts_are_checked() {
        assert!(MySql.validate_principal(&"a".repeat(32)).is_ok());
        assert!(MySql.validate_principal(&"a".repeat(33)).is_err());
        assert!(MySql.validate_principal("a'b").is_err());
        assert!(check_host("10.0.%").is_ok());
        assert!(check_host("a' OR 1").is_err());
        assert_eq!(account("mf-a", "%"), "'mf-a'@'%'");
        assert_eq!(account("mf-a\\'x", "%"), "'mf-a\\\\''x'@'%'");
    }
}
