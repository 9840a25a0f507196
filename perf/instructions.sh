#!/usr/bin/env bash
# Instructions per operation and per request, counted by valgrind's callgrind: figures that the
# noise of a shared machine does not move, where hardware counters are not available (a VM
# without a PMU, where `perf stat -e instructions` says "not supported").
#
#   make bench-instructions                 # both parts; or: bash perf/instructions.sh
#   PARTS=micro bash perf/instructions.sh   # only the micro-benchmarks (or PARTS=server)
#   SCENARIOS=echo-serial OPS="capnp-decode json-decode" bash perf/instructions.sh
#   BUILD=0 bash perf/instructions.sh       # use the release binaries already built
#   KEEP_WORK=1 ...                         # keep the callgrind files (for callgrind_annotate)
#
# 1. Micro-benchmarks: `instructions <op> N` (benches/src/bin/instructions.rs) runs one operation
#    N times. Each operation runs under callgrind at N and at 2N iterations; (Ir(2N) − Ir(N)) / N
#    is its instructions per operation, start-up and set-up cancelled out. Deterministic.
# 2. Whole server, both engines: the server (1 shard / 1 tokio worker) runs under callgrind with
#    instrumentation off; turnstile-load (not under valgrind) warms it up; instrumentation is
#    switched on (`callgrind_control -i on`); then pairs of closed-loop serial windows, a short
#    and a long one, each counted alone (`callgrind_control -z`, load, `-d`). Instructions per
#    request = (Ir(long) − Ir(short)) / (requests(long) − requests(short)): the handshake and
#    close of each window's connection cancel out. Every thread of the server process counts
#    (both engines); agent processes are not under valgrind and do not count.
#    turnstile runs with `spin_us = 0`: with spinning on, the count would measure the spin loop.
#    It also runs with `[shard] max_sleep_ms` set: valgrind 3.19 does not know io_uring_enter can
#    block and runs no other thread of the process while a shard sleeps in it, so the shard must
#    wake up now and then (the bound) and yield.
#
# Writes benches/results/instructions.json and instructions.md (format: benches/README.md).
# Every step has a time limit; the script stops what it started (by process id) when it ends.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CARGO=${CARGO:-cargo}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release
OUT_DIR=${OUT_DIR:-$ROOT/benches/results}
PARTS=${PARTS:-micro server}
OPS=${OPS:-frame-decode capnp-decode json-decode capnp-encode json-encode breaker-check dispatch-3-agents slab-put-get}
MICRO_N=${MICRO_N:-10000}
SCENARIOS=${SCENARIOS:-echo-serial agent1-serial}
PAYLOAD_BYTES=${PAYLOAD_BYTES:-64}
# Seconds of load before counting (instrumentation off, then on), and the two counted windows.
WARMUP_S=${WARMUP_S:-2}
SHORT_S=${SHORT_S:-2}
LONG_S=${LONG_S:-5}
PAIRS=${PAIRS:-3}
# Agents answer in microseconds, but the server under valgrind is ~50x slower: generous timeouts.
AGENT_TIMEOUT_MS=${AGENT_TIMEOUT_MS:-5000}
# turnstile's bound on one sleep in io_uring_enter (see above), in milliseconds.
MAX_SLEEP_MS=${MAX_SLEEP_MS:-2}
READY_TIMEOUT_S=${READY_TIMEOUT_S:-180}
STOP_TIMEOUT_S=60
CONTROL_TIMEOUT_S=60
MICRO_TIMEOUT_S=600
# Quiet time after each window before its dump: the connection's close finishes inside it.
SETTLE_S=1

log() { printf 'instructions: %s\n' "$*" >&2; }
want() { [[ " $PARTS " == *" $1 "* ]]; }

for tool in valgrind callgrind_control; do
    command -v "$tool" >/dev/null || {
        log "$tool not found: install valgrind (Debian: apt-get install valgrind)"
        exit 1
    }
done

if [[ ${BUILD:-1} == 1 ]]; then
    log "building release binaries"
    if want micro; then
        "$CARGO" build --release -q -p turnstile-benches --bin instructions
    fi
    if want server; then
        "$CARGO" build --release -q -p turnstile -p turnstile-baseline -p turnstile-loadgen \
            -p turnstile-agents
    fi
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/turnstile-instructions.XXXXXX")
SERVER_PID=
cleanup() {
    if [[ -n $SERVER_PID ]]; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ ${KEEP_WORK:-0} == 1 ]]; then
        log "callgrind files kept in $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
mkdir -p "$WORK/micro" "$WORK/state" "$OUT_DIR"

# The total Ir of a callgrind output file.
ir_of() { awk '/^(totals|summary):/ { print $2; exit }' "$1"; }

# --- 1. micro-benchmarks ---------------------------------------------------------------------
declare -A OP_IR_N OP_IR_2N OP_PER
if want micro; then
    [[ -x $BIN/instructions ]] || { log "$BIN/instructions is missing: build with BUILD=1"; exit 1; }
    for op in $OPS; do
        for n in "$MICRO_N" $(( 2 * MICRO_N )); do
            timeout "$MICRO_TIMEOUT_S" valgrind --tool=callgrind \
                --callgrind-out-file="$WORK/micro/$op.$n.out" \
                "$BIN/instructions" "$op" "$n" >"$WORK/micro/$op.$n.log" 2>&1 || {
                log "$op at $n iterations failed:"
                cat "$WORK/micro/$op.$n.log" >&2
                exit 1
            }
        done
        OP_IR_N[$op]=$(ir_of "$WORK/micro/$op.$MICRO_N.out")
        OP_IR_2N[$op]=$(ir_of "$WORK/micro/$op.$(( 2 * MICRO_N )).out")
        OP_PER[$op]=$(awk -v a="${OP_IR_N[$op]}" -v b="${OP_IR_2N[$op]}" -v n="$MICRO_N" \
            'BEGIN { printf "%.1f", (b - a) / n }')
        log "$op: ${OP_PER[$op]} instructions per operation"
    done
fi

# --- 2. whole server ---------------------------------------------------------------------------
# A UDP port on 127.0.0.1 nobody listens on.
pick_port() {
    local port
    for _ in $(seq 1 50); do
        port=$(( 20000 + RANDOM % 40000 ))
        if ! ss -Hlun 2>/dev/null | awk '{print $4}' | grep -q ":$port\$"; then
            echo "$port"
            return
        fi
    done
    echo "$(( 20000 + RANDOM % 40000 ))"
}

scenario_agents() { # scenario
    case $1 in
    agent1-*)
        printf '[agents.a1]\ncommand = ["%s", "--socket", "{socket}"]\ntimeout_ms = %s\nfail_mode = "closed"\n\n' \
            "$BIN/turnstile-agent-noop" "$AGENT_TIMEOUT_MS"
        printf '[[routes]]\nid = "default"\nchain = [["a1"]]\n'
        ;;
    esac
}
scenario_load() { # scenario → load generator arguments
    case $1 in
    echo-serial) echo "--mix echo --payload-bytes $PAYLOAD_BYTES" ;;
    agent1-serial) echo "--mix decide" ;;
    *) echo "" ;;
    esac
}

write_config() { # file, port, scenario
    local file=$1 port=$2 scenario=$3 dir
    dir=$(dirname "$file")
    mkdir -p "$dir/run"
    {
        printf '[server]\nlisten = "127.0.0.1:%s"\nshards = 1\nstate_dir = "%s"\nruntime_dir = "%s"\ndrain_timeout_ms = 1000\n\n' \
            "$port" "$WORK/state" "$dir/run"
        # No spinning (else the count measures the spin loop); bounded sleeps (see the top).
        printf '[shard]\nspin = "fixed"\nspin_us = 0\nmax_sleep_ms = %s\n\n' "$MAX_SLEEP_MS"
        scenario_agents "$scenario"
    } >"$file"
}

engine_bin() { case $1 in baseline) echo "$BIN/turnstile-baseline" ;; *) echo "$BIN/turnstile" ;; esac; }
engine_ready() { case $1 in baseline) echo "turnstile-baseline: listening on" ;; *) echo "turnstile: listening on" ;; esac; }

start_server() { # engine, config, log file, callgrind output file
    local engine=$1 config=$2 logf=$3 out=$4 ready deadline
    : >"$logf"
    valgrind --tool=callgrind --instr-atstart=no --fair-sched=yes --callgrind-out-file="$out" \
        "$(engine_bin "$engine")" serve --config "$config" >"$logf" 2>&1 &
    SERVER_PID=$!
    ready=$(engine_ready "$engine")
    deadline=$(( SECONDS + READY_TIMEOUT_S ))
    until grep -q "^$ready" "$logf"; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null || (( SECONDS > deadline )); then
            log "$engine did not start under valgrind within ${READY_TIMEOUT_S}s; its output:"
            cat "$logf" >&2
            exit 1
        fi
        sleep 0.2
    done
}

stop_server() {
    local deadline=$(( SECONDS + STOP_TIMEOUT_S ))
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    while kill -0 "$SERVER_PID" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.2; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

control() { # callgrind_control arguments...
    timeout "$CONTROL_TIMEOUT_S" callgrind_control "$@" "$SERVER_PID" >"$WORK/control.log" 2>&1 || {
        log "callgrind_control $* $SERVER_PID failed:"
        cat "$WORK/control.log" >&2
        exit 1
    }
}

load() { # port, seconds, scenario, json file
    local port=$1 secs=$2 scenario=$3 json=$4
    # shellcheck disable=SC2046 # scenario_load is a list of arguments
    timeout $(( ${secs%.*} + 60 )) "$BIN/turnstile-load" --addr "127.0.0.1:$port" \
        --cert "$WORK/state/dev-cert.pem" --in-flight 1 --connections 1 --warmup-s 0 \
        --duration-s "$secs" $(scenario_load "$scenario") --scenario "$scenario" \
        --json "$json" >"$json.log" 2>&1 || {
        log "$scenario: the load generator failed:"
        cat "$json.log" >&2
        return 1
    }
}

# requests, errors of a load generator record
answered() { awk -F'[:,]' '/"requests_total"/ { r = $2 } /"errors_total"/ { e = $2 } END { printf "%d %d\n", r, e }' "$1"; }

declare -A SRV_PER SRV_SPREAD SRV_PAIRS SRV_MISSING
DUMPS=0
if want server; then
    for b in turnstile turnstile-baseline turnstile-load turnstile-agent-noop; do
        [[ -x $BIN/$b ]] || { log "$BIN/$b is missing: build with BUILD=1"; exit 1; }
    done
    for scenario in $SCENARIOS; do
        [[ -n $(scenario_load "$scenario") ]] || { log "unknown scenario $scenario"; exit 2; }
        for engine in turnstile baseline; do
            key="$scenario:$engine"
            dir="$WORK/$scenario-$engine"
            mkdir -p "$dir"
            port=$(pick_port)
            write_config "$dir/config.toml" "$port" "$scenario"
            log "$scenario on $engine: starting it under callgrind"
            start_server "$engine" "$dir/config.toml" "$dir/server.log" "$dir/callgrind.out"
            DUMPS=0
            if [[ $engine == baseline && -n $(scenario_agents "$scenario") ]] &&
                ! grep -q "through the configured agent chains" "$dir/server.log"; then
                SRV_MISSING[$key]="the baseline has no agent path (it answers allow-all without calling an agent)"
                stop_server
                log "$scenario on $engine: missing (${SRV_MISSING[$key]})"
                continue
            fi
            load "$port" "$WARMUP_S" "$scenario" "$dir/warmup-off.json"
            control -i on
            load "$port" 1 "$scenario" "$dir/warmup-on.json"
            pairs=()
            for pair in $(seq 1 "$PAIRS"); do
                figures=()
                for secs in "$SHORT_S" "$LONG_S"; do
                    control -z
                    json="$dir/pair$pair-$secs.json"
                    load "$port" "$secs" "$scenario" "$json"
                    sleep "$SETTLE_S"
                    control -d "pair$pair-${secs}s"
                    DUMPS=$(( DUMPS + 1 ))
                    dump="$dir/callgrind.out.$DUMPS"
                    for _ in $(seq 1 100); do [[ -s $dump ]] && break; sleep 0.1; done
                    [[ -s $dump ]] || { log "no callgrind dump $dump"; exit 1; }
                    read -r requests errors < <(answered "$json")
                    if (( errors > 0 )); then
                        log "$scenario on $engine: $errors request(s) failed:"
                        cat "$json.log" >&2
                        exit 1
                    fi
                    figures+=("$(ir_of "$dump") $requests")
                done
                read -r ir_s req_s <<<"${figures[0]}"
                read -r ir_l req_l <<<"${figures[1]}"
                per=$(awk -v a="$ir_s" -v b="$ir_l" -v ra="$req_s" -v rb="$req_l" \
                    'BEGIN { printf "%.0f", (b - a) / (rb - ra) }')
                pairs+=("{\"short\": {\"seconds\": $SHORT_S, \"ir\": $ir_s, \"requests\": $req_s}, \"long\": {\"seconds\": $LONG_S, \"ir\": $ir_l, \"requests\": $req_l}, \"instructions_per_request\": $per}")
                log "$scenario on $engine, pair $pair: $per instructions per request ($ir_s Ir / $req_s requests, $ir_l Ir / $req_l requests)"
            done
            stop_server
            SRV_PAIRS[$key]=$(IFS=,; echo "${pairs[*]}")
            # The median of the pairs (the mean of the middle two for an even count), and their
            # spread: (largest − smallest) ÷ median, in per cent.
            read -r "SRV_PER[$key]" "SRV_SPREAD[$key]" < <(printf '%s\n' "${pairs[@]}" |
                sed 's/.*"instructions_per_request": \([0-9.]*\)}$/\1/' | sort -n |
                awk '{ v[NR] = $1 } END {
                    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
                    printf "%.0f %.2f\n", m, (v[NR] - v[1]) / m * 100 }')
        done
    done
fi

# --- results -----------------------------------------------------------------------------------
commit="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || echo ' with uncommitted changes')"
when=$(date -u '+%Y-%m-%d %H:%M UTC')
vg=$(valgrind --version)
ratio() { # a, b → a ÷ b with 2 decimals, or null
    if [[ -n $1 && -n $2 && $1 != null && $2 != null ]]; then
        awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "null" }'
    else
        echo null
    fi
}
or_null() { if [[ -n ${1:-} ]]; then echo "$1"; else echo null; fi; }
or_dash() { if [[ -n ${1:-} && $1 != null ]]; then echo "$1"; else echo "—"; fi; }

json_ops=()
if want micro; then
    for op in $OPS; do
        json_ops+=("    {\"name\": \"$op\", \"iterations\": $MICRO_N, \"ir_n\": ${OP_IR_N[$op]}, \"ir_2n\": ${OP_IR_2N[$op]}, \"instructions_per_op\": ${OP_PER[$op]}}")
    done
fi
json_srv=()
json_ratios=()
if want server; then
    for scenario in $SCENARIOS; do
        for engine in turnstile baseline; do
            key="$scenario:$engine"
            if [[ -n ${SRV_MISSING[$key]:-} ]]; then
                json_srv+=("    {\"name\": \"$scenario\", \"engine\": \"$engine\", \"instructions_per_request\": null, \"pairs\": [], \"missing\": \"${SRV_MISSING[$key]}\"}")
            else
                json_srv+=("    {\"name\": \"$scenario\", \"engine\": \"$engine\", \"instructions_per_request\": ${SRV_PER[$key]}, \"spread_pct\": ${SRV_SPREAD[$key]}, \"pairs\": [${SRV_PAIRS[$key]}]}")
            fi
        done
        json_ratios+=("    \"$scenario\": $(ratio "${SRV_PER[$scenario:turnstile]:-}" "${SRV_PER[$scenario:baseline]:-}")")
    done
fi
join() { local out="" x; for x in "$@"; do out+="${out:+,$'\n'}$x"; done; printf '%s' "$out"; }
{
    printf '{\n'
    printf '  "generated": "%s",\n  "commit": "%s",\n  "valgrind": "%s",\n' "$when" "$commit" "$vg"
    printf '  "machine": {"cores": %s, "kernel": "%s"},\n' "$(nproc)" "$(uname -r)"
    printf '  "settings": {"micro_iterations": %s, "warmup_s": %s, "short_s": %s, "long_s": %s, "pairs": %s, "shards": 1, "spin_us": 0, "max_sleep_ms": %s, "agent_timeout_ms": %s, "payload_bytes": %s},\n' \
        "$MICRO_N" "$WARMUP_S" "$SHORT_S" "$LONG_S" "$PAIRS" "$MAX_SLEEP_MS" "$AGENT_TIMEOUT_MS" "$PAYLOAD_BYTES"
    printf '  "operations": [\n%s\n  ],\n' "$(join "${json_ops[@]}")"
    printf '  "scenarios": [\n%s\n  ],\n' "$(join "${json_srv[@]}")"
    printf '  "ratios": {\n%s\n  }\n' "$(join "${json_ratios[@]}")"
    printf '}\n'
} >"$OUT_DIR/instructions.json"

op_row() { # label, turnstile op, baseline op (or "")
    local t=${OP_PER[$2]:-} b=""
    [[ -n $3 ]] && b=${OP_PER[$3]:-}
    [[ -n $t || -n $b ]] || return 0
    printf '| %s | %s | %s | %s |\n' "$1" "$(or_dash "$t")" "$(or_dash "$b")" "$(or_dash "$(ratio "$t" "$b")")"
}
{
    printf '# Instructions per operation and per request\n\n'
    printf 'Generated by `make bench-instructions` (perf/instructions.sh) on %s; release build of commit %s.\n' "$when" "$commit"
    printf 'Counted by %s (callgrind, `Ir`): instructions executed in user space (what the kernel does for system calls is not counted). The micro-benchmarks are deterministic; whole-server figures move by the spread given below (timers and wake-ups depend on timing), not by the machine'"'"'s load.\n\n' "$vg"
    printf '| operation / scenario | turnstile instructions | baseline instructions | turnstile ÷ baseline |\n|---|---|---|---|\n'
    if want micro; then
        op_row "decode the 20-header request: Cap'n Proto (turnstile) vs JSON (serde_json)" capnp-decode json-decode
        op_row "encode the 20-header request: Cap'n Proto vs JSON" capnp-encode json-encode
        op_row "frame decode (split one frame off a stream buffer)" frame-decode ""
        op_row "circuit breaker check" breaker-check ""
        op_row "dispatch of a three-agent parallel plan (one request)" dispatch-3-agents ""
        op_row "call slab put + get + remove (64 calls live)" slab-put-get ""
    fi
    if want server; then
        for scenario in $SCENARIOS; do
            printf '| %s, whole server, per request | %s | %s | %s |\n' "$scenario" \
                "$(or_dash "${SRV_PER[$scenario:turnstile]:-}")" "$(or_dash "${SRV_PER[$scenario:baseline]:-}")" \
                "$(or_dash "$(ratio "${SRV_PER[$scenario:turnstile]:-}" "${SRV_PER[$scenario:baseline]:-}")")"
        done
    fi
    printf '\n'
    if want micro; then
        printf -- '- Micro-benchmarks: `target/release/instructions <op> N` under callgrind at N = %s and 2N; instructions per operation = (Ir(2N) − Ir(N)) / N, so start-up and set-up cancel out.\n' "$MICRO_N"
    fi
    if want server; then
        printf -- '- Whole server: 1 shard (turnstile) / 1 tokio worker (baseline), same configuration file; the server alone under callgrind, with instrumentation switched on after %s s of warm-up; `turnstile-load` closed loop, 1 request in flight on 1 connection (echo: %s B; decide: 20 headers), not under valgrind. Per pair, a %s s and a %s s window are each counted alone; instructions per request = (Ir(long) − Ir(short)) / (requests(long) − requests(short)), which cancels each window'"'"'s connection handshake and close; the figure is the median of %s pairs (all in `instructions.json`). Every thread of the server process counts; agent processes (agent1: one `turnstile-agent-noop`, timeout %s ms) run natively and do not count.\n' \
            "$WARMUP_S" "$PAYLOAD_BYTES" "$SHORT_S" "$LONG_S" "$PAIRS" "$AGENT_TIMEOUT_MS"
        printf -- '- turnstile runs with `spin_us = 0`: with spinning on, the count would measure the spin loop, not the requests. It also runs with `[shard] max_sleep_ms = %s`: valgrind 3.19 does not know that io_uring_enter can block and runs no other thread of the process while a shard sleeps in it, so the shard bounds its sleeps and yields when one ended idle. Under serial load a sleep ends with a packet, so the bound adds next to nothing to the count.\n' "$MAX_SLEEP_MS"
        spreads=()
        for scenario in $SCENARIOS; do
            for engine in turnstile baseline; do
                if [[ -n ${SRV_MISSING[$scenario:$engine]:-} ]]; then
                    printf -- '- %s on %s: not measured: %s.\n' "$scenario" "$engine" "${SRV_MISSING[$scenario:$engine]}"
                else
                    spreads+=("$scenario on $engine ${SRV_SPREAD[$scenario:$engine]} %")
                fi
            done
        done
        if (( ${#spreads[@]} > 0 )); then
            printf -- '- Spread of the pairs ((largest − smallest) ÷ median): %s.\n' "$(IFS=';'; echo "${spreads[*]}" | sed 's/;/, /g')"
        fi
    fi
} >"$OUT_DIR/instructions.md"
log "wrote $OUT_DIR/instructions.json and $OUT_DIR/instructions.md"
cat "$OUT_DIR/instructions.md"
