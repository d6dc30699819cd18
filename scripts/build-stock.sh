#!/usr/bin/env bash
# Build the module against Debian's stock nginx: install nginx, libnginx-mod-rtmp and nginx-dev,
# configure nginx-dev's header tree with Debian's own flags (what Debian's nginx_mod debhelper
# does) plus the rtmp module, and build the cdylib against it into
# dist/stock/ngx_rtmp_mesh_module.so. Only configure runs on the tree: bindgen reads headers.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
tree=$top/target/stock-nginx
out=$top/dist/stock

need=()
for p in nginx libnginx-mod-rtmp nginx-dev; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
	[ "$(id -u)" -eq 0 ] || { echo "build-stock: install ${need[*]} (needs root)" >&2; exit 1; }
	# Never let the package start the system nginx.
	added_policy=
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
		added_policy=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
	[ -n "$added_policy" ] && rm -f /usr/sbin/policy-rc.d
fi
# Whatever happened at install time, leave no system nginx running.
if [ -f /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
	/usr/sbin/nginx -s stop || true
fi

src=/usr/share/nginx/src
stamp=$tree/.mesh-configured
if [ ! -f "$stamp" ] || [ "$0" -nt "$stamp" ] || [ "$src/conf_flags" -nt "$stamp" ]; then
	rm -rf "$tree" && mkdir -p "$tree" && cp -a "$src/." "$tree/"
	(
		cd "$tree"
		# shellcheck disable=SC1091
		. ./conf_flags
		./configure \
			--with-cc-opt="$(dpkg-buildflags --get CFLAGS) -fPIC $(dpkg-buildflags --get CPPFLAGS)" \
			--with-ld-opt="$(dpkg-buildflags --get LDFLAGS) -fPIC" \
			"${NGX_CONF_FLAGS[@]}" \
			--add-dynamic-module="$top/nginx-src/nginx-rtmp-module" >configure.log 2>&1 ||
			{ cat configure.log >&2; exit 1; }
	)
	touch "$stamp"
fi

NGINX_BUILD_DIR=$tree/objs NGX_RTMP_MODULE_DIR=$top/nginx-src/nginx-rtmp-module \
	CARGO_TARGET_DIR=$top/target/stock cargo build --release --locked -p ngx_rtmp_mesh
mkdir -p "$out"
install -C -m 644 "$top/target/stock/release/libngx_rtmp_mesh.so" "$out/ngx_rtmp_mesh_module.so"
echo "build-stock: $out/ngx_rtmp_mesh_module.so (for $(/usr/sbin/nginx -v 2>&1 | sed 's/.*: //'))"
