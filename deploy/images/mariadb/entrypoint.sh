#!/bin/bash
# First boot: initialize the datadir, then create the root password, a database and a user from
# the environment, the way the official images do. Either prefix works, MARIADB_ first:
#   MARIADB_ROOT_PASSWORD / MYSQL_ROOT_PASSWORD (or MARIADB_ALLOW_EMPTY_ROOT_PASSWORD /
#   MYSQL_ALLOW_EMPTY_PASSWORD), MARIADB_DATABASE / MYSQL_DATABASE, MARIADB_USER / MYSQL_USER,
#   MARIADB_PASSWORD / MYSQL_PASSWORD.
# Then, every boot: the server in the foreground on 0.0.0.0:3306 (extra arguments go to it).
set -euo pipefail

DATADIR=/var/lib/mysql
INIT_SOCKET=/run/mysqld/init.sock

setting() {  # setting NAME: $MARIADB_NAME, else $MYSQL_NAME, else empty
  local mariadb="MARIADB_$1" mysql="MYSQL_$1"
  printf '%s' "${!mariadb:-${!mysql:-}}"
}

literal() {  # a single-quoted SQL string
  local value=${1//\\/\\\\}
  printf "'%s'" "${value//\'/\\\'}"
}

initialize() {
  local root_password database user password
  root_password=$(setting ROOT_PASSWORD)
  database=$(setting DATABASE)
  user=$(setting USER)
  password=$(setting PASSWORD)
  if [[ -z $root_password && -z ${MARIADB_ALLOW_EMPTY_ROOT_PASSWORD:-${MYSQL_ALLOW_EMPTY_PASSWORD:-}} ]]; then
    echo "entrypoint: set MARIADB_ROOT_PASSWORD or MYSQL_ROOT_PASSWORD" >&2
    exit 1
  fi
  if [[ $database == *'`'* ]]; then
    echo "entrypoint: a database name with a backtick is not supported" >&2
    exit 1
  fi

  echo "entrypoint: initializing $DATADIR" >&2
  # Only root@localhost (and mysql@localhost), both through the unix socket, no passwords.
  mariadb-install-db --user=mysql --datadir="$DATADIR" --skip-test-db >/dev/null
  # A first server on a socket only: nobody can connect over TCP before the users exist (the
  # official images do the same, so readiness checks that wait for the second "ready for
  # connections", like testcontainers' MySqlContainer, work here too).
  mariadbd --user=mysql --datadir="$DATADIR" --skip-networking --socket="$INIT_SOCKET" &
  local pid=$! deadline=$((SECONDS + 60))
  until mariadb-admin --socket="$INIT_SOCKET" -uroot ping --silent >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { echo "entrypoint: init server did not start" >&2; exit 1; }
    sleep 0.2
  done
  {
    echo "CREATE USER 'root'@'%' IDENTIFIED BY $(literal "$root_password");"
    echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
    # Inside the container root keeps its socket login (`docker exec ... mariadb`).
    echo "ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket" \
      "OR mysql_native_password USING PASSWORD($(literal "$root_password"));"
    if [[ -n $database ]]; then
      echo "CREATE DATABASE IF NOT EXISTS \`$database\` CHARACTER SET utf8mb4;"
    fi
    if [[ -n $user && $user != root ]]; then
      echo "CREATE USER $(literal "$user")@'%' IDENTIFIED BY $(literal "$password");"
      if [[ -n $database ]]; then
        echo "GRANT ALL ON \`$database\`.* TO $(literal "$user")@'%';"
      fi
    fi
  } | mariadb --socket="$INIT_SOCKET" -uroot
  kill "$pid"  # SIGTERM: a clean shutdown
  wait "$pid" || true
  echo "entrypoint: initialized" >&2
}

mkdir -p /run/mysqld
chown mysql:mysql "$DATADIR" /run/mysqld
if [[ ! -d $DATADIR/mysql ]]; then
  initialize
fi
# Debian's configuration binds to 127.0.0.1; in a container the clients are elsewhere.
exec mariadbd --user=mysql --datadir="$DATADIR" --bind-address=0.0.0.0 --port=3306 \
  --skip-name-resolve "$@"
