#!/usr/bin/env bash
# Runs every cargo-fuzz target of turnstile-wire for SECONDS seconds each (default 60), one after
# the other, and prints a summary. Exits non-zero if any target crashed or failed to build.
#
#   bash fuzz/run-all.sh [SECONDS] [TARGET...]      (make fuzz FUZZ_SECONDS=...)
#
# Environment:
#   FUZZ_TOOLCHAIN   rustup toolchain to use (e.g. nightly); default: the default toolchain, with
#                    RUSTC_BOOTSTRAP=1 so that a stable compiler accepts -Zsanitizer=address.
#   FUZZ_ARGS        extra libFuzzer arguments, e.g. "-max_len=65536 -jobs=2".
#
# The committed seeds (fuzz/corpus/<target>/seed-*) are copied into a working corpus under
# fuzz/target/corpus/<target>, which grows from run to run and is never committed. Crashes are
# written to fuzz/artifacts/<target>/, logs to fuzz/target/logs/<target>.log.
set -euo pipefail

seconds=${1:-60}
if [ "$#" -gt 0 ]; then shift; fi
case "$seconds" in
'' | *[!0-9]*)
	echo "usage: $0 [SECONDS] [TARGET...]" >&2
	exit 2
	;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

if ! cargo fuzz --version >/dev/null 2>&1; then
	echo "==> cargo-fuzz not found: cargo install cargo-fuzz --locked"
	cargo install cargo-fuzz --locked
fi

cargo_cmd=(cargo)
if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then
	cargo_cmd=(cargo "+$FUZZ_TOOLCHAIN")
fi
# cargo fuzz builds with -Zsanitizer=address (and -Z flags of libFuzzer's instrumentation), which
# only a nightly compiler accepts; RUSTC_BOOTSTRAP=1 makes the stable one accept them too.
export RUSTC_BOOTSTRAP=1
# Cargo caches what rustc answered to its probes (failures included) without regard to
# RUSTC_BOOTSTRAP: drop that cache so a probe once run without it cannot fail this build.
rm -f target/.rustc_info.json

if [ "$#" -gt 0 ]; then
	targets=("$@")
else
	mapfile -t targets < <("${cargo_cmd[@]}" fuzz list)
fi

# --debug-assertions: overflow checks and debug_assert!s are on, so an arithmetic overflow on
# hostile input is a crash, not a silent wrap.
build_flags=(--debug-assertions)

# -entropic_scale_per_exec_time=1: a few-hundred-byte message can claim a list of ~500k
# zero-sized structs (the traversal limit charges one word each), and walking it takes seconds in
# this instrumented build; without this flag libFuzzer keeps mutating such inputs and the run does
# a hundredth of the executions.
fuzz_flags=(-timeout=10 -print_final_stats=1 -entropic_scale_per_exec_time=1)

echo "==> building ${#targets[@]} targets"
"${cargo_cmd[@]}" fuzz build "${build_flags[@]}"

mkdir -p target/logs
declare -A results
failed=0
for t in "${targets[@]}"; do
	corpus="target/corpus/$t"
	mkdir -p "$corpus"
	cp corpus/"$t"/seed-* "$corpus"/
	log="target/logs/$t.log"
	echo "==> $t: ${seconds}s (corpus $corpus, log $log)"
	# shellcheck disable=SC2086 # FUZZ_ARGS is a list of arguments
	if "${cargo_cmd[@]}" fuzz run "${build_flags[@]}" "$t" "$corpus" -- \
		-max_total_time="$seconds" "${fuzz_flags[@]}" ${FUZZ_ARGS:-} >"$log" 2>&1; then
		status=ok
	else
		status="FAILED (see $log and artifacts/$t/)"
		failed=1
		tail -n 40 "$log" >&2
	fi
	done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
	execs=$(grep -E '^stat::number_of_executed_units:' "$log" | awk '{print $2}' || true)
	results[$t]="$status; execs ${execs:-?}; ${done_line:-no DONE line}"
	echo "    ${results[$t]}"
done

echo
echo "==> summary (${seconds}s per target)"
for t in "${targets[@]}"; do
	printf '%-16s %s\n' "$t" "${results[$t]}"
done
exit "$failed"
