#!/usr/bin/env bash
# Redis for Crucible on 127.0.0.1:$REDIS_PORT (default 6379), with a password, idempotently.
# Usage: bash scripts/redis.sh DATA_DIR   (called by scripts/setup.sh after DATA_DIR/local.env exists)
#
# The password lives only in DATA_DIR/local.env (mode 600), inside REDIS_URL
# (redis://:<password>@127.0.0.1:6379/0), and never on a command line (ps shows those):
# - no REDIS_URL yet, or the local one without a password (an older set-up): generate one, write the line;
# - REDIS_URL pointing at another Redis: leave it alone (that Redis is its operator's to secure);
# - Redis not running: start it with the password, read from standard input;
# - Redis running without a password (an older set-up, or Debian's service): set it live, and in its
#   configuration file when it has one, so it survives a restart;
# - Redis running with another password: stop and say so.
set -euo pipefail
DATA=${1:?usage: redis.sh DATA_DIR}
ENV_FILE=$DATA/local.env
log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

current=$(grep -E '^REDIS_URL=' "$ENV_FILE" 2>/dev/null | tail -1 || true)
# The port this checkout's local Redis listens on: REDIS_URL's (setup.sh picks a free one per
# checkout), else REDIS_PORT, else 6379.
url_port=$(sed -n 's#^REDIS_URL=redis://\(:[^@]*@\)\{0,1\}127\.0\.0\.1:\([0-9]*\).*#\2#p' <<<"$current")
PORT=${url_port:-${REDIS_PORT:-6379}}
if [ -n "$current" ] && ! grep -Eq "^REDIS_URL=redis://(:[^@]*@)?127\.0\.0\.1:$PORT(/[0-9]+)?$" <<<"$current"; then
  log "REDIS_URL in $ENV_FILE names another Redis: leaving it as it is"
  exit 0
fi
password=$(sed -n 's#^REDIS_URL=redis://:\([^@]*\)@.*#\1#p' <<<"$current")
if [ -z "$password" ]; then
  log "giving Redis a password (kept in $ENV_FILE)"
  password=$(python3 -c 'import secrets; print(secrets.token_hex(24))')  # hex: nothing to escape in a URL
  db=$(sed -n 's#^REDIS_URL=redis://[^/]*/\([0-9]*\)$#\1#p' <<<"$current")
  tmp=$(mktemp "$ENV_FILE.XXXXXX")  # mode 600, same file system: the rename below is atomic
  grep -v '^REDIS_URL=' "$ENV_FILE" >"$tmp" 2>/dev/null || true
  echo "REDIS_URL=redis://:$password@127.0.0.1:$PORT/${db:-0}" >>"$tmp"
  mv "$tmp" "$ENV_FILE"
fi

export REDISCLI_AUTH=$password
with_password() { redis-cli -h 127.0.0.1 -p "$PORT" --no-auth-warning "$@" 2>/dev/null; }
without_password() { env -u REDISCLI_AUTH redis-cli -h 127.0.0.1 -p "$PORT" "$@" 2>/dev/null; }

state=$(without_password ping || true)
case "$state" in
  PONG)
    log "setting the password on the running Redis"
    printf 'CONFIG SET requirepass %s\n' "$password" | without_password >/dev/null
    # Keeps it across restarts when Redis runs from a configuration file (Debian's service does).
    with_password CONFIG REWRITE >/dev/null || true
    ;;
  NOAUTH*)
    ;;
  *)
    log "starting Redis"
    mkdir -p "$DATA/logs"
    printf 'requirepass %s\n' "$password" | redis-server - --daemonize yes --bind 127.0.0.1 --port "$PORT" \
      --save "" --appendonly no --logfile "$DATA/logs/redis.log" --dir "$DATA"
    for _ in $(seq 1 40); do [ "$(with_password ping || true)" = PONG ] && break; sleep 0.25; done
    ;;
esac
if [ "$(with_password ping || true)" != PONG ]; then
  echo "Redis on 127.0.0.1:$PORT does not accept the password in $ENV_FILE (REDIS_URL)." \
       "If it has another password, put that one in REDIS_URL; see $DATA/logs/redis.log." >&2
  exit 1
fi
