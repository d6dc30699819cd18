#!/usr/bin/env bash
# Configure and build nginx 1.22.1 (--with-compat) with nginx-rtmp-module as a dynamic module,
# in nginx-src/nginx-1.22.1/objs. Configure runs again only when this script changes.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
src=$top/nginx-src/nginx-1.22.1
rtmp=$top/nginx-src/nginx-rtmp-module
stamp=$src/objs/.mesh-configured

cd "$src"
if [ ! -f "$stamp" ] || [ "$0" -nt "$stamp" ]; then
	./configure --with-compat --with-threads --with-http_ssl_module --with-stream \
		--with-stream_ssl_module --with-debug \
		--prefix="$top/dist" --add-dynamic-module="$rtmp" >objs.configure.log 2>&1 ||
		{ cat objs.configure.log >&2; exit 1; }
	touch "$stamp"
fi
make -s -j"$(nproc)" >/dev/null
