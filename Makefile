# turnstile — the two commands a new user needs are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
FUZZ_SECONDS ?= 60
CONFIG ?=
# Where cargo puts build output; CI points it outside the clone so repeated runs reuse builds.
export CARGO_TARGET_DIR ?= $(CURDIR)/target

.PHONY: run build test fmt-check clippy schema schema-check unit deps bench bench-micro fuzz clean

## run: install what is missing, build in release mode, start turnstile on the embedded default config
run: deps
	$(CARGO) build --release -p turnstile
	$(CARGO_TARGET_DIR)/release/turnstile serve $(if $(CONFIG),--config $(CONFIG),)

build:
	$(CARGO) build --workspace --all-targets

## test: everything CI checks
test: fmt-check clippy schema-check unit

fmt-check:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace

## schema: regenerate crates/wire/src/turnstile_capnp.rs from schema/turnstile.capnp (needs capnp)
schema:
	@command -v capnp >/dev/null || { echo "capnp not found: install Debian's capnproto (apt-get install capnproto)"; exit 1; }
	$(CARGO) run -q -p turnstile-schema-gen

## schema-check: fail when the checked-in generated code differs from the schema
schema-check:
	@command -v capnp >/dev/null || { echo "capnp not found: install Debian's capnproto (apt-get install capnproto); CI installs it"; exit 1; }
	$(CARGO) run -q -p turnstile-schema-gen -- --check

## deps: tools a fresh machine lacks (rustfmt/clippy components; capnp only for `make schema`)
deps:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust with rustup (https://rustup.rs)"; exit 1; }
	@rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy

## bench: criterion micro-benchmarks (prints the capnp/JSON ratio)
bench: bench-micro

bench-micro:
	$(CARGO) bench -p turnstile-benches

## fuzz: every cargo-fuzz target for FUZZ_SECONDS seconds each
fuzz:
	bash fuzz/run-all.sh $(FUZZ_SECONDS)

clean:
	$(CARGO) clean
