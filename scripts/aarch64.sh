#!/usr/bin/env bash
# Cross-builds cio for AArch64 and runs the examples under qemu user-mode
# emulation, so the AArch64 context switch is exercised on every CI run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
pkgs=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
out="${1:-$root/build-aarch64}"
rm -rf "$out"
cmake -S "$root" -B "$out" -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
  -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc -DCMAKE_ASM_COMPILER=aarch64-linux-gnu-gcc \
  -DCIO_URING=OFF -DCIO_PG=OFF -DCIO_BUILD_TESTS=OFF -DCIO_BUILD_BENCH=OFF -DCIO_BUILD_EXAMPLES=ON >/dev/null
cmake --build "$out" -j"$(nproc)" >/dev/null
# The assembly switch, not the ucontext fallback, must be the one built.
grep -q 'switch_aarch64.S' "$out/CMakeFiles/cio.dir/build.make"
fail=0 n=0
while read -r name args; do
  n=$((n + 1))
  # shellcheck disable=SC2086
  if ! timeout 120 qemu-aarch64 -cpu max -L /usr/aarch64-linux-gnu "$out/examples/$name" $args \
       </dev/null >"$out/$name.log" 2>&1; then
    echo "aarch64: $name $args FAILED"; cat "$out/$name.log"; fail=$((fail + 1))
  fi
done <<'LIST'
hello
nested
factorial
wait_for
shield
timeout
runner
run_until_complete
to_thread
producer_consumer 001
multi_yield
asyncq
chained
chess
sock_echo
file_stream
tail_follow --selftest
ls_capture
cpu_bound
ctrl_c --selftest
LIST
echo "aarch64: $((n - fail)) of $n examples ran correctly under qemu"
echo "$((n - fail))" >"$out/passed"
[ "$fail" -eq 0 ]
