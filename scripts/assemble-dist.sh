#!/usr/bin/env bash
# Assemble a runnable prefix in dist/: sbin/nginx, modules/*.so, conf/. Copies only what changed.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
objs=$top/nginx-src/nginx-1.22.1/objs
dist=$top/dist

mkdir -p "$dist"/{sbin,modules,conf,logs,tables,html}
install -C -m 755 "$objs/nginx" "$dist/sbin/nginx"
install -C -m 644 "$objs/ngx_rtmp_module.so" "$dist/modules/ngx_rtmp_module.so"
install -C -m 644 "$top/target/release/libngx_rtmp_mesh.so" "$dist/modules/ngx_rtmp_mesh_module.so"
install -C -m 755 "$top/target/release/mesh-tool" "$dist/sbin/mesh-tool"
install -C -m 755 "$top/target/release/mesh-master" "$dist/sbin/mesh-master"
install -C -m 644 "$top/nginx-src/nginx-1.22.1/conf/mime.types" "$dist/conf/mime.types"
for f in "$top"/conf/*.conf; do install -C -m 644 "$f" "$dist/conf/"; done
for f in "$top"/conf/tables/*.json; do install -C -m 644 "$f" "$dist/tables/"; done
bash "$top/scripts/vendor-player.sh"
