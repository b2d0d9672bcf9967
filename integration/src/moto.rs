//! A private moto server standing in for AWS STS and IAM on loopback, and SDK clients for the
//! tests to prepare IAM and to use the credentials mayfly issues.

use std::process::{Child, Command, Stdio};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_sts::config::Credentials;

pub struct Moto {
    pub endpoint: String,
    server: Child,
    runtime: tokio::runtime::Runtime,
}

/// moto's server binary: `MAYFLY_MOTO`, as scripts/env.sh sets it.
fn moto_binary() -> String {
    std::env::var("MAYFLY_MOTO")
        .expect("MAYFLY_MOTO is not set: source scripts/env.sh after scripts/setup")
}

impl Moto {
    pub fn start() -> Moto {
        let port = crate::free_port();
        let server = Command::new(moto_binary())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server (pip install 'moto[server]'; run scripts/setup)");
        let endpoint = format!("http://127.0.0.1:{port}");
        let up = crate::wait_until(30.0, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "moto did not start on port {port}");
        Moto {
            endpoint,
            server,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    /// Runs an SDK call to completion.
    pub fn run<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    fn config(&self, key: &str, secret: &str, token: Option<&str>) -> aws_config::SdkConfig {
        self.run(
            aws_config::defaults(BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .endpoint_url(&self.endpoint)
                .credentials_provider(Credentials::new(
                    key,
                    secret,
                    token.map(str::to_owned),
                    None,
                    "test",
                ))
                .load(),
        )
    }

    /// An STS client with these credentials.
    pub fn sts(&self, key: &str, secret: &str, token: Option<&str>) -> aws_sdk_sts::Client {
        aws_sdk_sts::Client::new(&self.config(key, secret, token))
    }

    /// An IAM client with moto's default (administrator) credentials.
    pub fn iam(&self) -> aws_sdk_iam::Client {
        aws_sdk_iam::Client::new(&self.config("AKIAADMINEXAMPLE", "admin-secret", None))
    }

    /// The ARN of `GetCallerIdentity` with these credentials.
    pub fn caller_arn(
        &self,
        key: &str,
        secret: &str,
        token: Option<&str>,
    ) -> Result<String, String> {
        let sts = self.sts(key, secret, token);
        self.run(sts.get_caller_identity().send())
            .map(|o| o.arn().unwrap_or_default().to_owned())
            .map_err(|e| aws_sdk_sts::error::DisplayErrorContext(e).to_string())
    }

    /// Role `name` with this MaxSessionDuration; returns its ARN.
    pub fn create_role(&self, name: &str, max_session: i32) -> String {
        let iam = self.iam();
        let out = self
            .run(
                iam.create_role()
                    .role_name(name)
                    .assume_role_policy_document(
                        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}"#,
                    )
                    .max_session_duration(max_session)
                    .send(),
            )
            .expect("CreateRole");
        out.role().unwrap().arn().to_owned()
    }

    /// IAM user `name` with one access key: (key id, secret).
    pub fn create_user_with_key(&self, name: &str) -> (String, String) {
        let iam = self.iam();
        self.run(iam.create_user().user_name(name).send())
            .expect("CreateUser");
        let key = self
            .run(iam.create_access_key().user_name(name).send())
            .expect("CreateAccessKey");
        let k = key.access_key().unwrap();
        (
            k.access_key_id().to_owned(),
            k.secret_access_key().to_owned(),
        )
    }

    /// The ids of user `name`'s access keys.
    pub fn access_keys(&self, name: &str) -> Vec<String> {
        let iam = self.iam();
        let out = self
            .run(iam.list_access_keys().user_name(name).send())
            .expect("ListAccessKeys");
        out.access_key_metadata()
            .iter()
            .filter_map(|k| k.access_key_id().map(str::to_owned))
            .collect()
    }

    /// The decoded document of inline policy `policy` on role `role`, if there is one.
    pub fn role_policy(&self, role: &str, policy: &str) -> Option<String> {
        let iam = self.iam();
        let out = self
            .run(
                iam.get_role_policy()
                    .role_name(role)
                    .policy_name(policy)
                    .send(),
            )
            .ok()?;
        let doc = out.policy_document();
        Some(decode(doc))
    }

    /// Puts inline policy `policy` with `document` on role `role`.
    pub fn put_role_policy(&self, role: &str, policy: &str, document: &str) {
        let iam = self.iam();
        self.run(
            iam.put_role_policy()
                .role_name(role)
                .policy_name(policy)
                .policy_document(document)
                .send(),
        )
        .expect("PutRolePolicy");
    }

    /// The same for a user's inline policy.
    pub fn user_policy(&self, user: &str, policy: &str) -> Option<String> {
        let iam = self.iam();
        let out = self
            .run(
                iam.get_user_policy()
                    .user_name(user)
                    .policy_name(policy)
                    .send(),
            )
            .ok()?;
        let doc = out.policy_document();
        Some(decode(doc))
    }
}

/// IAM's URL-encoded policy documents, decoded.
fn decode(doc: &str) -> String {
    percent_encoding::percent_decode_str(doc)
        .decode_utf8_lossy()
        .into_owned()
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}
