#!/usr/bin/env bash
# Entrypoint of the PostgreSQL test image (images/testing/debian-image.sh),
# written here to the official postgres image's contract
# (images/testing/README.md lists it):
# - POSTGRES_PASSWORD, POSTGRES_USER (default postgres), POSTGRES_DB
#   (default the user) and POSTGRES_INITDB_ARGS, each also as <NAME>_FILE,
#   read as root before the switch to the postgres user; both forms set is
#   an error;
# - on an empty PGDATA only: initdb, `host all all all <password_encryption>`
#   in pg_hba.conf (scram-sha-256; POSTGRES_HOST_AUTH_METHOD overrides), the
#   database, then /docker-entrypoint-initdb.d/* (*.sh run or sourced,
#   *.sql, *.sql.gz, *.sql.xz, *.sql.zst fed to psql) on a socket-only
#   temporary server;
# - the server runs as postgres; `-…` as first argument means `postgres -…`;
#   any other command runs as given.
set -Eeo pipefail

# NAME [DEFAULT]: exports NAME from $NAME or from the file $NAME_FILE.
env_or_file() {
  local name=$1 file_name="$1_FILE" value=${2:-}
  if [ -n "${!name:-}" ] && [ -n "${!file_name:-}" ]; then
    echo "error: both $name and $file_name are set (but are exclusive)" >&2
    exit 1
  fi
  if [ -n "${!name:-}" ]; then
    value=${!name}
  elif [ -n "${!file_name:-}" ]; then
    value=$(<"${!file_name}")
  fi
  export "$name=$value"
  unset "$file_name"
}

# Options after which postgres prints something and exits.
only_prints() {
  local arg
  for arg; do
    case "$arg" in
      '-?' | --help | --describe-config | -V | --version) return 0 ;;
    esac
  done
  return 1
}

# DB PSQL-ARGS…: psql on the temporary server's socket, as the superuser.
run_sql() {
  local db=$1
  shift
  PGHOST='' PGHOSTADDR='' psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" \
    --no-password --no-psqlrc --dbname "$db" "$@"
}

init_files() {
  local f
  for f; do
    [ -e "$f" ] || continue # an empty directory
    case "$f" in
      *.sh)
        if [ -x "$f" ]; then
          echo "$0: running $f"
          "$f"
        else
          echo "$0: sourcing $f"
          # shellcheck disable=SC1090
          . "$f"
        fi
        ;;
      *.sql) echo "$0: running $f" && run_sql "$POSTGRES_DB" -f "$f" ;;
      *.sql.gz) echo "$0: running $f" && gunzip -c "$f" | run_sql "$POSTGRES_DB" ;;
      *.sql.xz) echo "$0: running $f" && xzcat "$f" | run_sql "$POSTGRES_DB" ;;
      *.sql.zst) echo "$0: running $f" && zstd -dc "$f" | run_sql "$POSTGRES_DB" ;;
      *) echo "$0: ignoring $f" ;;
    esac
  done
}

initialize() {
  if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
    cat >&2 <<'EOF'
Error: Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD to a non-empty value for the
       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".

       You may also use "POSTGRES_HOST_AUTH_METHOD=trust" to allow all
       connections without a password. This is *not* recommended.
EOF
    exit 1
  fi
  # Fails early, before initdb, when the scripts cannot be read.
  ls /docker-entrypoint-initdb.d/ >/dev/null

  local initdb_args=()
  eval "initdb_args=($POSTGRES_INITDB_ARGS)"
  if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
    initdb_args+=(--waldir "$POSTGRES_INITDB_WALDIR")
  fi
  initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") "${initdb_args[@]}"

  # Connections over the network: a password, hashed as the server stores
  # it (scram-sha-256 by default), unless the environment says otherwise.
  local server_args=("$@")
  [ "${server_args[0]:-}" = postgres ] && server_args=("${server_args[@]:1}")
  local auth
  auth=$(postgres -C password_encryption "${server_args[@]}")
  : "${POSTGRES_HOST_AUTH_METHOD:=$auth}"
  printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"

  export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
  NOTIFY_SOCKET='' PGUSER="${PGUSER:-$POSTGRES_USER}" pg_ctl -D "$PGDATA" \
    -o "$(printf '%q ' "${server_args[@]}" -c listen_addresses='' -p "${PGPORT:-5432}")" -w start

  local exists
  exists=$(run_sql postgres --set db="$POSTGRES_DB" --tuples-only \
    <<<"SELECT 1 FROM pg_database WHERE datname = :'db' ;")
  if [ -z "$exists" ]; then
    run_sql postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db" ;'
  fi
  init_files /docker-entrypoint-initdb.d/*

  PGUSER="${PGUSER:-$POSTGRES_USER}" pg_ctl -D "$PGDATA" -m fast -w stop
  unset PGPASSWORD
  printf '\nPostgreSQL init process complete; ready for start up.\n\n'
}

if [ "${1:0:1}" = - ]; then
  set -- postgres "$@"
fi

if [ "$1" = postgres ] && ! only_prints "$@"; then
  env_or_file POSTGRES_PASSWORD
  env_or_file POSTGRES_USER postgres
  env_or_file POSTGRES_DB "$POSTGRES_USER"
  env_or_file POSTGRES_INITDB_ARGS
  : "${POSTGRES_HOST_AUTH_METHOD:=}"

  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA" || :
  mkdir -p /var/run/postgresql || :
  chmod 3775 /var/run/postgresql || :
  if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
    mkdir -p "$POSTGRES_INITDB_WALDIR"
    [ "$(id -u)" = 0 ] && find "$POSTGRES_INITDB_WALDIR" \! -user postgres -exec chown postgres '{}' +
    chmod 700 "$POSTGRES_INITDB_WALDIR"
  fi
  if [ "$(id -u)" = 0 ]; then
    find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres '{}' +
    # Again as postgres, with the secrets already read into the environment.
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
  fi

  if [ -s "$PGDATA/PG_VERSION" ]; then
    printf '\nPostgreSQL Database directory appears to contain a database; Skipping initialization\n\n'
  else
    initialize "$@"
  fi
fi

exec "$@"
