#!/usr/bin/env bash
# Installs and starts everything Crucible needs on a Debian 12 machine, as root, idempotently:
# Debian packages, the Docker engine, PostgreSQL, Redis, the Python venv, the sandbox image,
# migrations and an operator account. Used by `make run` and `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DATA=${CRUCIBLE_DATA_DIR:-$ROOT/data}
mkdir -p "$DATA" "$DATA/logs"
log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

need_root() { [ "$(id -u)" = 0 ] || { echo "setup must run as root (it installs Debian packages and starts services)" >&2; exit 1; }; }

# --- Debian packages ----------------------------------------------------------------------
# gcc and libc6-dev compile the static in-sandbox helper (sandbox/helper) that every image carries.
PACKAGES=(docker.io runsc postgresql redis-server debootstrap python3-venv chromium ca-certificates gcc libc6-dev)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  need_root
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- Docker engine ------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  need_root
  log "starting the Docker engine"
  if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
    systemctl start docker
  else
    nohup setsid dockerd >"$DATA/logs/dockerd.log" 2>&1 &
  fi
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "the Docker engine did not start; see $DATA/logs/dockerd.log" >&2; exit 1; }
fi

# --- gVisor: runsc registered with the engine (sandboxes get it when SANDBOX_RUNTIME=auto) ---------
if [ "$(python3 scripts/register_runsc.py /etc/docker/daemon.json "$(command -v runsc)")" = changed ]; then
  log "registering gVisor (runsc) with the Docker engine"
  pkill -HUP -x dockerd || true  # the engine reloads its runtimes on SIGHUP; containers keep running
fi
for _ in $(seq 1 40); do docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"' && break; sleep 0.25; done
docker info --format '{{json .Runtimes}}' | grep -q '"runsc"' \
  || { echo "the Docker engine did not register runsc; see /etc/docker/daemon.json" >&2; exit 1; }

# --- PostgreSQL ---------------------------------------------------------------------------
PG_VERSION=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h 2>/dev/null | grep -q .; then
  log "creating the PostgreSQL cluster"
  pg_createcluster "$PG_VERSION" main >/dev/null
fi
if ! pg_lsclusters -h | awk '{print $4}' | grep -q online; then
  log "starting PostgreSQL"
  pg_ctlcluster "$PG_VERSION" main start
fi

# --- Local secrets and the database role (scripts/local_env.sh) ---------------------------
bash scripts/local_env.sh "$ROOT" "$DATA"

# --- Redis --------------------------------------------------------------------------------
# Started (or upgraded) with a password that lives in local.env's REDIS_URL; see scripts/redis.sh.
bash scripts/redis.sh "$DATA"

# --- Python environment -------------------------------------------------------------------
stamp=$(cat requirements.txt client/pyproject.toml | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.requirements 2>/dev/null)" != "$stamp" ]; then
  log "installing Python requirements into .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/pip install -q -r requirements.txt
  .venv/bin/pip install -q --no-deps -e . >/dev/null
  .venv/bin/pip install -q --no-deps -e ./client >/dev/null  # the `crucible` CLI, the SDK, the Inspect provider
  echo "$stamp" > .venv/.requirements
fi

# --- The code editor's bundle (CodeMirror 6 from the npm registry, into static/build/) -------
# A progressive enhancement: without it the form's plain textarea is the editor, so a failure here
# (no registry) is a warning, not a stop. Skipped when the lock file and frontend/ are unchanged.
build_code_editor() {
  local stamp
  stamp=$(cat package.json package-lock.json frontend/*.js | sha256sum | cut -c1-16)
  [ -f static/build/code-editor.js ] && [ "$(cat static/build/.stamp 2>/dev/null)" = "$stamp" ] && return 0
  command -v npm >/dev/null || { log "installing nodejs and npm (Debian)"; apt-get install -y -qq nodejs npm >/dev/null; }
  log "bundling the code editor (npm ci + esbuild)"
  if npm ci --no-audit --no-fund --loglevel=error >/dev/null && npm run --silent build >/dev/null; then
    echo "$stamp" > static/build/.stamp
  else
    log "warning: could not build the code editor; the form keeps its plain textarea"
  fi
}
build_code_editor

# --- Sandbox image, database, operator ----------------------------------------------------
# --if-missing also rebuilds an image that predates the current sandbox helper (its label differs).
.venv/bin/python manage.py build_sandbox_image --if-missing
# The runtimes marked "prebuilt" in sandbox/runtimes.json (python-scientific, c, javascript): each
# reused when its content-derived tag exists, else built from the mirror (about 1 to 3 minutes each).
# SANDBOX_BUILD_RUNTIMES (names, space-separated, or "all") builds more; "none" builds none of them.
for runtime in ${SANDBOX_BUILD_RUNTIMES:-prebuilt}; do
  [ "$runtime" = none ] && break
  .venv/bin/python manage.py build_sandbox_image --runtime "$runtime"
done
.venv/bin/python manage.py migrate --noinput -v 0
.venv/bin/python manage.py collectstatic --noinput -v 0
.venv/bin/python manage.py ensure_operator
