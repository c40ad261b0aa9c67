#!/bin/bash
# RABBITMQ_DEFAULT_USER / _PASS / _VHOST, as the official image and testcontainers pass them,
# become the default user and vhost of a fresh node; then the server runs in the foreground.
set -euo pipefail

if [[ -n ${RABBITMQ_DEFAULT_USER:-}${RABBITMQ_DEFAULT_PASS:-}${RABBITMQ_DEFAULT_VHOST:-} ]]; then
  {
    echo "default_user = ${RABBITMQ_DEFAULT_USER:-guest}"
    echo "default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}"
    echo "default_vhost = ${RABBITMQ_DEFAULT_VHOST:-/}"
    echo "default_permissions.configure = .*"
    echo "default_permissions.read = .*"
    echo "default_permissions.write = .*"
  } >/etc/rabbitmq/conf.d/10-default-user.conf
fi
exec /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
