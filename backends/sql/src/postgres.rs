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
use mayfly::{Backend, Error, Reach, Standing, Target};
use serde_json::{Map, Value, json};
use sqlx::postgres::{PgConnectOptions, PgPool};

use crate::common::{self, list};
use crate::scram;
use crate::statements::{Syntax, Values, quote_identifier, quote_literal};
use crate::target::{Account, Caveats, Dialect, SqlTarget};

mod options;
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
        Ok(Arc::new(SqlTarget {
            pool,
            options,
            secrets: common::connection_secrets(config),
            dialect: Pg {
                verifiers: sends_verifiers(config)?,
            },
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
            Syntax::Postgres,
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
        common::validate_rotation_statements(statements, username, Syntax::Postgres)
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

/// PostgreSQL's dialect of the SQL target.
pub struct Pg {
    /// Send SCRAM verifiers of this many rounds instead of passwords
    /// (`password_authentication`, `scram_iterations`).
    verifiers: Option<NonZeroU32>,
}

type PgTarget = SqlTarget<Pg>;

/// SQLSTATE 2BP01: the role still owns objects or holds privileges.
const DEPENDENT_OBJECTS: &str = "2BP01";
/// SQLSTATE 42710: a role (or other object) of that name exists.
const DUPLICATE_OBJECT: &str = "42710";
/// SQLSTATE 42501: the connection's user lacks a privilege (not superuser, not a member).
const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// SQLSTATEs of a refused login: 28P01 wrong password, 28000 no such role, or no LOGIN, or
/// refused by pg_hba.conf.
const LOGIN_REFUSED: [&str; 2] = ["28P01", "28000"];

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

/// Takes from `users` the privileges they were granted in this database, the way OpenBao's
/// own engine does for an admin that is not superuser: on everything in each schema where they
/// hold one (and `public`), the schemas themselves, and the database. Each statement runs on
/// its own and a refused one is passed over: what the admin granted it can take back, and what
/// remains makes the DROP ROLE that follows fail and say why.
async fn revoke_grants(t: &PgTarget, users: &[String]) -> Result<(), Error> {
    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT table_schema::text FROM information_schema.role_table_grants \
         WHERE grantee = ANY($1) \
         UNION SELECT table_schema::text FROM information_schema.role_column_grants \
         WHERE grantee = ANY($1) \
         UNION SELECT 'public'",
    )
    .bind(users)
    .fetch_all(&t.pool)
    .await
    .map_err(|e| t.fail("cannot look up the users' privileges", &e, &[]))?;
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
        if let Err(e) = sqlx::raw_sql(&stmt).execute(&t.pool).await {
            tracing::debug!(error = %e, "a revocation of privileges was refused; going on");
        }
    }
    Ok(())
}

#[async_trait]
impl Dialect for Pg {
    type Db = sqlx::Postgres;
    const SERVER: &'static str = "PostgreSQL";
    const SYNTAX: Syntax = Syntax::Postgres;

    async fn accounts(t: &PgTarget, names: &[String]) -> Result<Vec<Account>, Error> {
        let found: Vec<String> =
            sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1)")
                .bind(names)
                .fetch_all(&t.pool)
                .await
                .map_err(|e| t.fail("cannot look up roles", &e, &[]))?;
        Ok(found
            .into_iter()
            .map(|user| Account { user, host: None })
            .collect())
    }

    /// The password, or its SCRAM verifier.
    fn as_sent<'a>(&self, password: &'a str) -> Cow<'a, str> {
        match self
            .verifiers
            .and_then(|rounds| scram::verifier(password, rounds))
        {
            Some(verifier) => Cow::Owned(verifier),
            None => Cow::Borrowed(password),
        }
    }

    fn default_creation(
        name: &str,
        password: &str,
        expiration: &str,
        settings: &Map<String, Value>,
    ) -> Vec<String> {
        let groups: Vec<String> = list(settings, "member_of")
            .iter()
            .map(|g| quote_identifier(g))
            .collect();
        let mut create = format!(
            "CREATE ROLE {} WITH LOGIN PASSWORD {} VALID UNTIL {}",
            quote_identifier(name),
            quote_literal(password),
            quote_literal(expiration)
        );
        if !groups.is_empty() {
            create.push_str(&format!(" IN ROLE {}", groups.join(", ")));
        }
        vec![create]
    }

    fn closing_creation(name: &str, expiration: &str) -> Vec<String> {
        vec![format!(
            "ALTER ROLE {} VALID UNTIL {}",
            quote_identifier(name),
            quote_literal(expiration)
        )]
    }

    async fn run_creation(
        t: &PgTarget,
        name: &str,
        sql: Vec<String>,
        secrets: &[&str],
    ) -> Result<(), Error> {
        match run_in_transaction(&t.pool, sql).await {
            Ok(()) => Ok(()),
            // duplicate_object: the transaction changed nothing; the role of that name (made
            // since issuance found the name free) belongs to someone else.
            Err(e)
                if sqlstate(&e).as_deref() == Some(DUPLICATE_OBJECT)
                    && t.exists(name, &Map::new()).await.unwrap_or(false) =>
            {
                Err(Error::Conflict(format!(
                    "PostgreSQL already has a role named '{name}'"
                )))
            }
            Err(e) => Err(t.fail("refused the new user", &e, secrets)),
        }
    }

    fn default_renewal(name: &str, expiration: &str) -> Option<String> {
        Some(format!(
            "ALTER ROLE {} VALID UNTIL {}",
            quote_identifier(name),
            quote_literal(expiration)
        ))
    }

    async fn run_together(
        t: &PgTarget,
        what: &str,
        sql: Vec<String>,
        secrets: &[&str],
    ) -> Result<(), Error> {
        run_in_transaction(&t.pool, sql)
            .await
            .map_err(|e| t.fail(what, &e, secrets))
    }

    async fn drop_users(t: &PgTarget, users: &[String], _: &[Account]) -> Result<Caveats, Error> {
        let fail = |e: sqlx::Error| t.fail("refused the revocation", &e, &[]);
        let quoted: Vec<String> = users.iter().map(|n| quote_identifier(n)).collect();
        // No new sessions, then end the open ones, then drop: a user cannot slip in between.
        let nologin: String = quoted
            .iter()
            .map(|q| format!("ALTER ROLE {q} NOLOGIN;"))
            .collect();
        sqlx::raw_sql(&nologin)
            .execute(&t.pool)
            .await
            .map_err(fail)?;
        let mut caveats = Vec::new();
        let ended = sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY($1)",
        )
        .bind(users)
        .execute(&t.pool)
        .await;
        match ended {
            Ok(_) => {}
            // An admin that is neither superuser nor in pg_signal_backend may not end another
            // role's sessions (managed services): the users are dropped all the same, their
            // open sessions run until their clients leave, and the ledger says so.
            Err(e) if sqlstate(&e).as_deref() == Some(INSUFFICIENT_PRIVILEGE) => {
                caveats.extend(users.iter().map(|n| {
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
        match run_in_transaction(&t.pool, vec![drop.clone()]).await {
            Ok(()) => Ok(caveats),
            Err(e) if sqlstate(&e).as_deref() == Some(DEPENDENT_OBJECTS) => {
                // The users own objects or hold grants of their own: hand the objects to
                // mayfly's user, drop the grants, then the users.
                let sql = vec![
                    format!("REASSIGN OWNED BY {list} TO CURRENT_USER"),
                    format!("DROP OWNED BY {list}"),
                    drop.clone(),
                ];
                match run_in_transaction(&t.pool, sql).await {
                    Ok(()) => Ok(caveats),
                    // REASSIGN and DROP OWNED need the privileges of the users, which an admin
                    // with CREATEROLE alone does not have (PostgreSQL 15: no membership;
                    // 16: the ADMIN OPTION its CREATE ROLE gave it, but no SET or INHERIT
                    // unless createrole_self_grant says so).
                    Err(e) if sqlstate(&e).as_deref() == Some(INSUFFICIENT_PRIVILEGE) => {
                        revoke_grants(t, users).await?;
                        run_in_transaction(&t.pool, vec![drop])
                            .await
                            .map_err(fail)?;
                        Ok(caveats)
                    }
                    Err(e) => Err(fail(e)),
                }
            }
            Err(e) => Err(fail(e)),
        }
    }

    async fn list_marked(t: &PgTarget, mark: &str) -> Result<Vec<String>, Error> {
        sqlx::query_scalar(
            "SELECT rolname::text FROM pg_roles WHERE starts_with(rolname, $1) ORDER BY 1",
        )
        .bind(mark)
        .fetch_all(&t.pool)
        .await
        .map_err(|e| t.fail("cannot list roles", &e, &[]))
    }

    async fn inventory(t: &PgTarget) -> Result<Vec<Standing>, Error> {
        // Table grants are counted from the ACLs of this database's relations, which every
        // role may read (information_schema shows only what the admin itself is party to).
        type Row = (
            String,
            bool,
            bool,
            bool,
            bool,
            bool,
            bool,
            Option<String>,
            Vec<String>,
            i64,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "WITH grants AS ( \
                 SELECT a.grantee, count(*) AS n \
                 FROM pg_class c, aclexplode(c.relacl) a GROUP BY a.grantee) \
             SELECT r.rolname::text, r.rolname = current_user, r.rolsuper, r.rolcreaterole, \
                 r.rolcreatedb, r.rolreplication, r.rolbypassrls, r.rolvaliduntil::text, \
                 ARRAY(SELECT b.rolname::text FROM pg_auth_members m \
                       JOIN pg_roles b ON b.oid = m.roleid \
                       WHERE m.member = r.oid ORDER BY 1), \
                 COALESCE(g.n, 0) \
             FROM pg_roles r LEFT JOIN grants g ON g.grantee = r.oid \
             WHERE r.rolcanlogin ORDER BY 1",
        )
        .fetch_all(&t.pool)
        .await
        .map_err(|e| t.fail("cannot list login roles", &e, &[]))?;
        Ok(rows
            .into_iter()
            .map(
                |(
                    name,
                    own,
                    sup,
                    create_role,
                    create_db,
                    replication,
                    bypass_rls,
                    until,
                    member_of,
                    grants,
                )| {
                    let power = json!({
                        "superuser": sup,
                        "create_role": create_role,
                        "create_db": create_db,
                        "replication": replication,
                        "bypass_rls": bypass_rls,
                        "valid_until": until,
                        "member_of": member_of,
                        "table_grants": grants,
                    });
                    Standing {
                        name,
                        own,
                        power: power.as_object().cloned().unwrap_or_default(),
                    }
                },
            )
            .collect())
    }

    async fn rotate_root(t: &PgTarget, plain: &str) -> Result<(), Error> {
        let password = &*t.dialect.as_sent(plain);
        let sql = format!(
            "ALTER ROLE CURRENT_USER WITH PASSWORD {}",
            quote_literal(password)
        );
        sqlx::raw_sql(&sql)
            .execute(&t.pool)
            .await
            .map(|_| ())
            .map_err(|e| t.fail("refused the new password", &e, &[plain, password]))
    }

    fn default_set_password(accounts: &[Account], password: &str) -> Vec<String> {
        accounts
            .iter()
            .map(|a| {
                format!(
                    "ALTER ROLE {} WITH PASSWORD {}",
                    quote_identifier(&a.user),
                    quote_literal(password)
                )
            })
            .collect()
    }

    fn login_options(
        options: &PgConnectOptions,
        username: &str,
        password: &str,
    ) -> PgConnectOptions {
        options.clone().username(username).password(password)
    }

    fn login_refused(e: &dyn sqlx::error::DatabaseError) -> bool {
        e.code()
            .is_some_and(|c| LOGIN_REFUSED.contains(&c.as_ref()))
    }
}
