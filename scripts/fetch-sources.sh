#!/usr/bin/env bash
# Fetch nginx 1.22.1 and nginx-rtmp-module 1.2.2 from Debian's source packages, check them
# against nginx-src/SHA256SUMS and unpack them under nginx-src/ (git-ignored).
# Adds a deb-src entry mirroring the system's deb entry when there is none.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
dir=$top/nginx-src
cd "$dir"

have_all() {
	sha256sum --quiet -c SHA256SUMS >/dev/null 2>&1
}

add_deb_src() {
	if grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; then
		return 1
	fi
	[ "$(id -u)" -eq 0 ] || { echo "fetch-sources: no deb-src entry and not root" >&2; exit 1; }
	echo "fetch-sources: adding a deb-src entry (/etc/apt/sources.list.d/ngx-rtmp-mesh-src.sources)"
	cat >/etc/apt/sources.list.d/ngx-rtmp-mesh-src.sources <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
}

if ! have_all; then
	add_deb_src || true
	apt-get update -qq
	# apt warns that it downloads unsandboxed as root: harmless here.
	# The rtmp package's .debian.tar.xz answers 404 on the mirror: only the orig tarballs
	# matter, and the checksum below decides.
	apt-get source --download-only -qq nginx libnginx-mod-rtmp >/dev/null 2>&1 || true
	sha256sum -c SHA256SUMS || { echo "fetch-sources: checksum mismatch" >&2; exit 1; }
fi

unpack() { # tarball dir
	[ -f "$2/.unpacked" ] && return 0
	rm -rf "$2.tmp" && mkdir -p "$2.tmp"
	tar -xf "$1" -C "$2.tmp" --strip-components=1
	rm -rf "$2" && mv "$2.tmp" "$2" && touch "$2/.unpacked"
}
unpack nginx_1.22.1.orig.tar.gz nginx-1.22.1
unpack libnginx-mod-rtmp_1.2.2+dfsg.orig.tar.xz nginx-rtmp-module
