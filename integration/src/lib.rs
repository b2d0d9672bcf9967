//! The end-to-end harness: a real OpenBao server that loads the freshly built mayfly binary,
//! driven over HTTP as any client would, private PostgreSQL, MariaDB and Redis servers that
//! check passwords and may be stopped, and moto standing in for AWS.
//! Every process started here is stopped when its handle drops, also when a test fails.

pub mod bao;
pub mod chaos;
pub mod cluster;
pub mod creds;
pub mod expiry_watch;
pub mod http_fixtures;
pub mod load;
pub mod mariadb;
pub mod moto;
pub mod postgres;
pub mod process;
pub mod rabbitmq;
pub mod redis;

pub use bao::Bao;
pub use cluster::Cluster;
pub use mariadb::PrivateMariaDb;
pub use moto::Moto;
pub use postgres::PrivatePostgres;
pub use redis::PrivateRedis;

use std::path::PathBuf;
use std::sync::OnceLock;

/// The workspace root (this crate lives in `integration/`).
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The mayfly binary, built once per test process so a test never runs a stale one.
/// `MAYFLY_PLUGIN_BIN` points at a prebuilt binary instead.
pub fn plugin_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("MAYFLY_PLUGIN_BIN") {
            return PathBuf::from(p);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--quiet", "-p", "mayfly-plugin", "--bin", "mayfly"])
            .current_dir(workspace())
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building the mayfly binary failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join("target"));
        target.join("debug").join("mayfly")
    })
    .clone()
}

/// A UTC time written `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339, as IAM conditions and Vault's
/// `last_vault_rotation` write it), as unix seconds.
pub fn unix_of_rfc3339(text: &str) -> u64 {
    assert!(
        text.len() == 20 && text.ends_with('Z'),
        "not YYYY-MM-DDTHH:MM:SSZ: {text}"
    );
    let n = |r: std::ops::Range<usize>| text[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from the civil date (March-based years, so leap days come last).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    (days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)) as u64
}

/// Runs `openssl` with `args` in `dir` (scripts/setup installs it); panics with its error.
pub fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A fresh scratch directory under the system's temporary directory.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "mayfly-it-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls `check` every 50 ms until it holds or `secs` pass; returns whether it held.
pub fn wait_until(secs: f64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
