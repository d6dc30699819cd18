#!/usr/bin/env bash
# Benchmark 1: admission latency of 1,000 RTMP publishes (connect → publish answered), with our
# module (keys in the table), with nginx-rtmp's on_publish calling a local HTTP server, and with
# no auth; then again with the HTTP server answering after 2 s. Prints a markdown table.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
nginx=$top/dist/sbin/nginx
mods=$top/dist/modules
N=${N:-1000}
C=${C:-10}
work=$(mktemp -d)
trap 'for d in "$work"/*/; do [ -f "$d/nginx.pid" ] && kill -QUIT "$(cat "$d/nginx.pid")" 2>/dev/null; done; kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

port() { python3 "$top/bench/benchlib.py"; }   # outside the ephemeral range, as the tests pick
AUTH=$(port)
DELAY_FILE=$work/delay
echo 0 >"$DELAY_FILE"
python3 - "$AUTH" "$DELAY_FILE" <<'PY' &
import sys, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
port, delay_file = int(sys.argv[1]), sys.argv[2]
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(float(open(delay_file).read()))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
PY

keyhash=$(printf %s benchkey | sha256sum | cut -d' ' -f1)
python3 -c "
import json,sys
print(json.dumps({'version': 1, 'role': 'standalone', 'publish': {'bench%d' % i: {'key_sha256': '$keyhash'} for i in range($N)}}))
" >"$work/table.json"

start() { # name rtmp-app-body
	local d=$work/$1 p
	p=$(port)
	mkdir -p "$d/logs"
	cat >"$d/nginx.conf" <<CONF
load_module $mods/ngx_rtmp_module.so;
load_module $mods/ngx_rtmp_mesh_module.so;
worker_processes 1;
error_log $d/error.log crit;
pid $d/nginx.pid;
events { worker_connections 4096; }
rtmp {
    access_log off;
    mesh_table_file $work/table.json;
    server { listen 127.0.0.1:$p; application live { live on; $2 } }
}
CONF
	"$nginx" -p "$d/" -c nginx.conf -e "$d/error.log"
	echo "$p"
}
P_MESH=$(start mesh 'mesh on;')
P_NOTIFY=$(start notify "on_publish http://127.0.0.1:$AUTH/auth;")
P_NONE=$(start none '')
sleep 0.5

run() { python3 "$top/bench/rtmp_publish.py" --url "rtmp://127.0.0.1:$1/live" --args "$2" -n "$N" -c "$C"; }
row() { # label json
	python3 -c "import json,sys; r=json.loads(sys.argv[2]); print('| %s | %d/%d | %.2f | %.2f | %.1f |' % (sys.argv[1], r['accepted'], r['sessions'], r['p50_ms'], r['p99_ms'], r['wall_s']))" "$1" "$2"
}
echo "| admission ($N publishes, $C at a time) | accepted | p50 ms | p99 ms | wall s |"
echo "|---|---:|---:|---:|---:|"
row "no auth (plain nginx-rtmp)" "$(run "$P_NONE" "")"
row "ngx_rtmp_mesh (key in the table)" "$(run "$P_MESH" key=benchkey)"
row "nginx-rtmp on_publish → local HTTP" "$(run "$P_NOTIFY" key=benchkey)"
echo 2 >"$DELAY_FILE"
row "ngx_rtmp_mesh, HTTP server slow (2 s)" "$(run "$P_MESH" key=benchkey)"
row "nginx-rtmp on_publish, HTTP server slow (2 s), 100 at a time" "$(C=100 run "$P_NOTIFY" key=benchkey)"
