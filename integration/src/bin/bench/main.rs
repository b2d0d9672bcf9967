//! Benchmarks mayfly against OpenBao's built-in engines side by side: one OpenBao with both
//! mounted against the same targets, the same statements, the same client load, in alternating
//! rounds (the engine that goes first alternates), reporting medians and ratios. Run it with
//! `scripts/bench`; it writes `report.md` and CSV files to `BENCH_OUT`.
//!
//! Scenarios (`BENCH_SCENARIOS`, comma-separated; default all):
//! - `issue`: creds/s, p50 and p99 at 1, 8 and 32 clients on PostgreSQL, MariaDB, Redis and
//!   RabbitMQ, and CPU per credential;
//! - `expiry`: 2,000 and 10,000 credentials expiring together on PostgreSQL: the seconds from the
//!   last expiry until none is left, and the live-user curve;
//! - `during`: issuance while 2,000 credentials (the first expiry count) expire;
//! - `sustained`: issuance held for `BENCH_SUSTAINED_SECS` (120) at 8 clients on PostgreSQL:
//!   whether the rate holds as users and ledger records pile up, in 10 s windows;
//! - `ceiling`: reads of a role at 8 clients on mayfly's mount and on the built-in Redis
//!   engine's, beside the built-in engine's Redis issuance: what OpenBao's round trip to any
//!   external plugin costs, and so the most any external engine can issue;
//! - `footprint`: the plugin's cold start, respawn, idle RSS;
//! - `scale`: `BENCH_SCALE_RECORDS` (1,000,000) ledger records written straight into the
//!   mount's storage: the plugin's restart to serving, its RSS, and the memory per record.

mod expiry;
mod issuance;
mod measure;
mod plugin_cost;
mod report;
mod targets;

use std::path::PathBuf;

use report::Report;

struct Settings {
    scenarios: Vec<String>,
    targets: Vec<String>,
    rounds: usize,
    /// Credentials per issuance run (at least 20 per client).
    issue_n: usize,
    clients: Vec<usize>,
    expire_counts: Vec<usize>,
    sustained_secs: usize,
    scale_records: usize,
    out: PathBuf,
}

impl Settings {
    fn from_env() -> Settings {
        let list = |name: &str, default: &str| -> Vec<String> {
            std::env::var(name)
                .unwrap_or_else(|_| default.into())
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let nums = |name: &str, default: &str| -> Vec<usize> {
            list(name, default)
                .iter()
                .map(|s| {
                    s.parse()
                        .unwrap_or_else(|_| panic!("{name}: not a number: {s}"))
                })
                .collect()
        };
        Settings {
            scenarios: list(
                "BENCH_SCENARIOS",
                "issue,expiry,during,sustained,ceiling,footprint,scale",
            ),
            targets: list("BENCH_TARGETS", "postgres,mariadb,redis,rabbitmq"),
            rounds: nums("BENCH_ROUNDS", "3")[0],
            issue_n: nums("BENCH_ISSUE_COUNT", "1000")[0],
            clients: nums("BENCH_CLIENTS", "1,8,32"),
            expire_counts: nums("BENCH_EXPIRE_COUNTS", "2000,10000"),
            sustained_secs: nums("BENCH_SUSTAINED_SECS", "120")[0],
            scale_records: nums("BENCH_SCALE_RECORDS", "1000000")[0],
            out: PathBuf::from(
                std::env::var("BENCH_OUT").unwrap_or_else(|_| "target/bench-report".into()),
            ),
        }
    }

    fn has(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == scenario)
    }
}

fn main() {
    let s = Settings::from_env();
    let plugin = std::env::var("MAYFLY_PLUGIN_BIN").unwrap_or_else(|_| "debug build".into());
    let mut report = Report::new(
        &s.out,
        &format!(
            "# mayfly vs OpenBao's built-in engines\n\nOne OpenBao 2.7.2 with both engines \
             mounted, the same targets and statements, {} alternating rounds, medians. \
             Plugin: `{plugin}`. Machine: {} cores.",
            s.rounds,
            cores()
        ),
    );
    if s.has("issue") {
        issuance::issuance(&s, &mut report);
    }
    if s.has("expiry") {
        expiry::expiry(&s, &mut report);
    }
    if s.has("during") {
        expiry::during(s.expire_counts[0], &mut report);
    }
    if s.has("sustained") {
        issuance::sustained(s.sustained_secs, &mut report);
    }
    if s.has("ceiling") {
        plugin_cost::ceiling(s.rounds, &mut report);
    }
    if s.has("footprint") {
        plugin_cost::footprint(&mut report);
    }
    if s.has("scale") {
        plugin_cost::scale(s.scale_records, &mut report);
    }
    report.print();
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}
