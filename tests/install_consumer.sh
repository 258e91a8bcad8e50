#!/usr/bin/env bash
# The installed package works for an out-of-tree program: `cmake --install` of
# this build into a temporary prefix gives the header, libstreamdiff.so with its
# SONAME links, libstreamdiff.a, streamdiff.pc and bin/streamdiff (and no
# internal header); tests/consumer/consumer.c is then compiled with the
# compiler and flags pkg-config gives (shared, and static), and
# both programs run on the committed tiny model and write the same PNG.
# Usage: install_consumer.sh BUILD_DIR C_COMPILER   (SD_CONSUMER_CFLAGS: extra
# flags, e.g. the sanitizers of an SD_SANITIZE build)
set -uo pipefail
BUILD="$1"
CC="$2"
NAME=install_consumer
HERE="$(cd "$(dirname "$0")" && pwd)"
MODEL="${SD_TEST_DATA:-}/models/tiny-sd15"
fail() { echo "$NAME: FAIL: $*"; exit 1; }
[ -f "$MODEL/model_index.json" ] || fail "the committed tiny model '$MODEL' is absent (ctest sets SD_TEST_DATA)"
command -v pkg-config >/dev/null || fail "pkg-config is needed (scripts/install-deps.sh installs it)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
P="$tmp/prefix"
cmake --install "$BUILD" --prefix "$P" >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; fail "cmake --install"; }

pc=$(find "$P" -name streamdiff.pc)
[ -n "$pc" ] || fail "no streamdiff.pc installed"
LIBDIR=$(dirname "$(dirname "$pc")")
[ -f "$P/include/streamdiff.h" ] || fail "include/streamdiff.h not installed"
[ "$(find "$P/include" -type f | wc -l)" -eq 1 ] || fail "more than the public header installed: $(find "$P/include" -type f)"
[ -x "$P/bin/streamdiff" ] || fail "bin/streamdiff not installed"
[ -f "$LIBDIR/libstreamdiff.a" ] || fail "libstreamdiff.a not installed"
real=$(readlink -f "$LIBDIR/libstreamdiff.so")
[ -f "$real" ] || fail "libstreamdiff.so not installed"
soname=$(readelf -d "$real" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ -n "$soname" ] && [ "$soname" != libstreamdiff.so ] || fail "libstreamdiff.so has no versioned SONAME ('$soname')"
[ -L "$LIBDIR/$soname" ] || fail "no $soname link in $LIBDIR"
echo "$NAME: installed $(basename "$real") (SONAME $soname), libstreamdiff.a, streamdiff.pc, bin/streamdiff"
"$P/bin/streamdiff" --version || fail "the installed streamdiff does not run"

export PKG_CONFIG_PATH="$(dirname "$pc")"
ver=$(pkg-config --modversion streamdiff) || fail "pkg-config does not read streamdiff.pc"
echo "$NAME: pkg-config streamdiff $ver: $(pkg-config --cflags --libs streamdiff)"
CFLAGS=(-std=c17 -Wall -Wextra -Werror ${SD_CONSUMER_CFLAGS:-})
# shared: the program finds the library through its RUNPATH
"$CC" "${CFLAGS[@]}" "$HERE/consumer/consumer.c" -o "$tmp/consumer" $(pkg-config --cflags --libs streamdiff) \
    -Wl,-rpath,"$LIBDIR" 2>"$tmp/cc.log" || { cat "$tmp/cc.log"; fail "building against the shared library"; }
readelf -d "$tmp/consumer" | grep -q "NEEDED.*\[$soname\]" || fail "the program does not link $soname"
# static: the archive, its dependencies' shared libraries (Requires.private; `pkg-config --static`
# would also want the static libraries of FFmpeg's own dependencies) and its Libs.private
static_libs="-l:libstreamdiff.a $(pkg-config --libs $(pkg-config --print-requires-private streamdiff | tr '\n' ' '))"
static_libs+=" -L$LIBDIR $(sed -n 's/^Libs.private: //p' "$pc")"
"$CC" "${CFLAGS[@]}" "$HERE/consumer/consumer.c" -o "$tmp/consumer_static" $(pkg-config --cflags streamdiff) \
    $static_libs 2>"$tmp/cc.log" || { cat "$tmp/cc.log"; fail "building against the static library"; }
! readelf -d "$tmp/consumer_static" | grep -q "NEEDED.*libstreamdiff" || fail "the static program needs libstreamdiff.so"

"$tmp/consumer" "$MODEL" "$tmp/shared.png" || fail "the program linked to the shared library failed"
"$tmp/consumer_static" "$MODEL" "$tmp/static.png" || fail "the statically linked program failed"
cmp -s "$tmp/shared.png" "$tmp/static.png" || fail "shared and static builds wrote different images"
echo "$NAME: OK"
