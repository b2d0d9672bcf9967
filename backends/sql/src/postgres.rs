//! The `postgres` kind: connections to PostgreSQL through sqlx.
//!
//! `connection_url` follows OpenBao's database engine: `postgres://{{username}}:{{password}}@host/db`.
//! The password never enters the URL text that sqlx parses (and may echo in an error): the
//! placeholder is parsed as is and the password is set on the parsed options afterwards.

use std::borrow::Cow;
use std::num::NonZeroU32;
use std::sync::Arc;

use async_trait::async_trait;
use mayfly::ConnectionConfig;
use mayfly::fields::{FieldDef, FieldType, FieldValue};
use mayfly::redact::redact;
use mayfly::{Backend, Created, Error, NewPrincipal, Principal, Reach, Revoked, Target};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgPool};

use crate::common::{self, expiration, list};
use crate::scram;

mod options;
use crate::statements::{Dialect, Values, quote_identifier, quote_literal};
use options::{connect_options, keyword_dsn_to_url};

pub struct Postgres;

#[async_trait]
impl Backend for Postgres {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["postgresql", "postgresql-database-plugin"]
    }

    fn runs_root_rotation_statements(&self) -> bool {
        true
    }

    fn connection_fields(&self) -> Vec<FieldDef> {
        let mut fields = common::connection_fields(
            "postgres://{{username}}:{{password}}@host:5432/dbname?sslmode=…; the placeholders \
             take the username and password fields.",
        );
        fields.push(
            FieldDef::new(
                "password_authentication",
                FieldType::String,
                "How passwords reach the server: 'password' sends them as they are, for the \
                 server to hash; 'scram-sha-256' sends the SCRAM-SHA-256 verifier mayfly makes \
                 (as OpenBao's plugin does), so no server log or view ever holds the password. \
                 {{password}} in statements is then the verifier.",
            )
            .default(FieldValue::String(PLAIN.into())),
        );
        fields.push(FieldDef::new(
            "scram_iterations",
            FieldType::Int,
            "PBKDF2 rounds of the verifiers mayfly makes (password_authentication \
                 'scram-sha-256' only), 1 to 1000000. CREATE ROLE runs them once on the server, \
                 and every login once on the client. Rounds slow the guessing of weak passwords; \
                 the default generator's (32 letters and digits, about 190 bits) cannot be \
                 guessed, so a low count saves the server's CPU at no loss. Keep the default, \
                 4096 (PostgreSQL's), when a password_policy may make short passwords.",
        ));
        fields
    }

    fn normalize_connection(
        &self,
        config: &mut ConnectionConfig,
        _: &Map<String, Value>,
    ) -> Result<(), Error> {
        if let Some(url) = config
            .setting_str("connection_url")
            .map(keyword_dsn_to_url)
            .transpose()?
            .flatten()
        {
            config
                .settings
                .insert("connection_url".into(), Value::String(url));
        }
        common::lift_literal_credentials(config, true);
        Ok(())
    }

    fn validate_connection(&self, config: &ConnectionConfig) -> Result<(), Error> {
        sends_verifiers(config)?;
        common::validate_connection(
            config,
            config.setting_str("connection_url").unwrap_or_default(),
            &["postgres", "postgresql"],
            "postgres://{{username}}:{{password}}@localhost:5432/postgres",
        )
    }

    fn reach(&self, config: &ConnectionConfig) -> Reach {
        let url = config.setting_str("connection_url").unwrap_or_default();
        common::reach(config, url, &["sslmode"], |mode, has_ca| match mode {
            Some("disable") => 0,
            Some("allow") => 1,
            Some("prefer") => 2,
            Some("require") => 3,
            Some("verify_ca") => 4,
            Some("verify_full") => 5,
            // mayfly verifies the server with tls_ca; without it sqlx prefers TLS.
            _ if has_ca => 5,
            _ => 2,
        })
    }

    async fn verify_connection(&self, config: &ConnectionConfig) -> Result<(), Error> {
        common::verify("PostgreSQL", config, connect_options(config)?).await
    }

    async fn connect(&self, config: &ConnectionConfig) -> Result<Arc<dyn Target>, Error> {
        let options = connect_options(config)?;
        let pool = common::pool(config, options.clone())?;
        Ok(Arc::new(PgTarget {
            pool,
            options,
            secrets: common::connection_secrets(config),
            verifiers: sends_verifiers(config)?,
        }))
    }

    fn role_fields(&self) -> Vec<FieldDef> {
        vec![
            FieldDef::new(
                "creation_statements",
                FieldType::Statements,
                "SQL run in one transaction to create the user, with {{name}}, {{password}} and \
                 {{expiration}}. mayfly then always sets VALID UNTIL the deadline. Without it, \
                 mayfly creates a LOGIN user that is a member of member_of.",
            ),
            FieldDef::new(
                "revocation_statements",
                FieldType::Statements,
                "SQL run to remove the user, with {{name}}. Without it, mayfly blocks new \
                 logins, terminates the user's sessions and drops the user (reassigning and \
                 dropping what it owns if needed). A user already gone counts as revoked.",
            ),
            FieldDef::new(
                "renew_statements",
                FieldType::Statements,
                "SQL run on renew, with {{name}} and {{expiration}}. Without it, mayfly moves \
                 VALID UNTIL to the new deadline.",
            ),
            FieldDef::new(
                "rollback_statements",
                FieldType::Statements,
                "SQL run, with {{name}}, instead of revocation_statements to remove a user whose \
                 issuance did not finish after its create succeeded (a failed ledger write, a \
                 crash). Never run for a name that was taken.",
            ),
            FieldDef::new(
                "member_of",
                FieldType::StringList,
                "Group roles the user joins (grants by membership, not per-user object grants). \
                 Used when creation_statements is not given.",
            ),
        ]
        .into_iter()
        .chain(mayfly::credential_type::fields())
        .collect()
    }

    fn validate_role(&self, settings: &Map<String, Value>, sample_name: &str) -> Result<(), Error> {
        mayfly::credential_type::check(self.kind(), settings)?;
        let groups = list(settings, "member_of");
        for g in &groups {
            check_identifier(g)
                .map_err(|e| Error::bad_request(format!("field 'member_of': {e}")))?;
        }
        if list(settings, "creation_statements").is_empty() && groups.is_empty() {
            return Err(Error::bad_request(
                "field 'creation_statements' or 'member_of' is required: say how the user gets \
                 its privileges (statements, or group roles to join)",
            ));
        }
        common::creation_mentions_name(settings)?;
        let sample = Values {
            name: sample_name,
            password: Some("Sample0password"),
            expiration: Some("2000-01-01 00:00:00+0000"),
            host: None,
        };
        common::validate_statements(
            settings,
            &[
                "creation_statements",
                "revocation_statements",
                "renew_statements",
                "rollback_statements",
            ],
            &sample,
            Dialect::Postgres,
        )
    }

    fn validate_principal(&self, name: &str) -> Result<(), Error> {
        check_identifier(name).map_err(Error::bad_request)
    }

    fn validate_rotation_statements(
        &self,
        statements: &[String],
        username: &str,
    ) -> Result<(), Error> {
        common::validate_rotation_statements(statements, username, Dialect::Postgres)
    }
}

const PLAIN: &str = "password";
const SCRAM: &str = "scram-sha-256";

const MAX_ITERATIONS: i64 = 1_000_000;

/// The rounds of the SCRAM verifiers connection `config` sends instead of passwords, or `None`
/// when it sends passwords (`password_authentication`, `scram_iterations`).
fn sends_verifiers(config: &ConnectionConfig) -> Result<Option<NonZeroU32>, Error> {
    let scram = match config
        .setting_str("password_authentication")
        .unwrap_or(PLAIN)
    {
        PLAIN | "" => false,
        SCRAM => true,
        other => {
            return Err(Error::bad_request(format!(
                "field 'password_authentication': expected '{PLAIN}' or '{SCRAM}', got '{other}'"
            )));
        }
    };
    let iterations = match config.setting_i64("scram_iterations") {
        None => scram::DEFAULT_ITERATIONS,
        Some(n) if !scram && n != i64::from(scram::DEFAULT_ITERATIONS) => {
            return Err(Error::bad_request(format!(
                "field 'scram_iterations': applies only with password_authentication \
                 '{SCRAM}' (the server hashes passwords it receives with its own setting)"
            )));
        }
        Some(n) if (1..=MAX_ITERATIONS).contains(&n) => n as u32,
        Some(n) => {
            return Err(Error::bad_request(format!(
                "field 'scram_iterations': expected an integer from 1 to {MAX_ITERATIONS}, got {n}"
            )));
        }
    };
    Ok(scram.then(|| NonZeroU32::new(iterations).expect("checked above")))
}

/// A PostgreSQL role name mayfly will put in quotes: 1 to 63 bytes, no double quote, no
/// control characters.
fn check_identifier(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!(
            "a PostgreSQL role name must be 1 to 63 bytes, got {} bytes",
            name.len()
        ));
    }
    if name.chars().any(|c| c == '"' || c.is_control()) {
        return Err(format!(
            "role name '{}' contains a double quote or a control character",
            name.escape_default()
        ));
    }
    Ok(())
}

/// A pool on one PostgreSQL database, as configured by one connection.
struct PgTarget {
    pool: PgPool,
    /// What the pool connects with; login checks swap in another user and password.
    options: PgConnectOptions,
    /// The connection's own secrets, removed from every error message.
    secrets: Vec<SecretString>,
    /// Send SCRAM verifiers of this many rounds instead of passwords
    /// (`password_authentication`, `scram_iterations`).
    verifiers: Option<NonZeroU32>,
}

/// SQLSTATE 2BP01: the role still owns objects or holds privileges.
const DEPENDENT_OBJECTS: &str = "2BP01";
/// SQLSTATE 42710: a role (or other object) of that name exists.
const DUPLICATE_OBJECT: &str = "42710";
/// SQLSTATE 42501: the connection's user lacks a privilege (not superuser, not a member).
const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// SQLSTATEs of a refused login: 28P01 wrong password, 28000 no such role, or no LOGIN, or
/// refused by pg_hba.conf.
const LOGIN_REFUSED: [&str; 2] = ["28P01", "28000"];

impl PgTarget {
    /// The core's error for a failed operation, with every secret removed. Failures to reach
    /// the server at all are `Unavailable`: nothing was done.
    fn fail(&self, what: &str, e: &sqlx::Error, extra: &[&str]) -> Error {
        let mut secrets: Vec<&str> = self.secrets.iter().map(|s| s.expose_secret()).collect();
        secrets.extend_from_slice(extra);
        let text = redact(&e.to_string(), &secrets);
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                Error::Unavailable(format!("PostgreSQL cannot be reached ({what}): {text}"))
            }
            _ => Error::Target(format!("PostgreSQL {what}: {text}")),
        }
    }

    /// What goes into SQL in place of `password`: the password, or its SCRAM verifier.
    fn as_sent<'a>(&self, password: &'a str) -> Cow<'a, str> {
        match self
            .verifiers
            .and_then(|rounds| scram::verifier(password, rounds))
        {
            Some(verifier) => Cow::Owned(verifier),
            None => Cow::Borrowed(password),
        }
    }

    /// Takes from `users` the privileges they were granted in this database, the way
    /// OpenBao's own engine does for an admin that is not superuser: on everything in each
    /// schema where they hold one (and `public`), the schemas themselves, and the database.
    /// Each statement runs on its own and a refused one is passed over: what the admin granted
    /// it can take back, and what remains makes the DROP ROLE that follows fail and say why.
    async fn revoke_grants(&self, users: &[String]) -> Result<(), Error> {
        let schemas: Vec<String> = sqlx::query_scalar(
            "SELECT table_schema::text FROM information_schema.role_table_grants \
             WHERE grantee = ANY($1) \
             UNION SELECT table_schema::text FROM information_schema.role_column_grants \
             WHERE grantee = ANY($1) \
             UNION SELECT 'public'",
        )
        .bind(users)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.fail("cannot look up the users' privileges", &e, &[]))?;
        let list = users
            .iter()
            .map(|n| quote_identifier(n))
            .collect::<Vec<_>>()
            .join(", ");
        let mut sql = Vec::new();
        for schema in &schemas {
            let s = quote_identifier(schema);
            for what in ["TABLES", "SEQUENCES", "FUNCTIONS"] {
                sql.push(format!(
                    "REVOKE ALL PRIVILEGES ON ALL {what} IN SCHEMA {s} FROM {list}"
                ));
            }
            sql.push(format!("REVOKE ALL ON SCHEMA {s} FROM {list}"));
        }
        sql.push(format!(
            "DO $$ BEGIN EXECUTE format('REVOKE ALL ON DATABASE %I FROM {}', \
             current_database()); END $$",
            list.replace('\'', "''").replace('%', "%%")
        ));
        for stmt in sql {
            if let Err(e) = sqlx::raw_sql(&stmt).execute(&self.pool).await {
                tracing::debug!(error = %e, "a revocation of privileges was refused; going on");
            }
        }
        Ok(())
    }

    async fn existing(&self, names: &[String]) -> Result<Vec<String>, Error> {
        sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1)")
            .bind(names)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.fail("cannot look up roles", &e, &[]))
    }
}

fn render_all(field: &str, stmts: &[String], values: &Values<'_>) -> Result<Vec<String>, Error> {
    common::render_all(field, stmts, values, Dialect::Postgres)
}

/// The SQLSTATE of a database error.
fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// Runs `sql` in one transaction, all of it or none, in one round trip: PostgreSQL runs the
/// statements of one simple-protocol query as a single transaction. Each statement ends on a
/// new line, so a trailing `--` comment cannot swallow the separator.
async fn run_in_transaction(pool: &PgPool, sql: Vec<String>) -> Result<(), sqlx::Error> {
    let script: String = sql.iter().map(|s| format!("{s}\n;\n")).collect();
    sqlx::raw_sql(&script).execute(pool).await.map(|_| ())
}

#[async_trait]
impl Target for PgTarget {
    async fn close(&self) {
        self.pool.close().await;
    }

    async fn exists(&self, name: &str, _: &Map<String, Value>) -> Result<bool, Error> {
        Ok(!self.existing(&[name.to_owned()]).await?.is_empty())
    }

    async fn create(&self, p: &NewPrincipal<'_>) -> Result<Created, Error> {
        let plain = p.password.expose_secret();
        let password = &*self.as_sent(plain);
        let exp = expiration(p.expires);
        let values = Values {
            name: p.name,
            password: Some(password),
            expiration: Some(&exp),
            host: None,
        };
        let mut sql = render_all(
            "creation_statements",
            &list(p.settings, "creation_statements"),
            &values,
        )?;
        if sql.is_empty() {
            let groups: Vec<String> = list(p.settings, "member_of")
                .iter()
                .map(|g| quote_identifier(g))
                .collect();
            let mut create = format!(
                "CREATE ROLE {} WITH LOGIN PASSWORD {} VALID UNTIL {}",
                quote_identifier(p.name),
                quote_literal(password),
                quote_literal(&exp)
            );
            if !groups.is_empty() {
                create.push_str(&format!(" IN ROLE {}", groups.join(", ")));
            }
            sql.push(create);
        }
        // Whatever the statements said, the user stops working at its deadline.
        sql.push(format!(
            "ALTER ROLE {} VALID UNTIL {}",
            quote_identifier(p.name),
            quote_literal(&exp)
        ));
        match run_in_transaction(&self.pool, sql).await {
            Ok(()) => Ok(Created::default()),
            // duplicate_object: the transaction changed nothing; the role of that name (made
            // since issuance found the name free) belongs to someone else.
            Err(e)
                if sqlstate(&e).as_deref() == Some(DUPLICATE_OBJECT)
                    && self.exists(p.name, p.settings).await.unwrap_or(false) =>
            {
                Err(Error::Conflict(format!(
                    "PostgreSQL already has a role named '{}'",
                    p.name
                )))
            }
            Err(e) => Err(self.fail("refused the new user", &e, &[plain, password])),
        }
    }

    async fn renew(
        &self,
        p: &Principal,
        expires: u64,
        settings: &Map<String, Value>,
    ) -> Result<(), Error> {
        let name = p.name.as_str();
        if self.existing(&[name.to_owned()]).await?.is_empty() {
            return Err(Error::Target(format!(
                "user '{name}' no longer exists in PostgreSQL"
            )));
        }
        let exp = expiration(expires);
        let values = Values {
            name,
            password: None,
            expiration: Some(&exp),
            host: None,
        };
        let mut sql = render_all(
            "renew_statements",
            &list(settings, "renew_statements"),
            &values,
        )?;
        if sql.is_empty() {
            sql.push(format!(
                "ALTER ROLE {} VALID UNTIL {}",
                quote_identifier(name),
                quote_literal(&exp)
            ));
        }
        run_in_transaction(&self.pool, sql)
            .await
            .map_err(|e| self.fail("refused the renewal", &e, &[]))
    }

    async fn revoke(
        &self,
        principals: &[Principal],
        settings: &Map<String, Value>,
    ) -> Result<Revoked, Error> {
        let names = &mayfly::backend::names(principals);
        let existing = self.existing(names).await?;
        let outcome = Revoked {
            removed: existing.len(),
            already_gone: names
                .iter()
                .filter(|n| !existing.contains(n))
                .cloned()
                .collect(),
            ..Revoked::default()
        };
        if existing.is_empty() {
            return Ok(outcome);
        }
        let fail = |e: sqlx::Error| self.fail("refused the revocation", &e, &[]);
        let custom = list(settings, "revocation_statements");
        if !custom.is_empty() {
            let mut sql = Vec::new();
            for name in &existing {
                let values = Values {
                    name,
                    password: None,
                    expiration: None,
                    host: None,
                };
                sql.extend(render_all("revocation_statements", &custom, &values)?);
            }
            run_in_transaction(&self.pool, sql).await.map_err(fail)?;
            return Ok(outcome);
        }

        let quoted: Vec<String> = existing.iter().map(|n| quote_identifier(n)).collect();
        // No new sessions, then end the open ones, then drop: a user cannot slip in between.
        let nologin: String = quoted
            .iter()
            .map(|q| format!("ALTER ROLE {q} NOLOGIN;"))
            .collect();
        sqlx::raw_sql(&nologin)
            .execute(&self.pool)
            .await
            .map_err(fail)?;
        let mut outcome = outcome;
        let ended = sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY($1)",
        )
        .bind(&existing)
        .execute(&self.pool)
        .await;
        match ended {
            Ok(_) => {}
            // An admin that is neither superuser nor in pg_signal_backend may not end another
            // role's sessions (managed services): the users are dropped all the same, their
            // open sessions run until their clients leave, and the ledger says so.
            Err(e) if sqlstate(&e).as_deref() == Some(INSUFFICIENT_PRIVILEGE) => {
                outcome.caveats.extend(existing.iter().map(|n| {
                    (
                        n.clone(),
                        "its open sessions could not be ended (the connection's user may not \
                         signal them: grant it pg_signal_backend); it can no longer log in"
                            .to_owned(),
                    )
                }));
            }
            Err(e) => return Err(fail(e)),
        }
        let list = quoted.join(", ");
        let drop = format!("DROP ROLE IF EXISTS {list}");
        match run_in_transaction(&self.pool, vec![drop.clone()]).await {
            Ok(()) => Ok(outcome),
            Err(e) if sqlstate(&e).as_deref() == Some(DEPENDENT_OBJECTS) => {
                // The users own objects or hold grants of their own: hand the objects to
                // mayfly's user, drop the grants, then the users.
                let sql = vec![
                    format!("REASSIGN OWNED BY {list} TO CURRENT_USER"),
                    format!("DROP OWNED BY {list}"),
                    drop.clone(),
                ];
                match run_in_transaction(&self.pool, sql).await {
                    Ok(()) => Ok(outcome),
                    // REASSIGN and DROP OWNED need the privileges of the users, which an admin
                    // with CREATEROLE alone does not have (PostgreSQL 15: no membership;
                    // 16: the ADMIN OPTION its CREATE ROLE gave it, but no SET or INHERIT
                    // unless createrole_self_grant says so).
                    Err(e) if sqlstate(&e).as_deref() == Some(INSUFFICIENT_PRIVILEGE) => {
                        self.revoke_grants(&existing).await?;
                        run_in_transaction(&self.pool, vec![drop])
                            .await
                            .map_err(fail)?;
                        Ok(outcome)
                    }
                    Err(e) => Err(fail(e)),
                }
            }
            Err(e) => Err(fail(e)),
        }
    }

    async fn list_marked(
        &self,
        mark: &str,
        _: &Map<String, Value>,
    ) -> Result<Vec<Principal>, Error> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT rolname::text FROM pg_roles WHERE starts_with(rolname, $1) ORDER BY 1",
        )
        .bind(mark)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.fail("cannot list roles", &e, &[]))?;
        Ok(names.into_iter().map(Principal::named).collect())
    }

    async fn rotate_root(&self, new_password: &SecretString) -> Result<(), Error> {
        let plain = new_password.expose_secret();
        common::check_sendable(plain)?;
        let password = &*self.as_sent(plain);
        let sql = format!(
            "ALTER ROLE CURRENT_USER WITH PASSWORD {}",
            quote_literal(password)
        );
        sqlx::raw_sql(&sql)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| self.fail("refused the new password", &e, &[plain, password]))
    }

    async fn set_password(
        &self,
        username: &str,
        password: &SecretString,
        statements: &[String],
    ) -> Result<(), Error> {
        let plain = password.expose_secret();
        common::check_sendable(plain)?;
        let secret = &*self.as_sent(plain);
        if self.existing(&[username.to_owned()]).await?.is_empty() {
            return Err(Error::Target(format!(
                "user '{username}' does not exist in PostgreSQL"
            )));
        }
        let values = Values {
            name: username,
            password: Some(secret),
            expiration: None,
            host: None,
        };
        let mut sql = render_all("rotation_statements", statements, &values)?;
        if sql.is_empty() {
            sql.push(format!(
                "ALTER ROLE {} WITH PASSWORD {}",
                quote_identifier(username),
                quote_literal(secret)
            ));
        }
        run_in_transaction(&self.pool, sql)
            .await
            .map_err(|e| self.fail("refused the new password", &e, &[plain, secret]))
    }

    async fn check_login(&self, username: &str, password: &SecretString) -> Result<bool, Error> {
        let secret = password.expose_secret();
        let options = self.options.clone().username(username).password(secret);
        common::check_login("PostgreSQL", options, secret, |db| {
            db.code()
                .is_some_and(|c| LOGIN_REFUSED.contains(&c.as_ref()))
        })
        .await
    }
}
