#!/usr/bin/env bash
# What t/player.t needs: Debian's chromium, node + npm, and playwright-core (no browser
# download: it drives /usr/bin/chromium) installed from the npm registry into t/browser.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
	[ "$(id -u)" -eq 0 ] || { echo "browser-deps: install ${need[*]} (needs root)" >&2; exit 1; }
	echo "browser-deps: installing ${need[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ ! -d "$top/t/browser/node_modules/playwright-core" ]; then
	(cd "$top/t/browser" && npm ci --silent --no-audit --no-fund)
fi
