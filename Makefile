# http-nas: the two commands that matter are `make run` and `make test`.
LISTEN  ?= 127.0.0.1:3000
STORAGE ?= ./data
CARGO   ?= cargo

.PHONY: run build test lint bench fuzz clean

## run: build (release) and serve $(STORAGE) on $(LISTEN)
run:
	mkdir -p $(STORAGE)
	$(CARGO) run --release -- --listen $(LISTEN) --storage $(STORAGE)

## build: release build of target/release/http-nas
build:
	$(CARGO) build --release

## test: unit tests and integration tests (real binary, real curl)
test:
	$(CARGO) test --all-targets

## lint: formatting and clippy, as CI runs them
lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

## bench: throughput and memory against cat / wc -l / nginx (see benches/)
bench: build
	python3 benches/bench.py

## fuzz: run each cargo-fuzz target for FUZZ_SECS seconds (needs the nightly toolchain)
FUZZ_SECS    ?= 180
FUZZ_TARGETS ?= head chunked api jail
fuzz:
	command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	for target in $(FUZZ_TARGETS); do \
	  $(CARGO) +nightly fuzz run $$target -- -max_total_time=$(FUZZ_SECS) -print_final_stats=0 || exit 1; \
	done

clean:
	$(CARGO) clean
