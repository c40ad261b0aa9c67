#!/usr/bin/env bash
# A Docker engine and locally built images, for a machine with no image registry (CI here).
#
#   eval "$(scripts/container-engine.sh env)"   # then: make test-containers / make compose-smoke
#
# 1. Installs Debian's docker.io (and docker-compose when no compose is available) if missing,
#    and starts dockerd in the background if `docker info` does not answer (log: $DOCKERD_LOG).
# 2. Builds the images of deploy/images/ unless an image tagged with the hash of its recipe is
#    already there: a Debian base (mmdebstrap | docker import), then FROM it MariaDB, RabbitMQ
#    with its management plugin, and Debian's Python for the project's own Dockerfile.
# 3. Prints `export VAR=value` lines for the caller: the image variables that docker-compose.yml
#    and tests/support/infrastructure.py read (their defaults are the official registry images),
#    and the testcontainers settings an engine without a registry needs.
#
# Progress goes to stderr; stdout carries only the export lines. Safe to run again and again:
# with the images cached it takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGES_DIR=deploy/images
REPOSITORY=payout-sandbox-local  # never mysql:... or rabbitmq:...: these are not those images
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
LOCK_FILE=/tmp/payout-sandbox-container-engine.lock

log() { echo "[container-engine] $*" >&2; }
fail() { log "ERROR: $*"; exit 1; }

apt_install() {
  log "apt-get install $*"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "$@" >&2 || {
    apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "$@" >&2
  }
}

ensure_engine() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
    missing+=(docker-compose)
  fi
  if ((${#missing[@]})); then apt_install "${missing[@]}"; fi

  docker info >/dev/null 2>&1 && return
  if ! pgrep -x dockerd >/dev/null; then
    log "starting dockerd (log: $DOCKERD_LOG)"
    # setsid: the daemon outlives this script and the process group of whoever called it;
    # 9>&-: it must not inherit (and hold forever) the lock taken in main.
    setsid dockerd --storage-driver overlay2 >>"$DOCKERD_LOG" 2>&1 </dev/null 9>&- &
  fi
  local deadline=$((SECONDS + 60))
  until docker info >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "dockerd did not answer within 60 s; see $DOCKERD_LOG"
    sleep 1
  done
  log "docker engine ready"
}

# The Debian repositories apt uses on this machine (mirror, bookworm, -updates, -security), as
# sources.list lines for mmdebstrap: the image fetches from wherever the host is allowed to.
debian_sources() {
  local lines
  lines=$(apt_repositories)
  if [[ -z $lines ]]; then  # no package lists yet (a fresh machine): fetch them once
    apt-get update -q >&2
    lines=$(apt_repositories)
  fi
  echo "${lines:-deb http://deb.debian.org/debian bookworm main}"
}

apt_repositories() {
  apt-get indextargets --format '$(REPO_URI) $(CODENAME) $(COMPONENT)' \
    'Identifier: Packages' 'Origin: Debian' 2>/dev/null |
    awk '$2 ~ /^bookworm(-updates|-security)?$/ && $3 == "main" {print "deb " $1 " " $2 " main"}' |
    sort -u
}

# Extra certificate authorities the host trusts (a TLS-intercepting egress proxy, say): the base
# image trusts them too, or pip could not reach PyPI from a build.
extra_cas() { find /usr/local/share/ca-certificates -name '*.crt' 2>/dev/null | sort; }

hash_of() {  # hash_of <text> <files...>: the first 12 hex digits of a SHA-256 over all of them
  local text=$1; shift
  { echo "$text"; for file in "$@"; do echo "== $file"; cat "$file"; done; } |
    sha256sum | cut -c1-12
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

run_logged() {  # run_logged <tag> <build command...>: output to a log, its tail on failure
  local tag=$1 started=$SECONDS log_file
  shift
  log_file="/tmp/payout-sandbox-build-${tag//[\/:]/_}.log"
  if ! "$@" >"$log_file" 2>&1; then
    tail -n 40 "$log_file" >&2
    fail "building $tag failed; the whole output is in $log_file"
  fi
  log "built $tag in $((SECONDS - started)) s"
  # Older builds of the same image (another hash) only take disk space now.
  docker image ls --format '{{.Repository}}:{{.Tag}}' "${tag%:*}" | grep -vxF "$tag" |
    xargs -r docker image rm >/dev/null 2>&1 || true
}

build_base() {  # prints the tag of the Debian base image
  local sources cas recipe tag
  sources=$(debian_sources)
  mapfile -t cas < <(extra_cas)
  recipe=("$IMAGES_DIR/debian-base/build.sh" ${cas[@]+"${cas[@]}"})
  tag="$REPOSITORY/debian:bookworm-$(hash_of "$sources" "${recipe[@]}")"
  if ! have_image "$tag"; then
    command -v mmdebstrap >/dev/null || apt_install mmdebstrap
    log "building $tag (mmdebstrap, about 30 s)"
    run_logged "$tag" "$IMAGES_DIR/debian-base/build.sh" "$tag" "$sources" ${cas[@]+"${cas[@]}"}
  fi
  echo "$tag"
}

build_image() {  # build_image <dir under deploy/images> <tag prefix> <base tag>: prints the tag
  local dir="$IMAGES_DIR/$1" prefix=$2 base=$3 tag files
  mapfile -t files < <(find "$dir" -type f | sort)
  # The base's tag holds its own hash, so a new base means new service images.
  tag="$REPOSITORY/$prefix-$(hash_of "$base" "${files[@]}")"
  if ! have_image "$tag"; then
    log "building $tag"
    run_logged "$tag" docker build --build-arg "BASE_IMAGE=$base" --tag "$tag" "$dir"
  fi
  echo "$tag"
}

main() {
  case "${1:-env}" in
    env) ;;
    *) echo "usage: $0 [env]   (prints export lines; see the top of this file)" >&2; exit 2 ;;
  esac
  # One build at a time on this machine (two CI runs could otherwise both build the base).
  exec 9>"$LOCK_FILE"
  flock 9

  ensure_engine
  local base mysql rabbitmq python
  base=$(build_base)
  mysql=$(build_image mariadb mariadb:10.11 "$base")
  rabbitmq=$(build_image rabbitmq rabbitmq:3.10-management "$base")
  python=$(build_image python python:3.11 "$base")
  log "images ready"

  cat <<EOF
export PAYOUTS_MYSQL_IMAGE=$mysql
export PAYOUTS_RABBITMQ_IMAGE=$rabbitmq
export PAYOUTS_BASE_IMAGE=$python
# No registry: testcontainers must not pull its Ryuk reaper (the fixtures stop their containers).
export TESTCONTAINERS_RYUK_DISABLED=true
export TESTCONTAINERS_CONNECTION_MODE=docker_host
EOF
}

main "$@"
