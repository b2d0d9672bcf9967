//! The targets both engines issue on, each configured identically on mayfly's mount and on the
//! built-in engine's: the same server, the same admin, the same statements or settings.

use std::collections::HashSet;

use mayfly_integration::rabbitmq::{MANAGEMENT, management};
use mayfly_integration::{Bao, PrivateMariaDb, PrivatePostgres, PrivateRedis};
use serde_json::{Value, json};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Engine {
    Mayfly,
    Builtin,
}

impl Engine {
    pub fn label(self) -> &'static str {
        match self {
            Engine::Mayfly => "mayfly",
            Engine::Builtin => "built-in",
        }
    }

    /// The two engines, the first one alternating by round.
    pub fn order(round: usize) -> [Engine; 2] {
        if round.is_multiple_of(2) {
            [Engine::Mayfly, Engine::Builtin]
        } else {
            [Engine::Builtin, Engine::Mayfly]
        }
    }
}

const PG_CREATE: &str = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' \
                         VALID UNTIL '{{expiration}}' IN ROLE app_readers;";
const MYSQL_CREATE: &str = "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; \
                            GRANT SELECT ON app.* TO '{{name}}'@'%';";
const REDIS_RULES: &str = r#"["~app:*", "+@read"]"#;
const RABBIT_VHOSTS: &str = r#"{"/": {"configure": ".*", "write": ".*", "read": ".*"}}"#;
const REDIS_ADMIN: (&str, &str) = ("mayfly_admin", "adm1n-Pa55word-for-redis");
const RABBIT_ADMIN: (&str, &str) = ("mayfly-bench-admin", "bench-Admin-pw-1");

pub enum Target {
    Postgres(PrivatePostgres),
    MariaDb(PrivateMariaDb),
    Redis(PrivateRedis),
    /// The machine's broker, through its management API. It is shared: `existing` are the
    /// users it held before the bench, which the bench's cleanup leaves alone.
    RabbitMq {
        existing: HashSet<String>,
    },
}

/// How both engines send PostgreSQL passwords (`BENCH_PG_PASSWORD_AUTH`): `password`, both
/// engines' default, or `scram-sha-256` (each engine hashes too; the server's work is the same).
pub fn pg_password_authentication() -> String {
    std::env::var("BENCH_PG_PASSWORD_AUTH").unwrap_or_else(|_| "password".into())
}

/// `BENCH_MAX_OPEN_CONNECTIONS` (default 4, both engines' own default): both engines' SQL
/// connections' pool size, and mayfly's idle connections per Redis node.
pub fn max_open_connections() -> u32 {
    std::env::var("BENCH_MAX_OPEN_CONNECTIONS").map_or(4, |n| {
        n.parse().expect("BENCH_MAX_OPEN_CONNECTIONS: a number")
    })
}

/// `BENCH_PG_SCRAM_ITERATIONS`: the rounds of mayfly's PostgreSQL verifiers, when set (it then
/// sends verifiers). The built-in engine has no such setting: its server work stays PostgreSQL's
/// 4096 rounds per user.
pub fn pg_scram_iterations() -> Option<u32> {
    let rounds = std::env::var("BENCH_PG_SCRAM_ITERATIONS").ok()?;
    Some(rounds.parse().expect("BENCH_PG_SCRAM_ITERATIONS: a number"))
}

impl Target {
    pub fn start(name: &str) -> Target {
        match name {
            "postgres" => {
                let pg = PrivatePostgres::start();
                pg.admin("CREATE ROLE app_readers NOLOGIN");
                Target::Postgres(pg)
            }
            "mariadb" => Target::MariaDb(PrivateMariaDb::start()),
            "redis" => {
                let redis = PrivateRedis::start();
                let (user, password) = REDIS_ADMIN;
                let pw = format!(">{password}");
                let setuser = ["ACL", "SETUSER", user, "on", &pw, "~*", "&*", "+@all"];
                redis.cli(&setuser).unwrap();
                Target::Redis(redis)
            }
            "rabbitmq" => {
                let (user, password) = RABBIT_ADMIN;
                let (status, body) = management(
                    "PUT",
                    &format!("/api/users/{user}"),
                    Some(&json!({"password": password, "tags": "administrator"})),
                );
                assert!(status < 300, "{body}");
                let existing = rabbit_users().into_iter().collect();
                Target::RabbitMq { existing }
            }
            other => panic!("unknown target {other}"),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Target::Postgres(_) => "postgres",
            Target::MariaDb(_) => "mariadb",
            Target::Redis(_) => "redis",
            Target::RabbitMq { .. } => "rabbitmq",
        }
    }

    /// The built-in engine's mount for this target.
    fn builtin_mount(&self) -> &'static str {
        match self {
            Target::RabbitMq { .. } => "rabbitmq",
            _ => "db",
        }
    }

    /// Mounts the built-in engine (once per server) and configures both engines' connections.
    pub fn configure(&self, bao: &Bao) {
        let mount = self.builtin_mount();
        let (_, mounts) = bao.get("sys/mounts");
        if mounts["data"][format!("{mount}/")].is_null() {
            let kind = if mount == "db" {
                "database"
            } else {
                "rabbitmq"
            };
            let (ok, out) = bao.cli(&["secrets", "enable", &format!("-path={mount}"), kind]);
            assert!(ok, "{out}");
        }
        let name = self.name();
        let mut connection = match self {
            Target::Postgres(pg) => pg.connection("postgresql-database-plugin"),
            Target::MariaDb(db) => db.connection("mysql-database-plugin"),
            Target::Redis(redis) => json!({
                "plugin_name": "redis-database-plugin", "host": "127.0.0.1", "port": redis.port,
                "username": REDIS_ADMIN.0, "password": REDIS_ADMIN.1, "allowed_roles": "*"}),
            Target::RabbitMq { .. } => json!({
                "plugin_name": "rabbitmq", "connection_uri": MANAGEMENT,
                "username": RABBIT_ADMIN.0, "password": RABBIT_ADMIN.1, "allowed_roles": "*"}),
        };
        if matches!(self, Target::Postgres(_) | Target::MariaDb(_)) {
            connection["max_open_connections"] = json!(max_open_connections());
        }
        if let Target::Postgres(_) = self {
            connection["password_authentication"] = json!(pg_password_authentication());
        }
        let mut ours = connection.clone();
        if let (Target::Postgres(_), Some(rounds)) = (self, pg_scram_iterations()) {
            ours["password_authentication"] = json!("scram-sha-256");
            ours["scram_iterations"] = json!(rounds);
        }
        if let Target::Redis(_) = self {
            // The built-in Redis plugin has no such setting; mayfly keeps as many idle
            // connections as the SQL engines here may open.
            ours["max_open_connections"] = json!(max_open_connections());
        }
        put(bao, &format!("mayfly/config/{name}"), ours);
        if let Target::RabbitMq { .. } = self {
            let obj = connection.as_object_mut().unwrap();
            obj.remove("plugin_name");
            obj.remove("allowed_roles");
            put(bao, "rabbitmq/config/connection", connection);
        } else {
            put(bao, &format!("db/config/{name}"), connection);
        }
    }

    /// Writes role `role` with `ttl` on `engine`'s mount, with the same statements on both.
    pub fn role(&self, bao: &Bao, engine: Engine, role: &str, ttl: u64) {
        let mut body = match self {
            Target::Postgres(_) => json!({"creation_statements": PG_CREATE}),
            Target::MariaDb(_) => json!({"creation_statements": MYSQL_CREATE}),
            Target::Redis(_) => json!({"creation_statements": REDIS_RULES}),
            Target::RabbitMq { .. } => json!({"tags": "management", "vhosts": RABBIT_VHOSTS}),
        };
        let builtin_rabbit = engine == Engine::Builtin && matches!(self, Target::RabbitMq { .. });
        if !builtin_rabbit {
            body["db_name"] = json!(self.name());
            body["default_ttl"] = json!(ttl);
            body["max_ttl"] = json!(ttl.max(7200));
        }
        put(bao, &self.path(engine, "roles", role), body);
        if builtin_rabbit {
            // The built-in rabbitmq engine takes TTLs on the mount's lease config.
            put(
                bao,
                "rabbitmq/config/lease",
                json!({"ttl": ttl, "max_ttl": ttl.max(7200)}),
            );
        }
    }

    pub fn creds_path(&self, engine: Engine, role: &str) -> String {
        self.path(engine, "creds", role)
    }

    /// `engine`'s path `what/role` (`roles`, `creds`) for this target.
    pub fn path(&self, engine: Engine, what: &str, role: &str) -> String {
        match engine {
            Engine::Mayfly => format!("mayfly/{what}/{role}"),
            Engine::Builtin => format!("{}/{what}/{role}", self.builtin_mount()),
        }
    }

    /// How many principals `engine` made for `role` exist on the target now. The built-in
    /// engine's names are `v-<display name>-<role, cut to 8>-…`, mayfly's `<mark>-<role>-…`.
    pub fn live(&self, engine: Engine, role: &str) -> usize {
        let like = match engine {
            Engine::Mayfly => format!("mf-______-{role}-%"),
            Engine::Builtin => format!("v-%-{}-%", &role[..role.len().min(8)]),
        };
        match self {
            Target::Postgres(pg) => pg
                .admin(&format!(
                    "SELECT count(*) FROM pg_roles WHERE rolname LIKE '{like}'"
                ))
                .parse()
                .unwrap(),
            _ => panic!("live counts are read on PostgreSQL only"),
        }
    }

    /// Removes every principal either engine made, straight on the target, so that each measured
    /// run meets the same target. MariaDB's and Redis's cost per new user grows with the users
    /// they hold (MariaDB rebuilds its privilege caches, Redis rewrites a longer ACL file), so
    /// runs in alternating order would otherwise each meet a bigger target than the run before
    /// (seen: MariaDB at 8 clients, 814/s in the first run, 299/s in the fifth). Both engines'
    /// leases and records stay; their TTL (1 h) outlasts the bench. Returns how many it dropped.
    pub fn drop_principals(&self) -> usize {
        // mayfly's names start `mf-`; the built-in database engine's `v-` (SQL) or `V_`
        // (Redis), the built-in RabbitMQ engine's with the token's display name, `token-`.
        let made = |name: &str| {
            ["mf-", "v-", "V_", "token-"]
                .iter()
                .any(|p| name.starts_with(p))
        };
        match self {
            Target::Postgres(pg) => {
                let listed = pg.admin("SELECT quote_ident(rolname) FROM pg_roles");
                drop_listed(&listed, '"', made, |list| {
                    pg.admin(&format!("DROP ROLE {list}"));
                })
            }
            Target::MariaDb(db) => {
                let listed =
                    db.root("SELECT CONCAT(QUOTE(User), '@', QUOTE(Host)) FROM mysql.user");
                drop_listed(&listed, '\'', made, |list| {
                    db.root(&format!("DROP USER {list}"));
                })
            }
            Target::Redis(redis) => {
                let listed = redis.cli(&["ACL", "USERS"]).unwrap();
                let users: Vec<&str> = listed.lines().filter(|u| made(u)).collect();
                for batch in users.chunks(500) {
                    let mut args = vec!["ACL", "DELUSER"];
                    args.extend_from_slice(batch);
                    redis.cli(&args).unwrap();
                }
                users.len()
            }
            Target::RabbitMq { existing } => {
                let users: Vec<String> = rabbit_users()
                    .into_iter()
                    .filter(|u| made(u) && !existing.contains(u))
                    .collect();
                if !users.is_empty() {
                    let body = json!({ "users": users });
                    let (status, resp) = management("POST", "/api/users/bulk-delete", Some(&body));
                    assert!(status < 300, "bulk-delete: {status} {resp}");
                }
                users.len()
            }
        }
    }

    /// Removes what the engines left on a shared target (the machine's broker).
    pub fn clean(&self, bao: &Bao) {
        if let Target::RabbitMq { .. } = self {
            for prefix in ["mayfly/creds", "rabbitmq/creds"] {
                let (status, body) = bao.put(
                    &format!("sys/leases/revoke-prefix/{prefix}"),
                    json!({"sync": true}),
                );
                assert!(status < 300, "{body}");
            }
            management("DELETE", &format!("/api/users/{}", RABBIT_ADMIN.0), None);
        }
    }
}

/// The names of the broker's users.
fn rabbit_users() -> Vec<String> {
    let (status, list) = management("GET", "/api/users", None);
    assert!(status < 300, "listing the broker's users: {status} {list}");
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u["name"].as_str().map(str::to_owned))
        .collect()
}

/// Drops, 500 to a statement (`drop` runs one with the comma-separated list), the quoted
/// names in `listed`, one a line, that `made` (given the name after its opening `quote`) picks.
fn drop_listed(
    listed: &str,
    quote: char,
    made: impl Fn(&str) -> bool,
    drop: impl Fn(String),
) -> usize {
    let names: Vec<&str> = listed
        .lines()
        .filter(|n| made(n.trim_start_matches(quote)))
        .collect();
    for batch in names.chunks(500) {
        drop(batch.join(", "));
    }
    names.len()
}

pub fn put(bao: &Bao, path: &str, body: Value) {
    let (status, resp) = bao.put(path, body);
    assert!(status < 300, "{path}: {status} {resp}");
}
