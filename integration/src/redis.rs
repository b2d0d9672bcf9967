//! Private Redis servers from the system's `redis-server`, each on its own loopback port and
//! ACL file, so a test may stop one and configure ACL users freely.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

pub struct PrivateRedis {
    pub port: u16,
    dir: PathBuf,
    server: Mutex<Option<Child>>,
    /// Served over TLS only ([`PrivateRedis::start_tls`]).
    tls: Option<Tls>,
}

/// A TLS server's CA (PEM) and whether it asks clients for a certificate.
pub struct Tls {
    pub ca: String,
    pub client_certificates: bool,
}

impl PrivateRedis {
    /// A server that keeps its ACL users in an ACL file (`ACL SAVE`), so that they survive a
    /// restart, as a production node's do.
    pub fn start() -> PrivateRedis {
        let dir = crate::scratch_dir("redis");
        std::fs::write(
            dir.join("users.acl"),
            "user default on nopass ~* &* +@all\n",
        )
        .unwrap();
        let redis = PrivateRedis {
            port: crate::free_port(),
            dir,
            server: Mutex::new(None),
            tls: None,
        };
        redis.resume();
        redis
    }

    /// A server that speaks only TLS (`--tls-port`, no plain port), with a certificate for
    /// 127.0.0.1 from a CA made for it; with `client_certificates` it refuses clients without
    /// a certificate from that CA (`tls-auth-clients yes`).
    pub fn start_tls(client_certificates: bool) -> PrivateRedis {
        let dir = crate::scratch_dir("redis-tls");
        std::fs::write(
            dir.join("users.acl"),
            "user default on nopass ~* &* +@all\n",
        )
        .unwrap();
        let ca = crate::postgres::make_certificates(&dir);
        let redis = PrivateRedis {
            port: crate::free_port(),
            dir,
            server: Mutex::new(None),
            tls: Some(Tls {
                ca,
                client_certificates,
            }),
        };
        redis.resume();
        redis
    }

    /// The CA of a TLS server.
    pub fn ca(&self) -> &str {
        &self.tls.as_ref().expect("a TLS server").ca
    }

    /// A client certificate and its key (PEM), signed by a TLS server's CA.
    pub fn client_certificate(&self) -> (String, String) {
        let run = |args: &[&str]| crate::openssl(&self.dir, args);
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=mayfly",
            "-keyout",
            "client.key",
            "-out",
            "client.csr",
        ]);
        std::fs::write(
            self.dir.join("client.cnf"),
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "client.cnf",
            "-out",
            "client.pem",
        ]);
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap();
        (read("client.pem"), read("client.key"))
    }

    /// Starts the server (again, after [`PrivateRedis::halt`]) on the same port and ACL file.
    pub fn resume(&self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        match &self.tls {
            None => {
                cmd.args(["--port", &self.port.to_string()]);
            }
            Some(tls) => {
                cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(self.dir.join("server.pem"))
                    .arg("--tls-key-file")
                    .arg(self.dir.join("server.key"))
                    .arg("--tls-ca-cert-file")
                    .arg(self.dir.join("ca.pem"))
                    .args([
                        "--tls-auth-clients",
                        if tls.client_certificates { "yes" } else { "no" },
                    ]);
            }
        }
        let child = cmd
            .arg("--aclfile")
            .arg(self.dir.join("users.acl"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (the redis-server package; run scripts/setup)");
        *self.server.lock().unwrap() = Some(child);
        let up = crate::wait_until(10.0, || self.cli(&["PING"]).is_ok_and(|o| o == "PONG"));
        assert!(up, "redis-server did not start on port {}", self.port);
    }

    /// The server's ACL file as it is on disk now.
    pub fn acl_file(&self) -> String {
        std::fs::read_to_string(self.dir.join("users.acl")).unwrap_or_default()
    }

    /// Kills the server at once, as a crash or an outage would.
    pub fn halt(&self) {
        if let Some(mut child) = self.server.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs a command as the default user with redis-cli.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        self.cli_as(None, args)
    }

    /// Runs a command as `(user, password)` with redis-cli; an error reply is an `Err`.
    pub fn cli_as(&self, login: Option<(&str, &str)>, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(tls) = &self.tls {
            cmd.arg("--tls")
                .arg("--cacert")
                .arg(self.dir.join("ca.pem"));
            if tls.client_certificates {
                if !self.dir.join("client.pem").exists() {
                    self.client_certificate();
                }
                cmd.arg("--cert")
                    .arg(self.dir.join("client.pem"))
                    .arg("--key")
                    .arg(self.dir.join("client.key"));
            }
        }
        if let Some((user, password)) = login {
            cmd.args(["--user", user, "--no-auth-warning"]);
            cmd.env("REDISCLI_AUTH", password);
        }
        let out = cmd.args(args).output().expect("redis-cli");
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        // redis-cli exits 0 on error replies when not on a terminal; they start with ERR,
        // WRONGPASS, NOPERM…
        let error = text
            .split_whitespace()
            .next()
            .is_some_and(|w| w.chars().all(|c| c.is_ascii_uppercase()) && w != "OK" && w != "PONG");
        // redis-cli carries on as the default user when AUTH fails: that is a failure here.
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() && !error && !stderr.contains("AUTH failed") {
            Ok(text)
        } else {
            Err(format!("{text}{stderr}"))
        }
    }

    /// The ACL users whose names start with `prefix`.
    pub fn users_like(&self, prefix: &str) -> Vec<String> {
        let mut users: Vec<String> = self
            .cli(&["ACL", "USERS"])
            .unwrap()
            .lines()
            .filter(|u| u.starts_with(prefix))
            .map(str::to_owned)
            .collect();
        users.sort();
        users
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.halt();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
