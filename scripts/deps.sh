#!/usr/bin/env bash
# Install the Debian packages that building and testing need. Idempotent and quiet when
# everything is already there. Needs root (apt-get) only when something is missing.
set -euo pipefail

want=(build-essential pkg-config libpcre2-dev libssl-dev zlib1g-dev libclang-dev dpkg-dev xz-utils
      ffmpeg perl curl ca-certificates openssl python3 procps iproute2)
# openssl: scripts/mesh-tls.sh makes the private CA (make mesh, t/master_tls.t, t/run_mesh.t, t/image.t).
# Perl tests use only core modules (Test::More, Digest::SHA, JSON::PP, HTTP::Tiny).

missing=()
for p in "${want[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing packages and not root; install them: apt-get install ${missing[*]}" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
