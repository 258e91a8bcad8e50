#!/usr/bin/env bash
# The binary runs on any x86-64 CPU: under `qemu-x86_64 -cpu Nehalem` (SSE4.2, no
# AVX / AVX2 / FMA / F16C) `streamdiff selfcheck` passes and a tiny txt2img writes
# the same PNG, byte for byte, as the same command natively with the same kernels:
# without AVX2 the CPU backend picks its "blas" set (OpenBLAS, which picks its own
# Nehalem kernels), so the native run uses SD_CPU_ISA=blas OPENBLAS_CORETYPE=Nehalem.
# The native default kernels (AVX-512 / AVX2 GEMM, flash attention) round
# differently; their image may differ from it by at most 2/255 per channel.
# Skips (77) only when qemu-x86_64 is absent (Debian package qemu-user;
# scripts/install-test-deps.sh installs it).
set -uo pipefail
BIN="$1"
NAME=cli_portable
MODEL="${SD_TEST_DATA:-}/models/tiny-sd15"
fail() { echo "$NAME: FAIL: $*"; exit 1; }
[ -f "$MODEL/model_index.json" ] || fail "the committed tiny model '$MODEL' is absent (ctest sets SD_TEST_DATA)"
command -v python3 >/dev/null || fail "python3 is needed to compare the images"
if ! command -v qemu-x86_64 >/dev/null; then
    echo "$NAME: SKIP: qemu-x86_64 is absent (apt-get install qemu-user)"
    exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# a forced OpenBLAS core type (e.g. Haswell) would not run on the emulated CPU: let it detect
QEMU=(env -u OPENBLAS_CORETYPE -u SD_CPU_ISA qemu-x86_64 -cpu Nehalem)

# the emulated CPU really lacks AVX2: the same binary's native kernel set vs the emulated one
"${QEMU[@]}" "$BIN" selfcheck >"$tmp/selfcheck" 2>&1 || { cat "$tmp/selfcheck"; fail "selfcheck under qemu -cpu Nehalem"; }
cat "$tmp/selfcheck"
grep -q "^cpu kernel set *blas$" "$tmp/selfcheck" || fail "the emulated Nehalem should get the blas kernel set"

GEN=(txt2img -m "$MODEL" -p "a red fox" -W 32 -H 32 --steps 2 -s 7 --threads 2)
"${QEMU[@]}" "$BIN" "${GEN[@]}" -o "$tmp/qemu.png" >"$tmp/q.log" 2>&1 || { cat "$tmp/q.log"; fail "txt2img under qemu"; }
SD_CPU_ISA=blas OPENBLAS_CORETYPE=Nehalem "$BIN" "${GEN[@]}" -o "$tmp/blas.png" >"$tmp/b.log" 2>&1 ||
    { cat "$tmp/b.log"; fail "native txt2img (blas kernels)"; }
env -u SD_CPU_ISA "$BIN" "${GEN[@]}" -o "$tmp/native.png" >"$tmp/n.log" 2>&1 || { cat "$tmp/n.log"; fail "native txt2img"; }
cmp -s "$tmp/qemu.png" "$tmp/blas.png" || fail "the PNG under qemu -cpu Nehalem differs from the native one with the same kernels"
echo "$NAME: qemu -cpu Nehalem PNG == native PNG with the blas kernels"

# pixels of two PNGs (8-bit RGB, non-interlaced): the largest channel difference
python3 - "$tmp/qemu.png" "$tmp/native.png" <<'PY' || fail "native default kernels differ by more than 2/255"
import struct, sys, zlib
def pixels(path):
    d = open(path, 'rb').read()
    i, idat = 8, b''
    while i < len(d):
        n, = struct.unpack('>I', d[i:i + 4]); t = d[i + 4:i + 8]
        if t == b'IHDR':
            w, h, depth, ctype = struct.unpack('>IIBB', d[i + 8:i + 18])
            assert depth == 8 and ctype == 2, 'expects 8-bit RGB'
        if t == b'IDAT':
            idat += d[i + 8:i + 8 + n]
        i += 12 + n
    raw, stride, out, prev = zlib.decompress(idat), w * 3, bytearray(), bytearray(w * 3)
    for y in range(h):  # undo the PNG row filters
        f, row = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = row[x - 3] if x >= 3 else 0
            b = prev[x]
            c = prev[x - 3] if x >= 3 else 0
            if f == 1: row[x] = (row[x] + a) & 255
            elif f == 2: row[x] = (row[x] + b) & 255
            elif f == 3: row[x] = (row[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                row[x] = (row[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out += row; prev = row
    return w, h, out
wa, ha, a = pixels(sys.argv[1]); wb, hb, b = pixels(sys.argv[2])
assert (wa, ha) == (wb, hb), 'sizes differ'
diff = max(abs(x - y) for x, y in zip(a, b))
print(f'cli_portable: qemu PNG vs native default kernels: max channel difference {diff}/255 (tolerance 2)')
sys.exit(0 if diff <= 2 else 1)
PY
echo "$NAME: OK"
