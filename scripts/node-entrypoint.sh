#!/usr/bin/env bash
# The node image's entrypoint: render nginx.conf from the environment (render-node-conf.sh, the
# same script `make mesh` runs; a missing or malformed variable stops it here with one line
# naming the variable, before anything starts), check it, and run nginx in the foreground.
# t/entrypoint.t runs it against dist/ with MESH_PREFIX and MESH_STATE_DIR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export MESH_PREFIX=${MESH_PREFIX:-/opt/ngx-rtmp-mesh} DAEMON=off ERROR_LOG=${ERROR_LOG:-stderr}
conf=$(bash "$here/render-node-conf.sh" "${MESH_STATE_DIR:-/var/lib/ngx-rtmp-mesh}")
# The key is in the node's 0600 key file now: not in nginx's environment (nor its children's).
unset NODE_KEY MASTER_KEY ADMIN_TOKEN
"$MESH_PREFIX/sbin/nginx" -p "$MESH_PREFIX/" -c "$conf" -t -q
exec "$MESH_PREFIX/sbin/nginx" -p "$MESH_PREFIX/" -c "$conf"
