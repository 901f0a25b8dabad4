#!/usr/bin/env bash
# Network benchmarks of shared BENCH.md: workload 5 (echo) and 6 (http), and
# the memory of 10,000 idle connections. Each server runs pinned to CPU 0
# (taskset -c 0), the load pinned to CPU 1; every measurement is repeated
# (3 times by default, servers interleaved within a round so that drift of
# the shared VM hits them alike) and the medians are printed as a Markdown
# table.
#
#   bench/net.sh [-n RUNS] [--no-build] [TARGET...] [SERVER...]
#
#   TARGET   echo  bench_echo_client, C = 100 and C = 1 (1 s warm-up, 5 s counted)
#            http  wrk -t1 -c100 -d10s --latency after an unrecorded 1 s warm-up
#            idle  VmRSS of the server with 0 and with 10,000 idle connections
#            (none given: all three)
#   SERVER   ceiling (bench_echo_epoll: plain C, no cio; echo and idle only),
#            streams-epoll, protocol-epoll, streams-uring, protocol-uring
#            (none given: all)
#
#   bench/net.sh -n 1 echo            a quick try of the echo table
#   bench/net.sh http streams-epoll   one server, one workload
#
# Requires: taskset (util-linux) and, for `http`, wrk: Debian package `wrk`
# (apt-get install wrk). The script says so and skips http if it is missing.
#
# Figures: msgs/s, req/s and latencies come from the load (the echo client's
# RESULT line, wrk's report). Server CPU per message or request is the
# server's utime + stime (clock ticks of /proc/PID/stat) over the measured
# window divided by the messages or requests of that window: the echo client
# reads /proc/PID/stat itself at its window's boundaries (--server-pid), and
# for wrk the script reads it just before and after the 10 s run. When the
# load's own CPU is near 100% (client_cpu_pct), throughput is the load's
# limit and server CPU per message is the figure that compares (BENCH.md).
# The server CPU % column tells the other case (the server saturated); both
# well below 100% at C = 100 means a third process took the CPUs. The VM is
# shared, so each measurement first waits (30 s at most) until no CPU is
# more than 10% busy; the table says how many started busy anyway.
# Idle: bytes/conn = (VmRSS(10,000) - VmRSS(0)) * 1024 / 10,000 from
# /proc/PID/status; the client makes one echo round trip on each connection
# first, so that every one is accepted and has run its handler once.
#
# Environment: CIO_BENCH_BUILD (build dir, default <repo>/build-bench, shared
# with run.sh), CIO_NET_PORT (default 18080), CIO_NET_ECHO_S (counted echo
# seconds, default 5), CIO_NET_HTTP_S (wrk seconds, default 10),
# CIO_NET_IDLE (idle connections, default 10000). Raw output goes to
# $CIO_BENCH_BUILD/net-log.txt, the table also to net-table.md.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${CIO_BENCH_BUILD:-$ROOT/build-bench}
PORT=${CIO_NET_PORT:-18080}
ECHO_S=${CIO_NET_ECHO_S:-5}
HTTP_S=${CIO_NET_HTTP_S:-10}
IDLE_N=${CIO_NET_IDLE:-10000}
RUNS=3
DO_BUILD=1
TARGETS=()
SERVERS=()
ALL_SERVERS=(ceiling streams-epoll protocol-epoll streams-uring protocol-uring)

usage() {
  sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in
    -n) [ $# -ge 2 ] || usage; RUNS=$2; shift ;;
    --no-build) DO_BUILD=0 ;;
    echo|http|idle) TARGETS+=("$1") ;;
    ceiling|streams-epoll|protocol-epoll|streams-uring|protocol-uring) SERVERS+=("$1") ;;
    *) usage ;;
  esac
  shift
done
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || usage
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(echo http idle)
[ ${#SERVERS[@]} -gt 0 ] || SERVERS=("${ALL_SERVERS[@]}")
want() { local x; for x in "${TARGETS[@]}"; do [ "$x" = "$1" ] && return 0; done; return 1; }

# --------------------------------------------------------------- build ---
BIN=$BUILD/bench
NOTES=()
if [ "$DO_BUILD" = 1 ]; then
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
    -DCIO_BUILD_TESTS=OFF -DCIO_BUILD_EXAMPLES=OFF -DCIO_BUILD_BENCH=ON >/dev/null \
    || { echo "net.sh: cmake configure failed" >&2; exit 1; }
  # The load and the ceiling link no cio: they build whatever state the
  # library is in. The cio servers are built apart, so that a library that
  # does not build yet leaves the ceiling measurable.
  cmake --build "$BUILD" -j2 --target bench_echo_client bench_echo_epoll >/dev/null \
    || { echo "net.sh: building the echo client failed (cmake --build $BUILD --target bench_echo_client)" >&2; exit 1; }
  for t in bench_echo_server bench_http_server; do
    cmake --build "$BUILD" -j2 --target "$t" >/dev/null 2>&1 \
      || NOTES+=("$t did not build (cmake --build $BUILD --target $t): its servers are skipped.")
  done
fi
[ -x "$BIN/bench_echo_client" ] || { echo "net.sh: no $BIN/bench_echo_client" >&2; exit 1; }

# ------------------------------------------------------------- tools ---
PIN0=() PIN1=()
if command -v taskset >/dev/null 2>&1; then
  PIN0=(taskset -c 0) PIN1=(taskset -c 1)
else
  NOTES+=("taskset not found (Debian util-linux): server and load ran unpinned.")
fi
HAVE_WRK=0
if command -v wrk >/dev/null 2>&1; then
  HAVE_WRK=1
elif want http; then
  echo "net.sh: wrk is missing: install it with 'apt-get install wrk' (Debian package wrk); skipping http" >&2
  NOTES+=("http skipped: wrk is missing (apt-get install wrk).")
fi

# 10,000 idle connections need that many descriptors in the server and in
# the client: raise the soft limit as far as the hard one allows.
HARD=$(ulimit -Hn)
if [ "$HARD" = unlimited ] || [ "$HARD" -gt 65536 ]; then ulimit -n 65536; else ulimit -n "$HARD"; fi
if want idle && [ "$(ulimit -n)" -lt $((IDLE_N + 64)) ]; then
  IDLE_N=$(($(ulimit -n) - 64))
  NOTES+=("idle: the descriptor limit ($(ulimit -n), hard $HARD) allows only $IDLE_N connections.")
fi
CLK_TCK=$(getconf CLK_TCK)

LOG=$BUILD/net-log.txt
TABLE=$BUILD/net-table.md
: >"$LOG"

# ------------------------------------------------------------ helpers ---
declare -A V       # V[key] = the values of the runs, space separated
declare -A SKIP    # SKIP[server] = why it cannot run
FAILED=()

getkey() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p" | head -n1; }
add() { V[$1]="${V[$1]:-} $2"; }
median() {
  # shellcheck disable=SC2086
  printf '%s\n' $1 | sed '/^$/d; /n\/a/d' | sort -g | awk '{a[NR]=$1} END {
    if (NR == 0) { print "n/a"; exit }
    if (NR % 2) print a[(NR+1)/2]; else printf "%.6g\n", (a[NR/2]+a[NR/2+1])/2 }'
}
med() { median "${V[$1]:-}"; }
fmt() { awk -v v="$1" -v d="${2:-1}" 'BEGIN { if (v == "n/a" || v == "") print "n/a"; else printf "%.*f\n", d, v }'; }
# thousands separators for counts
big() { awk -v v="$1" 'BEGIN { if (v == "n/a" || v == "") { print "n/a"; exit }
  s = sprintf("%.0f", v); o = ""; while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) } print s o }'; }

# The command line of a server id, for a workload (echo|http).
server_cmd() {
  local id=$1 kind=$2 prog
  prog=$([ "$kind" = http ] && echo bench_http_server || echo bench_echo_server)
  case "$id" in
    ceiling) echo "$BIN/bench_echo_epoll -p $PORT" ;;
    streams-epoll) echo "$BIN/$prog -p $PORT --backend epoll" ;;
    protocol-epoll) echo "$BIN/$prog -p $PORT --backend epoll --protocol" ;;
    streams-uring) echo "$BIN/$prog -p $PORT --backend uring" ;;
    protocol-uring) echo "$BIN/$prog -p $PORT --backend uring --protocol" ;;
  esac
}

SPID=0 SLOG=
# start_server id kind: starts it pinned to CPU 0 and waits until it listens
# (its "listening" line on stderr). Sets SPID; non-zero if it did not start.
start_server() {
  local cmd i
  cmd=$(server_cmd "$1" "$2")
  [ -x "${cmd%% *}" ] || { SKIP[$1.$2]="${cmd%% *} not built"; return 1; }
  SLOG=$(mktemp)
  echo "\$ ${PIN0[*]} $cmd" >>"$LOG"
  # shellcheck disable=SC2086
  "${PIN0[@]}" $cmd 2>"$SLOG" &
  SPID=$!
  for ((i = 0; i < 100; i++)); do
    grep -q 'listening on' "$SLOG" && return 0
    kill -0 "$SPID" 2>/dev/null || break
    sleep 0.05
  done
  SKIP[$1.$2]="did not start: $(head -c 300 "$SLOG" | tr '\n' ' ')"
  stop_server
  return 1
}

# stop_server: SIGTERM (the servers print their counts), SIGKILL after 5 s.
stop_server() {
  local i
  [ "$SPID" != 0 ] || return 0
  kill -TERM "$SPID" 2>/dev/null
  for ((i = 0; i < 100; i++)); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.05; done
  kill -KILL "$SPID" 2>/dev/null
  wait "$SPID" 2>/dev/null
  sed 's/^/  server: /' "$SLOG" >>"$LOG"
  rm -f "$SLOG"
  SPID=0
}
trap 'stop_server; exit 130' INT TERM

# utime + stime of a process in clock ticks (fields 14 and 15 of stat,
# counted after the ")" that ends the command name).
cpu_ticks() {
  local line rest
  read -r line <"/proc/$1/stat" || { echo 0; return; }
  rest=${line##*) }
  # shellcheck disable=SC2086
  set -- $rest
  echo $((${12} + ${13}))
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# The busy % of the busiest CPU over 0.5 s (user..steal of /proc/stat).
cpu_busy() {
  local a b
  a=$(grep -E '^cpu[0-9]+ ' /proc/stat); sleep 0.5; b=$(grep -E '^cpu[0-9]+ ' /proc/stat)
  paste -d' ' <(echo "$a") <(echo "$b") | awk '{
    t1 = 0; t2 = 0; for (i = 2; i <= 9; i++) { t1 += $i; t2 += $(i + 11) }
    dt = t2 - t1; busy = dt > 0 ? 100 * (dt - ($16 + $17 - $5 - $6)) / dt : 0
    if (busy > m) m = busy } END { printf "%d\n", m }'
}

# The VM is shared: before each measurement, wait (30 s at most) until no
# CPU is more than 10% busy, so that other work does not land in the
# window. BUSY_STARTS counts the measurements that started anyway.
BUSY_STARTS=0
wait_quiet() {
  local i b
  for ((i = 0; i < 60; i++)); do
    b=$(cpu_busy)
    [ "$b" -le 10 ] && return 0
  done
  echo "  (started on a busy machine: a CPU was $b% busy)" >>"$LOG"
  BUSY_STARTS=$((BUSY_STARTS + 1))
}

# ---------------------------------------------------------------- echo ---
# echo_run id conns: one counted run of the client against the server.
echo_run() {
  local out
  wait_quiet
  out=$("${PIN1[@]}" "$BIN/bench_echo_client" -p "$PORT" -c "$2" -w 1 -d "$ECHO_S" \
        --cpu --server-pid "$SPID" 2>>"$LOG")
  echo "  C=$2: $out" >>"$LOG"
  if ! grep -q '^RESULT ' <<<"$out"; then FAILED+=("echo $1 C=$2"); return; fi
  local k
  for k in msgs_per_s p50_us p99_us errors client_cpu_pct server_cpu_pct server_us_per_msg; do
    add "echo.$1.$2.$k" "$(getkey "$out" "$k")"
  done
}

# ---------------------------------------------------------------- http ---
# us_of "123.45us" / "1.2ms" / "2.00s" -> microseconds
us_of() { awk -v t="$1" 'BEGIN { v = t + 0; if (t ~ /ms$/) v *= 1000; else if (t ~ /us$/) v *= 1;
  else if (t ~ /s$/) v *= 1000000; print v }'; }

http_run() {
  local url="http://127.0.0.1:$PORT/" out t0 t1 reqs rps p50 p99 errs
  wait_quiet
  "${PIN1[@]}" wrk -t1 -c100 -d1s "$url" >/dev/null 2>&1 # warm-up, not recorded
  t0=$(cpu_ticks "$SPID")
  out=$("${PIN1[@]}" wrk -t1 -c100 -d"${HTTP_S}s" --latency "$url" 2>&1)
  t1=$(cpu_ticks "$SPID")
  printf '%s\n' "$out" | sed 's/^/  wrk: /' >>"$LOG"
  reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  if [ -z "$reqs" ] || [ -z "$rps" ] || [ "$reqs" = 0 ]; then FAILED+=("http $1"); return; fi
  p50=$(us_of "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
  p99=$(us_of "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
  # Socket errors (connect, read, write, timeout) and non-2xx answers.
  errs=$(awk '/Socket errors:/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 }
              /Non-2xx or 3xx/ { n += $NF } END { print n + 0 }' <<<"$out")
  add "http.$1.req_per_s" "$rps"
  add "http.$1.p50_us" "$p50"
  add "http.$1.p99_us" "$p99"
  add "http.$1.errors" "$errs"
  add "http.$1.server_cpu_pct" "$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v s="$HTTP_S" \
      'BEGIN { printf "%.1f\n", d / hz / s * 100 }')"
  add "http.$1.server_us_per_req" "$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$reqs" \
      'BEGIN { printf "%.2f\n", d / hz * 1e6 / n }')"
}

# ---------------------------------------------------------------- idle ---
idle_run() {
  local r0 rn out cpid i
  wait_quiet
  r0=$(rss_kib "$SPID")
  out=$(mktemp)
  "${PIN1[@]}" "$BIN/bench_echo_client" -p "$PORT" --idle "$IDLE_N" -d 120 >"$out" 2>>"$LOG" &
  cpid=$!
  for ((i = 0; i < 1200; i++)); do
    grep -q '^RESULT ' "$out" && break
    kill -0 "$cpid" 2>/dev/null || break
    sleep 0.05
  done
  sleep 0.5 # the last handlers finish their round trip and settle
  rn=$(rss_kib "$SPID")
  kill -TERM "$cpid" 2>/dev/null
  wait "$cpid"
  echo "  idle: RSS(0)=$r0 KiB RSS($IDLE_N)=$rn KiB; $(cat "$out")" >>"$LOG"
  local line n errs
  line=$(grep '^RESULT ' "$out"); rm -f "$out"
  n=$(getkey "$line" idle_conns); errs=$(getkey "$line" errors)
  if [ -z "$n" ] || [ "$n" != "$IDLE_N" ] || [ "$errs" != 0 ]; then
    FAILED+=("idle $1 (${n:-0}/$IDLE_N connections, ${errs:-?} errors)"); return
  fi
  add "idle.$1.rss0" "$r0"
  add "idle.$1.rssn" "$rn"
  add "idle.$1.bytes" "$(awk -v a="$r0" -v b="$rn" -v n="$IDLE_N" 'BEGIN { printf "%.0f\n", (b - a) * 1024 / n }')"
}

# ---------------------------------------------------------------- runs ---
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')
for ((run = 1; run <= RUNS; run++)); do
  for id in "${SERVERS[@]}"; do
    if want echo && start_server "$id" echo; then
      echo "net.sh: run $run/$RUNS: echo $id" >&2
      echo "== run $run echo $id (pid $SPID)" >>"$LOG"
      echo_run "$id" 100
      echo_run "$id" 1
      stop_server
    fi
    if want http && [ "$HAVE_WRK" = 1 ] && [ "$id" != ceiling ] && start_server "$id" http; then
      echo "net.sh: run $run/$RUNS: http $id" >&2
      echo "== run $run http $id (pid $SPID)" >>"$LOG"
      http_run "$id"
      stop_server
    fi
    if want idle && start_server "$id" echo; then
      echo "net.sh: run $run/$RUNS: idle $id" >&2
      echo "== run $run idle $id (pid $SPID)" >>"$LOG"
      idle_run "$id"
      stop_server
    fi
  done
done

# --------------------------------------------------------------- table ---
label() {
  case "$1" in
    ceiling) echo "plain C epoll (ceiling)" ;;
    *) echo "cio ${1%-*}, ${1#*-}" | sed 's/uring$/io_uring/' ;;
  esac
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b + 0 == 0) print "-"; else printf "%.2fx\n", a / b }'; }

{
  echo "cio network benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC'), median of $RUNS runs; server on CPU 0, load on CPU 1"
  echo "($(uname -m), $(nproc) CPUs, kernel $(uname -r); $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?');"
  echo "load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?'))"
  if want echo; then
    echo
    echo "Echo (BENCH.md 5): 64-byte messages, closed loop, 1 s warm-up, ${ECHO_S} s counted."
    echo
    echo "| server | C | msgs/s | p50 µs | p99 µs | server µs/msg | vs ceiling | server CPU % | client CPU % | errors |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for c in 100 1; do
      base=$(med "echo.ceiling.$c.server_us_per_msg")
      for id in "${SERVERS[@]}"; do
        [ -n "${V[echo.$id.$c.msgs_per_s]:-}" ] || continue
        p="echo.$id.$c"
        us=$(med "$p.server_us_per_msg")
        echo "| $(label "$id") | $c | $(big "$(med "$p.msgs_per_s")") | $(fmt "$(med "$p.p50_us")") | $(fmt "$(med "$p.p99_us")") | $(fmt "$us" 2) | $(ratio "$us" "$base") | $(fmt "$(med "$p.server_cpu_pct")") | $(fmt "$(med "$p.client_cpu_pct")") | $(med "$p.errors") |"
      done
    done
  fi
  if want http && [ "$HAVE_WRK" = 1 ]; then
    echo
    echo "HTTP (BENCH.md 6): wrk -t1 -c100 -d${HTTP_S}s --latency after an unrecorded 1 s warm-up."
    echo
    echo "| server | req/s | p50 µs | p99 µs | server µs/req | server CPU % | errors |"
    echo "|---|---|---|---|---|---|---|"
    for id in "${SERVERS[@]}"; do
      [ -n "${V[http.$id.req_per_s]:-}" ] || continue
      p="http.$id"
      echo "| $(label "$id") | $(big "$(med "$p.req_per_s")") | $(fmt "$(med "$p.p50_us")") | $(fmt "$(med "$p.p99_us")") | $(fmt "$(med "$p.server_us_per_req")" 2) | $(fmt "$(med "$p.server_cpu_pct")") | $(med "$p.errors") |"
    done
  fi
  if want idle; then
    echo
    echo "Idle connections: server VmRSS with 0 and with $IDLE_N connections (one echo round trip each, then idle)."
    echo
    echo "| server | RSS(0) KiB | RSS($IDLE_N) KiB | bytes/conn |"
    echo "|---|---|---|---|"
    for id in "${SERVERS[@]}"; do
      [ -n "${V[idle.$id.bytes]:-}" ] || continue
      p="idle.$id"
      echo "| $(label "$id") | $(big "$(med "$p.rss0")") | $(big "$(med "$p.rssn")") | $(big "$(med "$p.bytes")") |"
    done
  fi
  echo
  for k in "${!SKIP[@]}"; do echo "Skipped $k: ${SKIP[$k]}"; done
  [ "$BUSY_STARTS" = 0 ] || echo "Note: $BUSY_STARTS measurements started while another process kept a CPU busy (waited 30 s each for a quiet machine): their figures are less reliable."
  for n in "${NOTES[@]}"; do echo "Note: $n"; done
  [ ${#FAILED[@]} -eq 0 ] || echo "FAILED: ${FAILED[*]} (see $LOG)"
  echo "Raw output: $LOG"
} | tee "$TABLE"

[ ${#FAILED[@]} -eq 0 ]
