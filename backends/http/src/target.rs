//! One HTTP service at work: keys created, renewed, listed and revoked by the calls a role
//! declares ([`RoleSpec`]), or that a preset ([`crate::rabbitmq`]) declares for it.

use async_trait::async_trait;
use futures_util::future::join_all;
use hyper::Method;
use mayfly::ConnectionConfig;
use mayfly::now;
use mayfly::redact::redact;
use mayfly::{Created, Error, NewPrincipal, Principal, Revoked, Standing, Target};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};

use crate::client::{self, Client, Reply, Retry};
use crate::placeholders::{self, Vars};
use crate::rabbitmq;
use crate::spec::{self, ExpiryFormat, RoleSpec};

/// Keys revoked at once in a batch.
const PARALLEL: usize = 8;
/// Seconds a service's expiry may fall short of the deadline asked (its clock, its rounding)
/// without being taken for a cap.
const EXPIRY_SLACK_SECS: u64 = 5;
/// How much of a service's answer an error quotes.
const QUOTE_CHARS: usize = 300;

/// Which calls a role's settings stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// The role declares its calls (the `http` kind).
    Declared,
    /// The `rabbitmq` kind: the calls follow from tags and vhosts, and revoking a user also
    /// closes its open connections.
    RabbitMq,
}

pub struct HttpTarget {
    client: Client,
    preset: Preset,
}

/// A key's parts found in the create call's answer.
struct Made {
    secret: Option<SecretString>,
    key_id: Option<String>,
    expires: Option<u64>,
}

impl HttpTarget {
    pub fn new(config: &ConnectionConfig, preset: Preset) -> Result<HttpTarget, Error> {
        Ok(HttpTarget {
            client: Client::new(config)?,
            preset,
        })
    }

    fn spec(&self, settings: &Map<String, Value>) -> Result<RoleSpec, Error> {
        match self.preset {
            Preset::Declared => RoleSpec::parse(settings),
            Preset::RabbitMq => rabbitmq::spec(settings),
        }
    }

    /// Checks that the service answers: a 2xx from `verify_path` where one is given, else any
    /// answer from `base_url`.
    pub async fn verify(&self, verify_path: &str) -> Result<(), Error> {
        let path = if verify_path.is_empty() {
            "/"
        } else {
            verify_path
        };
        let call = client::Call::bare(Method::GET, path);
        let reply = self
            .client
            .send(&call, Retry::Unsent)
            .await
            .map_err(|e| self.unreachable(&call, e, &[]))?;
        if verify_path.is_empty() || is_success(reply.status) {
            Ok(())
        } else {
            Err(self.refused(&call, &reply, &[], None))
        }
    }

    /// Fills a declared call's placeholders.
    fn prepare(&self, call: &spec::Call, vars: &Vars<'_>) -> Result<client::Call, Error> {
        let fail = |e: String| Error::bad_request(format!("cannot fill in the call: {e}"));
        let method = Method::from_bytes(call.method.as_bytes())
            .map_err(|_| fail(format!("method '{}'", call.method)))?;
        let mut headers = Vec::new();
        for (name, value) in &call.headers {
            let value =
                placeholders::header(value.as_str().unwrap_or_default(), vars).map_err(fail)?;
            headers.push((name.clone(), value));
        }
        Ok(client::Call {
            method,
            path: placeholders::path(&call.path, vars).map_err(fail)?,
            headers,
            body: call
                .body
                .as_ref()
                .map(|b| placeholders::body(b, vars))
                .transpose()
                .map_err(fail)?,
        })
    }

    /// Sends a call of mayfly's own (not declared, no placeholders), idempotent: the answer
    /// when 2xx or one of `also_ok`, else the error.
    async fn send_fixed(&self, call: &client::Call, also_ok: &[u16]) -> Result<Reply, Error> {
        let reply = self
            .client
            .send(call, Retry::Transient)
            .await
            .map_err(|e| self.unreachable(call, e, &[]))?;
        if !is_success(reply.status) && !also_ok.contains(&reply.status) {
            return Err(self.refused(call, &reply, &[], None));
        }
        Ok(reply)
    }

    /// Sends a declared call, and refuses a non-2xx answer (other than `gone`, answered as
    /// `Ok(None)`) with a message free of `secrets`.
    async fn call(
        &self,
        call: &spec::Call,
        vars: &Vars<'_>,
        retry: Retry,
        gone: &[u16],
        secrets: &[&str],
    ) -> Result<Option<Reply>, Error> {
        let prepared = self.prepare(call, vars)?;
        let reply = self
            .client
            .send(&prepared, retry)
            .await
            .map_err(|e| self.unreachable(&prepared, e, secrets))?;
        if gone.contains(&reply.status) {
            return Ok(None);
        }
        if !is_success(reply.status) {
            return Err(self.refused(&prepared, &reply, secrets, None));
        }
        Ok(Some(reply))
    }

    /// A call that got no answer (none at all, or none within the connection's `timeout`):
    /// the service is unavailable, so a batch revocation is not retried key by key against it.
    fn unreachable(&self, call: &client::Call, e: String, secrets: &[&str]) -> Error {
        let msg = format!("{}: {e}", self.client.describe(call));
        Error::Unavailable(self.scrub(&msg, secrets))
    }

    /// The service refused a call or answered it in a way mayfly cannot use: what it said,
    /// without any secret. `secret_pointer` is where a secret sits in a JSON answer.
    fn refused(
        &self,
        call: &client::Call,
        reply: &Reply,
        secrets: &[&str],
        secret_pointer: Option<&str>,
    ) -> Error {
        let msg = format!(
            "{} answered {}: {}",
            self.client.describe(call),
            reply.status,
            quote(reply, secret_pointer)
        );
        Error::Target(self.scrub(&msg, secrets))
    }

    fn scrub(&self, text: &str, secrets: &[&str]) -> String {
        let mut all = secrets.to_vec();
        all.push(self.client.admin_secret());
        redact(text, &all)
    }

    /// Reads the key's secret, id and expiry from the create call's answer.
    fn read_made(
        &self,
        spec: &spec::Create,
        call: &client::Call,
        reply: &Reply,
        secrets: &[&str],
    ) -> Result<Made, Error> {
        let wants_json = spec.secret_pointer.is_some()
            || spec.key_id_pointer.is_some()
            || spec.expiry_pointer.is_some();
        if !wants_json {
            return Ok(Made {
                secret: None,
                key_id: None,
                expires: None,
            });
        }
        let pointer = spec.secret_pointer.as_deref();
        let bad = |what: String| {
            let msg = format!(
                "{} answered {} but {what}: {}",
                self.client.describe(call),
                reply.status,
                quote(reply, pointer)
            );
            Error::Target(self.scrub(&msg, secrets))
        };
        let doc: Value = serde_json::from_slice(&reply.body).map_err(|_| {
            bad(format!(
                "not with JSON (content type '{}')",
                reply.content_type.escape_default()
            ))
        })?;
        let secret = match pointer {
            Some(p) => match doc.pointer(p) {
                Some(Value::String(s)) if !s.is_empty() => Some(SecretString::from(s.clone())),
                _ => return Err(bad(format!("there is no secret (a string) at '{p}'"))),
            },
            None => None,
        };
        let key_id = match &spec.key_id_pointer {
            Some(p) => match doc.pointer(p) {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => return Err(bad(format!("there is no key id at '{p}'"))),
            },
            None => None,
        };
        if let (Some(id), Some(s)) = (&key_id, &secret)
            && id == s.expose_secret()
        {
            return Err(bad(
                "the key id is the secret itself: mayfly records key ids, so key_id_pointer \
                 must address something that is not secret"
                    .into(),
            ));
        }
        let expires = match &spec.expiry_pointer {
            Some(p) => Some(
                doc.pointer(p)
                    .and_then(|v| expiry(v, spec.expiry_format))
                    .ok_or_else(|| bad(format!("there is no expiry at '{p}'")))?,
            ),
            None => None,
        };
        Ok(Made {
            secret,
            key_id,
            expires,
        })
    }

    /// Removes a key whose issuance failed partway; the ledger retries if this fails too.
    async fn undo(&self, spec: &RoleSpec, name: &str, key_id: Option<String>) {
        let principal = Principal {
            name: name.to_owned(),
            target_expires: None,
            target_id: key_id,
        };
        if let Err(e) = self.revoke_all(spec, &[principal]).await {
            tracing::warn!(principal = name, error = %e, "could not undo a failed issuance; the ledger retries");
        }
    }

    /// Revokes `principals`, 8 at a time; for the rabbitmq preset, then closes their users'
    /// open connections with one listing for the whole batch.
    async fn revoke_all(
        &self,
        spec: &RoleSpec,
        principals: &[Principal],
    ) -> Result<Revoked, Error> {
        let mut out = Revoked::default();
        for chunk in principals.chunks(PARALLEL) {
            let results = join_all(chunk.iter().map(|p| self.revoke_one(spec, p))).await;
            for (p, r) in chunk.iter().zip(results) {
                if r? {
                    out.removed += 1;
                } else {
                    out.already_gone.push(p.name.clone());
                }
            }
        }
        if self.preset == Preset::RabbitMq {
            let users: Vec<&str> = principals.iter().map(|p| p.name.as_str()).collect();
            self.close_connections(&users).await?;
        }
        Ok(out)
    }

    /// Revokes one key: `Ok(true)` when it existed.
    async fn revoke_one(&self, spec: &RoleSpec, p: &Principal) -> Result<bool, Error> {
        let key_id = match (&p.target_id, &spec.create.key_id_pointer) {
            (Some(id), _) => id.clone(),
            (None, None) => p.name.clone(),
            // The service chose the id and it was never recorded (issuance cut off): find it.
            (None, Some(_)) => match self.find_id(spec, &p.name).await? {
                Some(id) => id,
                None => return Ok(false),
            },
        };
        let vars = Vars {
            name: &p.name,
            key_id: &key_id,
            deadline: now(),
            ..Vars::default()
        };
        Ok(self
            .call(&spec.revoke, &vars, Retry::Transient, &[404, 410], &[])
            .await?
            .is_some())
    }

    /// The id of the key named `name`, from the list call.
    async fn find_id(&self, spec: &RoleSpec, name: &str) -> Result<Option<String>, Error> {
        if spec.list.is_none() {
            return Err(Error::Target(format!(
                "the id of key '{name}' was never recorded and the role has no list call to \
                 find it"
            )));
        }
        Ok(self
            .listed(spec, "")
            .await?
            .into_iter()
            .find(|p| p.name == name)
            .map(|p| p.target_id.unwrap_or(p.name)))
    }

    /// Every key the list call gives whose name starts with `mark`.
    async fn listed(&self, spec: &RoleSpec, mark: &str) -> Result<Vec<Principal>, Error> {
        let Some(list) = &spec.list else {
            return Ok(Vec::new());
        };
        let vars = Vars::default();
        let prepared = self.prepare(&list.call, &vars)?;
        let reply = self.send_fixed(&prepared, &[]).await?;
        let doc: Value = serde_json::from_slice(&reply.body)
            .map_err(|_| self.refused(&prepared, &reply, &[], None))?;
        let Some(Value::Array(items)) = doc.pointer(&list.items_pointer) else {
            return Err(Error::Target(format!(
                "{} answered without a list at '{}'",
                self.client.describe(&prepared),
                list.items_pointer
            )));
        };
        let text = |v: Option<&Value>| match v {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let at = |item: &Value, p: &Option<String>| match p {
            Some(p) => text(item.pointer(p)),
            None => text(Some(item)),
        };
        let mut found = Vec::new();
        let mut to_look_up = Vec::new();
        for item in items {
            match (&list.lookup, list.name_pointer.is_some()) {
                (Some(_), false) => to_look_up.extend(at(item, &list.id_pointer)),
                _ => {
                    let Some(name) = at(item, &list.name_pointer) else {
                        continue;
                    };
                    let id = list.id_pointer.as_ref().and_then(|p| text(item.pointer(p)));
                    found.push(Principal {
                        target_id: id.filter(|i| *i != name),
                        name,
                        target_expires: None,
                    });
                }
            }
        }
        if let (Some(lookup), Some(pointer)) = (&list.lookup, &list.lookup_name_pointer) {
            for chunk in to_look_up.chunks(PARALLEL) {
                let names = join_all(chunk.iter().map(|id| async move {
                    let vars = Vars {
                        key_id: id,
                        ..Vars::default()
                    };
                    // A key that went between the list and its lookup is simply not there.
                    let reply = self
                        .call(lookup, &vars, Retry::Transient, &[400, 403, 404, 410], &[])
                        .await?;
                    Ok::<_, Error>(reply.and_then(|r| {
                        serde_json::from_slice::<Value>(&r.body)
                            .ok()
                            .and_then(|d| text(d.pointer(pointer)))
                    }))
                }))
                .await;
                for (id, name) in chunk.iter().zip(names) {
                    if let Some(name) = name? {
                        found.push(Principal {
                            name,
                            target_expires: None,
                            target_id: Some(id.clone()),
                        });
                    }
                }
            }
        }
        found.retain(|p| p.name.starts_with(mark));
        Ok(found)
    }

    /// RabbitMQ's users with their tags (`administrator` is all power), the connection's own
    /// user told by `/api/whoami`.
    async fn rabbitmq_users(&self) -> Result<Vec<Standing>, Error> {
        let get = |path: &'static str| async move {
            let call = client::Call::bare(Method::GET, path);
            let reply = self.send_fixed(&call, &[]).await?;
            serde_json::from_slice::<Value>(&reply.body)
                .map_err(|_| self.refused(&call, &reply, &[], None))
        };
        let me = get("/api/whoami").await?;
        let users = get("/api/users?columns=name,tags").await?;
        let Value::Array(users) = users else {
            return Err(Error::Target(
                "RabbitMQ answered /api/users without a list".into(),
            ));
        };
        // Tags are a list since RabbitMQ 3.9, a comma-separated string before.
        let tags = |v: &Value| -> Vec<String> {
            match v {
                Value::Array(a) => a
                    .iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect(),
                Value::String(s) => s
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect(),
                _ => Vec::new(),
            }
        };
        Ok(users
            .iter()
            .filter_map(|u| {
                let name = u["name"].as_str()?.to_owned();
                let tags = tags(&u["tags"]);
                let power = json!({
                    "administrator": tags.iter().any(|t| t == "administrator"),
                    "tags": tags,
                });
                Some(Standing {
                    own: me["name"].as_str() == Some(name.as_str()),
                    name,
                    power: power.as_object().cloned().unwrap_or_default(),
                })
            })
            .collect())
    }

    /// Closes every open AMQP connection of the RabbitMQ users `users`, so that revoking a user
    /// ends what it already had open and not only its next login.
    async fn close_connections(&self, users: &[&str]) -> Result<(), Error> {
        let list = client::Call::bare(Method::GET, "/api/connections?columns=name,user");
        let reply = self.send_fixed(&list, &[]).await?;
        let conns: Vec<Value> = serde_json::from_slice(&reply.body).unwrap_or_default();
        for c in conns
            .iter()
            .filter(|c| c["user"].as_str().is_some_and(|u| users.contains(&u)))
        {
            let Some(name) = c["name"].as_str() else {
                continue;
            };
            let path = format!("/api/connections/{}", mayfly::redact::percent_encode(name));
            let mut close = client::Call::bare(Method::DELETE, path);
            close.headers = vec![("X-Reason".into(), "credential revoked by mayfly".into())];
            // A connection that closed meanwhile is a 404: what was wanted.
            self.send_fixed(&close, &[404]).await?;
        }
        Ok(())
    }
}

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// A timestamp the service returned, as unix seconds.
fn expiry(v: &Value, format: ExpiryFormat) -> Option<u64> {
    match format {
        ExpiryFormat::Unix => v.as_u64().or_else(|| v.as_str()?.parse().ok()),
        ExpiryFormat::Seconds => Some(now() + v.as_u64().or_else(|| v.as_str()?.parse().ok())?),
        ExpiryFormat::Rfc3339 => {
            let t = time::OffsetDateTime::parse(
                v.as_str()?,
                &time::format_description::well_known::Rfc3339,
            )
            .ok()?;
            u64::try_from(t.unix_timestamp()).ok()
        }
    }
}

/// What an answer said, short and without the secret at `secret_pointer`: JSON compacted, any
/// other text with its whitespace collapsed.
fn quote(reply: &Reply, secret_pointer: Option<&str>) -> String {
    let text = match serde_json::from_slice::<Value>(&reply.body) {
        Ok(mut doc) => {
            if let Some(slot) = secret_pointer.and_then(|p| doc.pointer_mut(p)) {
                *slot = json!("<redacted>");
            }
            doc.to_string()
        }
        Err(_) if reply.body.is_empty() => "(no body)".to_owned(),
        Err(_) => {
            let body = String::from_utf8_lossy(&reply.body);
            format!(
                "a '{}' answer, not JSON: {}",
                reply.content_type,
                body.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        }
    };
    if text.chars().count() > QUOTE_CHARS {
        let cut: String = text.chars().take(QUOTE_CHARS).collect();
        format!("{cut}…")
    } else {
        text
    }
}

#[async_trait]
impl Target for HttpTarget {
    /// From the role's list call. Without one mayfly cannot look: it counts on the service
    /// answering 409 to a create of a name it has (as it must for keys it names itself).
    async fn exists(&self, name: &str, settings: &Map<String, Value>) -> Result<bool, Error> {
        let spec = self.spec(settings)?;
        Ok(self
            .listed(&spec, name)
            .await?
            .iter()
            .any(|p| p.name == name))
    }

    async fn create(&self, p: &NewPrincipal<'_>) -> Result<Created, Error> {
        let spec = self.spec(p.settings)?;
        let makes_secret = spec.service_makes_secret();
        let now = now();
        let mut vars = Vars {
            name: p.name,
            password: (!makes_secret).then_some(p.password),
            credential_id: p.origin.cred_id,
            task_id: p.origin.task_id,
            role_name: p.origin.role_name,
            deadline: p.expires,
            ttl_seconds: p.expires.saturating_sub(now),
            key_id: "",
        };
        let password = p.password.expose_secret();
        let prepared = self.prepare(&spec.create.call, &vars)?;
        // Never sent twice: a second create could make a second key.
        let reply = self
            .client
            .send(&prepared, Retry::Unsent)
            .await
            .map_err(|e| self.unreachable(&prepared, e, &[password]));
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                // No answer may still mean the key was made: remove it if it was.
                self.undo(&spec, p.name, None).await;
                return Err(e);
            }
        };
        if reply.status == 409 {
            // The service says the name is taken (made since issuance found it free, or the
            // role has no list call to look it up): whoever has it keeps it.
            return Err(Error::Conflict(format!(
                "{} answered 409: the service already has a key named '{}'",
                self.client.describe(&prepared),
                p.name
            )));
        }
        if !is_success(reply.status) {
            let err = self.refused(
                &prepared,
                &reply,
                &[password],
                spec.create.secret_pointer.as_deref(),
            );
            return Err(err);
        }
        let made = match self.read_made(&spec.create, &prepared, &reply, &[password]) {
            Ok(m) => m,
            Err(e) => {
                // The service made something mayfly cannot use: take it back.
                self.undo(&spec, p.name, None).await;
                return Err(e);
            }
        };
        let key_id = made.key_id.clone().unwrap_or_else(|| p.name.to_owned());
        vars.key_id = &key_id;
        let secret = made.secret.as_ref().map(|s| s.expose_secret().to_owned());
        let secrets = [password, secret.as_deref().unwrap_or_default()];
        for (i, call) in spec.post_create.iter().enumerate() {
            if let Err(e) = self
                .call(call, &vars, Retry::Transient, &[], &secrets)
                .await
            {
                self.undo(&spec, p.name, made.key_id.clone()).await;
                return Err(Error::Target(format!("post_create[{i}]: {e}")));
            }
        }
        let mut data = Map::new();
        if let Some(s) = &secret {
            data.insert("api_key".into(), json!(s));
        }
        if let Some(id) = &made.key_id {
            data.insert("key_id".into(), json!(id));
        }
        // A service expiry bounds the lease, unless a renew call moves it along with the lease;
        // even then one clearly short of the deadline asked (the service capped it) does.
        let target_expires = made
            .expires
            .filter(|&e| spec.renew.is_none() || e + EXPIRY_SLACK_SECS < p.expires);
        Ok(Created {
            data,
            target_expires,
            warnings: Vec::new(),
            target_id: made.key_id,
            secret_from_target: makes_secret,
            ..Created::default()
        })
    }

    async fn renew(
        &self,
        p: &Principal,
        expires: u64,
        settings: &Map<String, Value>,
    ) -> Result<(), Error> {
        let spec = self.spec(settings)?;
        let Some(call) = &spec.renew else {
            // The service keeps the key until it is revoked: the deadline lives in the ledger.
            return Ok(());
        };
        let key_id = p.target_id.clone().unwrap_or_else(|| p.name.clone());
        let vars = Vars {
            name: &p.name,
            key_id: &key_id,
            deadline: expires,
            ttl_seconds: expires.saturating_sub(now()),
            ..Vars::default()
        };
        match self
            .call(call, &vars, Retry::Transient, &[404, 410], &[])
            .await?
        {
            Some(_) => Ok(()),
            None => Err(Error::Target(format!(
                "key '{}' no longer exists on the service",
                p.name
            ))),
        }
    }

    async fn revoke(
        &self,
        principals: &[Principal],
        settings: &Map<String, Value>,
    ) -> Result<Revoked, Error> {
        self.revoke_all(&self.spec(settings)?, principals).await
    }

    async fn list_marked(
        &self,
        mark: &str,
        settings: &Map<String, Value>,
    ) -> Result<Vec<Principal>, Error> {
        self.listed(&self.spec(settings)?, mark).await
    }

    async fn inventory(&self, settings: &Map<String, Value>) -> Result<Vec<Standing>, Error> {
        if self.preset == Preset::RabbitMq {
            return self.rabbitmq_users().await;
        }
        let spec = self.spec(settings)?;
        if spec.list.is_none() {
            return Err(Error::bad_request(
                "the roles of this http connection declare no list call, so the principals \
                 on its service cannot be listed",
            ));
        }
        Ok(self
            .listed(&spec, "")
            .await?
            .into_iter()
            .map(|p| {
                let mut power = Map::new();
                if let Some(id) = p.target_id {
                    power.insert("id".into(), json!(id));
                }
                Standing {
                    name: p.name,
                    own: false,
                    power,
                }
            })
            .collect())
    }

    async fn rotate_root(&self, _: &SecretString) -> Result<(), Error> {
        Err(Error::bad_request(
            "rotate-root is not supported for HTTP services: rotate the admin credential on \
             the service and write it to the connection",
        ))
    }

    async fn set_password(&self, _: &str, _: &SecretString, _: &[String]) -> Result<(), Error> {
        Err(Error::bad_request(
            "static roles are not supported for HTTP services",
        ))
    }

    async fn check_login(&self, _: &str, _: &SecretString) -> Result<bool, Error> {
        Err(Error::bad_request(
            "static roles are not supported for HTTP services",
        ))
    }
}
