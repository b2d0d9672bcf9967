//! The operator's tools: tasks ended by hand or at their deadline, bulk revocations, orphans.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use crate::Error;
use crate::contract::request::{Operation, Response};
use crate::testkit::{self, who};

struct Mount(testkit::Mount);

impl std::ops::Deref for Mount {
    type Target = testkit::Mount;
    fn deref(&self) -> &testkit::Mount {
        &self.0
    }
}

impl Mount {
    async fn new() -> Mount {
        let m = Mount(testkit::Mount::with_groups(&[("e-ops", "ops")]).await);
        for role in ["a", "b"] {
            m.write(
                &format!("roles/{role}"),
                json!({"db_name": "db", "max_ttl": "2h"}),
            )
            .await
            .unwrap();
        }
        m
    }

    async fn write(&self, path: &str, body: Value) -> Result<Response, Error> {
        self.call(Operation::Update, path, body, &who("e-1", "127.0.0.1"))
            .await
    }

    async fn data(&self, op: Operation, path: &str, body: Value) -> serde_json::Map<String, Value> {
        self.call(op, path, body, &who("e-1", "127.0.0.1"))
            .await
            .unwrap()
            .data
            .unwrap()
    }
}

#[tokio::test]
async fn a_task_bounds_its_credentials_and_ending_it_revokes_them_all() {
    let m = Mount::new().await;
    let task = m
        .data(
            Operation::Update,
            "tasks",
            json!({"ttl": "10m",
                                "description": "deploy", "metadata": "ticket=OPS-1"}),
        )
        .await;
    let id = task["task_id"].as_str().unwrap().to_owned();
    assert_eq!(task["metadata"], json!({"ticket": "OPS-1"}));
    let a = m
        .write("creds/a", json!({"task_id": id, "ttl": "1h"}))
        .await
        .unwrap();
    let lease = a.lease.clone().unwrap();
    assert!((598..=600).contains(&lease.ttl), "{lease:?}");
    assert!(lease.max_ttl <= 600);
    assert_eq!(a.data.as_ref().unwrap()["ttl_bound"], "task");
    assert!(
        a.warnings[0].contains("time left in its task"),
        "{:?}",
        a.warnings
    );
    let b = m
        .write("creds/b", json!({"task_id": id, "ttl": "1m"}))
        .await
        .unwrap();
    assert_eq!(b.data.as_ref().unwrap()["ttl_bound"], "requested");
    assert_eq!(m.fake.target.count(), 2);

    let read = m
        .data(Operation::Read, &format!("tasks/{id}"), Value::Null)
        .await;
    assert_eq!(read["credentials"].as_array().unwrap().len(), 2);
    let ended = m
        .data(Operation::Delete, &format!("tasks/{id}"), Value::Null)
        .await;
    assert_eq!(
        (ended["revoked"].clone(), ended["failed"].clone()),
        (json!(2), json!(0))
    );
    assert_eq!(m.fake.target.count(), 0, "gone before the call returned");
    let read = m
        .data(Operation::Read, &format!("tasks/{id}"), Value::Null)
        .await;
    assert_eq!(read["state"], "ended");
    assert!(
        read["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["state"] == "revoked")
    );
    let err = m
        .write("creds/a", json!({"task_id": id}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("has ended"), "{err}");
    let err = m
        .write("creds/a", json!({"task_id": "nope"}))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("field 'task_id': no task 'nope'"),
        "{err}"
    );
}

#[tokio::test]
async fn a_shortened_task_ends_at_its_new_deadline_through_the_scheduler() {
    let m = Mount::new().await;
    m.write("tasks/job-1", json!({"ttl": "1h"})).await.unwrap();
    m.write("creds/a", json!({"task_id": "job-1"}))
        .await
        .unwrap();
    m.write("tasks/job-1", json!({"ttl": 1})).await.unwrap();
    let mut gone = false;
    for _ in 0..100 {
        if m.fake.target.count() == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the task's end revoked its credential");
    let read = m.data(Operation::Read, "tasks/job-1", Value::Null).await;
    assert_eq!(read["end_reason"], "deadline reached");
}

#[tokio::test]
async fn tasks_and_roles_bind_who_may_issue() {
    let m = Mount::new().await;
    m.write("tasks/mine", json!({})).await.unwrap();
    let other = who("e-2", "127.0.0.1");
    let err = m
        .call(
            Operation::Update,
            "creds/a",
            json!({"task_id": "mine"}),
            &other,
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), 403);
    assert!(err.to_string().contains("bound to its owner"), "{err}");
    m.write("roles/b", json!({"allow_other_task_owners": true}))
        .await
        .unwrap();
    m.call(
        Operation::Update,
        "creds/b",
        json!({"task_id": "mine"}),
        &other,
    )
    .await
    .unwrap();

    m.write("roles/a", json!({"require_task": true}))
        .await
        .unwrap();
    let err = m.write("creds/a", json!({})).await.unwrap_err();
    assert!(
        err.to_string().contains("field 'task_id' is required"),
        "{err}"
    );

    m.write(
        "roles/b",
        json!({"bound_entity_ids": "e-1", "bound_cidrs": "10.0.0.0/8,127.0.0.0/8",
                               "bound_group_names": "ops"}),
    )
    .await
    .unwrap();
    let cases = [
        (who("e-2", "127.0.0.1"), "bound_entity_ids"),
        (who("e-1", "192.168.1.1"), "bound_cidrs"),
        (who("e-1", "127.0.0.1"), "bound_group_names"),
    ];
    for (as_, binding) in cases {
        let err = m
            .call(Operation::Update, "creds/b", json!({}), &as_)
            .await
            .unwrap_err();
        assert_eq!(err.status(), 403, "{err}");
        assert!(err.to_string().contains(binding), "{binding}: {err}");
    }
    m.write("roles/b", json!({"bound_entity_ids": "e-ops"}))
        .await
        .unwrap();
    m.call(
        Operation::Update,
        "creds/b",
        json!({}),
        &who("e-ops", "10.1.1.1"),
    )
    .await
    .unwrap();
    let err = m
        .write("roles/b", json!({"bound_cidrs": "10.0.0.0/40"}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("field 'bound_cidrs'"), "{err}");
}

#[tokio::test]
async fn a_bound_task_is_read_changed_and_ended_by_its_owner_alone() {
    let m = Mount::new().await;
    let (owner, other) = (who("e-1", "127.0.0.1"), who("e-2", "127.0.0.1"));
    m.call(Operation::Update, "tasks/job", json!({"ttl": "1h"}), &owner)
        .await
        .unwrap();
    m.call(
        Operation::Update,
        "creds/a",
        json!({"task_id": "job"}),
        &owner,
    )
    .await
    .unwrap();
    m.call(
        Operation::Update,
        "tasks/open",
        json!({"bound_to_owner": false}),
        &owner,
    )
    .await
    .unwrap();

    // Someone else can neither read, unbind, draw on nor end it.
    let refused = [
        (Operation::Read, json!(null), "read"),
        (
            Operation::Update,
            json!({"bound_to_owner": false}),
            "change",
        ),
        (Operation::Update, json!({"ttl": "10h"}), "change"),
        (Operation::Delete, json!(null), "end"),
    ];
    for (op, body, doing) in refused {
        let err = m.call(op, "tasks/job", body, &other).await.unwrap_err();
        assert_eq!(err.status(), 403, "{err}");
        let text = err.to_string();
        assert!(
            text.contains("bound to its owner (entity 'e-1')")
                && text.contains(&format!("only its owner may {doing} it")),
            "{text}"
        );
    }
    let err = m
        .call(
            Operation::Update,
            "creds/a",
            json!({"task_id": "job"}),
            &other,
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), 403, "{err}");
    assert_eq!(m.fake.target.count(), 1, "nothing was revoked");
    let read = m.call(Operation::Read, "tasks/job", json!(null), &owner);
    let read = read.await.unwrap().data.unwrap();
    assert_eq!(
        (read["bound_to_owner"].clone(), read["state"].clone()),
        (json!(true), json!("open"))
    );

    // Each lists its own; operators (sudo) list and read them all.
    let keys = |r: Response| r.data.unwrap()["keys"].clone();
    let mine = m.call(Operation::List, "tasks/", json!(null), &other).await;
    assert_eq!(keys(mine.unwrap()), json!([]));
    let mine = m.call(Operation::List, "tasks/", json!(null), &owner).await;
    assert_eq!(keys(mine.unwrap()), json!(["job", "open"]));
    let all = m.data(Operation::List, "revoke/task/", Value::Null).await;
    assert_eq!(all["keys"], json!(["job", "open"]));
    let one = m.call(Operation::Read, "revoke/task/job", json!(null), &other);
    assert_eq!(
        one.await.unwrap().data.unwrap()["credentials"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A task that is not bound is anyone's to use and change.
    m.call(
        Operation::Update,
        "tasks/open",
        json!({"description": "x"}),
        &other,
    )
    .await
    .unwrap();

    // The owner ends it.
    let ended = m
        .call(Operation::Delete, "tasks/job", json!(null), &owner)
        .await;
    assert_eq!(ended.unwrap().data.unwrap()["revoked"], 1);
    assert_eq!(m.fake.target.count(), 0);
}

#[tokio::test]
async fn operators_revoke_in_bulk_list_failures_and_purge_orphans() {
    let m = Mount::new().await;
    let mut names = Vec::new();
    for role in ["a", "a", "a", "b"] {
        let r = m.write(&format!("creds/{role}"), json!({})).await.unwrap();
        names.push(r.data.unwrap()["username"].as_str().unwrap().to_owned());
    }
    // One dropped by hand: counted as already gone.
    m.fake.target.principals.lock().unwrap().remove(&names[0]);
    let r = m.data(Operation::Update, "revoke/role/a", json!({})).await;
    assert_eq!(
        (r["revoked"].clone(), r["already_gone"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(m.fake.target.count(), 1);

    m.fake.target.down.store(true, Ordering::SeqCst);
    let r = m.data(Operation::Update, "revoke/all", json!({})).await;
    assert_eq!(r["failed"], 1);
    let list = m.data(Operation::List, "revocations/", Value::Null).await;
    let key = list["keys"][0].as_str().unwrap();
    assert_eq!(list["key_info"][key]["attempts"], 1);
    assert_eq!(list["key_info"][key]["last_error"], "fake target is down");
    m.fake.target.down.store(false, Ordering::SeqCst);

    // Orphans: marked principals without a live record; a leased one is never one.
    let leased = m.write("creds/b", json!({})).await.unwrap().data.unwrap()["username"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 0..5 {
        m.fake
            .target
            .principals
            .lock()
            .unwrap()
            .insert(format!("mf-hand-{i}"));
    }
    m.fake
        .target
        .principals
        .lock()
        .unwrap()
        .insert("not-ours".into());
    let scan = m.data(Operation::Read, "orphans/db", Value::Null).await;
    assert!(
        scan["orphans"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o != &json!(leased))
    );
    // names[3] is failing (revoking), so it is live and not an orphan either.
    assert_eq!(scan["count"], 5, "{scan:?}");
    let dry = m.data(Operation::Update, "orphans/db", json!({})).await;
    assert_eq!(dry["dry_run"], true);
    assert!(m.fake.target.has("mf-hand-0"));
    let purge = m
        .data(Operation::Update, "orphans/db", json!({"purge": true}))
        .await;
    assert_eq!(purge["purged"], 5);
    assert!(m.fake.target.has(&leased) && m.fake.target.has("not-ours"));
    assert!(!m.fake.target.has("mf-hand-4"));
}
