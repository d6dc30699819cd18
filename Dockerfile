# ngx_rtmp_mesh node image. The build stage runs the same scripts CI runs (`make dist`), so the
# image holds what CI tested: nginx 1.22.1 + nginx-rtmp-module 1.2.2 from Debian's source
# packages (sha256-checked) and our module.
#
#   docker build -t ngx-rtmp-mesh .
#   docker run -p 1935:1935 ngx-rtmp-mesh            # standalone node, sample table
#
# Mount your own conf and table over /opt/ngx-rtmp-mesh/conf and /opt/ngx-rtmp-mesh/tables.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN make dist

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg libpcre2-8-0 libssl3 zlib1g ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/dist /opt/ngx-rtmp-mesh
WORKDIR /opt/ngx-rtmp-mesh
EXPOSE 1935 8080
STOPSIGNAL SIGQUIT
CMD ["/opt/ngx-rtmp-mesh/sbin/nginx", "-p", "/opt/ngx-rtmp-mesh/", "-c", "conf/standalone.conf", "-g", "daemon off;"]
