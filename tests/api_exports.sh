#!/usr/bin/env bash
# The API boundary: libstreamdiff.so exports exactly the functions that
# include/streamdiff.h declares (with SD_API), no more (internals are built
# with hidden visibility) and no fewer (each declared function is defined and
# exported). Also: every function declaration in the header carries SD_API.
# Usage: api_exports.sh LIBSTREAMDIFF_SO STREAMDIFF_H
set -uo pipefail
LIB="$1"
HDR="$2"
fail() { echo "api_exports: FAIL: $*"; exit 1; }
command -v nm >/dev/null || fail "nm (binutils) is needed"
[ -f "$LIB" ] || fail "no library at $LIB"
[ -f "$HDR" ] || fail "no header at $HDR"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# functions the header declares: "SD_API <type> name(" (a declaration starts a line)
grep -E '^SD_API ' "$HDR" | sed -E 's/^SD_API [^(]*[^A-Za-z0-9_(]([A-Za-z_][A-Za-z0-9_]*)\(.*/\1/' | sort -u >"$tmp/declared"
[ -s "$tmp/declared" ] || fail "no SD_API declarations found in $HDR"
# a function declaration without SD_API would be hidden: none may exist
grep -nE '^(const |unsigned )?[A-Za-z_][A-Za-z0-9_]*[ *]+sd_[A-Za-z0-9_]*\(' "$HDR" >"$tmp/unmarked"
[ ! -s "$tmp/unmarked" ] || fail "declarations without SD_API in $HDR: $(cat "$tmp/unmarked")"

# every defined dynamic symbol (functions and data), whatever its name
nm -D --defined-only "$LIB" | awk 'NF >= 3 { print $3 }' | sed 's/@.*//' | sort -u >"$tmp/exported"

extra=$(comm -13 "$tmp/declared" "$tmp/exported")
missing=$(comm -23 "$tmp/declared" "$tmp/exported")
echo "api_exports: $(wc -l <"$tmp/declared") declared, $(wc -l <"$tmp/exported") exported"
[ -z "$extra" ] || fail "exported but not declared in streamdiff.h ($(echo "$extra" | wc -l)): $(echo $extra)"
[ -z "$missing" ] || fail "declared in streamdiff.h but not exported ($(echo "$missing" | wc -l)): $(echo $missing)"
echo "api_exports: OK"
