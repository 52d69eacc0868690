#!/bin/sh
# The platform image's entry point: the first argument names the role (the Procfile's processes).
#   web         Daphne (HTTP + WebSocket) on $BIND:$PORT (default 0.0.0.0:8000)
#   worker      an RQ worker running evaluations (needs the Docker engine)
#   sessions    the session host (needs the Docker engine)
#   reconciler  the recurring repairs (python -m crucible.cron)
#   migrate     apply database migrations, then exit (run once per upgrade, before the rest)
#   manage      any manage.py command: `manage ensure_operator`, `manage createsuperuser` …
# Anything else is run as given (`sh`, `python -c …`).
set -eu
role="${1:-web}"
[ "$#" -gt 0 ] && shift
cd /app
case "$role" in
  web)        exec daphne -b "${BIND:-0.0.0.0}" -p "${PORT:-8000}" \
                --websocket_connect_timeout "${WEBSOCKET_HANDSHAKE_TIMEOUT_S:-30}" crucible.asgi:application "$@" ;;
  worker)     exec python manage.py crucible_worker --name "crucible-worker-$(hostname)-$$" "$@" ;;
  sessions)   exec python manage.py crucible_sessions --name "crucible-sessions-$(hostname)-$$" "$@" ;;
  reconciler) exec python -m crucible.cron "$@" ;;
  migrate)    exec python manage.py migrate --noinput "$@" ;;
  manage)     exec python manage.py "$@" ;;
  *)          exec "$role" "$@" ;;
esac
