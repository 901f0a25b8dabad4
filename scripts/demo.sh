#!/usr/bin/env bash
# The main job: install what is needed, build cio and its examples from
# scratch, and run the tour of the seed programs with their timings.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/deps.sh"
build="${BUILD_DIR:-$root/build-demo}"
rm -rf "$build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCIO_BUILD_TESTS=OFF -DCIO_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null
exec "$root/examples/tour.sh" "$build"
