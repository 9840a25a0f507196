#!/usr/bin/env bash
# The scenario matrix: turnstile and the tokio + quinn baseline (turnstile-baseline) against the
# same scenarios, in one interleaved run; every claim is a ratio measured in this one run.
#
#   make bench                        # the whole matrix; or: bash perf/bench.sh
#   make bench-quick                  # echo-serial, echo-64, agent1-serial, agent1-64,
#                                     # agents3-serial (< 3 min); or: QUICK=1 bash perf/bench.sh
#   ROUNDS=5 DURATION_S=5 make bench  # more and longer rounds
#   SCENARIOS="echo-serial agent1-serial" bash perf/bench.sh   # a subset
#   BUILD=0 bash perf/bench.sh        # use the release binaries already built
#   BASELINE_AGENTS=0 make bench      # skip the baseline's agent scenarios (recorded as
#                                     # missing, with null figures)
#
# Writes benches/results/latest.json (format: benches/README.md), latest.md (a table of both
# engines and turnstile ÷ baseline ratios, then every run) and latest.svg (latency percentiles),
# through `turnstile-load summarize`, then the README's Performance table from latest.md.
#
# Each run: a configuration written for the scenario (unique port, temporary state and runtime
# directories, agents supervised by the server under test), the server started fresh, the load
# generator run closed loop for WARMUP_S + DURATION_S seconds (delay50-open: open-loop steps at
# rising rates, D50_WARMUP_S + D50_STEP_S each, until p99 exceeds D50_P99_MAX_MS; a ticker
# thread of the load generator keeps the schedule), the server stopped. Engines
# alternate within each round, their order swapped every other round. Everything talks over
# 127.0.0.1 and Unix sockets in a temporary directory; the script stops what it started (by
# process id) when it ends.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CARGO=${CARGO:-cargo}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release
WASM_DIR=$TARGET_DIR/wasm-agents/wasm32-unknown-unknown/release/examples
OUT_DIR=${OUT_DIR:-$ROOT/benches/results}
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    ROUNDS=${ROUNDS:-3}
    DURATION_S=${DURATION_S:-3}
    SCENARIOS=${SCENARIOS:-echo-serial echo-64 agent1-serial agent1-64 agents3-serial}
else
    ROUNDS=${ROUNDS:-4}
    DURATION_S=${DURATION_S:-4}
    SCENARIOS=${SCENARIOS:-echo-serial echo-64 agent1-serial agent1-64 agents3-serial wasm1-serial waf-body-serial delay50-open zero-rtt streams-10k streams-100k}
fi
WARMUP_S=${WARMUP_S:-1}
PAYLOAD_BYTES=${PAYLOAD_BYTES:-64}
BODY_BYTES=${BODY_BYTES:-1024}
CONNECTIONS_64=${CONNECTIONS_64:-4}
SHARDS=${SHARDS:-2}
AGENT_TIMEOUT_MS=${AGENT_TIMEOUT_MS:-200}
BASELINE_AGENTS=${BASELINE_AGENTS:-1}
MAX_OTHER_CORES=${MAX_OTHER_CORES:-0.3}
# The load generator's closed-loop driver: proto (quinn-proto driven directly on one thread,
# GSO-batched sends: the cheaper) or quinn (quinn's high-level API). Open loop, zero-rtt and
# idle-streams always use quinn.
LOADGEN_DRIVER=${LOADGEN_DRIVER:-proto}
# turnstile's shard spin policy (`[shard] spin`, `spin_us`): fixed | adaptive | busy-poll.
SHARD_SPIN=${SHARD_SPIN:-fixed}
SHARD_SPIN_US=${SHARD_SPIN_US:-50}
ZERO_RTT_ITERATIONS=${ZERO_RTT_ITERATIONS:-300}
STREAMS_PER_CONNECTION=${STREAMS_PER_CONNECTION:-1024}
# delay50-open: open-loop steps at rising rates (D50_WARMUP_S + D50_STEP_S each) against a 50 ms
# agent; the answer is the highest rate whose p99 stays at most D50_P99_MAX_MS.
D50_RATES=${D50_RATES:-2000,5000,10000,15000,20000,25000,30000,35000,40000,45000,50000,60000}
D50_P99_MAX_MS=${D50_P99_MAX_MS:-52}
D50_WARMUP_S=${D50_WARMUP_S:-0.5}
D50_STEP_S=${D50_STEP_S:-2}
D50_CONNECTIONS=${D50_CONNECTIONS:-8}
D50_MAX_IN_FLIGHT=${D50_MAX_IN_FLIGHT:-8192}
D50_STREAMS=${D50_STREAMS:-4096}
D50_AGENT_TIMEOUT_MS=${D50_AGENT_TIMEOUT_MS:-1000}
READY_TIMEOUT_S=15

log() { printf 'bench: %s\n' "$*" >&2; }

if (( ROUNDS < 2 )); then
    log "ROUNDS must be at least 2 (medians over interleaved rounds)"
    exit 2
fi

if [[ ${BUILD:-1} == 1 ]]; then
    log "building release binaries"
    "$CARGO" build --release -q -p turnstile -p turnstile-baseline -p turnstile-loadgen \
        -p turnstile-agents
fi
for b in turnstile turnstile-baseline turnstile-load turnstile-agent-noop turnstile-agent-waf \
    turnstile-agent-delay; do
    [[ -x $BIN/$b ]] || { log "$BIN/$b is missing: build with BUILD=1"; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/turnstile-bench.XXXXXX")
SERVER_PID=
cleanup() {
    if [[ -n $SERVER_PID ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/runs" "$WORK/state" "$WORK/cfg" "$OUT_DIR"

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

# Agent tables and routes of each scenario (identical for both engines).
# AGENT_LAYOUT picks where agents run: "" = unpinned, blocking reads (the default);
# "same-core" = pinned to core 0 next to shard 0 (use with SHARDS=1); "busy-poll" = agents spin
# on their reads, pinned to core 1 (use with SHARDS=1, shard on core 0).
agent_noop() { # id
    local extra_args="" pin=""
    case "${AGENT_LAYOUT:-}" in
    same-core) pin='cpus = [0]' ;;
    busy-poll) extra_args=', "--busy-poll"'; pin='cpus = [1]' ;;
    esac
    printf '[agents.%s]\ncommand = ["%s", "--socket", "{socket}"%s]\ntimeout_ms = %s\nfail_mode = "closed"\n%s\n\n' \
        "$1" "$BIN/turnstile-agent-noop" "$extra_args" "$AGENT_TIMEOUT_MS" "$pin"
}
scenario_agents() { # scenario
    case $1 in
    agent1-*)
        agent_noop a1
        printf '[[routes]]\nid = "default"\nchain = [["a1"]]\n'
        ;;
    agents3-*)
        agent_noop a1; agent_noop a2; agent_noop a3
        printf '[[routes]]\nid = "default"\nchain = [["a1", "a2", "a3"]]\n'
        ;;
    wasm1-*)
        printf '[agents.w1]\nwasm = "%s"\ntimeout_ms = %s\nfail_mode = "closed"\n\n' \
            "$WASM_DIR/noop.wasm" "$AGENT_TIMEOUT_MS"
        printf '[[routes]]\nid = "default"\nchain = [["w1"]]\n'
        ;;
    waf-body-*)
        printf '[agents.waf]\ncommand = ["%s", "--socket", "{socket}"]\ntimeout_ms = %s\nfail_mode = "closed"\n\n' \
            "$BIN/turnstile-agent-waf" "$AGENT_TIMEOUT_MS"
        printf '[[routes]]\nid = "default"\nchain = [["waf"]]\n'
        ;;
    delay50-*)
        # 50 ms per call on the agent's timer thread, thousands in flight: the agent plane may
        # keep 4096 calls in flight per shard (the most), the agent accepts 4096 per connection.
        printf '[agents.d50]\ncommand = ["%s", "--socket", "{socket}", "--delay-ms", "50"]\ntimeout_ms = %s\nmax_in_flight = 4096\nfail_mode = "closed"\n\n' \
            "$BIN/turnstile-agent-delay" "$D50_AGENT_TIMEOUT_MS"
        printf '[[routes]]\nid = "default"\nchain = [["d50"]]\n'
        ;;
    esac
}
# [quic] settings of a scenario (identical for both engines). zero-rtt: no Retry, whatever the
# rate of new connections (a Retry costs a round trip that is not what is measured);
# streams-*: the per-connection stream allowance the load generator spreads the streams by.
scenario_quic() {
    case $1 in
    zero-rtt) printf '[quic]\nretry_above_initials_per_sec = 1000000\n\n' ;;
    streams-*) printf '[quic]\nmax_concurrent_bidi_streams = %s\n\n' "$STREAMS_PER_CONNECTION" ;;
    delay50-*) printf '[quic]\nmax_concurrent_bidi_streams = %s\n\n' "$D50_STREAMS" ;;
    esac
}
# scenario → load generator arguments: in flight, connections, request mix (options given here
# override the common ones run_one passes first, such as --warmup-s and --duration-s)
scenario_load() {
    case $1 in
    echo-serial) echo "1 1 --driver $LOADGEN_DRIVER --mix echo --payload-bytes $PAYLOAD_BYTES" ;;
    echo-64) echo "64 $CONNECTIONS_64 --driver $LOADGEN_DRIVER --mix echo --payload-bytes $PAYLOAD_BYTES" ;;
    agent1-serial | agents3-serial | wasm1-serial) echo "1 1 --driver $LOADGEN_DRIVER --mix decide" ;;
    agent1-64) echo "64 $CONNECTIONS_64 --driver $LOADGEN_DRIVER --mix decide" ;;
    waf-body-serial) echo "1 1 --driver $LOADGEN_DRIVER --mix decide --body-bytes $BODY_BYTES" ;;
    delay50-open) echo "$D50_MAX_IN_FLIGHT $D50_CONNECTIONS --mix decide --rates $D50_RATES --p99-max-ms $D50_P99_MAX_MS --max-in-flight $D50_MAX_IN_FLIGHT --warmup-s $D50_WARMUP_S --duration-s $D50_STEP_S" ;;
    zero-rtt) echo "1 1 --mode zero-rtt --iterations $ZERO_RTT_ITERATIONS --payload-bytes $PAYLOAD_BYTES" ;;
    streams-10k) echo "1 1 --mode idle-streams --streams 10000 --streams-per-connection $STREAMS_PER_CONNECTION" ;;
    streams-100k) echo "1 1 --mode idle-streams --streams 100000 --streams-per-connection $STREAMS_PER_CONNECTION" ;;
    *) echo "" ;;
    esac
}
# Engines that run a scenario; the rest are recorded as missing, with the reason.
MISSING=()
scenario_engines() { # scenario → engines on stdout; appends to MISSING (call once per scenario)
    local s=$1
    case $s in
    echo-* | zero-rtt | streams-10k | streams-100k) echo "turnstile baseline" ;;
    agent1-* | agents3-* | waf-body-* | delay50-*)
        if [[ $BASELINE_AGENTS == 1 ]]; then
            echo "turnstile baseline"
        else
            echo "turnstile"
        fi
        ;;
    wasm1-*)
        if [[ -f $WASM_DIR/noop.wasm ]]; then echo "turnstile"; fi
        ;;
    esac
}
scenario_missing() { # scenario → MISSING entries
    local s=$1
    case $s in
    agent1-* | agents3-* | waf-body-* | delay50-*)
        [[ $BASELINE_AGENTS == 1 ]] ||
            MISSING+=("$s:baseline:skipped (BASELINE_AGENTS=0)")
        ;;
    wasm1-*)
        MISSING+=("$s:baseline:WASM agents are turnstile only")
        [[ -f $WASM_DIR/noop.wasm ]] ||
            MISSING+=("$s:turnstile:noop.wasm not built (run make wasm-agents)")
        ;;
    echo-* | zero-rtt | streams-10k | streams-100k) ;;
    *)
        MISSING+=("$s:turnstile:scenario not implemented in perf/bench.sh yet")
        MISSING+=("$s:baseline:scenario not implemented in perf/bench.sh yet")
        ;;
    esac
}

write_config() { # file, port, scenario
    local file=$1 port=$2 scenario=$3 dir
    dir=$(dirname "$file")
    mkdir -p "$dir/run"
    {
        printf '[server]\nlisten = "127.0.0.1:%s"\nshards = %s\nstate_dir = "%s"\nruntime_dir = "%s"\ndrain_timeout_ms = 1000\n\n' \
            "$port" "$SHARDS" "$WORK/state" "$dir/run"
        printf '[shard]\nspin = "%s"\nspin_us = %s\n\n' "$SHARD_SPIN" "$SHARD_SPIN_US"
        scenario_quic "$scenario"
        scenario_agents "$scenario"
    } >"$file"
}

engine_bin() { case $1 in baseline) echo "$BIN/turnstile-baseline" ;; *) echo "$BIN/turnstile" ;; esac; }
engine_ready() { case $1 in baseline) echo "turnstile-baseline: listening on" ;; *) echo "turnstile: listening on" ;; esac; }

start_server() { # engine, config, log file
    local engine=$1 config=$2 logf=$3 ready deadline
    : >"$logf"
    "$(engine_bin "$engine")" serve --config "$config" >"$logf" 2>&1 &
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
run_one() { # engine, scenario
    local engine=$1 scenario=$2 name dir port load in_flight conns header=()
    RUN=$(( RUN + 1 ))
    name=$(printf '%03d-%s-%s' "$RUN" "$scenario" "$engine")
    dir="$WORK/cfg/$name"
    mkdir -p "$dir"
    port=$(pick_port)
    write_config "$dir/config.toml" "$port" "$scenario"
    read -r in_flight conns load <<<"$(scenario_load "$scenario")"
    start_server "$engine" "$dir/config.toml" "$dir/server.log"
    (( HEADER_SHOWN )) && header=(--no-header)
    HEADER_SHOWN=1
    # shellcheck disable=SC2086 # $load is a list of arguments
    "$BIN/turnstile-load" --addr "127.0.0.1:$port" --cert "$WORK/state/dev-cert.pem" \
        --server-pid "$SERVER_PID" --in-flight "$in_flight" --connections "$conns" \
        --warmup-s "$WARMUP_S" --duration-s "$DURATION_S" $load \
        --engine "$engine" --scenario "$scenario" --json "$WORK/runs/$name.json" "${header[@]}" ||
        log "$scenario on $engine: the load generator failed (see above)"
    stop_server "$engine" "$dir/server.log"
}

# The first start generates the development certificate every run then pins.
mkdir -p "$WORK/cfg/cert"
write_config "$WORK/cfg/cert/config.toml" "$(pick_port)" echo-serial
start_server turnstile "$WORK/cfg/cert/config.toml" "$WORK/cfg/cert/server.log"
stop_server turnstile "$WORK/cfg/cert/server.log"

declare -A ENGINES
RUNNABLE=()
for s in $SCENARIOS; do
    scenario_missing "$s"
    e=$(scenario_engines "$s")
    if [[ -n $e && -n $(scenario_load "$s") ]]; then
        ENGINES[$s]=$e
        RUNNABLE+=("$s")
    fi
done

started=$SECONDS
log "scenarios: ${RUNNABLE[*]}; $ROUNDS rounds of ${WARMUP_S}s warm-up + ${DURATION_S}s measured per run"
for round in $(seq 1 "$ROUNDS"); do
    for s in "${RUNNABLE[@]}"; do
        read -r -a pair <<<"${ENGINES[$s]}"
        if (( round % 2 == 0 && ${#pair[@]} == 2 )); then pair=("${pair[1]}" "${pair[0]}"); fi
        for engine in "${pair[@]}"; do run_one "$engine" "$s"; done
    done
done
log "measured in $(( SECONDS - started )) s"

notes=(
    "Generated by \`make $([[ $QUICK == 1 ]] && echo bench-quick || echo bench)\` (perf/bench.sh) on $(date -u '+%Y-%m-%d %H:%M UTC'); release build of commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || echo ' with uncommitted changes')."
    "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), Linux $(uname -r). The load generator, the server and the agents share these cores."
    "Closed loop (load generator driver: $LOADGEN_DRIVER). echo: ${PAYLOAD_BYTES} B payload. decide: a request phase with 20 headers (\`turnstile-load --mix decide\`); waf-body: plus a ${BODY_BYTES} B body in the first frame. *-serial: 1 request in flight on 1 connection; *-64: 64 in flight over $CONNECTIONS_64 connections."
    "Agents: turnstile-agent-noop processes on Unix sockets, supervised by the server under test (timeout ${AGENT_TIMEOUT_MS} ms, fail closed); agents3 = three noop agents in one parallel group. turnstile speaks Cap'n Proto to them, the baseline the agent protocol's JSON encoding (the same agent binaries; the SDK converts JSON to its Cap'n Proto view, which the agent processes pay for). turnstile: $SHARDS shards, \`spin = \"$SHARD_SPIN\"\`, \`spin_us = $SHARD_SPIN_US\`; baseline: $SHARDS tokio worker threads; same configuration file for both."
    "Server CPU per request is the server process's own utime + stime: the agent processes' CPU is not included (it is the same agent binaries for both engines)."
    "zero-rtt: $ZERO_RTT_ITERATIONS iterations per run, each a first connection (full handshake, no ticket) and a resumed one whose echo rides in 0-RTT, timed from connect to the checked response (\`turnstile-load --mode zero-rtt\`); \`retry_above_initials_per_sec = 1000000\`. streams-10k / streams-100k: that many bidirectional streams held open, each with a 5-byte frame header and nothing more, over connections of $STREAMS_PER_CONNECTION streams (\`max_concurrent_bidi_streams\`), one kept free for a probe; bytes per idle stream = server VmRSS added by the streams ÷ streams, read once it stops growing (\`--mode idle-streams\`)."
    "delay50-open: open loop (\`turnstile-load --rates … --p99-max-ms $D50_P99_MAX_MS\`): requests sent on schedule at each rate of $D50_RATES rps in turn (${D50_WARMUP_S} s warm-up + ${D50_STEP_S} s measured per step, over $D50_CONNECTIONS connections, at most $D50_MAX_IN_FLIGHT outstanding), latency from each request's intended send time (coordinated-omission corrected); the search stops at the first step whose p99 (errors counted as infinitely slow) is above $D50_P99_MAX_MS ms; the held rate is the highest step below it (lower median over rounds), its other figures are that step's. One turnstile-agent-delay (50 ms per call, timeout ${D50_AGENT_TIMEOUT_MS} ms); \`max_concurrent_bidi_streams = $D50_STREAMS\`. The load generator, the server and the agent share the machine's cores, so the held rate is a floor for the machine, not the server alone."
    "$ROUNDS rounds, interleaved (engines alternate, their order swapped every other round), each server started fresh for each run; ${WARMUP_S} s warm-up, ${DURATION_S} s measured per run; figures are medians over the rounds. RSS is the server's VmRSS at the end of the measured window."
)
note_args=()
for n in "${notes[@]}"; do note_args+=(--note "$n"); done
missing_args=()
for m in "${MISSING[@]}"; do missing_args+=(--missing "$m"); done
"$BIN/turnstile-load" summarize --baseline baseline --cores "$(nproc)" \
    --max-other-cores "$MAX_OTHER_CORES" \
    --title "turnstile vs the tokio + quinn baseline: scenario matrix" \
    --out-json "$WORK/summary.json" --out-md "$OUT_DIR/latest.md" \
    --out-bench-json "$OUT_DIR/latest.json" --out-svg "$OUT_DIR/latest.svg" \
    "${note_args[@]}" "${missing_args[@]}" "$WORK"/runs/*.json
log "wrote $OUT_DIR/latest.md, $OUT_DIR/latest.json and $OUT_DIR/latest.svg"
# The README's Performance table is generated from latest.md (by default after `make bench` and
# `make bench-quick` writing to benches/results; UPDATE_README=0 to leave it alone).
if [[ ${UPDATE_README:-$([[ $OUT_DIR == "$ROOT/benches/results" ]] && echo 1 || echo 0)} == 1 ]]; then
    bash "$ROOT/perf/readme-performance.sh" "$OUT_DIR/latest.md"
fi
sed -n '/^## Scenario matrix/,/^## Results/p' "$OUT_DIR/latest.md" | sed '$d'
