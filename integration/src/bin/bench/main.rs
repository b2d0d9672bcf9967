//! Benchmarks mayfly against OpenBao's built-in engines side by side: one OpenBao with both
//! mounted against the same targets, the same statements, the same client load, in alternating
//! rounds (the engine that goes first alternates), reporting medians and ratios. Run it with
//! `scripts/bench`; it writes `report.md` and CSV files to `BENCH_OUT`. `--help` lists the
//! scenarios and the settings ([`SCENARIOS`], [`KNOBS`]).

mod account;
mod expiry;
mod hold;
mod issuance;
mod measure;
mod plugin_cost;
mod report;
mod targets;

use std::path::PathBuf;

use report::Report;

/// The scenarios, in the order they run, and what each measures.
const SCENARIOS: [(&str, &str); 9] = [
    (
        "issue",
        "creds/s, p50 and p99 at each BENCH_CLIENTS on each BENCH_TARGETS and BENCH_STORAGE, \
         CPU per credential, and mayfly's host storage round trips per issuance",
    ),
    (
        "account",
        "where one issuance, renewal and revocation spends its time, phase by phase \
         (mayfly's metrics), beside both engines' latency; PostgreSQL, one client, each \
         BENCH_STORAGE",
    ),
    (
        "expiry",
        "each BENCH_EXPIRE_COUNTS credentials expiring together on PostgreSQL: seconds from \
         the last expiry until none is left, and the live-user curve",
    ),
    (
        "during",
        "issuance while the first BENCH_EXPIRE_COUNTS credentials expire",
    ),
    (
        "sustained",
        "issuance held for BENCH_SUSTAINED_SECS at 8 clients on PostgreSQL, in 10 s windows",
    ),
    (
        "ceiling",
        "reads of a role at 8 clients on mayfly's mount and the built-in Redis engine's, \
         beside its Redis issuance: the most any external engine can issue",
    ),
    ("footprint", "the plugin's cold start, respawn and idle RSS"),
    (
        "scale",
        "BENCH_SCALE_RECORDS ledger records written into the mount's storage: restart to \
         serving, RSS, memory per record",
    ),
    (
        "hold",
        "the hold sweep at each BENCH_HOLD_COUNTS live credentials: time and CPU of a pass \
         that decides them all, and of a policy write",
    ),
];

/// The settings, from the environment: (name, default, meaning).
const KNOBS: [(&str, &str, &str); 13] = [
    (
        "BENCH_SCENARIOS",
        "issue,account,expiry,during,sustained,ceiling,footprint,scale,hold",
        "the scenarios to run, comma-separated",
    ),
    (
        "BENCH_TARGETS",
        "postgres,mariadb,redis,rabbitmq",
        "the targets of the issue scenario",
    ),
    (
        "BENCH_STORAGE",
        "dev,raft",
        "the OpenBao storage of the issue and account scenarios: dev (in memory) or raft (on disk, an fsync \
         per write, as in production)",
    ),
    ("BENCH_ROUNDS", "3", "alternating rounds per measurement"),
    (
        "BENCH_ISSUE_COUNT",
        "1000",
        "credentials per issuance run (at least 20 per client)",
    ),
    (
        "BENCH_CLIENTS",
        "1,8,32",
        "concurrent clients of the issue scenario",
    ),
    (
        "BENCH_ACCOUNT_COUNT",
        "200",
        "issuances (then renewals, revocations) of the account scenario",
    ),
    (
        "BENCH_EXPIRE_COUNTS",
        "2000,10000",
        "credentials expiring together",
    ),
    (
        "BENCH_SUSTAINED_SECS",
        "120",
        "how long sustained issuance is held",
    ),
    (
        "BENCH_SCALE_RECORDS",
        "1000000",
        "ledger records of the scale scenario",
    ),
    (
        "BENCH_HOLD_COUNTS",
        "10000,100000",
        "live credentials of the hold scenario, ascending",
    ),
    (
        "BENCH_OUT",
        "target/bench-report",
        "where report.md and the CSV files go",
    ),
    (
        "MAYFLY_PLUGIN_BIN",
        "(set by scripts/bench)",
        "the plugin binary to register",
    ),
];

fn help() -> String {
    let mut out = String::from(
        "Benchmarks mayfly against OpenBao's built-in engines in one OpenBao, alternating \
         rounds.\n\nScenarios (BENCH_SCENARIOS):\n",
    );
    for (name, what) in SCENARIOS {
        out.push_str(&format!("  {name:<10} {what}\n"));
    }
    out.push_str("\nSettings (environment variables, default in brackets):\n");
    for (name, default, what) in KNOBS {
        out.push_str(&format!("  {name:<22} {what} [{default}]\n"));
    }
    out.push_str(
        "  BENCH_PG_PASSWORD_AUTH, BENCH_PG_SCRAM_ITERATIONS, BENCH_MAX_OPEN_CONNECTIONS: \
         how both engines reach PostgreSQL (see integration/src/bin/bench/targets.rs)\n",
    );
    out
}

struct Settings {
    scenarios: Vec<String>,
    targets: Vec<String>,
    storages: Vec<String>,
    rounds: usize,
    /// Credentials per issuance run (at least 20 per client).
    issue_n: usize,
    clients: Vec<usize>,
    account_n: usize,
    expire_counts: Vec<usize>,
    sustained_secs: usize,
    scale_records: usize,
    hold_counts: Vec<usize>,
    out: PathBuf,
}

impl Settings {
    fn from_env() -> Settings {
        let default = |name: &str| {
            KNOBS
                .iter()
                .find(|k| k.0 == name)
                .map_or_else(|| panic!("no knob {name}"), |k| k.1)
        };
        let list = |name: &str| -> Vec<String> {
            std::env::var(name)
                .unwrap_or_else(|_| default(name).into())
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let nums = |name: &str| -> Vec<usize> {
            list(name)
                .iter()
                .map(|s| {
                    s.parse()
                        .unwrap_or_else(|_| panic!("{name}: not a number: {s}"))
                })
                .collect()
        };
        let s = Settings {
            scenarios: list("BENCH_SCENARIOS"),
            targets: list("BENCH_TARGETS"),
            storages: list("BENCH_STORAGE"),
            rounds: nums("BENCH_ROUNDS")[0],
            issue_n: nums("BENCH_ISSUE_COUNT")[0],
            clients: nums("BENCH_CLIENTS"),
            account_n: nums("BENCH_ACCOUNT_COUNT")[0],
            expire_counts: nums("BENCH_EXPIRE_COUNTS"),
            sustained_secs: nums("BENCH_SUSTAINED_SECS")[0],
            scale_records: nums("BENCH_SCALE_RECORDS")[0],
            hold_counts: nums("BENCH_HOLD_COUNTS"),
            out: PathBuf::from(
                std::env::var("BENCH_OUT").unwrap_or_else(|_| default("BENCH_OUT").into()),
            ),
        };
        for scenario in &s.scenarios {
            assert!(
                SCENARIOS.iter().any(|(name, _)| name == scenario),
                "BENCH_SCENARIOS: no scenario '{scenario}'\n\n{}",
                help()
            );
        }
        for storage in &s.storages {
            assert!(
                matches!(storage.as_str(), "dev" | "raft"),
                "BENCH_STORAGE: expected dev or raft, got '{storage}'"
            );
        }
        s
    }

    fn has(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == scenario)
    }
}

fn main() {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        print!("{}", help());
        return;
    }
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
    if s.has("account") {
        account::account(s.account_n, &s.storages, &mut report);
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
    if s.has("hold") {
        hold::hold(&s.hold_counts, &mut report);
    }
    report.print();
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}
