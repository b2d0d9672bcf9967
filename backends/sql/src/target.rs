//! One target for both SQL kinds: a pool on one server, as one connection configures it. What
//! PostgreSQL and MySQL share is here: the shape of each operation (which statements, rendered
//! how, checked against what exists), errors with every secret removed, login checks. Each kind
//! supplies only its [`Dialect`]: the SQL it speaks and how it runs a group of statements.
//! Generic rather than `sqlx::Any`, which would lose each driver's own options (PostgreSQL's
//! SCRAM verifiers and TLS, MySQL's client certificates).

use std::borrow::Cow;

use async_trait::async_trait;
use mayfly::redact::redact;
use mayfly::{Created, Error, NewPrincipal, Principal, Revoked, Standing, Target};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use sqlx::Database;

use crate::common::{self, expiration, list};
use crate::statements::{self, Values};

/// An account on the server: a user name, and for MySQL the host pattern it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user: String,
    pub host: Option<String>,
}

/// The connect options of a dialect's driver.
pub type Options<D> = <<<D as Dialect>::Db as Database>::Connection as sqlx::Connection>::Options;

/// (user, caveat) pairs for [`Revoked::caveats`].
pub type Caveats = Vec<(String, String)>;

/// What one SQL server speaks.
#[async_trait]
pub trait Dialect: Sized + Send + Sync + 'static {
    type Db: Database;
    /// The server's name in messages.
    const SERVER: &'static str;
    /// How rendered statements quote their values.
    const SYNTAX: statements::Syntax;

    /// Every account of each of `names`.
    async fn accounts(t: &SqlTarget<Self>, names: &[String]) -> Result<Vec<Account>, Error>;

    /// What goes into SQL in place of `password`.
    fn as_sent<'a>(&self, password: &'a str) -> Cow<'a, str> {
        Cow::Borrowed(password)
    }

    /// `{{host}}` in a role's statements.
    fn host(_settings: &Map<String, Value>) -> Option<&str> {
        None
    }

    /// The statements that make user `name` when its role gives none.
    fn default_creation(
        name: &str,
        password: &str,
        expiration: &str,
        settings: &Map<String, Value>,
    ) -> Vec<String>;

    /// Statements every creation ends with, whatever the role's.
    fn closing_creation(_name: &str, _expiration: &str) -> Vec<String> {
        Vec::new()
    }

    /// Runs the creation statements of user `name`, all of them or, in effect, none; a
    /// `Conflict` when the name was taken meanwhile. `secrets` are kept out of errors.
    async fn run_creation(
        t: &SqlTarget<Self>,
        name: &str,
        sql: Vec<String>,
        secrets: &[&str],
    ) -> Result<(), Error>;

    /// The statement that moves user `name`'s expiry to `expiration` when its role gives none;
    /// `None` for a server without per-user expiry (renewal then only checks the user).
    fn default_renewal(name: &str, expiration: &str) -> Option<String>;

    /// Runs `sql` as one step as far as the server allows; `what` names it in errors.
    async fn run_together(
        t: &SqlTarget<Self>,
        what: &str,
        sql: Vec<String>,
        secrets: &[&str],
    ) -> Result<(), Error>;

    /// After a role's revocation statements ran for `users`: what they may have left (MySQL:
    /// open sessions, which DROP USER leaves running).
    async fn after_revocation_statements(
        _t: &SqlTarget<Self>,
        _users: &[String],
    ) -> Result<Caveats, Error> {
        Ok(Vec::new())
    }

    /// Removes `users` (whose accounts are `accounts`) the kind's own way: no new logins, open
    /// sessions ended, the users dropped.
    async fn drop_users(
        t: &SqlTarget<Self>,
        users: &[String],
        accounts: &[Account],
    ) -> Result<Caveats, Error>;

    /// The names of every user that begins with `mark`.
    async fn list_marked(t: &SqlTarget<Self>, mark: &str) -> Result<Vec<String>, Error>;

    /// Every account that can log in, with what the server says of its power.
    async fn inventory(t: &SqlTarget<Self>) -> Result<Vec<Standing>, Error>;

    /// Gives the connection's own user `password`.
    async fn rotate_root(t: &SqlTarget<Self>, password: &str) -> Result<(), Error>;

    /// The statements that give `accounts` (all of one user) `password` when no rotation
    /// statements are given.
    fn default_set_password(accounts: &[Account], password: &str) -> Vec<String>;

    /// The options of a login as `username` with `password`.
    fn login_options(options: &Options<Self>, username: &str, password: &str) -> Options<Self>;

    /// Whether a server error says the login was refused.
    fn login_refused(e: &dyn sqlx::error::DatabaseError) -> bool;
}

/// A pool on one server, as configured by one connection.
pub struct SqlTarget<D: Dialect> {
    pub pool: sqlx::Pool<D::Db>,
    /// What the pool connects with; login checks swap in another user and password.
    pub options: Options<D>,
    /// The connection's own secrets, removed from every error message.
    pub secrets: Vec<SecretString>,
    pub dialect: D,
}

impl<D: Dialect> SqlTarget<D> {
    /// The core's error for a failed operation, with every secret removed. Failures to reach
    /// the server at all are `Unavailable`: nothing was done.
    pub fn fail(&self, what: &str, e: &sqlx::Error, extra: &[&str]) -> Error {
        let mut secrets: Vec<&str> = self.secrets.iter().map(|s| s.expose_secret()).collect();
        secrets.extend_from_slice(extra);
        let text = redact(&e.to_string(), &secrets);
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                Error::Unavailable(format!("{} cannot be reached ({what}): {text}", D::SERVER))
            }
            _ => Error::Target(format!("{} {what}: {text}", D::SERVER)),
        }
    }

    fn render(
        &self,
        field: &str,
        stmts: &[String],
        values: &Values<'_>,
    ) -> Result<Vec<String>, Error> {
        common::render_all(field, stmts, values, D::SYNTAX)
    }

    /// The accounts of `name`, or the error that says it is gone.
    async fn accounts_of(&self, name: &str, gone: &str) -> Result<Vec<Account>, Error> {
        let accounts = D::accounts(self, &[name.to_owned()]).await?;
        if accounts.is_empty() {
            return Err(Error::Target(format!(
                "user '{name}' {gone} in {}",
                D::SERVER
            )));
        }
        Ok(accounts)
    }
}

#[async_trait]
impl<D: Dialect> Target for SqlTarget<D> {
    async fn close(&self) {
        self.pool.close().await;
    }

    async fn exists(&self, name: &str, _: &Map<String, Value>) -> Result<bool, Error> {
        Ok(!D::accounts(self, &[name.to_owned()]).await?.is_empty())
    }

    async fn create(&self, p: &NewPrincipal<'_>) -> Result<Created, Error> {
        let plain = p.password.expose_secret();
        let sent = self.dialect.as_sent(plain);
        let exp = expiration(p.expires);
        let values = Values {
            name: p.name,
            password: Some(&sent),
            expiration: Some(&exp),
            host: D::host(p.settings),
        };
        let mut sql = self.render(
            "creation_statements",
            &list(p.settings, "creation_statements"),
            &values,
        )?;
        if sql.is_empty() {
            sql = D::default_creation(p.name, &sent, &exp, p.settings);
        }
        // Whatever the statements said, the user stops working at its deadline where the
        // server can say so.
        sql.extend(D::closing_creation(p.name, &exp));
        D::run_creation(self, p.name, sql, &[plain, &sent]).await?;
        Ok(Created::default())
    }

    async fn renew(
        &self,
        p: &Principal,
        expires: u64,
        settings: &Map<String, Value>,
    ) -> Result<(), Error> {
        let name = p.name.as_str();
        self.accounts_of(name, "no longer exists").await?;
        let exp = expiration(expires);
        // Without per-user expiry the deadline lives in the ledger alone.
        let Some(default) = D::default_renewal(name, &exp) else {
            return Ok(());
        };
        let values = Values {
            name,
            password: None,
            expiration: Some(&exp),
            host: D::host(settings),
        };
        let mut sql = self.render(
            "renew_statements",
            &list(settings, "renew_statements"),
            &values,
        )?;
        if sql.is_empty() {
            sql.push(default);
        }
        D::run_together(self, "refused the renewal", sql, &[]).await
    }

    async fn revoke(
        &self,
        principals: &[Principal],
        settings: &Map<String, Value>,
    ) -> Result<Revoked, Error> {
        let names = &mayfly::backend::names(principals);
        let accounts = D::accounts(self, names).await?;
        let exists = |n: &String| accounts.iter().any(|a| &a.user == n);
        let existing: Vec<String> = names.iter().filter(|n| exists(n)).cloned().collect();
        let mut outcome = Revoked {
            removed: existing.len(),
            already_gone: names.iter().filter(|n| !exists(n)).cloned().collect(),
            ..Revoked::default()
        };
        if existing.is_empty() {
            return Ok(outcome);
        }
        let custom = list(settings, "revocation_statements");
        if custom.is_empty() {
            outcome.caveats = D::drop_users(self, &existing, &accounts).await?;
            return Ok(outcome);
        }
        let mut sql = Vec::new();
        for name in &existing {
            let values = Values {
                name,
                password: None,
                expiration: None,
                host: D::host(settings),
            };
            sql.extend(self.render("revocation_statements", &custom, &values)?);
        }
        D::run_together(self, "refused the revocation", sql, &[]).await?;
        outcome.caveats = D::after_revocation_statements(self, &existing).await?;
        Ok(outcome)
    }

    async fn list_marked(
        &self,
        mark: &str,
        _: &Map<String, Value>,
    ) -> Result<Vec<Principal>, Error> {
        let names = D::list_marked(self, mark).await?;
        Ok(names.into_iter().map(Principal::named).collect())
    }

    async fn inventory(&self, _: &Map<String, Value>) -> Result<Vec<Standing>, Error> {
        D::inventory(self).await
    }

    async fn rotate_root(&self, new_password: &SecretString) -> Result<(), Error> {
        let plain = new_password.expose_secret();
        common::check_sendable(plain)?;
        D::rotate_root(self, plain).await
    }

    async fn set_password(
        &self,
        username: &str,
        password: &SecretString,
        statements: &[String],
    ) -> Result<(), Error> {
        let plain = password.expose_secret();
        common::check_sendable(plain)?;
        let sent = self.dialect.as_sent(plain);
        let accounts = self.accounts_of(username, "does not exist").await?;
        let sql = if statements.is_empty() {
            D::default_set_password(&accounts, &sent)
        } else {
            // The statements once per account, with its host as {{host}}.
            let mut sql = Vec::new();
            for account in &accounts {
                let values = Values {
                    name: username,
                    password: Some(&sent),
                    expiration: None,
                    host: account.host.as_deref(),
                };
                sql.extend(self.render("rotation_statements", statements, &values)?);
            }
            sql
        };
        D::run_together(self, "refused the new password", sql, &[plain, &sent]).await
    }

    async fn check_login(&self, username: &str, password: &SecretString) -> Result<bool, Error> {
        let secret = password.expose_secret();
        let options = D::login_options(&self.options, username, secret);
        common::check_login(D::SERVER, options, secret, D::login_refused).await
    }
}
