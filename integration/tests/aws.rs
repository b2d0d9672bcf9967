//! The `aws` kind end to end: a real OpenBao loads mayfly, which issues STS sessions from a
//! private moto server standing in for AWS, and the test uses them with the AWS SDK.

use std::time::{SystemTime, UNIX_EPOCH};

use mayfly_integration::creds::{inventory_entry, is_marked};
use mayfly_integration::{Bao, Moto, free_port, wait_until};
use serde_json::{Value, json};

const ACCOUNT: &str = "123456789012";
const POLICY: &str = "mayfly-revoked-sessions";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// moto with IAM user `mayfly` (whose keys the connections hold), role `app` (1 h maximum)
/// and role `long` (12 h), and OpenBao with connection `aws` on them.
struct World {
    moto: Moto,
    bao: Bao,
    secret: String,
    app_arn: String,
}

fn world() -> World {
    let moto = Moto::start();
    let (key, secret) = moto.create_user_with_key("mayfly");
    let app_arn = moto.create_role("app", 3600);
    let long_arn = moto.create_role("long", 43200);
    let bao = Bao::with_mayfly();
    connect(&bao, &moto, "aws", &key, &secret, json!({}));
    for (name, role) in [
        (
            "app",
            json!({"credential_type": "assumed_role", "role_arns": [app_arn],
                   "session_tags": {"team": "billing"}, "external_id": "ext-123"}),
        ),
        (
            "long",
            json!({"credential_type": "assumed_role", "role_arns": [long_arn]}),
        ),
        (
            "fed",
            json!({"credential_type": "federation_token", "policy_document":
                   r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#}),
        ),
        ("sess", json!({"credential_type": "session_token"})),
    ] {
        write_role(&bao, name, "aws", role);
    }
    World {
        moto,
        bao,
        secret,
        app_arn,
    }
}

fn connect(bao: &Bao, moto: &Moto, name: &str, key: &str, secret: &str, extra: Value) {
    let mut body = json!({"plugin_name": "aws", "access_key": key, "secret_key": secret,
        "region": "us-east-1", "sts_endpoint": moto.endpoint, "iam_endpoint": moto.endpoint,
        "allowed_roles": "*"});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let (status, out) = bao.put(&format!("mayfly/config/{name}"), body);
    assert_eq!(status, 204, "{out}");
}

fn write_role(bao: &Bao, name: &str, connection: &str, mut role: Value) {
    role["db_name"] = json!(connection);
    let (status, body) = bao.put(&format!("mayfly/roles/{name}"), role);
    assert!(status == 200 || status == 204, "{status} {body}");
}

fn issue(bao: &Bao, role: &str, ttl: &str) -> Value {
    let (status, body) = bao.put(&format!("mayfly/creds/{role}"), json!({"ttl": ttl}));
    assert_eq!(status, 200, "{body}\n{}", bao.log());
    body
}

fn warnings(body: &Value) -> String {
    body["warnings"].to_string()
}

/// Uses the credentials: the ARN GetCallerIdentity gives for them.
fn caller(moto: &Moto, body: &Value) -> String {
    let d = &body["data"];
    moto.caller_arn(
        d["access_key"].as_str().unwrap(),
        d["secret_key"].as_str().unwrap(),
        d["session_token"].as_str(),
    )
    .expect("GetCallerIdentity with the issued credentials")
}

fn record(bao: &Bao, principal: &str) -> (String, Value) {
    let (_, list) = bao.list("mayfly/leases/");
    let id = list["data"]["key_info"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, v)| v["principal"] == principal)
        .map(|(k, _)| k.clone())
        .unwrap_or_else(|| panic!("no ledger record for {principal}: {list}"));
    let (_, body) = bao.get(&format!("mayfly/leases/{id}"));
    (id, body["data"].clone())
}

#[test]
fn each_credential_type_works_and_its_ttl_is_aligned_before_aws_is_called() {
    let w = world();
    let (bao, moto) = (&w.bao, &w.moto);

    let (_, role) = bao.get("mayfly/roles/app");
    assert_eq!(role["data"]["revocable"], true, "{role}");
    assert!(
        role["data"]["revocation"]
            .as_str()
            .unwrap()
            .contains(POLICY)
    );
    let (_, role) = bao.get("mayfly/roles/sess");
    assert_eq!(role["data"]["revocable"], false, "{role}");

    // 60 s: the session is raised to AWS's 900 s minimum, the lease keeps 60 s.
    let short = issue(bao, "app", "60s");
    assert_eq!(short["lease_duration"], 60, "{short}");
    assert!(
        warnings(&short).contains("shortest STS session (900s)"),
        "{short}"
    );
    let session_end = short["data"]["expiration"].as_u64().unwrap();
    assert!(
        (now() + 880..=now() + 905).contains(&session_end),
        "{session_end}"
    );
    let user = short["data"]["username"].as_str().unwrap();
    let arn = format!("arn:aws:sts::{ACCOUNT}:assumed-role/app/{user}");
    assert_eq!(caller(moto, &short), arn);
    assert_eq!(short["data"]["arn"], arn.as_str());
    // The session name carries the mount's mark and the credential id (16 of its 20
    // characters), so CloudTrail names the credential.
    let (id, rec) = record(bao, user);
    assert!(
        is_marked(user, "app-") && user.ends_with(&id[..16]),
        "{user} {id}"
    );
    assert_eq!(rec["state"], "active");
    assert_eq!(rec["target_expires"], session_end);

    // 2 h on a role whose MaxSessionDuration is 1 h: clamped, lease included.
    let clamped = issue(bao, "app", "2h");
    assert_eq!(clamped["lease_duration"], 3600, "{clamped}");
    assert!(
        warnings(&clamped).contains("MaxSessionDuration"),
        "{clamped}"
    );
    assert_eq!(clamped["data"]["ttl_bound"], "target_max");
    caller(moto, &clamped);

    // 13 h on a 12 h role: AWS's maximum for assumed roles.
    let long = issue(bao, "long", "13h");
    assert_eq!(long["lease_duration"], 43200, "{long}");
    assert!(
        warnings(&long).contains("longest assumed_role session"),
        "{long}"
    );
    assert!(caller(moto, &long).contains(":assumed-role/long/"));

    // A federation token, and a session token (which says it cannot be revoked). moto
    // answers GetCallerIdentity for these with its default identity, so their use is shown
    // by the call succeeding.
    let fed = issue(bao, "fed", "1h");
    assert_eq!(fed["lease_duration"], 3600, "{fed}");
    assert!(
        fed["data"]["arn"]
            .as_str()
            .unwrap()
            .contains(":federated-user/"),
        "{fed}"
    );
    caller(moto, &fed);
    let sess = issue(bao, "sess", "1h");
    assert!(warnings(&sess).contains("cannot be revoked"), "{sess}");
    caller(moto, &sess);

    // No secret in the server's log or in the ledger.
    let (_, leases) = bao.list("mayfly/leases/");
    let mut scanned = format!("{}{leases}", bao.log());
    for k in leases["data"]["keys"].as_array().unwrap() {
        let (_, r) = bao.get(&format!("mayfly/leases/{}", k.as_str().unwrap()));
        scanned.push_str(&r.to_string());
    }
    assert!(
        !scanned.contains(&w.secret),
        "the connection's secret key leaked"
    );
    for body in [&short, &clamped, &long, &fed, &sess] {
        for field in ["secret_key", "session_token"] {
            let secret = body["data"][field].as_str().unwrap();
            assert!(secret.len() > 10);
            assert!(!scanned.contains(secret), "an issued {field} leaked");
        }
    }
}

#[test]
fn revocation_denies_the_session_until_it_expires_and_an_unreachable_sts_leaves_nothing() {
    let w = world();
    let (bao, moto) = (&w.bao, &w.moto);
    let (key, secret) = moto.create_user_with_key("mayfly-short");
    // moto issues sessions of any length: a 5 s minimum lets the session end within the test.
    connect(
        bao,
        moto,
        "short",
        &key,
        &secret,
        json!({"min_session_duration": 5}),
    );
    write_role(
        bao,
        "quick",
        "short",
        json!({"credential_type": "assumed_role", "role_arns": [w.app_arn]}),
    );
    write_role(
        bao,
        "quickfed",
        "short",
        json!({"credential_type": "federation_token"}),
    );

    let cred = issue(bao, "quick", "20s");
    let user = cred["data"]["username"].as_str().unwrap().to_owned();
    let session_end = cred["data"]["expiration"].as_u64().unwrap();
    assert!(session_end <= now() + 21, "{cred}");
    let lease = cred["lease_id"].as_str().unwrap().to_owned();
    let fed = issue(bao, "quickfed", "20s");
    let fed_user = fed["data"]["username"].as_str().unwrap().to_owned();

    // Revoked before its end: a deny statement naming that one session, on the role.
    for _ in 0..2 {
        let (status, body) = bao.put("sys/leases/revoke", json!({"lease_id": lease}));
        assert_eq!(status, 204, "revoking (twice) succeeds: {body}");
    }
    let denied = moto.role_policy("app", POLICY).expect("the deny policy");
    assert!(denied.contains(&format!("*:{user}")), "{denied}");
    assert!(denied.contains("\"Deny\""), "{denied}");
    let (_, rec) = record(bao, &user);
    assert_eq!(rec["state"], "revoked", "{rec}");
    assert!(rec["guard_until"].as_u64().unwrap() >= session_end, "{rec}");
    // A federated user's session is denied on the IAM user mayfly runs as.
    let (status, _) = bao.put("sys/leases/revoke", json!({"lease_id": fed["lease_id"]}));
    assert_eq!(status, 204);
    let fed_denied = moto
        .user_policy("mayfly-short", POLICY)
        .expect("the user's deny policy");
    assert!(
        fed_denied.contains(&format!("*:{fed_user}")),
        "{fed_denied}"
    );

    // Once the sessions have expired, the scheduler lifts the statements (the policies go).
    let lifted = wait_until(90.0, || {
        moto.role_policy("app", POLICY)
            .is_none_or(|d| !d.contains(&user))
            && moto
                .user_policy("mayfly-short", POLICY)
                .is_none_or(|d| !d.contains(&fed_user))
    });
    assert!(lifted, "{:?}", moto.role_policy("app", POLICY));
    assert!(now() >= session_end, "lifted before the session ended");
    let (_, rec) = record(bao, &user);
    assert_eq!(rec["guard_until"], Value::Null, "{rec}");

    // STS unreachable: a clear error naming the endpoint, and nothing active in the ledger.
    let closed = format!("http://127.0.0.1:{}", free_port());
    connect(
        bao,
        moto,
        "down",
        &key,
        &secret,
        json!({"sts_endpoint": closed, "verify_connection": false, "max_retries": 0}),
    );
    write_role(
        bao,
        "unreachable",
        "down",
        json!({"credential_type": "assumed_role", "role_arns": [w.app_arn]}),
    );
    let (status, body) = bao.put("mayfly/creds/unreachable", json!({"ttl": "1h"}));
    assert!(status == 502 || status == 503, "{status} {body}");
    let error = body.to_string();
    assert!(
        error.contains(&closed) && error.contains("cannot be reached"),
        "{error}"
    );
    let (_, list) = bao.list("mayfly/leases/");
    let states: Vec<&Value> = list["data"]["key_info"]
        .as_object()
        .unwrap()
        .values()
        .filter(|v| v["role"] == "unreachable")
        .map(|v| &v["state"])
        .collect();
    assert!(!states.is_empty(), "{list}");
    assert!(states.iter().all(|s| *s != "active"), "{states:?}");
}

fn static_creds(bao: &Bao, name: &str) -> (String, String) {
    let (status, body) = bao.get(&format!("mayfly/static-creds/{name}"));
    assert_eq!(status, 200, "{body}");
    (
        body["data"]["access_key"].as_str().unwrap().to_owned(),
        body["data"]["secret_key"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn a_static_access_key_rotates_with_an_overlap_and_the_old_key_is_deleted_after_it() {
    let w = world();
    let (bao, moto) = (&w.bao, &w.moto);
    let (legacy, legacy_secret) = moto.create_user_with_key("legacy-app");
    let user_arn = format!("arn:aws:iam::{ACCOUNT}:user/legacy-app");
    assert_eq!(
        moto.caller_arn(&legacy, &legacy_secret, None).unwrap(),
        user_arn
    );

    // Fields of password kinds are refused by name.
    for (field, value) in [
        ("dual_account_username", json!("other")),
        ("password_policy", json!("strong")),
    ] {
        let (status, body) = bao.put(
            "mayfly/static-roles/bad",
            json!({"db_name": "aws", "username": "legacy-app", "manual_rotation": true,
                   field: value}),
        );
        assert_eq!(status, 400, "{body}");
        assert!(body.to_string().contains(field), "{body}");
    }

    // Taken over: a new key at once; the legacy key keeps working for the grace period.
    let (status, body) = bao.put(
        "mayfly/static-roles/legacy",
        json!({"db_name": "aws", "username": "legacy-app", "rotation_period": "8s",
               "grace_period": "3s"}),
    );
    assert_eq!(status, 204, "{body}");
    let (first, first_secret) = static_creds(bao, "legacy");
    assert_ne!(first, legacy);

    // The inventory: the connection's own IAM user, the static role's, and a standing one,
    // each with its access key ids and ages, never a secret.
    let (ops_key, ops_secret) = moto.create_user_with_key("ops");
    let (status, inventory) = bao.get("mayfly/inventory/aws");
    assert_eq!(status, 200, "{inventory}");
    let of = |name: &str| inventory_entry(&inventory, name);
    assert_eq!(of("mayfly")["class"], "connection", "{inventory}");
    assert_eq!(of("legacy-app")["class"], "static", "{inventory}");
    let ops = of("ops");
    assert_eq!(ops["class"], "unmanaged", "{inventory}");
    assert_eq!(ops["power"]["access_keys"][0]["id"], ops_key, "{inventory}");
    assert_eq!(ops["power"]["access_keys"][0]["age_days"], 0, "{inventory}");
    let text = inventory.to_string();
    for secret in [&w.secret, &first_secret, &ops_secret, &legacy_secret] {
        assert!(!text.contains(secret.as_str()), "a secret key in {text}");
    }
    assert_eq!(
        moto.caller_arn(&first, &first_secret, None).unwrap(),
        user_arn,
        "the new key works"
    );
    let (_, role) = bao.get("mayfly/static-roles/legacy");
    assert_eq!(role["data"]["current_access_key"], first.as_str(), "{role}");
    assert_eq!(
        role["data"]["previous_access_key"],
        legacy.as_str(),
        "{role}"
    );
    assert!(moto.access_keys("legacy-app").contains(&legacy));

    // After the grace period the legacy key is deleted (moto then answers for it with its
    // default identity, no longer the user's).
    assert!(
        wait_until(10.0, || !moto.access_keys("legacy-app").contains(&legacy)),
        "the legacy key outlived its grace period"
    );
    assert_ne!(
        moto.caller_arn(&legacy, &legacy_secret, None).unwrap(),
        user_arn
    );

    // On schedule: the next key, the same overlap, never more than AWS's two keys.
    let mut most = 0;
    assert!(
        wait_until(20.0, || {
            most = most.max(moto.access_keys("legacy-app").len());
            static_creds(bao, "legacy").0 != first
        }),
        "no scheduled rotation"
    );
    let (second, second_secret) = static_creds(bao, "legacy");
    assert_eq!(
        moto.caller_arn(&second, &second_secret, None).unwrap(),
        user_arn
    );
    assert!(
        wait_until(10.0, || {
            let keys = moto.access_keys("legacy-app");
            most = most.max(keys.len());
            !keys.contains(&first)
        }),
        "the previous key outlived its grace period"
    );
    assert!(most <= 2, "{most} keys at once");
    let log = bao.log();
    for secret in [&first_secret, &second_secret, &legacy_secret] {
        assert!(!log.contains(secret.as_str()), "a secret key leaked");
    }
}

/// A credential as the test saw it issued: AWS's issue time lies within `from..=to`.
struct Timed {
    name: String,
    lease: String,
    from: u64,
    to: u64,
}

fn issue_timed(bao: &Bao, role: &str, body: Value) -> Timed {
    let from = now();
    let (status, cred) = bao.put(&format!("mayfly/creds/{role}"), body);
    let to = now();
    assert_eq!(status, 200, "{cred}");
    Timed {
        name: cred["data"]["username"].as_str().unwrap().to_owned(),
        lease: cred["lease_id"].as_str().unwrap().to_owned(),
        from,
        to,
    }
}

/// `n` credentials of `role` under a new task; the task's id and the credentials.
fn task_of(bao: &Bao, role: &str, n: usize) -> (String, Vec<Timed>) {
    let (status, task) = bao.put("mayfly/tasks", json!({"ttl": "1h"}));
    assert_eq!(status, 200, "{task}");
    let id = task["data"]["task_id"].as_str().unwrap().to_owned();
    let creds = (0..n)
        .map(|_| issue_timed(bao, role, json!({"task_id": id, "ttl": "50m"})))
        .collect();
    (id, creds)
}

fn end_task(bao: &Bao, id: &str) {
    let (status, ended) = bao.delete(&format!("mayfly/tasks/{id}"));
    assert_eq!(status, 200, "{ended}");
}

/// Whether policy `doc` denies the session `name` issued at `t`: an independent reading of
/// IAM's rules for the conditions mayfly writes (`aws:userid` patterns, `aws:TokenIssueTime`
/// bounds); any other condition fails the test.
fn denied_at(doc: &Value, name: &str, t: u64) -> bool {
    let statements = match &doc["Statement"] {
        Value::Array(a) => a.clone(),
        one => vec![one.clone()],
    };
    let userid = format!("AROAEXAMPLEROLEID:{name}");
    statements
        .iter()
        .filter(|s| s["Effect"] == "Deny")
        .any(|s| {
            let Some(conditions) = s["Condition"].as_object() else {
                return false;
            };
            conditions.iter().all(|(op, keys)| {
                keys.as_object().unwrap().iter().all(|(key, v)| {
                    let values: Vec<&str> = match v {
                        Value::Array(a) => a.iter().map(|x| x.as_str().unwrap()).collect(),
                        one => vec![one.as_str().unwrap()],
                    };
                    match (op.as_str(), key.as_str()) {
                        ("StringLike", "aws:userid") => values.iter().any(|p| glob(p, &userid)),
                        (date, "aws:TokenIssueTime") => values.iter().any(|v| {
                            let bound = mayfly_integration::unix_of_rfc3339(v);
                            match date {
                                "DateGreaterThanEquals" => t >= bound,
                                "DateGreaterThan" => t > bound,
                                "DateLessThanEquals" => t <= bound,
                                "DateLessThan" => t < bound,
                                other => panic!("unexpected operator {other}"),
                            }
                        }),
                        other => panic!("unexpected condition {other:?}"),
                    }
                })
            })
        })
}

/// IAM's `*` and `?` wildcards.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.chars().next() {
        None => text.is_empty(),
        Some('*') => {
            (0..=text.len()).any(|i| text.is_char_boundary(i) && glob(&pattern[1..], &text[i..]))
        }
        Some('?') => {
            !text.is_empty()
                && glob(
                    &pattern[1..],
                    &text[text.chars().next().unwrap().len_utf8()..],
                )
        }
        Some(c) => text.starts_with(c) && glob(&pattern[c.len_utf8()..], &text[c.len_utf8()..]),
    }
}

/// What IAM counts of a policy: white space aside.
fn iam_size(doc: &str) -> usize {
    doc.chars().filter(|c| !c.is_whitespace()).count()
}

#[test]
fn early_revocations_outgrow_iams_inline_policy_limit_and_still_revoke_every_session() {
    let w = world();
    let (bao, moto) = (&w.bao, &w.moto);
    // Another inline policy on the role shares IAM's 10,240 characters with mayfly's.
    let ops = json!({"Version": "2012-10-17", "Statement": [{"Sid": "Ops", "Effect": "Deny",
        "Action": "s3:DeleteBucket", "Resource": format!("arn:aws:s3:::{}", "b".repeat(1500))}]})
    .to_string();
    moto.put_role_policy("app", "ops", &ops);
    let budget = 10_240 - iam_size(&ops);

    // Sessions revoked early in two bursts, with live ones issued between and after them:
    // 300 names do not fit beside the other policy.
    let (first, mut revoked) = task_of(bao, "app", 150);
    std::thread::sleep(std::time::Duration::from_secs(12));
    let live_between = issue_timed(bao, "app", json!({"ttl": "50m"}));
    std::thread::sleep(std::time::Duration::from_secs(12));
    let (second, more) = task_of(bao, "app", 150);
    revoked.extend(more);
    std::thread::sleep(std::time::Duration::from_secs(12));
    let live_after = issue_timed(bao, "app", json!({"ttl": "50m"}));
    end_task(bao, &first);
    let doc = moto.role_policy("app", POLICY).expect("the deny policy");
    assert!(
        doc.contains(&format!("*:{}", revoked[0].name)),
        "150 names fit: {doc}"
    );
    end_task(bao, &second);

    let text = moto.role_policy("app", POLICY).expect("the deny policy");
    assert!(
        iam_size(&text) <= budget,
        "{} characters beside {} of the other policy",
        iam_size(&text),
        iam_size(&ops)
    );
    assert!(
        text.contains("aws:TokenIssueTime"),
        "folded into windows: {text}"
    );
    eprintln!(
        "300 revoked sessions beside 2 live ones: {} characters of {budget}, {} window statements",
        iam_size(&text),
        text.matches("MayflyWindow").count()
    );
    let doc: Value = serde_json::from_str(&text).unwrap();
    for c in &revoked {
        assert!(
            (c.from..=c.to).all(|t| denied_at(&doc, &c.name, t)),
            "revoked {} ({}..{}) is not denied: {text}",
            c.name,
            c.from,
            c.to
        );
        let (_, rec) = record(bao, &c.name);
        assert_eq!(rec["state"], "revoked", "{rec}");
    }
    for c in [&live_between, &live_after] {
        assert!(
            (c.from - 1..=c.to + 1).all(|t| !denied_at(&doc, &c.name, t)),
            "live {} is denied: {text}",
            c.name
        );
        let (_, rec) = record(bao, &c.name);
        assert_eq!(rec["state"], "active", "{rec}");
        let (status, body) = bao.put("sys/leases/lookup", json!({"lease_id": c.lease}));
        assert_eq!(status, 200, "{body}");
    }
    // The other policy is untouched.
    assert_eq!(
        moto.role_policy("app", "ops").as_deref(),
        Some(ops.as_str())
    );

    // Federation tokens are denied on the IAM user mayfly runs as, which holds 2,048
    // characters: 60 names do not fit. A live session issued among them cannot be spared by
    // a window; if one must cover it, the mount revokes it and says why.
    write_role(
        bao,
        "fedbulk",
        "aws",
        json!({"credential_type": "federation_token"}),
    );
    let (task, mut fed) = task_of(bao, "fedbulk", 30);
    let live = issue_timed(bao, "fedbulk", json!({"ttl": "50m"}));
    fed.extend(
        (0..30).map(|_| issue_timed(bao, "fedbulk", json!({"task_id": task, "ttl": "50m"}))),
    );
    end_task(bao, &task);
    let text = moto
        .user_policy("mayfly", POLICY)
        .expect("the user's deny policy");
    assert!(iam_size(&text) <= 2_048, "{} characters", iam_size(&text));
    let doc: Value = serde_json::from_str(&text).unwrap();
    for c in &fed {
        assert!(
            (c.from..=c.to).all(|t| denied_at(&doc, &c.name, t)),
            "revoked {} is not denied: {text}",
            c.name
        );
    }
    let covered = (live.from - 1..=live.to + 1).any(|t| denied_at(&doc, &live.name, t));
    let near = fed
        .iter()
        .all(|c| c.to + 8 >= live.from && c.from <= live.to + 8);
    eprintln!(
        "the live federated session {} by a window",
        if covered { "is covered" } else { "is spared" }
    );
    assert!(
        covered || !near,
        "all were issued within seconds of the live one: {text}"
    );
    let (_, rec) = record(bao, &live.name);
    if covered {
        // Revoked by the mount, with the reason in the ledger.
        let gone = wait_until(20.0, || record(bao, &live.name).1["state"] == "revoked");
        let (_, rec) = record(bao, &live.name);
        assert!(gone, "{rec}");
        let reason = rec["revoke_reason"].as_str().unwrap_or_default();
        assert!(reason.contains("IAM's limit"), "{rec}");
    } else {
        assert_eq!(rec["state"], "active", "{rec}");
    }
}
