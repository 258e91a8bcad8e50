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

# run_suite LABEL DIR: every case must pass, and every folder must have run
run_suite() {
    local label="$1" dir="$2" want out rc
    want=$(count_cases "$dir")
    [ "$want" -gt 0 ] || fail "$label: no case folders in $dir"
    out="$tmp/$label.log"
    "$BIN" check --threads 2 "$dir" >"$out" 2>&1
    rc=$?
    grep -E "(: FAIL|ERROR)" "$out" | head -40
    local summary
    summary=$(grep -E "^[0-9]+ cases: " "$out" | tail -1)
    echo "cli_check: $label: $summary"
    [ $rc -eq 0 ] || fail "$label: streamdiff check exited $rc (log above)"
    echo "$summary" | grep -qE "^$want cases: $want passed, 0 failed" ||
        fail "$label: expected $want cases to pass, got: $summary"
    ! grep -q "cannot tell the kind" "$out" || fail "$label: a case kind was not recognised"
}

[ -n "$DATA" ] && [ -d "$DATA/cases" ] || fail "SD_TEST_DATA ('$DATA') has no cases/ folder (committed test data)"
run_suite own "$DATA/cases"

fixtures=0

if [ -n "$FX" ] && [ -d "$FX/cases" ]; then
    if [ -f "$FX/skipped_cases.json" ]; then
        for c in $(grep -oE '"case": *"[^"]+"' "$FX/skipped_cases.json" | sed -E 's/.*"([^"]+)"$/\1/'); do
            [ ! -d "$FX/cases/$c" ] || echo "cli_check: note: skipped case $c has a folder; it runs too"
        done
    fi
    run_suite fixtures "$FX/cases"
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
