//! A private MariaDB server from the system's binaries, on its own loopback port and data
//! directory, so a test may stop it, and rotate its admin's password, without touching the
//! machine's own server.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

/// The admin user mayfly connects as, and its password.
pub const ADMIN: &str = "mayfly_admin";
pub const ADMIN_PASSWORD: &str = "adm1n-Pa55word-for-mysql";

pub struct PrivateMariaDb {
    pub port: u16,
    dir: PathBuf,
    server: Mutex<Option<Child>>,
}

impl PrivateMariaDb {
    pub fn start() -> PrivateMariaDb {
        let dir = crate::scratch_dir("mariadb");
        // Temporary tables in a directory of this server's own: in the shared /tmp, a file a
        // killed server left behind broke a later bootstrap that got the same process id.
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let out = Command::new("mariadb-install-db")
            .args(["--no-defaults", "--user=root", "--skip-test-db"])
            .arg(format!("--tmpdir={}", tmp.display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-name-resolve",
            ])
            .arg(format!("--datadir={}", dir.join("data").display()))
            .output()
            .expect("mariadb-install-db (the mariadb-server package; run scripts/setup)");
        assert!(
            out.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let db = PrivateMariaDb {
            port: crate::free_port(),
            dir,
            server: Mutex::new(None),
        };
        db.resume();
        db.root(&format!(
            "CREATE USER '{ADMIN}'@'%' IDENTIFIED BY '{ADMIN_PASSWORD}'; \
             GRANT ALL PRIVILEGES ON *.* TO '{ADMIN}'@'%' WITH GRANT OPTION; \
             CREATE DATABASE app; CREATE TABLE app.items (id INT PRIMARY KEY); \
             INSERT INTO app.items VALUES (1), (2);"
        ));
        db
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// Starts the server (again, after [`PrivateMariaDb::halt`]) on the same port and data.
    pub fn resume(&self) {
        let child = Command::new("mariadbd")
            .args(["--no-defaults", "--user=root", "--bind-address=127.0.0.1"])
            .args([
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
                "--skip-name-resolve",
            ])
            .arg(format!("--port={}", self.port))
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(format!("--tmpdir={}", self.dir.join("tmp").display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--pid-file={}", self.dir.join("pid").display()))
            .arg(format!(
                "--log-error={}",
                self.dir.join("err.log").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd");
        *self.server.lock().unwrap() = Some(child);
        let up = crate::wait_until(30.0, || self.try_root("SELECT 1").is_ok());
        assert!(
            up,
            "MariaDB did not start: {}",
            std::fs::read_to_string(self.dir.join("err.log")).unwrap_or_default()
        );
    }

    /// Kills the server at once (as a crash or an outage would), keeping its data.
    pub fn halt(&self) {
        if let Some(mut child) = self.server.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn try_root(&self, sql: &str) -> Result<String, String> {
        let mut cmd = Command::new("mariadb");
        cmd.args(["--no-defaults", "-uroot", "-N", "-B"])
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-e", sql]);
        output(cmd)
    }

    /// Runs `sql` as root over the socket; panics on failure.
    pub fn root(&self, sql: &str) -> String {
        self.try_root(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Runs `sql` as `user` over TCP, so that the password is checked.
    pub fn sql_as(&self, user: &str, password: &str, sql: &str) -> Result<String, String> {
        let mut cmd = Command::new("mariadb");
        cmd.args(["--no-defaults", "-h", "127.0.0.1", "-N", "-B"])
            .arg(format!("--port={}", self.port))
            .arg(format!("--user={user}"))
            .arg("--connect-timeout=5")
            .args(["-e", sql])
            .env("MYSQL_PWD", password);
        output(cmd)
    }

    /// The accounts (`user@host`) whose user name starts with `prefix`.
    pub fn users_like(&self, prefix: &str) -> Vec<String> {
        self.root(&format!(
            "SELECT CONCAT(User, '@', Host) FROM mysql.user WHERE LEFT(User, {}) = '{prefix}' ORDER BY 1",
            prefix.len()
        ))
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
    }

    /// A session as `user` that stays open for `secs`, for tests that revocation ends it.
    pub fn open_session(&self, user: &str, password: &str, secs: u32) -> Child {
        Command::new("mariadb")
            .args(["--no-defaults", "-h", "127.0.0.1"])
            .arg(format!("--port={}", self.port))
            .arg(format!("--user={user}"))
            .args(["-e", &format!("SELECT SLEEP({secs})")])
            .env("MYSQL_PWD", password)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the mariadb client")
    }

    /// The body of a `config/NAME` write for this server as its admin, open to every role.
    pub fn connection(&self, plugin_name: &str) -> serde_json::Value {
        serde_json::json!({"plugin_name": plugin_name, "connection_url": self.template_url(),
                           "username": ADMIN, "password": ADMIN_PASSWORD, "allowed_roles": "*"})
    }

    /// OpenBao's form of `connection_url`, with mayfly's placeholders.
    pub fn template_url(&self) -> String {
        format!(
            "{{{{username}}}}:{{{{password}}}}@tcp(127.0.0.1:{})/",
            self.port
        )
    }
}

/// The client's output, trimmed: stdout on success, stderr on failure.
fn output(mut cmd: Command) -> Result<String, String> {
    let out = cmd.output().expect("the mariadb client");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        self.halt();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
