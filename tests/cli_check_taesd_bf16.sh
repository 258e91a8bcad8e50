#!/usr/bin/env bash
# TAESD at precision bf16 end to end: `streamdiff check --precision bf16` replays the own AutoencoderTiny
# case (encoder, decoder, their hooked layers) at every bf16 kernel level this CPU runs; TAESD's convs
# then run as one chain in the image layout (sd_conv2d_ex, docs/precision.md). Every output must be
# within the bf16 bound, and the bf16 path must really have run (the decoded image differs from fp32's).
# Skips (77) only where the CPU has no bf16 kernel level.
set -uo pipefail
BIN="$1"
CASE="${SD_TEST_DATA:?}/cases/own_vae_tiny"
fail() { echo "cli_check_taesd_bf16: FAIL: $*"; exit 1; }
[ -f "$CASE/manifest.json" ] || fail "the committed case own_vae_tiny is missing"
ran=0
for isa in amx avx512bf16; do
    out=$(SD_CPU_ISA=$isa "$BIN" check --precision bf16 --threads 2 --verbose "$CASE" 2>&1)
    rc=$?
    echo "$out" | grep -qE "precision bf16 \($isa kernels\)" || { echo "level $isa: not on this CPU"; continue; }
    echo "$out" | grep -E '^(precision|own_|[0-9]+ cases)'
    [ $rc -eq 0 ] || { echo "$out" | grep FAIL | head; fail "check --precision bf16 at $isa: exit $rc"; }
    dec=$(echo "$out" | awk '/^ +decoded +PASS/{print $4}')
    awk -v v="$dec" 'BEGIN{exit !(v + 0 > 1e-4)}' || fail "$isa: decoded matches fp32 (max_abs '$dec'): bf16 did not run"
    ran=$((ran + 1))
done
[ $ran -gt 0 ] || { echo "SKIP: this CPU has no bf16 kernel level (amx, avx512bf16)"; exit 77; }
echo "cli_check_taesd_bf16: ok ($ran levels)"
