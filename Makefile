# turnstile — the two commands a new user needs are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
FUZZ_SECONDS ?= 60
# Where cargo puts build output; CI points it outside the clone so repeated runs reuse builds.
export CARGO_TARGET_DIR ?= $(CURDIR)/target

.PHONY: run build test fmt-check clippy schema schema-check unit deps bench bench-micro bench-echo fuzz clean

## run: install what is missing, build in release mode, start the demo (configs/demo.toml:
## auth, then waf + ratelimit in parallel). CONFIG=file to use another config, CONFIG= for the
## embedded default (no agents).
CONFIG ?= configs/demo.toml
run: deps wasm-agents
	$(CARGO) build --release -p turnstile -p turnstile-agents -p turnstile-client
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

## bench: the scenario matrix, turnstile vs the tokio + quinn baseline, interleaved in one run;
## writes benches/results/latest.{json,md,svg} (format: benches/README.md) and the README table
bench:
	CARGO="$(CARGO)" bash perf/bench.sh

## bench-quick: echo-serial, echo-64, agent1-serial, agent1-64, agents3-serial (< 3 min), same files
.PHONY: bench-quick
bench-quick:
	CARGO="$(CARGO)" QUICK=1 bash perf/bench.sh

## bench-micro: criterion micro-benchmarks (prints the capnp/JSON ratio)
bench-micro:
	$(CARGO) bench -p turnstile-benches

## bench-echo: echo over QUIC, turnstile vs the tokio + quinn baseline, interleaved (~2.5 min);
## writes benches/results/echo-latest.{json,md}
bench-echo:
	CARGO="$(CARGO)" bash perf/bench-echo.sh

## fuzz: every cargo-fuzz target for FUZZ_SECONDS seconds each
fuzz:
	bash fuzz/run-all.sh $(FUZZ_SECONDS)

clean:
	$(CARGO) clean

## bench-instructions: instructions per operation (micro-benchmarks) and per request (echo-serial,
## agent1-serial; turnstile vs the baseline), counted by valgrind's callgrind (~6 min; needs
## valgrind); writes benches/results/instructions.{json,md}. Independent of `make bench`.
.PHONY: bench-instructions
bench-instructions:
	CARGO="$(CARGO)" bash perf/instructions.sh

## bench-uds-floor: the physical floor under an agent call — raw 64 B UDS ping-pong between two
## bare threads, same-core / cross-core, blocking / spinning (~15 s); writes benches/results/uds-floor.json
.PHONY: bench-uds-floor
bench-uds-floor:
	$(CARGO) run --release -q -p turnstile-benches --bin uds-floor -- --json benches/results/uds-floor.json

## wasm-agents: the example WASM agents (noop, waf, header_rewrite) for wasm32-unknown-unknown, in
## $(CARGO_TARGET_DIR)/wasm-agents/wasm32-unknown-unknown/release/examples/*.wasm. The wasm-host
## tests and benches build them the same way (same directory and profile settings) when missing.
.PHONY: wasm-agents
wasm-agents:
	@rustup target list --installed 2>/dev/null | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
	CARGO_TARGET_DIR=$(CARGO_TARGET_DIR)/wasm-agents CARGO_PROFILE_RELEASE_DEBUG=false \
	  CARGO_PROFILE_RELEASE_STRIP=debuginfo \
	  $(CARGO) build --release --target wasm32-unknown-unknown -p turnstile-wasm-agents --examples
