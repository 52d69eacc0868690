#!/bin/sh
# Write the secret files compose.yaml reads, once: an existing file is never overwritten (rotating a
# password is a deliberate act: see README, "Deploying").
#   deploy/secrets/secret_key         Django's SECRET_KEY
#   deploy/secrets/postgres_password  the `crucible` PostgreSQL role's password
#   deploy/secrets/redis_password     Redis's requirepass
#   deploy/secrets/database_url       postgres://crucible:<password>@postgres:5432/crucible
#   deploy/secrets/redis_url          redis://:<password>@redis:6379/0
# The folder is 0700 (only root on the host reaches it); the files are 0444 because Compose bind-mounts
# them into containers whose users (crucible uid 10100, postgres uid 999, redis uid 999) must read them.
# An argument names another folder (tests write one in a temporary directory).
set -eu
dir="${1:-$(cd "$(dirname "$0")" && pwd)/secrets}"
mkdir -p "$dir"
chmod 700 "$dir"
random() { python3 -c 'import secrets; print(secrets.token_urlsafe(48))'; }
write() {  # write NAME VALUE: only when NAME does not exist yet
  if [ -e "$dir/$1" ]; then echo "kept    $dir/$1"; return; fi
  (umask 077; printf '%s\n' "$2" > "$dir/$1")
  chmod 444 "$dir/$1"
  echo "created $dir/$1"
}
write secret_key "$(random)"
write postgres_password "$(random)"
write redis_password "$(random)"
write database_url "postgres://crucible:$(cat "$dir/postgres_password")@postgres:5432/crucible"
write redis_url "redis://:$(cat "$dir/redis_password")@redis:6379/0"
