# ngx_rtmp_mesh — build, run and test. See README.md.
#
#   make dist    build nginx 1.22.1 + nginx-rtmp-module 1.2.2 + our module into dist/
#   make run     build, then run a standalone node from conf/standalone.conf
#   make mesh    build, then run the master and four nodes on loopback (Ctrl-C stops them)
#   make test    build, then run every test (unit tests, then t/*.t with prove)
#   make stock   build the module against Debian's stock nginx (nginx-dev) into dist/stock/
#   make image   build, then the node and master images from dist/ (podman or docker; no registry)
#   make image-test  the images for real: the compose mesh in containers (t/image.t)
#   make check   the glue's layers (scripts/check-layers.py), cargo fmt --check, clippy -D warnings, cargo test

SHELL := /bin/bash
TOP := $(CURDIR)
NGX := $(TOP)/nginx-src/nginx-1.22.1
RTMP := $(TOP)/nginx-src/nginx-rtmp-module
export NGINX_BUILD_DIR := $(NGX)/objs
export NGX_RTMP_MODULE_DIR := $(RTMP)
CARGO ?= cargo
PROVE ?= prove
# Test files run two at a time (they mostly wait on real processes: 1,700 s one at a time,
# 856 s two at a time, 164 s of CPU); each has its own directories and ports.
PROVE_JOBS ?= 2

.PHONY: all dist deps sources nginx module run mesh test unit prove stock check clean image image-test

all: dist

deps:
	@bash scripts/deps.sh --test

sources: deps
	@bash scripts/fetch-sources.sh

nginx: sources
	@bash scripts/build-nginx.sh

module: nginx
	@$(CARGO) build --release --locked -p ngx_rtmp_mesh -p mesh-core -p mesh-master

dist: module
	@bash scripts/assemble-dist.sh

run: dist
	@bash scripts/run-standalone.sh

mesh: dist
	@bash scripts/run-mesh.sh

unit:
	@$(CARGO) test --locked -p mesh-core -p mesh-agent -p mesh-master

prove: dist
	@TEST_NGINX_BINARY=$${TEST_NGINX_BINARY:-$(TOP)/dist/sbin/nginx} $(PROVE) -j$(PROVE_JOBS) --timer -r -I t/lib t/

# With a container runtime that answers, the images are built and t/image.t must run (not skip).
test: check dist stock
	@bash scripts/browser-deps.sh
	@bash scripts/container-deps.sh
	@if bash scripts/container-runtime.sh >/dev/null 2>&1; then bash scripts/image.sh || exit 1; export MESH_IMAGE_TEST=1; \
	else echo "image-test: skipped (no podman or docker answers: scripts/container-deps.sh installs podman)"; fi; \
	TEST_NGINX_BINARY=$${TEST_NGINX_BINARY:-$(TOP)/dist/sbin/nginx} $(PROVE) -j$(PROVE_JOBS) --timer -r -I t/lib t/

image: dist
	@bash scripts/image.sh

image-test: image
	@MESH_IMAGE_TEST=1 TEST_NGINX_BINARY=$${TEST_NGINX_BINARY:-$(TOP)/dist/sbin/nginx} $(PROVE) -I t/lib t/image.t

stock: sources
	@bash scripts/build-stock.sh

check: nginx
	@python3 scripts/check-layers.py src
	@$(CARGO) fmt --all --check
	@$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	@$(CARGO) test --locked -p mesh-core -p mesh-agent -p mesh-master

clean:
	rm -rf dist target
