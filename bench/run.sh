#!/usr/bin/env bash
# Runs cio's benchmarks (shared BENCH.md workloads 1-4, and 7-9 when their
# programs exist, plus the socket ping-pong of bench_sockpp and its threads
# baseline, which BENCH.md does not list) 3 times each, pinned to CPU 0, and
# prints a Markdown table of the medians next to the peer figures and the
# targets.
#
#   bench/run.sh [--no-build] [--runs K]
#
# Environment: CIO_BENCH_BUILD (build dir, default <repo>/build-bench).
# Raw RESULT lines and stderr go to $CIO_BENCH_BUILD/bench-log.txt; the table
# is also written to $CIO_BENCH_BUILD/bench-table.md.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${CIO_BENCH_BUILD:-$ROOT/build-bench}
RUNS=3
DO_BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) DO_BUILD=0 ;;
    --runs) RUNS=$2; shift ;;
    *) echo "usage: $0 [--no-build] [--runs K]" >&2; exit 2 ;;
  esac
  shift
done

# --------------------------------------------------------------- build ---
if [ "$DO_BUILD" = 1 ]; then
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
    -DCIO_BUILD_TESTS=OFF -DCIO_BUILD_EXAMPLES=OFF -DCIO_BUILD_BENCH=ON >/dev/null \
    || { echo "run.sh: cmake configure failed" >&2; exit 1; }
  cmake --build "$BUILD" -j2 >/dev/null \
    || { echo "run.sh: build failed (run cmake --build $BUILD to see why)" >&2; exit 1; }
fi
BIN=$BUILD/bench
[ -x "$BIN/bench_switch" ] || { echo "run.sh: no benchmark programs in $BIN" >&2; exit 1; }

LOG=$BUILD/bench-log.txt
TABLE=$BUILD/bench-table.md
: >"$LOG"

# ------------------------------------------------------------- tools ---
PIN=()
if command -v taskset >/dev/null 2>&1; then
  PIN=(taskset -c 0)
else
  echo "run.sh: taskset not found (Debian util-linux): running unpinned" >&2
fi

TIME_BIN=/usr/bin/time
if [ ! -x "$TIME_BIN" ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "run.sh: installing Debian package 'time' for /usr/bin/time" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y time >/dev/null 2>&1 \
    || { apt-get update >/dev/null 2>&1 &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y time >/dev/null 2>&1; }
fi
HAVE_TIME=0
[ -x "$TIME_BIN" ] && HAVE_TIME=1
NOTES=()
[ "$HAVE_TIME" = 1 ] || NOTES+=("RSS skipped: /usr/bin/time is missing and the Debian package 'time' could not be installed.")

# ------------------------------------------------------------ helpers ---
declare -A V   # V[key] = space-separated values of the runs
FAILED=()

# getkey "RESULT ..." key
getkey() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p" | head -n1; }

# add key value
add() { V[$1]="${V[$1]:-} $2"; }

median() {
  # shellcheck disable=SC2086
  printf '%s\n' $1 | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END {
    if (NR == 0) { print "n/a"; exit }
    if (NR % 2) print a[(NR+1)/2]; else printf "%.4g\n", (a[NR/2]+a[NR/2+1])/2 }'
}
med() { median "${V[$1]:-}"; }

# run_bench tag rss(0|1) cmd...: runs once; echoes the RESULT line(s);
# with rss=1 also "RSS_KIB=<n>". Non-zero status on failure.
run_once() {
  local rss=$1; shift
  local out err tf rc
  err=$(mktemp); tf=$(mktemp)
  if [ "$rss" = 1 ] && [ "$HAVE_TIME" = 1 ]; then
    out=$("${PIN[@]}" "$TIME_BIN" -f '%M' -o "$tf" "$@" 2>"$err"); rc=$?
  else
    out=$("${PIN[@]}" "$@" 2>"$err"); rc=$?
  fi
  { echo "\$ $*"; echo "$out"; sed 's/^/  stderr: /' "$err"; } >>"$LOG"
  if [ $rc -ne 0 ] || ! grep -q '^RESULT ' <<<"$out"; then
    echo "run.sh: '$*' failed (status $rc), see $LOG" >&2
    rm -f "$err" "$tf"; return 1
  fi
  grep '^RESULT ' <<<"$out"
  if [ "$rss" = 1 ] && [ "$HAVE_TIME" = 1 ]; then
    echo "RSS_KIB=$(tail -n1 "$tf")"
  fi
  rm -f "$err" "$tf"
}

# collect prefix rss cmd...: RUNS runs; stores prefix.<key> for every key of
# every RESULT line (prefixed by its variant when it has one) and prefix.rss_kib.
collect() {
  local prefix=$1 rss=$2; shift 2
  local i lines line kv k
  for ((i = 1; i <= RUNS; i++)); do
    echo "run.sh: $prefix run $i/$RUNS: $*" >&2
    if ! lines=$(run_once "$rss" "$@"); then FAILED+=("$prefix"); return 1; fi
    while IFS= read -r line; do
      case "$line" in
        RSS_KIB=*) add "$prefix.rss_kib" "${line#RSS_KIB=}" ;;
        RESULT\ *)
          for kv in ${line#RESULT }; do
            k=${kv%%=*}
            case "$k" in bench|variant) continue ;; esac
            add "$prefix.$k" "${kv#*=}"
          done ;;
      esac
    done <<<"$lines"
  done
}

# check value op target -> yes/no/n/a
check() {
  awk -v v="$1" -v t="$3" -v op="$2" 'BEGIN {
    if (v == "n/a" || v == "" || v !~ /^-?[0-9.eE+-]+$/) { print "n/a"; exit }
    ok = (op == "<=") ? (v + 0 <= t + 0) : (v + 0 >= t + 0)
    print ok ? "yes" : "**no**" }'
}
fmt() { awk -v v="$1" -v d="${2:-1}" 'BEGIN { if (v == "n/a" || v == "") print "n/a"; else printf "%.*f\n", d, v }'; }

# ---------------------------------------------------------------- runs ---
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')
collect switch_raw 0 "$BIN/bench_switch" raw
collect switch_yield 0 "$BIN/bench_switch" yield
collect switch_event 0 "$BIN/bench_switch" event
collect spawn 1 "$BIN/bench_spawn"
for n in 0 100000 1000000; do
  collect "sleepers_$n" 1 "$BIN/bench_sleepers" "$n"
done
collect timers_cb 0 "$BIN/bench_timers" callbacks
collect timers_sleep 0 "$BIN/bench_timers" sleep
HAVE_QUEUE=0 HAVE_LOCK=0 HAVE_GEN=0
if [ -x "$BIN/bench_queue" ]; then HAVE_QUEUE=1; collect queue 0 "$BIN/bench_queue"; fi
if [ -x "$BIN/bench_lock" ]; then HAVE_LOCK=1; collect lock 0 "$BIN/bench_lock"; fi
if [ -x "$BIN/bench_gen" ]; then HAVE_GEN=1; collect generator 0 "$BIN/bench_gen"; fi
# Socket ping-pong: one backend per invocation (collect keeps no variant).
HAVE_SOCKPP=0 HAVE_SOCKPP_THREADS=0
if [ -x "$BIN/bench_sockpp" ]; then
  HAVE_SOCKPP=1
  collect sockpp_epoll 0 "$BIN/bench_sockpp" --backend epoll
  collect sockpp_uring 0 "$BIN/bench_sockpp" --backend uring
fi
if [ -x "$BIN/bench_sockpp_threads" ]; then
  HAVE_SOCKPP_THREADS=1
  collect sockpp_threads 0 "$BIN/bench_sockpp_threads"
fi

# --------------------------------------------------------------- table ---
bytes_per_task() { # n
  local r0 rn
  r0=$(med sleepers_0.rss_kib); rn=$(med "sleepers_$1.rss_kib")
  awk -v a="$r0" -v b="$rn" -v n="$1" 'BEGIN {
    if (a == "n/a" || b == "n/a") print "n/a"; else printf "%.0f\n", (b - a) * 1024 / n }'
}

{
  echo "cio benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC'), median of $RUNS runs, pinned: ${PIN[*]:-no}"
  echo "($(uname -m), $(nproc) CPUs; $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'); peers from shared BENCH.md;"
  echo "load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?'): other work on the machine inflates every figure)"
  echo
  echo "| workload | figure | cio (median) | peers (BENCH.md) | target | met |"
  echo "|---|---|---|---|---|---|"

  v=$(med switch_raw.ns_per_switch)
  echo "| switch raw | ns/switch | $(fmt "$v" 2) | asyncio 11.1 (generator send); Boost.Context 4.8 (fcontext) | <= 4.8 (fcontext) | $(check "$v" '<=' 4.8) |"
  v=$(med switch_yield.ns_per_switch)
  echo "| switch yield | ns/switch | $(fmt "$v" 2) | asyncio 1,133; uvloop 657; Go 52.9 (Gosched); Node 522; Tokio 140 | <= 20 | $(check "$v" '<=' 20) |"
  v=$(med switch_event.ns_per_switch)
  echo "| switch event (fresh future per hand-off) | ns/switch | $(fmt "$v" 2) | asyncio 2,212; uvloop 1,546; Go 101 (channels); Node 50 (promises); Tokio 90.6 (Notify) | <= 30 | $(check "$v" '<=' 30) |"
  v=$(med spawn.ns_per_task)
  echo "| spawn 1M | ns/task (total ms) | $(fmt "$v" 1) ($(fmt "$(med spawn.total_ms)" 1)) | asyncio 11,482; uvloop 11,372; Go 943; Node 394; Tokio 203; Boost.Context 42 (one at a time) | <= 100 | $(check "$v" '<=' 100) |"
  if [ "$HAVE_TIME" = 1 ]; then
    echo "| spawn 1M | peak RSS MiB | $(awk -v k="$(med spawn.rss_kib)" 'BEGIN { if (k == "n/a") print k; else printf "%.1f\n", k / 1024 }') | | | |"
  fi
  for n in 100000 1000000; do
    label=$([ "$n" = 100000 ] && echo 100k || echo 1M)
    if [ "$n" = 1000000 ]; then
      peers_b="asyncio 1,151; uvloop 1,151; Go 2,709; Node 453; Tokio 200"
      peers_t="asyncio 13,651; uvloop 13,530; Go 3,152; Node 719; Tokio 193"
      tb="<= 4,608"; tt="<= 1,000"
    else
      peers_b=""; peers_t=""; tb="(1M: <= 4,608)"; tt="(1M: <= 1,000)"
    fi
    b=$(bytes_per_task "$n")
    if [ "$HAVE_TIME" = 1 ]; then
      mb=$([ "$n" = 1000000 ] && check "$b" '<=' 4608 || echo "-")
      sk=$(awk -v s="$(med "sleepers_$n.stack_bytes")" 'BEGIN { if (s == "n/a") print "?"; else printf "%d\n", s / 1024 }')
      echo "| sleepers $label | RSS bytes/task (stack $sk KiB) | $b | $peers_b | $tb | $mb |"
    fi
    v=$(med "sleepers_$n.ns_per_task")
    mt=$([ "$n" = 1000000 ] && check "$v" '<=' 1000 || echo "-")
    echo "| sleepers $label | ns/task to create | $(fmt "$v" 1) | $peers_t | $tt | $mt |"
  done
  t=$(med timers_cb.total_ms); a=$(med timers_cb.arm_ms)
  met=$(awk -v t="$t" -v a="$a" 'BEGIN { if (t == "n/a" || a == "n/a") print "n/a";
        else print (t + 0 <= 1200 && a + 0 <= 100) ? "yes" : "**no**" }')
  echo "| timers 1M call_later | total ms (arm ms) | $(fmt "$t" 1) ($(fmt "$a" 1)) | asyncio 7,461 (1,762); uvloop 5,862 (2,428); Go 2,927 (1,927); Node 1,688 (689); libuv 1,917 (151); Tokio 1,310 (651) | <= 1,200 (<= 100) | $met |"
  t=$(med timers_sleep.total_ms); a=$(med timers_sleep.arm_ms)
  echo "| timers 1M sleeping tasks | total ms (spawn ms) | $(fmt "$t" 1) ($(fmt "$a" 1)) | | (no target) | - |"
  if [ "$HAVE_QUEUE" = 1 ]; then
    v=$(med queue.ns_per_item)
    echo "| queue 10M (capacity $(med queue.capacity)) | ns/item | $(fmt "$v" 1) | asyncio 502; uvloop 504; Go 32.6 (channel); Tokio 57.9 (mpsc) | <= 16 | $(check "$v" '<=' 16) |"
  fi
  if [ "$HAVE_LOCK" = 1 ]; then
    v=$(med lock.ns_per_acquire)
    h=$(med lock.handoffs)
    met=$(awk -v v="$v" -v h="${h%\%}" 'BEGIN { if (v == "n/a" || h == "n/a") print "n/a";
          else print (v + 0 <= 60 && h + 0 >= 100) ? "yes" : "**no**" }')
    echo "| lock 1000x10000 | ns/acquire (handoffs) | $(fmt "$v" 1) ($h) | asyncio 4,622 (100%); uvloop 3,284 (100%); Go 232 (14%); Tokio 367 (100%) | <= 60 (100%) | $met |"
  fi
  if [ "$HAVE_GEN" = 1 ]; then
    v=$(med generator.ns_per_round_trip)
    echo "| generator 10M | ns/round trip | $(fmt "$v" 1) | asyncio 27.5 (send); Node 9.6 (next); Boost.Context 9.4 (2 fcontext jumps) | <= 10 | $(check "$v" '<=' 10) |"
  fi
  if [ "$HAVE_SOCKPP" = 1 ]; then
    v=$(med sockpp_epoll.ns_per_round_trip)
    echo "| socket ping-pong 1M, 64 B (cio, epoll) | ns/round trip | $(fmt "$v" 1) | | (no target) | - |"
    v=$(med sockpp_uring.ns_per_round_trip)
    echo "| socket ping-pong 1M, 64 B (cio, io_uring) | ns/round trip | $(fmt "$v" 1) | | (no target) | - |"
  fi
  if [ "$HAVE_SOCKPP_THREADS" = 1 ]; then
    v=$(med sockpp_threads.ns_per_round_trip)
    c=$(med sockpp_threads.cpus)
    where=$([ "$c" = 1 ] && echo "both threads share 1 CPU" || echo "$c CPUs")
    echo "| socket ping-pong 1M, 64 B (2 threads, blocking; $where) | ns/round trip | $(fmt "$v" 1) | | (no target) | - |"
  fi
  echo
  echo "Sleepers: bytes/task = (RSS(N) - RSS(0)) * 1024 / N from /usr/bin/time -f %M; RSS(0) median $(med sleepers_0.rss_kib) KiB, RSS(100k) $(med sleepers_100000.rss_kib) KiB, RSS(1M) $(med sleepers_1000000.rss_kib) KiB."
  if [ "$HAVE_SOCKPP_THREADS" = 1 ] && [ "$(med sockpp_threads.cpus)" = 1 ]; then
    NOTES+=("socket ping-pong threads baseline: pinned (${PIN[*]}), both threads share one core, so every hand-off is a context switch on it; run bench_sockpp_threads with taskset -c 0,1 for the cross-CPU figure.")
  fi
  for n in "${NOTES[@]}"; do echo "Note: $n"; done
  missing="$( [ $HAVE_QUEUE = 1 ] || printf 'queue ')$( [ $HAVE_LOCK = 1 ] || printf 'lock ')$( [ $HAVE_GEN = 1 ] || printf 'generator ')$( [ $HAVE_SOCKPP = 1 ] || printf 'sockpp ')$( [ $HAVE_SOCKPP_THREADS = 1 ] || printf 'sockpp_threads ')"
  [ -z "$missing" ] || echo "Not run (no program yet): ${missing% }."
  [ ${#FAILED[@]} -eq 0 ] || echo "FAILED: ${FAILED[*]} (see $LOG)"
  echo "All runs (raw values): see $LOG"
} | tee "$TABLE"

[ ${#FAILED[@]} -eq 0 ]
