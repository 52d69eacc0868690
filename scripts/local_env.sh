#!/usr/bin/env bash
# This checkout's local.env (secrets, git-ignored, mode 600) and its PostgreSQL role and database,
# idempotently. Usage: bash scripts/local_env.sh CHECKOUT_DIR DATA_DIR   (called by scripts/setup.sh)
#
# Each checkout has its own database, role (and password), Redis port and container label, named
# after a hash of its path: two checkouts on one machine never share a database, overwrite each
# other's operator password, take each other's jobs or remove each other's sandboxes. (A local.env
# written before this keeps the names it has.)
set -euo pipefail
ROOT=${1:?usage: local_env.sh CHECKOUT_DIR DATA_DIR}
DATA=${2:?usage: local_env.sh CHECKOUT_DIR DATA_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
mkdir -p "$DATA"

if [ ! -f "$DATA/local.env" ]; then
  log "writing $DATA/local.env (secrets for this machine; git-ignored)"
  checkout=crucible_$(printf '%s' "$ROOT" | sha256sum | cut -c1-8)
  db_password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
  secret_key=$(python3 -c 'import secrets; print(secrets.token_urlsafe(50))')
  redis_port=${REDIS_PORT:-$(python3 "$HERE/free_port.py" 6379)}
  umask 077
  cat >"$DATA/local.env" <<ENV
CRUCIBLE_ENV=development
SECRET_KEY=$secret_key
DATABASE_URL=postgres://$checkout:$db_password@127.0.0.1:5432/$checkout
REDIS_URL=redis://127.0.0.1:$redis_port/0
CRUCIBLE_INSTANCE=${checkout//_/-}
ENV
  umask 022
fi

# role, password and database name from DATABASE_URL (a local PostgreSQL only; another is its operator's)
read -r db_role db_password db_name < <(python3 "$HERE/database_url.py" "$DATA/local.env")
if [ "$db_role" != - ]; then
  su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='$db_role'\"" | grep -q 1 \
    || su postgres -c "psql -qc \"CREATE ROLE $db_role LOGIN CREATEDB PASSWORD '$db_password'\""
  su postgres -c "psql -qc \"ALTER ROLE $db_role PASSWORD '$db_password'\"" >/dev/null
  su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='$db_name'\"" | grep -q 1 \
    || su postgres -c "createdb -O $db_role $db_name"
fi
