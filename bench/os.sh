#!/usr/bin/env bash
# The operating-system benchmarks of cio (issue 8): the process pool, the
# subprocess spawn/wait/reap round trip next to Python asyncio, file reads
# under load on both backends, and run_coroutine_threadsafe round trips. Each prints RESULT lines and a
# Markdown table of the medians of RUNS runs.
#
#   bench/os.sh [-n RUNS] [pool|subprocess|files|threads ...]   (default: all four)
#
# Environment: CIO_BENCH_BUILD (build dir, default <repo>/build-bench).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${CIO_BENCH_BUILD:-$ROOT/build-bench}
RUNS=3
while getopts n: opt; do
  case $opt in
    n) RUNS=$OPTARG ;;
    *) echo "usage: $0 [-n RUNS] [pool|subprocess|files|threads ...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || set -- pool subprocess files threads

cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
  -DCIO_BUILD_TESTS=OFF -DCIO_BUILD_EXAMPLES=OFF -DCIO_BUILD_BENCH=ON >/dev/null \
  || { echo "os.sh: cmake configure failed" >&2; exit 1; }
cmake --build "$BUILD" -j2 >/dev/null \
  || { echo "os.sh: build failed (run cmake --build $BUILD to see why)" >&2; exit 1; }
BIN=$BUILD/bench

# median VALUES...: the median of the numbers given.
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# ------------------------------------------------------------ pool ---
bench_pool() {
  # bench_process_pool on both backends, one worker per core: 10,000 small
  # jobs (jobs/s), seed 003's CPU-bound job (speed-up over one process; it
  # needs the cores to itself: a loaded machine shows less), and a 64 MiB
  # argument and result round trip.
  local be line jps us sp one pool big i
  echo "| workload | backend | median of $RUNS |"
  echo "| --- | --- | --- |"
  for be in epoll uring; do
    local -a JPS=() US=() SP=() ONE=() POOL=() BIGMS=()
    for ((i = 0; i < RUNS; i++)); do
      while read -r line; do
        echo "$line" >&2
        case $line in
          *bench=process_pool_small*)
            jps=${line##*jobs_per_s=}; JPS+=("${jps%% *}")
            us=${line##*us_per_job=}; US+=("${us%% *}") ;;
          *bench=process_pool_cpu_bound*)
            sp=${line##*speedup=}; SP+=("${sp%% *}")
            one=${line##*one_process_ms=}; ONE+=("${one%% *}")
            pool=${line##*pool_ms=}; POOL+=("${pool%% *}") ;;
          *bench=process_pool_big*)
            big=${line##*round_trip_ms=}; BIGMS+=("${big%% *}") ;;
        esac
      done < <(CIO_BACKEND=$be "$BIN/bench_process_pool" | grep '^RESULT')
    done
    if [ ${#JPS[@]} -eq 0 ] || [ ${#SP[@]} -eq 0 ] || [ ${#BIGMS[@]} -eq 0 ]; then
      echo "pool: bench_process_pool failed on $be" >&2
      continue
    fi
    echo "| process pool, 10,000 small jobs round trip | $be | $(median "${JPS[@]}") jobs/s ($(median "${US[@]}") µs/job) |"
    echo "| process pool, seed 003 CPU-bound (20 sums), $(nproc) cores | $be | speed-up $(median "${SP[@]}")x ($(median "${ONE[@]}") ms -> $(median "${POOL[@]}") ms) |"
    echo "| process pool, 64 MiB argument and result round trip | $be | $(median "${BIGMS[@]}") ms |"
  done
}

# ------------------------------------------------------ subprocess ---
bench_subprocess() {
  # 1,000 sequential spawn + wait + reap of /bin/true: cio (both backends),
  # the plain posix_spawn + waitpid floor, and Python asyncio's
  # create_subprocess_exec + wait on the same machine.
  local n=1000 i line epoll=() uring=() raw=() py=()
  command -v python3 >/dev/null || { echo "subprocess: python3 not found" >&2; return 1; }
  for ((i = 0; i < RUNS; i++)); do
    while read -r line; do
      echo "$line"
      case $line in
        *bench=subprocess\ *) epoll+=("${line##*ms_per_child=}") ;;
        *bench=subprocess_raw\ *) raw+=("${line##*ms_per_child=}") ;;
      esac
    done < <(CIO_BACKEND=epoll "$BIN/bench_subprocess" "$n" | grep '^RESULT')
    line=$(CIO_BACKEND=uring "$BIN/bench_subprocess" "$n" | grep '^RESULT bench=subprocess ')
    echo "$line (uring)"
    uring+=("${line##*ms_per_child=}")
    line=$(python3 "$ROOT/bench/subprocess_asyncio.py" "$n" | grep '^RESULT')
    echo "$line"
    py+=("${line##*ms_per_child=}")
  done
  [ ${#epoll[@]} -eq "$RUNS" ] && [ ${#uring[@]} -eq "$RUNS" ] && [ ${#py[@]} -eq "$RUNS" ] \
    || { echo "subprocess: a run failed" >&2; return 1; }
  local me mu mr mp
  me=$(median "${epoll[@]}"); mu=$(median "${uring[@]}")
  mr=$(median "${raw[@]}"); mp=$(median "${py[@]}")
  echo
  # The floor is the kernel's fork/exec/exit of /bin/true: what a library
  # adds is the time above it, shown in the last column.
  echo "| subprocess: spawn + wait + reap /bin/true, $n in a row (median of $RUNS) | ms per child | Python asyncio / this | above the floor (ms) |"
  echo "| --- | ---: | ---: | ---: |"
  awk -v e="$me" -v u="$mu" -v r="$mr" -v p="$mp" 'BEGIN {
    printf "| cio, epoll | %.4f | %.2fx | %.4f |\n", e, p / e, e - r
    printf "| cio, io_uring | %.4f | %.2fx | %.4f |\n", u, p / u, u - r
    printf "| posix_spawn + waitpid, no loop (the floor) | %.4f | %.2fx | 0 |\n", r, p / r
    printf "| Python asyncio create_subprocess_exec | %.4f | 1.00x | %.4f |\n", p, p - r
  }'
}

# ----------------------------------------------------------- files ---
bench_files() {
  # bench_file reads a 1 GiB file (made once in $CIO_BENCH_DIR, default /tmp)
  # in 1 MiB chunks while 1,000 tasks yield; RUNS runs per backend, from the
  # page cache (warm) and from the disk (cold: evicted before each run).
  local be cache flag out
  echo "files: $RUNS runs per backend; file in ${CIO_BENCH_DIR:-/tmp}" >&2
  echo
  echo "| backend | cache | MB/s | worst stall (us) | p99 iteration (us) | control worst (us) | plain read MB/s |"
  echo "|---|---|---|---|---|---|---|"
  for cache in warm cold; do
    flag=''
    [ "$cache" = cold ] && flag=--cold
    for be in epoll uring; do
      local rate=() stall=() p99=() ctl=() plain=()
      for _ in $(seq "$RUNS"); do
        out=$(CIO_BACKEND=$be "$BIN/bench_file" $flag 2>/dev/null | grep '^RESULT') \
          || { echo "files: bench_file failed ($be, $cache)" >&2; return 1; }
        echo "$out" >&2
        rate+=("$(sed -n 's/.* mb_s=\([0-9.]*\).*/\1/p' <<<"$out")")
        stall+=("$(sed -n 's/.* worst_stall_us=\([0-9.]*\).*/\1/p' <<<"$out")")
        p99+=("$(sed -n 's/.* p99_iter_us=\([0-9.]*\).*/\1/p' <<<"$out")")
        ctl+=("$(sed -n 's/.* control_worst_us=\([0-9.]*\).*/\1/p' <<<"$out")")
        plain+=("$(sed -n 's/.* plain_mb_s=\([0-9.]*\).*/\1/p' <<<"$out")")
      done
      echo "| $be | $cache | $(median "${rate[@]}") | $(median "${stall[@]}") |" \
           "$(median "${p99[@]}") | $(median "${ctl[@]}") | $(median "${plain[@]}") |"
    done
  done
}

# --------------------------------------------------------- threads ---
bench_threads() {
  # bench_threadsafe: 20,000 submissions to a loop in another thread, each
  # awaited from a plain thread, from a task of another loop, and pipelined.
  local be mode v out
  echo
  echo "| run_coroutine_threadsafe, 20,000 each (median of $RUNS) | epoll | io_uring |"
  echo "| --- | ---: | ---: |"
  declare -A res
  for be in epoll uring; do
    for ((i = 0; i < RUNS; i++)); do
      out=$(CIO_BACKEND=$be "$BIN/bench_threadsafe" 20000) || { echo "threads: bench_threadsafe failed" >&2; return 1; }
      echo "$out" >&2
      for mode in thread task pipelined; do
        v=$(sed -n "s/.*mode=$mode .*ns_per_op=\([0-9.]*\).*/\1/p" <<<"$out")
        res[$be.$mode]="${res[$be.$mode]:-} $v"
      done
    done
  done
  for mode in thread task pipelined; do
    case $mode in
      thread) label="round trip, a plain thread blocking (µs)" ;;
      task) label="round trip, a task of another loop awaiting (µs)" ;;
      pipelined) label="submission alone, pipelined (µs)" ;;
    esac
    # shellcheck disable=SC2086 # the lists are space-separated numbers
    printf '| %s | %.2f | %.2f |\n' "$label" \
      "$(awk '{print $1/1000}' <<<"$(median ${res[epoll.$mode]})")" \
      "$(awk '{print $1/1000}' <<<"$(median ${res[uring.$mode]})")"
  done
}

for w in "$@"; do
  case $w in
    pool) bench_pool ;;
    subprocess) bench_subprocess ;;
    files) bench_files ;;
    threads) bench_threads ;;
    *) echo "os.sh: unknown workload $w" >&2; exit 2 ;;
  esac
done
