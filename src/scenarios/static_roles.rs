//! Static roles: accounts taken over, rotated on schedule or by hand, dual accounts, keys.

use std::sync::Arc;

use secrecy::SecretString;
use serde_json::{Map, Value, json};

use crate::contract::error::Error;
use crate::contract::host::now;
use crate::contract::request::Response;
use crate::contract::storage;
use crate::contract::storage::InMemoryStorage;
use crate::jobs::static_rotation::*;
use crate::mount::MountCore;
use crate::paths::static_roles::{creds, delete, read, rotate_now, write};
use crate::testkit;
use crate::testkit::Fake;
use crate::testkit::FixedHost;

struct Setup {
    core: Arc<MountCore>,
    fake: Arc<Fake>,
    storage: InMemoryStorage,
}

const OLD: &str = "legacy-password";

async fn setup() -> Setup {
    let storage = InMemoryStorage::new();
    let fake = Arc::new(Fake::default());
    let core = testkit::engine(storage.clone(), &fake, FixedHost::default()).core();
    let config = json!({"plugin_name": "fake", "url": "fake://x", "allowed_roles": "*"});
    crate::paths::config::write(
        core.storage.as_ref(),
        &core.backends,
        "db",
        config.as_object().unwrap(),
    )
    .await
    .unwrap();
    for account in ["app", "app2", "other"] {
        fake.target.add_account(account, OLD);
    }
    Setup {
        core,
        fake,
        storage,
    }
}

async fn write_role(s: &Setup, name: &str, body: Value) -> Result<Response, Error> {
    write(&s.core, name, body.as_object().unwrap()).await
}

async fn current(s: &Setup, name: &str) -> (String, String) {
    let data = creds(&s.core, name).await.unwrap().data.unwrap();
    (
        data["username"].as_str().unwrap().to_owned(),
        data["password"].as_str().unwrap().to_owned(),
    )
}

async fn role_view(s: &Setup, name: &str) -> Map<String, Value> {
    read(&s.core, name).await.unwrap().data.unwrap()
}

/// Runs the role's due work as the scheduler would, pretending its time has come: the
/// rotation's (if `rotation`) and the end of a grace period's.
async fn run_due(s: &Setup, name: &str, rotation: bool) {
    let mut state = load_state(&s.core, name).await.unwrap();
    // Move every time of the state to now, so that what is due runs now.
    let now = now();
    if rotation {
        match state.retry_at {
            Some(_) => state.retry_at = Some(now),
            None => state.next_rotation = state.next_rotation.map(|_| now),
        }
    }
    if let Some(p) = &mut state.previous {
        p.until = now;
    }
    state.due = Some(now);
    let key = state_key(name);
    storage::put_json(s.core.storage.as_ref(), &key, &state)
        .await
        .unwrap();
    on_due(s.core.clone(), now, name.to_owned()).await;
}

#[tokio::test]
async fn import_rotates_at_once_and_keeps_the_password_out_of_everything_else() {
    let s = setup().await;
    write_role(
        &s,
        "app",
        json!({"db_name": "db", "username": "app", "rotation_period": "1h"}),
    )
    .await
    .unwrap();
    let (user, password) = current(&s, "app").await;
    assert_eq!(user, "app");
    assert_ne!(password, OLD);
    assert_eq!(s.fake.target.password("app").unwrap(), password);
    let data = creds(&s.core, "app").await.unwrap().data.unwrap();
    let ttl = data["ttl"].as_u64().unwrap();
    assert!((3590..=3600).contains(&ttl), "{ttl}");

    let view = role_view(&s, "app").await;
    assert_eq!(view["rotation_period"], 3600);
    assert_eq!(view["rotation_attempts"], 0);
    assert!(!Value::Object(view).to_string().contains(&password));
    let state = load_state(&s.core, "app").await.unwrap();
    assert!(!format!("{state:?}").contains(&password));
    for (key, bytes) in s.storage.dump() {
        if String::from_utf8_lossy(&bytes).contains(&password) {
            assert!(key.starts_with(PREFIX), "password stored at {key}");
        }
    }

    rotate_now(&s.core, "app").await.unwrap();
    let (_, again) = current(&s, "app").await;
    assert_ne!(again, password, "each rotation uses a fresh password");
    assert_eq!(s.fake.target.password("app").unwrap(), again);
}

#[tokio::test]
async fn access_keys_rotate_with_an_overlap_and_a_stray_key_stops_the_rotation() {
    let s = setup().await;
    let t = &s.fake.target;
    t.makes_keys
        .store(true, std::sync::atomic::Ordering::SeqCst);
    t.keys
        .lock()
        .unwrap()
        .insert("app".into(), vec![("AKLEGACY".into(), 0)]);
    for (body, error) in [
        (
            json!({"dual_account_username": "app2"}),
            "field 'dual_account_username' does not apply",
        ),
        (
            json!({"skip_import_rotation": true, "password": "legacy"}),
            "field 'password' does not apply to access keys",
        ),
        (
            json!({"grace_period": "1h"}),
            "field 'grace_period': 3600s is not shorter than rotation_period",
        ),
    ] {
        let mut role = json!({"db_name": "db", "username": "app", "rotation_period": "1h"});
        role.as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        let e = write_role(&s, "keys", role).await.unwrap_err().to_string();
        assert!(e.contains(error), "{e}");
    }

    // Taken over: a new key, and the legacy one stays for the grace period.
    write_role(
        &s,
        "keys",
        json!({"db_name": "db", "username": "app", "rotation_period": "1h",
               "grace_period": "10m"}),
    )
    .await
    .unwrap();
    let data = creds(&s.core, "keys").await.unwrap().data.unwrap();
    let first = data["access_key"].as_str().unwrap().to_owned();
    assert!(data.get("password").is_none());
    assert_eq!(t.key_ids("app"), vec!["AKLEGACY".to_owned(), first.clone()]);
    let view = role_view(&s, "keys").await;
    assert_eq!(view["previous_access_key"], "AKLEGACY");
    let secret = data["secret_key"].as_str().unwrap().to_owned();
    assert!(!format!("{view:?}").contains(&secret));

    // The grace period ends: the legacy key goes.
    run_due(&s, "keys", false).await;
    assert_eq!(t.key_ids("app"), vec![first.clone()]);
    // Rotated twice in a row: the second ends the first's grace (AWS allows two keys).
    rotate_now(&s.core, "keys").await.unwrap();
    rotate_now(&s.core, "keys").await.unwrap();
    let keys = t.key_ids("app");
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(!keys.contains(&first));

    // A key mayfly does not manage takes the free slot: the rotation says so and the
    // current key stays.
    run_due(&s, "keys", false).await;
    t.keys
        .lock()
        .unwrap()
        .get_mut("app")
        .unwrap()
        .push(("AKSTRANGER".into(), 0));
    let e = rotate_now(&s.core, "keys").await.unwrap_err().to_string();
    assert!(e.contains("AKSTRANGER"), "{e}");
    let still = creds(&s.core, "keys").await.unwrap().data.unwrap();
    let current = still["access_key"].as_str().unwrap().to_owned();
    assert!(keys.contains(&current));

    // A rotation that stopped after the target made its key, before mayfly stored it:
    // that key (its secret lost) is deleted by the next rotation, which then succeeds.
    t.keys.lock().unwrap().insert(
        "app".into(),
        vec![(current.clone(), 0), ("AKORPHAN".into(), now())],
    );
    let mut state = load_state(&s.core, "keys").await.unwrap();
    state.key_asked_at = Some(now());
    save(&s.core, "keys", &mut state).await.unwrap();
    rotate_now(&s.core, "keys").await.unwrap();
    let keys = t.key_ids("app");
    assert!(!keys.contains(&"AKORPHAN".to_owned()), "{keys:?}");
    assert_eq!(keys.len(), 2, "the current key and the new one: {keys:?}");
}

#[tokio::test]
async fn bad_roles_are_refused_and_leave_nothing() {
    let s = setup().await;
    write_role(
        &s,
        "taken",
        json!({"db_name": "db", "username": "other", "manual_rotation": true}),
    )
    .await
    .unwrap();
    let before = s.storage.dump();
    let cases = [
        (
            json!({"username": "app", "rotation_period": 60}),
            "field 'db_name' is required",
        ),
        (
            json!({"db_name": "db", "rotation_period": 60}),
            "field 'username' is required",
        ),
        (
            json!({"db_name": "db", "username": "app"}),
            "one of 'rotation_period'",
        ),
        (
            json!({"db_name": "db", "username": "app", "rotation_period": 60, "manual_rotation": true}),
            "give only one of them",
        ),
        (
            json!({"db_name": "db", "username": "app", "rotation_period": 2}),
            "field 'rotation_period': expected at least 5s",
        ),
        (
            json!({"db_name": "db", "username": "app", "rotation_schedule": "61 * * * *"}),
            "field 'rotation_schedule': minute field",
        ),
        (
            json!({"db_name": "db", "username": "app", "rotation_period": 60, "rotation_window": "1h"}),
            "field 'rotation_window' applies only with 'rotation_schedule'",
        ),
        (
            json!({"db_name": "db", "username": "app", "rotation_schedule": "@daily", "rotation_window": 30}),
            "field 'rotation_window': expected 0 or at least 60s",
        ),
        (
            json!({"db_name": "db", "username": "mf-x", "rotation_period": 60}),
            "field 'username': 'mf-x' starts with 'mf-'",
        ),
        (
            json!({"db_name": "db", "username": "other", "rotation_period": 60}),
            "already managed by static role 'taken'",
        ),
        (
            json!({"db_name": "db", "username": "app", "dual_account_username": "app2",
                   "rotation_period": 60, "grace_period": 60}),
            "field 'grace_period': 60s is not shorter than rotation_period 60s",
        ),
        (
            json!({"db_name": "db", "username": "app", "rotation_period": 60, "grace_period": 5}),
            "field 'grace_period' applies only with 'dual_account_username'",
        ),
        (
            json!({"db_name": "db", "username": "app", "rotation_period": 60, "password": "x"}),
            "field 'password' is only taken with skip_import_rotation=true",
        ),
        (
            json!({"db_name": "db", "username": "app", "rotation_period": 60,
                   "skip_import_rotation": true, "password": "wrong"}),
            "field 'password': the target refuses it for 'app'",
        ),
        (
            json!({"db_name": "db", "username": "nobody", "rotation_period": 60}),
            "no account nobody",
        ),
        (
            json!({"db_name": "db", "username": "app", "rotation_period": 60,
                   "rotation_statements": "FAIL"}),
            "the statement failed",
        ),
    ];
    for (body, expected) in cases {
        let e = write_role(&s, "app", body.clone()).await.unwrap_err();
        assert!(e.to_string().contains(expected), "{body}: {e}");
    }
    assert_eq!(s.storage.dump(), before, "nothing half-created");
    assert_eq!(s.fake.target.password("app").unwrap(), OLD);
}

#[tokio::test]
async fn a_failing_rotation_stops_after_the_bound_and_keeps_the_old_password() {
    let s = setup().await;
    write_role(
        &s,
        "app",
        json!({"db_name": "db", "username": "app", "rotation_period": "1h",
               "max_rotation_attempts": 3}),
    )
    .await
    .unwrap();
    let (_, good) = current(&s, "app").await;
    write_role(&s, "app", json!({"rotation_statements": "FAIL"}))
        .await
        .unwrap();
    let e = rotate_now(&s.core, "app").await.unwrap_err();
    assert_eq!(e.status(), 502);
    let view = role_view(&s, "app").await;
    assert_eq!(view["rotation_attempts"], 1);
    assert!(view["next_attempt"].as_u64().is_some());
    assert_eq!(view["last_error"], "the statement failed");
    run_due(&s, "app", true).await;
    run_due(&s, "app", true).await;
    let view = role_view(&s, "app").await;
    assert_eq!(view["rotation_attempts"], 3);
    assert_eq!(
        view["next_attempt"],
        Value::Null,
        "no attempt after the bound"
    );
    assert!(view["next_rotation"].as_u64().unwrap() > now() + 3500);
    assert!(view["failing_since"].as_u64().is_some());
    assert_eq!(current(&s, "app").await.1, good);
    assert_eq!(s.fake.target.password("app").unwrap(), good);

    // Fixed: the next rotation succeeds and clears the error.
    write_role(&s, "app", json!({"rotation_statements": null}))
        .await
        .unwrap();
    run_due(&s, "app", true).await;
    let view = role_view(&s, "app").await;
    assert_eq!(view["last_error"], Value::Null);
    assert_eq!(view["rotation_attempts"], 0);
    assert_ne!(current(&s, "app").await.1, good);
}

#[tokio::test]
async fn a_lost_reply_or_a_crash_midway_is_settled_by_asking_the_target() {
    let s = setup().await;
    write_role(
        &s,
        "app",
        json!({"db_name": "db", "username": "app", "manual_rotation": true}),
    )
    .await
    .unwrap();
    // A crash after the target changed: the pending password is what works now.
    let mut state = load_state(&s.core, "app").await.unwrap();
    s.fake.target.add_account("app", "pending-one");
    state.pending = Some(Pending {
        account: "app".into(),
        password: SecretString::from("pending-one"),
        since: now() - SETTLE_AFTER_SECS,
    });
    save(&s.core, "app", &mut state).await.unwrap();
    on_due(s.core.clone(), state.due.unwrap(), "app".into()).await;
    assert_eq!(current(&s, "app").await.1, "pending-one");
    let state = load_state(&s.core, "app").await.unwrap();
    assert!(state.pending.is_none());
    assert_eq!(state.due, None, "manual rotation: nothing left to do");
}

#[tokio::test]
async fn an_import_whose_outcome_is_unknown_keeps_the_role_and_retries() {
    let s = setup().await;
    // The target fails the change and cannot be asked afterwards whether it took it.
    s.fake
        .target
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let e = write_role(
        &s,
        "app",
        json!({"db_name": "db", "username": "app", "rotation_period": "1h"}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.status(), 503, "{e}");
    assert!(e.to_string().contains("static role 'app' is kept"), "{e}");
    assert!(creds(&s.core, "app").await.is_err(), "no password yet");

    // Back up: the retry settles the pending password (never set: dropped) and takes the
    // account over.
    s.fake
        .target
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    run_due(&s, "app", true).await;
    let (user, password) = current(&s, "app").await;
    assert_eq!(user, "app");
    assert_ne!(password, OLD);
    assert_eq!(s.fake.target.password("app").unwrap(), password);
}

#[tokio::test]
async fn dual_accounts_take_turns_and_the_previous_one_retires_after_its_grace() {
    let s = setup().await;
    write_role(
        &s,
        "app",
        json!({"db_name": "db", "username": "app", "dual_account_username": "app2",
               "rotation_period": "1h", "grace_period": "10m"}),
    )
    .await
    .unwrap();
    let (user, first) = current(&s, "app").await;
    assert_eq!(user, "app");
    let view = role_view(&s, "app").await;
    assert_eq!(
        view["previous_username"], "app2",
        "the other account's old password retires"
    );
    run_due(&s, "app", false).await;
    assert_ne!(s.fake.target.password("app2").unwrap(), OLD);
    assert_eq!(role_view(&s, "app").await["previous_username"], Value::Null);

    rotate_now(&s.core, "app").await.unwrap();
    let (user, second) = current(&s, "app").await;
    assert_eq!(user, "app2");
    assert_eq!(
        s.fake.target.password("app").unwrap(),
        first,
        "still in its grace"
    );
    let data = creds(&s.core, "app").await.unwrap().data.unwrap();
    assert_eq!(data["previous_username"], "app");
    run_due(&s, "app", false).await;
    assert_ne!(s.fake.target.password("app").unwrap(), first, "retired");
    assert_eq!(s.fake.target.password("app2").unwrap(), second);
    rotate_now(&s.core, "app").await.unwrap();
    assert_eq!(current(&s, "app").await.0, "app");
}

#[tokio::test]
async fn skip_import_rotation_serves_the_given_password_until_the_first_rotation() {
    let s = setup().await;
    write_role(
        &s,
        "app",
        json!({"db_name": "db", "username": "app", "rotation_schedule": "0 3 * * *",
               "rotation_window": "1h", "skip_import_rotation": true, "password": OLD}),
    )
    .await
    .unwrap();
    assert_eq!(current(&s, "app").await.1, OLD);
    assert_eq!(s.fake.target.password("app").unwrap(), OLD);
    let view = role_view(&s, "app").await;
    assert_eq!(view["rotation_schedule"], "0 3 * * *");
    assert_eq!(view["next_rotation"].as_u64().unwrap() % 86_400, 3 * 3600);

    write_role(
        &s,
        "bare",
        json!({"db_name": "db", "username": "other", "manual_rotation": true,
               "skip_import_rotation": true}),
    )
    .await
    .unwrap();
    let e = creds(&s.core, "bare").await.unwrap_err();
    assert!(e.to_string().contains("has no password yet"), "{e}");
    delete(&s.core, "bare").await.unwrap();
    assert!(
        s.storage.dump().keys().all(|k| !k.contains("bare")),
        "{:?}",
        s.storage.dump().keys()
    );
}
