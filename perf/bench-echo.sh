#!/usr/bin/env bash
# Echo benchmark of turnstile's QUIC front door, side by side with the conventional stack
# (turnstile-baseline: tokio multi-thread + quinn), in one interleaved run.
#
#   make bench-echo                  # or: bash perf/bench-echo.sh
#   ROUNDS=5 DURATION_S=10 make bench-echo
#   PERF_STAT=1 make bench-echo      # also count server events per request (perf stat)
#   WAIT_QUIET_S=300 make bench-echo # before each run, wait while other processes load the cores
#                                    # (up to 300 s of waiting in all)
#   BUILD=0 bash perf/bench-echo.sh  # use the release binaries already built
#
# Scenarios: echo-serial (1 request in flight, 1 connection) and echo-64 (64 in flight over
# CONNECTIONS_64 connections), against both engines, each server started fresh for each run,
# the engines interleaved (and their order swapped every other round, so drift over the run hits
# both alike). In echo-serial, turnstile also runs with `[shard] spin = "busy-poll"` and with
# `spin_us = 0` besides the default fixed 50 µs spin; in echo-64 also with `spin_us = 0`, whose
# CPU per request is the shards' work without the CPU burnt spinning. Results: the median over
# rounds, and turnstile ÷ baseline ratios, in benches/results/echo-latest.{json,md}.
#
# Everything talks over 127.0.0.1 only, every run is bounded in time, and the script stops what it
# started (by process id) when it ends.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CARGO=${CARGO:-cargo}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release
OUT_DIR=${OUT_DIR:-$ROOT/benches/results}
ROUNDS=${ROUNDS:-4}
WARMUP_S=${WARMUP_S:-1}
DURATION_S=${DURATION_S:-4}
PAYLOAD_BYTES=${PAYLOAD_BYTES:-64}
CONNECTIONS_64=${CONNECTIONS_64:-4}
SHARDS=${SHARDS:-2}
PERF_STAT=${PERF_STAT:-0}
# Before each run, wait while other processes keep the cores busy; at most this many seconds in all.
WAIT_QUIET_S=${WAIT_QUIET_S:-0}
# Runs during which other processes kept more cores than this busy are left out of the medians
# (while each group keeps two runs); they stay listed.
MAX_OTHER_CORES=${MAX_OTHER_CORES:-0.3}
# Hardware counters (instructions) need a PMU; virtual machines often have none, and perf then
# reports them as unsupported. The software and tracepoint events work everywhere.
PERF_EVENTS=${PERF_EVENTS:-instructions,task-clock,context-switches,cpu-migrations,raw_syscalls:sys_enter,io_uring:io_uring_submit_req}
READY_TIMEOUT_S=10

log() { printf 'bench-echo: %s\n' "$*" >&2; }

if (( ROUNDS < 2 )); then
    log "ROUNDS must be at least 2 (medians over interleaved rounds)"
    exit 2
fi

if [[ ${BUILD:-1} == 1 ]]; then
    log "building release binaries"
    "$CARGO" build --release -q -p turnstile -p turnstile-baseline -p turnstile-loadgen
fi
for b in turnstile turnstile-baseline turnstile-load; do
    [[ -x $BIN/$b ]] || { log "$BIN/$b is missing: build with BUILD=1"; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/turnstile-bench-echo.XXXXXX")
SERVER_PID=
PERF_PID=
cleanup() {
    if [[ -n $PERF_PID ]]; then kill "$PERF_PID" 2>/dev/null || true; fi
    if [[ -n $SERVER_PID ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/runs" "$WORK/state" "$OUT_DIR"

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
PORT=$(pick_port)
ADDR="127.0.0.1:$PORT"

# One configuration per spin setting; everything else identical (and the same for the baseline).
write_config() { # file, [shard] lines
    local file=$1
    shift
    {
        printf '[server]\nlisten = "%s"\nshards = %s\nstate_dir = "%s"\ndrain_timeout_ms = 1000\n\n' \
            "$ADDR" "$SHARDS" "$WORK/state"
        printf '[shard]\n'
        printf '%s\n' "$@"
    } >"$file"
}
write_config "$WORK/default.toml" 'spin = "fixed"' 'spin_us = 50'
write_config "$WORK/busy-poll.toml" 'spin = "busy-poll"'
write_config "$WORK/spin0.toml" 'spin = "fixed"' 'spin_us = 0'

# engine name → binary and configuration
engine_bin() { case $1 in baseline) echo "$BIN/turnstile-baseline" ;; *) echo "$BIN/turnstile" ;; esac; }
engine_ready() { case $1 in baseline) echo "turnstile-baseline: listening on" ;; *) echo "turnstile: listening on" ;; esac; }
engine_config() {
    case $1 in
    turnstile-busypoll) echo "$WORK/busy-poll.toml" ;;
    turnstile-spin0) echo "$WORK/spin0.toml" ;;
    *) echo "$WORK/default.toml" ;;
    esac
}

start_server() { # engine, log file
    local engine=$1 logf=$2 ready deadline
    : >"$logf"
    "$(engine_bin "$engine")" serve --config "$(engine_config "$engine")" >"$logf" 2>&1 &
    SERVER_PID=$!
    ready=$(engine_ready "$engine")
    deadline=$(( SECONDS + READY_TIMEOUT_S ))
    until grep -q "^$ready" "$logf"; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null || (( SECONDS > deadline )); then
            log "$engine did not start; its output:"
            cat "$logf" >&2
            exit 1
        fi
        sleep 0.05
    done
}

stop_server() { # engine, log file
    local engine=$1 logf=$2 rc=0
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" || rc=$?
    SERVER_PID=
    if (( rc != 0 )); then
        log "$engine exited with status $rc; its output:"
        cat "$logf" >&2
        exit 1
    fi
}

RUN=0
HEADER_SHOWN=0
run_one() { # engine, scenario, in flight, connections
    local engine=$1 scenario=$2 in_flight=$3 conns=$4 name logf header=()
    RUN=$(( RUN + 1 ))
    name=$(printf '%02d-%s-%s' "$RUN" "$scenario" "$engine")
    logf="$WORK/$name.log"
    wait_quiet
    start_server "$engine" "$logf"
    if [[ $PERF_STAT == 1 ]]; then
        # Counts over (about) the measured window: starts after the warm-up, lasts the window.
        ( sleep "$WARMUP_S" && exec perf stat -x, -e "$PERF_EVENTS" \
            -p "$SERVER_PID" -o "$WORK/runs/$name.perf" -- sleep "$DURATION_S" ) 2>/dev/null &
        PERF_PID=$!
    fi
    (( HEADER_SHOWN )) && header=(--no-header)
    HEADER_SHOWN=1
    "$BIN/turnstile-load" --addr "$ADDR" --cert "$WORK/state/dev-cert.pem" \
        --server-pid "$SERVER_PID" --in-flight "$in_flight" --connections "$conns" \
        --warmup-s "$WARMUP_S" --duration-s "$DURATION_S" --payload-bytes "$PAYLOAD_BYTES" \
        --engine "$engine" --scenario "$scenario" --json "$WORK/runs/$name.json" "${header[@]}"
    if [[ -n $PERF_PID ]]; then
        wait "$PERF_PID" || true
        PERF_PID=
    fi
    stop_server "$engine" "$logf"
}

# The first start generates the development certificate every run then pins.
start_server turnstile "$WORK/cert.log"
stop_server turnstile "$WORK/cert.log"

# Cores busy over half a second, all processes (from /proc/stat; ticks per second from getconf).
machine_busy() {
    local a b hz
    hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
    a=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $3}' /proc/stat)
    sleep 0.5
    b=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $3}' /proc/stat)
    awk -v a="$a" -v b="$b" -v hz="$hz" 'BEGIN {
        split(a, x, " "); split(b, y, " ");
        printf "%.2f cores busy (%.2f at positive nice)", 2 * (y[1] - x[1]) / hz, 2 * (y[2] - x[2]) / hz }'
}
# With WAIT_QUIET_S > 0: before the first run and before each run, wait while other processes
# keep more than 0.25 cores busy, until WAIT_QUIET_S seconds of waiting in total are used up.
QUIET_DEADLINE=$(( SECONDS + WAIT_QUIET_S ))
wait_quiet() {
    local now
    (( WAIT_QUIET_S > 0 )) || return 0
    while (( SECONDS < QUIET_DEADLINE )); do
        now=$(machine_busy)
        awk -v b="${now%% *}" 'BEGIN { exit !(b < 0.25) }' && return 0
        log "waiting for a quiet machine: $now"
        sleep 1
    done
}
wait_quiet
BACKGROUND=$(machine_busy)
log "before the runs, with no server running: $BACKGROUND"

started=$SECONDS
log "listening address $ADDR; $ROUNDS rounds of ${WARMUP_S}s warm-up + ${DURATION_S}s measured per run"
for round in $(seq 1 "$ROUNDS"); do
    if (( round % 2 )); then pair=(turnstile baseline); else pair=(baseline turnstile); fi
    for engine in "${pair[@]}"; do run_one "$engine" echo-serial 1 1; done
    for engine in "${pair[@]}"; do run_one "$engine" echo-64 64 "$CONNECTIONS_64"; done
    run_one turnstile-spin0 echo-64 64 "$CONNECTIONS_64"
    run_one turnstile-busypoll echo-serial 1 1
    run_one turnstile-spin0 echo-serial 1 1
done
log "measured in $(( SECONDS - started )) s"

notes=(
    "Generated by \`make bench-echo\` (perf/bench-echo.sh) on $(date -u '+%Y-%m-%d %H:%M UTC'); release build of commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || echo ' with uncommitted changes')."
    "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), Linux $(uname -r)."
    "Core layout: the load generator and the server share the same $(nproc) cores. turnstile pins its $SHARDS shards to cores 0 and 1 (one io_uring ring + quinn-proto endpoint each); the baseline runs $SHARDS tokio worker threads, unpinned; the load generator is one unpinned thread (quinn on a current-thread tokio runtime)."
    "Closed loop; echo payload $PAYLOAD_BYTES bytes; echo-serial: 1 request in flight on 1 connection; echo-64: 64 in flight over $CONNECTIONS_64 connections (one UDP socket each, so SO_REUSEPORT spreads them over the shards)."
    "$ROUNDS rounds, interleaved (turnstile, baseline, … with the order swapped every other round), each server started fresh for each run; ${WARMUP_S} s warm-up, ${DURATION_S} s measured per run; figures are medians over the rounds."
    "turnstile = default \`[shard] spin = \"fixed\"\`, \`spin_us = 50\`; turnstile-busypoll = \`spin = \"busy-poll\"\`; turnstile-spin0 = \`spin = \"fixed\"\`, \`spin_us = 0\` (sleep as soon as idle)."
    "Same configuration file, certificate, QUIC transport settings and allocator (mimalloc) for both engines."
    "Background load measured just before the runs (no server running): $BACKGROUND. The \`other processes\` column shows it during each run: anything above ~0.1 core is competing work (e.g. builds), and makes that run noisier."
)

if [[ $PERF_STAT == 1 ]]; then
    # Server events per measured request, per run (counts taken over about the same window).
    for f in "$WORK"/runs/*.perf; do
        [[ -e $f ]] || continue
        json=${f%.perf}.json
        req=$(grep -o '"requests": [0-9]*' "$json" | head -1 | grep -o '[0-9]*$')
        [[ -n $req && $req -gt 0 ]] || continue
        per_req=$(awk -F, -v r="$req" '
            $1 ~ /^[0-9.]+$/ { printf "%s%s %.2f", sep, $3, $1 / r; sep = ", " }
            $1 ~ /not supported/ { printf "%s%s unsupported", sep, $3; sep = ", " }' "$f")
        notes+=("perf stat of the server, $(basename "${f%.perf}"), per request: $per_req.")
    done
fi

note_args=()
for n in "${notes[@]}"; do note_args+=(--note "$n"); done
"$BIN/turnstile-load" summarize --baseline baseline --cores "$(nproc)" \
    --max-other-cores "$MAX_OTHER_CORES" \
    --title "Echo benchmark: turnstile front door vs tokio + quinn baseline" \
    --out-json "$OUT_DIR/echo-latest.json" --out-md "$OUT_DIR/echo-latest.md" \
    "${note_args[@]}" "$WORK"/runs/*.json
log "wrote $OUT_DIR/echo-latest.md and $OUT_DIR/echo-latest.json"
sed -n '/^## Results/,/^## Every run/p' "$OUT_DIR/echo-latest.md" | sed '$d'
