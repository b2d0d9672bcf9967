//! What differs when HashiCorp Vault runs mayfly, tested at the level of the plugin process
//! (no Vault binary can be had here). From Vault's and go-plugin's source: Vault sets only
//! `VAULT_*` names (OpenBao sets `BAO_*` too), and its container runtime asks for the socket in
//! a directory it shares and for a group that may use it (go-plugin's `constants.go`,
//! `PLUGIN_UNIX_SOCKET_DIR` and `PLUGIN_UNIX_SOCKET_GROUP`; `server.go`,
//! `serverListener_unix` and `setGroupWritable`). Vault's multiplexed broker has a test host of
//! its own in plugin/tests/multiplexed_broker.rs.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Stdio};

use mayfly_integration::{plugin_binary, scratch_dir};

/// A certificate as go-plugin's AutoMTLS hands the plugin in `PLUGIN_CLIENT_CERT`: ECDSA
/// P-521, self-signed, for `localhost`.
fn host_certificate(dir: &std::path::Path) -> String {
    mayfly_integration::openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:secp521r1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "host.key",
            "-out",
            "host.pem",
        ],
    );
    std::fs::read_to_string(dir.join("host.pem")).unwrap()
}

/// The id of group `name` in /etc/group.
fn gid_of(name: &str) -> u32 {
    std::fs::read_to_string("/etc/group")
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0] == name).then(|| f[2].parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no group {name}"))
}

/// Starts the plugin with nothing in its environment but what Vault sets, plus `extra`, and
/// returns the handshake line it prints and the process.
fn start_as_vault_would(extra: &[(&str, &str)]) -> (String, std::process::Child) {
    let dir = scratch_dir("vault-host");
    let cert = host_certificate(&dir);
    let mut child = Command::new(plugin_binary())
        .env_clear()
        .env(
            "VAULT_BACKEND_PLUGIN",
            "6669da05-b1c8-4f49-97d9-c8e5bed98e20",
        )
        .env("PLUGIN_PROTOCOL_VERSIONS", "5")
        .env("PLUGIN_CLIENT_CERT", cert)
        .env("VAULT_VERSION", "1.21.0")
        .envs(extra.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the plugin");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (line.trim().to_owned(), child)
}

#[test]
fn the_plugin_starts_with_vaults_names_only_and_puts_its_socket_where_the_host_asks() {
    let (line, mut child) = start_as_vault_would(&[]);
    let fields: Vec<&str> = line.split('|').collect();
    assert_eq!(fields.len(), 6, "{line}");
    assert_eq!(&fields[..3], &["1", "5", "unix"], "{line}");
    assert_eq!(fields[4], "grpc", "{line}");
    let _ = child.kill();
    let _ = child.wait();

    let sockets = scratch_dir("vault-sockets");
    let gid = gid_of("postgres");
    let (line, mut child) = start_as_vault_would(&[
        ("PLUGIN_UNIX_SOCKET_DIR", sockets.to_str().unwrap()),
        ("PLUGIN_UNIX_SOCKET_GROUP", "postgres"),
    ]);
    let path = std::path::PathBuf::from(line.split('|').nth(3).unwrap());
    assert_eq!(path.parent(), Some(sockets.as_path()), "{line}");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.gid(), gid, "the socket belongs to the host's group");
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o660,
        "and that group may write to it"
    );
    let _ = child.kill();
    let _ = child.wait();

    // A host that names `PLUGIN_MULTIPLEX_GRPC` at all reads a seventh field: the plugin has
    // go-plugin's multiplexed broker, whatever the host asks this time (go-plugin's `server.go`
    // prints it so). The broker itself is tested in plugin/tests/multiplexed_broker.rs.
    for asked in ["true", "false"] {
        let (line, mut child) = start_as_vault_would(&[("PLUGIN_MULTIPLEX_GRPC", asked)]);
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(fields.len(), 7, "{line}");
        assert_eq!(fields[6], "true", "{line}");
        let _ = child.kill();
        let _ = child.wait();
    }

    // A group that does not exist: the plugin says so and does not serve.
    let (line, mut child) = start_as_vault_would(&[
        ("PLUGIN_UNIX_SOCKET_DIR", sockets.to_str().unwrap()),
        ("PLUGIN_UNIX_SOCKET_GROUP", "no-such-group-here"),
    ]);
    assert!(
        line.is_empty(),
        "no handshake without the socket the host asked for: {line}"
    );
    let status = child.wait().unwrap();
    assert!(!status.success());
}
