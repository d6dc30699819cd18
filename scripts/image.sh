#!/usr/bin/env bash
# `make image`: the node and master images, with podman or docker (scripts/container-runtime.sh),
# packed from the dist/ that `make dist` built (the Dockerfile's node-dist and master-dist
# targets: what CI tests). No image registry is needed: the base image is made here, once,
# with debootstrap from the Debian mirror apt already uses and imported as
# localhost/debian:bookworm-slim (kept in the runtime's image store: a second run reuses it).
#
#   image.sh            base image if missing, then ngx-rtmp-mesh-node and ngx-rtmp-mesh-master
#   image.sh base       the base image only
#
# IMAGE_BASE=<image> uses that base instead (e.g. debian:bookworm-slim on a machine that pulls).
# IMAGE_TAG (default latest) tags both images.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
rt=$(bash "$top/scripts/container-runtime.sh")
base=${IMAGE_BASE:-localhost/debian:bookworm-slim}
tag=${IMAGE_TAG:-latest}
say() { echo "image: $*"; }

has_image() { "$rt" image inspect "$1" >/dev/null 2>&1; }

mirror() { # the Debian mirror of apt's own deb entry for bookworm
	local m
	m=$(grep -rhsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1 || true)
	[ -n "$m" ] || m=$(grep -hsE '^deb +(\[[^]]*\] +)?https?://' /etc/apt/sources.list | grep -v security | awk '{for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' || true)
	echo "${m:-http://deb.debian.org/debian}"
}

make_base() {
	has_image "$base" && return 0
	[ "$base" = localhost/debian:bookworm-slim ] || { echo "image: base image $base is not there (pull it, or unset IMAGE_BASE)" >&2; exit 1; }
	[ "$(id -u)" -eq 0 ] || { echo "image: making the base image needs root (debootstrap)" >&2; exit 1; }
	command -v debootstrap >/dev/null || { echo "image: debootstrap is needed (apt-get install debootstrap)" >&2; exit 1; }
	local root m t0=$SECONDS
	root=$(mktemp -d /var/tmp/mesh-rootfs.XXXXXX)
	trap 'rm -rf "$root"' EXIT
	m=$(mirror)
	say "making $base: debootstrap --variant=minbase bookworm from $m"
	debootstrap --variant=minbase bookworm "$root" "$m" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
	rm -f "$root.log"
	# As Debian's own slim images: no docs, man pages or locales, now or from later installs.
	cat >"$root/etc/dpkg/dpkg.cfg.d/slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
CFG
	cat >"$root/etc/apt/apt.conf.d/slim" <<'CFG'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
CFG
	find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
	rm -rf "$root"/usr/share/{man,info,locale,lintian}/* "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
	echo "deb $m bookworm main" >"$root/etc/apt/sources.list"
	q=(); [ "$rt" = podman ] && q=(--quiet)
	tar -C "$root" -c . | "$rt" import "${q[@]}" - "$base" >/dev/null
	rm -rf "$root"
	trap - EXIT
	say "$base made in $((SECONDS - t0)) s"
}

make_base
[ "${1:-}" = base ] && exit 0

for f in sbin/nginx sbin/mesh-master modules/ngx_rtmp_mesh_module.so modules/ngx_rtmp_module.so html/player; do
	[ -e "$top/dist/$f" ] || { echo "image: dist/$f is missing (make dist)" >&2; exit 1; }
done
fmt=()
[ "$rt" = podman ] && fmt=(--format docker)    # OCI images drop HEALTHCHECK
for what in node master; do
	t0=$SECONDS
	log=$(mktemp /tmp/mesh-image-build.XXXXXX)
	if ! "$rt" build "${fmt[@]}" --build-arg BASE="$base" --target "$what-dist" -t "ngx-rtmp-mesh-$what:$tag" \
		-f "$top/Dockerfile" "$top" >"$log" 2>&1; then
		tail -30 "$log" >&2
		echo "image: building ngx-rtmp-mesh-$what failed (the whole log: $log)" >&2
		exit 1
	fi
	rm -f "$log"
	size=$("$rt" image inspect --format '{{.Size}}' "ngx-rtmp-mesh-$what:$tag")
	say "ngx-rtmp-mesh-$what:$tag built in $((SECONDS - t0)) s, $((size / 1000000)) MB"
done
