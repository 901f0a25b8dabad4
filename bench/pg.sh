#!/usr/bin/env bash
# cio-pg's benchmarks (issue 9): query round trips next to Python asyncpg,
# and the task queue's jobs per second next to pgbench running the same SQL,
# all against one PostgreSQL server in one run. Each measurement is repeated
# RUNS times (3 by default; every program once per round, so that drift of
# the shared VM hits them alike) and the medians are printed as one Markdown
# table.
#
#   bench/pg.sh [-n RUNS] [--no-build] [queries] [queue]   (default: both)
#
#   queries  SELECT $1::int round trips per second, cio (bench_pg, epoll and
#            io_uring) next to libpq alone (bench_pg libpq_*, blocking, no
#            loop: the floor) and asyncpg (bench_pg_asyncpg.py, on asyncio
#            and on uvloop): one connection one query at a time (prepared,
#            and unprepared), one connection pipelined, 32 tasks over a pool
#            of 8 connections (asyncpg's pool with and without its reset on
#            release). See bench_pg.c and bench_pg_asyncpg.py for exactly
#            what each side does. Each figure comes with the client's CPU
#            time per query (user + system of the client process): what the
#            library costs, less disturbed by a busy machine than the rate.
#   queue    jobs per second through cio-pg's task queue (bench_pgq: 4
#            producers enqueue, 4 workers claim and complete, empty handler)
#            next to pgbench -c 4 running pgq_pgbench.sql, the same three
#            statements on the same table, with -M extended (unnamed
#            statements, as cio-pg sends them) and -M prepared: the
#            database's own ceiling. The table is vacuumed before each
#            measurement. Left out when cio-pg has no task queue yet.
#
# The server: CIO_PG_DSN when set (nothing is started, stopped or pinned);
# otherwise a throw-away cluster from tests/pg_server.sh, pinned to CPU 1,
# stopped at the end. The programs under test run pinned to CPU 0
# (taskset -c 0), as in BENCH.md's rules (the server is the load side).
# A run takes about 2.5 minutes with RUNS = 3 on a 2-core VM.
#
# Requires libpq-dev and a PostgreSQL server (Debian: postgresql), psql and
# pgbench (Debian 12 ships them with the server), Debian's python3-asyncpg
# and python3-uvloop for /usr/bin/python3 (installed here with apt-get when
# missing and running as root; without uvloop its column stays empty).
#
# Environment: CIO_BENCH_BUILD (build dir, default <repo>/build-bench-pg),
# CIO_PG_DSN. Raw RESULT lines and stderr go to $CIO_BENCH_BUILD/pg-log.txt,
# the table also to $CIO_BENCH_BUILD/pg-table.md.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${CIO_BENCH_BUILD:-$ROOT/build-bench-pg}
PY=/usr/bin/python3
RUNS=3
DO_BUILD=1
TARGETS=()

# Sizes: each measurement takes about a second on a 2-core VM.
SEQ_N=10000       # one connection, one query at a time
PIPE_N=100000     # pipelined
PIPE_B=1000       # queries per sync (cio) / per executemany (asyncpg)
POOL_N=40000      # 32 tasks over 8 connections
POOL_T=32
POOL_C=8
Q_JOBS=5000       # task queue jobs
Q_WORKERS=4       # workers (and producers; pgbench clients)
Q_PGBENCH_S=4     # pgbench seconds per run

usage() {
  sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in
    -n) [ $# -ge 2 ] || usage; RUNS=$2; shift ;;
    --no-build) DO_BUILD=0 ;;
    queries|queue) TARGETS+=("$1") ;;
    *) usage ;;
  esac
  shift
done
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || usage
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(queries queue)
want() { local x; for x in "${TARGETS[@]}"; do [ "$x" = "$1" ] && return 0; done; return 1; }

NOTES=()
note() { NOTES+=("$*"); }

# --------------------------------------------------------------- build ---
BIN=$BUILD/bench
if [ "$DO_BUILD" = 1 ]; then
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCIO_PG=ON \
    -DCIO_BUILD_TESTS=OFF -DCIO_BUILD_EXAMPLES=OFF -DCIO_BUILD_BENCH=ON >/dev/null \
    || { echo "pg.sh: cmake configure failed (is libpq-dev installed?)" >&2; exit 1; }
  cmake --build "$BUILD" -j2 --target bench_pg >/dev/null \
    || { echo "pg.sh: build failed (run cmake --build $BUILD --target bench_pg to see why)" >&2; exit 1; }
  if want queue && [ -f "$ROOT/bench/bench_pgq.c" ]; then
    cmake --build "$BUILD" -j2 --target bench_pgq >/dev/null \
      || { echo "pg.sh: build of bench_pgq failed: the queue is left out" >&2; rm -f "$BIN/bench_pgq"; }
  fi
fi
[ -x "$BIN/bench_pg" ] || { echo "pg.sh: no $BIN/bench_pg" >&2; exit 1; }

# --------------------------------------------------------------- tools ---
apt_install() { # package...
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
  echo "pg.sh: installing Debian package(s) $*" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >/dev/null 2>&1 \
    || { apt-get update >/dev/null 2>&1 &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >/dev/null 2>&1; }
}
HAVE_ASYNCPG=0 HAVE_UVLOOP=0
if want queries; then
  "$PY" -c 'import asyncpg' 2>/dev/null || apt_install python3-asyncpg
  if "$PY" -c 'import asyncpg' 2>/dev/null; then HAVE_ASYNCPG=1
  else note "asyncpg left out: $PY cannot import it and python3-asyncpg could not be installed."; fi
  "$PY" -c 'import uvloop' 2>/dev/null || apt_install python3-uvloop
  if "$PY" -c 'import uvloop' 2>/dev/null; then HAVE_UVLOOP=1
  else note "asyncpg on uvloop left out: python3-uvloop could not be installed."; fi
fi
PGBENCH=$(command -v pgbench || printf '%s\n' /usr/lib/postgresql/*/bin/pgbench | sort -V | tail -1)
[ -x "$PGBENCH" ] || PGBENCH=""

CPUS=$(nproc 2>/dev/null || echo 1)
PIN=()
if command -v taskset >/dev/null 2>&1 && [ "$CPUS" -ge 2 ]; then
  PIN=(taskset -c 0)
else
  note "not pinned (taskset missing or one CPU): client and server share the CPUs."
fi

# -------------------------------------------------------------- server ---
SERVER_DIR=""
stop_server() {
  if [ -n "$SERVER_DIR" ]; then
    bash "$ROOT/tests/pg_server.sh" stop "$SERVER_DIR" >/dev/null 2>&1 || true
    rmdir "$SERVER_DIR" 2>/dev/null || true
  fi
}
trap stop_server EXIT
trap 'exit 130' INT TERM
if [ -n "${CIO_PG_DSN:-}" ]; then
  SERVER_DESC="the given server (CIO_PG_DSN, not pinned)"
else
  SERVER_DIR=$(mktemp -d /tmp/cio-bench-pg.XXXXXX)
  envs=$(bash "$ROOT/tests/pg_server.sh" start "$SERVER_DIR") \
    || { echo "pg.sh: could not start a PostgreSQL server" >&2; exit 1; }
  eval "$envs"
  export CIO_PG_DSN
  # Pin the postmaster and the processes it has forked so far to CPU 1;
  # backends forked later inherit it.
  home=$SERVER_DIR
  [ -f "$SERVER_DIR/home" ] && home=$(cat "$SERVER_DIR/home")
  pm=$(head -1 "$home/data/postmaster.pid" 2>/dev/null || true)
  SERVER_DESC="a throw-away cluster (tests/pg_server.sh)"
  if [ ${#PIN[@]} -gt 0 ] && [[ "$pm" =~ ^[0-9]+$ ]]; then
    for p in "$pm" $(ps -o pid= --ppid "$pm" 2>/dev/null); do
      taskset -a -p -c 1 "$p" >/dev/null 2>&1 || true
    done
    SERVER_DESC="$SERVER_DESC pinned to CPU 1"
  fi
fi
PSQL=$(command -v psql || true)
SERVER_VERSION=$([ -n "$PSQL" ] && "$PSQL" -X -A -t -c 'SHOW server_version' "$CIO_PG_DSN" 2>/dev/null | awk '{ print $1 }')

LOG=$BUILD/pg-log.txt
TABLE=$BUILD/pg-table.md
: >"$LOG"

# ------------------------------------------------------------- helpers ---
declare -A V   # V[key] = the values of the runs, space-separated
FAILED=()

# measure KEY FIELDS CMD...: runs CMD once (pinned), logs its output, and
# appends each field of FIELDS (comma-separated) of its RESULT line to
# V[KEY.field]; on failure notes KEY.
measure() {
  local key=$1 fields=$2; shift 2
  local out rc v f got=()
  out=$("${PIN[@]}" "$@" 2>>"$LOG"); rc=$?
  echo "\$ $* -> $out" >>"$LOG"
  for f in ${fields//,/ }; do
    v=$(sed -n "s/^RESULT .* $f=\([0-9.]*\).*/\1/p" <<<"$out" | head -1)
    [ -n "$v" ] || [ "$rc" != 0 ] || rc=1
    got+=("$f=$v")
  done
  if [ "$rc" != 0 ]; then
    echo "pg.sh: $key failed (status $rc), see $LOG" >&2
    FAILED+=("$key"); return 1
  fi
  for f in "${got[@]}"; do V[$key.${f%%=*}]="${V[$key.${f%%=*}]:-} ${f#*=}"; done
  echo "pg.sh: $key ${got[*]}" >&2
}

median() { # values...: their median, "n/a" for none
  printf '%s\n' "$@" | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END {
    if (NR == 0) { print "n/a"; exit }
    if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'
}
# shellcheck disable=SC2086 # the values are space-separated numbers
med() { median ${V[$1]:-}; }
# num VALUE [DECIMALS]: with thousands separators ("n/a" stays)
num() {
  awk -v v="$1" -v d="${2:-0}" 'BEGIN {
    if (v == "n/a" || v == "") { print "n/a"; exit }
    s = sprintf("%.*f", d, v); i = index(s, "."); if (i == 0) i = length(s) + 1
    head = substr(s, 1, i - 1); tail = substr(s, i)
    while (length(head) > 3 && head ~ /[0-9][0-9][0-9][0-9]$/)
      { tail = "," substr(head, length(head) - 2) tail; head = substr(head, 1, length(head) - 3) }
    print head tail }'
}
# ratio A B: A / B as "1.23x" ("n/a" when either is missing)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || a == "" || b == "" || b == 0) print "n/a"; else printf "%.2fx\n", a / b }'; }
minof() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a") print b; else if (b == "n/a") print a; else print (a + 0 < b + 0 ? a : b) }'; }
maxof() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a") print b; else if (b == "n/a") print a; else print (a + 0 > b + 0 ? a : b) }'; }
# cell KEY: "rate (CPU µs/query)" of a measurement
cell() { echo "$(num "$(med "$1.qps")") ($(num "$(med "$1.cpu_us_per_query")" 1))"; }

# ------------------------------------------------------------- queries ---
run_queries() {
  local be loop w args
  for w in prepared unprepared pipeline pool; do
    case $w in
      prepared|unprepared) args=(-n "$SEQ_N") ;;
      pipeline) args=(-n "$PIPE_N" -b "$PIPE_B") ;;
      pool) args=(-n "$POOL_N" -t "$POOL_T" -c "$POOL_C") ;;
    esac
    for be in epoll uring; do
      measure "cio.$be.$w" qps,cpu_us_per_query env CIO_BACKEND=$be "$BIN/bench_pg" "${args[@]}" "$w"
    done
    # The floor: libpq alone, blocking, no loop (one connection only).
    if [ $w != pool ]; then
      measure "pq.$w" qps,cpu_us_per_query "$BIN/bench_pg" "${args[@]}" "libpq_$w"
    fi
    if [ $w = pipeline ]; then
      measure "pq.pipeline_prepared" qps,cpu_us_per_query "$BIN/bench_pg" "${args[@]}" libpq_pipeline_prepared
    fi
    [ "$HAVE_ASYNCPG" = 1 ] || continue
    for loop in asyncio uvloop; do
      [ $loop = asyncio ] || [ "$HAVE_UVLOOP" = 1 ] || continue
      local lflag=()
      [ $loop = uvloop ] && lflag=(--uvloop)
      measure "apg.$loop.$w" qps,cpu_us_per_query "$PY" "$ROOT/bench/bench_pg_asyncpg.py" "${lflag[@]}" "${args[@]}" "$w"
      if [ $w = pool ]; then
        measure "apg.$loop.pool_noreset" qps,cpu_us_per_query "$PY" "$ROOT/bench/bench_pg_asyncpg.py" \
          "${lflag[@]}" "${args[@]}" pool_noreset
      fi
    done
  done
}

# A row: label, cio workload key, asyncpg workload key. The ratios are
# conservative: the slower cio backend against the faster asyncpg loop, for
# the rate and for the client's CPU time per query.
query_row() {
  local label=$1 w=$2 a=$3 rate cpu floor="-"
  rate=$(ratio "$(minof "$(med "cio.epoll.$w.qps")" "$(med "cio.uring.$w.qps")")" \
               "$(maxof "$(med "apg.asyncio.$a.qps")" "$(med "apg.uvloop.$a.qps")")")
  cpu=$(ratio "$(minof "$(med "apg.asyncio.$a.cpu_us_per_query")" "$(med "apg.uvloop.$a.cpu_us_per_query")")" \
              "$(maxof "$(med "cio.epoll.$w.cpu_us_per_query")" "$(med "cio.uring.$w.cpu_us_per_query")")")
  [ -z "${V[pq.$w.qps]:-}" ] || floor=$(cell "pq.$w")
  [ "$w" != pipeline ] || floor="$floor; prepared: $(cell pq.pipeline_prepared)"
  echo "| $label | $(cell "cio.epoll.$w") | $(cell "cio.uring.$w") | $floor |" \
       "$(cell "apg.asyncio.$a") | $(cell "apg.uvloop.$a") | $rate | $cpu |"
}

# --------------------------------------------------------------- queue ---
HAVE_PGQ=0
PGB_QUEUE="bench_pgbench_$$"
# sql STATEMENT: runs it on the server (psql), its output on stdout.
sql() { "$PSQL" -X -q -A -t -v ON_ERROR_STOP=1 -c "$1" "$CIO_PG_DSN" 2>>"$LOG"; }

run_queue() {
  local be mode out tps left
  for be in epoll uring; do
    sql "VACUUM ANALYZE cio_jobs" >/dev/null
    measure "pgq.$be" jobs_per_s,cpu_us_per_job,shutdown_ms \
      env CIO_BACKEND=$be "$BIN/bench_pgq" -n "$Q_JOBS" -w "$Q_WORKERS" -p "$Q_WORKERS"
  done
  [ -n "$PGBENCH" ] || return 0
  for mode in extended prepared; do
    sql "VACUUM ANALYZE cio_jobs" >/dev/null
    out=$("${PIN[@]}" "$PGBENCH" -n -c "$Q_WORKERS" -j 1 -T "$Q_PGBENCH_S" -M $mode \
          -D q="$PGB_QUEUE" -f "$ROOT/bench/pgq_pgbench.sql" "$CIO_PG_DSN" 2>>"$LOG")
    echo "\$ pgbench -M $mode -> $out" >>"$LOG"
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -1)
    # Jobs a claim missed stay queued (see pgq_pgbench.sql): count them.
    left=$(sql "SELECT count(*) FROM cio_jobs WHERE queue = '$PGB_QUEUE' AND state <> 2")
    sql "DELETE FROM cio_jobs WHERE queue = '$PGB_QUEUE'" >/dev/null
    if [ -z "$tps" ] || [ -z "$left" ]; then
      FAILED+=("pgbench-$mode"); echo "pg.sh: pgbench -M $mode failed, see $LOG" >&2; continue
    fi
    echo "pg.sh: pgbench -M $mode tps=$tps (jobs left unclaimed: $left)" >&2
    V[pgbench.$mode]="${V[pgbench.$mode]:-} $tps"
    V[pgbench.$mode.left]="${V[pgbench.$mode.left]:-} $left"
  done
}

# ---------------------------------------------------------------- runs ---
if want queue; then
  if [ ! -x "$BIN/bench_pgq" ]; then
    note "queue: left out: no bench_pgq (cio-pg's task queue is not built yet)."
  elif [ -z "$PSQL" ]; then
    note "queue: left out: psql not found (Debian: postgresql-client)."
  elif ! "$BIN/bench_pgq" -i 2>>"$LOG"; then
    note "queue: left out: cio_pgq_install failed (see $LOG)."; FAILED+=(pgq-install)
  else
    HAVE_PGQ=1
    [ -n "$PGBENCH" ] || note "queue: pgbench not found (Debian: postgresql-contrib or the server package)."
  fi
fi
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')
for ((r = 1; r <= RUNS; r++)); do
  echo "pg.sh: round $r/$RUNS" >&2
  want queries && run_queries
  [ "$HAVE_PGQ" = 1 ] && run_queue
done

# --------------------------------------------------------------- table ---
{
  echo "cio-pg benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC'), median of $RUNS runs; programs pinned: ${PIN[*]:-no};"
  echo "server: PostgreSQL ${SERVER_VERSION:-?}, $SERVER_DESC, over TCP on 127.0.0.1."
  echo "($(uname -m), $CPUS CPUs; $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?');"
  echo "load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?'))"
  echo
  if want queries; then
    echo "| SELECT \$1::int: queries/s (client CPU µs/query) | cio epoll | cio io_uring | libpq alone, blocking (floor) | asyncpg (asyncio) | asyncpg (uvloop) | rate: cio / asyncpg | CPU/query: asyncpg / cio |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    query_row "one connection, one at a time, prepared ($SEQ_N)" prepared prepared
    query_row "one connection, one at a time, unprepared ($SEQ_N; asyncpg: statement_cache_size=0, 2 round trips)" unprepared unprepared
    query_row "one connection, pipelined, syncs of $PIPE_B ($PIPE_N; asyncpg: executemany, rows discarded)" pipeline pipeline
    query_row "$POOL_T tasks, pool of $POOL_C ($POOL_N; asyncpg: pool.acquire with its reset on release)" pool pool
    query_row "$POOL_T tasks, pool of $POOL_C ($POOL_N; asyncpg: reset on release off)" pool pool_noreset
    echo
  fi
  if [ "$HAVE_PGQ" = 1 ]; then
    pe=$(med pgbench.extended); pp=$(med pgbench.prepared)
    echo "| task queue, $Q_WORKERS workers, empty handler | jobs/s (client CPU µs/job) | vs pgbench -M extended | vs pgbench -M prepared |"
    echo "|---|---:|---:|---:|"
    # shellcheck disable=SC2086 # the values are space-separated numbers
    stuck=$(printf '%s\n' ${V[pgq.epoll.shutdown_ms]:-} ${V[pgq.uring.shutdown_ms]:-} | awk '$1 >= 10000' | wc -l)
    [ "$stuck" = 0 ] || note "queue: in $stuck bench_pgq run(s) the workers did not stop within 10 s of their cancellation (the figures were checked before; see $LOG)."
    for be in epoll uring; do
      v=$(med "pgq.$be.jobs_per_s")
      echo "| cio-pg queue, $be ($Q_JOBS jobs; $Q_WORKERS producers, $Q_WORKERS workers) | $(num "$v") ($(num "$(med "pgq.$be.cpu_us_per_job")" 1)) | $(ratio "$v" "$pe") | $(ratio "$v" "$pp") |"
    done
    if [ -n "$PGBENCH" ]; then
      echo "| pgbench -c $Q_WORKERS -M extended, pgq_pgbench.sql ($Q_PGBENCH_S s; unnamed statements, as cio-pg) | $(num "$pe") | 1.00x | $(ratio "$pe" "$pp") |"
      echo "| pgbench -c $Q_WORKERS -M prepared, pgq_pgbench.sql ($Q_PGBENCH_S s; prepared statements) | $(num "$pp") | $(ratio "$pp" "$pe") | 1.00x |"
      note "pgbench: one transaction = enqueue + claim + complete (3 statements, each committing); claims that found nothing left $(med pgbench.extended.left) (extended) and $(med pgbench.prepared.left) (prepared) jobs queued (median)."
    fi
    echo
  fi
  for n in "${NOTES[@]}"; do echo "Note: $n"; done
  [ ${#FAILED[@]} -eq 0 ] || echo "FAILED: ${FAILED[*]} (see $LOG)"
  echo "All runs (raw values): see $LOG"
} | tee "$TABLE"

[ ${#FAILED[@]} -eq 0 ]
