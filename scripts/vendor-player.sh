#!/usr/bin/env bash
# Vendor hls.js and dash.js from the npm registry for the operators' player page: the
# tarballs are fetched with `npm pack` into nginx-src/npm/ (git-ignored), checked against
# player/SHA256SUMS, and their minified builds copied into dist/html/player/ with our page.
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
[ -f "$out/dash.all.min.js" ] || extract dashjs-5.2.1.tgz dist/modern/umd/dash.all.min.js "$out/dash.all.min.js"
install -C -m 644 "$top/player/index.html" "$out/index.html"
