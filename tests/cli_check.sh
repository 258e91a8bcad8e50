#!/usr/bin/env bash
# Conformance: `streamdiff check` replays every reference case and must pass all of
# them: the project's own cases ($SD_TEST_DATA/cases, diffusers 0.42) and, when
# present, the shared fixtures ($SD_FIXTURES/cases, diffusers 0.26.3; the cases of
# $SD_FIXTURES/skipped_cases.json have no folder). Also: usage errors exit 2, bad
# case folders exit 1 with a message (no crash).
set -uo pipefail
BIN="$1"
DATA="${SD_TEST_DATA:-}"
FX="${SD_FIXTURES:-}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "cli_check: FAIL: $*"; exit 1; }

# number of case folders (sub-folders with a manifest.json)
count_cases() { local n=0 d; for d in "$1"/*/; do [ -f "$d/manifest.json" ] && n=$((n + 1)); done; echo "$n"; }

# Cases of features not built yet (issue numbers inside): reported PENDING while they fail,
# a failure of the run once one passes (then its line goes). Only the shared fixtures use it.
PENDING="${DATA:+$DATA/fixtures_pending.txt}"

# run_suite LABEL DIR [PENDING_FILE]: every case must pass (or be a listed pending case that
# still fails), and every folder must have run
run_suite() {
    local label="$1" dir="$2" pend="${3:-}" want out rc npend=0 c
    want=$(count_cases "$dir")
    [ "$want" -gt 0 ] || fail "$label: no case folders in $dir"
    if [ -n "$pend" ]; then
        [ -f "$pend" ] || fail "$label: the committed pending-case list $pend is missing"
        for c in $(grep -vE '^[[:space:]]*(#|$)' "$pend" | awk '{print $1}'); do
            [ -f "$dir/$c/manifest.json" ] && npend=$((npend + 1))
        done
    fi
    out="$tmp/$label.log"
    SD_CHECK_PENDING="$pend" "$BIN" check --threads 2 "$dir" >"$out" 2>&1
    rc=$?
    grep -E "(: FAIL|ERROR|: PENDING)" "$out" | head -60
    local summary expect
    summary=$(grep -E "^[0-9]+ cases: " "$out" | tail -1)
    echo "cli_check: $label: $summary"
    [ $rc -eq 0 ] || fail "$label: streamdiff check exited $rc (log above)"
    expect="^$want cases: $((want - npend)) passed, 0 failed"
    [ $npend -eq 0 ] || expect="$expect, $npend pending"
    echo "$summary" | grep -qE "$expect" ||
        fail "$label: expected $((want - npend)) of $want cases to pass and $npend pending, got: $summary"
    # an unrecognised case kind is only acceptable for a listed pending case
    for c in $(grep "cannot tell the kind" "$out" | sed -E 's/: ERROR.*//'); do
        [ -n "$pend" ] && grep -qE "^$c[[:space:]]" "$pend" || fail "$label: the kind of case $c was not recognised"
    done
}

[ -n "$DATA" ] && [ -d "$DATA/cases" ] || fail "SD_TEST_DATA ('$DATA') has no cases/ folder (committed test data)"
SD_CHECK_PENDING= run_suite own "$DATA/cases"

fixtures=0

if [ -n "$FX" ] && [ -d "$FX/cases" ]; then
    if [ -f "$FX/skipped_cases.json" ]; then
        for c in $(grep -oE '"case": *"[^"]+"' "$FX/skipped_cases.json" | sed -E 's/.*"([^"]+)"$/\1/'); do
            [ ! -d "$FX/cases/$c" ] || echo "cli_check: note: skipped case $c has a folder; it runs too"
        done
    fi
    run_suite fixtures "$FX/cases" "$PENDING"
    fixtures=1
else
    echo "cli_check: shared fixtures skipped: SD_FIXTURES ('$FX') has no cases/ folder"
fi

# usage and bad input
"$BIN" check >/dev/null 2>&1
[ $? -eq 2 ] || fail "check without a case folder should exit 2"
"$BIN" check --bogus "$tmp" >/dev/null 2>&1
[ $? -eq 2 ] || fail "unknown option should exit 2"
"$BIN" check "$tmp/does-not-exist" >"$tmp/err" 2>&1
[ $? -eq 1 ] || fail "a missing folder should exit 1"
grep -q "not a case folder" "$tmp/err" || fail "unclear error for a missing folder: $(cat "$tmp/err")"
mkdir -p "$tmp/bad/cases/unknown" "$tmp/bad/cases/garbage" "$tmp/bad/cases/sched_broken" "$tmp/bad/cases/tok_broken"
echo '{"name": "unknown", "something": 1}' >"$tmp/bad/cases/unknown/manifest.json"
echo '{"name": "garbage", ' >"$tmp/bad/cases/garbage/manifest.json"
echo '{"name": "sched_broken", "scheduler_class": "LCMScheduler", "scheduler_config": {}, "set_timesteps": {"num_inference_steps": 4}}' \
    >"$tmp/bad/cases/sched_broken/manifest.json"
echo '{"name": "tok_broken", "prompts_file": "prompts.json", "tokenizer_dirs": {"sd15": "nowhere"}}' \
    >"$tmp/bad/cases/tok_broken/manifest.json"
"$BIN" check "$tmp/bad/cases" >"$tmp/bad.log" 2>&1
rc=$?
[ $rc -eq 1 ] || { cat "$tmp/bad.log"; fail "bad cases should exit 1, got $rc"; }
grep -q "unknown: ERROR cannot tell the kind" "$tmp/bad.log" || fail "unknown kind not reported: $(cat "$tmp/bad.log")"
grep -q "4 cases: 0 passed, 4 failed" "$tmp/bad.log" || fail "bad cases summary: $(cat "$tmp/bad.log")"

[ $fixtures -eq 1 ] || { echo "cli_check: SKIP (after the rest passed): no shared fixtures"; exit 77; }
echo "cli_check: ok"
