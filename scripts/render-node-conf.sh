#!/usr/bin/env bash
# Render a mesh node's nginx.conf from environment variables, into a node directory that also
# gets the node's key file and a writable state directory. The Docker image's entrypoint and
# `make mesh` both use it, so what the tests run is what the image runs.
#
#   render-node-conf.sh <node dir>      (prints the conf's path)
#
# Variables (the original design's .env names, plus the node's own):
#   NODE_ID             node id (required with a master)            e.g. edge-1
#   NODE_ROLE           ingest | root_relay | relay | standalone    (default standalone)
#   NGINX_PORT          RTMP port                                   (default 1935)
#   HTTP_PORT           HTTP port: HLS, DASH, player, status         (default 8080)
#   PUBLIC_HOST         host other nodes and viewers reach it at    (default 127.0.0.1)
#   MASTER_SERVER       master URL; empty: no master, table file only
#   NODE_KEY            this node's own key (or NODE_KEY_FILE): `mesh-tool node-key NODE_ID`
#                       prints it from the master secret, which never goes to a node
#   MASTER_CA_FILE      the CA (PEM) an https MASTER_SERVER is verified against (mesh_master_ca;
#                       absent: the public roots); an http:// one to another host gets a warning
#   ANNOUNCE_ENDPOINT, HEARTBEAT_ENDPOINT, STREAMS_ENDPOINT, AUTH_ENDPOINT, ROUTE_ENDPOINT
#                       endpoint paths (defaults: /announce, /heartbeat, /streams, /auth, /route)
#   HEARTBEAT_INTERVAL  seconds (default 10; the master's word wins)
#   MESH_PREFIX         where nginx, modules/ and html/ are            (default: this checkout's dist/)
#   FFMPEG              ffmpeg binary (default ffmpeg)
#   RENDITIONS          ladder, ';'-separated mesh_rendition arguments (default "source")
#   ERROR_LOG           error log target (default <node dir>/error.log; "stderr" in the image)
#   DAEMON              on | off (default on)
#   STATUS_ALLOW        who else may read /status: addresses, CIDRs, all (default: loopback only)
set -euo pipefail

dir=${1:?usage: render-node-conf.sh <node dir>}
top=$(cd "$(dirname "$0")/.." && pwd)
prefix=${MESH_PREFIX:-$top/dist}
role=${NODE_ROLE:-standalone}
rtmp_port=${NGINX_PORT:-1935}
http_port=${HTTP_PORT:-8080}
host=${PUBLIC_HOST:-127.0.0.1}

die() { echo "render-node-conf: $*" >&2; exit 1; }
case $role in ingest|root_relay|relay|standalone) ;; *) die "NODE_ROLE \"$role\": ingest, root_relay, relay or standalone" ;; esac
# Every variable is checked before anything is written: one line naming the first bad one.
port_ok() { [[ $1 =~ ^[0-9]{1,5}$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }
port_ok "$rtmp_port" || die "NGINX_PORT \"$rtmp_port\": a port, 1-65535"
port_ok "$http_port" || die "HTTP_PORT \"$http_port\": a port, 1-65535"
[ "$rtmp_port" != "$http_port" ] || die "NGINX_PORT and HTTP_PORT are both $rtmp_port"
[[ ${NODE_ID:-} =~ ^[A-Za-z0-9_-]{0,128}$ ]] || die "NODE_ID \"$NODE_ID\": 1-128 of [A-Za-z0-9_-]"
[[ $host =~ ^[A-Za-z0-9.:_-]+$ ]] || die "PUBLIC_HOST \"$host\": a host name or address"
[[ ${HEARTBEAT_INTERVAL:-10} =~ ^[0-9]{1,4}$ ]] && [ "${HEARTBEAT_INTERVAL:-10}" -ge 1 ] ||
	die "HEARTBEAT_INTERVAL \"${HEARTBEAT_INTERVAL:-}\": seconds, 1-9999"
for v in ANNOUNCE_ENDPOINT HEARTBEAT_ENDPOINT STREAMS_ENDPOINT AUTH_ENDPOINT ROUTE_ENDPOINT; do
	[ -z "${!v:-}" ] || [[ ${!v} =~ ^/[A-Za-z0-9._~/-]*$ ]] || die "$v \"${!v}\": a path such as /announce"
done
if [ -n "${MASTER_SERVER:-}" ]; then
	url_re='^https?://[][A-Za-z0-9.:_-]+(/[A-Za-z0-9._~/-]*)?$'
	[[ $MASTER_SERVER =~ $url_re ]] ||
		die "MASTER_SERVER \"$MASTER_SERVER\": an http:// or https:// URL"
	[ -n "${NODE_ID:-}" ] || die "NODE_ID is required with MASTER_SERVER"
	# The master secret derives every node's key: it stays with the master.
	[ -z "${MASTER_KEY:-}${MASTER_KEY_FILE:-}" ] ||
		die "MASTER_KEY is the master's secret and stays with the master: give this node its own key as NODE_KEY (mesh-tool node-key $NODE_ID)"
	if [ -z "${NODE_KEY:-}" ]; then
		[ -n "${NODE_KEY_FILE:-}" ] || die "NODE_KEY (or NODE_KEY_FILE) is required with MASTER_SERVER: mesh-tool node-key $NODE_ID prints it"
		[ -r "$NODE_KEY_FILE" ] && [ -s "$NODE_KEY_FILE" ] || die "NODE_KEY_FILE \"$NODE_KEY_FILE\": not a readable, non-empty file"
	fi
	if [ -n "${MASTER_CA_FILE:-}" ]; then
		[[ $MASTER_SERVER == https://* ]] || die "MASTER_CA_FILE needs an https:// MASTER_SERVER"
		[[ $MASTER_CA_FILE =~ ^/[A-Za-z0-9._/-]+$ ]] || die "MASTER_CA_FILE \"$MASTER_CA_FILE\": an absolute path"
		[ -r "$MASTER_CA_FILE" ] && [ -s "$MASTER_CA_FILE" ] || die "MASTER_CA_FILE \"$MASTER_CA_FILE\": not a readable, non-empty file"
	fi
fi

mkdir -p "$dir/state" "$dir/media" "$dir/logs"
dir=$(cd "$dir" && pwd)
# Whatever the umask (a daemon may run with 0): the state (tables with hop and viewer keys,
# the node key) for its owner only, the media for the workers and their group.
# (A read-only mount cannot be changed: said, not fatal.)
private() { chmod "$@" 2>/dev/null || echo "render-node-conf: warning: cannot chmod $*" >&2; }
private 0700 "$dir/state"
private 0750 "$dir/media"
# The workers (nobody when nginx starts as root) save the table and write the transcodes.
[ -f "$dir/state/table.json" ] || (umask 077 && echo '{"version": 0}' >"$dir/state/table.json")
private go-rwx "$dir/state/table.json"
if [ "$(id -u)" -eq 0 ]; then chown nobody "$dir/state" "$dir/state/table.json" "$dir/media"; fi

master=""
if [ -n "${MASTER_SERVER:-}" ]; then
	[ -n "${NODE_ID:-}" ] || die "NODE_ID is required with MASTER_SERVER"
	key=${NODE_KEY:-}
	[ -z "$key" ] && [ -n "${NODE_KEY_FILE:-}" ] && key=$(<"$NODE_KEY_FILE")
	[ -n "$key" ] || die "NODE_KEY (or NODE_KEY_FILE) is required with MASTER_SERVER"
	# A new file (an old one keeps its mode when written over); one of an earlier version, which
	# held the shared key, goes.
	rm -f "$dir/state/node.key" "$dir/state/master.key"
	(umask 077 && printf '%s\n' "$key" >"$dir/state/node.key")
	ca=""
	[ -n "${MASTER_CA_FILE:-}" ] && ca="mesh_master_ca $MASTER_CA_FILE;"
	master="mesh_master ${MASTER_SERVER};
    $ca
    mesh_master_key_file $dir/state/node.key;
    mesh_master_path announce ${ANNOUNCE_ENDPOINT:-/announce};
    mesh_master_path heartbeat ${HEARTBEAT_ENDPOINT:-/heartbeat};
    mesh_master_path streams ${STREAMS_ENDPOINT:-/streams};
    mesh_master_path auth ${AUTH_ENDPOINT:-/auth};
    mesh_master_path route ${ROUTE_ENDPOINT:-/route};
    mesh_heartbeat_interval ${HEARTBEAT_INTERVAL:-10}s;
    mesh_rtmp_url rtmp://$host:$rtmp_port;
    mesh_http_url http://$host:$http_port;"
fi
node_id=""
[ -n "${NODE_ID:-}" ] && node_id="mesh_node_id $NODE_ID;"

ladder=""
IFS=';' read -ra rungs <<<"${RENDITIONS:-source}"
for r in "${rungs[@]}"; do
	r=$(echo "$r" | xargs)
	[ -n "$r" ] && ladder+="    mesh_rendition $r;"$'\n'
done
# /status answers loopback only; STATUS_ALLOW (addresses, CIDRs or all; space-separated) widens it.
status_allow=""
read -ra allows <<<"${STATUS_ALLOW:-}"
for a in "${allows[@]}"; do
	[[ $a =~ ^(all|[0-9A-Fa-f.:]+(/[0-9]{1,3})?)$ ]] || die "STATUS_ALLOW \"$a\": addresses, CIDRs or all"
	status_allow+=" allow $a;"
done
error_log=${ERROR_LOG:-$dir/logs/error.log}
# Where the transcoder reads a stream: pushes arrive in "relay", broadcasters in "live".
source_app=relay
[ "$role" = standalone ] && source_app=live

cat >"$dir/nginx.conf" <<CONF
# Rendered by scripts/render-node-conf.sh for node "${NODE_ID:-standalone}" ($role).
load_module $prefix/modules/ngx_rtmp_module.so;
load_module $prefix/modules/ngx_rtmp_mesh_module.so;

worker_processes 1;
daemon ${DAEMON:-on};
error_log $error_log notice;   # not info: nginx-rtmp logs args (keys) at info
pid $dir/logs/nginx.pid;

events {
    worker_connections 1024;
}

rtmp {
    log_format mesh '\$remote_addr [\$time_local] \$command "\$app" "\$name" '
                    '\$bytes_received \$bytes_sent (\$session_readable_time)';
    access_log $dir/logs/rtmp-access.log mesh;

    $node_id
    mesh_role $role;
    mesh_table_file $dir/state/table.json;
    $master

    server {
        listen $rtmp_port;
        # Broadcasters publish here (ingest, standalone) ...
        application live { mesh on; live on; }
        # ... and nodes push here; viewers play from either on relay and standalone nodes.
        application relay { mesh on; live on; }
    }
}

http {
    include $prefix/conf/mime.types;
    access_log off;
    sendfile on;

    mesh_media_root $dir/media;
    mesh_ffmpeg ${FFMPEG:-ffmpeg};
    mesh_rtmp_source rtmp://127.0.0.1:$rtmp_port/$source_app;
$ladder
    server {
        listen $http_port;

        location /hls/    { mesh_media hls; }
        location /dash/   { mesh_media dash; }
        location /player/ { root $prefix/html; include $prefix/conf/player_headers.conf; }
        location = /status { mesh_status;$status_allow }
    }
}
CONF
echo "$dir/nginx.conf"
