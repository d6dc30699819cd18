# ngx_rtmp_mesh images. The build stage runs the same scripts CI runs (`make dist`), so the
# images hold what CI tested: nginx 1.22.1 + nginx-rtmp-module 1.2.2 from Debian's source
# packages (sha256-checked), our module, and the reference master.
#
#   docker build --target node   -t ngx-rtmp-mesh-node .
#   docker build --target master -t ngx-rtmp-mesh-master .
#   docker compose up                      # a demo mesh: docker-compose.yml
#
# The node renders its nginx.conf at start from the environment (scripts/node-entrypoint.sh →
# scripts/render-node-conf.sh): NODE_ID, NODE_ROLE, NGINX_PORT, HTTP_PORT, PUBLIC_HOST,
# MASTER_SERVER, MASTER_KEY, ANNOUNCE_ENDPOINT, HEARTBEAT_ENDPOINT, STREAMS_ENDPOINT,
# AUTH_ENDPOINT, ROUTE_ENDPOINT, HEARTBEAT_INTERVAL, RENDITIONS. Without MASTER_SERVER it runs
# standalone on /var/lib/ngx-rtmp-mesh/state/table.json (mount your own).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN make dist

FROM debian:bookworm-slim AS node
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg libpcre2-8-0 libssl3 zlib1g ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/dist /opt/ngx-rtmp-mesh
COPY scripts/render-node-conf.sh scripts/node-entrypoint.sh /opt/ngx-rtmp-mesh/scripts/
ENV NGINX_PORT=1935 HTTP_PORT=8080
EXPOSE 1935 8080
VOLUME /var/lib/ngx-rtmp-mesh
STOPSIGNAL SIGQUIT
ENTRYPOINT ["/opt/ngx-rtmp-mesh/scripts/node-entrypoint.sh"]

FROM debian:bookworm-slim AS master
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/dist/sbin/mesh-master /usr/local/bin/mesh-master
ENV MASTER_LISTEN=0.0.0.0:8000 MASTER_DB=/var/lib/mesh-master/mesh-master.db
RUN mkdir -p /var/lib/mesh-master
VOLUME /var/lib/mesh-master
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/mesh-master"]
