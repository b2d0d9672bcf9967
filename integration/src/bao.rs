//! A real OpenBao server on a free loopback port, with its own plugin directory holding a copy
//! of the freshly built mayfly binary: a dev server (in-memory storage), or a persistent one
//! (raft storage, initialised and unsealed by the harness) that can be restarted.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::process;

pub const ROOT_TOKEN: &str = "mayfly-test-root";

pub struct Bao {
    child: Option<Child>,
    pub addr: String,
    /// A second listener on IPv6 loopback (`start_dual_stack`): a client reaching it has the
    /// source address `::1`.
    addr6: Option<String>,
    port: u16,
    dir: PathBuf,
    plugin: PathBuf,
    log: PathBuf,
    agent: ureq::Agent,
    token: String,
    /// Set for a persistent server: its unseal key.
    unseal_key: Option<String>,
    /// A node of a raft cluster (`cluster.rs`): unsealed, it may be a standby, not active.
    clustered: bool,
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
    fn new() -> Bao {
        let dir = crate::scratch_dir("bao");
        let plugins = dir.join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        let plugin = plugins.join("mayfly");
        std::fs::copy(crate::plugin_binary(), &plugin).expect("copying the plugin binary");
        let port = crate::free_port();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Bao {
            child: None,
            addr: format!("http://127.0.0.1:{port}"),
            addr6: None,
            port,
            log: dir.join("bao.log"),
            dir,
            plugin,
            agent,
            token: ROOT_TOKEN.to_owned(),
            unseal_key: None,
            clustered: false,
        }
    }

    /// Spawns `bao server` with `args` and `env`; its output is appended to the log.
    fn spawn(&mut self, args: &[String], env: &[(&str, &str)]) {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(bao_binary());
        // Its own HOME: a dev server writes its root token to ~/.vault-token through a
        // temporary file and a rename, and two servers starting together race on that rename
        // (the loser exits with "rename /root/.vault-token.tmp …: no such file").
        cmd.arg("server")
            .args(args)
            .env("HOME", &self.dir)
            .envs(env.iter().copied())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        // Its own process group, so that teardown reaches every plugin it spawned.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        self.child = Some(cmd.spawn().expect("starting bao (run scripts/setup first)"));
    }

    /// Starts a dev server and waits until it answers. Plugins are registered by the test.
    pub fn start() -> Bao {
        Bao::start_with(&[])
    }

    /// As [`Bao::start`], with extra server flags (such as `-log-format=json`).
    pub fn start_with(extra: &[&str]) -> Bao {
        let mut bao = Bao::new();
        let mut args = vec![
            "-dev".to_owned(),
            format!("-dev-root-token-id={ROOT_TOKEN}"),
            format!("-dev-listen-address=127.0.0.1:{}", bao.port),
            format!("-dev-plugin-dir={}", bao.dir.join("plugins").display()),
            "-dev-plugin-init=false".to_owned(),
            "-log-level=debug".to_owned(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        bao.spawn(&args, &[]);
        let up = crate::wait_until(30.0, || bao.get("sys/health").0 == 200);
        assert!(up, "OpenBao did not come up; log:\n{}", bao.log());
        bao
    }

    /// As [`Bao::start_with`], with a second listener on `[::1]`, reached by
    /// [`Bao::request_v6`].
    pub fn start_dual_stack(extra: &[&str]) -> Bao {
        let (port, cluster_port) = (crate::free_port(), crate::free_port());
        let dir = crate::scratch_dir("bao-listener");
        let config = dir.join("listener.hcl");
        let hcl = format!(
            "listener \"tcp\" {{\n  address = \"[::1]:{port}\"\n  \
             cluster_address = \"[::1]:{cluster_port}\"\n  tls_disable = true\n}}\n"
        );
        std::fs::write(&config, hcl).unwrap();
        let flag = format!("-config={}", config.display());
        let mut args = vec![flag.as_str()];
        args.extend_from_slice(extra);
        let mut bao = Bao::start_with(&args);
        bao.addr6 = Some(format!("http://[::1]:{port}"));
        bao
    }

    /// Starts a server with raft storage (kept across restarts) and the raw storage endpoint
    /// on, initialises it with one unseal key and unseals it.
    pub fn start_persistent() -> Bao {
        let mut bao = Bao::new();
        bao.write_raft_config("mayfly-test", "");
        bao.launch_persistent(&[]);
        bao.initialize();
        bao.unseal();
        bao
    }

    /// Writes the configuration of a server with raft storage under node id `node_id`, with
    /// `extra` (HCL) appended.
    fn write_raft_config(&self, node_id: &str, extra: &str) {
        let port = self.port;
        let config = format!(
            r#"storage "raft" {{
  path = "{data}"
  node_id = "{node_id}"
}}
cluster_addr = "http://127.0.0.1:{cluster_port}"
listener "tcp" {{
  address = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster_port}"
  tls_disable = true
}}
plugin_directory = "{plugins}"
api_addr = "http://127.0.0.1:{port}"
raw_storage_endpoint = true
log_level = "debug"
{extra}
"#,
            data = self.dir.join("data").display(),
            cluster_port = crate::free_port(),
            plugins = self.dir.join("plugins").display(),
        );
        std::fs::write(self.dir.join("config.hcl"), config).unwrap();
        std::fs::create_dir_all(self.dir.join("data")).unwrap();
    }

    /// `sys/init` with one unseal key; keeps the root token and the key.
    fn initialize(&mut self) {
        let (status, body) = self.put(
            "sys/init",
            serde_json::json!({"secret_shares": 1, "secret_threshold": 1}),
        );
        assert_eq!(status, 200, "init: {body}");
        self.token = body["root_token"].as_str().unwrap().to_owned();
        self.unseal_key = Some(body["keys_base64"][0].as_str().unwrap().to_owned());
    }

    /// A node of a raft cluster, started but not initialised: the first node of a cluster
    /// initialises it ([`Bao::initialize_cluster`]), the others join it ([`Bao::join`]).
    /// `extra` is HCL appended to its configuration.
    pub fn raft_node(node_id: &str, extra: &str) -> Bao {
        let mut bao = Bao::new();
        bao.clustered = true;
        bao.write_raft_config(node_id, extra);
        bao.launch_persistent(&[]);
        bao
    }

    /// Initialises and unseals the first node of a cluster; it becomes the active node.
    pub fn initialize_cluster(&mut self) {
        self.initialize();
        self.unseal();
        let active = crate::wait_until(30.0, || self.health() == 200);
        assert!(
            active,
            "the first node did not become active; log:\n{}",
            self.log()
        );
    }

    /// Joins the cluster of `leader` (its token and unseal key are this node's from now on)
    /// and unseals; the node comes up as a standby.
    pub fn join(&mut self, leader: &Bao) {
        self.token = leader.token.clone();
        self.unseal_key = leader.unseal_key.clone();
        let (status, body) = self.put(
            "sys/storage/raft/join",
            json!({ "leader_api_addr": leader.addr }),
        );
        assert_eq!(status, 200, "raft join: {body}\n{}", self.log());
        self.unseal();
    }

    /// The status of `sys/health`: 200 active, 429 standby, 473 performance standby, 503
    /// sealed, 0 when the server does not answer.
    pub fn health(&self) -> u16 {
        self.get("sys/health").0
    }

    fn launch_persistent(&mut self, env: &[(&str, &str)]) {
        let config = self.dir.join("config.hcl").display().to_string();
        self.spawn(&[format!("-config={config}")], env);
        // Sealed or uninitialised servers answer sys/health with 501 or 503.
        let up = crate::wait_until(30.0, || self.get("sys/health").0 != 0);
        assert!(up, "OpenBao did not come up; log:\n{}", self.log());
    }

    /// Unseals with the kept key and waits until the server serves: active, or for a node of
    /// a cluster, a standby.
    fn unseal(&self) {
        let key = self.unseal_key.clone().expect("a persistent server");
        let (status, body) = self.put("sys/unseal", serde_json::json!({ "key": key }));
        assert_eq!(status, 200, "unseal: {body}");
        let serving = |h: u16| h == 200 || (self.clustered && (h == 429 || h == 473));
        let up = crate::wait_until(60.0, || serving(self.health()));
        assert!(up, "OpenBao did not come up unsealed; log:\n{}", self.log());
    }

    /// Stops a persistent server (SIGTERM) and starts it again with `env` added to its
    /// environment (which its plugins inherit), then unseals it. Mounts come back with their
    /// plugins started at unseal.
    pub fn restart(&mut self, env: &[(&str, &str)]) {
        self.stop();
        self.launch_persistent(env);
        self.unseal();
    }

    /// Kills a persistent server at once (SIGKILL to the server alone, as a crash would: its
    /// plugins must notice on their own), then starts and unseals it again.
    pub fn crash_and_restart(&mut self) {
        self.kill();
        self.start_again();
    }

    /// SIGKILLs the server alone, as a crash would; its plugins must notice on their own.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::signal(child.id() as i32, libc::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Starts a stopped or killed persistent server again and unseals it.
    pub fn start_again(&mut self) {
        self.launch_persistent(&[]);
        self.unseal();
    }

    /// Freezes the server process (SIGSTOP), as a long pause of its machine would; its
    /// plugins keep running. [`Bao::resume`] thaws it.
    pub fn pause(&self) {
        process::signal(self.pid(), libc::SIGSTOP);
    }

    pub fn resume(&self) {
        process::signal(self.pid(), libc::SIGCONT);
    }

    /// SIGKILLs every mayfly process of this server; returns how many there were.
    pub fn kill_plugins(&self) -> usize {
        let pids = self.plugin_pids();
        for &pid in &pids {
            process::signal(pid, libc::SIGKILL);
        }
        pids.len()
    }

    /// `bao plugin reload -plugin=mayfly` through the API: every mount of the plugin gets a new
    /// process. Returns the HTTP status.
    pub fn reload_plugin(&self) -> u16 {
        self.put("sys/plugins/reload/backend", json!({"plugin": "mayfly"}))
            .0
    }

    /// The storage of mount `path` as the host holds it, decrypted: every key under the
    /// mount's storage prefix and its value (needs the raw storage endpoint: persistent servers).
    pub fn raw_mount_storage(&self, path: &str) -> Vec<(String, String)> {
        let (_, mounts) = self.get("sys/mounts");
        let uuid = mounts["data"][format!("{path}/")]["uuid"]
            .as_str()
            .expect("mount uuid")
            .to_owned();
        let mut out = Vec::new();
        let mut folders = vec![format!("logical/{uuid}/")];
        while let Some(folder) = folders.pop() {
            let (_, listed) = self.list(&format!("sys/raw/{folder}"));
            for key in listed["data"]["keys"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let key = format!("{folder}{}", key.as_str().unwrap());
                if key.ends_with('/') {
                    folders.push(key);
                } else {
                    let (_, v) = self.get(&format!("sys/raw/{key}"));
                    out.push((key, v["data"]["value"].as_str().unwrap_or("").to_owned()));
                }
            }
        }
        out
    }

    /// Starts a server with mayfly registered by SHA-256 and mounted at `mayfly/`.
    pub fn with_mayfly() -> Bao {
        let bao = Bao::start();
        bao.register();
        bao.enable("mayfly");
        bao
    }

    /// A userpass login for `user` with the `agent` policy (mayfly's paths, no sudo), enabling
    /// userpass and writing the policy the first time: (token, entity id). Each user gets an
    /// identity entity at its first login.
    pub fn agent_login(&self, user: &str) -> (String, String) {
        let (_, auths) = self.get("sys/auth");
        if auths["data"]["userpass/"].is_null() {
            let (status, body) = self.put("sys/auth/userpass", json!({"type": "userpass"}));
            assert!(status < 300, "{status} {body}");
            let policy = r#"path "mayfly/*" { capabilities = ["create", "read", "update", "delete", "list"] }"#;
            let (status, body) = self.put("sys/policies/acl/agent", json!({"policy": policy}));
            assert!(status < 300, "{status} {body}");
        }
        let (status, body) = self.put(
            &format!("auth/userpass/users/{user}"),
            json!({"password": format!("pw-{user}"), "token_policies": "agent"}),
        );
        assert!(status < 300, "{status} {body}");
        let (status, body) = self.put(
            &format!("auth/userpass/login/{user}"),
            json!({"password": format!("pw-{user}")}),
        );
        assert_eq!(status, 200, "{body}");
        (
            body["auth"]["client_token"].as_str().unwrap().to_owned(),
            body["auth"]["entity_id"].as_str().unwrap().to_owned(),
        )
    }

    /// mayfly's audit events in the log of a server started with `-log-format=json`, in order.
    pub fn audit_events(&self) -> Vec<Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("audit_action").is_some())
            .collect()
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
    /// The root token, for a client outside this harness (hvac).
    pub fn root_token(&self) -> &str {
        &self.token
    }

    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(bao_binary())
            .args(args)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", &self.token)
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
        self.send(&self.token, method, path, body)
    }

    /// A request made with `token` instead of the harness's root token.
    pub fn request_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        self.send(token, method, path, body.map(|b| b.to_string()))
    }

    /// A request through the `[::1]` listener of a [`Bao::start_dual_stack`] server.
    pub fn request_v6(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let addr = self.addr6.as_deref().expect("a dual-stack server");
        send(
            &self.agent,
            addr,
            token,
            method,
            path,
            body.map(|b| b.to_string()),
            &[],
        )
    }

    /// A request with extra HTTP headers.
    pub fn request_with_headers(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        send(
            &self.agent,
            &self.addr,
            token,
            method,
            path,
            body.map(|b| b.to_string()),
            headers,
        )
    }

    fn send(&self, token: &str, method: &str, path: &str, body: Option<String>) -> (u16, Value) {
        send(&self.agent, &self.addr, token, method, path, body, &[])
    }

    /// This server's API for a client thread: it keeps working across a kill and restart of
    /// the server, and gives up on a request after `timeout`.
    pub fn endpoint(&self, timeout: Duration) -> Endpoint {
        Endpoint {
            addr: self.addr.clone(),
            token: self.token.clone(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(timeout))
                .build()
                .into(),
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
        let sep = if path.contains('?') { '&' } else { '?' };
        self.get(&format!("{path}{sep}list=true"))
    }

    /// Live mayfly processes started from this server's plugin directory.
    pub fn plugin_pids(&self) -> Vec<i32> {
        process::pids_of(&self.plugin)
    }

    /// Places a copy of the mayfly binary in this server's plugin directory as `command`, as
    /// an operator places a new version before registering it.
    pub fn install_plugin(&self, command: &str) {
        let to = self.plugin.with_file_name(command);
        std::fs::copy(crate::plugin_binary(), to).expect("copying the plugin binary");
    }

    /// Live processes started from `command` in this server's plugin directory.
    pub fn plugin_pids_of(&self, command: &str) -> Vec<i32> {
        process::pids_of(&self.plugin.with_file_name(command))
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

/// A server's API as a client thread holds it ([`Bao::endpoint`]).
#[derive(Clone)]
pub struct Endpoint {
    pub addr: String,
    token: String,
    agent: ureq::Agent,
}

impl Endpoint {
    /// One request; (status, JSON body), status 0 when the server did not answer.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        send(
            &self.agent,
            &self.addr,
            &self.token,
            method,
            path,
            body,
            &[],
        )
    }
}

/// One HTTP request to the server at `addr`; returns the status and the JSON body (`Null` when
/// empty), status 0 when it did not answer.
fn send(
    agent: &ureq::Agent,
    addr: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<String>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let url = format!("{addr}/v1/{path}");
    let result = match (method, body) {
        ("GET", _) => with_headers(agent.get(&url), token, headers).call(),
        ("DELETE", _) => with_headers(agent.delete(&url), token, headers).call(),
        ("PUT", b) => {
            let r = agent.put(&url).header("Content-Type", "application/json");
            with_headers(r, token, headers).send(b.unwrap_or_default())
        }
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

/// `r` with the token and the extra `headers`.
fn with_headers<B>(
    r: ureq::RequestBuilder<B>,
    token: &str,
    headers: &[(&str, &str)],
) -> ureq::RequestBuilder<B> {
    headers
        .iter()
        .fold(r.header("X-Vault-Token", token), |r, (k, v)| {
            r.header(*k, *v)
        })
}
