#!/usr/bin/env bash
# What `make image` / `make image-test` need on a Debian 12 machine without a Docker engine (CI
# runs it; needs root): podman with runc, buildah, debootstrap for the base image, podman-compose
# for the compose file. Writes /etc/containers/containers.conf only when there is none: crun fails
# on setrlimit and on the hybrid cgroups of these machines; runc with cgroupfs and these limits
# works. Idempotent and quiet when all is there.
set -euo pipefail

want=(podman buildah debootstrap runc podman-compose)
missing=()
for p in "${want[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	[ "$(id -u)" -eq 0 ] || { echo "container-deps: not root; install them: apt-get install ${missing[*]}" >&2; exit 1; }
	echo "container-deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq "${missing[@]}" >/dev/null
fi
conf=/etc/containers/containers.conf
if [ ! -e "$conf" ]; then
	echo "container-deps: writing $conf (runc, cgroupfs, default ulimits)"
	mkdir -p /etc/containers
	cat >"$conf" <<'CONF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
fi
