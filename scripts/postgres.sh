#!/usr/bin/env bash
# Throwaway PostgreSQL server for tests, listening on 127.0.0.1 only.
#
#   scripts/postgres.sh start    DIR PORT        -> prints the SQLAlchemy URL
#   scripts/postgres.sh createdb DIR PORT NAME   -> new database owned by the
#                                                   test user; prints its URL
#   scripts/postgres.sh stop     DIR [PORT]
#
# DIR is created if needed and holds the cluster (DIR/data), the unix socket
# (DIR/run) and the server log (DIR/postgres.log). Its parent directories must
# be traversable by the `postgres` OS user (e.g. somewhere under /tmp), since
# PostgreSQL refuses to run as root. Settings favour speed over durability.
# Everything except the URL goes to stderr.
set -euo pipefail

usage() { echo "usage: $0 start|stop|createdb DIR PORT [NAME]" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1
dir=$2
port=${3:-}
[ -n "$port" ] || [ "$cmd" = stop ] || usage

DB_USER=${DOCKYARD_PG_USER:-dockyard}
DB_PASSWORD=${DOCKYARD_PG_PASSWORD:-dockyard}
DB_NAME=dockyard

if [ -n "${PG_BIN:-}" ]; then
  pgbin=$PG_BIN
elif [ -x /usr/lib/postgresql/15/bin/postgres ]; then
  pgbin=/usr/lib/postgresql/15/bin
else
  pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
fi
[ -x "$pgbin/postgres" ] || { echo "postgres.sh: no PostgreSQL server binaries found" >&2; exit 1; }

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
data=$dir/data
sock=$dir/run

# Run as the postgres OS user when we are root; as ourselves otherwise.
if [ "$(id -u)" -eq 0 ]; then
  as_pg() { runuser -u postgres -- "$@"; }
  chown postgres: "$dir"
else
  as_pg() { "$@"; }
fi

running() { [ -f "$data/postmaster.pid" ] && as_pg "$pgbin/pg_ctl" -D "$data" status >/dev/null 2>&1; }
psql_admin() {
  "$pgbin/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U postgres -d postgres "$@"
}
url() { echo "postgresql+psycopg://$DB_USER:$DB_PASSWORD@127.0.0.1:$port/$1"; }

create_db() { # NAME
  psql_admin -tA -c "SELECT 1 FROM pg_database WHERE datname = '$1'" | grep -q 1 ||
    psql_admin -c "CREATE DATABASE \"$1\" OWNER $DB_USER"
}

case $cmd in
start)
  if ! as_pg test -w "$dir"; then
    echo "postgres.sh: $dir is not writable by the postgres user (check its parents' permissions)" >&2
    exit 1
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    as_pg "$pgbin/initdb" -D "$data" -U postgres -E UTF8 --locale=C.UTF-8 \
      --auth-local=trust --auth-host=scram-sha-256 >"$dir/initdb.log" 2>&1 ||
      { cat "$dir/initdb.log" >&2; exit 1; }
    as_pg mkdir -p "$sock"
    cat >>"$data/postgresql.conf" <<EOF
# added by scripts/postgres.sh (throwaway test server)
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sock'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
  fi
  if running; then
    current=$(sed -n 4p "$data/postmaster.pid")
    if [ "$current" != "$port" ]; then
      echo "postgres.sh: server in $dir already runs on port $current" >&2
      exit 1
    fi
  else
    as_pg "$pgbin/pg_ctl" -D "$data" -l "$dir/postgres.log" -o "-p $port" -w -t 60 start >/dev/null ||
      { tail -n 30 "$dir/postgres.log" >&2; exit 1; }
  fi
  psql_admin -tA -c "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'" | grep -q 1 ||
    psql_admin -c "CREATE ROLE $DB_USER LOGIN CREATEDB PASSWORD '$DB_PASSWORD'"
  create_db "$DB_NAME"
  url "$DB_NAME"
  ;;
createdb)
  name=${4:?database name required}
  running || { echo "postgres.sh: no server running in $dir" >&2; exit 1; }
  create_db "$name"
  url "$name"
  ;;
stop)
  if running; then
    as_pg "$pgbin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
  fi
  ;;
*) usage ;;
esac
