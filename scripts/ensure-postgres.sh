#!/usr/bin/env bash
# Makes sure PostgreSQL server binaries (initdb, pg_ctl, postgres) are on this
# machine: the server's embedded cluster and the test harness start them.
# Installs Debian's postgresql package when they are missing and we can.
set -euo pipefail

have() {
  for d in ${PG_BINDIR:-} $(pg_config --bindir 2>/dev/null || true) /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ] && return 0
  done
  return 1
}

have && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "PostgreSQL binaries not found: installing Debian's postgresql package" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  have && exit 0
fi
echo "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found." >&2
echo "Install PostgreSQL 13 or newer (Debian: apt-get install postgresql), or set PG_BINDIR," >&2
echo "or point the tests at a server with DATABASE_URL." >&2
exit 1
