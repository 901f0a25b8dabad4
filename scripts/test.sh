#!/usr/bin/env bash
# The whole test suite: installs what is needed, then
#   1. builds with gcc (-Wall -Wextra -Werror) and runs every test with CTest
#      (each test program twice: on epoll and on io_uring), then installs into
#      a temporary prefix, moves it, and builds a program against it with
#      pkg-config (scripts/check_install.sh). cio-pg's tests run against a
#      real PostgreSQL: CTest's fixture starts a throw-away cluster in the
#      build directory (tests/pg_server.sh, as an unprivileged user when run
#      as root) and removes it after them, in this step and in step 3;
#   2. builds with clang (-Werror) to keep both compilers clean, and with
#      gcc in Release (-O3 warns where -O2 does not);
#   3. builds with AddressSanitizer + UndefinedBehaviorSanitizer and runs
#      every test again;
#   4. builds with ThreadSanitizer and runs the thread-facing tests
#      (CTest label "thread");
#   5. cross-builds for AArch64 and runs the examples under qemu
#      (scripts/aarch64.sh), which exercises the AArch64 context switch.
# Set CIO_TEST_QUICK=1 to run only step 1.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/deps.sh"
jobs="$(nproc)"
out="${CIO_TEST_DIR:-$root/build-test}"
# A run that was killed may have left a test server running in a build dir.
for d in "$out"/*/pgdata; do
  if [ -d "$d" ]; then bash "$root/tests/pg_server.sh" stop "$d" || true; fi
done
rm -rf "$out"

step() { printf '\n=== %s\n' "$*"; }

# Each step's pass/fail counts, summed into the closing line.
passed=0 failed=0
count() { # count PASSED FAILED
  passed=$((passed + $1)); failed=$((failed + $2))
}
ctest_counted() { # ctest_counted ARGS...: runs ctest and adds its counts
  local log rc=0
  log="$(mktemp)"
  ctest "$@" 2>&1 | tee "$log" || rc=$?
  local line total bad
  line="$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -1 || true)"
  rm -f "$log"
  if [ -n "$line" ]; then
    bad="$(sed -E 's/.* ([0-9]+) tests? failed out of.*/\1/' <<<"$line")"
    total="$(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$line")"
    count $((total - bad)) "$bad"
  fi
  return "$rc"
}

step "gcc build + tests"
cmake -S "$root" -B "$out/gcc" -DCMAKE_C_COMPILER=gcc -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$out/gcc" -j"$jobs" >/dev/null
ctest_counted --test-dir "$out/gcc" --output-on-failure -j"$jobs"
if bash "$root/scripts/check_install.sh" "$out/gcc"; then count 1 0; else count 0 1; fi

if [ "${CIO_TEST_QUICK:-0}" = 1 ]; then
  printf '\nsuite: %d passed, %d failed\n' "$passed" "$failed"
  exit 0
fi

step "clang build (warnings as errors)"
cmake -S "$root" -B "$out/clang" -DCMAKE_C_COMPILER=clang >/dev/null
cmake --build "$out/clang" -j"$jobs" >/dev/null
echo "clang build clean"

# -O3 finds warnings -O2 does not (maybe-uninitialized); the benchmarks
# are built this way, so the library must be clean in it too.
step "gcc Release build (warnings as errors)"
cmake -S "$root" -B "$out/release" -DCMAKE_C_COMPILER=gcc -DCMAKE_BUILD_TYPE=Release \
  -DCIO_BUILD_TESTS=OFF -DCIO_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$out/release" -j"$jobs" >/dev/null
echo "gcc Release build clean"

step "AddressSanitizer + UndefinedBehaviorSanitizer"
cmake -S "$root" -B "$out/asan" -DCMAKE_C_COMPILER=gcc -DCMAKE_BUILD_TYPE=Debug \
  -DCIO_SANITIZE=address,undefined -DCIO_BUILD_BENCH=OFF >/dev/null
cmake --build "$out/asan" -j"$jobs" >/dev/null
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest_counted --test-dir "$out/asan" --output-on-failure -j"$jobs"

step "ThreadSanitizer (thread-facing tests)"
cmake -S "$root" -B "$out/tsan" -DCMAKE_C_COMPILER=gcc -DCMAKE_BUILD_TYPE=Debug \
  -DCIO_SANITIZE=thread -DCIO_BUILD_BENCH=OFF -DCIO_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$out/tsan" -j"$jobs" >/dev/null
TSAN_OPTIONS=halt_on_error=1 ctest_counted --test-dir "$out/tsan" --output-on-failure -L thread

step "AArch64 cross build, examples under qemu"
bash "$root/scripts/aarch64.sh" "$out/aarch64"
count "$(cat "$out/aarch64/passed")" 0

printf '\nsuite: %d passed, %d failed\n' "$passed" "$failed"
