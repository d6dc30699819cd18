#!/usr/bin/env bash
# A private CA and a certificate for the master signed by it (openssl), for `make mesh`, docker
# compose and the tests: nodes verify the master against the CA (mesh_master_ca; MASTER_CA_FILE
# in the image), the master serves HTTPS with its certificate (--tls-cert-file, --tls-key-file).
#
#   mesh-tls.sh <dir> [name ...]
#
# Writes into <dir> (made 0700 if new):
#   ca.pem       the CA's certificate: give it to every node (not secret)
#   ca.key       the CA's key, 0600: it signs master certificates; keep it off nodes and master
#   master.pem   the master's certificate (not secret)
#   master.key   its key, 0600 (the master refuses a key file others may read)
#   master.env   TLS_KEY=<the key, one line>, 0600: for an env file (docker compose), where a
#                bind-mounted 0600 file would not be readable by the container's user
# names: the DNS names and IP addresses the nodes reach the master at (default: localhost
# 127.0.0.1 ::1). An existing CA is kept (nodes that trust it go on doing so); the master's
# certificate is made anew when it is missing, its names change or it expires within 30 days.
# ECDSA P-256; the CA for 10 years, the master's certificate for 825 days.
set -euo pipefail

dir=${1:?usage: mesh-tls.sh <dir> [name ...]}
shift
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(localhost 127.0.0.1 ::1)
command -v openssl >/dev/null || { echo "mesh-tls: openssl is needed" >&2; exit 1; }
die() { echo "mesh-tls: $*" >&2; exit 1; }

san=""
for n in "${names[@]}"; do
	if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then
		san+="${san:+,}IP:$n"
	elif [[ $n =~ ^[A-Za-z0-9.-]+$ ]]; then
		san+="${san:+,}DNS:$n"
	else
		die "\"$n\": a DNS name or an IP address"
	fi
done

[ -d "$dir" ] || (umask 077 && mkdir -p "$dir")
umask 077
if [ ! -s "$dir/ca.pem" ] || [ ! -s "$dir/ca.key" ]; then
	openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 -days 3650 \
		-subj "/CN=ngx_rtmp_mesh private CA" \
		-addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" \
		-keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null || die "cannot make the CA in $dir"
	chmod 644 "$dir/ca.pem"
	echo "mesh-tls: made a CA: $dir/ca.pem"
fi

fresh() { # the master's certificate is there, from this CA, with these names, good for 30 days
	[ -s "$dir/master.pem" ] && [ -s "$dir/master.key" ] && [ -s "$dir/master.env" ] || return 1
	openssl verify -CAfile "$dir/ca.pem" "$dir/master.pem" >/dev/null 2>&1 || return 1
	openssl x509 -in "$dir/master.pem" -noout -checkend $((30 * 86400)) >/dev/null 2>&1 || return 1
	[ "$(cat "$dir/master.san" 2>/dev/null)" = "$san" ]
}
if ! fresh; then
	ext=$(mktemp)
	trap 'rm -f "$ext" "$dir/master.csr"' EXIT
	printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
		"extendedKeyUsage=serverAuth" "subjectAltName=$san" >"$ext"
	rm -f "$dir/master.key"
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 \
		-subj "/CN=${names[0]}" -keyout "$dir/master.key" -out "$dir/master.csr" 2>/dev/null ||
		die "cannot make the master's key in $dir"
	openssl x509 -req -in "$dir/master.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -sha256 -days 825 \
		-set_serial "0x$(openssl rand -hex 16)" -extfile "$ext" -out "$dir/master.pem" 2>/dev/null ||
		die "cannot sign the master's certificate in $dir"
	chmod 644 "$dir/master.pem"
	chmod 600 "$dir/master.key"
	rm -f "$dir/master.env"
	printf 'TLS_KEY=%s\n' "$(grep -v -- '-----' "$dir/master.key" | tr -d '\n')" >"$dir/master.env"
	echo "$san" >"$dir/master.san"
	echo "mesh-tls: made the master's certificate for $san: $dir/master.pem"
fi
