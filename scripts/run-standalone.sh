#!/usr/bin/env bash
# Run a standalone node from dist/ in the foreground (Ctrl-C stops it), after printing where
# to publish and play, with the sample table's key and a fresh viewer token.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
dist=$top/dist
port=${MESH_RTMP_PORT:-1935}
hport=${MESH_HTTP_PORT:-8080}
conf=$dist/conf/standalone.conf
if [ "$port" != 1935 ] || [ "$hport" != 8080 ]; then
	sed -e "s/listen 1935;/listen $port;/" -e "s|127.0.0.1:1935/live|127.0.0.1:$port/live|" \
		-e "s/listen 8080;/listen $hport;/" "$conf" >"$dist/conf/standalone.run.conf"
	conf=$dist/conf/standalone.run.conf
fi
# The workers (nobody when run as root) write the transcodes here; nobody else reads them.
mkdir -p "$dist/media"
chmod 0750 "$dist/media"
if [ "$(id -u)" -eq 0 ]; then chown nobody "$dist/media"; fi

"$dist/sbin/nginx" -p "$dist/" -c "$conf" -t -q
token=$("$dist/sbin/mesh-tool" token "@$dist/tables/standalone.json" demo 86400)

cat <<TXT

ngx_rtmp_mesh: standalone node on rtmp://127.0.0.1:$port (table: dist/tables/standalone.json)

  publish:  ffmpeg -re -f lavfi -i testsrc=size=640x360:rate=25 -f lavfi -i sine -c:v libx264 \\
              -pix_fmt yuv420p -preset veryfast -g 50 -c:a aac -f flv 'rtmp://127.0.0.1:$port/live/demo?key=demo-key'
  play:     ffplay 'rtmp://127.0.0.1:$port/live/demo?token=$token'
  HLS:      http://127.0.0.1:$hport/hls/demo/master.m3u8?token=$token
  DASH:     http://127.0.0.1:$hport/dash/demo/manifest.mpd?token=$token
  browser:  http://127.0.0.1:$hport/player/?stream=demo&token=$token
            (token valid 24 h; make another: dist/sbin/mesh-tool token @dist/tables/standalone.json demo)

  logs:     dist/logs/error.log        stop: Ctrl-C

TXT
exec "$dist/sbin/nginx" -p "$dist/" -c "$conf" -g 'daemon off;'
