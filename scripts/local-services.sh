#!/usr/bin/env bash
# Make sure the local MariaDB and RabbitMQ (with its management UI) answer, and that the
# databases exist. Used by `make run` and `.ci/run`; safe to run again and again.
set -euo pipefail

log() { echo "[local-services] $*"; }

wait_for() {  # wait_for <seconds> <command...>
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then log "timed out waiting for: $*"; return 1; fi
    sleep 1
  done
}

mysql_tcp() { mysql --protocol=TCP -h127.0.0.1 -P3306 -uroot "$@"; }

if ! mysqladmin --protocol=TCP -h127.0.0.1 -uroot ping >/dev/null 2>&1; then
  if ! mysqladmin ping >/dev/null 2>&1; then
    log "starting MariaDB"
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
    # By its pid file (my.cnf's pid-file): by its program alone, a container's mariadbd on this
    # host counts as "already running".
    start-stop-daemon --start --oknodo --background --pidfile /run/mysqld/mysqld.pid \
      --exec /usr/sbin/mariadbd
    wait_for 60 mysqladmin ping
  fi
  if ! mysql_tcp -e "SELECT 1" >/dev/null 2>&1; then
    # Fresh Debian MariaDB: root is socket-only (ERROR 1698 over TCP). Keep socket login, add TCP.
    log "allowing root over TCP with an empty password"
    mysql -uroot -e "ALTER USER root@localhost IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('')"
  fi
  wait_for 30 mysql_tcp -e "SELECT 1"
fi
for database in payouts payouts_test; do
  mysql_tcp -e "CREATE DATABASE IF NOT EXISTS \`$database\` CHARACTER SET utf8mb4"
done
log "MariaDB ready"

if ! rabbitmqctl -q status >/dev/null 2>&1; then
  log "starting RabbitMQ"
  rabbitmq-server -detached
  wait_for 120 rabbitmqctl -q status
fi
rabbitmqctl -q await_startup >/dev/null 2>&1 || true
rabbitmq-plugins -q enable rabbitmq_management >/dev/null
wait_for 60 curl -fsS -u guest:guest http://127.0.0.1:15672/api/overview
log "RabbitMQ ready (management UI: http://127.0.0.1:15672, guest/guest)"
