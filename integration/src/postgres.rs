//! A private PostgreSQL cluster that checks passwords (scram-sha-256 on TCP), started from the
//! system's binaries as the `postgres` user. The machine's own cluster trusts every loopback
//! login, so it cannot show that a password works or stops working.

use std::path::PathBuf;
use std::process::Command;

pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    /// With TLS on: the PEM of the CA that signed the server's certificate.
    pub tls_ca: Option<String>,
}

/// The superuser of the private cluster and its password.
pub const SUPERUSER: &str = "mayfly_admin";
pub const SUPERUSER_PASSWORD: &str = "adm1n-Pa55word-for-tests";

/// A role's `creation_statements` for a login with the issued password, ending at the lease.
pub const CREATE: &str =
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';";

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
        Self::start_with(false)
    }

    /// A cluster that also takes TLS, with a certificate for 127.0.0.1 from a fresh CA.
    pub fn start_tls() -> PrivatePostgres {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> PrivatePostgres {
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
        let tls_ca = tls.then(|| make_certificates(&dir));
        let port = crate::free_port();
        let pg = PrivatePostgres {
            port,
            dir,
            bin,
            tls_ca,
        };
        pg.resume();
        pg
    }

    /// The server's log so far.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pg.log")).unwrap_or_default()
    }

    /// Starts the cluster again after [`PrivatePostgres::halt`], on the same port.
    pub fn resume(&self) {
        let (port, dir, bin) = (self.port, &self.dir, &self.bin);
        let data = dir.join("data");
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} -c fsync=off -c max_connections=200",
            dir.display()
        );
        if self.tls_ca.is_some() {
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={0}/server.pem -c ssl_key_file={0}/server.key",
                dir.display()
            ));
        }
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
    }

    /// Stops the cluster at once (as a crash or an outage would), keeping its data.
    pub fn halt(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let out = as_postgres(&[
            pg_ctl.to_str().unwrap(),
            "-D",
            self.dir.join("data").to_str().unwrap(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ]);
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `sql` with psql as `user`; returns the unaligned output or psql's error text.
    pub fn psql_as(&self, user: &str, password: &str, sql: &str) -> Result<String, String> {
        self.psql().run_as(user, password, sql)
    }

    /// The cluster's own psql binary, for a client outside this harness.
    pub fn psql_binary(&self) -> PathBuf {
        self.bin.join("psql")
    }

    /// psql on this cluster, for a thread of its own.
    pub fn psql(&self) -> Psql {
        Psql {
            bin: self.bin.clone(),
            port: self.port,
        }
    }

    /// Runs `sql` as the superuser; panics on failure.
    pub fn admin(&self, sql: &str) -> String {
        self.psql_as(SUPERUSER, SUPERUSER_PASSWORD, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The roles whose names start with `prefix`.
    pub fn roles_like(&self, prefix: &str) -> Vec<String> {
        let out = self.admin(&format!(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, '{prefix}') ORDER BY 1"
        ));
        out.lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// A psql session as `user` that stays open for `secs`, for tests that a revocation ends
    /// open sessions.
    pub fn open_session(&self, user: &str, password: &str, secs: u32) -> std::process::Child {
        Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", user])
            .args([
                "-d",
                "postgres",
                "-X",
                "-c",
                &format!("SELECT pg_sleep({secs})"),
            ])
            .env("PGPASSWORD", password)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("running psql")
    }

    /// Writes `mayfly/config/NAME` on `bao`: this cluster as its superuser, open to every role.
    pub fn connect(&self, bao: &crate::Bao, name: &str) {
        let (status, body) = bao.put(
            &format!("mayfly/config/{name}"),
            self.connection("postgresql-database-plugin"),
        );
        assert_eq!(status, 204, "{body}");
    }

    /// The body of a `config/NAME` write for this cluster as its superuser, open to every role.
    pub fn connection(&self, plugin_name: &str) -> serde_json::Value {
        serde_json::json!({"plugin_name": plugin_name, "connection_url": self.template_url(),
                           "username": SUPERUSER, "password": SUPERUSER_PASSWORD,
                           "allowed_roles": "*"})
    }

    /// A URL with mayfly's placeholders, for `connection_url`.
    pub fn template_url(&self) -> String {
        format!(
            "postgres://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres",
            self.port
        )
    }
}

/// psql on a cluster ([`PrivatePostgres::psql`]).
#[derive(Clone)]
pub struct Psql {
    bin: PathBuf,
    port: u16,
}

impl Psql {
    /// Runs `sql` as `user`; returns the unaligned output or psql's error text.
    pub fn run_as(&self, user: &str, password: &str, sql: &str) -> Result<String, String> {
        self.run_in("postgres", user, password, sql)
    }

    /// Runs `sql` as `user` in `database`; returns the unaligned output or psql's error text.
    pub fn run_in(
        &self,
        database: &str,
        user: &str,
        password: &str,
        sql: &str,
    ) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", user])
            .args([
                "-d",
                database,
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .expect("running psql");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it, in `dir` (readable by the
/// `postgres` user, the key only by it); returns the CA's PEM.
pub fn make_certificates(dir: &std::path::Path) -> String {
    let run = |args: &[&str]| crate::openssl(dir, args);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-days",
            "2",
            "-subj",
            "/CN=mayfly test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
    for (file, mode) in [("server.key", "600"), ("server.pem", "644")] {
        Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.join(file))
            .status()
            .unwrap();
        Command::new("chmod")
            .arg(mode)
            .arg(dir.join(file))
            .status()
            .unwrap();
    }
    std::fs::read_to_string(dir.join("ca.pem")).unwrap()
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
