//! The plugin foundation, end to end: a real OpenBao 2.7 loads the mayfly binary, serves its
//! paths over HTTP, calls back into storage, and unloads it without leaking a process.

use mayfly_integration::{Bao, PrivatePostgres, postgres, process, wait_until};
use serde_json::{Value, json};

fn errors(body: &Value) -> String {
    body["errors"].to_string()
}

#[test]
fn config_round_trip_over_http_never_returns_the_secret() {
    let pg = PrivatePostgres::start();
    let bao = Bao::with_mayfly();

    let config = json!({
        "plugin_name": "postgresql-database-plugin",
        "connection_url": pg.template_url(),
        "username": postgres::SUPERUSER,
        "password": postgres::SUPERUSER_PASSWORD,
        "allowed_roles": "reader,writer",
        "max_open_connections": 3,
    });
    let (status, body) = bao.put("mayfly/config/main", config.clone());
    assert_eq!(status, 204, "{body}");

    let (status, body) = bao.get("mayfly/config/main");
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(data["plugin_name"], "postgres");
    assert_eq!(data["allowed_roles"], json!(["reader", "writer"]));
    assert_eq!(data["connection_details"]["username"], postgres::SUPERUSER);
    assert_eq!(data["connection_details"]["max_open_connections"], 3);
    assert_eq!(data["secret_fields_set"], json!(["password"]));
    assert!(data["connection_details"].get("password").is_none());
    assert!(!body.to_string().contains(postgres::SUPERUSER_PASSWORD));

    // An update without the password keeps it: verification (on by default) still connects.
    let (status, body) = bao.put("mayfly/config/main", json!({"allowed_roles": "*"}));
    assert_eq!(status, 204, "{body}");

    // A wrong password is refused with the database's own error, minus the secret.
    let wrong = "Wr0ng-but-Distinctive-pw";
    let (status, body) = bao.put(
        "mayfly/config/other",
        json!({
            "plugin_name": "postgres", "connection_url": pg.template_url(),
            "username": postgres::SUPERUSER, "password": wrong,
        }),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        errors(&body).contains("password authentication failed"),
        "{body}"
    );
    assert!(!body.to_string().contains(wrong));
    assert_eq!(
        bao.get("mayfly/config/other").0,
        404,
        "nothing half-created"
    );

    let (status, body) = bao.list("mayfly/config");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["keys"], json!(["main"]));

    assert_eq!(bao.delete("mayfly/config/main").0, 204);
    assert_eq!(bao.get("mayfly/config/main").0, 404);
    assert_eq!(
        bao.delete("mayfly/config/main").0,
        204,
        "delete is idempotent"
    );

    let log = bao.log();
    assert!(
        !log.contains(postgres::SUPERUSER_PASSWORD) && !log.contains(wrong),
        "a password reached the log"
    );
}

#[test]
fn path_help_and_openapi_come_from_the_plugin() {
    let bao = Bao::with_mayfly();
    let (ok, out) = bao.cli(&["path-help", "mayfly/config/x"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("config/{name}")
            && out.contains("connection_url")
            && out.contains("write-only"),
        "{out}"
    );

    let (status, body) = bao.get("sys/internal/specs/openapi");
    assert_eq!(status, 200, "{body}");
    let paths = body["paths"].as_object().expect("paths");
    assert!(
        paths.contains_key("/mayfly/config/{name}"),
        "{:?}",
        paths.keys().collect::<Vec<_>>()
    );
    assert!(paths.contains_key("/mayfly/config/"));
    let schema = &paths["/mayfly/config/{name}"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"];
    assert_eq!(
        schema["properties"]["password"]["format"], "password",
        "{schema}"
    );
}

#[test]
fn two_mounts_share_one_process_and_keep_separate_state() {
    let bao = Bao::with_mayfly();
    bao.enable("other");
    assert!(
        wait_until(5.0, || bao.plugin_pids().len() == 1),
        "pids: {:?}",
        bao.plugin_pids()
    );

    let config = json!({"plugin_name": "postgres", "connection_url": "postgres://u@127.0.0.1:1/x", "verify_connection": false});
    assert_eq!(bao.put("mayfly/config/only-here", config).0, 204);
    assert_eq!(bao.get("mayfly/config/only-here").0, 200);
    assert_eq!(
        bao.get("other/config/only-here").0,
        404,
        "the second mount sees its own storage"
    );
    assert_eq!(bao.list("other/config").0, 404, "an empty listing is a 404");
    assert_eq!(bao.plugin_pids().len(), 1);
}

#[test]
fn reload_disable_and_shutdown_leave_no_process_behind() {
    let mut bao = Bao::with_mayfly();
    let first = bao.plugin_pids();
    assert_eq!(first.len(), 1);

    let (ok, out) = bao.cli(&["plugin", "reload", "-plugin=mayfly"]);
    assert!(ok, "{out}");
    assert!(
        wait_until(10.0, || {
            let p = bao.plugin_pids();
            p.len() == 1 && p != first
        }),
        "after reload: {:?} (before {:?})",
        bao.plugin_pids(),
        first
    );
    assert_eq!(bao.put("mayfly/config/x", json!({"plugin_name": "postgres", "connection_url": "postgres://u@h/d", "verify_connection": false})).0, 204);

    let (ok, out) = bao.cli(&["secrets", "disable", "mayfly"]);
    assert!(ok, "{out}");
    assert!(
        wait_until(5.0, || bao.plugin_pids().is_empty()),
        "after disable: {:?}",
        bao.plugin_pids()
    );

    bao.enable("again");
    assert_eq!(bao.plugin_pids().len(), 1);
    bao.stop();
    assert!(
        wait_until(5.0, || bao.plugin_pids().is_empty()),
        "after shutdown: {:?}",
        bao.plugin_pids()
    );
    let log = bao.log();
    assert!(!log.contains("failed to exit gracefully"), "{log}");
    assert!(log.contains("shutdown requested by the host"));
}

#[test]
fn a_killed_plugin_is_respawned_and_the_next_request_succeeds() {
    let bao = Bao::with_mayfly();
    let config = json!({"plugin_name": "postgres", "connection_url": "postgres://u@h/d", "verify_connection": false});
    assert_eq!(bao.put("mayfly/config/kept", config).0, 204);
    let before = bao.plugin_pids();
    assert_eq!(before.len(), 1);
    process::signal(before[0], libc::SIGKILL);
    // The next request after the host has seen the process die takes the host's respawn-and-retry
    // path. (A request racing the host's reaper still gets the host's own 500 "Unavailable".)
    let noticed = |l: &str| {
        l.contains("plugin process exited")
            && l.split_whitespace()
                .any(|w| w == format!("id={}", before[0]))
    };
    assert!(
        wait_until(10.0, || bao.log().lines().any(noticed)),
        "the host never noticed the kill:\n{}",
        bao.log()
    );
    // go-plugin writes that line before it cancels the client's done-context, and only a
    // cancelled context turns the failed call into the retryable ErrPluginShutdown; on a loaded
    // machine a request sent at once can fall in between (CI saw "connection refused" there).
    std::thread::sleep(std::time::Duration::from_millis(500));

    let (status, body) = bao.get("mayfly/config/kept");
    assert_eq!(status, 200, "first request after the kill: {body}");
    assert_eq!(body["data"]["plugin_name"], "postgres");
    let after = bao.plugin_pids();
    assert_eq!(after.len(), 1);
    assert_ne!(after, before);
}

#[test]
fn bad_input_gets_a_clear_4xx_never_a_500() {
    let bao = Bao::with_mayfly();
    let base = json!({"plugin_name": "postgres", "connection_url": "postgres://u@h/d", "verify_connection": false});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let cases: Vec<(Value, u16, &str)> = vec![
        (with("colour", json!("red")), 400, "unknown field 'colour'"),
        (
            with("max_open_connections", json!("lots")),
            400,
            "field 'max_open_connections': expected an integer",
        ),
        (
            with("verify_connection", json!("perhaps")),
            400,
            "field 'verify_connection': expected a boolean",
        ),
        (
            with("allowed_roles", json!(7)),
            400,
            "field 'allowed_roles': expected a list of strings",
        ),
        (
            with("plugin_name", json!("oracle")),
            400,
            "unknown kind 'oracle'; known kinds: postgres",
        ),
        (
            json!({"connection_url": "postgres://u@h/d"}),
            400,
            "field 'plugin_name' is required",
        ),
        (
            json!({"plugin_name": "postgres"}),
            400,
            "field 'connection_url' is required",
        ),
        (
            with("connection_url", json!("mysql://h/d")),
            400,
            "field 'connection_url': expected the scheme postgres://",
        ),
        // Credentials written into the URL are taken as the fields (as OpenBao's examples
        // write them), but not beside fields that say otherwise.
        (
            json!({"plugin_name": "postgres", "connection_url": "postgres://u:literal@h/d",
                   "username": "other", "verify_connection": false}),
            400,
            "contains a literal password",
        ),
        (
            with("connection_url", json!("postgres://{{username}}@h/d")),
            400,
            "field 'username' is required",
        ),
        (
            with("max_idle_connections", json!(-1)),
            400,
            "field 'max_idle_connections': expected 0 or more",
        ),
        (
            with("max_open_connections", json!(0)),
            400,
            "field 'max_open_connections': expected an integer from 1 to 1000",
        ),
        (
            with("connection_url", json!("x".repeat(70_000))),
            400,
            "field 'connection_url': 70000 bytes is too long",
        ),
    ];
    for (body, status, expected) in cases {
        let (got, resp) = bao.put("mayfly/config/x", body.clone());
        assert_eq!(got, status, "{body}: {resp}");
        let msg = errors(&resp);
        assert!(msg.contains(expected), "{expected:?} not in {msg}");
        assert!(
            !msg.contains("error occurred"),
            "the message is not wrapped: {msg}"
        );
    }
    assert_eq!(bao.get("mayfly/config/x").0, 404, "nothing was saved");

    // A 2 MiB body passes the host's 32 MiB limit and is refused by mayfly with 413.
    let big = json!({"plugin_name": "postgres", "connection_url": "x".repeat(2 * 1024 * 1024)});
    let (status, resp) = bao.put("mayfly/config/x", big);
    assert_eq!(status, 413, "{resp}");
    assert!(
        errors(&resp).contains("larger than the 1048576 bytes mayfly accepts"),
        "{resp}"
    );
    // Past the host's own limit, the host answers 413 itself.
    let (status, _) = bao.request_raw(
        "PUT",
        "mayfly/config/x",
        Some(format!("{{\"a\":\"{}\"}}", "x".repeat(40 << 20))),
    );
    assert!(status == 413 || status == 0, "{status}");

    let (status, resp) = bao.request_raw("PUT", "mayfly/config/x", Some("[1,2]".into()));
    assert!((400..500).contains(&status), "{status} {resp}");
    let (status, resp) = bao.put("mayfly/config/bad'name", base.clone());
    assert_eq!(status, 400, "{resp}");
    assert!(errors(&resp).contains("path segment 'name'"), "{resp}");
    assert_eq!(bao.get("mayfly/nowhere").0, 404);
    assert_eq!(bao.delete("mayfly/config/").0, 405);
    assert!(
        !bao.log().contains("[ERROR]  secrets.mayfly"),
        "bad input is not an internal error"
    );
}

#[test]
fn a_plugin_error_shows_in_the_server_log_at_error_level() {
    let bao = Bao::with_mayfly();
    let port = mayfly_integration::free_port();
    let (status, body) = bao.put(
        "mayfly/config/down",
        json!({
            "plugin_name": "postgres", "connection_url": format!("postgres://u@127.0.0.1:{port}/d"),
        }),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        errors(&body).contains("cannot connect to PostgreSQL"),
        "{body}"
    );
    let found = wait_until(5.0, || {
        bao.log().lines().any(|l| {
            l.contains("[ERROR]")
                && l.contains("connection verification failed")
                && l.contains("connection=down")
        })
    });
    assert!(found, "no ERROR line in:\n{}", bao.log());
}

#[test]
fn the_plugin_exits_on_its_own_when_the_server_is_killed() {
    let bao = Bao::with_mayfly();
    let pids = bao.plugin_pids();
    assert_eq!(pids.len(), 1);
    // SIGKILL the server alone (not its group): nothing tells the plugin, it must notice.
    process::signal(bao.pid(), libc::SIGKILL);
    assert!(
        wait_until(10.0, || bao.plugin_pids().is_empty()),
        "mayfly outlived its server: {:?}",
        bao.plugin_pids()
    );
}

/// `MAYFLY_THREADS`, from the server's environment: mayfly runs on one thread unless it asks
/// for more; a bad value is logged and one thread used.
#[test]
fn mayfly_threads_sets_how_many_threads_serve() {
    let mut bao = Bao::start_persistent();
    bao.register();
    bao.enable("mayfly");
    // The plugin's threads once it has served a request (which needs storage round trips).
    let threads_after_a_request = |bao: &Bao| {
        let config = json!({"plugin_name": "postgres", "verify_connection": false,
                            "connection_url": "postgres://u@127.0.0.1:1/x"});
        let (status, body) = bao.put("mayfly/config/c", config);
        assert_eq!(status, 204, "{body}\n{}", bao.log());
        let pids = bao.plugin_pids();
        assert_eq!(pids.len(), 1, "{pids:?}");
        std::fs::read_dir(format!("/proc/{}/task", pids[0]))
            .unwrap()
            .count()
    };
    assert_eq!(threads_after_a_request(&bao), 1);
    bao.restart(&[("MAYFLY_THREADS", "3")]);
    // Three workers besides the main thread.
    assert_eq!(threads_after_a_request(&bao), 4);
    bao.restart(&[("MAYFLY_THREADS", "lots")]);
    assert_eq!(threads_after_a_request(&bao), 1);
    assert!(
        bao.log()
            .contains("MAYFLY_THREADS must be a whole number from 1 to 64"),
        "{}",
        bao.log()
    );
}
