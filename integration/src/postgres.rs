//! A private PostgreSQL cluster that checks passwords (scram-sha-256 on TCP), started from the
//! system's binaries as the `postgres` user. The machine's own cluster trusts every loopback
//! login, so it cannot show that a password works or stops working.

use std::path::PathBuf;
use std::process::Command;

pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

/// The superuser of the private cluster and its password.
pub const SUPERUSER: &str = "mayfly_admin";
pub const SUPERUSER_PASSWORD: &str = "adm1n-Pa55word-for-tests";

fn bin_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("MAYFLY_PG_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (run scripts/setup)")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

fn as_postgres(cmd: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(cmd)
        .output()
        .expect("runuser")
}

impl PrivatePostgres {
    pub fn start() -> PrivatePostgres {
        let dir = crate::scratch_dir("pg");
        let data = dir.join("data");
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD).unwrap();
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        let bin = bin_dir();
        let initdb = bin.join("initdb");
        let out = as_postgres(&[
            initdb.to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-U",
            SUPERUSER,
            "--pwfile",
            pwfile.to_str().unwrap(),
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "--no-sync",
        ]);
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = crate::free_port();
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} -c fsync=off -c max_connections=200",
            dir.display()
        );
        let pg_ctl = bin.join("pg_ctl");
        let log = dir.join("pg.log");
        let out = as_postgres(&[
            pg_ctl.to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-o",
            &options,
            "-w",
            "start",
        ]);
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        PrivatePostgres { port, dir, bin }
    }

    /// A URL with mayfly's placeholders, for `connection_url`.
    pub fn template_url(&self) -> String {
        format!(
            "postgres://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres",
            self.port
        )
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl");
        as_postgres(&[
            pg_ctl.to_str().unwrap(),
            "-D",
            self.dir.join("data").to_str().unwrap(),
            "-m",
            "immediate",
            "stop",
        ]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
