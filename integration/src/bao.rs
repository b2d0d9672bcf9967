//! A real OpenBao dev server on a free loopback port, with its own plugin directory holding a
//! copy of the freshly built mayfly binary.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::process;

pub const ROOT_TOKEN: &str = "mayfly-test-root";

pub struct Bao {
    child: Option<Child>,
    pub addr: String,
    dir: PathBuf,
    plugin: PathBuf,
    log: PathBuf,
    agent: ureq::Agent,
}

/// The `bao` binary: `MAYFLY_BAO`, else the project's virtualenv, else the PATH.
pub fn bao_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("MAYFLY_BAO") {
        return PathBuf::from(p);
    }
    let venv = crate::workspace().join(".venv/bin/bao");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("bao")
    }
}

impl Bao {
    /// Starts the server and waits until it answers. Plugins are registered by the test.
    pub fn start() -> Bao {
        let dir = crate::scratch_dir("bao");
        let plugins = dir.join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        let plugin = plugins.join("mayfly");
        std::fs::copy(crate::plugin_binary(), &plugin).expect("copying the plugin binary");
        let port = crate::free_port();
        let addr = format!("http://127.0.0.1:{port}");
        let log = dir.join("bao.log");
        let out = File::create(&log).unwrap();
        let mut cmd = Command::new(bao_binary());
        cmd.args([
            "server",
            "-dev",
            &format!("-dev-root-token-id={ROOT_TOKEN}"),
            &format!("-dev-listen-address=127.0.0.1:{port}"),
            &format!("-dev-plugin-dir={}", plugins.display()),
            "-dev-plugin-init=false",
            "-log-level=debug",
        ])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
        // Its own process group, so that teardown reaches every plugin it spawned.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("starting bao (run scripts/setup first)");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let bao = Bao {
            child: Some(child),
            addr,
            dir,
            plugin,
            log,
            agent,
        };
        let up = crate::wait_until(30.0, || bao.get("sys/health").0 == 200);
        assert!(up, "OpenBao did not come up; log:\n{}", bao.log());
        bao
    }

    /// Starts a server with mayfly registered by SHA-256 and mounted at `mayfly/`.
    pub fn with_mayfly() -> Bao {
        let bao = Bao::start();
        bao.register();
        bao.enable("mayfly");
        bao
    }

    /// The server's process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn sha256(&self) -> String {
        let out = Command::new("sha256sum")
            .arg(&self.plugin)
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    }

    /// Runs the `bao` CLI against this server; returns (success, stdout + stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(bao_binary())
            .args(args)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", ROOT_TOKEN)
            .stdin(Stdio::null())
            .output()
            .expect("running the bao CLI");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// `bao plugin register -sha256=… secret mayfly`, as an operator would.
    pub fn register(&self) {
        let sha = self.sha256();
        let (ok, out) = self.cli(&[
            "plugin",
            "register",
            &format!("-sha256={sha}"),
            "secret",
            "mayfly",
        ]);
        assert!(ok, "register failed: {out}\nlog:\n{}", self.log());
    }

    pub fn enable(&self, path: &str) {
        let (ok, out) = self.cli(&["secrets", "enable", &format!("-path={path}"), "mayfly"]);
        assert!(ok, "enable failed: {out}\nlog:\n{}", self.log());
    }

    /// One HTTP request; returns the status and the JSON body (`Null` when empty).
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.request_raw(method, path, body.map(|b| b.to_string()))
    }

    pub fn request_raw(&self, method: &str, path: &str, body: Option<String>) -> (u16, Value) {
        let url = format!("{}/v1/{path}", self.addr);
        let result = match (method, body) {
            ("GET", _) => self
                .agent
                .get(&url)
                .header("X-Vault-Token", ROOT_TOKEN)
                .call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("X-Vault-Token", ROOT_TOKEN)
                .call(),
            ("PUT", b) => self
                .agent
                .put(&url)
                .header("X-Vault-Token", ROOT_TOKEN)
                .header("Content-Type", "application/json")
                .send(b.unwrap_or_default()),
            (m, _) => panic!("unsupported method {m}"),
        };
        match result {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let text = resp
                    .body_mut()
                    .with_config()
                    .limit(64 * 1024 * 1024)
                    .read_to_string()
                    .unwrap_or_default();
                (status, serde_json::from_str(&text).unwrap_or(Value::Null))
            }
            Err(e) => (0, Value::String(e.to_string())),
        }
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, None)
    }

    pub fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.request("PUT", path, Some(&body))
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        self.request("DELETE", path, None)
    }

    pub fn list(&self, path: &str) -> (u16, Value) {
        self.get(&format!("{path}?list=true"))
    }

    /// Live mayfly processes started from this server's plugin directory.
    pub fn plugin_pids(&self) -> Vec<i32> {
        process::pids_of(&self.plugin)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the server as an operator would (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::signal(child.id() as i32, libc::SIGTERM);
            let exited = crate::wait_until(20.0, || matches!(child.try_wait(), Ok(Some(_))));
            if !exited {
                process::signal_group(child.id() as i32, libc::SIGKILL);
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::signal_group(child.id() as i32, libc::SIGKILL);
            let _ = child.wait();
        }
        for pid in self.plugin_pids() {
            process::signal(pid, libc::SIGKILL);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
