# ngx_rtmp_mesh images: the node (nginx 1.22.1 + nginx-rtmp-module 1.2.2 + our module, ffmpeg,
# the player page) and the reference master. Two ways to the same runtime layout:
#
#   docker build --target node   -t ngx-rtmp-mesh-node .      # full build: Rust builder stage
#   docker build --target master -t ngx-rtmp-mesh-master .    #   running `make dist`, then slim Debian
#   make image                                                # from the dist/ that `make dist` built
#                                                             #   (node-dist, master-dist: what CI tests)
#
# `make image` needs no registry: it makes the base image with debootstrap and passes
# --build-arg BASE=localhost/debian:bookworm-slim. Both images run as the unprivileged user
# mesh (uid 1935). The node renders its nginx.conf at start from the environment
# (scripts/node-entrypoint.sh → scripts/render-node-conf.sh; README "Docker" for the variables);
# without MASTER_SERVER it runs standalone on /var/lib/ngx-rtmp-mesh/state/table.json.
# Secrets (the master's MASTER_KEY, ADMIN_TOKEN and TLS_KEY, each node's own NODE_KEY) come at
# run time (an env file or *_FILE), never in a layer; so do the master's certificate and the
# nodes' CA (docker-compose.yml).

ARG BASE=debian:bookworm-slim
ARG BUILDER=rust:1-bookworm

# --- build: the same scripts CI runs (sources sha256-checked from Debian's source packages).
FROM ${BUILDER} AS build
WORKDIR /src
COPY . .
RUN make dist

# --- the runtime both node images share. The packages purged are ones ffmpeg's libraries pull
# in but nothing here links (mesa's dlopened GPU drivers and their LLVM, keyboard and MIME data):
# 175 MB; the ldd check proves ffmpeg still loads. (A derived image's apt-get -f install puts
# them back.)
FROM ${BASE} AS node-runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg libpcre2-8-0 libssl3 zlib1g libcrypt1 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
 && dpkg --purge --force-depends libgl1-mesa-dri libllvm15 libz3-4 xkb-data shared-mime-info >/dev/null \
 && ! ldd /usr/bin/ffmpeg | grep 'not found' \
 && useradd --system -K SYS_UID_MAX=1935 --uid 1935 --user-group --home-dir /var/lib/ngx-rtmp-mesh --no-create-home --shell /usr/sbin/nologin mesh \
 && install -d -o mesh -g mesh -m 0750 /var/lib/ngx-rtmp-mesh \
 && install -d -m 0755 /opt/ngx-rtmp-mesh /opt/ngx-rtmp-mesh/scripts \
 && for d in logs client_body_temp proxy_temp fastcgi_temp uwsgi_temp scgi_temp; do install -d -o mesh -g mesh -m 0700 /opt/ngx-rtmp-mesh/$d; done
COPY scripts/render-node-conf.sh scripts/node-entrypoint.sh scripts/healthcheck.sh /opt/ngx-rtmp-mesh/scripts/
ENV MESH_PREFIX=/opt/ngx-rtmp-mesh NGINX_PORT=1935 HTTP_PORT=8080
EXPOSE 1935 8080
VOLUME /var/lib/ngx-rtmp-mesh
USER mesh
WORKDIR /var/lib/ngx-rtmp-mesh
STOPSIGNAL SIGQUIT
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/opt/ngx-rtmp-mesh/scripts/healthcheck.sh", "node"]
ENTRYPOINT ["/opt/ngx-rtmp-mesh/scripts/node-entrypoint.sh"]

# --- the master's runtime.
FROM ${BASE} AS master-runtime
RUN useradd --system -K SYS_UID_MAX=1935 --uid 1935 --user-group --home-dir /var/lib/mesh-master --no-create-home --shell /usr/sbin/nologin mesh \
 && install -d -o mesh -g mesh -m 0700 /var/lib/mesh-master \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/*.log
COPY scripts/healthcheck.sh /usr/local/lib/mesh-master/healthcheck.sh
ENV MASTER_LISTEN=0.0.0.0:8000 MASTER_DB=/var/lib/mesh-master/mesh-master.db
EXPOSE 8000
VOLUME /var/lib/mesh-master
USER mesh
WORKDIR /var/lib/mesh-master
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/usr/local/lib/mesh-master/healthcheck.sh", "master"]
ENTRYPOINT ["/usr/local/bin/mesh-master"]

# --- full build (docker build --target node|master).
FROM node-runtime AS node
COPY --from=build /src/dist/sbin/nginx /src/dist/sbin/mesh-tool /opt/ngx-rtmp-mesh/sbin/
COPY --from=build /src/dist/modules/ /opt/ngx-rtmp-mesh/modules/
COPY --from=build /src/dist/conf/ /opt/ngx-rtmp-mesh/conf/
COPY --from=build /src/dist/html/ /opt/ngx-rtmp-mesh/html/

FROM master-runtime AS master
COPY --from=build /src/dist/sbin/mesh-master /usr/local/bin/mesh-master

# --- from a dist/ made by `make dist` (make image; only these paths: see .dockerignore).
FROM node-runtime AS node-dist
COPY dist/sbin/nginx dist/sbin/mesh-tool /opt/ngx-rtmp-mesh/sbin/
COPY dist/modules/ /opt/ngx-rtmp-mesh/modules/
COPY dist/conf/ /opt/ngx-rtmp-mesh/conf/
COPY dist/html/ /opt/ngx-rtmp-mesh/html/

FROM master-runtime AS master-dist
COPY dist/sbin/mesh-master /usr/local/bin/mesh-master
