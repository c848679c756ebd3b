#!/usr/bin/env bash
# A PostgreSQL server on loopback for the store tests, idempotently: install Debian's package when
# missing (as root), initdb into a folder once, start it when not running, create the test database.
# Prints the SQLAlchemy URL on stdout (everything else goes to stderr):
#   export TAILSCOPE_TEST_PG_URL="$(.ci/postgres.sh)"
set -euo pipefail
PGDIR="${TAILSCOPE_PG_DIR:-/tmp/tailscope-pg}"
PORT="${TAILSCOPE_PG_PORT:-54329}"
PASSWORD="tailscope-test"
DB="tailscope_test"

pgbin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
if [ -z "$(pgbin)" ]; then
    if [ "$(id -u)" != 0 ]; then echo "PostgreSQL is not installed: apt-get install postgresql" >&2; exit 1; fi
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
fi
BIN="$(pgbin)"

# the server refuses to run as root: run it as the postgres user then
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi

if [ ! -s "$PGDIR/data/PG_VERSION" ]; then
    mkdir -p "$PGDIR"
    [ "$(id -u)" = 0 ] && chown postgres "$PGDIR"
    pwfile="$PGDIR/.pw"
    as_pg bash -c "umask 077; echo '$PASSWORD' > '$pwfile'"
    as_pg "$BIN/initdb" -D "$PGDIR/data" -U postgres --auth=scram-sha-256 --pwfile="$pwfile" >&2
    as_pg rm -f "$pwfile"
fi
if ! as_pg "$BIN/pg_ctl" -D "$PGDIR/data" status >/dev/null 2>&1; then
    as_pg "$BIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $PGDIR" start >&2
fi
export PGPASSWORD="$PASSWORD"
if ! psql -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1; then
    psql -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -qc "CREATE DATABASE $DB" >&2
fi
echo "postgresql://postgres:$PASSWORD@127.0.0.1:$PORT/$DB"
