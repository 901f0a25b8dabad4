#!/bin/sh
# Runs every example in order, one header line each, and prints each one's
# wall time. Builds nothing: build first, e.g. from the repository root
#
#   cmake -S . -B build && cmake --build build -j && examples/tour.sh build
#
# Usage: tour.sh [BUILD_DIR]   (default: ../build next to this script)
# Exits non-zero if any example fails (after running all of them).
set -u

here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
bin=$build/examples
if [ ! -d "$bin" ]; then
    echo "tour.sh: no $bin; build the project first (see the top of $0)" >&2
    exit 2
fi

# name and arguments, in the order of the guide; leading VAR=value words
# are set in the example's environment (CIO_BACKEND=uring: io_uring)
examples='hello
say_after
say_after tasks
nested
factorial
display_date
wait_for
shield
timeout
runner
run_until_complete
to_thread
asyncq
chained
rand
chess
producer_consumer
producer_consumer 001
multi_yield
file_stream
tail_follow --selftest
CIO_BACKEND=uring tail_follow --selftest
sock_echo
sock_echo uring
echo_server --selftest
CIO_BACKEND=uring echo_server --selftest
echo_client --selftest
echo_protocol --selftest
CIO_BACKEND=uring echo_protocol --selftest
chat --selftest
CIO_BACKEND=uring chat --selftest
http_hello --selftest
CIO_BACKEND=uring http_hello --selftest
fetcher -n 20
fetcher_threads -n 20
fetcher_threads --to-thread -n 20
unix_echo
ls_capture
CIO_BACKEND=uring ls_capture
cpu_bound
ctrl_c --selftest
CIO_BACKEND=uring ctrl_c --selftest'

failed=''

# run_one TITLE [VAR=value...] NAME [ARG...]: runs one example with its
# header and footer lines, and remembers a failure.
run_one() {
    title=$1
    shift
    envs=''
    while [ $# -gt 1 ]; do
        case $1 in
        *=*) envs="$envs $1"; shift ;;
        *) break ;;
        esac
    done
    name=$1
    shift
    printf '\n=== %s ===\n' "$title"
    start=$(date +%s.%N)
    if [ -x "$bin/$name" ]; then
        # shellcheck disable=SC2086 # one word per assignment
        env $envs "$bin/$name" "$@" </dev/null # stdin carries the list
        rc=$?
    else
        echo "tour.sh: $bin/$name is missing" >&2
        rc=127
    fi
    end=$(date +%s.%N)
    wall=$(echo "$start $end" | awk '{ printf "%.2f", $2 - $1 }')
    if [ "$rc" -eq 0 ]; then
        printf -- '--- %s: ok, %s s\n' "$title" "$wall"
    else
        printf -- '--- %s: FAILED (exit %d), %s s\n' "$title" "$rc" "$wall"
        failed="$failed
  $title"
    fi
}

total_start=$(date +%s.%N)
while IFS= read -r line; do
    # shellcheck disable=SC2086 # split "say_after tasks" into name and args
    run_one "$line" $line
done <<EOF_LIST
$examples
EOF_LIST

# PostgreSQL (cio-pg, when built): against $CIO_PG_DSN if set, else a
# throw-away server started here (tests/pg_server.sh) and stopped after.
if [ -x "$bin/pg_query" ]; then
    pgdir=''
    if [ -z "${CIO_PG_DSN:-}" ]; then
        pgdir=$(mktemp -d /tmp/cio_tour_pg.XXXXXX)
        rmdir "$pgdir"
        if env=$(bash "$here/../tests/pg_server.sh" start "$pgdir" 2>&1); then
            eval "$(printf '%s\n' "$env" | grep '^export ')"
        else
            printf '%s\n' "$env" >&2
            failed="$failed
  (PostgreSQL server for the pg examples)"
        fi
    fi
    if [ -n "${CIO_PG_DSN:-}" ]; then
        run_one 'pg_query "select ..."' pg_query \
            "select n, n * n as square, repeat('*', n) as bar from generate_series(1, 5) as n where n > \$1" 1
        run_one 'pg_query --selftest' pg_query --selftest
        run_one pg_queue pg_queue
        run_one 'CIO_BACKEND=uring pg_queue' CIO_BACKEND=uring pg_queue
    fi
    if [ -n "$pgdir" ]; then
        bash "$here/../tests/pg_server.sh" stop "$pgdir" >/dev/null 2>&1
    fi
fi
total_end=$(date +%s.%N)
total=$(echo "$total_start $total_end" | awk '{ printf "%.2f", $2 - $1 }')

echo
if [ -n "$failed" ]; then
    echo "tour: FAILED examples:$failed"
    echo "tour: total $total s"
    exit 1
fi
echo "tour: all examples passed, total $total s"
