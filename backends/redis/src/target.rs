//! A `redis` connection's target: a pool of connections per node, and each credential's ACL
//! user created, renewed and deleted on every node alike (see `backend` for the kind itself).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use mayfly::ConnectionConfig;
use mayfly::redact::redact;
use mayfly::{Created, Error, NewPrincipal, Principal, Revoked, Standing, Target};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use crate::resp::{Conn, Reply, Tls, WireError};

/// How long connecting to a node, or one command (or pipeline), may take.
use crate::backend::{TIMEOUT, nodes, rules, tls};

/// One node and its idle connections.
struct Node {
    address: String,
    idle: Mutex<Vec<Conn>>,
    saves: SaveLog,
}

/// Which ACL changes on a node an `ACL SAVE` has covered, so that changes made together share
/// one save ([`RedisTarget::save`]): each save rewrites the node's whole ACL file.
#[derive(Default)]
struct SaveLog {
    /// ACL changes the node has answered, numbered from 1.
    changed: AtomicU64,
    /// The highest change number that a finished save was sent after.
    saved: AtomicU64,
    /// Held while a save runs.
    running: tokio::sync::Mutex<()>,
    /// A delayed save for new users is waiting to run ([`RedisTarget::save_soon`]).
    scheduled: AtomicBool,
    /// A save of a full batch of new users is waiting or running.
    batch_saving: AtomicBool,
    /// How long the last save took, and when it ended ([`micros`]).
    last_took_us: AtomicU64,
    last_end_us: AtomicU64,
}

impl SaveLog {
    /// Whether a save may start now for a batch of new users: saves take at most a fifth of
    /// the node's time, so a node whose saves are slow (a long ACL file, a slow disk) is never
    /// kept busy with them back to back.
    fn batch_save_allowed(&self) -> bool {
        let took = self.last_took_us.load(Ordering::SeqCst);
        let since = micros().saturating_sub(self.last_end_us.load(Ordering::SeqCst));
        since >= SAVE_DUTY_FACTOR * took
    }
}

/// Microseconds since the first call, a clock for [`SaveLog`].
fn micros() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_micros() as u64
}

impl SaveLog {
    /// Numbers a change the node has just answered.
    fn note_change(&self) -> u64 {
        self.changed.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// How long after a creation its save may wait, to be shared with the creations around it.
const CREATION_SAVE_DELAY: Duration = Duration::from_millis(500);
/// How many new users wait for a save, when the node's saves are quick: a save pauses the
/// node about 140 µs per user changed since the last one, so small saves keep each pause short
/// (500 ms of issuance at 1,000/s in one save paused every request to the node for 70 ms).
const CREATION_SAVE_BATCH: u64 = 16;
/// A save for a batch waits until this many times the last save's duration has passed since it
/// ended.
const SAVE_DUTY_FACTOR: u64 = 4;

/// The configured nodes, as the connection's user.
pub(crate) struct RedisTarget {
    nodes: Vec<Node>,
    /// How nodes are reached over TLS; `None` for plain text.
    tls: Option<Tls>,
    username: Option<String>,
    password: Option<SecretString>,
    max_idle: usize,
    /// The target itself, for the saves it leaves running ([`RedisTarget::save_soon`]).
    me: Weak<RedisTarget>,
}

/// A failed operation on one node.
enum NodeError {
    /// The node could not be reached or did not answer: nothing is known to have happened.
    Unreachable(String),
    /// The node answered with an error.
    Refused(String),
}

impl NodeError {
    fn message(&self) -> &str {
        match self {
            NodeError::Unreachable(m) | NodeError::Refused(m) => m,
        }
    }

    fn into_error(self) -> Error {
        match self {
            NodeError::Unreachable(m) => Error::Unavailable(m),
            NodeError::Refused(m) => Error::Target(m),
        }
    }
}

impl RedisTarget {
    /// A target for `config`, shared: it hands itself to the tasks that save nodes' ACLs.
    pub(crate) fn shared(config: &ConnectionConfig) -> Result<Arc<RedisTarget>, Error> {
        let target = RedisTarget::new(config)?;
        Ok(Arc::new_cyclic(|me| RedisTarget {
            me: me.clone(),
            ..target
        }))
    }

    /// The connection check: every node answers PING as the connection's user.
    pub(crate) async fn ping_every_node(&self) -> Result<(), Error> {
        for node in &self.nodes {
            self.call(node, "the connection check", &[b"PING"])
                .await
                .map_err(|e| Error::bad_request(format!("cannot use Redis: {}", e.message())))?;
        }
        Ok(())
    }

    pub(crate) fn new(config: &ConnectionConfig) -> Result<RedisTarget, Error> {
        Ok(RedisTarget {
            tls: tls(config)?,
            nodes: nodes(config)?
                .into_iter()
                .map(|address| Node {
                    address,
                    idle: Mutex::new(Vec::new()),
                    saves: SaveLog::default(),
                })
                .collect(),
            username: config
                .setting_str("username")
                .filter(|u| !u.is_empty())
                .map(str::to_owned),
            password: config
                .secret("password")
                .filter(|p| !p.is_empty())
                .map(|p| SecretString::from(p.to_owned())),
            max_idle: config
                .setting_i64("max_open_connections")
                .unwrap_or(4)
                .clamp(1, 100) as usize,
            me: Weak::new(),
        })
    }

    /// The connection's user name as Redis knows it.
    fn user(&self) -> &str {
        self.username.as_deref().unwrap_or("default")
    }

    fn wire_error(&self, node: &Node, what: &str, e: WireError) -> NodeError {
        match e {
            WireError::Protocol(m) => NodeError::Refused(format!(
                "Redis node {} gave {what} a reply mayfly cannot read: {m}",
                node.address
            )),
            // A certificate refused is not a node that is down: retrying will not help.
            WireError::Tls(e) => NodeError::Refused(format!(
                "Redis node {} ({what}): the TLS handshake failed: {e}",
                node.address
            )),
            e => NodeError::Unreachable(format!(
                "Redis node {} cannot be reached ({what}): {e}",
                node.address
            )),
        }
    }

    /// A new connection to `node`, over TLS where the connection says, not yet logged in.
    async fn open(&self, node: &Node) -> Result<Conn, NodeError> {
        let tls = match &self.tls {
            None => None,
            Some(tls) => Some((
                tls,
                mayfly_tls::server_name(&node.address, "host")
                    .map_err(|e| NodeError::Refused(e.to_string()))?,
            )),
        };
        Conn::connect(&node.address, TIMEOUT, tls)
            .await
            .map_err(|e| self.wire_error(node, "connecting", e))
    }

    /// A new connection to `node`, authenticated.
    async fn connect(&self, node: &Node) -> Result<Conn, NodeError> {
        let mut conn = self.open(node).await?;
        if let Some(password) = &self.password {
            let user = self.user().as_bytes();
            let reply = conn
                .call(&[b"AUTH", user, password.expose_secret().as_bytes()])
                .await
                .map_err(|e| self.wire_error(node, "authenticating", e))?;
            if let Reply::Error(m) = reply {
                return Err(NodeError::Refused(format!(
                    "Redis node {} refused mayfly's login as '{}': {}",
                    node.address,
                    self.user(),
                    self.redact(&m, &[])
                )));
            }
        }
        Ok(conn)
    }

    fn release(&self, node: &Node, conn: Conn) {
        let mut idle = node.idle.lock().unwrap();
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }

    fn redact(&self, text: &str, extra: &[&str]) -> String {
        let mut secrets: Vec<&str> = extra.to_vec();
        if let Some(p) = &self.password {
            secrets.push(p.expose_secret());
        }
        redact(text, &secrets)
    }

    /// Runs `commands` on `node` in one round trip. Error replies are returned, not raised:
    /// the caller knows which ones matter.
    async fn pipeline(
        &self,
        node: &Node,
        what: &str,
        commands: &[Vec<&[u8]>],
    ) -> Result<Vec<Reply>, NodeError> {
        let idle = node.idle.lock().unwrap().pop();
        let (mut conn, reused) = match idle {
            Some(c) => (c, true),
            None => (self.connect(node).await?, false),
        };
        let replies = match conn.pipeline(commands).await {
            Ok(r) => r,
            // An idle connection may have died with a node restart: one more try on a new
            // one. Every command mayfly sends may safely run twice.
            Err(WireError::Io(_)) if reused => {
                conn = self.connect(node).await?;
                conn.pipeline(commands)
                    .await
                    .map_err(|e| self.wire_error(node, what, e))?
            }
            Err(e) => return Err(self.wire_error(node, what, e)),
        };
        self.release(node, conn);
        Ok(replies)
    }

    /// One command on `node`; an error reply is an error. `secrets` are removed from it.
    async fn call_checked(
        &self,
        node: &Node,
        what: &str,
        args: &[&[u8]],
        secrets: &[&str],
    ) -> Result<Reply, NodeError> {
        match self.pipeline(node, what, &[args.to_vec()]).await?.pop() {
            Some(Reply::Error(m)) => Err(NodeError::Refused(format!(
                "Redis node {} refused {what}: {}",
                node.address,
                self.redact(&m, secrets)
            ))),
            Some(reply) => Ok(reply),
            None => Err(NodeError::Refused(format!(
                "Redis node {} gave no reply to {what}",
                node.address
            ))),
        }
    }

    async fn call(&self, node: &Node, what: &str, args: &[&[u8]]) -> Result<Reply, NodeError> {
        self.call_checked(node, what, args, &[]).await
    }

    /// Whether `node` has a user named `name`.
    async fn has_user(&self, node: &Node, name: &str) -> Result<bool, NodeError> {
        let reply = self
            .call(node, "ACL GETUSER", &[b"ACL", b"GETUSER", name.as_bytes()])
            .await?;
        Ok(!matches!(reply, Reply::Bulk(None) | Reply::Array(None)))
    }

    async fn users(&self, node: &Node) -> Result<BTreeSet<String>, NodeError> {
        Ok(self
            .call(node, "ACL USERS", &[b"ACL", b"USERS"])
            .await?
            .strings()
            .into_iter()
            .collect())
    }

    /// Disconnects and deletes `names` from `node`: no new logins (`off`), end the open
    /// connections, then delete. Returns the names that were there.
    async fn remove(&self, node: &Node, names: &[String]) -> Result<Vec<String>, NodeError> {
        let users = self.users(node).await?;
        let present: Vec<String> = names
            .iter()
            .filter(|n| users.contains(n.as_str()))
            .cloned()
            .collect();
        if present.is_empty() {
            return Ok(present);
        }
        let mut commands: Vec<Vec<&[u8]>> = Vec::with_capacity(present.len() * 2 + 1);
        for n in &present {
            commands.push(vec![b"ACL", b"SETUSER", n.as_bytes(), b"off"]);
            commands.push(vec![b"CLIENT", b"KILL", b"USER", n.as_bytes()]);
        }
        let mut delete: Vec<&[u8]> = vec![b"ACL", b"DELUSER"];
        delete.extend(present.iter().map(|n| n.as_bytes()));
        commands.push(delete);
        let replies = self.pipeline(node, "the revocation", &commands).await?;
        // CLIENT KILL USER fails when the user vanished meanwhile; only the delete matters.
        if let Some(Reply::Error(m)) = replies.last() {
            return Err(NodeError::Refused(format!(
                "Redis node {} refused ACL DELUSER: {m}",
                node.address
            )));
        }
        self.save(node).await;
        Ok(present)
    }

    /// Returns once an `ACL SAVE` sent after the caller's change has finished on `node`. A
    /// node with an ACL file reloads it when it restarts: a deletion not saved there would
    /// bring a revoked user back, a creation not saved would lose a live one. Changes that wait
    /// while a save runs share the next one, so concurrent changes do not each rewrite the
    /// file. A failed save is logged, as a node without an ACL file has nothing to save.
    async fn save(&self, node: &Node) {
        let change = node.saves.note_change();
        self.save_covering(node, change).await;
    }

    /// Returns once a save sent after change number `change` has finished on `node`.
    async fn save_covering(&self, node: &Node, change: u64) {
        let log = &node.saves;
        let _running = log.running.lock().await;
        if log.saved.load(Ordering::SeqCst) >= change {
            return;
        }
        // Every change numbered up to here was answered before this save is sent.
        let covers = log.changed.load(Ordering::SeqCst);
        let started = std::time::Instant::now();
        let reply = self
            .pipeline(node, "ACL SAVE", &[vec![b"ACL", b"SAVE"]])
            .await
            .map(|mut r| r.pop());
        let took_us = started.elapsed().as_micros() as u64;
        log.last_took_us.store(took_us, Ordering::SeqCst);
        log.last_end_us.store(micros(), Ordering::SeqCst);
        tracing::debug!(node = %node.address, took_us, covers, "ACL file saved");
        let failure = match &reply {
            Ok(Some(Reply::Error(m))) if !m.contains("not configured to use an ACL file") => {
                Some(m.as_str())
            }
            Err(e) => Some(e.message()),
            Ok(_) => None,
        };
        if let Some(error) = failure {
            tracing::warn!(node = %node.address, error,
                "Redis could not save its ACL file; a restart of this node reloads an old one");
        }
        log.saved.fetch_max(covers, Ordering::SeqCst);
    }

    /// Saves the ACL file of node `i` within [`CREATION_SAVE_DELAY`] (or at once when
    /// [`CREATION_SAVE_BATCH`] creations are waiting), without waiting for it,
    /// after a user was created there. A new user that a restart of the node loses before the
    /// save only stops working early; a creation that waited would hold its issuance for a
    /// rewrite of the whole file, and saves back to back would keep the node (which serves
    /// nothing else while it writes) busy. So creations of the same moment share one save.
    /// Deletions and password changes wait for theirs ([`RedisTarget::save`]).
    /// One delayed save waits at a time: creations that find one waiting are covered by it,
    /// since it saves every change numbered before it starts.
    fn save_soon(&self, i: usize) {
        let log = &self.nodes[i].saves;
        let change = log.note_change();
        let unsaved = change.saturating_sub(log.saved.load(Ordering::SeqCst));
        if unsaved >= CREATION_SAVE_BATCH
            && log.batch_save_allowed()
            && !log.batch_saving.swap(true, Ordering::SeqCst)
            && let Some(me) = self.me.upgrade()
        {
            // A batch is full: saved now, in the background, so that no pause grows long.
            tokio::spawn(async move {
                me.save_covering(&me.nodes[i], change).await;
                me.nodes[i]
                    .saves
                    .batch_saving
                    .store(false, Ordering::SeqCst);
            });
        }
        if log.scheduled.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(me) = self.me.upgrade() {
            tokio::spawn(async move {
                tokio::time::sleep(CREATION_SAVE_DELAY).await;
                let log = &me.nodes[i].saves;
                // Cleared first: a creation after this point schedules the next save, one
                // before it is counted in `changed` below.
                log.scheduled.store(false, Ordering::SeqCst);
                let upto = log.changed.load(Ordering::SeqCst);
                me.save_covering(&me.nodes[i], upto).await
            });
        }
    }

    /// Runs one `ACL SETUSER` on `node` and saves the ACL file.
    async fn set_and_save(
        &self,
        node: &Node,
        what: &str,
        args: &[&[u8]],
        secrets: &[&str],
    ) -> Result<(), NodeError> {
        self.call_checked(node, what, args, secrets).await?;
        self.save(node).await;
        Ok(())
    }

    /// Takes a user whose creation failed partway off `nodes`, where mayfly made it.
    async fn undo_create(&self, nodes: &[Node], name: &str) {
        for done in nodes {
            if let Err(undo) = self.remove(done, &[name.to_owned()]).await {
                tracing::warn!(
                    user = name,
                    error = undo.message(),
                    "could not remove a partly created Redis user; the scheduler retries"
                );
            }
        }
    }

    /// An error unless `name` exists on every node; `missing` says how its absence reads
    /// ("does not exist", "no longer exists").
    async fn require_user(&self, name: &str, missing: &str) -> Result<(), Error> {
        for node in &self.nodes {
            if !self
                .has_user(node, name)
                .await
                .map_err(NodeError::into_error)?
            {
                return Err(Error::Target(format!(
                    "user '{name}' {missing} on Redis node {}",
                    node.address
                )));
            }
        }
        Ok(())
    }

    /// Makes `new` the only password of `user` on every node, in two phases: `new` is added
    /// on every node (old and new both work), and only then are the others removed, so no
    /// node ever takes neither. If a node refuses the first phase, the nodes before it are
    /// undone; a node that misses the second keeps the old password too until the next
    /// change, and the change stands.
    async fn replace_password(&self, user: &[u8], new: &SecretString) -> Result<(), Error> {
        let new = new.expose_secret();
        let add = format!(">{new}");
        for (i, node) in self.nodes.iter().enumerate() {
            let args: [&[u8]; 4] = [b"ACL", b"SETUSER", user, add.as_bytes()];
            if let Err(e) = self
                .set_and_save(node, "the new password", &args, &[new, &add])
                .await
            {
                let remove = format!("<{new}");
                for done in &self.nodes[..i] {
                    let undo: [&[u8]; 4] = [b"ACL", b"SETUSER", user, remove.as_bytes()];
                    let _ = self.set_and_save(done, "undo", &undo, &[new]).await;
                }
                return Err(e.into_error());
            }
        }
        for node in &self.nodes {
            let args: [&[u8]; 5] = [b"ACL", b"SETUSER", user, b"resetpass", add.as_bytes()];
            if let Err(e) = self
                .set_and_save(node, "removing the old password", &args, &[new, &add])
                .await
            {
                tracing::warn!(node = %node.address, error = e.message(),
                    "an old password could not be removed from a Redis node");
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Target for RedisTarget {
    async fn create(&self, p: &NewPrincipal<'_>) -> Result<Created, Error> {
        let rules = rules(p.settings)?;
        let password = format!(">{}", p.password.expose_secret());
        let mut args: Vec<&[u8]> = vec![b"ACL", b"SETUSER", p.name.as_bytes(), b"reset", b"on"];
        args.push(password.as_bytes());
        args.extend(rules.iter().map(|r| r.as_bytes()));
        for (i, node) in self.nodes.iter().enumerate() {
            // ACL SETUSER changes a user that exists (with `reset`, takes it over): a user of
            // this name made since issuance found the name free is someone else's, and is
            // left as it is. Redis has no create-if-absent for users; the window between the
            // two commands is one round trip. An unguessable name is no one else's.
            let taken = if p.unguessable {
                false
            } else {
                match self.has_user(node, p.name).await {
                    Ok(taken) => taken,
                    Err(e) => {
                        self.undo_create(&self.nodes[..i], p.name).await;
                        return Err(e.into_error());
                    }
                }
            };
            if taken {
                self.undo_create(&self.nodes[..i], p.name).await;
                return Err(Error::Conflict(format!(
                    "Redis node {} already has a user named '{}'",
                    node.address, p.name
                )));
            }
            let secret = p.password.expose_secret();
            let created = self
                .call_checked(node, "the new user", &args, &[secret, &password])
                .await;
            if let Err(e) = created {
                // All or nothing: take the user off the nodes that already have it, this one
                // included (its answer may have been lost after it made the user).
                self.undo_create(&self.nodes[..=i], p.name).await;
                return Err(e.into_error());
            }
            self.save_soon(i);
        }
        Ok(Created::default())
    }

    async fn exists(&self, name: &str, _: &Map<String, Value>) -> Result<bool, Error> {
        for node in &self.nodes {
            if self
                .has_user(node, name)
                .await
                .map_err(NodeError::into_error)?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn renew(&self, p: &Principal, _: u64, _: &Map<String, Value>) -> Result<(), Error> {
        // Nothing to move on the servers: the deadline lives in the ledger alone.
        self.require_user(&p.name, "no longer exists").await
    }

    async fn revoke(
        &self,
        principals: &[Principal],
        _: &Map<String, Value>,
    ) -> Result<Revoked, Error> {
        let names = &mayfly::backend::names(principals);
        let mut found = BTreeSet::new();
        // Every node, even after one fails, so that each reachable node is cleaned now; the
        // batch succeeds only when all are.
        let mut first_error = None;
        for node in &self.nodes {
            match self.remove(node, names).await {
                Ok(present) => found.extend(present),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e.into_error());
        }
        Ok(Revoked {
            removed: found.len(),
            already_gone: names
                .iter()
                .filter(|n| !found.contains(*n))
                .cloned()
                .collect(),
            ..Revoked::default()
        })
    }

    async fn list_marked(
        &self,
        mark: &str,
        _: &Map<String, Value>,
    ) -> Result<Vec<Principal>, Error> {
        let mut all = BTreeSet::new();
        for node in &self.nodes {
            let users = self.users(node).await.map_err(NodeError::into_error)?;
            all.extend(users.into_iter().filter(|u| u.starts_with(mark)));
        }
        Ok(all.into_iter().map(Principal::named).collect())
    }

    async fn inventory(&self, _: &Map<String, Value>) -> Result<Vec<Standing>, Error> {
        let mut found: BTreeMap<String, (Vec<String>, usize)> = BTreeMap::new();
        for node in &self.nodes {
            let lines = self
                .call(node, "ACL LIST", &[b"ACL", b"LIST"])
                .await
                .map_err(NodeError::into_error)?
                .strings();
            for line in lines {
                let Some((name, rules)) = acl_rules(&line) else {
                    continue;
                };
                found.entry(name).or_insert((rules, 0)).1 += 1;
            }
        }
        let nodes = self.nodes.len();
        Ok(found
            .into_iter()
            .map(|(name, (rules, on_nodes))| {
                let has = |r: &[&str]| rules.iter().any(|x| r.contains(&x.as_str()));
                let power = serde_json::json!({
                    "enabled": has(&["on"]),
                    "all_commands": has(&["+@all", "allcommands"]),
                    "all_keys": has(&["~*", "allkeys"]),
                    "rules": rules.join(" "),
                    "nodes": on_nodes,
                    "of_nodes": nodes,
                });
                Standing {
                    own: name == self.user(),
                    name,
                    power: power.as_object().cloned().unwrap_or_default(),
                }
            })
            .collect())
    }

    async fn rotate_root(&self, new_password: &SecretString) -> Result<(), Error> {
        self.replace_password(self.user().as_bytes(), new_password)
            .await
    }

    async fn set_password(
        &self,
        username: &str,
        password: &SecretString,
        statements: &[String],
    ) -> Result<(), Error> {
        if !statements.is_empty() {
            return Err(Error::bad_request(
                "field 'rotation_statements' does not apply to connections of kind 'redis'",
            ));
        }
        // ACL SETUSER creates a user that does not exist: look first.
        self.require_user(username, "does not exist").await?;
        self.replace_password(username.as_bytes(), password).await
    }

    async fn check_login(&self, username: &str, password: &SecretString) -> Result<bool, Error> {
        let secret = password.expose_secret();
        for node in &self.nodes {
            let mut conn = self.open(node).await.map_err(NodeError::into_error)?;
            let reply = conn
                .call(&[b"AUTH", username.as_bytes(), secret.as_bytes()])
                .await
                .map_err(|e| self.wire_error(node, "authenticating", e).into_error())?;
            match reply {
                Reply::Error(m) if m.starts_with("WRONGPASS") => return Ok(false),
                Reply::Error(m) => {
                    return Err(Error::Target(format!(
                        "Redis node {} gave a login check an error: {}",
                        node.address,
                        self.redact(&m, &[secret])
                    )));
                }
                _ => {}
            }
        }
        Ok(true)
    }
}

/// A user's name and rules from a line of `ACL LIST` (`user NAME on #HASH ~* +@all`), without
/// its password hashes: what the user may do, not how it logs in.
fn acl_rules(line: &str) -> Option<(String, Vec<String>)> {
    let mut words = line.split_ascii_whitespace();
    if words.next() != Some("user") {
        return None;
    }
    let name = words.next()?.to_owned();
    let rules = words
        .filter(|w| !w.starts_with(['#', '>', '<', '!']))
        .map(str::to_owned)
        .collect();
    Some((name, rules))
}

#[cfg(test)]
mod tests {
    use super::acl_rules;

    #[test]
    fn an_acl_line_gives_rules_without_password_hashes() {
        let line = "user app on #2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b \
                    >plain ~cache:* resetchannels -@all +get";
        let (name, rules) = acl_rules(line).unwrap();
        assert_eq!(name, "app");
        assert_eq!(rules, ["on", "~cache:*", "resetchannels", "-@all", "+get"]);
        assert!(acl_rules("not a user line").is_none());
    }
}
