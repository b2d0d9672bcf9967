//! Benchmarks mayfly against OpenBao's built-in `database` engine, in the same OpenBao and the
//! same PostgreSQL, in one run: credentials issued per second at 1 and 8 concurrent clients
//! (with p50/p99 latency), and the seconds from expiry until 2,000 credentials that expire
//! together are gone from `pg_roles`. Run it with `scripts/bench`; figures go to stdout.

use std::time::{Duration, Instant};

use mayfly_integration::bao::ROOT_TOKEN;
use mayfly_integration::postgres::{SUPERUSER, SUPERUSER_PASSWORD};
use mayfly_integration::{Bao, PrivatePostgres, load};
use serde_json::json;

const CREATE: &str = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' \
                      VALID UNTIL '{{expiration}}' IN ROLE app_readers;";

struct Engine {
    label: &'static str,
    /// Path to read credentials from.
    creds: &'static str,
    /// Role prefix its users carry.
    prefix: &'static str,
    roles: &'static str,
}

const MAYFLY: Engine = Engine {
    label: "mayfly",
    creds: "mayfly/creds/app",
    prefix: "mf-",
    roles: "mayfly/roles/app",
};
const BUILTIN: Engine = Engine {
    label: "built-in database",
    creds: "db/creds/app",
    prefix: "v-",
    roles: "db/roles/app",
};

fn main() {
    let count: usize = arg("BENCH_EXPIRE_COUNT", 2000);
    let issue_n: usize = arg("BENCH_ISSUE_COUNT", 400);
    let pg = PrivatePostgres::start();
    pg.admin("CREATE ROLE app_readers NOLOGIN");
    let bao = Bao::with_mayfly();
    let (ok, out) = bao.cli(&["secrets", "enable", "-path=db", "database"]);
    assert!(ok, "{out}");
    for mount in ["mayfly", "db"] {
        let (status, body) = bao.put(
            &format!("{mount}/config/pg"),
            json!({"plugin_name": "postgresql-database-plugin",
                   "connection_url": pg.template_url(), "username": SUPERUSER,
                   "password": SUPERUSER_PASSWORD, "allowed_roles": "*",
                   "max_open_connections": 8}),
        );
        assert!(status < 300, "{mount}: {body}");
    }
    println!("# mayfly vs OpenBao's built-in database engine, same OpenBao, same PostgreSQL");
    println!(
        "# same creation statement; each engine's default revocation; plugin: {}",
        std::env::var("MAYFLY_PLUGIN_BIN").unwrap_or_else(|_| "debug build".into())
    );

    let mut rates = Vec::new();
    for clients in [1, 8] {
        for engine in [&MAYFLY, &BUILTIN] {
            role(&bao, engine, 3600);
            let run = load::issue_many(&bao, ROOT_TOKEN, engine.creds, issue_n, clients);
            let (rate, p50, p99) = (run.rate, run.p50_ms, run.p99_ms);
            println!(
                "issue  {:<18} clients={clients}  {rate:7.1}/s  p50 {p50:6.1} ms  p99 {p99:6.1} ms",
                engine.label
            );
            rates.push((engine.label, clients, rate, p50, p99));
            cleanup(&bao, &pg, engine);
        }
    }
    for clients in [1, 8] {
        let m = rates
            .iter()
            .find(|r| r.0 == MAYFLY.label && r.1 == clients)
            .unwrap();
        let b = rates
            .iter()
            .find(|r| r.0 == BUILTIN.label && r.1 == clients)
            .unwrap();
        println!(
            "ratio  clients={clients}: mayfly/built-in throughput x{:.2}; built-in/mayfly latency p50 x{:.2}, p99 x{:.2}",
            m.2 / b.2,
            b.3 / m.3,
            b.4 / m.4
        );
    }

    if count == 0 {
        return;
    }
    let mut expiry = Vec::new();
    for engine in [&MAYFLY, &BUILTIN] {
        let (secs, window) = expire_together(&bao, &pg, engine, count);
        println!(
            "expire {:<18} {count} credentials (issued over {window:.1} s) gone {secs:6.1} s \
             after the last expiry",
            engine.label
        );
        expiry.push(secs);
    }
    println!(
        "ratio  expiry of {count}: mayfly x{:.1} faster",
        expiry[1] / expiry[0].max(0.1)
    );
}

fn arg(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn role(bao: &Bao, engine: &Engine, ttl: u64) {
    let (status, body) = bao.put(
        engine.roles,
        json!({"db_name": "pg", "creation_statements": CREATE, "default_ttl": ttl,
               "max_ttl": 7200}),
    );
    assert!(status < 300, "{}: {body}", engine.label);
}

/// Revokes everything an engine issued and waits until its users are gone.
fn cleanup(bao: &Bao, pg: &PrivatePostgres, engine: &Engine) {
    let prefix = engine.creds;
    let (status, body) = bao.put(&format!("sys/leases/revoke-prefix/{prefix}"), json!({}));
    assert!(status < 300, "{body}");
    let gone = mayfly_integration::wait_until(600.0, || count_users(pg, engine) == 0);
    assert!(gone, "{}: users left after cleanup", engine.label);
}

fn count_users(pg: &PrivatePostgres, engine: &Engine) -> usize {
    pg.admin(&format!(
        "SELECT count(*) FROM pg_roles WHERE starts_with(rolname, '{}')",
        engine.prefix
    ))
    .parse()
    .unwrap()
}

/// Issues `count` credentials with one TTL, long enough that all exist before the first
/// expires; returns the seconds from the last one's expiry until none is left in pg_roles, and
/// the seconds issuing took (the spread of their expiries).
fn expire_together(bao: &Bao, pg: &PrivatePostgres, engine: &Engine, count: usize) -> (f64, f64) {
    // Issue rate decides the window; leave room so nothing expires while issuing.
    let ttl = 150;
    role(bao, engine, ttl);
    let start = Instant::now();
    load::issue_many(bao, ROOT_TOKEN, engine.creds, count, 8);
    let issued_in = start.elapsed();
    assert!(
        issued_in < Duration::from_secs(ttl),
        "{}: issuing took {issued_in:?}, longer than the TTL",
        engine.label
    );
    let last_expiry = Instant::now() + Duration::from_secs(ttl);
    assert_eq!(count_users(pg, engine), count);
    while Instant::now() < last_expiry {
        std::thread::sleep(Duration::from_millis(200));
    }
    loop {
        if count_users(pg, engine) == 0 {
            return (last_expiry.elapsed().as_secs_f64(), issued_in.as_secs_f64());
        }
        assert!(
            last_expiry.elapsed() < Duration::from_secs(1200),
            "{}: users still there 20 minutes after expiry",
            engine.label
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
