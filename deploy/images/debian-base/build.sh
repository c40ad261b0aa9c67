#!/usr/bin/env bash
# The local Debian base image: a minbase bookworm root filesystem from the machine's own Debian
# mirror (mmdebstrap), imported as an image. Run by scripts/container-engine.sh, which hashes this
# file, the sources and the certificates into the tag so that a change here means a new image.
#
#   build.sh TAG SOURCES [CA.crt ...]
#     SOURCES: sources.list lines, one per line ("deb http://deb.debian.org/debian bookworm main")
#     CA.crt:  extra certificate authorities the image must trust (the host's, e.g. an egress
#              proxy's), so that apt over https and pip can reach their mirrors from a build
set -euo pipefail
tag=$1 sources=$2
shift 2

mapfile -t mirrors <<<"$sources"
hooks=(
  # What Debian's own container images do: apt never starts services inside a build.
  --customize-hook='printf "#!/bin/sh\nexit 101\n" >"$1/usr/sbin/policy-rc.d"; chmod 755 "$1/usr/sbin/policy-rc.d"'
)
if (($#)); then
  hooks+=(
    --customize-hook="copy-in $* /usr/local/share/ca-certificates/"
    --customize-hook='chroot "$1" update-ca-certificates >/dev/null 2>&1'
  )
fi
hooks+=(
  # Smaller image: no package lists (every Dockerfile runs apt-get update first) or caches.
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin'
)

# If mmdebstrap fails half-way, docker import may still have tagged what it got: remove it, or
# the cache would take a broken base for a built one.
if ! mmdebstrap --quiet --variant=minbase --include=ca-certificates \
  --aptopt='APT::Install-Recommends "false"' \
  "${hooks[@]}" bookworm - "${mirrors[@]}" |
  docker import --change 'CMD ["/bin/bash"]' --message "mmdebstrap minbase bookworm" - "$tag"; then
  docker image rm --force "$tag" >/dev/null 2>&1 || true
  exit 1
fi
