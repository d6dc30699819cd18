#!/usr/bin/env bash
# The images' HEALTHCHECK, with bash alone (no curl in the images):
#   healthcheck.sh node     the RTMP port accepts and GET /status on loopback answers 200
#   healthcheck.sh master   GET /healthz answers 200; over TLS (TLS_CERT_FILE set), where bash
#                           speaks no TLS, a plain GET is answered with the master's 400 saying
#                           it speaks HTTPS: its listener is up and answering
set -euo pipefail

get() { # port path status
	exec 3<>"/dev/tcp/127.0.0.1/$1"
	printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$2" >&3
	local line
	IFS= read -r -t 2 line <&3
	exec 3>&-
	[[ $line =~ ^HTTP/1\.[01]\ $3 ]] || { echo "healthcheck: GET $2: ${line:-no answer}"; exit 1; }
}
get200() { get "$1" "$2" 200; }

case ${1:-} in
node)
	(exec 4<>"/dev/tcp/127.0.0.1/${NGINX_PORT:-1935}") || { echo "healthcheck: RTMP port ${NGINX_PORT:-1935} refused"; exit 1; }
	get200 "${HTTP_PORT:-8080}" /status
	;;
master)
	if [ -n "${TLS_CERT_FILE:-}" ]; then get "${MASTER_LISTEN##*:}" /healthz 400; else get200 "${MASTER_LISTEN##*:}" /healthz; fi
	;;
*) echo "usage: healthcheck.sh node|master" >&2; exit 2 ;;
esac
