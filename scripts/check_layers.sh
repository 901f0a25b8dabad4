#!/usr/bin/env bash
# Checks cio's layering rule (src/LAYERS): no source file calls a function,
# or includes a header, of a layer above its own.
#
#   scripts/check_layers.sh SRC_DIR LIBCIO_STATIC_ARCHIVE
#
# Calls are read from the compiled objects (nm: every undefined cio_/cio__
# symbol of an object and the object that defines it), so macros and inline
# functions of a header count where they are expanded. Prints each violation
# and exits 1 if there is any; also fails on a source file missing from
# src/LAYERS, so the table stays true as the tree grows.
set -euo pipefail
src=${1:?usage: check_layers.sh SRC_DIR ARCHIVE}
lib=${2:?usage: check_layers.sh SRC_DIR ARCHIVE}
table=$src/LAYERS

declare -A layer_of
while read -r num _name files; do
  case "$num" in ''|\#*) continue ;; esac
  for f in $files; do layer_of[$f]=$num; done
done <"$table"

bad=0
fail() { echo "layers: $*"; bad=1; }

# Every source file of the tree is in the table.
while IFS= read -r f; do
  rel=${f#"$src"/}
  [ -n "${layer_of[$rel]:-}" ] || fail "$rel is not in src/LAYERS"
done < <(find "$src" -name '*.c' -o -name '*.h' -o -name '*.S' | sort)

# Includes: a file includes only headers of its layer or below.
for rel in "${!layer_of[@]}"; do
  path=$src/$rel
  [ -f "$path" ] || continue
  dir=$(dirname "$rel")
  while IFS= read -r inc; do
    target=$inc
    [ "$dir" != . ] && [ -z "${layer_of[$target]:-}" ] && target=$(realpath -m --relative-to="$src" "$src/$dir/$inc")
    [ -n "${layer_of[$target]:-}" ] || continue   # cio.h and system headers
    if [ "${layer_of[$target]}" -gt "${layer_of[$rel]}" ]; then
      fail "$rel (layer ${layer_of[$rel]}) includes $target (layer ${layer_of[$target]})"
    fi
  done < <(sed -n 's/^#include "\(.*\)"/\1/p' "$path")
done

# Calls: map each defined symbol to its object, then check each object's
# undefined cio symbols against the defining object's layer.
declare -A def_obj
while read -r obj sym; do
  def_obj[$sym]=$obj
done < <(nm -A --defined-only "$lib" 2>/dev/null |
         awk '$NF ~ /^cio_/ && $(NF-1) ~ /^[TDBRV]$/ {split($1, p, ":"); print p[2], $NF}')

obj_layer() { # object name (loop.c.o) -> layer, or empty
  local base=${1%.o}
  for rel in "${!layer_of[@]}"; do
    [ "$(basename "$rel")" = "$base" ] && { echo "${layer_of[$rel]}"; return; }
  done
}

checked=0
while read -r obj sym; do
  def=${def_obj[$sym]:-}
  [ -n "$def" ] || continue          # defined outside the library (none are)
  ul=$(obj_layer "$obj"); dl=$(obj_layer "$def")
  [ -n "$ul" ] && [ -n "$dl" ] || { fail "no layer for $obj or $def"; continue; }
  checked=$((checked + 1))
  if [ "$dl" -gt "$ul" ]; then
    fail "${obj%.o} (layer $ul) calls $sym of ${def%.o} (layer $dl)"
  fi
done < <(nm -A -u "$lib" 2>/dev/null | awk '$NF ~ /^cio_/ {split($1, p, ":"); print p[2], $NF}')

[ "$checked" -gt 0 ] || fail "no cross-file call found in $lib: is it the right archive?"
if [ "$bad" = 0 ]; then
  echo "layers: $checked cross-file calls checked against src/LAYERS, none upwards"
fi
exit "$bad"
