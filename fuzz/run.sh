#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan, build folder
# build-fuzz/, separate from the gcc build) and runs each for a bounded time.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, all targets)
#
# Environment: SD_FUZZ_BUILD (build folder, default build-fuzz), JOBS (build
# parallelism), SD_FUZZ_ARGS (extra libFuzzer flags).
#
# Seeds come from fuzz/corpus/<target>/ and tests/data/regress/<target>/
# (read-only); inputs the fuzzer finds go to $SD_FUZZ_BUILD/fuzz-work/<target>/
# and crash inputs to $SD_FUZZ_BUILD/fuzz-artifacts/<target>/. Exits non-zero
# when any target crashes, leaks, hangs (-timeout) or runs out of memory.
# A crash input becomes a regression test: copy it to
# tests/data/regress/<target>/ (tests/test_regress.c replays every file there).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
shift || true
BUILD=${SD_FUZZ_BUILD:-build-fuzz}
JOBS=${JOBS:-$(nproc)}

if ! command -v clang >/dev/null; then
  echo "fuzz/run.sh: clang not found (apt-get install clang libclang-rt-14-dev, or scripts/install-deps.sh)" >&2
  exit 1
fi
CC=clang cmake -S . -B "$BUILD" -DSD_FUZZ=ON -DSD_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j "$JOBS" --target fuzz_all

if [ $# -gt 0 ]; then
  TARGETS=("$@")
else
  TARGETS=()
  for f in fuzz/fuzz_*.c; do
    n=$(basename "$f" .c)
    TARGETS+=("${n#fuzz_}")
  done
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_NUM_THREADS=1
fail=0
summary=""
for t in "${TARGETS[@]}"; do
  exe="$BUILD/fuzz/fuzz_$t"
  [ -x "$exe" ] || { echo "fuzz/run.sh: no target $t ($exe)" >&2; exit 1; }
  work="$BUILD/fuzz-work/$t"
  art="$BUILD/fuzz-artifacts/$t"
  mkdir -p "$work" "$art"
  dirs=("$work" "fuzz/corpus/$t")
  [ -d "tests/data/regress/$t" ] && dirs+=("tests/data/regress/$t")
  log="$BUILD/fuzz-$t.log"
  echo "=== fuzz_$t: ${SECS}s"
  set +e
  # shellcheck disable=SC2086
  "$exe" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 -max_len=65536 \
         -print_final_stats=1 -artifact_prefix="$art/" ${SD_FUZZ_ARGS:-} "${dirs[@]}" >"$log" 2>&1
  rc=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  if [ $rc -ne 0 ]; then
    fail=1
    grep -E "ERROR|runtime error|SUMMARY|Test unit written" "$log" | head -20 || true
    echo "fuzz_$t FAILED (rc $rc); full log: $log"
    echo "  to keep the input as a regression test: cp $art/<crash-file> tests/data/regress/$t/"
    summary+=$(printf '\n  %-12s FAILED (rc %d), see %s' "$t" "$rc" "$log")
  else
    summary+=$(printf '\n  %-12s ok  %10s execs  %6s exec/s  cov %s' "$t" "${runs:-?}" "${eps:-?}" "${cov:-?}")
  fi
done
echo "fuzz summary (${SECS}s per target):$summary"
exit $fail
