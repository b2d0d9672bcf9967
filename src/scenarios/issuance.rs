//! Issuing, renewing and revoking credentials, and what the sweep does with them: batches, retries,
//! crashes, names already taken.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use crate::Engine;
use crate::contract::request::LeaseInfo;
use crate::contract::request::Operation;
use crate::contract::request::{Request, Response};
use crate::contract::storage::{InMemoryStorage, Kv};
use crate::model::ledger::{self, Credential, State};
use crate::testkit;
use crate::testkit::Fake;
use crate::testkit::FixedHost;

struct Setup {
    engine: Engine,
    fake: Arc<Fake>,
    storage: InMemoryStorage,
}

async fn setup() -> Setup {
    let storage = InMemoryStorage::new();
    let fake = Arc::new(Fake::default());
    let engine = testkit::engine(storage.clone(), &fake, FixedHost::default());
    engine.start(crate::NodeRole::Active);
    let call = |path: &str, body: Value| {
        engine.handle(Request::new(Operation::Update, path).with_data(body))
    };
    call(
        "config/db",
        json!({"plugin_name": "fake", "url": "fake://x", "password": "hunter2",
               "allowed_roles": "app"}),
    )
    .await
    .unwrap();
    call(
        "roles/app",
        json!({"db_name": "db", "default_ttl": "1h", "max_ttl": "2h"}),
    )
    .await
    .unwrap();
    Setup {
        engine,
        fake,
        storage,
    }
}

async fn issue(s: &Setup, body: Value) -> Response {
    s.engine
        .handle(Request::new(Operation::Read, "creds/app").with_data(body))
        .await
        .unwrap()
}

fn lease_request(op: Operation, resp: &Response, increment: u64) -> Request {
    let mut req = Request::new(op, "creds/app");
    req.data = resp.data.clone().unwrap();
    req.lease = Some(LeaseInfo {
        internal_data: resp.lease.as_ref().unwrap().internal_data.clone(),
        lease_id: "mayfly/creds/app/abc".into(),
        increment,
        max_ttl: 7200,
    });
    req
}

/// The first credential record to appear in storage (an issuance's intent), once it has.
async fn intent_on_record(s: &Setup) -> Credential {
    let first = || {
        s.storage
            .dump()
            .into_iter()
            .find(|(k, _)| k.starts_with(ledger::RECORDS))
    };
    assert!(wait(5.0, || first().is_some()).await, "no record appeared");
    serde_json::from_slice(&first().unwrap().1).unwrap()
}

fn record(s: &Setup, resp: &Response) -> Credential {
    let id = resp.lease.as_ref().unwrap().internal_data["cred_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bytes = s.storage.dump()[&format!("{}{id}", ledger::RECORDS)].clone();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn issue_renew_revoke_and_nothing_secret_in_storage() {
    let s = setup().await;
    let resp = issue(&s, json!({"ttl": "30m"})).await;
    let data = resp.data.clone().unwrap();
    let user = data["username"].as_str().unwrap().to_owned();
    let password = data["password"].as_str().unwrap().to_owned();
    assert!(user.starts_with("mf-app-"), "{user}");
    assert_eq!(password.len(), 32);
    assert!(s.fake.target.has(&user));
    let lease = resp.lease.clone().unwrap();
    assert_eq!(
        (lease.ttl, lease.max_ttl, lease.renewable),
        (1800, 7200, true)
    );
    let cred = record(&s, &resp);
    assert_eq!(cred.state, State::Active);
    assert_eq!(cred.deadline - cred.created_at, 1800);

    let renewed = s
        .engine
        .handle(lease_request(Operation::Renew, &resp, 3600))
        .await
        .unwrap();
    assert_eq!(renewed.data, None, "a renewal hands out no secret");
    let grant = renewed.lease.unwrap();
    assert_eq!((grant.ttl, grant.max_ttl), (3600, 7200));
    assert_eq!(grant.internal_data, lease.internal_data);
    assert_eq!(record(&s, &resp).deadline - cred.created_at, 3600);

    s.engine
        .handle(lease_request(Operation::Revoke, &resp, 0))
        .await
        .unwrap();
    assert!(!s.fake.target.has(&user));
    let cred = record(&s, &resp);
    assert_eq!(cred.state, State::Revoked);
    assert_eq!(cred.lease_id.as_deref(), Some("mayfly/creds/app/abc"));
    // A second revoke (the host retrying) is a success and touches nothing.
    s.engine
        .handle(lease_request(Operation::Revoke, &resp, 0))
        .await
        .unwrap();
    assert_eq!(record(&s, &resp).attempts, 1);
    let err = s
        .engine
        .handle(lease_request(Operation::Renew, &resp, 0))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is revoked"), "{err}");

    for (key, value) in s.storage.dump() {
        let text = String::from_utf8_lossy(&value);
        assert!(!text.contains(&password), "password stored at {key}");
    }
}

#[tokio::test]
async fn ttl_is_capped_and_roles_are_enforced() {
    let s = setup().await;
    let resp = issue(&s, json!({"ttl": "5h"})).await;
    assert_eq!(resp.lease.unwrap().ttl, 7200);
    assert!(resp.warnings[0].contains("capped"), "{:?}", resp.warnings);
    let resp = issue(&s, json!({})).await;
    assert_eq!(resp.lease.unwrap().ttl, 3600);
    // Roles are cached; a write through the engine takes effect at once.
    s.engine
        .handle(
            Request::new(Operation::Update, "roles/app").with_data(json!({"default_ttl": "10m"})),
        )
        .await
        .unwrap();
    assert_eq!(issue(&s, json!({})).await.lease.unwrap().ttl, 600);
    let err = s
        .engine
        .handle(Request::new(Operation::Read, "creds/app").with_data(json!({"ttl": "1h; drop"})))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("field 'ttl'"), "{err}");
    s.engine
        .handle(Request::new(Operation::Update, "roles/other").with_data(json!({"db_name": "db"})))
        .await
        .unwrap();
    let err = s
        .engine
        .handle(Request::new(Operation::Read, "creds/other"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), 403, "{err}");
    let mut req = Request::new(Operation::Read, "creds/app");
    req.requester.display_name = "x\"; DROP ROLE admin; --".into();
    let err = s.engine.handle(req).await.unwrap_err();
    assert_eq!(err.status(), 400, "{err}");
    assert_eq!(
        s.fake.target.count(),
        3,
        "the refused request created nothing"
    );
}

#[tokio::test]
async fn a_session_bounds_its_lease_and_its_guard_is_lifted_after_it_ends() {
    let s = setup().await;
    s.fake.target.session_secs.store(3, Ordering::SeqCst);
    // The target's session ends before the TTL asked: the lease ends with it.
    let clamped = issue(&s, json!({"ttl": 60})).await;
    let lease = clamped.lease.as_ref().unwrap();
    assert_eq!((lease.ttl, lease.max_ttl), (3, 3));
    assert_eq!(clamped.data.as_ref().unwrap()["ttl_bound"], "target_max");
    // Revoked at its deadline (1 s) while the session lives on: a guard until it ends.
    let short = issue(&s, json!({"ttl": 1})).await;
    let guarded = record(&s, &short);
    assert_eq!(guarded.target_expires, Some(guarded.created_at + 3));
    let now_record = || record(&s, &short);
    let guard_set = wait(3.0, || now_record().guard_until.is_some()).await;
    assert!(guard_set, "no guard recorded: {:?}", now_record());
    assert_eq!(now_record().guard_until, guarded.target_expires);
    assert!(
        s.fake
            .target
            .guards
            .lock()
            .unwrap()
            .contains(&guarded.principal)
    );
    // Once the session has ended, the scheduler lifts the guard and keeps the record.
    let lifted = wait(6.0, || s.fake.target.guards.lock().unwrap().is_empty()).await;
    assert!(lifted, "the guard is still on the target");
    let cleared = wait(2.0, || now_record().guard_until.is_none()).await;
    assert!(cleared, "{:?}", now_record());
    let after = now_record();
    assert_eq!(after.state, State::Revoked);
    assert!(
        after.due > crate::contract::host::now() + 3600,
        "kept for its retention"
    );
}

#[tokio::test]
async fn deadline_alone_revokes_in_one_batch() {
    let s = setup().await;
    for _ in 0..20 {
        issue(&s, json!({"ttl": 2})).await;
    }
    assert_eq!(s.fake.target.count(), 20);
    let gone = wait(6.0, || s.fake.target.count() == 0).await;
    assert!(gone, "{} principals left", s.fake.target.count());
    // Issuance may straddle a second boundary: at most two deadlines, so two batches.
    assert!(s.fake.target.revoke_calls.load(Ordering::SeqCst) <= 2);
    assert!(s.fake.target.largest_batch.load(Ordering::SeqCst) >= 10);
}

/// Found with an HTTP service that stopped answering: one pass of the scheduler revoked
/// connection by connection, so every other connection's revocations waited on it.
#[tokio::test]
async fn a_connection_whose_target_hangs_holds_back_no_other_connections_revocation() {
    let s = setup().await;
    let call = |path: &str, body: Value| {
        s.engine
            .handle(Request::new(Operation::Update, path).with_data(body))
    };
    call(
        "config/db2",
        json!({"plugin_name": "fake", "url": "fake://y", "allowed_roles": "*"}),
    )
    .await
    .unwrap();
    call("roles/other", json!({"db_name": "db2"}))
        .await
        .unwrap();
    let stuck = issue(&s, json!({})).await;
    let other = s
        .engine
        .handle(Request::new(Operation::Read, "creds/other"))
        .await
        .unwrap();
    // The first revocation reaches the target and never gets its answer.
    let (_never, hang) = tokio::sync::oneshot::channel::<()>();
    *s.fake.target.hold_revoke.lock().unwrap() = Some(hang);
    let hung = s.engine.handle(lease_request(Operation::Revoke, &stuck, 0));
    tokio::pin!(hung);
    let held = tokio::time::timeout(Duration::from_millis(300), &mut hung).await;
    assert!(held.is_err(), "the held revocation answered");
    let mut req = lease_request(Operation::Revoke, &other, 0);
    req.path = "creds/other".into();
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(2), s.engine.handle(req))
        .await
        .expect("a revocation on another connection waited for the hung one")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(record(&s, &other).state, State::Revoked);
}

/// A revocation failing with the statements recorded at issuance tries the role's as
/// they are now, and, once the role is deleted, the kind's default.
#[tokio::test]
async fn a_fixed_or_deleted_role_ends_its_failing_revocations() {
    let s = setup().await;
    let write = |path: &str, op: Operation, body: Value| {
        s.engine.handle(Request::new(op, path).with_data(body))
    };
    let broken = json!({"db_name": "db", "revocation_statements": "FAIL"});
    write("roles/app", Operation::Update, broken.clone())
        .await
        .unwrap();
    let fixed_later = issue(&s, json!({})).await;
    s.engine
        .handle(lease_request(Operation::Revoke, &fixed_later, 0))
        .await
        .unwrap();
    assert_eq!(record(&s, &fixed_later).state, State::Revoking);
    // Fixed: the next attempt uses the role's statements.
    write(
        "roles/app",
        Operation::Update,
        json!({"revocation_statements": "DROP"}),
    )
    .await
    .unwrap();
    let op = Request::new(Operation::Update, "revoke/role/app");
    let report = s.engine.handle(op).await.unwrap().data.unwrap();
    assert_eq!(report["revoked"], 1, "{report:?}");
    let c = record(&s, &fixed_later);
    assert_eq!(c.state, State::Revoked);
    assert_eq!(
        c.revoked_with.as_deref(),
        Some("the role's statements as changed after issuance")
    );
    // Deleted: the recorded statements, then the kind's default.
    let third = {
        write("roles/app", Operation::Update, broken).await.unwrap();
        let r = issue(&s, json!({})).await;
        s.engine
            .handle(lease_request(Operation::Revoke, &r, 0))
            .await
            .unwrap();
        r
    };
    write("roles/app", Operation::Delete, json!({}))
        .await
        .unwrap();
    let op = Request::new(Operation::Update, "revoke/config/db");
    let report = s.engine.handle(op).await.unwrap().data.unwrap();
    assert_eq!(report["revoked"], 1, "{report:?}");
    assert_eq!(
        record(&s, &third).revoked_with.as_deref(),
        Some("the kind's default (the role was deleted)")
    );
}

#[tokio::test]
async fn failing_revocations_are_retried_and_recorded() {
    let s = setup().await;
    let resp = issue(&s, json!({"ttl": 1})).await;
    s.fake.target.down.store(true, Ordering::SeqCst);
    let failing = wait(5.0, || {
        let c = record(&s, &resp);
        // The attempt is on record as it begins; its error once it has failed.
        c.state == State::Revoking && c.attempts >= 1 && c.last_error.is_some()
    })
    .await;
    assert!(failing);
    let c = record(&s, &resp);
    assert_eq!(c.last_error.as_deref(), Some("fake target is down"));
    assert!(c.due > c.last_attempt_at.unwrap() && c.due - c.last_attempt_at.unwrap() <= 5);
    s.fake.target.down.store(false, Ordering::SeqCst);
    assert!(wait(8.0, || record(&s, &resp).state == State::Revoked).await);
    assert_eq!(s.fake.target.count(), 0);
}

/// A later mayfly may record what its revocation needs in a newer format: this one leaves
/// such a record alone (never acts on it, never deletes it), lists it for operators, and
/// goes on revoking the rest.
#[tokio::test]
async fn a_record_of_a_newer_format_is_left_alone_and_listed_while_the_rest_are_revoked() {
    let s = setup().await;
    let newer = issue(&s, json!({"ttl": 1})).await;
    let older = issue(&s, json!({"ttl": 1})).await;
    let cred = record(&s, &newer);
    let key = format!("{}{}", ledger::RECORDS, cred.id);
    let mut raw: Value = serde_json::from_slice(&s.storage.dump()[&key]).unwrap();
    raw["format"] = json!(ledger::FORMAT + 1);
    raw["deadline"] = json!("a shape this mayfly does not know");
    let bytes = serde_json::to_vec(&raw).unwrap();
    crate::contract::storage::Kv::put(&s.storage, &key, bytes.clone())
        .await
        .unwrap();

    assert!(wait(8.0, || record(&s, &older).state == State::Revoked).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        s.fake.target.has(&cred.principal),
        "acted on an unreadable record"
    );
    assert_eq!(
        s.storage.dump()[&key],
        bytes,
        "an unreadable record was rewritten"
    );

    let call = |op, path: &str| s.engine.handle(Request::new(op, path));
    let failing = call(Operation::List, "revocations/")
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(failing["keys"], json!([cred.id]));
    let info = &failing["key_info"][&cred.id];
    assert_eq!(info["state"], "unreadable");
    assert_eq!(info["principal"], json!(cred.principal));
    let reason = info["reason"].as_str().unwrap();
    assert!(
        reason.contains("format 2") && reason.contains("upgrade mayfly"),
        "{reason}"
    );
    let leases = call(Operation::List, "leases/")
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(leases["key_info"][&cred.id]["state"], "unreadable");
    let one = call(Operation::Read, &format!("leases/{}", cred.id))
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(one["state"], "unreadable");
    // An orphan purge keeps what the unreadable record names.
    let purged = s
        .engine
        .handle(Request::new(Operation::Update, "orphans/db").with_data(json!({"purge": true})))
        .await
        .unwrap();
    assert_eq!(purged.data.unwrap()["count"], 0);
    assert!(s.fake.target.has(&cred.principal));
}

/// A revocation that finished while the target was renewing: the renewal found the user,
/// the revocation then removed it, and the renewal used to write the record back as
/// active. Now it is decided again on the revoked record and refused.
#[tokio::test]
async fn a_renewal_never_writes_over_a_revocation_made_meanwhile() {
    let s = setup().await;
    let resp = issue(&s, json!({})).await;
    let (renew_go, renew_wait) = tokio::sync::oneshot::channel();
    *s.fake.target.hold_renew.lock().unwrap() = Some(renew_wait);
    let renewing = s
        .engine
        .handle(lease_request(Operation::Renew, &resp, 3600));
    let drive = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.engine
            .handle(lease_request(Operation::Revoke, &resp, 0))
            .await
            .unwrap();
        assert_eq!(record(&s, &resp).state, State::Revoked);
        renew_go.send(()).unwrap();
    };
    let (renewed, ()) = tokio::join!(renewing, drive);
    let err = renewed.expect_err("a revoked credential was renewed");
    assert!(err.to_string().contains("is revoked"), "{err}");
    let cred = record(&s, &resp);
    assert_eq!(cred.state, State::Revoked);
    assert_eq!(s.fake.target.count(), 0);
}

/// Found by the chaos suite: the scheduler revoked an intent whose create was still under
/// way (the target was slow), found nothing on the target, and the issuance then made the
/// record active: the principal lived on, recorded as revoked. Now the scheduler leaves a
/// credential being issued alone and the issuance revokes it once it exists.
#[tokio::test]
async fn an_intent_that_falls_due_while_its_create_is_slow_never_leaves_a_live_principal() {
    let s = setup().await;
    let (create_go, create_wait) = tokio::sync::oneshot::channel();
    *s.fake.target.hold_create.lock().unwrap() = Some(create_wait);
    let issuing = s
        .engine
        .handle(Request::new(Operation::Read, "creds/app").with_data(json!({"ttl": 1})));
    let target = s.fake.target.clone();
    let drive = async move {
        // Past the intent's deadline, with the create still held: nothing was revoked.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(target.revoke_calls.load(Ordering::SeqCst), 0);
        create_go.send(()).unwrap();
    };
    let (issued, ()) = tokio::join!(issuing, drive);
    let err = issued.expect_err("a credential past its deadline was issued");
    assert!(
        err.to_string()
            .contains("revoked while it was being issued"),
        "{err}"
    );
    assert!(wait(5.0, || s.fake.target.count() == 0).await);
    let records = s.storage.dump();
    let (_, bytes) = records
        .iter()
        .find(|(k, _)| k.starts_with(ledger::RECORDS))
        .expect("the credential's record");
    let cred: Credential = serde_json::from_slice(bytes).unwrap();
    assert_eq!(cred.state, State::Revoked);
}

/// An operator's revocation that comes while a credential is being created waits for the
/// create and then revokes what it made; its report counts it.
#[tokio::test]
async fn an_operator_revocation_during_a_create_waits_for_it_and_revokes_it() {
    let s = setup().await;
    let (create_go, create_wait) = tokio::sync::oneshot::channel();
    *s.fake.target.hold_create.lock().unwrap() = Some(create_wait);
    let issuing = s
        .engine
        .handle(Request::new(Operation::Read, "creds/app").with_data(json!({"ttl": 60})));
    let revoking = async {
        // Once the intent is on record.
        intent_on_record(&s).await;
        s.engine
            .handle(Request::new(Operation::Update, "revoke/role/app"))
            .await
    };
    let target = s.fake.target.clone();
    let drive = async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(target.revoke_calls.load(Ordering::SeqCst), 0);
        create_go.send(()).unwrap();
    };
    let (issued, revoked, ()) = tokio::join!(issuing, revoking, drive);
    issued.expect_err("a credential revoked during its issuance was issued");
    let report = revoked.unwrap().data.unwrap();
    assert_eq!(report["revoked"], 1, "{report:?}");
    assert_eq!(s.fake.target.count(), 0);
}

/// A look-up before every create cost a round trip to the target; a name with 16 or more
/// random characters is no one else's and is created without one.
#[tokio::test]
async fn only_a_name_with_little_randomness_is_looked_up_before_its_create() {
    let s = setup().await;
    let looked_up = || s.fake.target.exists_calls.load(Ordering::SeqCst);
    // The default template: 16 random characters.
    issue(&s, json!({})).await;
    assert_eq!(looked_up(), 0);
    for (template, lookups) in [
        ("{{ .RoleName }}-{{ random 15 }}", 1),
        ("{{ .RoleName }}-{{ .CredentialID | truncate 8 }}", 1),
        ("{{ .RoleName }}-{{ random 16 }}", 0),
        ("{{ .RoleName }}-{{ .CredentialID }}", 0),
    ] {
        s.engine
            .handle(
                Request::new(Operation::Update, "roles/app")
                    .with_data(json!({"db_name": "db", "username_template": template})),
            )
            .await
            .unwrap();
        let before = looked_up();
        issue(&s, json!({})).await;
        assert_eq!(looked_up() - before, lookups, "{template}");
    }
}

/// Found by a hostile role writer: a template that made the name of an existing account
/// got a failed create, whose undo then dropped that account.
#[tokio::test]
async fn a_name_that_is_taken_fails_the_issuance_and_its_account_is_left_alone() {
    let s = setup().await;
    s.engine
        .handle(
            Request::new(Operation::Update, "roles/app").with_data(
                json!({"db_name": "db", "username_template": "{{ random 1 | lowercase }}"}),
            ),
        )
        .await
        .unwrap();
    // Every name the template can make is someone's account.
    for c in ('a'..='z').chain('0'..='9') {
        s.fake
            .target
            .principals
            .lock()
            .unwrap()
            .insert(c.to_string());
    }
    let err = s
        .engine
        .handle(Request::new(Operation::Read, "creds/app"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), 409, "{err}");
    assert!(
        err.to_string().contains("already has a principal named"),
        "{err}"
    );
    // Found before anything was on record: no intent, nothing revoked.
    assert!(
        !s.storage
            .dump()
            .keys()
            .any(|k| k.starts_with(ledger::RECORDS))
    );
    assert_eq!(s.fake.target.count(), 36);
    assert_eq!(s.fake.target.revoke_calls.load(Ordering::SeqCst), 0);
}

/// The name was free when issuance looked, and taken when it created: the create's refusal
/// closes the record without a revocation.
#[tokio::test]
async fn a_name_taken_between_the_look_up_and_the_create_is_left_alone() {
    let s = setup().await;
    let (create_go, create_wait) = tokio::sync::oneshot::channel();
    *s.fake.target.hold_create.lock().unwrap() = Some(create_wait);
    let issuing = s
        .engine
        .handle(Request::new(Operation::Read, "creds/app").with_data(json!({"ttl": 60})));
    let squat = async {
        let intent = intent_on_record(&s).await;
        assert_eq!(intent.name_was_free, Some(true));
        s.fake
            .target
            .principals
            .lock()
            .unwrap()
            .insert(intent.principal.clone());
        create_go.send(()).unwrap();
        intent
    };
    let (issued, intent) = tokio::join!(issuing, squat);
    assert_eq!(issued.unwrap_err().status(), 409);
    // Past the intent's grace, with the scheduler running: the account is still there.
    let bytes = s.storage.dump()[&format!("{}{}", ledger::RECORDS, intent.id)].clone();
    let closed: Credential = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        (closed.state, closed.name_was_free),
        (State::Revoked, Some(false))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.fake.target.has(&intent.principal));
    assert_eq!(s.fake.target.revoke_calls.load(Ordering::SeqCst), 0);
}

/// An intent of an earlier version does not say whether its name was free: an unmarked
/// name may be someone's account, so its record ends and the account stays.
#[tokio::test]
async fn an_earlier_versions_intent_with_an_unmarked_name_is_left_on_the_target() {
    let s = setup().await;
    let resp = issue(&s, json!({"ttl": 1})).await;
    let mut cred = record(&s, &resp);
    s.engine.stop().await;
    s.fake
        .target
        .principals
        .lock()
        .unwrap()
        .insert("app_owner".into());
    let previous = cred.due;
    cred.state = State::Intent;
    cred.principal = "app_owner".into();
    cred.name_was_free = None;
    cred.due = cred.deadline;
    ledger::store(&s.storage, &cred, Some(previous))
        .await
        .unwrap();
    let _fresh = restarted(&s);
    assert!(wait(5.0, || record(&s, &resp).state == State::Revoked).await);
    let c = record(&s, &resp);
    assert_eq!(c.last_error.as_deref(), Some(ledger::NOT_OURS));
    assert!(s.fake.target.has("app_owner"));
}

#[tokio::test]
async fn an_intent_left_by_a_crash_is_revoked_by_a_new_scheduler() {
    let s = setup().await;
    let resp = issue(&s, json!({"ttl": 1})).await;
    // Put the record back to an intent, as a crash between create and activation leaves it.
    let mut cred = record(&s, &resp);
    s.engine.stop().await;
    let previous = cred.due;
    cred.state = State::Intent;
    cred.due = cred.deadline;
    ledger::store(&s.storage, &cred, Some(previous))
        .await
        .unwrap();
    let _fresh = restarted(&s);
    assert!(wait(5.0, || s.fake.target.count() == 0).await);
    let c = record(&s, &resp);
    assert_eq!(c.state, State::Revoked);
    assert_eq!(c.revoke_reason.as_deref(), Some("issuance never completed"));
}

#[tokio::test]
async fn issuance_indexes_a_long_lived_credential_at_its_deadline_only() {
    let s = setup().await;
    let resp = issue(&s, json!({"ttl": "1h"})).await;
    let cred = record(&s, &resp);
    assert_eq!((cred.state, cred.due), (State::Active, cred.deadline));
    // The intent's entry goes right after the reply.
    let deadline_only = || {
        let entries = due_entries(&s, &cred.id);
        entries.len() == 1 && entries[0].contains(&format!("/{:012}_", cred.deadline))
    };
    assert!(
        wait(2.0, deadline_only).await,
        "{:?}",
        due_entries(&s, &cred.id)
    );
    // Short-lived: the intent's entry is at the deadline already, and stays.
    let resp = issue(&s, json!({"ttl": 30})).await;
    let cred = record(&s, &resp);
    let entries = due_entries(&s, &cred.id);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].contains(&format!("/{:012}_", cred.deadline)));
}

#[tokio::test]
async fn intent_entries_a_crash_left_are_dropped_without_writing_the_record() {
    let (s, issued) = forty_issued_then_stopped().await;
    // A crash between an activation and the removal of the intent's entry leaves that
    // entry. Put one back for each record, brought to now as a new process finds it once
    // the intent's grace has run out, and mark the stored record: a record the scheduler
    // wrote would lose the mark (and with it a renewal written between the scheduler's
    // read and its write).
    let now = crate::contract::host::now();
    for resp in &issued {
        let cred = record(&s, resp);
        assert_eq!(cred.due, cred.deadline);
        s.storage
            .put(&ledger::due_key(now, &cred.id), Vec::new())
            .await
            .unwrap();
        let mut marked = serde_json::to_value(&cred).unwrap();
        marked["mark"] = json!(true);
        let key = format!("{}{}", ledger::RECORDS, cred.id);
        s.storage
            .put(&key, marked.to_string().into_bytes())
            .await
            .unwrap();
    }
    let fresh = restarted(&s);
    let at_deadline = |id: &str, deadline: u64| {
        let entries = due_entries(&s, id);
        entries.len() == 1 && entries[0].contains(&format!("/{deadline:012}_"))
    };
    let indexed = || {
        issued.iter().all(|r| {
            let cred = record(&s, r);
            at_deadline(&cred.id, cred.deadline)
        })
    };
    assert!(
        wait(5.0, indexed).await,
        "not every record was indexed at its deadline"
    );
    for resp in &issued {
        let id = record(&s, resp).id;
        let stored = &s.storage.dump()[&format!("{}{id}", ledger::RECORDS)];
        let stored: Value = serde_json::from_slice(stored).unwrap();
        assert_eq!(stored["mark"], json!(true), "record {id} was written again");
        assert_eq!(stored["state"], json!("active"));
    }
    assert_eq!(s.fake.target.count(), 40);
    fresh.stop().await;
}

#[tokio::test]
async fn active_records_an_earlier_version_left_at_their_intent_time_move_to_their_deadline() {
    let (s, issued) = forty_issued_then_stopped().await;
    // Active records due at their intent's time, as an earlier mayfly wrote them, found
    // by a new process once that time has passed.
    let now = crate::contract::host::now();
    for resp in &issued {
        let mut cred = record(&s, resp);
        let previous = cred.due;
        cred.due = now;
        ledger::store(&s.storage, &cred, Some(previous))
            .await
            .unwrap();
        for stale in due_entries(&s, &cred.id) {
            if !stale.contains(&format!("/{now:012}_")) {
                s.storage.delete(&stale).await.unwrap();
            }
        }
    }
    let fresh = restarted(&s);
    let moved = || {
        issued
            .iter()
            .all(|r| record(&s, r).due == record(&s, r).deadline)
    };
    assert!(wait(5.0, moved).await, "not every record was moved");
    // One index entry each, at its deadline; nothing revoked.
    for resp in &issued {
        let cred = record(&s, resp);
        let entries = due_entries(&s, &cred.id);
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert!(entries[0].contains(&format!("/{:012}_", cred.deadline)));
        assert_eq!(cred.state, State::Active);
    }
    assert_eq!(s.fake.target.count(), 40);
    fresh.stop().await;
}

/// 40 credentials issued with a TTL of an hour, then the engine stopped, as a crash
/// leaves them for the next process.
async fn forty_issued_then_stopped() -> (Setup, Vec<Response>) {
    let s = setup().await;
    let mut issued = Vec::new();
    for _ in 0..40 {
        issued.push(issue(&s, json!({})).await);
    }
    // Each indexed at its deadline only, once the intents' entries are removed.
    let settled = || {
        issued.iter().all(|r| {
            let cred = record(&s, r);
            let entries = due_entries(&s, &cred.id);
            entries.len() == 1 && entries[0].contains(&format!("/{:012}_", cred.deadline))
        })
    };
    assert!(wait(2.0, settled).await, "intent entries were not removed");
    s.engine.stop().await;
    (s, issued)
}

/// The due-index entries of credential `id`.
fn due_entries(s: &Setup, id: &str) -> Vec<String> {
    s.storage
        .dump()
        .into_keys()
        .filter(|k| k.starts_with(ledger::DUE) && k.ends_with(&format!("_{id}")))
        .collect()
}

/// A new engine over the same storage and target, as a restarted process would be.
fn restarted(s: &Setup) -> Engine {
    let fresh = testkit::engine(s.storage.clone(), &s.fake, FixedHost::default());
    fresh.start(crate::NodeRole::Active);
    fresh
}

async fn wait(secs: f64, mut check: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + Duration::from_secs_f64(secs);
    while std::time::Instant::now() < end {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}
