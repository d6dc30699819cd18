#!/usr/bin/env bash
# A whole mesh on loopback, in the foreground: the reference master and four nodes (ingest,
# root relay, two edges), each rendered by scripts/render-node-conf.sh as the Docker image does.
# Prints a broadcaster URL with a real key and viewer URLs with a real token; Ctrl-C stops all.
#
# Ports: MESH_MASTER_PORT (8000), MESH_RTMP_BASE (1935: ingest, +1 root, +2 and +3 edges),
# MESH_HTTP_BASE (8080, same order). State and logs: dist/mesh/.
# The master serves HTTPS with a certificate from a private CA (scripts/mesh-tls.sh, kept in
# dist/mesh/tls/ across runs); the nodes verify it against that CA (mesh_master_ca).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
dist=$top/dist
run=${MESH_RUN_DIR:-$dist/mesh}
mport=${MESH_MASTER_PORT:-8000}
rbase=${MESH_RTMP_BASE:-1935}
hbase=${MESH_HTTP_BASE:-8080}
mkdir -p "$run"

# Secrets never on a command line (ps shows argv to every local user): the master reads its
# secret from a file, each node its own key (mesh-tool node-key, in keys/), curl its admin header from a file (-H @file), all 0600.
secret() { # a secret kept across runs, in $run/<name>
	[ -s "$run/$1" ] || (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$run/$1")
	chmod 600 "$run/$1"
}
secret master.key
secret admin.token
# The admin header, for this script's curl and for the operator's (printed below).
rm -f "$run/admin.header"
(umask 077 && printf 'Authorization: Bearer %s\n' "$(<"$run/admin.token")" >"$run/admin.header")
bash "$top/scripts/mesh-tls.sh" "$run/tls" localhost 127.0.0.1 ::1
ca=$run/tls/ca.pem
admin=(curl -sf --cacert "$ca" -H @"$run/admin.header" -H 'Content-Type: application/json')
murl=https://127.0.0.1:$mport

pids=()
nodes=()
stop() {
	trap - INT TERM EXIT
	echo
	echo "stopping the mesh ..."
	for n in "${nodes[@]}"; do
		[ -f "$run/$n/logs/nginx.pid" ] && "$dist/sbin/nginx" -p "$dist/" -c "$run/$n/nginx.conf" -s quit 2>/dev/null || true
	done
	for _ in $(seq 50); do
		alive=0
		for n in "${nodes[@]}"; do [ -f "$run/$n/logs/nginx.pid" ] && alive=1; done
		[ $alive = 0 ] && break
		sleep 0.2
	done
	for n in "${nodes[@]}"; do
		[ -f "$run/$n/logs/nginx.pid" ] && kill -TERM "$(cat "$run/$n/logs/nginx.pid")" 2>/dev/null || true
	done
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	echo "stopped."
}
trap stop INT TERM EXIT

"$dist/sbin/mesh-master" --listen "127.0.0.1:$mport" --master-key-file "$run/master.key" \
	--admin-token-file "$run/admin.token" --db "$run/master.db" --heartbeat-interval 2 \
	--tls-cert-file "$run/tls/master.pem" --tls-key-file "$run/tls/master.key" >>"$run/master.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -sf --cacert "$ca" "$murl/healthz" >/dev/null && break; sleep 0.1; done
curl -sf --cacert "$ca" "$murl/healthz" >/dev/null || { echo "mesh-master did not start: see $run/master.log" >&2; exit 1; }
# The master refuses requests signed in the second it started in (a request recorded before a
# crash cannot be replayed to it): the nodes start in the next one.
started=$(date +%s)
while [ "$(date +%s)" = "$started" ]; do sleep 0.05; done

start_node() { # id role rtmp-port http-port
	local conf
	# Each node its own key, derived from the master secret (which stays with the master).
	mkdir -p -m 700 "$run/keys"
	(umask 077 && "$dist/sbin/mesh-tool" node-key "@$run/master.key" "$1" >"$run/keys/$1.key")
	conf=$(NODE_ID=$1 NODE_ROLE=$2 NGINX_PORT=$3 HTTP_PORT=$4 MASTER_SERVER=$murl NODE_KEY_FILE=$run/keys/$1.key \
		MASTER_CA_FILE=$ca HEARTBEAT_INTERVAL=2 bash "$top/scripts/render-node-conf.sh" "$run/$1")
	"$dist/sbin/nginx" -p "$dist/" -c "$conf" -t -q
	# Roles are granted, not claimed (the master auto-approves none): each node's, before it starts.
	"${admin[@]}" -X PUT -d "{\"role\":\"$2\"}" "$murl/admin/nodes/$1/role" >/dev/null
	"$dist/sbin/nginx" -p "$dist/" -c "$conf"
	nodes+=("$1")
}
start_node ingest-1 ingest "$rbase" "$hbase"
start_node root-1 root_relay $((rbase + 1)) $((hbase + 1))
start_node edge-1 relay $((rbase + 2)) $((hbase + 2))
start_node edge-2 relay $((rbase + 3)) $((hbase + 3))

# A broadcaster account and stream (a new key each run: the old one is not kept in clear).
"${admin[@]}" -X POST -d '{"name":"demo"}' "$murl/admin/accounts" >/dev/null || true
if ! key=$("${admin[@]}" -X POST -d '{"stream":"demo","account":"demo"}' "$murl/admin/streams"); then
	key=$("${admin[@]}" -X POST "$murl/admin/streams/demo/key")
fi
key=$(sed -E 's/.*"key":"([0-9a-f]+)".*/\1/' <<<"$key")
token=$("${admin[@]}" -X POST -d '{"stream":"demo","ttl_s":86400}' "$murl/admin/tokens" | sed -E 's/.*"token":"([^"]+)".*/\1/')

cat <<TXT

ngx_rtmp_mesh: a local mesh — master $murl, ingest-1 :$rbase → root-1 :$((rbase + 1)) → edge-1 :$((rbase + 2)), edge-2 :$((rbase + 3))

  publish:  ffmpeg -re -f lavfi -i testsrc=size=640x360:rate=25 -f lavfi -i sine -c:v libx264 \\
              -preset veryfast -g 50 -c:a aac -f flv 'rtmp://127.0.0.1:$rbase/live/demo?key=$key'
  play:     ffplay 'rtmp://127.0.0.1:$((rbase + 2))/relay/demo?token=$token'     (edge-1)
            ffplay 'rtmp://127.0.0.1:$((rbase + 3))/relay/demo?token=$token'     (edge-2: routed on demand)
  HLS:      http://127.0.0.1:$((hbase + 2))/hls/demo/master.m3u8?token=$token
  browser:  http://127.0.0.1:$((hbase + 2))/player/?stream=demo&token=$token
  admin:    curl --cacert $ca -H @$run/admin.header $murl/admin/nodes
            (also /admin/streams; token valid 24 h)

  logs:     $run/master.log, $run/<node>/logs/error.log        stop: Ctrl-C

TXT
# Until Ctrl-C, or until the master ends.
wait "${pids[0]}"
