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
use mayfly::{Backend, Error, ExpiryEnforcement, Reach, Standing, Target};
use serde_json::{Map, Value, json};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};

use crate::common::{self, list};
use crate::statements::{Syntax, Values, quote_literal};
use crate::target::{Account, Caveats, Dialect, SqlTarget};

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
        Ok(Arc::new(SqlTarget {
            pool,
            options,
            secrets: common::connection_secrets(config),
            dialect: My,
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
            Syntax::MySql,
        )
    }

    fn validate_rotation_statements(
        &self,
        statements: &[String],
        username: &str,
    ) -> Result<(), Error> {
        common::validate_rotation_statements(statements, username, Syntax::MySql)
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

/// MySQL's (and MariaDB's) dialect of the SQL target.
pub struct My;

type MySqlTarget = SqlTarget<My>;

/// `'user'@'host'`. Names read back from the server (orphans) may hold anything: quotes are
/// doubled and backslashes escaped, which keeps the literal closed whether or not the server
/// runs with NO_BACKSLASH_ESCAPES (there, a name with a backslash is merely not found).
fn account(user: &str, host: &str) -> String {
    let literal = |s: &str| quote_literal(&s.replace('\\', "\\\\"));
    format!("{}@{}", literal(user), literal(host))
}

/// `'user'@'host'` of an account read from the server.
fn account_of(a: &Account) -> String {
    account(&a.user, a.host.as_deref().unwrap_or("%"))
}

/// `?, ?, ?` for `n` bound values.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

async fn execute(t: &MySqlTarget, what: &str, sql: &str, extra: &[&str]) -> Result<(), Error> {
    sqlx::raw_sql(sql)
        .execute(&t.pool)
        .await
        .map(|_| ())
        .map_err(|e| t.fail(what, &e, extra))
}

/// Ends every session of these users (DROP USER leaves open sessions running), and returns
/// the users some of whose sessions the connection's user may not end: one without `SUPER`
/// or `CONNECTION ADMIN`, as on managed services. Their accounts go all the same.
async fn kill_sessions(t: &MySqlTarget, names: &[String]) -> Result<Caveats, Error> {
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
        .fetch_all(&t.pool)
        .await
        .map_err(|e| t.fail("cannot list sessions", &e, &[]))?;
    let mut left: Vec<String> = Vec::new();
    for (id, user) in ids {
        let killed = sqlx::raw_sql(&format!("KILL CONNECTION {id}"))
            .execute(&t.pool)
            .await;
        match killed {
            Ok(_) => {}
            Err(e) if mysql_error_number(&e) == Some(NO_SUCH_THREAD) => {}
            Err(e) if mysql_error_number(&e) == Some(KILL_DENIED) => {
                if !left.contains(&user) {
                    left.push(user);
                }
            }
            Err(e) => return Err(t.fail("refused to end a session", &e, &[])),
        }
    }
    Ok(left
        .into_iter()
        .map(|u| {
            (
                u,
                "its open sessions could not be ended (the connection's user lacks CONNECTION \
                 ADMIN or SUPER); it can no longer log in"
                    .to_owned(),
            )
        })
        .collect())
}

/// Locks, disconnects and drops every account in `accounts`, in one statement each; returns
/// the users whose sessions could not be ended ([`kill_sessions`]).
async fn drop_accounts(t: &MySqlTarget, accounts: &[Account]) -> Result<Caveats, Error> {
    if accounts.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<String> = accounts.iter().map(account_of).collect();
    let list = list.join(", ");
    let mut names: Vec<String> = accounts.iter().map(|a| a.user.clone()).collect();
    names.dedup();
    // No new logins, then end the open sessions, then drop: nobody slips in between.
    execute(
        t,
        "refused to lock the users",
        &format!("ALTER USER {list} ACCOUNT LOCK"),
        &[],
    )
    .await?;
    let left = kill_sessions(t, &names).await?;
    execute(
        t,
        "refused the revocation",
        &format!("DROP USER IF EXISTS {list}"),
        &[],
    )
    .await?;
    Ok(left)
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
impl Dialect for My {
    type Db = sqlx::MySql;
    const SERVER: &'static str = "MySQL";
    const SYNTAX: Syntax = Syntax::MySql;

    async fn accounts(t: &MySqlTarget, names: &[String]) -> Result<Vec<Account>, Error> {
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
        let found = query
            .fetch_all(&t.pool)
            .await
            .map_err(|e| t.fail("cannot look up users", &e, &[]))?;
        Ok(found
            .into_iter()
            .map(|(user, host)| Account {
                user,
                host: Some(host),
            })
            .collect())
    }

    fn host(settings: &Map<String, Value>) -> Option<&str> {
        Some(host_pattern(settings))
    }

    /// None: a MySQL role must give its creation statements (checked when it is written).
    fn default_creation(_: &str, _: &str, _: &str, _: &Map<String, Value>) -> Vec<String> {
        Vec::new()
    }

    async fn run_creation(
        t: &MySqlTarget,
        name: &str,
        sql: Vec<String>,
        secrets: &[&str],
    ) -> Result<(), Error> {
        // All on one connection: one checkout and one return (which sqlx tests with a round
        // trip) per user, not one per statement. It goes back before any undo below, which
        // takes connections of its own.
        let run = async {
            let mut conn = t
                .pool
                .acquire()
                .await
                .map_err(|e| t.fail("cannot get a connection", &e, &[]))?;
            run_each(&mut conn, &sql).await.map_err(|(i, e)| {
                // ER_CANNOT_USER on the first statement: CREATE USER found the account there
                // (made since issuance found the name free) and changed nothing. It is someone
                // else's, so nothing is undone.
                if i == 0 && mysql_error_number(&e) == Some(ER_CANNOT_USER) {
                    return Error::Conflict(format!("MySQL already has a user named '{name}'"));
                }
                let what = format!("refused creation statement {}", i + 1);
                t.fail(&what, &e, secrets)
            })
        };
        // MySQL commits each DDL statement on its own: there is no transaction to roll back,
        // so a failure midway is undone by dropping what was created.
        match run.await {
            Ok(()) => Ok(()),
            Err(e @ Error::Conflict(_)) => Err(e),
            Err(e) => {
                let undo = async {
                    let created = My::accounts(t, &[name.to_owned()]).await?;
                    drop_accounts(t, &created).await.map(|_| ())
                };
                if let Err(undo_error) = undo.await {
                    tracing::warn!(
                        user = name,
                        error = %undo_error,
                        "could not drop a partly created MySQL user; the scheduler retries"
                    );
                }
                Err(e)
            }
        }
    }

    /// None: MySQL has no per-user expiry; the deadline lives in the ledger alone.
    fn default_renewal(_: &str, _: &str) -> Option<String> {
        None
    }

    /// One statement at a time: MySQL commits each DDL statement on its own.
    async fn run_together(
        t: &MySqlTarget,
        what: &str,
        sql: Vec<String>,
        secrets: &[&str],
    ) -> Result<(), Error> {
        let several = sql.len() > 1;
        for (i, stmt) in sql.iter().enumerate() {
            let what = if several {
                format!("{what} (statement {})", i + 1)
            } else {
                what.to_owned()
            };
            execute(t, &what, stmt, secrets).await?;
        }
        Ok(())
    }

    async fn after_revocation_statements(
        t: &MySqlTarget,
        users: &[String],
    ) -> Result<Caveats, Error> {
        kill_sessions(t, users).await
    }

    async fn drop_users(
        t: &MySqlTarget,
        _: &[String],
        accounts: &[Account],
    ) -> Result<Caveats, Error> {
        drop_accounts(t, accounts).await
    }

    async fn list_marked(t: &MySqlTarget, mark: &str) -> Result<Vec<String>, Error> {
        sqlx::query_scalar(
            "SELECT DISTINCT CAST(User AS CHAR) FROM mysql.user \
             WHERE LEFT(User, CHAR_LENGTH(?)) = ? ORDER BY 1",
        )
        .bind(mark)
        .bind(mark)
        .fetch_all(&t.pool)
        .await
        .map_err(|e| t.fail("cannot list users", &e, &[]))
    }

    async fn inventory(t: &MySqlTarget) -> Result<Vec<Standing>, Error> {
        // An account with an empty host is a MariaDB role, which cannot log in.
        type Row = (String, String, i64, i64, i64, i64, i64);
        let me: String = sqlx::query_scalar("SELECT CAST(CURRENT_USER() AS CHAR)")
            .fetch_one(&t.pool)
            .await
            .map_err(|e| t.fail("cannot tell mayfly's own account", &e, &[]))?;
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT CAST(u.User AS CHAR), CAST(u.Host AS CHAR), \
                 CAST(u.Super_priv = 'Y' AS SIGNED), CAST(u.Create_user_priv = 'Y' AS SIGNED), \
                 CAST(u.Grant_priv = 'Y' AS SIGNED), \
                 (SELECT COUNT(*) FROM mysql.db d WHERE d.User = u.User AND d.Host = u.Host), \
                 (SELECT COUNT(*) FROM mysql.tables_priv p \
                  WHERE p.User = u.User AND p.Host = u.Host) \
             FROM mysql.user u WHERE u.Host <> '' ORDER BY 1, 2",
        )
        .fetch_all(&t.pool)
        .await
        .map_err(|e| t.fail("cannot list accounts", &e, &[]))?;
        // One principal per user name, as mayfly creates and drops them: its accounts are
        // the hosts it may log in from, each with its own privileges.
        let mut out: Vec<Standing> = Vec::new();
        for (name, host, sup, create_user, grant, db, tables) in rows {
            let own = me == format!("{name}@{host}");
            let account = json!({
                "host": host,
                "super": sup == 1,
                "create_user": create_user == 1,
                "grant_option": grant == 1,
                "database_grants": db,
                "table_grants": tables,
            });
            if out.last().is_none_or(|s| s.name != name) {
                let mut power = Map::new();
                power.insert("accounts".into(), Value::Array(Vec::new()));
                out.push(Standing {
                    name,
                    own: false,
                    power,
                });
            }
            let last = out.last_mut().expect("pushed above");
            last.own |= own;
            if let Some(Value::Array(accounts)) = last.power.get_mut("accounts") {
                accounts.push(account);
            }
        }
        Ok(out)
    }

    async fn rotate_root(t: &MySqlTarget, password: &str) -> Result<(), Error> {
        // The account is named: MariaDB 10.11 accepts `ALTER USER CURRENT_USER() …` and
        // silently changes nothing.
        let current: String = sqlx::query_scalar("SELECT CAST(CURRENT_USER() AS CHAR)")
            .fetch_one(&t.pool)
            .await
            .map_err(|e| t.fail("cannot tell mayfly's own account", &e, &[]))?;
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
        execute(t, "refused the new password", &sql, &[password]).await
    }

    /// Every account of the name (one per host pattern), in one statement.
    fn default_set_password(accounts: &[Account], password: &str) -> Vec<String> {
        let each: Vec<String> = accounts
            .iter()
            .map(|a| {
                format!(
                    "{} IDENTIFIED BY {}",
                    account_of(a),
                    quote_literal(password)
                )
            })
            .collect();
        vec![format!("ALTER USER {}", each.join(", "))]
    }

    fn login_options(
        options: &MySqlConnectOptions,
        username: &str,
        password: &str,
    ) -> MySqlConnectOptions {
        options.clone().username(username).password(password)
    }

    fn login_refused(e: &dyn sqlx::error::DatabaseError) -> bool {
        e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .is_some_and(|m| LOGIN_REFUSED.contains(&m.number()))
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
