#!/usr/bin/env bash
# `streamdiff bench`: dispatch, errors and a tiny `bench ops` run writing JSON.
set -euo pipefail
BIN="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$BIN" bench --help | grep -q "ops"
"$BIN" bench ops --help | grep -q -- "--json"
set +e
"$BIN" bench >/dev/null 2>&1;                 [ $? -eq 2 ] || { echo "bench without a subcommand should exit 2"; exit 1; }
"$BIN" bench nosuch 2>"$tmp/err";             [ $? -eq 2 ] || { echo "unknown subcommand should exit 2"; exit 1; }
grep -q "unknown benchmark 'nosuch'" "$tmp/err" || { echo "unclear error: $(cat "$tmp/err")"; exit 1; }
"$BIN" bench ops --reps 0 >/dev/null 2>&1;    [ $? -eq 2 ] || { echo "--reps 0 should exit 2"; exit 1; }
"$BIN" bench ops --bogus >/dev/null 2>&1;     [ $? -eq 2 ] || { echo "unknown option should exit 2"; exit 1; }
"$BIN" bench ops --json >/dev/null 2>&1;      [ $? -eq 2 ] || { echo "missing value should exit 2"; exit 1; }
set -e
"$BIN" bench ops --filter "conv1x1 shortcut" --reps 1 --peak-n 256 --threads 2 --json "$tmp/b.json" >"$tmp/out"
grep -q "conv1x1 shortcut 320->640" "$tmp/out"
grep -q '"pct_of_sgemm_peak"' "$tmp/b.json"
grep -q '"sgemm_peak"' "$tmp/b.json"
echo "cli_bench: ok"
