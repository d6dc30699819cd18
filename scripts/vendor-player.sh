#!/usr/bin/env bash
# Vendor hls.js and dash.js from the npm registry for the operators' player page: the
# tarballs are fetched with `npm pack` into nginx-src/npm/ (git-ignored), checked against
# player/SHA256SUMS, and their minified builds (and hls.js's worker) copied into
# dist/html/player/ with our page, its script and its stylesheet; the headers nginx serves them
# with (player/headers.conf) go to dist/conf/player_headers.conf.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cache=$top/nginx-src/npm
out=$top/dist/html/player
mkdir -p "$cache" "$out"

if ! (cd "$cache" && sha256sum --quiet -c "$top/player/SHA256SUMS" >/dev/null 2>&1); then
	if ! command -v npm >/dev/null; then
		[ "$(id -u)" -eq 0 ] || { echo "vendor-player: npm is needed (apt-get install npm)" >&2; exit 1; }
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
	fi
	(cd "$cache" && npm pack --silent hls.js@1.7.4 dashjs@5.2.1 >/dev/null)
	(cd "$cache" && sha256sum --quiet -c "$top/player/SHA256SUMS") || { echo "vendor-player: checksum mismatch" >&2; exit 1; }
fi

extract() { # tarball path-in-package destination
	local tmp
	tmp=$(mktemp -d)
	tar -xzf "$cache/$1" -C "$tmp" "package/$2"
	install -C -m 644 "$tmp/package/$2" "$3"
	rm -rf "$tmp"
}
[ -f "$out/hls.min.js" ] || extract hls.js-1.7.4.tgz dist/hls.min.js "$out/hls.min.js"
[ -f "$out/hls.worker.js" ] || extract hls.js-1.7.4.tgz dist/hls.worker.js "$out/hls.worker.js"
[ -f "$out/dash.all.min.js" ] || extract dashjs-5.2.1.tgz dist/modern/umd/dash.all.min.js "$out/dash.all.min.js"
for f in index.html player.js player.css; do install -C -m 644 "$top/player/$f" "$out/$f"; done
mkdir -p "$top/dist/conf"
install -C -m 644 "$top/player/headers.conf" "$top/dist/conf/player_headers.conf"
