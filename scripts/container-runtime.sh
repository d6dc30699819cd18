#!/usr/bin/env bash
# Print the container runtime to use (podman or docker) and exit 0, or say why there is none and
# exit 1. CONTAINER_RUNTIME=podman|docker chooses; otherwise podman, then docker, whichever
# answers: a docker client without a reachable engine does not count.
set -euo pipefail

works() { command -v "$1" >/dev/null 2>&1 && "$1" info >/dev/null 2>&1; }
if [ -n "${CONTAINER_RUNTIME:-}" ]; then
	works "$CONTAINER_RUNTIME" || { echo "container-runtime: CONTAINER_RUNTIME=$CONTAINER_RUNTIME does not answer ($CONTAINER_RUNTIME info)" >&2; exit 1; }
	echo "$CONTAINER_RUNTIME"
	exit 0
fi
for rt in podman docker; do
	works "$rt" && { echo "$rt"; exit 0; }
done
echo "container-runtime: no podman or docker that answers ('podman info' / 'docker info')" >&2
exit 1
