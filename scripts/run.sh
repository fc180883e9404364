#!/usr/bin/env bash
# `make run`: the server on its embedded PostgreSQL cluster with the logging
# push provider, then (embedded cluster only) idempotent demo credentials
# printed to this terminal by mfactl. The server's own log never holds them.
set -euo pipefail
cd "$(dirname "$0")/.."

export DATA_DIR=${DATA_DIR:-./.data}
export LISTEN_ADDR=${LISTEN_ADDR:-127.0.0.1:8080}
url="http://${LISTEN_ADDR}"

if [ -n "${DATABASE_URL:-}" ]; then
  echo "DATABASE_URL is set: running the server without the embedded cluster or demo credentials." >&2
  exec ./bin/server
fi

# 0711: others may pass through to the cluster directory (owned by the
# postgres user when we run as root) but not list it; every secret file in it
# is 0600.
mkdir -p "$DATA_DIR"
chmod 711 "$DATA_DIR"
token_file="$DATA_DIR/bootstrap-admin-token"
if [ ! -s "$token_file" ]; then
  (umask 077; head -c 32 /dev/urandom | base64 | tr -d '\n/+=' > "$token_file")
fi
BOOTSTRAP_ADMIN_TOKEN=$(cat "$token_file")
export BOOTSTRAP_ADMIN_TOKEN

./bin/server &
server=$!
stop() { kill -TERM "$server" 2>/dev/null || true; wait "$server" || true; exit 0; }
trap stop INT TERM

# Wait for readiness while watching that the server is still alive.
for _ in $(seq 1 600); do
  if ! kill -0 "$server" 2>/dev/null; then
    wait "$server"; exit $?
  fi
  if ./bin/mfactl --url "$url" status >/dev/null 2>&1; then
    break
  fi
  sleep 0.1
done

MFACTL_TOKEN="$BOOTSTRAP_ADMIN_TOKEN" ./bin/mfactl --url "$url" demo setup --state "$DATA_DIR/demo.json" --wait 10s || {
  echo "make run: demo setup failed (see above); the server keeps running." >&2
}
wait "$server"
