//! The binary as a process: what it does when started by hand, by a host's type probes, and
//! when its host disappears or never finishes starting it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mayfly");
const COOKIE: (&str, &str) = (
    "VAULT_BACKEND_PLUGIN",
    "6669da05-b1c8-4f49-97d9-c8e5bed98e20",
);

fn host_cert_pem() -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap()
        .pem()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

#[test]
fn started_by_hand_it_explains_itself_and_exits() {
    let out = Command::new(BIN).env_remove(COOKIE.0).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("plugin for OpenBao") && err.contains("bao plugin register -sha256="),
        "{err}"
    );
}

#[test]
fn type_probes_for_other_plugin_kinds_exit_quietly() {
    let database = Command::new(BIN)
        .env(COOKIE.0, COOKIE.1)
        .env(
            "VAULT_DATABASE_PLUGIN",
            "926a0820-aea2-be28-51d6-83cdf00e8edb",
        )
        .env("PLUGIN_PROTOCOL_VERSIONS", "5,6")
        .output()
        .unwrap();
    let legacy = Command::new(BIN)
        .env(COOKIE.0, COOKIE.1)
        .env("PLUGIN_PROTOCOL_VERSIONS", "3,4")
        .output()
        .unwrap();
    for out in [database, legacy] {
        assert_ne!(out.status.code(), Some(0));
        assert!(out.stdout.is_empty(), "no handshake line for a probe");
        assert!(
            out.stderr.is_empty(),
            "quiet: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn prints_one_handshake_line_then_exits_when_no_setup_comes() {
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .env(COOKIE.0, COOKIE.1)
        .env("PLUGIN_PROTOCOL_VERSIONS", "5")
        .env("PLUGIN_CLIENT_CERT", host_cert_pem())
        .env("MAYFLY_SETUP_TIMEOUT", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let fields: Vec<&str> = line.trim_end().split('|').collect();
    assert_eq!(&fields[..3], ["1", "5", "unix"], "{line}");
    assert_eq!(fields[4], "grpc");
    assert!(
        std::path::Path::new(fields[3]).exists(),
        "listening before the line is printed"
    );
    assert!(
        fields[5].len() > 50 && !fields[5].ends_with('='),
        "unpadded base64 DER"
    );

    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(10));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let last: serde_json::Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
    assert_eq!(last["@level"], "error");
    assert_eq!(last["@message"], "no Setup from the host; exiting");
}

#[test]
fn exits_when_its_parent_dies() {
    let dir = std::env::temp_dir().join(format!("mayfly-parent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pidfile = dir.join("pid");
    // A shell stands in for the host: it starts mayfly, then dies without a word.
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "\"{BIN}\" >/dev/null 2>&1 & echo $! > {}; sleep 0.5",
            pidfile.display()
        ))
        .env(COOKIE.0, COOKIE.1)
        .env("PLUGIN_PROTOCOL_VERSIONS", "5")
        .env("PLUGIN_CLIENT_CERT", host_cert_pem())
        .status()
        .unwrap();
    assert!(status.success());
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let still = alive(pid);
    if still {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!still, "mayfly outlived its parent");
}
