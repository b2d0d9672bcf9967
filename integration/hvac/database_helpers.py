"""Every helper of hvac's `secrets.database` against mayfly mounted at `mayfly/`, as a client
written for OpenBao's `database` engine would call them. Run by the drop-in test
(integration/tests/dropin.rs) with the environment it sets; exits non-zero on the first
helper that does not work, naming it.
"""

import os
import subprocess
import sys

import hvac

MOUNT = "mayfly"


def login(user, password):
    """Whether `user` logs in to the test's PostgreSQL with `password` (psql, as the Rust
    harness does)."""
    done = subprocess.run(
        [os.environ["PG_PSQL"], "-h", "127.0.0.1", "-p", os.environ["PG_PORT"], "-U", user,
         "-d", "postgres", "-Atc", "SELECT 1"],
        env={**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"},
        capture_output=True,
        text=True,
    )
    return done.returncode == 0 and done.stdout.strip() == "1"


def check(what, condition, detail=""):
    if not condition:
        print(f"FAILED: {what}: {detail}")
        sys.exit(1)
    print(f"ok: {what}")


def main():
    client = hvac.Client(url=os.environ["MAYFLY_ADDR"], token=os.environ["MAYFLY_TOKEN"])
    db = client.secrets.database

    # configure: the connection, with a plugin field passed through **kwargs.
    db.configure(
        name="pg",
        plugin_name="postgresql-database-plugin",
        verify_connection=True,
        allowed_roles=["reader", "static-app"],
        connection_url=os.environ["PG_URL"],
        username=os.environ["PG_USER"],
        password=os.environ["PG_PASSWORD"],
        mount_point=MOUNT,
    )
    conn = db.read_connection(name="pg", mount_point=MOUNT)["data"]
    check("configure + read_connection", conn["plugin_name"] in ("postgres", "postgresql-database-plugin"), conn)
    check("read_connection hides the password", os.environ["PG_PASSWORD"] not in str(conn), conn)
    keys = db.list_connections(mount_point=MOUNT)["data"]["keys"]
    check("list_connections", keys == ["pg"], keys)
    db.reset_connection(name="pg", mount_point=MOUNT)
    check("reset_connection", True)

    # Dynamic roles.
    db.create_role(
        name="reader",
        db_name="pg",
        creation_statements=[
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"
        ],
        revocation_statements=["DROP ROLE IF EXISTS \"{{name}}\";"],
        rollback_statements=["DROP ROLE IF EXISTS \"{{name}}\";"],
        renew_statements=["ALTER ROLE \"{{name}}\" VALID UNTIL '{{expiration}}';"],
        default_ttl=300,
        max_ttl=600,
        mount_point=MOUNT,
    )
    role = db.read_role(name="reader", mount_point=MOUNT)["data"]
    check("create_role + read_role", role["db_name"] == "pg" and role["default_ttl"] == 300, role)
    keys = db.list_roles(mount_point=MOUNT)["data"]["keys"]
    check("list_roles", keys == ["reader"], keys)
    creds = db.generate_credentials(name="reader", mount_point=MOUNT)
    check(
        "generate_credentials",
        creds["data"]["username"] and creds["data"]["password"] and creds["lease_duration"] == 300,
        {k: v for k, v in creds.items() if k != "data"},
    )
    check(
        "the credentials log in",
        login(creds["data"]["username"], creds["data"]["password"]),
    )
    client.sys.revoke_lease(lease_id=creds["lease_id"])
    check(
        "a revoked credential no longer logs in",
        not login(creds["data"]["username"], creds["data"]["password"]),
    )

    # Static roles.
    db.create_static_role(
        name="static-app",
        db_name="pg",
        username=os.environ["PG_STATIC_USER"],
        rotation_statements=["ALTER ROLE \"{{name}}\" WITH PASSWORD '{{password}}';"],
        rotation_period=3600,
        mount_point=MOUNT,
    )
    static = db.read_static_role(name="static-app", mount_point=MOUNT)["data"]
    check("create_static_role + read_static_role", static["username"] == os.environ["PG_STATIC_USER"], static)
    keys = db.list_static_roles(mount_point=MOUNT)["data"]["keys"]
    check("list_static_roles", keys == ["static-app"], keys)
    first = db.get_static_credentials(name="static-app", mount_point=MOUNT)["data"]
    check("get_static_credentials", first["password"] and first["last_vault_rotation"], sorted(first))
    check("the static password logs in", login(first["username"], first["password"]))
    db.rotate_static_role_credentials(name="static-app", mount_point=MOUNT)
    second = db.get_static_credentials(name="static-app", mount_point=MOUNT)["data"]
    check("rotate_static_role_credentials", second["password"] != first["password"])
    check("the rotated password logs in", login(second["username"], second["password"]))

    # Root rotation, then deletions.
    db.rotate_root_credentials(name="pg", mount_point=MOUNT)
    check(
        "rotate_root_credentials",
        not login(os.environ["PG_USER"], os.environ["PG_PASSWORD"]),
        "the old root password still logs in",
    )
    again = db.generate_credentials(name="reader", mount_point=MOUNT)
    check("the connection works after rotate-root", again["data"]["username"])
    client.sys.revoke_lease(lease_id=again["lease_id"])
    db.delete_static_role(name="static-app", mount_point=MOUNT)
    db.delete_role(name="reader", mount_point=MOUNT)
    try:
        db.read_role(name="reader", mount_point=MOUNT)
        gone = False
    except hvac.exceptions.InvalidPath:
        gone = True
    check("a deleted role reads as absent", gone)
    db.delete_connection(name="pg", mount_point=MOUNT)
    try:
        db.read_connection(name="pg", mount_point=MOUNT)
        gone = False
    except hvac.exceptions.InvalidPath:
        gone = True
    check("delete_connection", gone)
    print("all hvac secrets.database helpers work")


if __name__ == "__main__":
    main()
